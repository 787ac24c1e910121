//! The protocol's rules, request by request, on raw requests.

use super::*;

/// Units 0 and 1 of a session of `total` bytes, as one piece.
async fn raw_first_two_units(
    drive: &Drive,
    session: &SessionUri,
    total: u64,
) -> TestResult<RawReply> {
    let range = format!("bytes 0-{}/{total}", 2 * UNIT - 1);
    raw_piece(drive, session, &range, content(0, 2 * UNIT)).await
}

#[tokio::test]
async fn initiate_answers_200_with_an_absolute_session_uri() -> TestResult {
    let drive = default_drive().await?;
    let reply = raw(
        &drive.addr,
        "POST",
        "/upload/drive/v3/files?alt=json&uploadType=resumable",
        &[("x-upload-content-length", "1000")],
        br#"{"name":"a.bin"}"#,
    )
    .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.is_empty());
    let location = reply.header("location").ok_or("no Location")?;
    let prefix = format!(
        "{}/upload/drive/v3/files?uploadType=resumable&upload_id=",
        drive.base_url
    );
    let upload_id = location.strip_prefix(&prefix).ok_or(location.to_owned())?;
    assert_eq!(upload_id.len(), 32);
    assert!(upload_id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    // A second session gets another id.
    let second = raw_initiate(&drive, 10).await?;
    assert_ne!(second.upload_id(), upload_id);
    assert_eq!(drive.control.stats().sessions_created, 2);
    Ok(())
}

/// An initiation that must be refused: target, headers, body, and what the
/// error message must name.
type BadInitiation = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [u8],
    &'static str,
);

#[tokio::test]
async fn bad_upload_type_bad_json_and_bad_headers_answer_400() -> TestResult {
    let drive = default_drive().await?;
    let cases: [BadInitiation; 7] = [
        ("/upload/drive/v3/files?uploadType=media", &[], b"", "media"),
        ("/upload/drive/v3/files", &[], b"", "uploadType is missing"),
        (INITIATE, &[], b"{\"name\":", "metadata"),
        (INITIATE, &[], b"[1,2]", "an array"),
        (INITIATE, &[], br#"{"name":7}"#, "name is a number"),
        (
            INITIATE,
            &[("x-upload-content-length", "-5")],
            b"",
            "X-Upload-Content-Length",
        ),
        (
            INITIATE,
            &[("x-upload-content-length", "18446744073709551616")],
            b"",
            "18446744073709551616",
        ),
    ];
    for (target, headers, body, expected) in cases {
        let reply = raw(&drive.addr, "POST", target, headers, body).await?;
        assert_eq!(reply.status, 400, "{target} {body:?}: {reply:?}");
        let (code, message) = reply.drive_error()?;
        assert_eq!(code, 400);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    assert_eq!(drive.control.stats().sessions_created, 0);
    Ok(())
}

#[tokio::test]
async fn unknown_ids_paths_and_methods_are_refused() -> TestResult {
    let drive = default_drive().await?;
    let unknown = format!("{INITIATE}&upload_id={}", "0".repeat(32));
    let reply = raw(
        &drive.addr,
        "PUT",
        &unknown,
        &[("content-range", "bytes */*"), ("content-length", "0")],
        b"",
    )
    .await?;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.drive_error()?.0, 404);
    assert!(reply.drive_error()?.1.contains(&"0".repeat(32)));

    let reply = raw(&drive.addr, "GET", "/drive/v3/files", &[], b"").await?;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.drive_error()?.0, 404);

    let reply = raw(&drive.addr, "DELETE", INITIATE, &[], b"").await?;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST, PUT"));
    assert_eq!(reply.drive_error()?.0, 405);
    Ok(())
}

/// What a refusal's error message must say.
enum Says {
    /// Each of these.
    AllOf(&'static [&'static str]),
    /// Exactly this.
    Exactly(&'static str),
}

/// A piece the drive must refuse with 400, naming its numbers, on a fresh
/// session of ten units: what it is, its `Content-Range`, the body's first
/// byte and length, and what the message says.
type BadPiece = (&'static str, &'static str, u64, u64, Says);

const BAD_PIECES: [BadPiece; 3] = [
    (
        "a piece not a multiple of 256 KiB and not the last",
        "bytes 0-999/*",
        0,
        1000,
        Says::AllOf(&["1000", "262144"]),
    ),
    (
        "a Content-Length disagreeing with Content-Range",
        "bytes 0-262143/*",
        0,
        1000,
        Says::AllOf(&["Content-Length 1000", "262144 bytes"]),
    ),
    (
        "a piece leaving a gap",
        "bytes 262144-524287/*",
        UNIT,
        UNIT,
        Says::Exactly("gap: piece starts at 262144 but 0 bytes are held"),
    ),
];

#[tokio::test]
async fn bad_pieces_are_refused_with_their_numbers_and_commit_nothing() -> TestResult {
    for (name, range, first_byte, len_bytes, says) in BAD_PIECES {
        let drive = default_drive().await?;
        let session = raw_initiate(&drive, 10 * UNIT).await?;
        let reply = raw_piece(&drive, &session, range, content(first_byte, len_bytes)).await?;
        assert_eq!(reply.status, 400, "{name}: {reply:?}");
        let (code, message) = reply.drive_error()?;
        assert_eq!(code, 400, "{name}");
        match says {
            Says::AllOf(parts) => assert!(
                parts.iter().all(|p| message.contains(p)),
                "{name}: {message:?} lacks one of {parts:?}"
            ),
            Says::Exactly(text) => assert_eq!(message, text, "{name}"),
        }
        assert!(drive.control.commit_log().is_empty(), "{name}");
        // The connection-level drain kept the session usable.
        let reply = raw_status(&drive, &session, "*").await?;
        assert_eq!(reply.status, 308, "{name}: {reply:?}");
    }
    Ok(())
}

#[tokio::test]
async fn u64_overflow_in_content_range_is_refused_not_panicked() -> TestResult {
    let drive = default_drive().await?;
    let session = raw_initiate(&drive, 10 * UNIT).await?;
    for (range, len) in [
        ("bytes 0-18446744073709551615/18446744073709551616", 1),
        ("bytes 0-18446744073709551615/*", 1),
        ("bytes 18446744073709551615-18446744073709551615/*", 1),
        ("bytes 99999999999999999999999-0/5", 1),
        ("bytes 5-3/10", 1),
    ] {
        let reply = raw_piece(&drive, &session, range, content(0, len)).await?;
        assert_eq!(reply.status, 400, "{range}: {reply:?}");
        assert_eq!(reply.drive_error()?.0, 400);
    }
    // The server is alive and the session untouched.
    let reply = raw_status(&drive, &session, &(10 * UNIT).to_string()).await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), None);
    assert!(drive.control.commit_log().is_empty());
    Ok(())
}

#[tokio::test]
async fn status_query_answers_308_without_range_then_with_it() -> TestResult {
    let drive = default_drive().await?;
    let total = 10 * UNIT;
    let session = raw_initiate(&drive, total).await?;
    let reply = raw_status(&drive, &session, &total.to_string()).await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), None, "nothing is held yet");
    assert_eq!(reply.reason, "Resume Incomplete");

    let reply = raw_first_two_units(&drive, &session, total).await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), Some("bytes=0-524287"));
    let reply = raw_status(&drive, &session, "*").await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), Some("bytes=0-524287"));
    // A status query stating another total is refused.
    let reply = raw_status(&drive, &session, &(total + 1).to_string()).await?;
    assert_eq!(reply.status, 400);
    assert!(reply.drive_error()?.1.contains(&total.to_string()));
    Ok(())
}

#[tokio::test]
async fn overlapping_piece_commits_only_new_bytes() -> TestResult {
    let drive = default_drive().await?;
    let total = 3 * UNIT + 10;
    let session = raw_initiate(&drive, total).await?;
    let reply = raw_first_two_units(&drive, &session, total).await?;
    assert_eq!(reply.header("range"), Some("bytes=0-524287"));
    // Resend from UNIT: the first unit of it is already held.
    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes {UNIT}-{}/{total}", 3 * UNIT - 1),
        content(UNIT, 2 * UNIT),
    )
    .await?;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("range"), Some("bytes=0-786431"));
    // A stale piece wholly below the held offset commits nothing.
    let reply = raw_piece(
        &drive,
        &session,
        &format!("bytes 0-{}/{total}", UNIT - 1),
        content(0, UNIT),
    )
    .await?;
    assert_eq!(reply.header("range"), Some("bytes=0-786431"));
    // The last piece overlaps too; it asks for the size and the CRC (a
    // PUT's own `fields=` wins over the initiation's default).
    let reply = raw(
        &drive.addr,
        "PUT",
        &format!("{}&fields=size,crc64nvme", drive.target(&session)),
        &[(
            "content-range",
            &format!("bytes {}-{}/{total}", 2 * UNIT, total - 1),
        )],
        &content(2 * UNIT, UNIT + 10),
    )
    .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let resource: serde_json::Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(resource["crc64nvme"], digest_of(0, total).as_str());
    assert_eq!(resource["size"], total.to_string().as_str());
    assert_eq!(
        records(&drive.control),
        vec![(0, 2 * UNIT), (2 * UNIT, 3 * UNIT), (3 * UNIT, total)]
    );
    assert_eq!(drive.control.stats().bytes_committed, total);
    Ok(())
}

/// One upload of `total` bytes in a single raw piece: the initiation's
/// query gets `initiation` appended, the piece's `put`; the final reply.
async fn upload_with_fields(
    drive: &Drive,
    total: u64,
    initiation: &str,
    put: &str,
) -> TestResult<RawReply> {
    let length = total.to_string();
    let reply = raw(
        &drive.addr,
        "POST",
        &format!("{INITIATE}{initiation}"),
        &[("x-upload-content-length", &length)],
        br#"{"name":"f.bin","mimeType":"application/x-test"}"#,
    )
    .await?;
    assert_eq!(reply.status, 200, "{initiation}: {reply:?}");
    let session = SessionUri::parse(reply.header("location").ok_or("no Location")?)?;
    let range = format!("bytes 0-{}/{total}", total - 1);
    raw(
        &drive.addr,
        "PUT",
        &format!("{}{put}", drive.target(&session)),
        &[("content-range", &range)],
        &content(0, total),
    )
    .await
}

/// The keys of a JSON object reply, sorted.
fn keys_of(reply: &RawReply) -> TestResult<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.sort();
    Ok(keys)
}

/// `fields=` as Drive honours it: without it a finished upload answers
/// `kind,id,name,mimeType` only; with it, what it names, on the initiation
/// (kept by the session) or on the final PUT (which wins), `*` for all;
/// MD5 is computed by the simulation's store only when the initiation asks
/// for it, by the directory store always.
#[tokio::test]
async fn finished_uploads_answer_with_the_fields_asked_for() -> TestResult {
    let scratch = TempDir::new("drive-fields")?;
    let (sim, dir) = (
        default_drive().await?,
        start_drive(
            DriveConfig::default(),
            Arc::new(ManualClock::default()),
            Arc::new(DirStore::new(scratch.path())),
        )
        .await?,
    );
    let total = 1000;
    let all: &[&str] = &[
        "crc64nvme",
        "id",
        "kind",
        "md5Checksum",
        "mimeType",
        "name",
        "size",
    ];
    // (drive, initiation's fields=, final PUT's fields=, keys answered)
    let cases: [(&Drive, &str, &str, &[&str]); 7] = [
        (&sim, "", "", &["id", "kind", "mimeType", "name"]),
        (
            &sim,
            "&fields=id,name,size,md5Checksum",
            "",
            &["id", "md5Checksum", "name", "size"],
        ),
        (&sim, "&fields=*", "", all),
        (&sim, "&fields=id%2Csize", "", &["id", "size"]),
        (
            &sim,
            "&fields=size",
            "&fields=id,crc64nvme",
            &["crc64nvme", "id"],
        ),
        // Not asked for at the initiation: the simulation's store has none.
        (&sim, "", "&fields=md5Checksum,size", &["size"]),
        (
            &dir,
            "",
            "&fields=md5Checksum,size",
            &["md5Checksum", "size"],
        ),
    ];
    for (drive, initiation, put, keys) in cases {
        let reply = upload_with_fields(drive, total, initiation, put).await?;
        assert_eq!(reply.status, 200, "{initiation} {put}: {reply:?}");
        assert_eq!(
            keys_of(&reply)?,
            keys,
            "{initiation} {put}: {}",
            reply.text()
        );
        let value: serde_json::Value = serde_json::from_slice(&reply.body)?;
        for (key, expected) in [
            ("kind", "drive#file".to_owned()),
            ("size", total.to_string()),
            ("md5Checksum", md5_of(0, total)),
            ("crc64nvme", digest_of(0, total)),
        ] {
            if keys.contains(&key) {
                assert_eq!(value[key], expected.as_str(), "{key} of {initiation} {put}");
            }
        }
    }
    // Fields in the resource's order, as Drive's replies have them.
    let reply = upload_with_fields(&sim, total, "&fields=*", "").await?;
    assert!(
        reply.text().starts_with(r#"{"kind":"drive#file","id":"#),
        "{}",
        reply.text()
    );
    Ok(())
}

/// A name that is not a field of the file resource is refused as Drive
/// refuses it, `400 Invalid field selection NAME`, on the initiation
/// (opening no session) and on a PUT (committing nothing).
#[tokio::test]
async fn unknown_fields_are_an_invalid_field_selection() -> TestResult {
    let drive = default_drive().await?;
    for (fields, named) in [
        ("parents", "parents"),
        ("id,owners(displayName)", "owners(displayName)"),
        ("id,", ""),
        ("%ZZ", "%ZZ"),
    ] {
        let target = format!("{INITIATE}&fields={fields}");
        let reply = raw(&drive.addr, "POST", &target, &[], b"").await?;
        assert_eq!(reply.status, 400, "{fields}: {reply:?}");
        let (code, message) = reply.drive_error()?;
        assert_eq!(code, 400);
        assert_eq!(message, format!("Invalid field selection {named}"));
        assert!(
            reply.text().contains(r#""reason":"invalidParameter""#),
            "{}",
            reply.text()
        );
    }
    assert_eq!(drive.control.stats().sessions_created, 0);
    let session = raw_initiate(&drive, UNIT).await?;
    let reply = raw(
        &drive.addr,
        "PUT",
        &format!("{}&fields=sha256Checksum", drive.target(&session)),
        &[("content-range", &format!("bytes 0-{}/{UNIT}", UNIT - 1))],
        &content(0, UNIT),
    )
    .await?;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(
        reply.drive_error()?.1,
        "Invalid field selection sha256Checksum"
    );
    assert!(records(&drive.control).is_empty());
    Ok(())
}
