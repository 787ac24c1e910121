// The upload page (`upsim serve`'s `/`) in Debian's headless Chromium:
// a 64 MiB file through the page to `upsim serve` + `upsim drive`, byte
// for byte; a backend crash and restart mid-upload; a reload mid-upload
// (the page resumes the same upload); a refusal's cause on screen. Each
// test keeps a screenshot (SCREENSHOTS, default target/browser/).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  Servers, generateFile, launchBrowser, profileWith, screenshot, sha256, waitFor,
} from './support.mjs';

const MIB = 1 << 20;
const FILE_BYTES = 64 * MIB;
// 1 MiB chunks: 64 of them, and the dev profile's reservation (10 % of the
// file) makes a window of 6, so four chunks go at once.
const CHUNK_BYTES = MIB;
const UPLOAD_TIMEOUT_MS = 180_000;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { if (browser) await browser.close(); });

// A page on `servers`, signed in as `user`, failing the test on any script
// error or Content-Security-Policy violation.
async function openPage(servers, user = 'alice') {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('Failed to load resource')) {
      problems.push(`console: ${m.text()}`);
    }
  });
  await page.goto(`${servers.url}/`);
  await page.fill('#user', user);
  return { context, page, problems };
}

// The first upload row's figures.
async function figures(page) {
  return page.evaluate(() => {
    const row = document.querySelector('#uploads li');
    if (!row) return null;
    return {
      sent: row.querySelector('.sent-text').textContent,
      committed: row.querySelector('.committed-text').textContent,
      committedValue: Number(row.querySelector('progress.committed').value) / 10,
      state: row.querySelector('.state').textContent,
      kind: row.className,
    };
  });
}

async function until(page, what, check, ms = UPLOAD_TIMEOUT_MS) {
  return waitFor(what, ms, async () => {
    const f = await figures(page);
    return f && check(f) ? f : null;
  });
}

// Uploads at most `bytesPerSecond` (Chromium's own throttling), so that a
// test can act while the upload is under way.
async function throttle(context, page, bytesPerSecond) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond,
  });
}

function assertDriveHasExactly(servers, source) {
  const stored = servers.finishedFiles();
  assert.equal(stored.length, 1, `the drive holds ${stored.join(', ')}`);
  assert.equal(fs.statSync(stored[0]).size, FILE_BYTES);
  assert.equal(sha256(stored[0]), sha256(source), "the drive's copy is the file, byte for byte");
}

// One case: `upsim drive` and `upsim serve` with the dev profile but
// `field = value`, a page on them signed in as alice (uploads throttled to
// `throttle` bytes a second if given), a generated file of `size` bytes
// chosen in it; then `check({ s, page, source })`. A script error or CSP
// violation fails the case; the servers' logs are added to a failure, and
// they stop however it ends.
function pageCase(title, { tag, field, value, size, throttleTo }, check) {
  test(title, async () => {
    const s = await Servers.start(tag, (dir) => ['--profile', profileWith(dir, field, value)]);
    try {
      const { context, page, problems } = await openPage(s);
      if (throttleTo) await throttle(context, page, throttleTo);
      const source = generateFile(s.dir, `${tag}.bin`, size);
      await page.setInputFiles('#files', source);
      await check({ s, page, source });
      assert.deepEqual(problems, []);
    } catch (e) {
      e.message += `\n${s.logs()}`;
      throw e;
    } finally {
      await s.stop();
    }
  });
}

const chunked = { field: 'chunk_size_bytes', value: CHUNK_BYTES, size: FILE_BYTES };
const complete = (page) => until(page, 'the upload to complete', (f) => f.kind.includes('complete'));

pageCase('a 64 MiB file goes through the page to the drive, byte for byte', { tag: 'whole', ...chunked }, async ({ s, page, source }) => {
  const done = await complete(page);
  assert.equal(done.committed, '100 %');
  assert.equal(done.sent, '100 %');
  assert.match(done.state, /^on the drive, whole: md5 [0-9a-f]{32}$/);
  await screenshot(page, 'upload-64mib');
  assertDriveHasExactly(s, source);
});

pageCase('the page finishes an upload across a backend crash and restart', { tag: 'restarted', throttleTo: 8 * MIB, ...chunked }, async ({ s, page, source }) => {
  const before = await until(page, 'a quarter committed', (f) => f.committedValue >= 25);
  assert.ok(before.committedValue < 100, 'the restart must come mid-upload');
  await s.crashAndRestartBackend();
  const done = await complete(page);
  assert.equal(done.committed, '100 %');
  await screenshot(page, 'upload-backend-restart');
  assertDriveHasExactly(s, source);
  // The new backend admitted the persisted upload again and finished it.
  assert.match(s.backend.text(), /upload admitted[\s\S]*is the MD5 of the bytes sent/);
});

pageCase('after a reload the page resumes the same upload', { tag: 'reloaded', throttleTo: 8 * MIB, ...chunked }, async ({ s, page, source }) => {
  await until(page, 'a quarter committed', (f) => f.committedValue >= 25);
  await page.reload();
  assert.match(await page.textContent('#notice'), /Not finished: reloaded\.bin/);
  await page.setInputFiles('#files', source);
  await until(page, 'the resume', (f) => /resuming upload [0-9a-f]{32}|uploading as/.test(f.state), 30_000);
  const done = await complete(page);
  assert.equal(done.committed, '100 %');
  await screenshot(page, 'upload-after-reload');
  assertDriveHasExactly(s, source); // one upload, resumed, not a second one
});

// No machine has less than 1 % of its memory in use: every upload is
// refused for memory pressure (503, retried: the page keeps waiting).
pageCase("a refusal's typed cause is shown in words, with its numbers", { tag: 'refused', field: 'memory_limit_percent', value: 1, size: MIB }, async ({ s, page }) => {
  const waiting = await until(page, 'the refusal on screen', (f) => f.kind.includes('waiting'), 30_000);
  assert.match(
    waiting.state,
    /memory pressure: the server is short of memory: \d+\.\d % in use, the limit is 1 %; this upload needs [\d.]+ \w+/,
  );
  await screenshot(page, 'upload-refused-memory-pressure');
  assert.equal(s.finishedFiles().length, 0);
});
