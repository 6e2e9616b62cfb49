// Shared by app.test.mjs and screenshot.mjs: the built app (dist/) served on a free port and
// Debian's headless Chromium (playwright-core, no browser download), phone-sized window.
// Env: CHROMIUM (default /usr/bin/chromium), FRONTALIZE_PYTHON (default ../.venv/bin/python).
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../serve.mjs';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const APP = join(HERE, '..');
export const DIST = join(APP, 'dist');
export const SAMPLES = join(APP, '..', 'samples');
export const PYTHON = process.env.FRONTALIZE_PYTHON || join(APP, '..', '.venv', 'bin', 'python');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARGS = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

// Python reference data (tests/reference.py) into dir.
export const reference = (dir) => execFileSync(PYTHON, [join(HERE, 'reference.py'), dir, join(DIST, 'models')], { encoding: 'utf8' });

export async function start(profileDir, extraArgs = []) {
  const server = await serve(DIST, 0);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 412, height: 915 }, // a phone-sized window
    deviceScaleFactor: 1,
    args: [...ARGS, '--disable-gpu', ...extraArgs],
  });
  return { server, origin, context };
}

export async function stop({ server, context }) {
  await context?.close();
  server?.closeAllConnections();
  server?.close();
}

// A new page on the app, ready (models loaded); `foreign` collects requests that leave the origin.
export async function openPage(context, origin, query = '') {
  const page = await context.newPage();
  const foreign = [];
  page.on('request', (r) => { if (!/^(data|blob):/.test(r.url()) && !r.url().startsWith(origin)) foreign.push(r.url()); });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  if (process.env.DEBUG_PAGE) page.on('console', (m) => console.error('console:', m.type(), m.text()));
  if (process.env.DEBUG_PAGE) page.on('requestfailed', (r) => console.error('request failed:', r.url(), r.failure()?.errorText));
  await page.goto(`${origin}/${query}`);
  try {
    await page.waitForFunction(() => ['ready', 'camera', 'error'].includes(document.body.dataset.state), null, { timeout: 120_000 });
  } catch (e) {
    const where = await page.evaluate(() => `state ${document.body.dataset.state}, status "${document.getElementById('status')?.textContent}", ` +
      `service worker ${navigator.serviceWorker.controller ? 'controls the page' : 'absent'}`).catch((e2) => e2.message);
    throw new Error(`${e.message.split('\n')[0]} (${where})`);
  }
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state === 'error') throw new Error(`the app did not load: ${await page.textContent('#status')}`);
  return { page, foreign };
}
