//! tus's concatenation: partial uploads held within their reservations,
//! final uploads made of them (the drive's file is their concatenation,
//! in the final's order, a partial named twice counted twice), and every
//! way a final may not use a partial.

use super::{
    alice, assert_bytes_on_drive, location, number, part, start, Expiry, Tus, BOB, CHUNK,
    WINDOW_CHUNKS,
};
use crate::support::{Header, RawReply, TempDir, TestResult};
use upsim::payload::Payload;

fn h(name: &'static str, value: String) -> Header {
    (name, value)
}

/// `POST /files` of a partial upload of `length` bytes; its path.
async fn partial(tus: &Tus<'_>, length: u64) -> TestResult<String> {
    tus.create(length, &[h("upload-concat", "partial".into())])
        .await
}

/// `POST /files` of a final upload of `parts`.
async fn final_of(tus: &Tus<'_>, parts: &[&str]) -> TestResult<RawReply> {
    let concat = format!("final;{}", parts.join(" "));
    tus.send("POST", "/files/", &[h("upload-concat", concat)], b"")
        .await
}

/// PATCHes `bytes` to `path` at 0, asserting 204.
async fn fill(tus: &Tus<'_>, path: &str, bytes: &[u8]) -> TestResult {
    let reply = tus.patch(path, 0, &[], bytes).await?;
    assert_eq!(reply.status, 204, "{path}: {}", reply.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_upload_is_its_partials_in_order_on_the_drive() -> TestResult {
    let tmp = TempDir::new("tus-concat")?;
    let stack = start(tmp.path(), Expiry::Default).await?;
    let alice = alice(&stack);
    // Three partials, each within its four-chunk window, cut anywhere.
    let lengths = [2 * CHUNK + 17, CHUNK, 3 * CHUNK + 5];
    let total: u64 = lengths.iter().sum();
    let payload = Payload::new(0xc0ca7, total);
    let mut paths = Vec::new();
    let mut from = 0;
    for length in lengths {
        let path = partial(&alice, length).await?;
        let head = alice.head(&path).await?;
        assert_eq!(head.header("upload-concat"), Some("partial"));
        // In two PATCHes: one that ends inside a chunk, then the rest.
        let cut = length / 3;
        fill(&alice, &path, &part(&payload, from, from + cut)).await?;
        let reply = alice
            .patch(&path, cut, &[], &part(&payload, from + cut, from + length))
            .await?;
        assert_eq!(reply.status, 204, "{}", reply.text());
        assert_eq!(alice.offset(&path).await?, length);
        paths.push(path);
        from += length;
    }
    // The second partial twice: its bytes come twice.
    let order = [&paths[0], &paths[1], &paths[1], &paths[2]];
    let names: Vec<&str> = order.iter().map(|p| p.as_str()).collect();
    let reply = final_of(&alice, &names).await?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let final_path = location(&reply)?;
    let final_length = total + lengths[1];
    assert_eq!(number(&reply, "upload-offset")?, final_length);
    let head = alice.head(&final_path).await?;
    assert_eq!(number(&head, "upload-length")?, final_length);
    assert_eq!(number(&head, "upload-offset")?, final_length);
    assert_eq!(
        head.header("upload-concat"),
        Some(format!("final;{}", names.join(" ")).as_str())
    );
    let (a, b, c) = (lengths[0], lengths[0] + lengths[1], total);
    let expected = [
        part(&payload, 0, a),
        part(&payload, a, b),
        part(&payload, a, b),
        part(&payload, b, c),
    ]
    .concat();
    assert_bytes_on_drive(tmp.path(), &expected, "a final of four parts")?;
    // The partials ended with their final, complete; the final takes no
    // PATCH.
    assert_eq!(alice.offset(&paths[0]).await?, lengths[0]);
    let patch = alice.patch(&final_path, final_length, &[], b"").await?;
    assert_eq!(patch.status, 403, "{}", patch.text());
    assert_eq!(patch.cause().as_deref(), Some("final_upload_immutable"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_refuses_the_partials_it_may_not_use_and_takes_nothing() -> TestResult {
    let tmp = TempDir::new("tus-concat-refusals")?;
    let stack = start(tmp.path(), Expiry::Default).await?;
    let alice = alice(&stack);
    let bob = Tus {
        addr: &stack.backend,
        token: BOB,
    };
    let payload = Payload::new(0xc0ca8, CHUNK);
    let complete = partial(&alice, CHUNK).await?;
    fill(&alice, &complete, &part(&payload, 0, CHUNK)).await?;
    let unfinished = partial(&alice, CHUNK).await?;
    fill(&alice, &unfinished, &part(&payload, 0, 10)).await?;
    let bobs = partial(&bob, CHUNK).await?;
    fill(&bob, &bobs, &part(&payload, 0, CHUNK)).await?;
    let plain = alice.create(CHUNK, &[]).await?;
    let unknown = "/files/0123456789abcdef0123456789abcdef".to_owned();
    for (what, parts) in [
        ("an unfinished partial", vec![&complete, &unfinished]),
        ("another user's partial", vec![&complete, &bobs]),
        ("an upload that is not partial", vec![&complete, &plain]),
        ("an unknown upload", vec![&complete, &unknown]),
    ] {
        let names: Vec<&str> = parts.iter().map(|p| p.as_str()).collect();
        let reply = final_of(&alice, &names).await?;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert_eq!(reply.cause().as_deref(), Some("partial_unusable"), "{what}");
    }
    // Nothing was taken by the refused finals: the complete partial makes
    // a final, and then no other final may have it.
    let first = final_of(&alice, &[&complete]).await?;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_bytes_on_drive(tmp.path(), &part(&payload, 0, CHUNK), "a final of one part")?;
    let second = final_of(&alice, &[&complete]).await?;
    assert_eq!(second.status, 400, "{}", second.text());
    assert_eq!(second.cause().as_deref(), Some("partial_unusable"));
    // A partial must fit its reservation: four chunks here.
    let too_large = alice
        .send(
            "POST",
            "/files/",
            &[
                h("upload-concat", "partial".into()),
                h("upload-length", (WINDOW_CHUNKS * CHUNK + 1).to_string()),
            ],
            b"",
        )
        .await?;
    assert_eq!(too_large.status, 413, "{}", too_large.text());
    assert_eq!(too_large.cause().as_deref(), Some("partial_too_large"));
    for (what, headers) in [
        (
            "a final with Upload-Length",
            vec![
                h("upload-concat", format!("final;{unfinished}")),
                h("upload-length", "10".into()),
            ],
        ),
        (
            "a partial of deferred length",
            vec![
                h("upload-concat", "partial".into()),
                h("upload-defer-length", "1".into()),
            ],
        ),
    ] {
        let reply = alice.send("POST", "/files/", &headers, b"").await?;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert_eq!(reply.cause().as_deref(), Some("bad_tus_header"), "{what}");
    }
    Ok(())
}
