// The upload page: files through the chunk API, as `upsim upload` sends
// them (README, "The chunk API"), with progress a person can watch.
//
// For each file, one at a time:
// 1. resume the upload this browser started for it (its id is kept in
//    localStorage under the file's name, size and modification time), or
//    create one (POST /uploads, retried while the refusal is one waiting
//    can fix, its cause shown in words meanwhile);
// 2. open its event stream (POST …/events/token, then an EventSource on
//    …/events?token=…): the committed bar follows the drive's offset;
// 3. in rounds: ask the status, send the chunks the backend lacks that fit
//    its window, CHUNKS_IN_FLIGHT at once, each with its CRC-32C computed
//    in a Web Worker; back off when a round gets nothing through (the
//    backend restarting, a full window, a lost connection);
// 4. end when the upload is complete (the drive's checksum is shown) or
//    failed (its cause, in words). Cancel sends DELETE.
'use strict';

// Browsers open six connections per host over HTTP/1.1: four chunk
// requests, one event stream, one left for status, create and cancel.
const CHUNKS_IN_FLIGHT = 4;
const BACKOFF_MS_MAX = 8000;
// How often the status is asked while the drive catches up or the
// backend takes the upload back (an event wakes the page sooner).
const WAIT_POLL_MS = 1000;
// Give up after this long without progress (as `upsim upload` does).
const STALL_LIMIT_MS = 15 * 60 * 1000;
const EVENT_NAMES = ['phase', 'committed', 'received', 'complete', 'failed'];

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (attempt) =>
  Math.random() * Math.min(BACKOFF_MS_MAX, 250 * 2 ** Math.min(attempt, 10));

// ---- who the user is ---------------------------------------------------

function credentials() {
  const token = $('token').value.trim();
  const user = $('user').value.trim();
  if (token) return { Authorization: `Bearer ${token}` };
  if (user) return { 'x-upsim-user': user };
  return {};
}

function rememberCredentials() {
  // The token only for this tab's life; the user name is no secret.
  const keep = (input, storage, key) => {
    input.value = storage.getItem(key) || input.value;
    input.addEventListener('input', () => storage.setItem(key, input.value.trim()));
  };
  keep($('token'), sessionStorage, 'upsim.token');
  keep($('user'), localStorage, 'upsim.user');
}

// ---- the chunk API -----------------------------------------------------

class Refused extends Error {
  constructor(status, body, retryAfterS) {
    const detail = (body && body.error) || { status, cause: 'unknown', message: `HTTP ${status}` };
    super(detail.message);
    this.status = status;
    this.detail = detail;
    this.retryAfterMs = retryAfterS * 1000;
  }
}

class Cancelled extends Error {}

async function api(method, path, options = {}) {
  const reply = await fetch(path, {
    method,
    body: options.body,
    headers: { ...credentials(), ...options.headers },
    cache: 'no-store',
    signal: options.signal,
  });
  if (reply.ok) return reply.status === 204 ? null : reply.json();
  let body = null;
  try { body = await reply.json(); } catch (_) { /* no JSON body */ }
  throw new Refused(reply.status, body, Number(reply.headers.get('retry-after')) || 0);
}

// Whether waiting may change this error: no answer at all, a 5xx, a 408,
// or a 429 that says how long to wait (a 429 without, the daily quota,
// is final).
function transient(error) {
  if (error instanceof Cancelled) return false;
  if (!(error instanceof Refused)) return true;
  return error.status >= 500 || error.status === 408 || (error.status === 429 && error.retryAfterMs > 0);
}

// ---- words -------------------------------------------------------------

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
function bytes(n) {
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} bytes` : `${v.toFixed(1)} ${UNITS[i]}`;
}
const permille = (p) => `${Math.floor(p / 10)}.${p % 10} %`;
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

// A refusal's typed cause and its numbers, as a sentence.
const WORDS = {
  memory_pressure: (d) => `the server is short of memory: ${permille(d.used_permille)} in use, `
    + `the limit is ${d.limit_percent} %; this upload needs ${bytes(d.required_bytes)} `
    + `and ${bytes(d.headroom_bytes)} is free under the limit`,
  quota_exceeded: (d) => `your daily quota is spent: ${bytes(d.charged_bytes)} uploaded today `
    + `and ${bytes(d.requested_bytes)} more would pass the limit of ${bytes(d.daily_limit_bytes)}`,
  file_too_large: (d) => `the file is too large: ${bytes(d.file_size_bytes)}, `
    + `the most is ${bytes(d.file_size_bytes_max)}`,
  slots_busy: (d) => `every upload slot is taken: ${d.global_in_use} of ${d.global_limit} in all, `
    + `${d.user_in_use} of your ${d.user_limit}; waited ${seconds(d.waited_ms)}`,
  queue_full: (d) => `${d.waiting} uploads are waiting for a slot, the most the server queues is ${d.waiters_max}`,
  user_event_streams_full: (d) => `you have ${d.user_streams_open} progress streams open, `
    + `the most is ${d.user_streams_max}`,
  event_streams_full: (d) => `the server has ${d.streams_open} progress streams open, the most it serves is ${d.streams_max}`,
  drive_refused: (d) => `the drive refused the file for good (${d.drive_status} ${d.drive_reason})`,
  body_timeout: (d) => `a chunk stalled after ${bytes(d.received_bytes)} of ${bytes(d.expected_bytes)}`,
};

function inWords(detail) {
  const name = String(detail.cause || 'unknown').replace(/_/g, ' ');
  let text = null;
  try { text = WORDS[detail.cause] ? WORDS[detail.cause](detail.details || {}) : null; } catch (_) { text = null; }
  return `${name}: ${text || detail.message}`;
}

function describe(error) {
  if (error instanceof Refused) return inWords(error.detail);
  if (error instanceof Cancelled) return 'cancelled';
  return `the backend cannot be reached (${error.message})`;
}

// ---- CRC-32C off the page's thread -------------------------------------

const checksums = {
  worker: null,
  pending: new Map(),
  next: 0,
  // {buffer, crc32c}: the buffer goes to the worker and comes back.
  of(buffer) {
    if (!this.worker) {
      this.worker = new Worker('/page/crc32c-worker.js');
      this.worker.onmessage = (m) => {
        const resolve = this.pending.get(m.data.id);
        this.pending.delete(m.data.id);
        resolve(m.data);
      };
    }
    const id = this.next++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.worker.postMessage({ id, buffer }, [buffer]);
    });
  },
};

// ---- one file's upload -------------------------------------------------

class Upload {
  constructor(file) {
    this.file = file;
    this.key = `upsim.upload:${file.name}:${file.size}:${file.lastModified}`;
    this.row = $('upload-row').content.firstElementChild.cloneNode(true);
    this.row.querySelector('.name').textContent = file.name;
    this.row.querySelector('.size').textContent = bytes(file.size);
    this.row.querySelector('.cancel').addEventListener('click', () => this.cancel());
    $('uploads').append(this.row);
    this.id = null;
    this.chunkSize = 0;
    this.sent = new Set(); // chunks the backend has acknowledged or holds
    this.lastEventId = null;
    this.events = null;
    this.ended = null; // the last state, once complete or failed
    this.lastProgress = Date.now();
    this.committed = -1;
    this.wakeUp = null;
    this.abort = new AbortController();
    this.say('waiting for the files before it');
  }

  say(text, kind = '') {
    this.row.className = `upload ${kind}`.trim();
    this.row.querySelector('.state').textContent = text;
  }

  draw(which, done, total) {
    const share = total > 0 ? Math.min(1, done / total) : 1;
    this.row.querySelector(`progress.${which}`).value = Math.round(share * 1000);
    this.row.querySelector(`.${which}-text`).textContent = `${(share * 100).toFixed(share === 1 ? 0 : 1)} %`;
  }

  drawSent() {
    let held = 0;
    for (const i of this.sent) held += Math.min(this.chunkSize, this.file.size - i * this.chunkSize);
    this.draw('sent', held, this.file.size);
  }

  drawCommitted(committedBytes, phase) {
    if (committedBytes !== this.committed) this.lastProgress = Date.now();
    this.committed = committedBytes;
    this.draw('committed', phase === 'complete' ? this.file.size : committedBytes, this.file.size);
  }

  async run() {
    try {
      this.id = await this.createOrResume();
      this.watch();
      const last = await this.sendAll();
      this.finish(last);
    } catch (error) {
      this.row.querySelector('.cancel').disabled = true;
      if (error instanceof Cancelled) {
        this.say('cancelled', 'failed');
      } else {
        this.say(`stopped: ${describe(error)}`, error instanceof Refused ? 'refused' : 'failed');
      }
    } finally {
      if (this.events) this.events.close();
      this.events = null;
    }
  }

  // Calls `attempt` until it answers or fails for good; says why it waits.
  async retrying(what, attempt) {
    const started = Date.now();
    for (let n = 0; ; n++) {
      if (this.abort.signal.aborted) throw new Cancelled();
      try {
        return await attempt();
      } catch (error) {
        if (!transient(error) || Date.now() - started > STALL_LIMIT_MS) throw error;
        const wait = Math.max(error.retryAfterMs || 0, backoff(n));
        this.say(`${what}: waiting ${seconds(wait)}: ${describe(error)}`, 'waiting');
        await sleep(wait);
      }
    }
  }

  status() {
    return this.retrying('asking the backend', () =>
      api('GET', `/uploads/${this.id}`, { signal: this.abort.signal }));
  }

  async createOrResume() {
    const saved = localStorage.getItem(this.key);
    if (saved) {
      this.id = saved;
      try {
        const status = await this.status();
        if (status.phase !== 'failed') {
          this.say(`resuming upload ${saved}`);
          return saved;
        }
      } catch (error) {
        if (!(error instanceof Refused && error.status === 404)) throw error;
      }
      localStorage.removeItem(this.key); // gone or failed: start over
    }
    const token = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
    const body = JSON.stringify({
      file_name: this.file.name,
      file_size_bytes: this.file.size,
      mime_type: this.file.type || undefined,
      client_token: token,
    });
    this.say('asking the backend to admit the upload');
    const created = await this.retrying('admission', () => api('POST', '/uploads', {
      body, headers: { 'content-type': 'application/json' }, signal: this.abort.signal,
    }));
    localStorage.setItem(this.key, created.upload_id);
    this.say(`uploading as ${created.upload_id}`);
    return created.upload_id;
  }

  // The event stream: an EventSource reconnects by itself (with
  // Last-Event-ID) after a dropped connection; after a refusal (a token
  // the backend no longer knows, after its restart) it closes, and a new
  // token opens a new one from the last event seen.
  async watch() {
    if (this.events || this.ended || this.abort.signal.aborted) return;
    let token;
    try {
      token = (await api('POST', `/uploads/${this.id}/events/token`, { signal: this.abort.signal })).token;
    } catch (error) {
      if (!(error instanceof Cancelled)) setTimeout(() => this.watch(), Math.max(error.retryAfterMs || 0, 2000));
      return;
    }
    let url = `/uploads/${this.id}/events?token=${encodeURIComponent(token)}`;
    if (this.lastEventId) url += `&last_event_id=${encodeURIComponent(this.lastEventId)}`;
    const source = new EventSource(url);
    this.events = source;
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (message) => this.onEvent(name, message));
    }
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED || this.events !== source) return;
      this.events = null;
      if (!this.ended) setTimeout(() => this.watch(), 1000);
    };
  }

  onEvent(name, message) {
    this.lastEventId = message.lastEventId;
    const state = JSON.parse(message.data);
    this.drawCommitted(state.committed_bytes, state.phase);
    if (name === 'complete' || name === 'failed') {
      this.ended = state;
      if (this.events) this.events.close();
      this.events = null;
    }
    if (this.wakeUp) this.wakeUp();
  }

  // Sleeps `ms`, or less if an event comes.
  nap(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wakeUp = () => { clearTimeout(timer); this.wakeUp = null; resolve(); };
    });
  }

  async sendAll() {
    let quiet = 0;
    for (;;) {
      if (Date.now() - this.lastProgress > STALL_LIMIT_MS) throw new Error('no progress for 15 minutes');
      const status = await this.status();
      this.fromStatus(status);
      if (status.phase === 'complete' || status.phase === 'failed') return status;
      if (status.phase === 'resuming') {
        this.say('the backend is taking the upload back after a restart', 'waiting');
        await this.nap(WAIT_POLL_MS);
        continue;
      }
      const missing = this.sendable(status);
      if (missing.length === 0) {
        this.say('the backend has every chunk in its window; the drive is catching up');
        await this.nap(WAIT_POLL_MS);
        continue;
      }
      this.say(`uploading as ${this.id}`);
      const accepted = await this.sendRound(missing);
      if (accepted > 0) {
        quiet = 0;
        this.lastProgress = Date.now();
      } else {
        quiet += 1;
        await sleep(backoff(quiet));
      }
    }
  }

  fromStatus(status) {
    this.chunkSize = status.chunk_size_bytes;
    for (let i = 0; i < status.chunks_committed; i++) this.sent.add(i);
    for (const i of status.chunks_buffered) this.sent.add(i);
    this.drawSent();
    if (!this.ended) this.drawCommitted(status.committed_bytes, status.phase);
  }

  // The chunks the backend lacks that fit in its window now, in order.
  sendable(status) {
    const end = Math.min(status.chunk_count, status.chunks_committed + status.window_chunks);
    const buffered = new Set(status.chunks_buffered);
    const missing = [];
    for (let i = status.chunks_committed; i < end; i++) if (!buffered.has(i)) missing.push(i);
    return missing;
  }

  // Sends `missing`, CHUNKS_IN_FLIGHT at once; stops taking new ones at the
  // first answer that says to wait. Returns how many were accepted.
  async sendRound(missing) {
    let accepted = 0;
    let stop = false;
    const queue = missing.slice();
    const lane = async () => {
      while (!stop && queue.length > 0) {
        const verdict = await this.sendChunk(queue.shift());
        if (verdict === 'accepted') accepted += 1;
        else stop = true;
      }
    };
    await Promise.all(Array.from({ length: CHUNKS_IN_FLIGHT }, lane));
    return accepted;
  }

  async sendChunk(index) {
    const start = index * this.chunkSize;
    const end = Math.min(this.file.size, start + this.chunkSize);
    const read = await this.file.slice(start, end).arrayBuffer();
    const { buffer, crc32c } = await checksums.of(read);
    let reply;
    try {
      reply = await fetch(`/uploads/${this.id}/chunks/${index}`, {
        method: 'PUT',
        body: buffer,
        headers: { ...credentials(), 'content-type': 'application/octet-stream', 'x-upsim-crc32c': crc32c },
        signal: this.abort.signal,
      });
    } catch (error) {
      if (this.abort.signal.aborted) throw new Cancelled();
      return 'retry'; // no answer: the next round asks the status first
    }
    if (reply.ok) {
      this.sent.add(index);
      this.drawSent();
      return 'accepted';
    }
    let body = null;
    try { body = await reply.json(); } catch (_) { /* no JSON body */ }
    const refused = new Refused(reply.status, body, Number(reply.headers.get('retry-after')) || 0);
    const cause = refused.detail.cause;
    if (['upload_complete', 'upload_failed', 'upload_ended'].includes(cause)) return 'ended';
    if (transient(refused) || ['checksum_mismatch', 'body_incomplete'].includes(cause)) {
      if (cause !== 'window_full') this.say(`waiting: ${describe(refused)}`, 'waiting');
      return 'retry';
    }
    throw refused;
  }

  finish(status) {
    localStorage.removeItem(this.key);
    this.row.querySelector('.cancel').disabled = true;
    if (status.phase === 'complete') {
      for (let i = 0; i * this.chunkSize < this.file.size; i++) this.sent.add(i);
      this.drawSent();
      this.drawCommitted(this.file.size, 'complete');
      const file = status.file || {};
      const digest = file.md5Checksum ? `md5 ${file.md5Checksum}` : `crc64nvme ${file.crc64nvme}`;
      this.say(`on the drive, whole: ${digest}`, 'complete');
    } else {
      this.say(`failed: ${inWords(status.failure || { cause: 'unknown', message: 'no reason given' })}`, 'failed');
    }
  }

  async cancel() {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    if (this.events) this.events.close();
    this.events = null;
    if (!this.id) return;
    localStorage.removeItem(this.key);
    try {
      await api('DELETE', `/uploads/${this.id}`);
      this.say('cancelled: the backend let the upload go', 'failed');
    } catch (error) {
      this.say(`cancelled here; the backend did not answer (${describe(error)}): it lets the upload go when it idles out`, 'failed');
    }
  }
}

// ---- the page ------------------------------------------------------------

let queue = Promise.resolve();

function choose(files) {
  $('notice').textContent = '';
  if (!credentials().Authorization && !credentials()['x-upsim-user']) {
    $('notice').textContent = 'Give a bearer token or a user name first.';
    return;
  }
  for (const file of files) {
    const upload = new Upload(file);
    queue = queue.then(() => upload.run());
  }
}

function noticeResumable() {
  const names = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    // upsim.upload:NAME:SIZE:MTIME (a name may hold colons itself)
    if (key.startsWith('upsim.upload:')) names.push(key.split(':').slice(1, -2).join(':'));
  }
  if (names.length > 0) {
    $('notice').textContent = `Not finished: ${names.join(', ')}. Choose the same file again to resume.`;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  rememberCredentials();
  noticeResumable();
  $('files').addEventListener('change', (event) => {
    choose(Array.from(event.target.files));
    event.target.value = '';
  });
});
