//! Refused tus requests, as a table: each one is answered with its exact
//! status, its stable cause (in the JSON body and in `Upsim-Cause`) and
//! the headers the protocol asks for, and stores nothing: the target
//! upload's offset, the deferred upload and every file the servers store
//! are the same after it.

use super::{
    committed_in_record, part, patch_headers, start, tus_request, Expiry, ALICE, BOB,
    BODY_IDLE_TIMEOUT, CHUNK, WINDOW_CHUNKS,
};
use crate::hostile_input::{report, Also, Case, Server};
use crate::support::{
    bearer, request, upload_id, wait_until, FileFingerprint, Header, Stack, TempDir, TestResult,
};
use std::time::Duration;
use upsim::payload::Payload;

/// The target upload: eight chunks and a bit.
const SIZE_BYTES: u64 = 8 * CHUNK + 1000;
/// Its offset when the cases run: a chunk on the drive, half a chunk in
/// its tail.
const OFFSET: u64 = CHUNK + CHUNK / 2;
/// [`OFFSET`] as a header value (checked in the test).
const OFFSET_TEXT: &str = "393216";
/// The dev profile's largest file (`Tus-Max-Size`), plus one.
const OVER_MAX_SIZE: &str = "53687091201";

/// What the cases' requests are built from.
struct Target {
    addr: String,
    /// alice's upload under attack, at [`OFFSET`].
    path: String,
    /// alice's upload of unknown length.
    deferred: String,
    /// alice's terminated upload.
    terminated: String,
    /// alice's chunk API upload, which `/files/` never shows.
    chunk_api: String,
    payload: Payload,
}

impl Target {
    /// A tus request as alice.
    fn alice(&self, method: &str, path: &str, headers: &[Header], body: &[u8]) -> Vec<u8> {
        tus_request(&self.addr, method, path, ALICE, headers, body)
    }

    /// alice's PATCH of the target at `offset` with `extra` headers.
    fn patch_at(&self, offset: u64, extra: &[Header], body: &[u8]) -> Vec<u8> {
        let mut headers = patch_headers(offset);
        headers.extend_from_slice(extra);
        self.alice("PATCH", &self.path, &headers, body)
    }

    /// alice's PATCH of the target at its offset.
    fn patch(&self, extra: &[Header], body: &[u8]) -> Vec<u8> {
        self.patch_at(OFFSET, extra, body)
    }

    /// The target's next bytes.
    fn next(&self, len: u64) -> Vec<u8> {
        part(&self.payload, OFFSET, OFFSET + len)
    }

    /// alice's creation with `headers`.
    fn post(&self, headers: &[Header], body: &[u8]) -> Vec<u8> {
        self.alice("POST", "/files/", headers, body)
    }
}

fn h(name: &'static str, value: &str) -> Header {
    (name, value.to_owned())
}

/// A metadata value of `pairs` keys.
fn metadata_of(pairs: usize) -> Header {
    let keys: Vec<String> = (0..pairs).map(|i| format!("k{i} YQ==")).collect();
    ("upload-metadata", keys.join(","))
}

/// The table.
const CASES: &[Case<Target>] = &[
    // The protocol's version and what is served.
    Case {
        name: "OPTIONS without Tus-Resumable (answered: what is served)",
        request: |t| request("OPTIONS", &t.addr, "/files/", &[], b""),
        status: 204,
        cause: None,
        also: &[
            Also::HeaderIs("tus-version", "1.0.0"),
            Also::HeaderIs("tus-resumable", "1.0.0"),
            Also::HeaderIs("tus-checksum-algorithm", "sha1,md5,crc32"),
            Also::HeaderIs("tus-max-size", "53687091200"),
            Also::HeaderIs(
                "tus-extension",
                "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation",
            ),
        ],
    },
    Case {
        name: "HEAD without Tus-Resumable",
        request: |t| request("HEAD", &t.addr, &t.path, &[bearer(ALICE)], b""),
        status: 412,
        cause: None,
        also: &[
            Also::HeaderIs("tus-version", "1.0.0"),
            Also::HeaderIs("upsim-cause", "tus_version_unsupported"),
        ],
    },
    Case {
        name: "PATCH speaking tus 0.2.2",
        request: |t| {
            let mut headers = vec![bearer(ALICE), h("tus-resumable", "0.2.2")];
            headers.extend(patch_headers(OFFSET));
            request("PATCH", &t.addr, &t.path, &headers, &t.next(10))
        },
        status: 412,
        cause: Some("tus_version_unsupported"),
        also: &[Also::HeaderIs("tus-version", "1.0.0")],
    },
    Case {
        name: "PATCH with 20 KiB of headers (over the 16 KiB limit: still a tus reply)",
        request: |t| t.patch(&[("x-big", "a".repeat(20 * 1024))], &t.next(10)),
        status: 431,
        cause: Some("header_too_large"),
        also: &[
            Also::HeaderIs("tus-resumable", "1.0.0"),
            Also::HeaderIs("upsim-cause", "header_too_large"),
        ],
    },
    // Credentials and ownership.
    Case {
        name: "creation without a token",
        request: |t| tus_request(&t.addr, "POST", "/files/", "", &[h("upload-length", "10")], b""),
        status: 401,
        cause: Some("unauthenticated"),
        also: &[Also::HeaderStarts("www-authenticate", "Bearer")],
    },
    Case {
        name: "HEAD with an unknown token",
        request: |t| tus_request(&t.addr, "HEAD", &t.path, "not-a-known-token-12345", &[], b""),
        status: 401,
        cause: None,
        also: &[Also::HeaderIs("upsim-cause", "unauthenticated")],
    },
    Case {
        name: "HEAD of another user's upload",
        request: |t| tus_request(&t.addr, "HEAD", &t.path, BOB, &[], b""),
        status: 404,
        cause: None,
        also: &[Also::HeaderIs("upsim-cause", "unknown_upload"), Also::HeaderLacks("upload-offset")],
    },
    Case {
        name: "PATCH of another user's upload",
        request: |t| {
            let mut headers = patch_headers(OFFSET);
            headers.push(bearer(BOB));
            request_tus(&t.addr, "PATCH", &t.path, &headers, &t.next(10))
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "DELETE of another user's upload",
        request: |t| tus_request(&t.addr, "DELETE", &t.path, BOB, &[], b""),
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "HEAD of another user's length-deferred upload",
        request: |t| tus_request(&t.addr, "HEAD", &t.deferred, BOB, &[], b""),
        status: 404,
        cause: None,
        also: &[Also::HeaderIs("upsim-cause", "unknown_upload")],
    },
    Case {
        name: "HEAD of an unknown id",
        request: |t| t.alice("HEAD", "/files/0123456789abcdef0123456789abcdef", &[], b""),
        status: 404,
        cause: None,
        also: &[Also::HeaderIs("upsim-cause", "unknown_upload")],
    },
    Case {
        name: "PATCH of a path-traversal id",
        request: |t| {
            t.alice("PATCH", "/files/..%2F..%2Fetc%2Fpasswd", &patch_headers(0), b"x")
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    Case {
        name: "HEAD of a chunk API upload under /files/",
        request: |t| t.alice("HEAD", &format!("/files/{}", t.chunk_api), &[], b""),
        status: 404,
        cause: None,
        also: &[Also::HeaderIs("upsim-cause", "unknown_upload")],
    },
    Case {
        name: "the chunk API's status of a tus upload",
        request: |t| {
            let path = t.path.replace("/files/", "/uploads/");
            request("GET", &t.addr, &path, &[bearer(ALICE)], b"")
        },
        status: 404,
        cause: Some("unknown_upload"),
        also: &[],
    },
    // Methods.
    Case {
        name: "GET of an upload",
        request: |t| t.alice("GET", &t.path, &[], b""),
        status: 405,
        cause: Some("method_not_allowed"),
        also: &[Also::HeaderIs("tus-resumable", "1.0.0")],
    },
    Case {
        name: "PATCH of the creation URL",
        request: |t| t.alice("PATCH", "/files/", &patch_headers(0), b"x"),
        status: 405,
        cause: Some("method_not_allowed"),
        also: &[],
    },
    Case {
        name: "X-HTTP-Method-Override that is not a method",
        request: |t| t.alice("POST", &t.path, &[h("x-http-method-override", "PA TCH")], b""),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "POST overridden to HEAD (answered as a HEAD)",
        request: |t| t.alice("POST", &t.path, &[h("x-http-method-override", "HEAD")], b""),
        status: 200,
        cause: None,
        also: &[
            Also::HeaderIs("upload-offset", OFFSET_TEXT),
            Also::HeaderIs("upload-length", "2098152"),
            Also::HeaderIs("cache-control", "no-store"),
        ],
    },
    // A PATCH's headers.
    Case {
        name: "PATCH without Content-Type",
        request: |t| t.alice("PATCH", &t.path, &[h("upload-offset", OFFSET_TEXT)], &t.next(10)),
        status: 415,
        cause: Some("unsupported_media_type"),
        also: &[],
    },
    Case {
        name: "PATCH as application/octet-stream",
        request: |t| {
            let headers = [h("content-type", "application/octet-stream"), h("upload-offset", OFFSET_TEXT)];
            t.alice("PATCH", &t.path, &headers, &t.next(10))
        },
        status: 415,
        cause: Some("unsupported_media_type"),
        also: &[],
    },
    Case {
        name: "PATCH without Upload-Offset",
        request: |t| {
            let headers = [h("content-type", "application/offset+octet-stream")];
            t.alice("PATCH", &t.path, &headers, &t.next(10))
        },
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "PATCH at a negative offset",
        request: |t| bad_offset(t, "-1"),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "PATCH at an offset past u64 (2^64)",
        request: |t| bad_offset(t, "18446744073709551616"),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "PATCH at an offset in exponent notation",
        request: |t| bad_offset(t, "1e3"),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "PATCH with Upload-Offset twice",
        request: |t| t.patch(&[h("upload-offset", "0")], &t.next(10)),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "PATCH at offset u64::MAX",
        request: |t| t.patch_at(u64::MAX, &[], &t.next(10)),
        status: 409,
        cause: Some("offset_mismatch"),
        also: &[Also::BodyHas("\"upload_offset\":393216")],
    },
    Case {
        name: "PATCH behind the upload's offset (at 0)",
        request: |t| t.patch_at(0, &[], &part(&t.payload, 0, 10)),
        status: 409,
        cause: Some("offset_mismatch"),
        also: &[],
    },
    Case {
        name: "PATCH one byte past the upload's offset",
        request: |t| t.patch_at(OFFSET + 1, &[], &t.next(10)),
        status: 409,
        cause: Some("offset_mismatch"),
        also: &[],
    },
    Case {
        name: "PATCH declaring more bytes than the upload has left",
        request: |t| {
            let rest = t.next(SIZE_BYTES - OFFSET + 1);
            t.patch(&[], &rest)
        },
        status: 413,
        cause: Some("beyond_upload_length"),
        also: &[],
    },
    Case {
        name: "PATCH changing Upload-Length",
        request: |t| t.patch(&[h("upload-length", "5000000")], &t.next(10)),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    // Checksums: a mismatching body keeps nothing.
    Case {
        name: "PATCH with a sha256 checksum (unsupported)",
        request: |t| t.patch(&[h("upload-checksum", "sha256 n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=")], &t.next(10)),
        status: 400,
        cause: Some("checksum_unsupported"),
        also: &[],
    },
    Case {
        name: "PATCH with a malformed checksum",
        request: |t| t.patch(&[h("upload-checksum", "sha1 zz")], &t.next(10)),
        status: 400,
        cause: Some("checksum_unsupported"),
        also: &[],
    },
    Case {
        name: "PATCH whose sha1 is another body's",
        request: |t| t.patch(&[h("upload-checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")], &t.next(CHUNK)),
        status: 460,
        cause: Some("checksum_mismatch"),
        also: &[Also::HeaderIs("upsim-cause", "checksum_mismatch"), Also::BodyHas("nothing of it was kept")],
    },
    Case {
        name: "PATCH whose md5 is another body's",
        request: |t| t.patch(&[h("upload-checksum", "md5 XrY7u+Ae7tCTyyK7j1rNww==")], &t.next(3 * CHUNK)),
        status: 460,
        cause: Some("checksum_mismatch"),
        also: &[],
    },
    Case {
        name: "PATCH whose crc32 is another body's",
        request: |t| t.patch(&[h("upload-checksum", "crc32 DUoRhQ==")], &t.next(100)),
        status: 460,
        cause: Some("checksum_mismatch"),
        also: &[],
    },
    Case {
        name: "checksummed PATCH whose body breaks off (the rest never comes)",
        request: |t| {
            let whole = t.next(CHUNK);
            let headers = [h("upload-checksum", "crc32 DUoRhQ=="), h("content-length", &CHUNK.to_string())];
            t.patch(&headers, &whole[..1000])
        },
        status: 408,
        cause: Some("body_timeout"),
        also: &[Also::RepliedWithin(BODY_IDLE_TIMEOUT.saturating_add(Duration::from_secs(3)))],
    },
    Case {
        name: "checksummed PATCH larger than the window holds until verified",
        request: |t| {
            let body = t.next(WINDOW_CHUNKS * CHUNK);
            t.patch(&[h("upload-checksum", "crc32 DUoRhQ==")], &body)
        },
        status: 413,
        cause: Some("checksum_body_too_large"),
        also: &[],
    },
    // Creation.
    Case {
        name: "creation with neither Upload-Length nor Upload-Defer-Length",
        request: |t| t.post(&[], b""),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "creation of a negative length",
        request: |t| t.post(&[h("upload-length", "-5")], b""),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "creation of u64::MAX bytes",
        request: |t| t.post(&[h("upload-length", "18446744073709551615")], b""),
        status: 413,
        cause: Some("file_too_large"),
        also: &[],
    },
    Case {
        name: "creation one byte over Tus-Max-Size",
        request: |t| t.post(&[h("upload-length", OVER_MAX_SIZE)], b""),
        status: 413,
        cause: Some("file_too_large"),
        also: &[],
    },
    Case {
        name: "creation of an empty file",
        request: |t| t.post(&[h("upload-length", "0")], b""),
        status: 400,
        cause: Some("empty_file"),
        also: &[],
    },
    Case {
        name: "creation with Upload-Defer-Length: 2",
        request: |t| t.post(&[h("upload-defer-length", "2")], b""),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "creation with a length and a deferred length",
        request: |t| t.post(&[h("upload-length", "10"), h("upload-defer-length", "1")], b""),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "creation with 5 KiB of metadata",
        request: |t| t.post(&[h("upload-length", "10"), ("upload-metadata", format!("k {}", "QUFB".repeat(1280)))], b""),
        status: 413,
        cause: Some("metadata_too_large"),
        also: &[],
    },
    Case {
        name: "creation with 33 metadata pairs",
        request: |t| t.post(&[h("upload-length", "10"), metadata_of(33)], b""),
        status: 413,
        cause: Some("metadata_too_large"),
        also: &[],
    },
    Case {
        name: "creation with metadata that is not base64",
        request: |t| t.post(&[h("upload-length", "10"), h("upload-metadata", "filename !!!")], b""),
        status: 400,
        cause: Some("bad_metadata"),
        also: &[],
    },
    Case {
        name: "creation naming a metadata key twice",
        request: |t| t.post(&[h("upload-length", "10"), h("upload-metadata", "a YQ==,a Yg==")], b""),
        status: 400,
        cause: Some("bad_metadata"),
        also: &[],
    },
    Case {
        name: "creation with a body that is not application/offset+octet-stream",
        request: |t| t.post(&[h("upload-length", "10"), h("content-type", "text/plain")], b"0123456789"),
        status: 415,
        cause: Some("unsupported_media_type"),
        also: &[],
    },
    Case {
        name: "creation of a length-deferred upload with bytes",
        request: |t| {
            let headers = [h("upload-defer-length", "1"), h("content-type", "application/offset+octet-stream")];
            t.post(&headers, b"0123456789")
        },
        status: 400,
        cause: Some("length_deferred"),
        also: &[],
    },
    Case {
        name: "a final upload naming 65 partial uploads",
        request: |t| {
            let parts: Vec<String> = (0..65).map(|i| format!("/files/{i:032x}")).collect();
            let concat = ("upload-concat", format!("final;{}", parts.join(" ")));
            t.post(&[concat], b"")
        },
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    Case {
        name: "a final upload naming an unknown partial",
        request: |t| t.post(&[h("upload-concat", "final;/files/0123456789abcdef0123456789abcdef")], b""),
        status: 400,
        cause: Some("partial_unusable"),
        also: &[],
    },
    Case {
        name: "a final upload naming an upload that is not partial",
        request: |t| t.post(&[("upload-concat", format!("final;{}", t.path))], b""),
        status: 400,
        cause: Some("partial_unusable"),
        also: &[],
    },
    Case {
        name: "creation with a malformed Upload-Concat",
        request: |t| t.post(&[h("upload-length", "10"), h("upload-concat", "final;/uploads/x")], b""),
        status: 400,
        cause: Some("bad_tus_header"),
        also: &[],
    },
    // The length-deferred upload.
    Case {
        name: "bytes for a length-deferred upload without its length",
        request: |t| t.alice("PATCH", &t.deferred, &patch_headers(0), b"0123456789"),
        status: 400,
        cause: Some("length_deferred"),
        also: &[],
    },
    Case {
        name: "PATCH of a length-deferred upload past offset 0",
        request: |t| t.alice("PATCH", &t.deferred, &patch_headers(5), b"56789"),
        status: 409,
        cause: Some("offset_mismatch"),
        also: &[],
    },
    // The terminated upload.
    Case {
        name: "HEAD of a terminated upload",
        request: |t| t.alice("HEAD", &t.terminated, &[], b""),
        status: 410,
        cause: None,
        also: &[Also::HeaderIs("upsim-cause", "aborted"), Also::HeaderLacks("upload-offset")],
    },
    Case {
        name: "PATCH after termination",
        request: |t| t.alice("PATCH", &t.terminated, &patch_headers(0), b"0123456789"),
        status: 410,
        cause: Some("aborted"),
        also: &[],
    },
];

/// A PATCH of the target whose `Upload-Offset` is `value`.
fn bad_offset(t: &Target, value: &str) -> Vec<u8> {
    let headers = [
        h("content-type", "application/offset+octet-stream"),
        h("upload-offset", value),
    ];
    t.alice("PATCH", &t.path, &headers, &t.next(10))
}

/// A tus request with `headers` as given (credentials among them).
fn request_tus(addr: &str, method: &str, path: &str, headers: &[Header], body: &[u8]) -> Vec<u8> {
    tus_request(addr, method, path, "", headers, body)
}

/// What no refused request may change: the target's offset, the deferred
/// upload's offset, and every stored file.
type Fingerprint = (u64, u64, Vec<FileFingerprint>);

async fn fingerprint_of(stack: &Stack, t: &Target) -> TestResult<Fingerprint> {
    let alice = super::alice(stack);
    Ok((
        alice.offset(&t.path).await?,
        alice.offset(&t.deferred).await?,
        stack.stored_files()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tus_endpoint_refuses_what_the_protocol_refuses_and_stores_nothing() -> TestResult {
    assert_eq!(OFFSET.to_string(), OFFSET_TEXT);
    assert_eq!(SIZE_BYTES.to_string(), "2098152");
    let tmp = TempDir::new("tus-refusals")?;
    let stack = start(tmp.path(), Expiry::Default).await?;
    let alice = super::alice(&stack);
    let payload = Payload::new(0x7e5, SIZE_BYTES);
    // The target: a chunk on the drive, half a chunk in its tail.
    let path = alice.create(SIZE_BYTES, &[]).await?;
    let reply = alice
        .patch(&path, 0, &[], &part(&payload, 0, OFFSET))
        .await?;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let deferred = {
        let reply = alice
            .send("POST", "/files/", &[h("upload-defer-length", "1")], b"")
            .await?;
        assert_eq!(reply.status, 201, "{}", reply.text());
        super::location(&reply)?
    };
    let terminated = alice.create(CHUNK, &[]).await?;
    let reply = alice.send("DELETE", &terminated, &[], b"").await?;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let chunk_api = {
        let reply = stack.create(&[bearer(ALICE)], 10).await?;
        assert_eq!(reply.status, 201, "{}", reply.text());
        upload_id(&reply)?
    };
    let target = Target {
        addr: stack.backend.clone(),
        path,
        deferred,
        terminated,
        chunk_api,
        payload,
    };
    // The drive holds the first chunk, and the record says so, before the
    // cases start.
    let committed = || async { committed_in_record(tmp.path(), &target.path) == Some(CHUNK) };
    assert!(
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            committed
        )
        .await,
        "the first chunk never reached the drive"
    );
    let server = Server {
        name: "tus",
        addr: &stack.backend,
        fingerprint: || fingerprint_of(&stack, &target),
    };
    let baseline = server.fingerprint().await?;
    assert_eq!((baseline.0, baseline.1), (OFFSET, 0));
    let passed = server.run_cases(&target, CASES, &baseline).await?;
    report("tus", &passed, CASES.len());
    Ok(())
}
