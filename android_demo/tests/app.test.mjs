// The built demo (dist/) in Debian's headless Chromium driven by playwright-core: manifest
// installability, fake camera and photo upload of a real side view (samples/profile_woman.jpg),
// browser-vs-Python parity of every stage (the detector passes, the pose network's two passes, the
// canonical crop, 3DDFA_V2's two passes, the geometric generator, and the whole pipeline up to the
// frontal face), WebGPU on SwiftShader, offline reload
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
const REL_TOL = { wasm: 1e-3, webgpu: 1e-2 }; // of the largest |value| (WebGPU shaders accumulate differently)
// 3DDFA_V2 on the same 120 px input: landmarks in image px (float32 kernels differ), yaw in degrees.
const TDDFA_LM_TOL = 0.05, TDDFA_YAW_TOL = 0.05, WEBGPU_TDDFA_LM_TOL = 0.5;
// The geometric generator (geometry.js vs runtime.geometry) on the same photo, landmarks and square:
// OpenCV's arithmetic is reproduced where it decides pixels, but float64/float32 rounding, the convex
// fill's edge pixels and the uint8 Gaussian blur's fixed point differ on a few values (measured on the
// samples: 52-67 dB, at most 0.4 % of the values more than 2 levels apart, on the face-region and jaw edges).
const GEO_MIN_PSNR = 45, GEO_MAX_FAR = 0.01;
// Whole pipeline to the frontal face: the browser's own square and landmarks (float differences of
// three networks) move the warp by a fraction of a pixel; on sharp edges that costs PSNR (measured:
// 45.6-52.1 dB on three faces, 28.7 dB on the hard hat, whose 3DDFA_V2 yaw is 0.16° apart).
const PIPE_MIN_PSNR = 25, PIPE_MAX_TDDFA_YAW = 1.0;
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
// PSNR (dB) of uint8 values a vs b, and the fraction more than 2 levels apart.
function psnr(a, b) {
  assert.equal(a.length, b.length);
  let se = 0, far = 0;
  for (let i = 0; i < a.length; i++) { const e = a[i] - b[i]; se += e * e; far += Math.abs(e) > 2; }
  return { db: se ? 10 * Math.log10(255 * 255 * a.length / se) : Infinity, far: far / a.length };
}
const lmDiff = (a, b) => Math.max(...a.map((p, i) => Math.hypot(p[0] - b[i][0], p[1] - b[i][1])));
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
  // tracked frames: 3DDFA_V2 in one pass from the previous frame's landmarks
  console.log(`camera: ${stats.onePass} frames read by 3DDFA_V2 in one pass`);
  assert.ok(stats.onePass >= stats.faces / 2, `only ${stats.onePass} of ${stats.faces} frames in one pass`);
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

test('parity: pose network, crop, 3DDFA_V2 and the geometric generator vs the Python runtime on the same inputs', async () => {
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

  // (c) 3DDFA_V2's two passes from Python's canonical square: the 120 px inputs, the landmarks, the pose.
  const T = ref.tddfa;
  const [tp] = await page.evaluate((sq) => window.__tddfa([sq]), ref.crop.square);
  for (const [k, got1, want1] of [['first', tp.first, T.first], ['second', tp, T.second]]) {
    const inp = diff(got1.input, b64(want1.input));
    const lm = lmDiff(got1.landmarks, want1.landmarks);
    console.log(`parity (c) 3DDFA_V2 ${k} pass: square ${got1.square.map((v) => v.toFixed(1))} vs ${want1.square.map((v) => v.toFixed(1))}, ` +
      `input bytes ${inp.n} of ${got1.input.length} differ (max ${inp.max}), landmarks max ${fmt(lm, 3)} px`);
    assert.ok(inp.max <= MAX_PIXEL_DIFF && inp.n <= MAX_PIXEL_FRACTION * got1.input.length, `3DDFA ${k} input differs: ${JSON.stringify(inp)}`);
    assert.ok(lm <= TDDFA_LM_TOL, `3DDFA ${k} landmarks differ by ${lm} px`);
  }
  console.log(`parity (c) 3DDFA_V2 pose: yaw ${tp.yaw.toFixed(3)} vs ${T.yaw.toFixed(3)}, pitch ${tp.pitch.toFixed(3)} vs ${T.pitch.toFixed(3)}, roll ${tp.roll.toFixed(3)} vs ${T.roll.toFixed(3)}°`);
  assert.ok(Math.abs(tp.yaw - T.yaw) <= TDDFA_YAW_TOL && Math.abs(tp.pitch - T.pitch) <= TDDFA_YAW_TOL, 'pose differs');

  // (d) The geometric generator on Python's landmarks and square of the same pixels.
  const geo = await page.evaluate(([lm, sq]) => window.__geometry(lm, sq), [ref.geometry.landmarks, ref.geometry.square]);
  const gp = psnr(geo.rgb, b64(ref.geometry.output)), gd = diff(geo.rgb, b64(ref.geometry.output));
  console.log(`parity (d) geometry (yaw ${T.yaw.toFixed(1)}°): ${gp.db.toFixed(1)} dB from runtime.geometry, ${(100 * gp.far).toFixed(2)} % of the values ` +
    `more than 2 levels apart (max ${gd.max}, mean ${gd.mean.toFixed(3)}); ${geo.ms.toFixed(0)} ms`);
  assert.ok(gp.db >= GEO_MIN_PSNR && gp.far <= GEO_MAX_FAR, `geometry differs: ${gp.db} dB, ${gp.far} far`);

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

test('parity: the whole photo pipeline finds the faces Python finds, framed alike, and frontalizes them alike', async () => {
  const { page } = await openPage(app.context, app.origin);
  const s = ref.crop.size;
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
      const fp = psnr(a.frontals.slice(i * s * s * 3, (i + 1) * s * s * 3), b64(w.frontal));
      console.log(`pipeline ${name} face ${i + 1}: yaw ${f.yaw.toFixed(1)} vs ${w.yaw.toFixed(1)}°, square IoU ${o.toFixed(3)} ` +
        `(side ${f.square[2].toFixed(0)} vs ${w.square[2].toFixed(0)} px), crop mean |diff| ${cd.mean.toFixed(2)} max ${cd.max}; ` +
        `3DDFA_V2 yaw ${f.tddfaYaw.toFixed(2)} vs ${w.tddfa_yaw.toFixed(2)}°, frontal ${fp.db.toFixed(1)} dB from Python's`);
      assert.ok(o >= MIN_SQUARE_IOU, `${name} face ${i + 1}: square IoU ${o}`);
      assert.ok(cd.mean <= MAX_CROP_MEAN, `${name} face ${i + 1}: crop differs by ${cd.mean} on average`);
      assert.ok(Math.abs(f.tddfaYaw - w.tddfa_yaw) <= PIPE_MAX_TDDFA_YAW, `${name} face ${i + 1}: 3DDFA yaw ${f.tddfaYaw} vs ${w.tddfa_yaw}`);
      assert.ok(fp.db >= PIPE_MIN_PSNR, `${name} face ${i + 1}: frontal ${fp.db} dB from Python's`);
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
    await setImage(page, ref.sample);
    const [tp] = await page.evaluate((sq) => window.__tddfa([sq]), ref.crop.square);
    const lm = lmDiff(tp.landmarks, ref.tddfa.second.landmarks);
    const pose = await page.evaluate((sqs) => window.__poseOnSquares(sqs), ref.pose.passes.map((p) => p.square));
    const pd = diff(pose.rows.flat(), ref.pose.passes.flatMap((p) => p.row));
    const p0 = ref.passes[0];
    const det = await page.evaluate(([v, x]) => window.__runDetector(v, x), [p0.variant, Array.from(b64(p0.input, Float32Array))]);
    const rd = diff(det.regressors, b64(p0.regressors, Float32Array));
    console.log(`webgpu parity: 3DDFA_V2 landmarks max ${fmt(lm, 3)} px, yaw ${tp.yaw.toFixed(2)} vs ${ref.tddfa.yaw.toFixed(2)}°, pose outputs ${fmt(pd.max)}, ` +
      `BlazeFace regressors ${fmt(rd.max)} (max ${rd.maxRef.toFixed(1)})`);
    assert.ok(lm <= WEBGPU_TDDFA_LM_TOL, `3DDFA landmarks differ by ${lm} px`);
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
