// The built demo (dist/) in Debian's headless Chromium driven by playwright-core: fake camera
// from a y4m of samples/grace_hopper.jpg, photo upload, browser-vs-Python parity, offline
// reload through the service worker, manifest installability. Screenshots go to
// tests/screenshots/. Run: npm test (builds first). Env: CHROMIUM (default /usr/bin/chromium),
// FRONTALIZE_PYTHON (default ../.venv/bin/python).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../serve.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const APP = join(HERE, '..');
const DIST = join(APP, 'dist');
const SHOTS = join(HERE, 'screenshots');
const PYTHON = process.env.FRONTALIZE_PYTHON || join(APP, '..', '.venv', 'bin', 'python');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SAMPLE = join(APP, '..', 'samples', 'grace_hopper.jpg');
// Browser (onnxruntime-web WASM) vs Python (onnxruntime CPU) on the same crop, in output units
// ([-1, 1]; one uint8 step is 7.8e-3): both are float32 but kernels and summation order differ.
const PARITY_TOL = 1e-3;
// Relative to the largest |output| (an untrained generator's output is ~1e-5, so the absolute
// bound alone could not fail). WebGPU shaders accumulate differently: 1e-2 there.
const REL_TOL = { wasm: 1e-3, webgpu: 1e-2 };
const MIN_ROI_IOU = 0.75; // browser's calibrated BlazeFace square vs Python's 68-landmark square

let tmp, server, origin, context, ref, rgb;
const py = (...args) => execFileSync(PYTHON, [join(HERE, 'reference.py'), ...args], { encoding: 'utf8' });
const b64 = (s, T = Uint8Array) => { const b = Buffer.from(s, 'base64'); return new T(b.buffer, b.byteOffset, b.length / T.BYTES_PER_ELEMENT); };
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

// [max |a-b|, mean |a-b|, max |b|]
function diff(a, b) {
  assert.equal(a.length, b.length);
  let mx = 0, sum = 0, mb = 0;
  for (let i = 0; i < a.length; i++) { const e = Math.abs(a[i] - b[i]); mx = Math.max(mx, e); sum += e; mb = Math.max(mb, Math.abs(b[i])); }
  return [mx, sum / a.length, mb];
}

function iou(a, b) {
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy);
}

async function openPage(query = '') {
  const page = await context.newPage();
  const foreign = [];
  page.on('request', (r) => { if (!/^(data|blob):/.test(r.url()) && !r.url().startsWith(origin)) foreign.push(r.url()); });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(`${origin}/${query}`);
  await page.waitForFunction(() => ['ready', 'camera'].includes(document.body.dataset.state), null, { timeout: 60_000 });
  return { page, foreign };
}

before(async () => {
  assert.ok(existsSync(join(DIST, 'index.html')), 'dist/ missing: run `npm run build` (npm test does it first)');
  mkdirSync(SHOTS, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), 'frontalize-pwa-'));
  py(tmp, join(DIST, 'models'));
  ref = JSON.parse(readFileSync(join(tmp, 'reference.json'), 'utf8'));
  rgb = readFileSync(join(tmp, 'image.rgb'));
  server = await serve(DIST, 0);
  origin = `http://127.0.0.1:${server.address().port}`;
  context = await chromium.launchPersistentContext(join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 412, height: 915 }, // a phone-sized window
    deviceScaleFactor: 1,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      `--use-file-for-fake-video-capture=${join(tmp, 'camera.y4m')}`],
  });
});

after(async () => {
  await context?.close();
  server?.closeAllConnections();
  server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('manifest: Chromium reports no installability errors', async () => {
  const { page } = await openPage();
  const cdp = await context.newCDPSession(page);
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  assert.deepEqual(installabilityErrors, []);
  const manifest = await cdp.send('Page.getAppManifest');
  assert.deepEqual(manifest.errors, []);
  await page.close();
});

test('camera: the fake camera face is found, a prediction shown, timings reported', async () => {
  const { page, foreign } = await openPage('?camera');
  await page.waitForFunction(() => window.__stats.faces >= 5, null, { timeout: 120_000 });
  await page.click('#stop');
  const stats = await page.evaluate(() => window.__stats);
  const backend = await page.evaluate(() => window.__backend);
  const ms = Object.fromEntries(Object.entries(stats.ms).map(([k, v]) => [k, median(v.slice(1))])); // first run warms up
  console.log(`camera: ${stats.faces}/${stats.frames} frames with a face on ${backend}; median ms`, JSON.stringify(ms, (k, v) => (typeof v === 'number' ? +v.toFixed(1) : v)));
  assert.equal(await page.getAttribute('#result', 'data-face'), 'yes');
  assert.ok(stats.faces >= 5);
  for (const s of ['detect', 'crop', 'generator', 'total']) assert.match(await page.textContent(`#timings tr[data-stage="${s}"] td:nth-child(2)`), /^\d+\.\d$/);
  // The predicted frontal canvas holds an image (not the blank canvas).
  const spread = await page.evaluate(() => {
    const d = document.getElementById('frontal').getContext('2d').getImageData(0, 0, 128, 128).data;
    let lo = 255, hi = 0;
    for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
    return hi - lo;
  });
  assert.ok(spread > 0, 'frontal canvas is blank');
  assert.deepEqual(foreign, [], 'requests left the origin (CDN?)');
  await page.screenshot({ path: join(SHOTS, 'camera.png'), fullPage: true });
  await page.close();
});

test('upload: a photo is frontalized; a non-image gets a one-line message', async () => {
  const { page } = await openPage();
  await page.setInputFiles('#upload', SAMPLE);
  await page.waitForFunction(() => document.getElementById('result').dataset.face === 'yes', null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'photo');
  await page.screenshot({ path: join(SHOTS, 'upload.png'), fullPage: true });
  await page.setInputFiles('#upload', { name: 'notes.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('not an image') });
  await page.waitForFunction(() => /not an image/.test(document.getElementById('status').textContent));
  await page.close();
});

test('parity: browser vs Python runtime on the same crop and the same image', async () => {
  const { page } = await openPage();
  const crop = b64(ref.crop);
  const want = b64(ref.output, Float32Array);
  const got = await page.evaluate((c) => window.__frontalizeCrop(c), Array.from(crop));
  assert.equal(got.length, want.length);
  const [maxErr, meanErr, maxWant] = diff(got, want);
  // BlazeFace (a trained network: real activations even while the generator is untrained) on
  // the Python runtime's letterboxed input tensor of the same image.
  const detIn = b64(ref.det_input, Float32Array);
  const det = await page.evaluate((x) => window.__runDetector(x), Array.from(detIn));
  const [detErr, , detMax] = diff(det.regressors, b64(ref.det_regressors, Float32Array));
  const [clsErr, , clsMax] = diff(det.classificators, b64(ref.det_classificators, Float32Array));
  // Whole pipeline on the same image: the browser's ROI vs Python's (FaceAnalyzer, dlib 68 landmarks).
  const a = await page.evaluate(([px, w, h]) => window.__analyzeRgb(Uint8Array.from(atob(px), (c) => c.charCodeAt(0)), w, h),
    [rgb.toString('base64'), ref.width, ref.height]);
  const roiIou = iou(a.roi, ref.roi);
  // Crop pixels: the browser's canvas resize vs OpenCV's crop_square at the browser's ROI.
  const pyCrop = b64(JSON.parse(py(tmp, join(DIST, 'models'), '--roi', a.roi.join(','))).crop);
  let cropErr = 0;
  for (let i = 0; i < pyCrop.length; i++) cropErr += Math.abs(pyCrop[i] - a.crop[i]);
  console.log(`parity: generator max |browser - python| = ${maxErr.toExponential(2)}, mean ${meanErr.toExponential(2)} ` +
    `(output range [-1,1], max |output| ${maxWant.toExponential(2)}); BlazeFace max |diff| regressors ${detErr.toExponential(2)} ` +
    `(max |value| ${detMax.toFixed(1)}), logits ${clsErr.toExponential(2)} (max |value| ${clsMax.toFixed(1)}); ROI IoU browser vs python = ${roiIou.toFixed(3)} (python ROI ${ref.roi.map((v) => v.toFixed(0))}, ` +
    `browser ${a.roi.map((v) => v.toFixed(0))}); crop pixels at the same ROI: mean |diff| = ${(cropErr / pyCrop.length).toFixed(2)} / 255`);
  assert.ok(maxErr <= PARITY_TOL, `generator differs by ${maxErr}`);
  assert.ok(maxErr <= REL_TOL.wasm * maxWant, `generator differs by ${maxErr} of ${maxWant}`);
  assert.ok(detErr <= REL_TOL.wasm * detMax && clsErr <= REL_TOL.wasm * clsMax, `BlazeFace differs: ${detErr}, ${clsErr}`);
  assert.ok(roiIou >= MIN_ROI_IOU, `ROI IoU ${roiIou}`);
  await page.close();
});

// WebGPU code path on SwiftShader (software Vulkan: slow, but the same WebGPU EP that a phone's
// GPU runs), in its own browser since the main one runs with --disable-gpu.
test('webgpu (SwiftShader): the WebGPU backend loads and matches Python', async () => {
  const ctx = await chromium.launchPersistentContext(join(tmp, 'profile-webgpu'), {
    executablePath: CHROMIUM, headless: true,
    args: ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'],
  });
  try {
    const page = await ctx.newPage();
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, { timeout: 120_000 });
    const backend = await page.evaluate(() => window.__backend);
    if (backend !== 'webgpu') {
      const adapter = await page.evaluate(async () => !!(await navigator.gpu?.requestAdapter()));
      assert.ok(!adapter, `a WebGPU adapter exists but the page runs on ${backend}`);
      console.log('webgpu: no adapter in this Chromium build: not covered');
      return;
    }
    const got = await page.evaluate((c) => window.__frontalizeCrop(c), Array.from(b64(ref.crop)));
    const [maxErr, , maxWant] = diff(got, b64(ref.output, Float32Array));
    const det = await page.evaluate((x) => window.__runDetector(x), Array.from(b64(ref.det_input, Float32Array)));
    const [detErr, , detMax] = diff(det.regressors, b64(ref.det_regressors, Float32Array));
    console.log(`webgpu parity: generator max |diff| ${maxErr.toExponential(2)} (max |output| ${maxWant.toExponential(2)}), ` +
      `BlazeFace regressors ${detErr.toExponential(2)} (max ${detMax.toFixed(1)})`);
    assert.ok(maxErr <= PARITY_TOL && maxErr <= REL_TOL.webgpu * maxWant, `generator differs by ${maxErr} of ${maxWant}`);
    assert.ok(detErr <= REL_TOL.webgpu * detMax, `BlazeFace differs by ${detErr}`);
  } finally {
    await ctx.close();
  }
});

test('offline: with the server stopped, a reload still runs (service worker)', async () => {
  const { page } = await openPage();
  await page.waitForFunction(async () => (await navigator.serviceWorker.ready) && !!navigator.serviceWorker.controller, null, { timeout: 60_000 });
  server.closeAllConnections();
  await new Promise((ok) => server.close(ok));
  const down = await fetch(origin).then(() => false, () => true);
  assert.ok(down, 'server still answers');
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 60_000 });
  await page.setInputFiles('#upload', SAMPLE);
  await page.waitForFunction(() => document.getElementById('result').dataset.face === 'yes', null, { timeout: 60_000 });
  await page.screenshot({ path: join(SHOTS, 'offline.png'), fullPage: true });
  await page.close();
});
