// docs/upload.png: the built app in a phone-sized headless Chromium window, a side-view sample
// uploaded, after the result is drawn. Rerun after a model change: `npm run screenshot`
// (builds dist/ first), or `node tests/screenshot.mjs [SAMPLE.jpg] [OUT.png]`.
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { APP, SAMPLES, openPage, start, stop } from './browser.mjs';

const sample = process.argv[2] || 'two_people_three_quarter.jpg';
const out = resolve(process.argv[3] || join(APP, 'docs', 'upload.png'));
const tmp = mkdtempSync(join(tmpdir(), 'frontalize-shot-'));
const app = await start(join(tmp, 'profile'));
try {
  const { page } = await openPage(app.context, app.origin);
  // Twice: the timings table then shows a warm run (last) beside the cold one (in the mean).
  for (let i = 0; i < 2; i++) {
    await page.evaluate(() => { delete document.getElementById('result').dataset.face; });
    await page.setInputFiles('#upload', join(SAMPLES, sample));
    await page.waitForFunction(() => ['yes', 'no'].includes(document.getElementById('result').dataset.face), null, { timeout: 120_000 });
  }
  const status = await page.textContent('#status');
  const part = `${out}.part.png`; // written whole, then moved into place
  await page.screenshot({ path: part, fullPage: true });
  renameSync(part, out);
  console.log(`${out}: ${sample}: ${status}`);
} finally {
  await stop(app);
  rmSync(tmp, { recursive: true, force: true });
}
