// Face frontalization in the browser: BlazeFace (ONNX, converted from MediaPipe's tflite at
// build time) finds the face, the calibrated square is cropped, the edge generator predicts
// the frontal view. Both models run on onnxruntime-web: WebGPU where there is an adapter,
// WASM otherwise. Everything is served from this origin (and cached by sw.js): no CDN.
import * as ort from './ort/ort.webgpu.min.mjs';
import { decode, preprocess } from './blazeface.js';
import { cropSquare, outputToRgba, roiFromBlazeFace, toInput } from './crop.js';

const $ = (id) => document.getElementById(id);
const els = {
  status: $('status'), backend: $('backend'), video: $('video'), preview: $('preview'),
  crop: $('crop'), frontal: $('frontal'), result: $('result'), info: $('model-info'),
  start: $('start'), switch: $('switch'), stop: $('stop'), take: $('take'), upload: $('upload'),
};
const scratch = { det: document.createElement('canvas'), crop: document.createElement('canvas') };
const STAGES = ['detect', 'crop', 'generator', 'total'];
const stats = { frames: 0, faces: 0, ms: Object.fromEntries(STAGES.map((s) => [s, []])) };
window.__stats = stats;

let detector, generator, meta, calib, ep;
let stream = null, facing = 'user', running = false, busy = Promise.resolve();

function setStatus(text, state) {
  els.status.textContent = text;
  if (state) document.body.dataset.state = state;
}

async function chooseProviders() {
  const forced = new URLSearchParams(location.search).get('ep');
  if (forced) return [forced];
  if ('gpu' in navigator) {
    try {
      if (await navigator.gpu.requestAdapter()) return ['webgpu', 'wasm'];
    } catch { /* no adapter: WASM */ }
  }
  return ['wasm'];
}

async function createSession(url, providers) {
  for (const p of providers) {
    try {
      return [await ort.InferenceSession.create(url, { executionProviders: [p], graphOptimizationLevel: 'all' }), p];
    } catch (e) {
      console.warn(`${url}: ${p} failed, trying the next provider`, e);
    }
  }
  throw new Error(`cannot load ${url} with ${providers.join(', ')}`);
}

async function load() {
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href; // local files, never a CDN
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  [meta, calib] = await Promise.all(['models/model.json', 'crop_calibration.json'].map((u) => fetch(u).then((r) => r.json())));
  const providers = await chooseProviders();
  let gp;
  [detector] = await createSession('models/blazeface.onnx', providers);
  [generator, gp] = await createSession(`models/${meta.file}`, providers);
  ep = gp;
  els.backend.textContent = `${ep.toUpperCase()}${ep === 'wasm' ? ` ×${ort.env.wasm.numThreads}` : ''}`;
  els.info.textContent = `model: ${meta.model} (${meta.source}), input ${meta.input_size}px, ` +
    `crop scale ${meta.crop_scale}, shift ${meta.crop_shift_y}; detector: BlazeFace short range`;
}

// Generator on an RGB uint8 crop -> model-range float32 output (NHWC, batch 1).
async function runGenerator(rgb) {
  const s = meta.input_size;
  const x = new ort.Tensor('float32', toInput(rgb, meta.input_range), [1, s, s, 3]);
  const out = await generator.run({ [generator.inputNames[0]]: x });
  return out[generator.outputNames[0]].getData ? await out[generator.outputNames[0]].getData()
    : out[generator.outputNames[0]].data;
}

// Detect + crop on any drawable (video, ImageBitmap, canvas) of the given size.
async function analyze(source, width, height) {
  const t0 = performance.now();
  const { tensor, side } = preprocess(source, width, height, scratch.det);
  const out = await detector.run({ [detector.inputNames[0]]: new ort.Tensor('float32', tensor, [1, 128, 128, 3]) });
  const dets = decode(out.regressors.data, out.classificators.data, side);
  const t1 = performance.now();
  if (!dets.length) return { dets, ms: { detect: t1 - t0 } };
  const roi = roiFromBlazeFace(dets[0], calib, meta.crop_scale, meta.crop_shift_y);
  const crop = cropSquare(source, roi, meta.input_size, scratch.crop);
  return { dets, roi, crop, ms: { detect: t1 - t0, crop: performance.now() - t1 } };
}

function record(ms) {
  for (const [k, v] of Object.entries(ms)) {
    const arr = stats.ms[k];
    arr.push(v);
    if (arr.length > 200) arr.shift();
    const row = document.querySelector(`#timings tr[data-stage="${k}"]`);
    const mean = arr.reduce((a, b) => a + b, 0) / arr.length;
    row.cells[1].textContent = v.toFixed(1);
    row.cells[2].textContent = mean.toFixed(1);
  }
}

function drawPreview(source, width, height, a) {
  const c = els.preview;
  c.width = width;
  c.height = height;
  const ctx = c.getContext('2d');
  ctx.drawImage(source, 0, 0, width, height);
  ctx.lineWidth = Math.max(2, width / 200);
  for (const d of a.dets.slice(0, 1)) {
    ctx.strokeStyle = '#ffb000';
    ctx.strokeRect(d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]);
    ctx.fillStyle = '#00e0ff';
    for (const [x, y] of d.keypoints) ctx.fillRect(x - ctx.lineWidth, y - ctx.lineWidth, 2 * ctx.lineWidth, 2 * ctx.lineWidth);
  }
  if (a.roi) {
    ctx.strokeStyle = '#30ff60';
    ctx.strokeRect(a.roi[0], a.roi[1], a.roi[2] - a.roi[0], a.roi[3] - a.roi[1]);
  }
}

async function frontalize(source, width, height) {
  const t0 = performance.now();
  const a = await analyze(source, width, height);
  drawPreview(source, width, height, a);
  stats.frames++;
  if (!a.crop) {
    els.result.dataset.face = 'no';
    record(a.ms);
    setStatus('No face found: face the camera, or try another photo.');
    return a;
  }
  const t1 = performance.now();
  const y = await runGenerator(a.crop);
  a.ms.generator = performance.now() - t1;
  const s = meta.input_size;
  const rgba = new Uint8ClampedArray(s * s * 4);
  for (let i = 0; i < s * s; i++) rgba.set([a.crop[3 * i], a.crop[3 * i + 1], a.crop[3 * i + 2], 255], 4 * i);
  els.crop.getContext('2d').putImageData(new ImageData(rgba, s, s), 0, 0);
  els.frontal.getContext('2d').putImageData(new ImageData(outputToRgba(y, meta.output_range), s, s), 0, 0);
  a.ms.total = performance.now() - t0;
  record(a.ms);
  stats.faces++;
  els.result.dataset.face = 'yes';
  setStatus(`Face found (score ${a.dets[0].score.toFixed(2)}).`);
  return a;
}

// One frame at a time: the next starts when the previous finished.
const serial = (fn) => (busy = busy.then(fn, fn));

async function loop() {
  if (!running) return;
  const v = els.video;
  if (v.readyState >= 2 && v.videoWidth) await serial(() => frontalize(v, v.videoWidth, v.videoHeight));
  requestAnimationFrame(loop);
}

async function startCamera() {
  stopCamera();
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: facing, width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    setStatus(`Camera unavailable (${e.name}): use "Take photo" or "Open photo".`);
    return;
  }
  els.video.srcObject = stream;
  await els.video.play();
  els.preview.classList.toggle('mirror', facing === 'user');
  els.switch.disabled = els.stop.disabled = false;
  running = true;
  setStatus('Camera running…', 'camera');
  loop();
}

function stopCamera() {
  running = false;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  els.stop.disabled = true;
}

async function onFile(ev) {
  const file = ev.target.files[0];
  if (!file) return;
  stopCamera();
  let bmp;
  try {
    bmp = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    setStatus(`${file.name}: not an image this browser can decode.`);
    return;
  }
  els.preview.classList.remove('mirror');
  await serial(() => frontalize(bmp, bmp.width, bmp.height));
  document.body.dataset.state = 'photo';
  ev.target.value = '';
}

// Test hooks (used by tests/app.test.mjs): the same crop through the browser as through Python.
window.__frontalizeCrop = async (rgb) => Array.from(await serial(() => runGenerator(Uint8Array.from(rgb))));
window.__runDetector = async (x) => {
  const out = await serial(() => detector.run({ [detector.inputNames[0]]: new ort.Tensor('float32', Float32Array.from(x), [1, 128, 128, 3]) }));
  return { regressors: Array.from(out.regressors.data), classificators: Array.from(out.classificators.data) };
};
window.__analyzeRgb = async (rgb, width, height) => {
  const px = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) px.set([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], 255], 4 * i);
  const bmp = await createImageBitmap(new ImageData(px, width, height));
  const a = await serial(() => analyze(bmp, width, height));
  return { dets: a.dets.map((d) => ({ box: d.box, keypoints: d.keypoints, score: d.score })), roi: a.roi,
    crop: a.crop && Array.from(a.crop) };
};

els.start.onclick = startCamera;
els.stop.onclick = () => { stopCamera(); setStatus('Camera stopped.', 'ready'); };
els.switch.onclick = () => { facing = facing === 'user' ? 'environment' : 'user'; startCamera(); };
els.take.onchange = onFile;
els.upload.onchange = onFile;

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./sw.js').catch((e) => console.warn('service worker:', e));
}

load().then(() => {
  window.__backend = ep;
  els.start.disabled = !navigator.mediaDevices?.getUserMedia;
  setStatus('Ready: start the camera, or take/open a photo.', 'ready');
  if (new URLSearchParams(location.search).has('camera')) startCamera();
}).catch((e) => {
  setStatus(`Could not load the models: ${e.message}`, 'error');
  console.error(e);
});
