// Per-stage browser timings (the app's own performance.now() marks): the fake camera (640x480,
// samples/profile_woman.jpg letterboxed) for 30 frames (detect on every 5th, track between;
// each stage's median over the frames that ran it), and the photo path on the side-view
// samples (1 cold run, then the median of 5). Prints a markdown table. `npm run timings`
// (builds dist/ first), or `node tests/timings.mjs [FRAMES]`. Query `?ep=wasm` is forced so the
// figures are WASM's whatever the machine has.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPage, reference, start, stop } from './browser.mjs';

const FRAMES = Number(process.argv[2] || 30);
const STAGES = ['detect', 'track', 'pose', 'crop', 'generator', 'total'];
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const tmp = mkdtempSync(join(tmpdir(), 'frontalize-timings-'));
const load0 = loadavg()[0];
reference(tmp);
const ref = JSON.parse(readFileSync(join(tmp, 'reference.json'), 'utf8'));
const app = await start(join(tmp, 'profile'), ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  `--use-file-for-fake-video-capture=${join(tmp, 'camera.y4m')}`]);
const rows = [];
try {
  const { page } = await openPage(app.context, app.origin, '?ep=wasm&camera');
  const backend = await page.evaluate(() => `${window.__backend} x${navigator.hardwareConcurrency > 1 && self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency) : 1} threads`);
  await page.waitForFunction((n) => window.__stats.frames >= n + 1, FRAMES, { timeout: 600_000 });
  await page.click('#stop');
  const stats = await page.evaluate(() => window.__stats);
  const faces = stats.faces;
  rows.push([`camera 640x480, median of ${stats.ms.total.length - 1} frames (${faces} with a face)`,
    ...STAGES.map((s) => (stats.ms[s].length > 1 ? median(stats.ms[s].slice(1)) : undefined))]);
  for (const [name, im] of Object.entries(ref.images)) {
    await page.evaluate(([px, w, h]) => window.__setImage(px, w, h), [readFileSync(join(tmp, `${name}.rgb`)).toString('base64'), im.width, im.height]);
    const runs = [];
    for (let r = 0; r < 6; r++) runs.push(await page.evaluate(() => window.__analyzeImage()));
    const n = runs[0].faces.length;
    rows.push([`${name} ${im.width}x${im.height}, ${n} face(s): first run`, ...STAGES.map((s) => runs[0].ms[s])]);
    rows.push([`${name}: median of 5 more`, ...STAGES.map((s) => median(runs.slice(1).map((r) => r.ms[s])))]);
  }
  console.log(`\n${backend}; load average ${load0.toFixed(1)} at the start, ${loadavg()[0].toFixed(1)} at the end\n`);
  console.log(`| | ${STAGES.join(' | ')} |\n|---|${STAGES.map(() => '---:').join('|')}|`);
  for (const [label, ...ms] of rows) console.log(`| ${label} | ${ms.map((v) => (v === undefined ? '–' : v.toFixed(1))).join(' | ')} |`);
} finally {
  await stop(app);
  rmSync(tmp, { recursive: true, force: true });
}
