//! Hostile input against the drive emulator's resumable protocol: a table
//! of refused requests against a session that holds two units, then the
//! cases that need a sequence (a trickled header, concurrent PUTs of one
//! piece).
//!
//! Not repeated here, because `drive_protocol` sends the same request and
//! expects the same (or a stricter) answer: a `Content-Range` overflowing
//! u64 (`u64_overflow_in_content_range_is_refused_not_panicked`); a piece
//! leaving a gap, a piece not a multiple of 256 KiB and not the last, and a
//! `Content-Length` disagreeing with `Content-Range`
//! (`bad_pieces_are_refused_with_their_numbers_and_commit_nothing`); and a
//! DELETE on the upload path (`unknown_ids_paths_and_methods_are_refused`).

use super::{report, start, Also, Case, Server, CHUNK, DRIVE_TOKEN, MALLORY_DRIVE};
use crate::support::{
    bearer, payload_bytes, raw_exchange, request, unframed, FileFingerprint, Header, RawReply,
    Stack, TempDir, TestResult, REPLY_TIMEOUT,
};
use std::path::Path;
use upsim::payload::Payload;

/// Cases in all: the table, the trickled header and the concurrent PUTs
/// (a row dropped from the table is a change to review).
const CASES_TOTAL: usize = 27;
const _: () = assert!(CASES.len() + 2 == CASES_TOTAL);

/// One commit unit.
const UNIT: u64 = CHUNK;
/// Four units and a short last piece.
const TOTAL: u64 = 4 * UNIT + 1000;
/// The `Range` of a session holding two units.
const HELD_RANGE: &str = "bytes=0-524287";
const DRIVE_PATH: &str = "/upload/drive/v3/files";

/// What the cases' requests are built from.
struct Target {
    addr: String,
    /// The session under attack; it holds units 0 and 1.
    id: String,
    payload: Payload,
}

impl Target {
    fn bytes(&self, from: u64, to: u64) -> Vec<u8> {
        payload_bytes(&self.payload, from, to)
    }

    /// Unit 2: the next piece the session would take.
    fn next(&self) -> Vec<u8> {
        self.bytes(2 * UNIT, 3 * UNIT)
    }

    fn initiate(&self, headers: &[Header], body: &[u8]) -> Vec<u8> {
        self.initiate_with("", headers, body)
    }

    /// An initiation with `extra` appended to its query.
    fn initiate_with(&self, extra: &str, headers: &[Header], body: &[u8]) -> Vec<u8> {
        let path = format!("{DRIVE_PATH}?uploadType=resumable{extra}");
        request("POST", &self.addr, &path, headers, body)
    }

    /// A PUT to session `id`, with `token`'s credential if any.
    fn put_to(&self, token: Option<&str>, id: &str, headers: &[Header], body: &[u8]) -> Vec<u8> {
        self.put_with("", token, id, headers, body)
    }

    /// A PUT like [`put_to`](Self::put_to) with `extra` appended to the
    /// session URI's query.
    fn put_with(
        &self,
        extra: &str,
        token: Option<&str>,
        id: &str,
        headers: &[Header],
        body: &[u8],
    ) -> Vec<u8> {
        let mut all: Vec<Header> = token.map(bearer).into_iter().collect();
        all.extend(headers.iter().cloned());
        let path = format!("{DRIVE_PATH}?uploadType=resumable&upload_id={id}{extra}");
        request("PUT", &self.addr, &path, &all, body)
    }

    /// A PUT to the target session with the backend's credential.
    fn put(&self, headers: &[Header], body: &[u8]) -> Vec<u8> {
        self.put_to(Some(DRIVE_TOKEN), &self.id, headers, body)
    }

    /// Unit 2 with its range, as `token` (if any).
    fn next_as(&self, token: Option<&str>) -> Vec<u8> {
        let range = range(2 * UNIT, 3 * UNIT - 1);
        self.put_to(token, &self.id, &[range], &self.next())
    }

    /// A status query (`bytes */TOTAL`) as `token`.
    fn status_query(&self, token: &str, body: &[u8]) -> Vec<u8> {
        let range = ("content-range", format!("bytes */{TOTAL}"));
        self.put_to(Some(token), &self.id, &[range], body)
    }
}

fn range(first: u64, last: u64) -> Header {
    ("content-range", format!("bytes {first}-{last}/{TOTAL}"))
}

fn content_range(value: &str) -> Header {
    ("content-range", value.to_owned())
}

/// The table: each request refused (or answered) without storing a byte.
const CASES: &[Case<Target>] = &[
    Case {
        name: "initiate without a token",
        request: |t| t.initiate(&[], b"{}"),
        status: 401,
        cause: None,
        also: &[Also::HeaderStarts("www-authenticate", "")],
    },
    Case {
        name: "piece with an unknown token",
        request: |t| t.next_as(Some("not-a-known-token-123456")),
        status: 401,
        cause: None,
        also: &[],
    },
    Case {
        name: "piece without a token",
        request: |t| t.next_as(None),
        status: 401,
        cause: None,
        also: &[],
    },
    Case {
        name: "piece to another user's session",
        request: |t| t.next_as(Some(MALLORY_DRIVE)),
        status: 404,
        cause: None,
        also: &[],
    },
    Case {
        name: "status of another user's session",
        request: |t| t.status_query(MALLORY_DRIVE, b""),
        status: 404,
        cause: None,
        also: &[],
    },
    Case {
        name: "piece to an unknown session",
        request: |t| {
            let id = "0123456789abcdef0123456789abcdef";
            t.put_to(
                Some(DRIVE_TOKEN),
                id,
                &[range(0, UNIT - 1)],
                &t.bytes(0, UNIT),
            )
        },
        status: 404,
        cause: None,
        also: &[],
    },
    Case {
        name: "piece without Content-Range",
        request: |t| t.put(&[], &t.next()),
        status: 400,
        cause: None,
        also: &[],
    },
    Case {
        name: "malformed Content-Range",
        request: |t| t.put(&[content_range("bytes abc")], &t.next()),
        status: 400,
        cause: None,
        also: &[],
    },
    Case {
        name: "Content-Range going backwards",
        request: |t| t.put(&[range(3 * UNIT - 1, 2 * UNIT)], &t.next()),
        status: 400,
        cause: None,
        also: &[],
    },
    Case {
        name: "Content-Range past the total",
        request: |t| t.put(&[range(2 * UNIT, TOTAL)], &t.next()),
        status: 400,
        cause: None,
        also: &[],
    },
    Case {
        name: "Content-Range with another total than declared",
        request: |t| {
            let other = format!("bytes {}-{}/{}", 2 * UNIT, 3 * UNIT - 1, TOTAL + 1);
            t.put(&[content_range(&other)], &t.next())
        },
        status: 400,
        cause: None,
        also: &[],
    },
    Case {
        name: "Content-Range with a 21-digit number",
        request: |t| {
            t.put(
                &[content_range("bytes 0-100000000000000000000/*")],
                &t.next(),
            )
        },
        status: 400,
        cause: None,
        also: &[],
    },
    Case {
        name: "piece overlapping only bytes already held",
        request: |t| t.put(&[range(0, UNIT - 1)], &t.bytes(0, UNIT)),
        status: 308,
        cause: None,
        also: &[Also::HeaderIs("range", HELD_RANGE)],
    },
    Case {
        name: "status query carrying a body",
        request: |t| t.status_query(DRIVE_TOKEN, b"0123456789"),
        status: 400,
        cause: None,
        also: &[],
    },
    // Half a unit is not committed.
    Case {
        name: "piece body shorter than its Content-Length (the rest never comes)",
        request: |t| {
            let length = ("content-length", UNIT.to_string());
            let half = &t.next()[..(UNIT / 2) as usize];
            t.put(&[range(2 * UNIT, 3 * UNIT - 1), length], half)
        },
        status: 308,
        cause: None,
        also: &[Also::HeaderIs("range", HELD_RANGE)],
    },
    Case {
        name: "piece over the 256 MiB piece limit",
        request: |t| {
            let size_bytes = 300u64 * 1024 * 1024;
            let declared = format!("bytes 0-{}/*", size_bytes - 1);
            let length = ("content-length", size_bytes.to_string());
            t.put(&[content_range(&declared), length], b"")
        },
        status: 413,
        cause: None,
        also: &[],
    },
    Case {
        name:
            "status query with neither Content-Length nor Transfer-Encoding (curl's bodyless PUT)",
        request: |t| unframed(t.status_query(DRIVE_TOKEN, b"")),
        status: 308,
        cause: None,
        also: &[],
    },
    Case {
        name: "piece without Content-Length (chunked encoding)",
        request: |t| {
            let chunked = ("transfer-encoding", "chunked".to_owned());
            t.put(
                &[range(2 * UNIT, 2 * UNIT + 2), chunked],
                b"3\r\nabc\r\n0\r\n\r\n",
            )
        },
        status: 411,
        cause: None,
        also: &[],
    },
    Case {
        name: "initiation metadata over 64 KiB",
        request: |t| t.initiate(&[bearer(DRIVE_TOKEN)], &[b' '; 100 * 1024]),
        status: 413,
        cause: None,
        also: &[],
    },
    Case {
        name: "initiation asking for a field the file resource lacks",
        request: |t| t.initiate_with("&fields=id,owners", &[bearer(DRIVE_TOKEN)], b"{}"),
        status: 400,
        cause: None,
        also: &[Also::BodyHas("Invalid field selection owners")],
    },
    Case {
        name: "initiation naming fields= twice",
        request: |t| t.initiate_with("&fields=id&fields=*", &[bearer(DRIVE_TOKEN)], b"{}"),
        status: 400,
        cause: None,
        also: &[Also::BodyHas("fields")],
    },
    Case {
        name: "piece asking for a field in the wrong case",
        request: |t| {
            let range = range(2 * UNIT, 3 * UNIT - 1);
            let id = t.id.clone();
            t.put_with(
                "&fields=MD5Checksum",
                Some(DRIVE_TOKEN),
                &id,
                &[range],
                &t.next(),
            )
        },
        status: 400,
        cause: None,
        also: &[Also::BodyHas("Invalid field selection MD5Checksum")],
    },
    Case {
        name: "status query whose fields= is not percent-encoding",
        request: |t| {
            let range = ("content-range", format!("bytes */{TOTAL}"));
            let id = t.id.clone();
            t.put_with("&fields=id%2", Some(DRIVE_TOKEN), &id, &[range], b"")
        },
        status: 400,
        cause: None,
        also: &[Also::BodyHas("Invalid field selection id%2")],
    },
    Case {
        name: "20 KiB of headers (over the 16 KiB limit)",
        request: |t| {
            let big = ("x-big", "a".repeat(20 * 1024));
            t.put(&[range(2 * UNIT, 3 * UNIT - 1), big], &t.next())
        },
        status: 431,
        cause: None,
        also: &[],
    },
    Case {
        name: "100 KiB of headers (over hyper's buffer)",
        request: |t| {
            let huge = ("x-huge", "a".repeat(100 * 1024));
            t.put(&[range(2 * UNIT, 3 * UNIT - 1), huge], &t.next())
        },
        status: 431,
        cause: None,
        also: &[],
    },
];

async fn exchange(stack: &Stack, bytes: &[u8]) -> TestResult<RawReply> {
    raw_exchange(&stack.drive, bytes, REPLY_TIMEOUT).await
}

/// What the cases must leave unchanged: the session's `Range` as a status
/// query reports it, and every file the servers store.
type Fingerprint = (u16, Option<String>, Vec<FileFingerprint>);

async fn fingerprint_of(stack: &Stack, target: &Target) -> TestResult<Fingerprint> {
    let status = exchange(stack, &target.status_query(DRIVE_TOKEN, b"")).await?;
    Ok((
        status.status,
        status.header("range").map(str::to_owned),
        stack.stored_files()?,
    ))
}

/// A new session of `TOTAL` bytes, holding units 0 and 1.
async fn session_holding_two_units(stack: &Stack) -> TestResult<Target> {
    let mut target = Target {
        addr: stack.drive.clone(),
        id: String::new(),
        payload: Payload::new(99, TOTAL),
    };
    let length = ("x-upload-content-length", TOTAL.to_string());
    let started = exchange(
        stack,
        &target.initiate(&[bearer(DRIVE_TOKEN), length], br#"{"name":"t.bin"}"#),
    )
    .await?;
    assert_eq!(started.status, 200, "{}", started.text());
    let location = started.header("location").ok_or("no Location")?;
    target.id = location
        .split("upload_id=")
        .nth(1)
        .ok_or("no upload_id in Location")?
        .to_owned();
    let held = exchange(
        stack,
        &target.put(&[range(0, 2 * UNIT - 1)], &target.bytes(0, 2 * UNIT)),
    )
    .await?;
    assert_eq!(held.status, 308, "{}", held.text());
    let expected = format!("bytes=0-{}", 2 * UNIT - 1);
    assert_eq!(held.header("range"), Some(expected.as_str()));
    assert_eq!(HELD_RANGE, expected, "HELD_RANGE is two units");
    Ok(target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drive_refuses_hostile_input_and_stores_nothing() -> TestResult {
    let tmp = TempDir::new("hostile-drive")?;
    let stack = start(tmp.path()).await?;
    let target = session_holding_two_units(&stack).await?;
    let server = Server {
        name: "drive",
        addr: &stack.drive,
        fingerprint: || fingerprint_of(&stack, &target),
    };
    let baseline = server.fingerprint().await?;
    assert_eq!(baseline.1.as_deref(), Some(HELD_RANGE));

    let mut passed = server.run_cases(&target, CASES, &baseline).await?;
    passed.push(server.slowloris(&baseline).await?);
    let drive_dir = tmp.path().join("drive");
    passed.push(put_the_same_piece_twice_at_once_then_the_rest(&stack, &target, &drive_dir).await?);
    report("drive", &passed, CASES_TOTAL);
    Ok(())
}

/// The same piece twice at once: it is committed exactly once; the last
/// piece then finishes the file.
async fn put_the_same_piece_twice_at_once_then_the_rest(
    stack: &Stack,
    target: &Target,
    drive_dir: &Path,
) -> TestResult<&'static str> {
    const CASE: &str = "concurrent PUTs of the same piece";
    let piece = target.next_as(Some(DRIVE_TOKEN));
    let (a, c) = tokio::join!(exchange(stack, &piece), exchange(stack, &piece));
    let (a, c) = (a?, c?);
    for r in [&a, &c] {
        assert!(
            matches!(r.status, 308 | 503),
            "drive case {CASE:?}: {}: {}",
            r.status,
            r.text()
        );
    }
    assert!(
        a.status == 308 || c.status == 308,
        "drive case {CASE:?}: neither piece was taken"
    );
    let after = exchange(stack, &target.status_query(DRIVE_TOKEN, b"")).await?;
    assert_eq!(
        after.header("range"),
        Some(format!("bytes=0-{}", 3 * UNIT - 1).as_str()),
        "drive case {CASE:?}"
    );
    let partial = std::fs::read(drive_dir.join(".partial").join(&target.id))?;
    assert_eq!(
        partial,
        target.bytes(0, 3 * UNIT),
        "drive case {CASE:?}: the partial file holds each byte once"
    );
    let last = target.put(
        &[range(3 * UNIT, TOTAL - 1)],
        &target.bytes(3 * UNIT, TOTAL),
    );
    let finished = exchange(stack, &last).await?;
    assert_eq!(
        finished.status,
        200,
        "drive case {CASE:?}: {}",
        finished.text()
    );
    Ok(CASE)
}
