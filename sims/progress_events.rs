//! The progress channel over real loopback TCP: `GET /uploads/{id}/events`
//! reports an upload from admission to the drive's checksum, resumes from
//! `Last-Event-ID` without sending a state twice, keeps quiet streams alive,
//! holds its bounds with typed refusals, and opens for an events token as
//! for the API's credentials.

use crate::support::{
    bearer, checksum, chunk_of, token_table, upload_id, user, EventStream, Header, RawReply,
    ReadEvent, Stack, TestResult,
};
use std::time::Duration;
use upsim::auth::Auth;
use upsim::checksum::FileDigest;
use upsim::chunk_api::{ErrorBody, EventKind, EventsToken, Phase};
use upsim::env::MemorySnapshot;
use upsim::payload::Payload;
use upsim::profile::{MemoryPolicy, Profile};
use upsim::units::{GIB, KIB};
use upsim::wire::sse::SseItem;

const CHUNK: u64 = 256 * KIB;
const WAIT: Duration = Duration::from_secs(10);

fn profile() -> Profile {
    Profile {
        name: "events-test".into(),
        chunk_size_bytes: CHUNK,
        memory_per_upload: MemoryPolicy::Fixed { bytes: 4 * CHUNK },
        ..Profile::dev()
    }
}

fn roomy() -> MemorySnapshot {
    MemorySnapshot::new(64 * GIB, 60 * GIB).expect("valid figures")
}

fn events_path(id: &str) -> String {
    format!("/uploads/{id}/events")
}

/// Creates an upload of `chunks` whole chunks for `auth`; its id.
async fn create(stack: &Stack, auth: &[Header], chunks: u64) -> TestResult<String> {
    let reply = stack.create(auth, chunks * CHUNK).await?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    upload_id(&reply)
}

fn refused(reply: &RawReply, status: u16, cause: &str) -> TestResult<ErrorBody> {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body: ErrorBody = serde_json::from_slice(&reply.body)?;
    assert_eq!(body.error.cause, cause, "{}", body.error.message);
    Ok(body)
}

/// Reads events until one says the upload ended; all of them.
async fn until_ended(stream: &mut EventStream) -> TestResult<Vec<ReadEvent>> {
    let mut seen = Vec::new();
    loop {
        let event = stream.next_event(WAIT).await?;
        let ended = event.state.ended();
        seen.push(event);
        if ended {
            return Ok(seen);
        }
    }
}

#[tokio::test]
async fn events_report_an_upload_from_admission_to_the_drives_checksum() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let alice = [user("alice")];
    let id = create(&stack, &alice, 8).await?;
    let mut stream = EventStream::open(&stack.backend, &events_path(&id), &alice).await?;
    assert_eq!(stream.reply.status, 200);
    assert_eq!(
        stream.reply.headers["content-type"], "text/event-stream",
        "an EventSource needs exactly this"
    );
    assert_eq!(stream.reply.headers["cache-control"], "no-store");
    assert_eq!(
        stream.next(WAIT).await?,
        Some(SseItem::Retry(Duration::from_secs(2))),
        "a stream starts with retry:"
    );
    let first = stream.next_event(WAIT).await?;
    assert_eq!(
        (first.kind, first.state.phase),
        (EventKind::Phase, Phase::Receiving)
    );
    assert_eq!(
        (first.state.committed_bytes, first.state.received_bytes),
        (0, 0)
    );

    let payload = Payload::new(7, 8 * CHUNK);
    let sender = {
        let stack_addr = stack.backend.clone();
        let id = id.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            let sent: TestResult = async {
                for i in 0..8 {
                    let body = chunk_of(&payload, CHUNK, i);
                    let reply = crate::support::send(
                        &stack_addr,
                        "PUT",
                        &format!("/uploads/{id}/chunks/{i}"),
                        &[user("alice"), checksum(&body)],
                        &body,
                    )
                    .await?;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
                Ok(())
            }
            .await;
            sent
        })
    };
    let events = until_ended(&mut stream).await?;
    sender.await??;
    // Committed progress only moves forward, and never past what the
    // backend holds; each event is a new state.
    let mut before = first.id;
    for e in &events {
        assert_ne!(e.id, before, "a state sent twice");
        assert!(
            e.id.committed_progress() >= before.committed_progress(),
            "{before} then {}",
            e.id
        );
        assert!(
            e.state.received_bytes >= e.state.committed_bytes,
            "{}",
            e.id
        );
        assert_eq!(e.kind, EventKind::between(Some(&before), &e.id));
        before = e.id;
    }
    assert!(
        events.iter().any(|e| e.kind == EventKind::Committed),
        "the drive's offset was reported: {events:?}"
    );
    assert!(events.iter().any(|e| e.kind == EventKind::Received));
    let last = events.last().ok_or("no event")?;
    assert_eq!(last.kind, EventKind::Complete);
    let mut digest = FileDigest::default();
    digest.update(
        &(0..8)
            .flat_map(|i| chunk_of(&payload, CHUNK, i))
            .collect::<Vec<u8>>(),
    );
    let file = last
        .state
        .file
        .as_ref()
        .ok_or("complete without its file")?;
    assert_eq!(
        file.crc64nvme.as_deref(),
        Some(digest.hex().as_str()),
        "the drive's checksum"
    );
    assert_eq!(last.state.committed_bytes, 8 * CHUNK);
    assert_eq!(stream.next(WAIT).await?, None, "nothing follows the end");

    // A reader that has the last state is told there is no more (204: an
    // EventSource stops reconnecting); one that has not gets it once.
    let resumed = EventStream::open(
        &stack.backend,
        &events_path(&id),
        &[user("alice"), ("last-event-id", last.id.to_string())],
    )
    .await?;
    assert_eq!(resumed.reply.status, 204);
    let mut fresh = EventStream::open(&stack.backend, &events_path(&id), &alice).await?;
    let again = fresh.next_event(WAIT).await?;
    assert_eq!((again.kind, again.id), (EventKind::Complete, last.id));
    assert_eq!(fresh.next(WAIT).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_reconnect_resumes_from_the_last_event_and_sends_nothing_twice() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let alice = [user("alice")];
    let id = create(&stack, &alice, 4).await?;
    let mut stream = EventStream::open(&stack.backend, &events_path(&id), &alice).await?;
    let first = stream.next_event(WAIT).await?;
    drop(stream);
    // Nothing changed since: the resumed stream says nothing, by header
    // (an EventSource reconnecting) or by query (a new EventSource).
    let header = [user("alice"), ("last-event-id", first.id.to_string())];
    let by_query = format!("{}?last_event_id={}", events_path(&id), first.id);
    for (path, headers) in [
        (events_path(&id), &header[..]),
        (by_query.clone(), &alice[..]),
    ] {
        let mut resumed = EventStream::open(&stack.backend, &path, headers).await?;
        assert_eq!(resumed.reply.status, 200);
        assert_eq!(
            resumed.next(WAIT).await?,
            Some(SseItem::Retry(Duration::from_secs(2)))
        );
        assert!(
            resumed.next(Duration::from_millis(300)).await.is_err(),
            "{path}: a state the reader has was sent again"
        );
    }
    // A change is sent to a resumed reader, once.
    let mut resumed = EventStream::open(&stack.backend, &events_path(&id), &header).await?;
    let payload = Payload::new(1, 4 * CHUNK);
    let body = chunk_of(&payload, CHUNK, 1);
    let put = stack
        .put_chunk(&alice, &id, 1, &[checksum(&body)], &body)
        .await?;
    assert_eq!(put.status, 200);
    let next = resumed.next_event(WAIT).await?;
    assert_eq!(next.kind, EventKind::Received);
    assert_eq!(
        (next.state.received_bytes, next.state.committed_bytes),
        (CHUNK, 0)
    );
    // An id that is not ours names no state: the reader gets the current one.
    let mut junk = EventStream::open(
        &stack.backend,
        &events_path(&id),
        &[user("alice"), ("last-event-id", "42".into())],
    )
    .await?;
    assert_eq!(junk.next_event(WAIT).await?.id, next.id);
    Ok(())
}

#[tokio::test]
async fn a_quiet_stream_keeps_alive_and_a_failure_names_its_cause() -> TestResult {
    let stack = Stack::in_memory_configured(profile(), roomy(), |c| {
        c.events.keep_alive = Duration::from_millis(100);
        c.events.retry = Duration::from_millis(500);
    })
    .await?;
    let alice = [user("alice")];
    let id = create(&stack, &alice, 4).await?;
    let mut stream = EventStream::open(&stack.backend, &events_path(&id), &alice).await?;
    assert_eq!(
        stream.next(WAIT).await?,
        Some(SseItem::Retry(Duration::from_millis(500)))
    );
    stream.next_event(WAIT).await?;
    for _ in 0..3 {
        assert_eq!(
            stream.next(WAIT).await?,
            Some(SseItem::Comment),
            "a keep-alive"
        );
    }
    let aborted = stack
        .call("DELETE", &format!("/uploads/{id}"), &alice, b"")
        .await?;
    assert_eq!(aborted.status, 200);
    let failed = until_ended(&mut stream).await?.pop().ok_or("no event")?;
    assert_eq!(failed.kind, EventKind::Failed);
    let failure = failed.state.failure.ok_or("failed without a failure")?;
    assert_eq!((failure.status, failure.cause.as_str()), (410, "aborted"));
    assert!(!failure.message.is_empty());
    Ok(())
}

#[tokio::test]
async fn streams_are_bounded_per_user_and_in_all_with_typed_refusals() -> TestResult {
    let stack = Stack::in_memory_configured(profile(), roomy(), |c| {
        c.events.streams_max = 3;
        c.events.streams_per_user_max = 2;
        // A closed reader is noticed at the next write: soon, here.
        c.events.keep_alive = Duration::from_millis(100);
    })
    .await?;
    let (alice, bob, carol) = ([user("alice")], [user("bob")], [user("carol")]);
    let (a, b, c) = (
        create(&stack, &alice, 1).await?,
        create(&stack, &bob, 1).await?,
        create(&stack, &carol, 1).await?,
    );
    let a1 = EventStream::open(&stack.backend, &events_path(&a), &alice).await?;
    let _a2 = EventStream::open(&stack.backend, &events_path(&a), &alice).await?;
    assert_eq!(
        (a1.reply.status.as_u16(), _a2.reply.status.as_u16()),
        (200, 200)
    );
    let third = stack.call("GET", &events_path(&a), &alice, b"").await?;
    let body = refused(&third, 429, "user_event_streams_full")?;
    assert_eq!(body.error.details["user_streams_max"], 2);
    assert!(
        third.header("retry-after").is_some(),
        "429 with Retry-After"
    );
    let _b1 = EventStream::open(&stack.backend, &events_path(&b), &bob).await?;
    let full = stack.call("GET", &events_path(&c), &carol, b"").await?;
    let body = refused(&full, 503, "event_streams_full")?;
    assert_eq!(
        (
            &body.error.details["streams_open"],
            &body.error.details["streams_max"]
        ),
        (&serde_json::json!(3), &serde_json::json!(3))
    );
    // A reader that goes away gives its place back.
    drop(a1);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c1 = EventStream::open(&stack.backend, &events_path(&c), &carol).await?;
        if c1.reply.status == 200 {
            assert_eq!(c1.next_event(WAIT).await?.state.phase, Phase::Receiving);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn another_users_upload_and_missing_credentials_are_refused() -> TestResult {
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let id = create(&stack, &[user("alice")], 1).await?;
    let theirs = stack
        .call("GET", &events_path(&id), &[user("bob")], b"")
        .await?;
    refused(&theirs, 404, "unknown_upload")?;
    let nobody = stack.call("GET", &events_path(&id), &[], b"").await?;
    refused(&nobody, 401, "unauthenticated")?;
    let token = stack
        .call(
            "POST",
            &format!("/uploads/{id}/events/token"),
            &[user("bob")],
            b"",
        )
        .await?;
    refused(&token, 404, "unknown_upload")?;
    let posted = stack
        .call("POST", &events_path(&id), &[user("alice")], b"")
        .await?;
    refused(&posted, 405, "method_not_allowed")?;
    Ok(())
}

#[tokio::test]
async fn an_events_token_opens_one_upload_until_it_expires() -> TestResult {
    const ALICE: &str = "alice-token-0123456789";
    let tokens = token_table(&[(ALICE, "alice")])?;
    let stack = Stack::in_memory_configured(profile(), roomy(), move |c| {
        c.auth = Auth::Tokens(tokens);
        c.events.token_lifetime = Duration::from_millis(600);
    })
    .await?;
    let alice = [bearer(ALICE)];
    let (one, two) = (
        create(&stack, &alice, 2).await?,
        create(&stack, &alice, 1).await?,
    );
    let token_path = format!("/uploads/{one}/events/token");
    refused(
        &stack.call("POST", &token_path, &[], b"").await?,
        401,
        "unauthenticated",
    )?;
    let issued = stack.call("POST", &token_path, &alice, b"").await?;
    assert_eq!(issued.status, 201, "{}", issued.text());
    let issued: EventsToken = serde_json::from_slice(&issued.body)?;
    assert_eq!((issued.token.len(), issued.expires_in_ms), (32, 600));
    // No header at all, as an EventSource sends none.
    let with_token = format!("{}?token={}", events_path(&one), issued.token);
    let mut stream = EventStream::open(&stack.backend, &with_token, &[]).await?;
    assert_eq!(stream.reply.status, 200);
    assert_eq!(stream.next_event(WAIT).await?.state.upload_id.as_str(), one);
    let elsewhere = format!("{}?token={}", events_path(&two), issued.token);
    refused(
        &stack.call("GET", &elsewhere, &[], b"").await?,
        401,
        "unauthenticated",
    )?;
    let forged = format!("{}?token={}", events_path(&one), "0".repeat(32));
    refused(
        &stack.call("GET", &forged, &[], b"").await?,
        401,
        "unauthenticated",
    )?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let expired = stack.call("GET", &with_token, &[], b"").await?;
    let body = refused(&expired, 401, "unauthenticated")?;
    assert!(
        body.error.message.contains("expired"),
        "{}",
        body.error.message
    );
    assert!(
        !body.error.message.contains(&issued.token),
        "the token echoed"
    );
    // The stream opened before the expiry goes on.
    let payload = Payload::new(3, 2 * CHUNK);
    let chunk = chunk_of(&payload, CHUNK, 0);
    let put = stack
        .put_chunk(&alice, &one, 0, &[checksum(&chunk)], &chunk)
        .await?;
    assert_eq!(put.status, 200);
    assert_eq!(stream.next_event(WAIT).await?.state.received_bytes, CHUNK);
    Ok(())
}

/// This is a regression test that ensures a graceful shutdown ends open
/// event streams cleanly (their readers reconnect to the next process)
/// instead of holding the close until connections are cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_open_streams_cleanly() -> TestResult {
    use crate::support::TempDir;
    use upsim::real::{bind_backend, bind_drive, DriveSettings, ServeSettings};
    let tmp = TempDir::new("events-shutdown")?;
    let drive = bind_drive(&DriveSettings::new("127.0.0.1:0", tmp.path().join("drive"))).await?;
    let drive_url = format!("http://{}", drive.addr);
    let drive_task = tokio::spawn(drive.server.serve(drive.listener));
    let bound = bind_backend(&ServeSettings::new("127.0.0.1:0", profile(), drive_url)).await?;
    let addr = bound.addr.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(bound.backend.run_until(bound.listener, async {
        let _ = stopped.await;
    }));
    let alice = [user("alice")];
    let created = crate::support::send(
        &addr,
        "POST",
        "/uploads",
        &alice,
        &crate::support::create_body(CHUNK),
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = upload_id(&created)?;
    let mut stream = EventStream::open(&addr, &events_path(&id), &alice).await?;
    stream.next_event(WAIT).await?;
    stop.send(()).map_err(|_| "backend gone")?;
    // A clean end of the body (not a connection cut at the grace period,
    // which reads as an error).
    assert_eq!(stream.next(WAIT).await?, None);
    let report = tokio::time::timeout(WAIT, backend).await???;
    assert!(report.drained, "{report:?}");
    drive_task.abort();
    Ok(())
}

/// The client's own follower (what `upsim upload` and the simulations use)
/// sees an upload through to its end, and one started after the end gets
/// the last state at once.
#[tokio::test]
async fn the_clients_follower_sees_an_upload_to_its_end() -> TestResult {
    use std::sync::{Arc, Mutex};
    use upsim::client::events::{FollowConfig, Seen};
    use upsim::client::{ClientConfig, Uploader};
    use upsim::env::{TokioClock, TokioNetwork};
    use upsim::trace::Tracer;
    use upsim::user::UserId;
    let stack = Stack::in_memory(profile(), roomy()).await?;
    let uploader = Uploader::new(
        Arc::new(TokioNetwork),
        Arc::new(TokioClock::real()),
        ClientConfig::new(stack.backend.clone(), UserId::new("alice")?, 5),
        Tracer::off(),
        None,
    );
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        Arc::new(move |s: &Seen| seen.lock().expect("not poisoned").push(s.clone()))
    };
    let following = Arc::new(Mutex::new(None));
    let started = |id: &str| {
        let follower = uploader.events(id, FollowConfig::default());
        let record = record.clone();
        *following.lock().expect("not poisoned") =
            Some(tokio::spawn(async move { follower.follow(record).await }));
    };
    let payload = Payload::new(11, 6 * CHUNK + 5);
    let outcome = uploader
        .upload_announcing(Arc::new(payload), None, started)
        .await?;
    let task = following
        .lock()
        .expect("not poisoned")
        .take()
        .ok_or("never started")?;
    let last = tokio::time::timeout(WAIT, task).await???;
    assert_eq!(last.phase, Phase::Complete);
    assert_eq!(
        last.file.as_ref().and_then(|f| f.digest()),
        outcome.file.digest()
    );
    let seen = seen.lock().expect("not poisoned").clone();
    assert!(
        matches!(
            seen.first(),
            Some(Seen::Opened {
                last_event_id: None
            })
        ),
        "{seen:?}"
    );
    let committed: Vec<(u32, u64)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Event { id, .. } => Some(id.committed_progress()),
            _ => None,
        })
        .collect();
    assert!(committed.windows(2).all(|w| w[0] <= w[1]), "{committed:?}");
    // Following an ended upload: its last state, at once.
    let late = uploader.events(outcome.upload_id.as_str(), FollowConfig::default());
    let again = tokio::time::timeout(WAIT, late.follow(Arc::new(|_: &Seen| {}))).await??;
    assert_eq!(again.event_id(), last.event_id());
    Ok(())
}
