//! OAuth in real mode: `upsim drive --oauth-clients` issues access tokens
//! that live 2 s, `upsim serve --drive-credentials` fetches them with its
//! refresh token, and `upsim upload` sends a file slowly enough (about
//! 4 s) that the backend must refresh mid-upload. The drive's copy is the
//! source, byte for byte; no secret, refresh token or access token reaches
//! any process's log.

use crate::support::{
    file_digest, finished_files, pair_addrs, write_payload, Proc, RealPair, TempDir, TestResult,
};
use std::path::Path;
use std::time::Duration;
use upsim::units::MIB;

const FILE_SIZE_BYTES: u64 = 48 * MIB;
const CLIENT_RATE_MBIT: &str = "100";
const SECRET: &str = "oauth-client-secret-never-logged";
const REFRESH: &str = "1//refresh-token-never-logged";
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_refreshes_its_drive_token_mid_upload_and_never_logs_it() -> TestResult {
    let tmp = TempDir::new("oauth")?;
    let root = tmp.path();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let source = root.join("source.bin");
    let source_digest = write_payload(&source, 0x0a, FILE_SIZE_BYTES)?;
    let (drive_addr, backend_addr) = pair_addrs()?;
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
    let (clients, credentials) = (s(&clients), s(&credentials));
    let mut pair = RealPair::start(
        root,
        (drive_addr, backend_addr.clone()),
        &["--oauth-clients", &clients],
        &["--drive-credentials", &credentials],
        "info",
    )
    .await?;
    let drive_dir = root.join("drive");
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
        pair.backend.logs(),
        pair.drive.logs()
    );

    let stored = finished_files(&drive_dir)?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(file_digest(&stored[0])?.hex(), source_digest.hex());
    let issued = pair.drive.logs().matches("access token issued").count();
    assert!(
        issued >= 2,
        "one token for a 4 s upload with 2 s tokens:\n{}",
        pair.drive.logs()
    );
    pair.stop().await?;
    for (name, logs) in [
        ("drive", pair.drive.logs()),
        ("serve", pair.backend.logs()),
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
