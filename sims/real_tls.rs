//! Real mode over TLS, with throwaway CAs (`support::certs`, rcgen):
//!
//! - the whole path as processes, `upsim upload` → `upsim serve` →
//!   `upsim drive`, every hop `https://`, the stored file byte-identical;
//! - a certificate signed by another CA, and one for another host name,
//!   refused with a typed error naming the address and rustls's reason: at
//!   the drive client, at the upload client (at once, not after the stall
//!   limit), at `upsim upload`, and as the backend's 503 to a create;
//! - handshakes bounded in time on both sides, so a peer that stalls in its
//!   handshake cannot pin a connection slot;
//! - unusable certificate and key files refused naming the file.
//!
//! Every wait is bounded; processes, tasks and directories are cleaned up
//! by guards.

use crate::support::{
    file_digest, finished_files, free_port, get, token_file, user, wait_until, write_payload, Proc,
    ServerCert, Stack, TempDir, TestCa, TestResult, UPSIM,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use upsim::client::{ClientConfig, ClientError, UploadOutcome, Uploader};
use upsim::drive::{DriveClient, DriveError};
use upsim::env::{TokioClock, TokioNetwork};
use upsim::payload::Payload;
use upsim::profile::Profile;
use upsim::real::{bind_drive, DriveSettings, ServeSettings};
use upsim::trace::Tracer;
use upsim::units::MIB;
use upsim::user::UserId;
use upsim::wire::tls::{Roots, TlsClient, TlsConfigError, TlsServer};

const FILE_SIZE_BYTES: u64 = 24 * MIB;
const ALICE_TOKEN: &str = "tls-alice-token-0123456789";
const DRIVE_TOKEN: &str = "tls-backend-drive-token-42";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// What a refused certificate may take to surface: a handshake on
/// loopback, far below any retry budget.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// The handshake bound the timeout checks run with.
const SHORT_HANDSHAKE: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(10);

async fn accepts(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

fn trusting(ca: &TestCa) -> TestResult<TlsClient> {
    Ok(TlsClient::new(Roots::CaFile(ca.ca_file.clone()))?)
}

/// `upsim drive` in process, serving TLS with `cert`; its address.
async fn tls_drive(
    dir: &Path,
    cert: &ServerCert,
    header_read_timeout: Duration,
) -> TestResult<(String, tokio::task::JoinHandle<()>)> {
    let mut settings = DriveSettings::new("127.0.0.1:0", dir);
    settings.tls = Some(TlsServer::from_pem_files(&cert.cert, &cert.key)?);
    settings.header_read_timeout = header_read_timeout;
    let bound = bind_drive(&settings).await?;
    assert!(bound.base_url.starts_with("https://"), "{}", bound.base_url);
    let addr = bound.addr.to_string();
    let task = tokio::spawn(async move {
        let _ = bound.server.serve(bound.listener).await;
    });
    Ok((addr, task))
}

/// What initiating a session at `url` with `tls` comes to.
async fn initiate(url: &str, tls: TlsClient) -> Result<(), DriveError> {
    let client = DriveClient::new(Arc::new(TokioNetwork), url, None).with_tls(tls);
    let initiated = tokio::time::timeout(
        REFUSAL_TIMEOUT,
        client.initiate("f.bin", "application/octet-stream", 10),
    )
    .await
    .map_err(|_| DriveError::Io {
        reason: "no answer in time".to_owned(),
    })?;
    initiated.map(|_| ())
}

/// The address and reason of a [`DriveError::Tls`], or a failure.
fn drive_tls_error(result: Result<(), DriveError>) -> TestResult<(String, String)> {
    match result {
        Err(DriveError::Tls { addr, reason }) => Ok((addr, reason)),
        other => Err(format!("expected DriveError::Tls, got {other:?}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drive_client_refuses_another_cas_certificate_and_another_name() -> TestResult {
    let tmp = TempDir::new("tls-drive-client")?;
    let root = tmp.path();
    let (ca, other) = (TestCa::new(root, "good")?, TestCa::new(root, "other")?);
    // The certificate names localhost only: 127.0.0.1 is another name.
    let cert = ca.server_cert(root, "drive", &["localhost"])?;
    let (addr, _drive) = tls_drive(&root.join("drive"), &cert, START_TIMEOUT).await?;
    let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();

    // The right CA and the right name: a session.
    initiate(&format!("https://localhost:{port}"), trusting(&ca)?).await?;

    let (refused_addr, reason) =
        drive_tls_error(initiate(&format!("https://localhost:{port}"), trusting(&other)?).await)?;
    assert_eq!(refused_addr, format!("localhost:{port}"));
    assert!(reason.contains("UnknownIssuer"), "{reason}");

    let wrong_name = initiate(&format!("https://127.0.0.1:{port}"), trusting(&ca)?).await;
    let message = wrong_name.as_ref().map_err(|e| e.to_string()).err();
    let (refused_addr, reason) = drive_tls_error(wrong_name)?;
    assert_eq!(refused_addr, addr);
    assert!(
        reason.to_lowercase().contains("not valid for name"),
        "{reason}"
    );
    // The message a log or a 503 carries names the address and the reason.
    let message = message.unwrap_or_default();
    assert!(
        message.contains(&addr) && message.contains(&reason),
        "{message}"
    );
    assert!(!DriveError::Tls {
        addr: addr.clone(),
        reason
    }
    .is_retryable());

    // Plain http:// to a TLS drive gets no HTTP answer.
    let plain = DriveClient::new(Arc::new(TokioNetwork), &format!("http://{addr}"), None);
    let plain = tokio::time::timeout(REFUSAL_TIMEOUT, plain.initiate("f.bin", "x/y", 10)).await?;
    assert!(plain.is_err(), "{plain:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_does_not_trust_the_drive_refuses_creates_naming_why() -> TestResult {
    let tmp = TempDir::new("tls-backend-drive")?;
    let root = tmp.path();
    let (ca, other) = (TestCa::new(root, "good")?, TestCa::new(root, "other")?);
    let cert = ca.server_cert(root, "drive", &["127.0.0.1"])?;
    let mut drive = DriveSettings::new("127.0.0.1:0", root.join("drive"));
    drive.tls = Some(TlsServer::from_pem_files(&cert.cert, &cert.key)?);
    let drive_roots = trusting(&other)?;
    let stack = Stack::real_mode(&drive, |http_url| {
        let https_url = http_url.replacen("http://", "https://", 1);
        let mut serve = ServeSettings::new("127.0.0.1:0", Profile::dev(), https_url);
        serve.drive_tls = Some(drive_roots);
        serve
    })
    .await?;
    let reply = stack.create(&[user("alice")], 1024).await?;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.cause().as_deref(), Some("drive_unavailable"));
    let text = reply.text();
    assert!(
        text.contains(&stack.drive) && text.contains("UnknownIssuer"),
        "{text}"
    );
    Ok(())
}

/// Uploads a 3 MiB payload to the backend at `addr` over TLS with `tls`:
/// the payload's MD5 and the outcome.
async fn upload(
    addr: &str,
    tls: TlsClient,
) -> TestResult<(String, Result<UploadOutcome, ClientError>)> {
    let mut config = ClientConfig::new(addr, UserId::new("alice")?, 7);
    config.tls = Some(tls);
    let uploader = Uploader::new(
        Arc::new(TokioNetwork),
        Arc::new(TokioClock::real()),
        config,
        Tracer::off(),
        None,
    );
    let payload = Payload::new(0x715, 3 * MIB + 17);
    let expected = payload.md5(1 << 20).hex();
    Ok((expected, uploader.upload(Arc::new(payload), None).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_client_stops_at_once_on_a_certificate_it_does_not_trust() -> TestResult {
    let tmp = TempDir::new("tls-client")?;
    let root = tmp.path();
    let (ca, other) = (TestCa::new(root, "good")?, TestCa::new(root, "other")?);
    let drive = DriveSettings::new("127.0.0.1:0", root.join("drive"));
    let cert = ca.server_cert(root, "serve", &["127.0.0.1"])?;
    let backend_tls = TlsServer::from_pem_files(&cert.cert, &cert.key)?;
    let stack = Stack::real_mode(&drive, |url| {
        let mut serve = ServeSettings::new("127.0.0.1:0", Profile::dev(), url);
        serve.tls = Some(backend_tls);
        serve
    })
    .await?;
    let started = Instant::now();
    let (_, refused) =
        tokio::time::timeout(REFUSAL_TIMEOUT, upload(&stack.backend, trusting(&other)?)).await??;
    match refused {
        Err(ClientError::Tls { addr, reason }) => {
            assert_eq!(addr, stack.backend);
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => return Err(format!("expected ClientError::Tls, got {other:?}").into()),
    }
    assert!(started.elapsed() < REFUSAL_TIMEOUT);

    let (expected, outcome) =
        tokio::time::timeout(PHASE_TIMEOUT, upload(&stack.backend, trusting(&ca)?)).await??;
    assert_eq!(outcome?.file.md5_checksum, Some(expected));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_serve_and_drive_all_over_tls_store_the_file_byte_identical() -> TestResult {
    let tmp = TempDir::new("tls-e2e")?;
    let root = tmp.path();
    let (ca, other) = (TestCa::new(root, "good")?, TestCa::new(root, "other")?);
    let drive_cert = ca.server_cert(root, "drive", &["localhost", "127.0.0.1"])?;
    let serve_cert = ca.server_cert(root, "serve", &["localhost", "127.0.0.1"])?;
    let source = root.join("source.bin");
    let source_digest = write_payload(&source, 0x715, FILE_SIZE_BYTES)?;
    let tokens = token_file(root, "tokens", &[(ALICE_TOKEN, "alice")])?;
    let drive_tokens = token_file(root, "drive-tokens", &[(DRIVE_TOKEN, "backend")])?;
    let (drive_token, alice_token) = (root.join("drive-token"), root.join("alice-token"));
    std::fs::write(&drive_token, DRIVE_TOKEN)?;
    std::fs::write(&alice_token, ALICE_TOKEN)?;
    let (drive_port, backend_port) = (free_port()?, free_port()?);
    let (drive_addr, backend_addr) = (
        format!("127.0.0.1:{drive_port}"),
        format!("127.0.0.1:{backend_port}"),
    );
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let drive_dir = root.join("drive");

    let mut drive = Proc::spawn(
        "drive",
        &[
            "drive",
            "--listen",
            &drive_addr,
            "--dir",
            &s(&drive_dir),
            "--tokens",
            &s(&drive_tokens),
            "--tls-cert",
            &s(&drive_cert.cert),
            "--tls-key",
            &s(&drive_cert.key),
        ],
        root,
        "info",
    )?;
    let mut backend = Proc::spawn(
        "serve",
        &[
            "serve",
            "--listen",
            &backend_addr,
            "--drive",
            &format!("https://{drive_addr}"),
            "--drive-ca-file",
            &s(&ca.ca_file),
            "--drive-token-file",
            &s(&drive_token),
            "--tokens",
            &s(&tokens),
            "--tls-cert",
            &s(&serve_cert.cert),
            "--tls-key",
            &s(&serve_cert.key),
        ],
        root,
        "info",
    )?;
    for (name, addr, proc) in [
        ("drive", &drive_addr, &drive),
        ("backend", &backend_addr, &backend),
    ] {
        assert!(
            wait_until(START_TIMEOUT, POLL, || accepts(addr)).await,
            "{name} did not start\n{}",
            proc.logs()
        );
    }
    // Plain HTTP to the TLS backend gets no HTTP answer.
    let plain = get(&backend_addr, "/healthz", &[]).await;
    assert!(
        !matches!(&plain, Ok(r) if r.status == 200),
        "plain HTTP answered"
    );

    // The backend's certificate names localhost and 127.0.0.1: the client
    // dials a name here, the backend an address.
    let server_url = format!("https://localhost:{backend_port}");
    let upload_args = |ca_file: &Path, state: &str| {
        vec![
            "upload".to_owned(),
            s(&source),
            "--server".to_owned(),
            server_url.clone(),
            "--ca-file".to_owned(),
            s(ca_file),
            "--token-file".to_owned(),
            s(&alice_token),
            "--state-dir".to_owned(),
            s(&root.join(state)),
        ]
    };
    let run_upload = |name: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(name, &args, root, "warn")
    };

    let mut refused = run_upload(
        "upload-other-ca",
        upload_args(&other.ca_file, "state-other"),
    )?;
    let status = refused.wait_exit(REFUSAL_TIMEOUT).await?;
    assert_eq!(status.code(), Some(1), "{}", refused.logs());
    let stderr = refused.stderr();
    assert!(
        stderr.contains(&format!("localhost:{backend_port}")) && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );

    let mut client = run_upload("upload", upload_args(&ca.ca_file, "state"))?;
    let status = client.wait_exit(PHASE_TIMEOUT).await?;
    assert!(status.success(), "upload failed\n{}", client.logs());
    assert!(client.stdout().contains(" == "), "{}", client.stdout());

    let stored = finished_files(&drive_dir)?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let stored_digest = file_digest(&stored[0])?;
    assert_eq!(
        (stored_digest.len_bytes(), stored_digest.hex()),
        (source_digest.len_bytes(), source_digest.hex()),
        "the drive's file differs from the source"
    );

    for proc in [&mut backend, &mut drive] {
        proc.signal("TERM")?;
        let status = proc.wait_exit(PHASE_TIMEOUT).await?;
        assert!(
            status.success(),
            "{} exited {status}\n{}",
            proc.name,
            proc.logs()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_off_and_frees_its_connection_slot() -> TestResult {
    let tmp = TempDir::new("tls-stall")?;
    let root = tmp.path();
    let ca = TestCa::new(root, "good")?;
    let cert = ca.server_cert(root, "drive", &["127.0.0.1"])?;

    // Server side: a peer that connects and says nothing is closed after
    // the handshake bound (real mode's header read timeout).
    let (addr, _drive) = tls_drive(&root.join("drive"), &cert, SHORT_HANDSHAKE).await?;
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await?;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(REFUSAL_TIMEOUT, silent.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= SHORT_HANDSHAKE - Duration::from_millis(50));

    // With one connection slot, a stalled handshake holds it only until
    // the bound: then a real client is served.
    let mut listener = upsim::env::Network::listen(&TokioNetwork, "127.0.0.1:0").await?;
    let one_slot_addr = listener.local_addr()?.to_string();
    let server = TlsServer::from_pem_files(&cert.cert, &cert.key)?;
    listener = server
        .with_handshake_timeout(SHORT_HANDSHAKE)
        .wrap(listener);
    let options = upsim::wire::ServeOptions {
        connections_max: Some(1),
        ..upsim::wire::ServeOptions::default()
    };
    let handler = Arc::new(|_request: http::Request<hyper::body::Incoming>| async {
        upsim::wire::json(http::StatusCode::OK, &serde_json::json!({ "ok": true }))
    });
    let _served = tokio::spawn(upsim::wire::serve_until(
        listener,
        handler,
        options,
        std::future::pending(),
    ));
    let _stalled = tokio::net::TcpStream::connect(&one_slot_addr).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let request = http::Request::get("/")
        .header(http::header::HOST, &one_slot_addr)
        .body(upsim::wire::FramesBody::empty())?;
    let tls = trusting(&ca)?;
    let reply = tokio::time::timeout(
        REFUSAL_TIMEOUT,
        upsim::wire::send(&TokioNetwork, &one_slot_addr, Some(&tls), request, 1024),
    )
    .await??;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= SHORT_HANDSHAKE - Duration::from_millis(100),
        "served after {:?}: the stalled handshake did not hold the slot",
        started.elapsed()
    );

    // Client side: a server that accepts and never answers the handshake
    // fails the client's handshake after its bound, as a connection error.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mute_addr = mute.local_addr()?.to_string();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = mute.accept().await {
            held.push(conn);
        }
    });
    let started = Instant::now();
    let stalled = initiate(
        &format!("https://{mute_addr}"),
        trusting(&ca)?.with_handshake_timeout(SHORT_HANDSHAKE),
    )
    .await;
    match stalled {
        Err(DriveError::Connect { addr, reason }) => {
            assert_eq!(addr, mute_addr);
            assert!(reason.contains("did not finish within 300 ms"), "{reason}");
        }
        other => return Err(format!("expected DriveError::Connect, got {other:?}").into()),
    }
    assert!(started.elapsed() < REFUSAL_TIMEOUT);
    Ok(())
}

#[tokio::test]
async fn unusable_certificate_and_key_files_are_refused_naming_the_file() -> TestResult {
    let tmp = TempDir::new("tls-files")?;
    let root = tmp.path();
    let ca = TestCa::new(root, "good")?;
    let one = ca.server_cert(root, "one", &["localhost"])?;
    let two = ca.server_cert(root, "two", &["localhost"])?;
    let missing = root.join("missing.pem");
    let garbage = root.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;

    let refused = TlsServer::from_pem_files(&missing, &one.key).err();
    assert!(
        matches!(&refused, Some(TlsConfigError::Unreadable { path, .. }) if path == &missing),
        "{refused:?}"
    );
    let refused = TlsServer::from_pem_files(&garbage, &one.key).err();
    assert!(
        matches!(&refused, Some(TlsConfigError::Invalid { path, .. }) if path == &garbage),
        "{refused:?}"
    );
    let refused = TlsServer::from_pem_files(&one.cert, &garbage).err();
    assert!(
        matches!(&refused, Some(TlsConfigError::Invalid { path, .. }) if path == &garbage),
        "{refused:?}"
    );
    // A key that is not the certificate's.
    let refused = TlsServer::from_pem_files(&one.cert, &two.key).err();
    assert!(
        matches!(&refused, Some(TlsConfigError::Mismatch { cert, key, .. }) if cert == &one.cert && key == &two.key),
        "{refused:?}"
    );
    let refused = TlsClient::new(Roots::CaFile(garbage.clone())).err();
    assert!(
        matches!(&refused, Some(TlsConfigError::Invalid { path, .. }) if path == &garbage),
        "{refused:?}"
    );

    // The commands refuse them before serving, with exit 2 and the path.
    let out = std::process::Command::new(UPSIM)
        .args(["drive", "--listen", "127.0.0.1:0", "--dir"])
        .arg(root.join("drive"))
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&one.key)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    let out = std::process::Command::new(UPSIM)
        .args(["serve", "--listen", "127.0.0.1:0", "--drive"])
        .arg("http://127.0.0.1:1")
        .arg("--drive-ca-file")
        .arg(&ca.ca_file)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    Ok(())
}
