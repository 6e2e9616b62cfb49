// Face frontalization in the browser, the Python runtime's pipeline (runtime/detect.py):
// candidates from BlazeFace passes (runtime/detectors.py) -> the pose network in two passes
// (face score, yaw, eye and mouth midpoints) -> faces with score >= min_score, merged -> the
// canonical eye-mouth crop -> the generator: by default the Python runtime's geometric one
// (3DDFA_V2's 68 landmarks and pose, then geometry.js: this photo's own pixels turned to frontal),
// or a learned ONNX generator fed each crop and yaw (build.py --model). Every model runs on
// onnxruntime-web: WebGPU where there is an adapter, WASM otherwise. Everything is served from
// this origin (and cached by sw.js).
import * as ort from './ort/ort.webgpu.min.mjs';
import { merge, passInput, runPass } from './blazeface.js';
import { outputToRgba, rgbToRgba, toInput } from './crop.js';
import { Geometry, readPose } from './geometry.js';
import { crop, facesFromBoxes, imageFromRgba, predict, refine, runPoseNet, squareCorners } from './pose.js';

const $ = (id) => document.getElementById(id);
const els = {
  status: $('status'), backend: $('backend'), video: $('video'), preview: $('preview'), faces: $('faces'),
  result: $('result'), info: $('model-info'), start: $('start'), switch: $('switch'), stop: $('stop'),
  take: $('take'), upload: $('upload'),
};
const scratch = { frame: document.createElement('canvas') };
const STAGES = ['detect', 'track', 'pose', 'crop', 'generator', 'total'];
const stats = { frames: 0, faces: 0, onePass: 0, ms: Object.fromEntries(STAGES.map((s) => [s, []])) };
window.__stats = stats;
const MAX_FACES = { photo: 4, camera: 1 };

let detectors, posenet, generator, tddfa, geometry, meta, P, D, ep;
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
  const threads = Number(new URLSearchParams(location.search).get('threads')) || Math.min(4, navigator.hardwareConcurrency || 1);
  ort.env.wasm.numThreads = self.crossOriginIsolated ? threads : 1; // several threads need SharedArrayBuffer
  const models = await fetch('models/model.json').then((r) => r.json());
  meta = models.generator;
  P = models.pose;
  D = models.detector;
  const providers = await chooseProviders();
  setStatus('Loading the face detectors…');
  detectors = {};
  for (const [v, info] of Object.entries(D.variants)) [detectors[v]] = await createSession(`models/${info.file}`, providers);
  setStatus('Loading the pose network…');
  [posenet] = await createSession(`models/${P.file}`, providers);
  setStatus('Loading the frontalizer…');
  if (meta.model === 'geometry') {
    [tddfa, ep] = await createSession(`models/${meta.tddfa.file}`, providers);
    geometry = new Geometry(meta, await fetch(`models/${meta.file}`).then((r) => r.arrayBuffer()));
  } else {
    [generator, ep] = await createSession(`models/${meta.file}`, providers);
  }
  document.querySelector('#timings tr[data-stage="generator"] td').textContent =
    geometry ? 'generator (3DDFA_V2 + geometry)' : `generator (${meta.model})`;
  els.backend.textContent = `${ep.toUpperCase()}${ep === 'wasm' ? ` ×${ort.env.wasm.numThreads}` : ''}`;
  els.info.textContent = `generator: ${meta.model} (${meta.source}), ${meta.input_size} px ${meta.crop_rule} crop` +
    `${meta.yaw_input ? ', yaw input' : ''}; pose network: ${P.source}; detectors: ${D.passes.photo.map((p) => p.name).join(', ')} ` +
    `(camera: ${D.passes.camera.map((p) => p.name).join(', ')})`;
}

// The geometric generator (runtime.geometry.GeometryEngine): 3DDFA_V2 reads each face's 68 landmarks
// and pose from its canonical square (its yaw is shown, as the CLI does; kept in f.tddfaYaw, f.yaw
// stays the pose network's), and geometry.js turns the photo's pixels to frontal. -> N*s*s*3 RGB bytes.
// A face tracked in the camera is read in one 3DDFA_V2 pass from the previous frame's landmarks,
// moved and scaled with the tracker's square (runtime.geometry.GeometryEngine does the same).
let lastPose = null; // { landmarks, square } of the previous camera frame's face
async function runGeometry(img, faces) {
  const s = meta.input_size, out = new Uint8Array(faces.length * s * s * 3);
  let previous = null;
  if (faces.length === 1 && faces[0].tracked && lastPose) {
    const [px, py, pside] = lastPose.square, [cx, cy, side] = faces[0].square, k = side / pside;
    previous = [lastPose.landmarks.map(([x, y]) => [(x - px) * k + cx, (y - py) * k + cy])];
    stats.onePass++;
  }
  const poses = await readPose(ort, tddfa, img, faces.map((f) => f.square), meta.tddfa, crop, previous);
  lastPose = faces.length === 1 ? { landmarks: poses[0].landmarks, square: faces[0].square } : null;
  faces.forEach((f, i) => {
    f.tddfaYaw = poses[i].yaw;
    out.set(geometry.frontalize(img, poses[i].landmarks, f.square, s).rgb, i * s * s * 3);
  });
  return out;
}

// Generator on N canonical crops (RGB uint8, N*s*s*3) and their yaws -> model-range float32
// output (NHWC).
async function runGenerator(rgb, yaws) {
  const s = meta.input_size, n = yaws.length;
  const [imageName, yawName] = meta.inputs || generator.inputNames;
  const feeds = { [imageName]: new ort.Tensor('float32', toInput(rgb, meta.input_range), [n, s, s, 3]) };
  if (meta.yaw_input === 'degrees') feeds[yawName] = new ort.Tensor('float32', Float32Array.from(yaws), [n, 1]);
  const out = (await generator.run(feeds))[generator.outputNames[0]];
  return out.getData ? await out.getData() : out.data;
}

// The frame's pixels at full resolution (what the pose network and the crop read).
function framePixels(source, width, height) {
  const c = scratch.frame;
  if (c.width !== width || c.height !== height) { c.width = width; c.height = height; }
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  return imageFromRgba(ctx.getImageData(0, 0, width, height).data, width, height);
}

// detect -> pose (2 passes) -> canonical crops, on a drawable (video, ImageBitmap, canvas) or,
// with `img` given, on those pixels. The camera follows runtime/camera.py's FaceTracker: the
// largest face, detected every `detect_every` frames (or when lost) and in between read again
// by the pose network from where it was (one pass from its canonical square x1.25, no
// detector) while its face score stays >= min_score.
const tracker = { face: null, since: 0 };

async function analyze(source, width, height, mode, img = null) {
  const t0 = performance.now();
  img ??= framePixels(source, width, height);
  const ms = {};
  let dets = [], candidates = [], faces = [];
  if (mode === 'camera' && tracker.face && tracker.since < D.detect_every - 1) {
    const [cx, cy, side, angle] = tracker.face.square;
    const [p] = await predict(ort, posenet, img, [[cx, cy, side * P.refine_scale, angle]], P);
    ms.track = performance.now() - t0;
    if (p.score >= P.min_score) {
      faces = [{ ...p, detBox: tracker.face.detBox, tracked: true }];
      tracker.since++;
    }
  }
  if (!faces.length) {
    const t1 = performance.now();
    const found = [];
    for (const p of D.passes[mode]) found.push(...await runPass(ort, detectors[p.variant], img, p, D.variants[p.variant]));
    dets = merge(found, D.merge_iou, D.contain).slice(0, D.max_candidates);
    const t2 = performance.now();
    ms.detect = t2 - t1;
    if (dets.length) {
      let all;
      ({ faces: all, candidates } = await facesFromBoxes(ort, posenet, img, dets, P));
      faces = all.slice(0, MAX_FACES[mode]);
      ms.pose = performance.now() - t2;
    }
    tracker.since = 0;
  }
  if (mode === 'camera') tracker.face = faces[0] ?? null;
  const t3 = performance.now();
  const s = meta.input_size;
  const crops = new Uint8Array(faces.length * s * s * 3);
  faces.forEach((f, i) => crop(img, f.square, s, crops, i * s * s * 3));
  if (faces.length) ms.crop = performance.now() - t3;
  return { img, dets, faces, candidates, crops, ms };
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

// The yaw shown: 3DDFA_V2's where the geometric generator read it (as the CLI shows), else the pose network's.
const shownYaw = (f) => f.tddfaYaw ?? f.yaw;
const signed = (v) => `${v >= 0 ? '+' : ''}${v.toFixed(0)}`;

// Detector boxes (orange), candidates the pose network rejected (dashed red), each face's
// canonical crop square (green, turned with the face) with its eye and mouth midpoints.
function drawPreview(source, width, height, a) {
  const c = els.preview;
  c.width = width;
  c.height = height;
  const ctx = c.getContext('2d');
  ctx.drawImage(source, 0, 0, width, height);
  const lw = Math.max(2, width / 250);
  ctx.lineWidth = lw;
  ctx.strokeStyle = '#ffb000';
  for (const d of a.dets) ctx.strokeRect(d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]);
  const poly = (sq) => { ctx.beginPath(); squareCorners(sq).forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.closePath(); ctx.stroke(); };
  ctx.setLineDash([3 * lw, 2 * lw]);
  ctx.strokeStyle = '#ff4040';
  for (const p of a.candidates) if (p.score < P.min_score) poly(p.square);
  ctx.setLineDash([]);
  ctx.font = `${Math.round(6 * lw)}px system-ui, sans-serif`;
  a.faces.forEach((f, i) => {
    ctx.strokeStyle = '#30ff60';
    poly(f.square);
    ctx.fillStyle = '#00e0ff';
    for (const [x, y] of [f.E, f.M]) { ctx.beginPath(); ctx.arc(x, y, 1.5 * lw, 0, 2 * Math.PI); ctx.fill(); }
    const [x0, y0] = squareCorners(f.square).reduce(([mx, my], [x, y]) => [Math.min(mx, x), Math.min(my, y)], [Infinity, Infinity]);
    ctx.fillStyle = '#30ff60';
    ctx.fillText(`${i + 1}: yaw ${signed(shownYaw(f))}°`, x0, Math.max(6 * lw, y0 - lw));
  });
}

function showFaces(a, y) {
  const s = meta.input_size, n = s * s * 3;
  els.faces.replaceChildren(...a.faces.map((f, i) => {
    const row = document.createElement('div');
    row.className = 'pair';
    const fig = (cls, caption, rgba) => {
      const figure = document.createElement('figure');
      const canvas = Object.assign(document.createElement('canvas'), { width: s, height: s, className: cls });
      canvas.getContext('2d').putImageData(new ImageData(rgba, s, s), 0, 0);
      const cap = document.createElement('figcaption');
      cap.textContent = caption;
      figure.append(canvas, cap);
      return figure;
    };
    const label = `${a.faces.length > 1 ? `${i + 1}: ` : ''}yaw ${signed(shownYaw(f))}°, face score ${f.score.toFixed(2)}`;
    const frontal = y.subarray(i * n, (i + 1) * n);
    row.append(fig('crop', `input crop (${label})`, rgbToRgba(a.crops.subarray(i * n, (i + 1) * n))),
      fig('frontal', 'predicted frontal', geometry ? rgbToRgba(frontal) : outputToRgba(frontal, meta.output_range)));
    return row;
  }));
}

async function frontalize(source, width, height, mode, img = null) {
  const t0 = performance.now();
  const a = await analyze(source, width, height, mode, img);
  stats.frames++;
  if (!a.faces.length) {
    drawPreview(source, width, height, a);
    els.result.dataset.face = 'no';
    els.faces.replaceChildren();
    record(a.ms);
    setStatus(a.dets.length ? `No face: ${a.dets.length} candidate box(es), none looked like a face to the pose network.`
      : 'No face found: face the camera, or try another photo.');
    return a;
  }
  const t1 = performance.now();
  const y = geometry ? await runGeometry(a.img, a.faces) : await runGenerator(a.crops, a.faces.map((f) => f.yaw));
  a.ms.generator = performance.now() - t1;
  a.frontals = y;
  drawPreview(source, width, height, a); // after the generator: the geometric one reads the yaw shown
  showFaces(a, y);
  a.ms.total = performance.now() - t0;
  record(a.ms);
  stats.faces++;
  els.result.dataset.face = 'yes';
  els.result.dataset.count = a.faces.length;
  setStatus(a.faces.length > 1 ? `${a.faces.length} faces found.`
    : `Face ${a.faces[0].tracked ? 'tracked' : 'found'} (yaw ${signed(shownYaw(a.faces[0]))}°).`);
  return a;
}

// One frame at a time: the next starts when the previous finished.
const serial = (fn) => (busy = busy.then(fn, fn));

async function loop() {
  if (!running) return;
  const v = els.video;
  if (v.readyState >= 2 && v.videoWidth) await serial(() => frontalize(v, v.videoWidth, v.videoHeight, 'camera'));
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
  tracker.face = null;
  lastPose = null;
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
  await serial(() => frontalize(bmp, bmp.width, bmp.height, 'photo'));
  document.body.dataset.state = 'photo';
  ev.target.value = '';
}

// ---- test hooks (tests/app.test.mjs): the browser's stages on inputs the Python runtime also sees.
let testImage = null; // { img, bmp }: RGB bytes from the test, as pixels and as a drawable
window.__setImage = async (b64, width, height) => {
  const rgb = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const rgba = rgbToRgba(rgb);
  testImage = { img: imageFromRgba(rgba, width, height), bmp: await createImageBitmap(new ImageData(rgba, width, height)) };
};
// The pose network on input squares (cx, cy, side, angle): its 96x96 inputs and raw output rows.
window.__poseOnSquares = async (squares) => {
  const r = await serial(() => runPoseNet(ort, posenet, testImage.img, squares, P));
  return { input: Array.from(r.input), rows: r.rows };
};
// The two passes from given detector boxes (no detector): the faces' poses, whatever their score.
window.__refine = async (boxes) => (await serial(() => refine(ort, posenet, testImage.img, boxes, P))).map((p) => ({ ...p }));
window.__cropSquare = (square, size) => Array.from(crop(testImage.img, square, size));
window.__frontalizeCrop = async (rgb, yaw) => Array.from(await serial(() => runGenerator(Uint8Array.from(rgb), [yaw])));
// 3DDFA_V2's two passes from canonical squares: each pass's 120 px inputs, landmarks and pose.
window.__tddfa = async (squares) => (await serial(() => readPose(ort, tddfa, testImage.img, squares, meta.tddfa, crop)))
  .map((p) => ({ yaw: p.yaw, pitch: p.pitch, roll: p.roll, landmarks: p.landmarks, square: p.square, input: Array.from(p.input), first: { square: p.first.square, landmarks: p.first.landmarks, input: Array.from(p.first.input) } }));
// geometry.js on given landmarks and square of the test image (RGB bytes, and ms).
window.__geometry = (landmarks, square) => {
  const t0 = performance.now();
  const r = geometry.frontalize(testImage.img, landmarks, square, meta.input_size);
  return { rgb: Array.from(r.rgb), ms: performance.now() - t0 };
};
// Each photo pass's model input for the test image, and a BlazeFace variant's raw outputs.
window.__passInputs = () => D.passes.photo.map((p) => ({ name: p.name, variant: p.variant, tensor: Array.from(passInput(testImage.img, p, D.variants[p.variant].size).tensor) }));
window.__runDetector = async (variant, x) => {
  const s = D.variants[variant].size, sess = detectors[variant];
  const out = await serial(() => sess.run({ [sess.inputNames[0]]: new ort.Tensor('float32', Float32Array.from(x), [1, s, s, 3]) }));
  const [logits, regressors] = Object.values(out).sort((a, b) => a.dims.at(-1) - b.dims.at(-1));
  return { regressors: Array.from(regressors.data), logits: Array.from(logits.data) };
};
// The whole photo path on the test image (shown on the page, like an upload).
window.__analyzeImage = async () => {
  const { img, bmp } = testImage;
  const a = await serial(() => frontalize(bmp, img.width, img.height, 'photo', img));
  return { dets: a.dets.map((d) => d.box), candidates: a.candidates.map((c) => ({ box: c.detBox, yaw: c.yaw, score: c.score, square: c.square })), faces: a.faces.map((f) => ({ E: f.E, M: f.M, yaw: f.yaw, tddfaYaw: f.tddfaYaw, score: f.score, square: f.square, detBox: f.detBox })),
    crops: a.crops && Array.from(a.crops), frontals: a.frontals && Array.from(a.frontals), ms: a.ms };
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
