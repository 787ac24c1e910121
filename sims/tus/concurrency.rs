//! tusd's known trouble, against upsim: a HEAD racing a PATCH (tusd
//! #1161), two PATCHes at the same offset, a client that disconnects
//! mid-PATCH (the lost response of tusd #1041), and a PATCH that stalls
//! behind a proxy and is taken over. In each: no byte lost or doubled
//! (the upload completes and the drive's file is the source), and no
//! upload left locked (the next PATCH is served at once, never 423).
//!
//! The bodies are written by hand over raw TCP, in pieces, so that the
//! requests really overlap on the server.

use super::{assert_on_drive, number, part, patch_headers, tus_request, Fixture, ALICE, CHUNK};
use crate::support::{read_reply, wait_until, Header, RawReply, TestResult};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SIZE_BYTES: u64 = 6 * CHUNK + 321;
/// A piece of a hand-written body.
const PIECE: usize = 16 * 1024;
/// Between two pieces: long enough for other requests to interleave.
const PIECE_PAUSE: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(5);
const WAIT: Duration = Duration::from_secs(10);

/// A PATCH whose headers are sent and whose body is written by hand.
struct OpenPatch {
    stream: TcpStream,
}

impl OpenPatch {
    /// Sends a PATCH's head declaring `len` body bytes at `offset`.
    async fn start(
        addr: &str,
        path: &str,
        offset: u64,
        len: u64,
        extra: &[Header],
    ) -> TestResult<Self> {
        let mut headers = patch_headers(offset);
        headers.extend_from_slice(extra);
        headers.push(("content-length", len.to_string()));
        let head = tus_request(addr, "PATCH", path, ALICE, &headers, b"");
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&head).await?;
        Ok(Self { stream })
    }

    /// Writes `bytes` in pieces with a pause after each.
    async fn write_slowly(&mut self, bytes: &[u8]) -> TestResult {
        for piece in bytes.chunks(PIECE) {
            self.stream.write_all(piece).await?;
            self.stream.flush().await?;
            tokio::time::sleep(PIECE_PAUSE).await;
        }
        Ok(())
    }

    /// Writes `bytes` in pieces, stopping early (without error) if the
    /// server closed or answered meanwhile.
    async fn write_until_stopped(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(PIECE) {
            if self.stream.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(PIECE_PAUSE).await;
        }
    }

    async fn reply(mut self) -> TestResult<RawReply> {
        tokio::time::timeout(WAIT, read_reply(&mut self.stream))
            .await
            .map_err(|_| "no reply to the PATCH")?
    }
}

/// Completes the fixture's upload from wherever HEAD says it stands;
/// asserts the drive's file is the source.
async fn complete(f: &Fixture, what: &str) -> TestResult {
    let alice = f.alice();
    let offset = alice.offset(&f.path).await?;
    let rest = part(&f.payload, offset, SIZE_BYTES);
    let reply = alice.patch(&f.path, offset, &[], &rest).await?;
    assert_eq!(
        reply.status,
        204,
        "{what}: the next PATCH: {}",
        reply.text()
    );
    assert_on_drive(f.tmp.path(), &f.payload, what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_racing_a_patch_sees_only_stored_bytes_and_never_more_than_sent() -> TestResult {
    let f = Fixture::new("tus-head-race", 0xace1, SIZE_BYTES).await?;
    let alice = f.alice();
    let body = part(&f.payload, 0, 2 * CHUNK);
    let mut patch = OpenPatch::start(&f.stack.backend, &f.path, 0, body.len() as u64, &[]).await?;
    let (mut sent, mut last, mut heads) = (0u64, 0u64, 0u32);
    for piece in body.chunks(PIECE) {
        patch.stream.write_all(piece).await?;
        sent += piece.len() as u64;
        let offset = alice.offset(&f.path).await?;
        assert!(offset >= last, "HEAD went back from {last} to {offset}");
        assert!(offset <= sent, "HEAD reports {offset} of {sent} bytes sent");
        last = offset;
        heads += 1;
    }
    let reply = patch.reply().await?;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(number(&reply, "upload-offset")?, 2 * CHUNK);
    assert_eq!(alice.offset(&f.path).await?, 2 * CHUNK);
    eprintln!(
        "tus: {heads} HEADs raced one PATCH; offsets only grew and never passed the bytes sent"
    );
    complete(&f, "HEAD racing a PATCH").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_at_the_same_offset_store_their_bytes_once() -> TestResult {
    let f = Fixture::new("tus-twin-patch", 0xace2, SIZE_BYTES).await?;
    let body = part(&f.payload, 0, 2 * CHUNK + 100);
    let len = body.len() as u64;
    let mut first = OpenPatch::start(&f.stack.backend, &f.path, 0, len, &[]).await?;
    let mut second = OpenPatch::start(&f.stack.backend, &f.path, 0, len, &[]).await?;
    // Both write the same bytes, interleaved.
    tokio::join!(
        first.write_until_stopped(&body),
        second.write_until_stopped(&body)
    );
    let (a, b) = (first.reply().await?, second.reply().await?);
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    let causes = [a.cause(), b.cause()];
    assert!(
        statuses[0] == 204 || statuses == [409, 409],
        "one PATCH stores, or both were cut short: {statuses:?} {causes:?}"
    );
    for reply in [&a, &b] {
        if reply.status == 409 {
            let cause = reply.cause().unwrap_or_default();
            assert!(
                cause == "patch_superseded" || cause == "offset_mismatch",
                "{}",
                reply.text()
            );
        } else {
            assert_eq!(reply.status, 204, "{}", reply.text());
        }
    }
    let offset = f.alice().offset(&f.path).await?;
    assert!(offset <= len, "{offset} bytes held of {len} sent (twice)");
    eprintln!(
        "tus: two PATCHes at one offset: {statuses:?} {causes:?}; the upload holds {offset} bytes"
    );
    complete(&f, "two PATCHes at one offset").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_patch_keeps_what_arrived_and_no_lock() -> TestResult {
    let f = Fixture::new("tus-disconnect", 0xace3, SIZE_BYTES).await?;
    let alice = f.alice();
    let delivered = CHUNK + 12_345;
    let mut patch = OpenPatch::start(&f.stack.backend, &f.path, 0, SIZE_BYTES, &[]).await?;
    patch.write_slowly(&part(&f.payload, 0, delivered)).await?;
    // Every byte written reaches the server before the close does.
    let arrived = || async { alice.offset(&f.path).await.is_ok_and(|o| o == delivered) };
    assert!(
        wait_until(WAIT, POLL, arrived).await,
        "the delivered bytes never showed"
    );
    drop(patch);
    // The reply to the PATCH is lost with its connection; the next one is
    // served at once, from exactly the bytes that arrived.
    let next = part(&f.payload, delivered, delivered + 1);
    let reply = alice.patch(&f.path, delivered, &[], &next).await?;
    assert_eq!(
        reply.status,
        204,
        "the upload stayed locked: {}",
        reply.text()
    );
    complete(&f, "a disconnect mid-PATCH").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_checksummed_patch_is_taken_over_and_keeps_nothing() -> TestResult {
    let f = Fixture::new("tus-takeover", 0xace4, SIZE_BYTES).await?;
    let alice = f.alice();
    // A checksummed PATCH that delivers half its body and stalls, as a
    // client behind a proxy that kept the connection would.
    let body = part(&f.payload, 0, CHUNK);
    let sum = ("upload-checksum", "crc32 AAAAAA==".to_owned());
    let mut stalled = OpenPatch::start(&f.stack.backend, &f.path, 0, CHUNK, &[sum]).await?;
    stalled.write_slowly(&body[..(CHUNK / 2) as usize]).await?;
    assert_eq!(
        alice.offset(&f.path).await?,
        0,
        "unverified bytes are not counted"
    );
    // The client comes back: HEAD says 0, it PATCHes from 0.
    let again = part(&f.payload, 0, CHUNK + 7);
    let reply = alice.patch(&f.path, 0, &[], &again).await?;
    assert_eq!(reply.status, 204, "the newcomer: {}", reply.text());
    assert_eq!(number(&reply, "upload-offset")?, CHUNK + 7);
    let old = stalled.reply().await?;
    assert_eq!(old.status, 409, "{}", old.text());
    assert_eq!(old.cause().as_deref(), Some("patch_superseded"));
    complete(&f, "a stalled PATCH taken over").await
}
