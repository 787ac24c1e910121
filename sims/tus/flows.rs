//! tus flows, as a table: each flow is one upload driven through a
//! sequence of requests, each step with the status and headers it must
//! get; a flow that completes its upload ends with the drive's file
//! byte-identical to the source.

use super::{
    assert_on_drive, location, number, part, start, Expiry, Tus, ALICE, BODY_IDLE_TIMEOUT, CHUNK,
};
use crate::support::{Header, RawReply, TempDir, TestResult};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::Digest as _;
use std::path::Path;
use std::time::{Duration, SystemTime};
use upsim::payload::Payload;

/// The metadata every flow creates its upload with (`flow.bin`,
/// `application/octet-stream`), echoed by HEAD.
const METADATA: &str = "filename Zmxvdy5iaW4=,filetype YXBwbGljYXRpb24vb2N0ZXQtc3RyZWFt";

/// A step's checksum.
#[derive(Clone, Copy)]
enum Sum {
    None,
    /// The body's own, in this algorithm.
    Right(&'static str),
    /// Another body's, in this algorithm.
    Wrong(&'static str),
}

/// One request of a flow and what it must get.
enum Step {
    /// `POST /files`: deferred or of the flow's length, with the bytes
    /// `[0, body_to)` (creation-with-upload when > 0).
    Create {
        deferred: bool,
        body_to: u64,
        status: u16,
        offset: Option<u64>,
    },
    /// `HEAD`: status, `Upload-Offset`, and the length headers
    /// (`Some(true)`: `Upload-Length` is the flow's; `Some(false)`:
    /// `Upload-Defer-Length: 1` instead; `None`: neither checked).
    Head {
        status: u16,
        offset: Option<u64>,
        length_known: Option<bool>,
    },
    /// `PATCH` of bytes `[from, to)` at `Upload-Offset: at`.
    Patch {
        from: u64,
        to: u64,
        at: u64,
        /// Declare `Upload-Length` (a deferred upload's).
        declare_length: bool,
        sum: Sum,
        /// Send it as a POST with `X-HTTP-Method-Override: PATCH`.
        via_post: bool,
        status: u16,
        /// The `Upload-Offset` of a 204.
        offset: Option<u64>,
    },
    /// `DELETE`.
    Delete { status: u16 },
    /// The drive holds the source, byte for byte.
    OnDrive,
}

/// A PATCH of `[from, to)` at `from`, answered 204 with `to`.
const fn patch(from: u64, to: u64) -> Step {
    Step::Patch {
        from,
        to,
        at: from,
        declare_length: false,
        sum: Sum::None,
        via_post: false,
        status: 204,
        offset: Some(to),
    }
}

/// A checksummed PATCH of `[from, to)`: 204 if `sum` is right, 460 (and
/// no offset) if wrong.
const fn summed(from: u64, to: u64, sum: Sum) -> Step {
    let (status, offset) = match sum {
        Sum::Wrong(_) => (460, None),
        _ => (204, Some(to)),
    };
    Step::Patch {
        from,
        to,
        at: from,
        declare_length: false,
        sum,
        via_post: false,
        status,
        offset,
    }
}

const fn head(offset: u64) -> Step {
    Step::Head {
        status: 200,
        offset: Some(offset),
        length_known: Some(true),
    }
}

const fn create(body_to: u64) -> Step {
    Step::Create {
        deferred: false,
        body_to,
        status: 201,
        offset: Some(body_to),
    }
}

/// One upload, driven step by step.
struct Flow {
    name: &'static str,
    length: u64,
    steps: &'static [Step],
}

const L1: u64 = 5 * CHUNK + 12_345;
const L2: u64 = 9 * CHUNK + 7;
const L3: u64 = 2 * CHUNK + 5;
const L4: u64 = 3 * CHUNK + 77;
const L5: u64 = 3 * CHUNK + 9;

const FLOWS: &[Flow] = &[
    Flow {
        name: "creation, then PATCHes cut anywhere",
        length: L1,
        steps: &[
            create(0),
            head(0),
            patch(0, 100_000),
            patch(100_000, 700_001),
            head(700_001),
            patch(700_001, L1),
            head(L1),
            Step::OnDrive,
            // An empty PATCH at the end of a complete upload, then one
            // behind it.
            patch(L1, L1),
            Step::Patch {
                from: 0,
                to: 10,
                at: 0,
                declare_length: false,
                sum: Sum::None,
                via_post: false,
                status: 409,
                offset: None,
            },
        ],
    },
    Flow {
        name: "one PATCH of the whole file, over twice the window",
        length: L2,
        steps: &[create(0), patch(0, L2), head(L2), Step::OnDrive],
    },
    Flow {
        name: "creation with upload, then the rest",
        length: L1,
        steps: &[
            create(300_000),
            head(300_000),
            patch(300_000, L1),
            Step::OnDrive,
        ],
    },
    Flow {
        name: "creation with the whole file",
        length: L3,
        steps: &[create(L3), head(L3), Step::OnDrive],
    },
    Flow {
        name: "deferred length, declared by the first PATCH with bytes",
        length: L4,
        steps: &[
            Step::Create {
                deferred: true,
                body_to: 0,
                status: 201,
                offset: None,
            },
            Step::Head {
                status: 200,
                offset: Some(0),
                length_known: Some(false),
            },
            // An empty PATCH declaring nothing changes nothing.
            patch(0, 0),
            Step::Patch {
                from: 0,
                to: CHUNK + 3,
                at: 0,
                declare_length: true,
                sum: Sum::None,
                via_post: false,
                status: 204,
                offset: Some(CHUNK + 3),
            },
            head(CHUNK + 3),
            patch(CHUNK + 3, L4),
            Step::OnDrive,
        ],
    },
    Flow {
        name: "checksums: sha1, md5, crc32; a mismatch keeps nothing",
        length: L5,
        steps: &[
            create(0),
            summed(0, 1000, Sum::Right("sha1")),
            summed(1000, CHUNK + 5, Sum::Wrong("md5")),
            head(1000),
            summed(1000, CHUNK + 5, Sum::Right("md5")),
            summed(CHUNK + 5, 2 * CHUNK, Sum::Wrong("crc32")),
            head(CHUNK + 5),
            summed(CHUNK + 5, 2 * CHUNK, Sum::Right("crc32")),
            summed(2 * CHUNK, L5, Sum::Wrong("sha1")),
            summed(2 * CHUNK, L5, Sum::Right("sha1")),
            head(L5),
            Step::OnDrive,
        ],
    },
    Flow {
        name: "termination of an upload in progress, then of the ended upload",
        length: L5,
        steps: &[
            create(0),
            patch(0, CHUNK + 1),
            Step::Delete { status: 204 },
            Step::Head {
                status: 410,
                offset: None,
                length_known: None,
            },
            Step::Patch {
                from: CHUNK + 1,
                to: CHUNK + 10,
                at: CHUNK + 1,
                declare_length: false,
                sum: Sum::None,
                via_post: false,
                status: 410,
                offset: None,
            },
            Step::Delete { status: 204 },
            Step::Head {
                status: 404,
                offset: None,
                length_known: None,
            },
            Step::Delete { status: 404 },
        ],
    },
    Flow {
        name: "termination of a complete upload",
        length: L3,
        steps: &[
            create(L3),
            Step::OnDrive,
            Step::Delete { status: 204 },
            Step::Head {
                status: 404,
                offset: None,
                length_known: None,
            },
        ],
    },
    Flow {
        name: "PATCH as a POST with X-HTTP-Method-Override",
        length: L3,
        steps: &[
            create(0),
            Step::Patch {
                from: 0,
                to: L3,
                at: 0,
                declare_length: false,
                sum: Sum::None,
                via_post: true,
                status: 204,
                offset: Some(L3),
            },
            head(L3),
            Step::OnDrive,
        ],
    },
];

/// `Upload-Checksum` for `body`: its own digest, or another body's.
fn checksum(sum: Sum, body: &[u8]) -> Option<Header> {
    let (algorithm, bytes): (&str, Vec<u8>) = match sum {
        Sum::None => return None,
        Sum::Right(a) => (a, body.to_vec()),
        Sum::Wrong(a) => (a, [body, b"!"].concat()),
    };
    let digest = match algorithm {
        "sha1" => sha1::Sha1::digest(&bytes).to_vec(),
        "md5" => md5::Md5::digest(&bytes).to_vec(),
        _ => crc32fast::hash(&bytes).to_be_bytes().to_vec(),
    };
    Some((
        "upload-checksum",
        format!("{algorithm} {}", STANDARD.encode(digest)),
    ))
}

/// Asserts the headers every successful HEAD carries.
fn assert_head(reply: &RawReply, length: u64, length_known: bool, what: &str) -> TestResult {
    let offset = number(reply, "upload-offset")?;
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(reply.header("tus-resumable"), Some("1.0.0"), "{what}");
    assert_eq!(reply.header("upload-metadata"), Some(METADATA), "{what}");
    if length_known {
        assert_eq!(number(reply, "upload-length")?, length, "{what}");
        assert_eq!(reply.header("upload-defer-length"), None, "{what}");
    } else {
        assert_eq!(reply.header("upload-length"), None, "{what}");
        assert_eq!(reply.header("upload-defer-length"), Some("1"), "{what}");
    }
    assert_expiry(reply, !length_known || offset < length, what)
}

/// `Upload-Expires` is there, and soon, if `expected` (the upload is not
/// complete); absent otherwise.
fn assert_expiry(reply: &RawReply, expected: bool, what: &str) -> TestResult {
    if expected {
        return assert_expires_soon(reply, Duration::from_secs(600), what);
    }
    assert_eq!(
        reply.header("upload-expires"),
        None,
        "{what}: a complete upload does not expire"
    );
    Ok(())
}

/// `Upload-Expires` is an HTTP date in the future, at most `within` away.
fn assert_expires_soon(reply: &RawReply, within: Duration, what: &str) -> TestResult {
    let value = reply
        .header("upload-expires")
        .ok_or_else(|| format!("{what}: no Upload-Expires"))?;
    let at = httpdate::parse_http_date(value)?;
    let now = SystemTime::now();
    assert!(
        at + Duration::from_secs(1) >= now && at <= now + within + Duration::from_secs(1),
        "{what}: Upload-Expires {value} is not within {within:?}"
    );
    Ok(())
}

/// Runs `flow` as alice; returns its name.
async fn run_flow(root: &Path, addr: &str, seed: u64, flow: &Flow) -> TestResult<&'static str> {
    let alice = Tus { addr, token: ALICE };
    let payload = Payload::new(seed, flow.length);
    let mut path = String::new();
    for (n, step) in flow.steps.iter().enumerate() {
        let what = format!("flow {:?}, step {n}", flow.name);
        match *step {
            Step::Create {
                deferred,
                body_to,
                status,
                offset,
            } => {
                let mut headers: Vec<Header> = vec![("upload-metadata", METADATA.into())];
                headers.push(if deferred {
                    ("upload-defer-length", "1".into())
                } else {
                    ("upload-length", flow.length.to_string())
                });
                let body = part(&payload, 0, body_to);
                if body_to > 0 {
                    headers.push(("content-type", "application/offset+octet-stream".into()));
                }
                let reply = alice.send("POST", "/files/", &headers, &body).await?;
                assert_eq!(reply.status, status, "{what}: {}", reply.text());
                path = location(&reply)?;
                if let Some(offset) = offset {
                    assert_eq!(number(&reply, "upload-offset")?, offset, "{what}");
                }
                assert_expiry(&reply, deferred || body_to < flow.length, &what)?;
            }
            Step::Head {
                status,
                offset,
                length_known,
            } => {
                let reply = alice.head(&path).await?;
                assert_eq!(reply.status, status, "{what}: {:?}", reply.headers);
                if let Some(offset) = offset {
                    assert_eq!(number(&reply, "upload-offset")?, offset, "{what}");
                }
                if let Some(known) = length_known {
                    assert_head(&reply, flow.length, known, &what)?;
                }
            }
            Step::Patch { .. } => run_patch(&alice, &path, &payload, step, &what).await?,
            Step::Delete { status } => {
                let reply = alice.send("DELETE", &path, &[], b"").await?;
                assert_eq!(reply.status, status, "{what}: {}", reply.text());
            }
            Step::OnDrive => assert_on_drive(root, &payload, &what)?,
        }
    }
    Ok(flow.name)
}

async fn run_patch(
    alice: &Tus<'_>,
    path: &str,
    payload: &Payload,
    step: &Step,
    what: &str,
) -> TestResult {
    let Step::Patch {
        from,
        to,
        at,
        declare_length,
        sum,
        via_post,
        status,
        offset,
    } = *step
    else {
        unreachable!("run_patch runs patches");
    };
    let body = part(payload, from, to);
    let mut extra: Vec<Header> = checksum(sum, &body).into_iter().collect();
    if declare_length {
        extra.push(("upload-length", payload.size_bytes_total().to_string()));
    }
    let reply = if via_post {
        let mut headers = super::patch_headers(at);
        headers.extend(extra);
        headers.push(("x-http-method-override", "PATCH".into()));
        alice.send("POST", path, &headers, &body).await?
    } else {
        alice.patch(path, at, &extra, &body).await?
    };
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    if let Some(offset) = offset {
        assert_eq!(number(&reply, "upload-offset")?, offset, "{what}");
        assert_expiry(&reply, offset < payload.size_bytes_total(), what)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tus_flow_gets_the_protocols_answers_and_the_drive_the_source() -> TestResult {
    let tmp = TempDir::new("tus-flows")?;
    let stack = start(tmp.path(), Expiry::Default).await?;
    let mut passed = Vec::new();
    for (seed, flow) in (0x7f0..).zip(FLOWS) {
        passed.push(run_flow(tmp.path(), &stack.backend, seed, flow).await?);
    }
    eprintln!("tus flows: {} passed: {}", passed.len(), passed.join("; "));
    assert_eq!(passed.len(), FLOWS.len());
    Ok(())
}

/// An upload that receives nothing for the upload idle timeout expires:
/// `Upload-Expires` said when, and afterwards it answers 410
/// `client_gone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tus_upload_expires_when_upload_expires_said() -> TestResult {
    let tmp = TempDir::new("tus-expiry")?;
    let stack = start(tmp.path(), Expiry::Short).await?;
    let alice = super::alice(&stack);
    let payload = Payload::new(0x7ee, L5);
    let path = alice.create(L5, &[]).await?;
    let reply = alice.patch(&path, 0, &[], &part(&payload, 0, 1000)).await?;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_expires_soon(&reply, Duration::from_secs(2), "the PATCH")?;
    let expires = httpdate::parse_http_date(reply.header("upload-expires").unwrap_or_default())?;
    // Past the date (whole seconds) and the committer's idle check.
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_secs(2);
    tokio::time::sleep(wait.max(BODY_IDLE_TIMEOUT)).await;
    let head = alice.head(&path).await?;
    assert_eq!(head.status, 410, "{:?}", head.headers);
    assert_eq!(head.header("upsim-cause"), Some("client_gone"));
    let late = alice
        .patch(&path, 1000, &[], &part(&payload, 1000, 2000))
        .await?;
    assert_eq!(late.status, 410, "{}", late.text());
    Ok(())
}
