// tus-js-client (the tus project's own client, pinned in package.json)
// uploads a file to upsim's tus endpoint and is interrupted twice: it aborts
// its own upload at a quarter (the connection is cut mid-PATCH), then a new
// Upload finds the previous one in its URL storage and resumes it (HEAD,
// then PATCH from the server's offset); meanwhile run.sh kills `upsim serve`
// outright past 60 % and starts it again, and the client's own retries
// (HEAD, then PATCH from wherever the restarted backend says it stands)
// carry the upload to the end.
//
// The file is read through a source that paces its bytes (the `fileReader`
// option), so that both interruptions land mid-upload on a fast machine;
// tus-js-client itself runs as shipped, default chunk size (one PATCH for
// the rest of the file) and all. Then a second file goes up with
// `parallelUploads: 4`: four partial uploads at once and a final upload
// that concatenates them (tus's concatenation extension).
//
// usage: node upload.mjs ENDPOINT FILE TOKEN URL_STORAGE PROGRESS_FILE PARALLEL_FILE
import { createReadStream, statSync, writeFileSync } from 'node:fs'
import { basename } from 'node:path'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { FileUrlStorage, Upload } from 'tus-js-client'

const [endpoint, path, token, storagePath, progressPath, parallelPath] = process.argv.slice(2)
const size = statSync(path).size
// Bytes a second the source gives: the file in about eight seconds.
const RATE_BYTES_PER_S = Math.ceil(size / 8)
// Retries of one request: HEAD and PATCH across a backend restart.
const RETRY_DELAYS_MS = [0, 250, 500, 1000, 2000, 3000, 5000, 8000, 13000]

// A file source whose slices are paced reads of the file.
class PacedFileReader {
  openFile() {
    return Promise.resolve({
      size,
      slice(start, end) {
        const file = createReadStream(path, { start, end: Math.min(end, size) - 1 })
        const paced = Readable.from(
          (async function* pace() {
            for await (const buf of file) {
              yield buf
              await sleep((buf.length / RATE_BYTES_PER_S) * 1000)
            }
          })(),
        )
        paced.size = Math.min(end, size) - start
        return Promise.resolve({ value: paced, done: Math.min(end, size) >= size })
      },
      close() {},
    })
  }
}

const options = {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: basename(path), filetype: 'application/octet-stream' },
  fileReader: new PacedFileReader(),
  urlStorage: new FileUrlStorage(storagePath),
  storeFingerprintForResuming: true,
  removeFingerprintOnSuccess: true,
  retryDelays: RETRY_DELAYS_MS,
  fingerprint: async () => `upsim-ecosystem-${basename(path)}-${size}`,
}

function report(phase, bytes) {
  writeFileSync(progressPath, `${phase} ${bytes}\n`)
}

// 1. Upload until a quarter is sent, then abort (the PATCH's connection is
//    cut; the server keeps what arrived).
const firstUrl = await new Promise((resolve, reject) => {
  let aborting = false
  const upload = new Upload(createReadStream(path), {
    ...options,
    onProgress(sent) {
      report('first', sent)
      if (sent >= size / 4 && !aborting) {
        aborting = true
        upload.abort().then(() => resolve(upload.url), reject)
      }
    },
    onError: reject,
    onSuccess: () => reject(new Error('the first upload finished before its abort')),
  })
  upload.start()
})
console.log(`aborted at a quarter: ${firstUrl}`)

// 2. A new Upload of the same file finds it, resumes, and rides out the
//    backend's restart.
const summary = await new Promise((resolve, reject) => {
  const upload = new Upload(createReadStream(path), {
    ...options,
    onProgress(sent) {
      report('second', sent)
      if (resumedFrom === null) resumedFrom = sent
    },
    onError: reject,
    onSuccess: () => resolve({ url: upload.url, resumedFrom }),
  })
  let resumedFrom = null
  upload.findPreviousUploads().then((previous) => {
    if (previous.length !== 1) {
      reject(new Error(`expected the aborted upload in URL storage, found ${previous.length}`))
      return
    }
    upload.resumeFromPreviousUpload(previous[0])
    upload.start()
  }, reject)
})
report('resumed', size)
if (summary.url !== firstUrl) {
  throw new Error(`resumed a different upload: ${summary.url}, not ${firstUrl}`)
}
if (!(summary.resumedFrom >= size / 8)) {
  throw new Error(`the second Upload started from ${summary.resumedFrom}, not where the first stopped`)
}
console.log(JSON.stringify({ ...summary, size }))

// 3. The second file in four parallel partial uploads and a final one.
const parallel = await new Promise((resolve, reject) => {
  const upload = new Upload(createReadStream(parallelPath), {
    endpoint,
    headers: options.headers,
    metadata: { filename: basename(parallelPath), filetype: 'application/octet-stream' },
    parallelUploads: 4,
    retryDelays: RETRY_DELAYS_MS,
    onError: reject,
    onSuccess: () => resolve({ url: upload.url, size: statSync(parallelPath).size }),
  })
  upload.start()
})
report('done', size)
console.log(JSON.stringify({ parallel }))
