// src/resample.js and pose.js's crop against OpenCV (tests/resample_cases.py): random squares
// of every angle and scale on a real photo, and INTER_AREA resizes at integer and fractional
// scales. Node only (no browser): the same code runs in the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERE, PYTHON } from './browser.mjs';
import { crop } from '../src/pose.js';
import { imageFromRgb, resizeArea } from '../src/resample.js';

const tmp = mkdtempSync(join(tmpdir(), 'frontalize-resample-'));
execFileSync(PYTHON, [join(HERE, 'resample_cases.py'), join(tmp, 'cases.json')]);
const cases = JSON.parse(readFileSync(join(tmp, 'cases.json'), 'utf8'));
rmSync(tmp, { recursive: true, force: true });
const bytes = (s) => new Uint8Array(Buffer.from(s, 'base64'));
const img = imageFromRgb(bytes(cases.image), cases.width, cases.height);

function differing(a, b) {
  assert.equal(a.length, b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) n += a[i] !== b[i];
  return n;
}

test('crop: identical to runtime.pose.crop (cv2.warpAffine, INTER_AREA pre-shrink)', () => {
  const bad = cases.crops.map((c) => [c, differing(crop(img, c.square, c.size), bytes(c.pixels))]).filter(([, n]) => n);
  const k = cases.crops.map((c) => Math.floor(c.square[2] / (1.5 * c.size)));
  console.log(`${cases.crops.length} squares (pre-shrink k from ${Math.min(...k)} to ${Math.max(...k)}): ${bad.length} differ`);
  assert.deepEqual(bad.map(([c, n]) => `${c.square.map((v) => v.toFixed(1))} @${c.size}: ${n} values`), []);
});

test('resizeArea: identical to cv2.resize INTER_AREA', () => {
  for (const r of cases.resizes) {
    const src = r.crop ? imageFromRgb(cropTopLeft(r.crop), r.crop, r.crop) : img;
    assert.equal(differing(resizeArea(src, ...r.size).data, bytes(r.pixels)), 0, `${src.width}x${src.height} -> ${r.size}`);
  }
});

function cropTopLeft(n) {
  const out = new Uint8Array(n * n * 3);
  for (let y = 0; y < n; y++) out.set(img.data.subarray(y * img.width * 3, (y * img.width + n) * 3), y * n * 3);
  return out;
}
