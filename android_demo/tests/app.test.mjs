// The built demo (dist/) in Debian's headless Chromium driven by playwright-core: manifest
// installability, fake camera and photo upload of a real side view (samples/profile_woman.jpg),
// browser-vs-Python parity of every stage (the detector passes, the pose network's two passes, the
// canonical crop, the generator, and the whole pipeline), WebGPU on SwiftShader, offline reload
// through the service worker. Screenshots go to tests/screenshots/ (docs/upload.png is made by
// `npm run screenshot`). Run: npm test (builds first).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ARGS, CHROMIUM, DIST, HERE, SAMPLES, openPage, reference, start, stop } from './browser.mjs';
import { decodePose, squareBbox } from '../src/pose.js';

const SHOTS = join(HERE, 'screenshots');
// Generator, browser (onnxruntime-web) vs Python (onnxruntime CPU) on the same crop and yaw, in
// output units ([-1, 1]; one uint8 step is 7.8e-3): both float32, kernels and summation order differ.
const GEN_TOL = 1e-3;
const REL_TOL = { wasm: 1e-3, webgpu: 1e-2 }; // of the largest |value| (WebGPU shaders accumulate differently)
// WebGPU on SwiftShader: the generator's warp (floor of sampling coordinates) flips on a few
// pixels; bound the worst value at 2 uint8 levels and the mean at 1e-3.
const WEBGPU_GEN_TOL = 2 / 127.5, WEBGPU_GEN_MEAN = 1e-3;
// Pose network on the same 96x96 input: raw outputs (logit, yaw/90, keypoints in [-1, 1]).
const POSE_TOL = 1e-3;
// Resampling is OpenCV's fixed point, reproduced: identical bytes expected; a 1-level difference
// is allowed on at most 0.1 % of the values (a tie rounded differently by a last-bit cos/sin).
const MAX_PIXEL_DIFF = 1, MAX_PIXEL_FRACTION = 1e-3;
// Whole pipeline, the browser alone vs Python: same pixels in, so only float differences
// (onnxruntime kernels) remain; they may flip the rounding of a few crop samples.
const MIN_SQUARE_IOU = 0.98, MAX_YAW_DIFF = 0.5, MAX_CROP_MEAN = 0.5;

let tmp, app, ref, P;
const b64 = (s, T = Uint8Array) => { const b = Buffer.from(s, 'base64'); return new T(b.buffer, b.byteOffset, b.length / T.BYTES_PER_ELEMENT); };
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const fmt = (v, d = 2) => (Math.abs(v) < 1e-2 && v !== 0 ? v.toExponential(d) : v.toFixed(d));

// { max, mean, n (count of nonzero differences), maxRef (largest |b|) }
function diff(a, b) {
  assert.equal(a.length, b.length);
  let max = 0, sum = 0, n = 0, maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    max = Math.max(max, e); sum += e; n += e > 0; maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return { max, mean: sum / a.length, n, maxRef };
}

function iou(a, b) {
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy);
}

async function setImage(page, name) {
  const { width, height } = ref.images[name];
  await page.evaluate(([px, w, h]) => window.__setImage(px, w, h), [readFileSync(join(tmp, `${name}.rgb`)).toString('base64'), width, height]);
}

before(async () => {
  assert.ok(existsSync(join(DIST, 'index.html')), 'dist/ missing: run `npm run build` (npm test does it first)');
  mkdirSync(SHOTS, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), 'frontalize-pwa-'));
  reference(tmp);
  ref = JSON.parse(readFileSync(join(tmp, 'reference.json'), 'utf8'));
  P = JSON.parse(readFileSync(join(DIST, 'models', 'model.json'), 'utf8')).pose;
  app = await start(join(tmp, 'profile'), ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-video-capture=${join(tmp, 'camera.y4m')}`]);
});

after(async () => {
  await stop(app ?? {});
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('manifest: Chromium reports no installability errors', async () => {
  const { page } = await openPage(app.context, app.origin);
  const cdp = await app.context.newCDPSession(page);
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  assert.deepEqual(installabilityErrors, []);
  const manifest = await cdp.send('Page.getAppManifest');
  assert.deepEqual(manifest.errors, []);
  await page.close();
});

test('camera: the side face is found and tracked, a prediction shown, every stage timed', async () => {
  const { page, foreign } = await openPage(app.context, app.origin, '?camera');
  await page.waitForFunction(() => window.__stats.faces >= 12, null, { timeout: 300_000 });
  await page.click('#stop');
  const stats = await page.evaluate(() => window.__stats);
  const backend = await page.evaluate(() => `${window.__backend}, ${navigator.hardwareConcurrency} cores, crossOriginIsolated ${self.crossOriginIsolated}`);
  const ms = Object.fromEntries(Object.entries(stats.ms).map(([k, v]) => [k, median(v.slice(1))])); // the first frame warms up
  console.log(`camera (640x480, ${backend}): ${stats.faces}/${stats.frames} frames with a face; median ms over ${stats.ms.total.length - 1} frames`,
    JSON.stringify(ms, (k, v) => (typeof v === 'number' ? +v.toFixed(1) : v)));
  assert.equal(await page.getAttribute('#result', 'data-face'), 'yes');
  for (const s of ['detect', 'track', 'pose', 'crop', 'generator', 'total']) assert.match(await page.textContent(`#timings tr[data-stage="${s}"] td:nth-child(2)`), /^\d+\.\d$/);
  // The predicted frontal canvas holds an image (not a blank canvas).
  const spread = await page.evaluate(() => {
    const d = document.querySelector('#faces canvas.frontal').getContext('2d').getImageData(0, 0, 128, 128).data;
    let lo = 255, hi = 0;
    for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
    return hi - lo;
  });
  assert.ok(spread > 20, `frontal canvas is (nearly) blank: spread ${spread}`);
  assert.deepEqual(foreign, [], 'requests left the origin (CDN?)');
  await page.screenshot({ path: join(SHOTS, 'camera.png'), fullPage: true });
  await page.close();
});

test('upload: a side-view photo is frontalized; a non-image gets a one-line message', async () => {
  const { page, foreign } = await openPage(app.context, app.origin);
  await page.setInputFiles('#upload', join(SAMPLES, ref.sample));
  await page.waitForFunction(() => document.getElementById('result').dataset.face === 'yes', null, { timeout: 120_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'photo');
  const ms = await page.evaluate(() => Object.fromEntries(Object.entries(window.__stats.ms).map(([k, v]) => [k, v.at(-1)])));
  console.log(`upload ${ref.sample} (${ref.images[ref.sample].width}x${ref.images[ref.sample].height}): ms`, JSON.stringify(ms, (k, v) => (typeof v === 'number' ? +v.toFixed(1) : v)));
  await page.screenshot({ path: join(SHOTS, 'upload.png'), fullPage: true });
  await page.setInputFiles('#upload', { name: 'notes.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('not an image') });
  await page.waitForFunction(() => /not an image/.test(document.getElementById('status').textContent));
  assert.deepEqual(foreign, [], 'requests left the origin');
  await page.close();
});

test('parity: pose network, crop and generator vs the Python runtime on the same inputs', async () => {
  const { page } = await openPage(app.context, app.origin);
  await setImage(page, ref.sample);

  // (a) The pose network on the same input squares (both passes of PoseNet.refine from the same
  // BlazeFace box): the 96x96 input bytes, the raw outputs, and the decoded yaw, E, M.
  const passes = ref.pose.passes;
  const got = await page.evaluate((sqs) => window.__poseOnSquares(sqs), passes.map((p) => p.square));
  const lines = [];
  passes.forEach((want, i) => {
    const inp = diff(got.input.slice(i * 96 * 96 * 3, (i + 1) * 96 * 96 * 3), b64(want.input));
    const row = diff(got.rows[i], want.row);
    const p = decodePose(got.rows[i], want.square, P), w = want.pose;
    const kp = Math.max(Math.hypot(p.E[0] - w.E[0], p.E[1] - w.E[1]), Math.hypot(p.M[0] - w.M[0], p.M[1] - w.M[1]));
    lines.push(`pass ${i + 1}: input bytes ${inp.n} of ${96 * 96 * 3} differ (max ${inp.max}); raw outputs max |diff| ${fmt(row.max)} ` +
      `(python row ${want.row.map((v) => v.toFixed(3))}); yaw ${p.yaw.toFixed(3)} vs ${w.yaw.toFixed(3)}°, ` +
      `E/M max ${fmt(kp)} px (square side ${want.square[2].toFixed(0)} px), score ${p.score.toFixed(4)} vs ${w.score.toFixed(4)}`);
    assert.ok(inp.max <= MAX_PIXEL_DIFF && inp.n <= MAX_PIXEL_FRACTION * 96 * 96 * 3, `pose input differs: ${JSON.stringify(inp)}`);
    assert.ok(row.max <= POSE_TOL, `pose outputs differ by ${row.max}`);
    assert.ok(Math.abs(p.yaw - w.yaw) <= 0.1 && kp <= 1e-3 * want.square[2], `decoded pose differs: yaw ${p.yaw} vs ${w.yaw}, E/M ${kp} px`);
  });
  console.log(`parity (a) pose network, ${ref.sample}, BlazeFace box ${ref.pose.box.map((v) => v.toFixed(0))}:\n  ${lines.join('\n  ')}`);

  // The two passes end to end in the browser (its own pass-2 square) from the same box.
  const refined = await page.evaluate((box) => window.__refine([box]), ref.pose.box);
  const sqW = ref.crop.square, sqG = refined[0].square;
  const sqErr = Math.max(Math.hypot(sqG[0] - sqW[0], sqG[1] - sqW[1]), Math.abs(sqG[2] - sqW[2])) / sqW[2];
  console.log(`parity refine (2 passes from the same box): canonical square ${sqG.map((v) => v.toFixed(2))} vs python ${sqW.map((v) => v.toFixed(2))}: ` +
    `centre/side error ${fmt(sqErr)} of the side, angle ${fmt(Math.abs(sqG[3] - sqW[3]))} rad`);
  assert.ok(sqErr <= 1e-3 && Math.abs(sqG[3] - sqW[3]) <= 1e-3, 'refined square differs');

  // (b) The canonical crop at Python's square vs runtime.pose.crop.
  const crop = await page.evaluate(([sq, s]) => window.__cropSquare(sq, s), [sqW, ref.crop.size]);
  const cd = diff(crop, b64(ref.crop.pixels));
  console.log(`parity (b) canonical crop ${ref.crop.size}x${ref.crop.size} at the same square: mean |diff| ${cd.mean.toFixed(4)}, max ${cd.max}, ${cd.n} of ${crop.length} values differ`);
  assert.ok(cd.max <= MAX_PIXEL_DIFF && cd.n <= MAX_PIXEL_FRACTION * crop.length, `crop differs: ${JSON.stringify(cd)}`);

  // (c) The generator on the same (Python) crop and yaw.
  const out = await page.evaluate(([c, yaw]) => window.__frontalizeCrop(c, yaw), [Array.from(b64(ref.crop.pixels)), ref.crop.yaw]);
  const gd = diff(out, b64(ref.generator.output, Float32Array));
  console.log(`parity (c) generator (${ref.generator.meta.model}, yaw ${ref.crop.yaw.toFixed(1)}°): max |browser - python| ${fmt(gd.max)}, mean ${fmt(gd.mean)} (max |output| ${gd.maxRef.toFixed(3)})`);
  assert.ok(gd.max <= GEN_TOL && gd.max <= REL_TOL.wasm * gd.maxRef, `generator differs by ${gd.max} of ${gd.maxRef}`);

  // Detector passes: the input tensor the browser makes from the pixels for each pass, and
  // each BlazeFace model on Python's tensor.
  const inputs = await page.evaluate(() => window.__passInputs());
  assert.deepEqual(inputs.map((p) => p.name), ref.passes.map((p) => p.name));
  for (const [i, want] of ref.passes.entries()) {
    const di = diff(inputs[i].tensor, b64(want.input, Float32Array));
    const det = await page.evaluate(([v, x]) => window.__runDetector(v, x), [want.variant, Array.from(b64(want.input, Float32Array))]);
    const rd = diff(det.regressors, b64(want.regressors, Float32Array)), ld = diff(det.logits, b64(want.logits, Float32Array));
    console.log(`parity detector pass ${want.name} (BlazeFace ${want.variant}): input ${di.n} of ${inputs[i].tensor.length} values differ ` +
      `(max ${fmt(di.max)}); raw outputs max |diff| regressors ${fmt(rd.max)} (max |value| ${rd.maxRef.toFixed(1)}), logits ${fmt(ld.max)} (max |value| ${ld.maxRef.toFixed(1)})`);
    assert.ok(di.max <= 1 / 127.5 + 1e-6 && di.n <= MAX_PIXEL_FRACTION * inputs[i].tensor.length, `${want.name} input differs: ${JSON.stringify(di)}`);
    assert.ok(rd.max <= REL_TOL.wasm * rd.maxRef && ld.max <= REL_TOL.wasm * ld.maxRef, `${want.name}: BlazeFace differs`);
  }
  await page.close();
});

test('parity: the whole photo pipeline finds the faces Python finds, framed alike', async () => {
  const { page } = await openPage(app.context, app.origin);
  const s = ref.generator.meta.input_size;
  for (const [name, want] of Object.entries(ref.images)) {
    await setImage(page, name);
    const a = await page.evaluate(() => window.__analyzeImage());
    // Every candidate box (BlazeFace's, refined by the pose network, whatever its face score).
    want.candidates.forEach((w, i) => {
      const best = a.candidates.map((c) => [iou(c.box, w.box), c]).sort((x, y) => y[0] - x[0])[0];
      assert.ok(best && best[0] >= MIN_SQUARE_IOU, `${name}: Python's candidate ${w.box.map(Math.round)} has no browser twin`);
      const [boxIou, c] = best;
      const o = iou(squareBbox(c.square), squareBbox(w.square));
      console.log(`pipeline ${name} candidate ${i + 1}: detector box IoU ${boxIou.toFixed(3)}; after the two passes: square IoU ${o.toFixed(3)}, ` +
        `yaw ${c.yaw.toFixed(1)} vs ${w.yaw.toFixed(1)}°, face score ${c.score.toFixed(3)} vs ${w.score.toFixed(3)}`);
      assert.ok(o >= MIN_SQUARE_IOU, `${name} candidate ${i + 1}: square IoU ${o}`);
      assert.ok(Math.abs(c.yaw - w.yaw) <= MAX_YAW_DIFF, `${name} candidate ${i + 1}: yaw ${c.yaw} vs ${w.yaw}`);
    });
    assert.equal(a.faces.length, want.faces.length, `${name}: ${a.faces.length} faces in the browser, ${want.faces.length} in Python`);
    a.faces.forEach((f, i) => {
      const w = want.faces[i];
      const cd = diff(a.crops.slice(i * s * s * 3, (i + 1) * s * s * 3), b64(w.crop));
      const o = iou(squareBbox(f.square), squareBbox(w.square));
      console.log(`pipeline ${name} face ${i + 1}: yaw ${f.yaw.toFixed(1)} vs ${w.yaw.toFixed(1)}°, square IoU ${o.toFixed(3)} ` +
        `(side ${f.square[2].toFixed(0)} vs ${w.square[2].toFixed(0)} px), crop mean |diff| ${cd.mean.toFixed(2)} max ${cd.max}`);
      assert.ok(o >= MIN_SQUARE_IOU, `${name} face ${i + 1}: square IoU ${o}`);
      assert.ok(cd.mean <= MAX_CROP_MEAN, `${name} face ${i + 1}: crop differs by ${cd.mean} on average`);
    });
    const warm = [];
    for (let r = 0; r < 3; r++) warm.push((await page.evaluate(() => window.__analyzeImage())).ms);
    const ms = Object.fromEntries(Object.keys(a.ms).map((k) => [k, median(warm.map((m) => m[k]))]));
    console.log(`pipeline ${name} (${want.width}x${want.height}): ${a.faces.length} face(s); ms first run ${JSON.stringify(a.ms, (k, v) => (typeof v === 'number' ? +v.toFixed(1) : v))}, ` +
      `median of 3 more ${JSON.stringify(ms, (k, v) => (typeof v === 'number' ? +v.toFixed(1) : v))}`);
  }
  await page.close();
});

// WebGPU code path on SwiftShader (software Vulkan: slow, but the same WebGPU EP that a phone's
// GPU runs), in its own browser since the main one runs with --disable-gpu.
test('webgpu (SwiftShader): the WebGPU backend loads and matches Python', async () => {
  const ctx = await chromium.launchPersistentContext(join(tmp, 'profile-webgpu'), {
    executablePath: CHROMIUM, headless: true, args: [...ARGS, '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'],
  });
  try {
    const page = await ctx.newPage();
    await page.goto(`${app.origin}/`);
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: 180_000 });
    const backend = await page.evaluate(() => window.__backend);
    if (backend !== 'webgpu') {
      const adapter = await page.evaluate(async () => !!(await navigator.gpu?.requestAdapter()));
      assert.ok(!adapter, `a WebGPU adapter exists but the page runs on ${backend}`);
      console.log('webgpu: no adapter in this Chromium build: not covered');
      return;
    }
    const out = await page.evaluate(([c, yaw]) => window.__frontalizeCrop(c, yaw), [Array.from(b64(ref.crop.pixels)), ref.crop.yaw]);
    const gd = diff(out, b64(ref.generator.output, Float32Array));
    await setImage(page, ref.sample);
    const pose = await page.evaluate((sqs) => window.__poseOnSquares(sqs), ref.pose.passes.map((p) => p.square));
    const pd = diff(pose.rows.flat(), ref.pose.passes.flatMap((p) => p.row));
    const p0 = ref.passes[0];
    const det = await page.evaluate(([v, x]) => window.__runDetector(v, x), [p0.variant, Array.from(b64(p0.input, Float32Array))]);
    const rd = diff(det.regressors, b64(p0.regressors, Float32Array));
    console.log(`webgpu parity: generator max |diff| ${fmt(gd.max)}, mean ${fmt(gd.mean)}, ${out.filter((v, i) => Math.abs(v - b64(ref.generator.output, Float32Array)[i]) > 1 / 127.5).length} of ${out.length} values by more than one uint8 level (max |output| ${gd.maxRef.toFixed(3)}), pose outputs ${fmt(pd.max)}, ` +
      `BlazeFace regressors ${fmt(rd.max)} (max ${rd.maxRef.toFixed(1)})`);
    assert.ok(gd.max <= WEBGPU_GEN_TOL && gd.mean <= WEBGPU_GEN_MEAN, `generator differs by ${gd.max} (mean ${gd.mean})`);
    assert.ok(pd.max <= POSE_TOL * 10, `pose network differs by ${pd.max}`);
    assert.ok(rd.max <= REL_TOL.webgpu * rd.maxRef, `BlazeFace differs by ${rd.max}`);
  } finally {
    await ctx.close();
  }
});

// In its own browser (fresh profile, as after an install): in the shared one, after the tests
// above, the 6th page load of the run has hung in onnxruntime-web's first session creation on
// this 2-core machine (not seen with 8 reloads or new pages in a row in a fresh browser).
test('offline: with the server stopped, a reload still runs (service worker)', async () => {
  const ctx = await chromium.launchPersistentContext(join(tmp, 'profile-offline'), {
    executablePath: CHROMIUM, headless: true, viewport: { width: 412, height: 915 }, args: [...ARGS, '--disable-gpu'],
  });
  try {
    const { page } = await openPage(ctx, app.origin);
    await page.waitForFunction(async () => (await navigator.serviceWorker.ready) && !!navigator.serviceWorker.controller, null, { timeout: 60_000 });
    app.server.closeAllConnections();
    await new Promise((ok) => app.server.close(ok));
    const down = await fetch(app.origin).then(() => false, () => true);
    assert.ok(down, 'server still answers');
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 120_000 });
    await page.setInputFiles('#upload', join(SAMPLES, ref.sample));
    await page.waitForFunction(() => document.getElementById('result').dataset.face === 'yes', null, { timeout: 120_000 });
    await page.screenshot({ path: join(SHOTS, 'offline.png'), fullPage: true });
  } finally {
    await ctx.close();
  }
});
