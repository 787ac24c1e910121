// The picture of a simulated run (`upsim run reference --html FILE`,
// README "A picture of every run") in Debian's headless Chromium: it
// renders (a non-empty screenshot, an SVG of real size), every fault of the
// reference schedule is named on it, its axes carry their labels and
// units, and it fetches nothing (it is opened from a file with the network
// refused). The screenshot is kept (target/browser/picture-reference.png).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UPSIM, launchBrowser, screenshot, tempDir } from './support.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

test("the reference run's picture renders with its faults and axes", async () => {
  const file = path.join(tempDir('picture'), 'reference.html');
  execFileSync(UPSIM, ['run', 'reference', '--quiet', '--html', file], { stdio: 'ignore' });
  const page = await browser.newPage({ viewport: { width: 1150, height: 900 } });
  const requests = [];
  page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(pathToFileURL(file).href);
  const box = await page.locator('svg#timeline').boundingBox();
  assert.ok(box && box.width > 800 && box.height > 600, `the SVG is drawn: ${JSON.stringify(box)}`);
  assert.equal(await page.locator('h1#verdict').innerText(), 'reference seed 0: PASS');
  const faults = await page.locator('g.fault > text').allTextContents();
  for (const kind of ['memory_pressure', 'drive_session_expiry', 'partition', 'drive_short_piece',
    'backend_crash', 'drive_errors']) {
    assert.ok(faults.includes(kind), `fault ${kind} named on the picture: ${faults}`);
  }
  const texts = await page.locator('svg text').allTextContents();
  for (const label of ['simulated time (s)', 'Bytes committed per upload (MB)',
    'Slots in use, global and per user (slots)', 'Reserved memory against its limit (MB)',
    'Uploads waiting for admission (waiters)', 'liveness phase (faults off)']) {
    assert.ok(texts.includes(label), `label ${label} present`);
  }
  assert.ok(texts.some((t) => / MB$/.test(t)), 'the y axes carry units');
  assert.ok(await page.locator('polyline.series').count() >= 4, 'every panel has a series');
  const shot = await screenshot(page, 'picture-reference');
  assert.ok(shot.endsWith('.png'));
  assert.deepEqual(requests, [], 'the page fetches nothing');
  assert.deepEqual(errors, []);
  await page.close();
});
