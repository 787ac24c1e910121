//! OAuth in real mode: `upsim drive --oauth-clients` issues access tokens
//! that live 2 s, `upsim serve --drive-credentials` fetches them with its
//! refresh token, and `upsim upload` sends a file slowly enough (about
//! 4 s) that the backend must refresh mid-upload. The drive's copy is the
//! source, byte for byte; no secret, refresh token or access token reaches
//! any process's log.

use crate::support::{
    file_digest, finished_files, free_port, get, wait_until, write_payload, Proc, TempDir,
    TestResult,
};
use std::path::Path;
use std::time::Duration;
use upsim::units::MIB;

const FILE_SIZE_BYTES: u64 = 48 * MIB;
const CLIENT_RATE_MBIT: &str = "100";
const SECRET: &str = "oauth-client-secret-never-logged";
const REFRESH: &str = "1//refresh-token-never-logged";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);

async fn accepts(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

async fn healthy(addr: &str) -> bool {
    get(addr, "/healthz", &[])
        .await
        .is_ok_and(|r| r.status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refreshes_its_drive_token_mid_upload_and_never_logs_it() -> TestResult {
    let tmp = TempDir::new("oauth")?;
    let root = tmp.path();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let source = root.join("source.bin");
    let source_digest = write_payload(&source, 0x0a, FILE_SIZE_BYTES)?;
    let (drive_addr, backend_addr) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let clients = root.join("oauth-clients.json");
    std::fs::write(
        &clients,
        serde_json::json!({ "access_token_lifetime_s": 2, "clients": [{
            "client_id": "upsim-backend", "client_secret": SECRET,
            "refresh_token": REFRESH, "user": "backend" }] })
        .to_string(),
    )?;
    let credentials = root.join("credentials.json");
    std::fs::write(
        &credentials,
        serde_json::json!({ "type": "authorized_user", "client_id": "upsim-backend",
            "client_secret": SECRET, "refresh_token": REFRESH,
            "token_uri": format!("http://{drive_addr}/token") })
        .to_string(),
    )?;
    let drive_dir = root.join("drive");
    let drive_args = ["drive", "--listen", &drive_addr, "--dir", &s(&drive_dir)];
    let mut drive = Proc::spawn(
        "drive",
        &[&drive_args[..], &["--oauth-clients", &s(&clients)]].concat(),
        root,
        "info",
    )?;
    assert!(
        wait_until(START_TIMEOUT, POLL, || accepts(&drive_addr)).await,
        "{}",
        drive.logs()
    );
    let drive_url = format!("http://{drive_addr}");
    let serve_args = [
        "serve",
        "--listen",
        &backend_addr,
        "--profile",
        "dev",
        "--drive",
        &drive_url,
        "--drive-credentials",
        &s(&credentials),
    ];
    let mut backend = Proc::spawn("serve", &serve_args, root, "info")?;
    assert!(
        wait_until(START_TIMEOUT, POLL, || healthy(&backend_addr)).await,
        "{}",
        backend.logs()
    );
    let backend_url = format!("http://{backend_addr}");
    let upload_args = [
        "upload",
        &s(&source),
        "--server",
        &backend_url,
        "--user",
        "alice",
        "--parallel",
        "4",
        "--limit-rate-mbit",
        CLIENT_RATE_MBIT,
    ];
    let mut client = Proc::spawn("upload", &upload_args, root, "info")?;
    let status = client.wait_exit(UPLOAD_TIMEOUT).await?;
    assert!(
        status.success(),
        "{}\n{}\n{}",
        client.logs(),
        backend.logs(),
        drive.logs()
    );

    let stored = finished_files(&drive_dir)?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(file_digest(&stored[0])?.hex(), source_digest.hex());
    let issued = drive.logs().matches("access token issued").count();
    assert!(
        issued >= 2,
        "one token for a 4 s upload with 2 s tokens:\n{}",
        drive.logs()
    );
    backend.signal("TERM")?;
    assert!(backend.wait_exit(Duration::from_secs(30)).await?.success());
    drive.signal("TERM")?;
    assert!(drive.wait_exit(Duration::from_secs(30)).await?.success());
    for (name, logs) in [
        ("drive", drive.logs()),
        ("serve", backend.logs()),
        ("upload", client.logs()),
    ] {
        for secret in [SECRET, REFRESH, "ya29."] {
            assert!(!logs.contains(secret), "{name} logged {secret}:\n{logs}");
        }
    }
    eprintln!(
        "real_oauth: {issued} access tokens issued for one {} MiB upload",
        FILE_SIZE_BYTES / MIB
    );
    Ok(())
}
