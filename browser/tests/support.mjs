// What the browser tests share: the `upsim` binary's drive and backend as
// processes on loopback, a generated file, the drive's copy of it, and
// Debian's Chromium driven by playwright-core.
//
// Environment: UPSIM (the binary; default ../target/release/upsim),
// CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (where each test's
// screenshot goes; default ../target/browser). A missing binary or
// browser fails the test: nothing is skipped.
import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
export const UPSIM = process.env.UPSIM || path.join(repo, 'target', 'release', 'upsim');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS = process.env.SCREENSHOTS || path.join(repo, 'target', 'browser');

// CALIBRATION.md: without the background-networking flags Chromium floods
// a closed network; the sandbox needs privileges CI containers lack.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export async function launchBrowser() {
  for (const [what, file] of [['upsim binary (UPSIM)', UPSIM], ['Chromium (CHROMIUM)', CHROMIUM]]) {
    if (!fs.existsSync(file)) throw new Error(`${what} not found at ${file}`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

export function tempDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `upsim-browser-${tag}-`));
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `check` (async, truthy when done) every 50 ms for at most `ms`.
export async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

// One `upsim` process, its output in DIR/NAME.log.
export class Proc {
  constructor(name, args, dir) {
    this.name = name;
    this.log = path.join(dir, `${name}.log`);
    const out = fs.openSync(this.log, 'a');
    this.child = spawn(UPSIM, args, {
      cwd: dir,
      stdio: ['ignore', out, out],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    this.exited = once(this.child, 'exit');
  }

  text() {
    return fs.readFileSync(this.log, 'utf8');
  }

  async stop(signal = 'SIGTERM') {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    await this.exited;
  }
}

async function answers(url) {
  try {
    return (await fetch(url)).ok;
  } catch (_) {
    return false;
  }
}

// `upsim drive` and `upsim serve` (with a state directory, so a restart
// resumes) on free loopback ports; `serveArgs(dir)` gives arguments added
// to the backend's (files it names go in `dir`).
export class Servers {
  static async start(tag, serveArgs = () => []) {
    const s = new Servers();
    s.dir = tempDir(tag);
    s.driveDir = path.join(s.dir, 'drive');
    s.stateDir = path.join(s.dir, 'state');
    s.driveAddr = `127.0.0.1:${await freePort()}`;
    s.backendAddr = `127.0.0.1:${await freePort()}`;
    s.serveArgs = serveArgs(s.dir);
    s.drive = new Proc('drive', ['drive', '--listen', s.driveAddr, '--dir', s.driveDir], s.dir);
    await waitFor('the drive', 30_000, () => new Promise((resolve) => {
      const socket = net.connect(Number(s.driveAddr.split(':')[1]), '127.0.0.1');
      socket.on('connect', () => { socket.destroy(); resolve(true); });
      socket.on('error', () => resolve(false));
    }));
    await s.startBackend();
    return s;
  }

  get url() {
    return `http://${this.backendAddr}`;
  }

  async startBackend() {
    const profile = this.serveArgs.includes('--profile') ? [] : ['--profile', 'dev'];
    this.backend = new Proc(`serve-${Date.now()}`, [
      'serve', '--listen', this.backendAddr, '--drive', `http://${this.driveAddr}`,
      '--state', this.stateDir, ...profile, ...this.serveArgs,
    ], this.dir);
    await waitFor('the backend', 30_000, () => answers(`${this.url}/healthz`));
  }

  // Kills the backend at once (a crash: nothing drained), then starts it
  // again on the same address and state.
  async crashAndRestartBackend() {
    await this.backend.stop('SIGKILL');
    await this.startBackend();
  }

  logs() {
    return fs.readdirSync(this.dir).filter((f) => f.endsWith('.log'))
      .map((f) => `--- ${f}\n${fs.readFileSync(path.join(this.dir, f), 'utf8')}`).join('\n');
  }

  async stop() {
    await this.backend.stop();
    await this.drive.stop();
  }

  // The drive's finished files (its directory's plain files).
  finishedFiles() {
    if (!fs.existsSync(this.driveDir)) return [];
    return fs.readdirSync(this.driveDir)
      .filter((f) => !f.startsWith('.'))
      .map((f) => path.join(this.driveDir, f))
      .filter((f) => fs.statSync(f).isFile());
  }
}

// A file of `size` random bytes (generated here, 1 MiB at a time).
export function generateFile(dir, name, size) {
  const file = path.join(dir, name);
  const fd = fs.openSync(file, 'w');
  for (let written = 0; written < size;) {
    const block = randomBytes(Math.min(1 << 20, size - written));
    fs.writeSync(fd, block);
    written += block.length;
  }
  fs.closeSync(fd);
  return file;
}

export function sha256(file) {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buffer = Buffer.alloc(8 << 20);
  for (;;) {
    const got = fs.readSync(fd, buffer, 0, buffer.length, null);
    if (got === 0) break;
    hash.update(buffer.subarray(0, got));
  }
  fs.closeSync(fd);
  return hash.digest('hex');
}

// A profile like `dev` but with one field changed (`upsim config show`).
export function profileWith(dir, field, value) {
  const dev = execFileSync(UPSIM, ['config', 'show', 'dev'], { encoding: 'utf8' });
  const pattern = new RegExp(`^${field} = .*$`, 'm');
  if (!pattern.test(dev)) throw new Error(`dev has no ${field}`);
  const file = path.join(dir, `${field}.toml`);
  fs.writeFileSync(file, dev.replace(pattern, `${field} = ${value}`));
  return file;
}

export async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  if (fs.statSync(file).size === 0) throw new Error(`empty screenshot ${file}`);
  return file;
}
