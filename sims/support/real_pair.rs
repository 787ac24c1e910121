//! `upsim drive` and `upsim serve` as two processes on loopback, started
//! and answering: what the real-mode tests that need nothing unusual of
//! the start-up share.

use super::http::get;
use super::process::{free_port, wait_until, Proc};
use super::TestResult;
use std::path::Path;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// A drive and a backend (dev profile) using it.
pub struct RealPair {
    pub drive: Proc,
    pub backend: Proc,
    pub backend_addr: String,
    /// The drive's URL, as the backend is given it.
    drive_url: String,
}

/// Two free loopback addresses: the drive's and the backend's (known
/// before the start, for files that must name them).
pub fn pair_addrs() -> TestResult<(String, String)> {
    Ok((
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    ))
}

impl RealPair {
    /// Starts both in `root` on `addrs`, the drive with its directory at
    /// `root/drive` and `drive_extra` flags, the backend on
    /// `http://DRIVE` with `serve_extra`; returns once the drive accepts
    /// and the backend's `/healthz` answers 200.
    pub async fn start(
        root: &Path,
        (drive_addr, backend_addr): (String, String),
        drive_extra: &[&str],
        serve_extra: &[&str],
        rust_log: &str,
    ) -> TestResult<Self> {
        let dir = root.join("drive").to_string_lossy().into_owned();
        let drive_args = ["drive", "--listen", &drive_addr, "--dir", &dir];
        let drive = Proc::spawn(
            "drive",
            &[&drive_args[..], drive_extra].concat(),
            root,
            rust_log,
        )?;
        let accepts = || async { tokio::net::TcpStream::connect(&drive_addr).await.is_ok() };
        assert!(
            wait_until(START_TIMEOUT, POLL, accepts).await,
            "{}",
            drive.logs()
        );
        let drive_url = format!("http://{drive_addr}");
        let backend = spawn_backend(root, &backend_addr, &drive_url, serve_extra, rust_log).await?;
        Ok(Self {
            drive,
            backend,
            backend_addr,
            drive_url,
        })
    }

    /// Kills the backend outright (SIGKILL, nothing drained) and starts it
    /// again on the same address with `serve_extra` (as given to
    /// [`start`](Self::start)); returns once `/healthz` answers 200.
    pub async fn restart_backend(
        &mut self,
        root: &Path,
        serve_extra: &[&str],
        rust_log: &str,
    ) -> TestResult {
        self.backend.signal("KILL")?;
        let status = self.backend.wait_exit(Duration::from_secs(10)).await?;
        assert!(!status.success(), "SIGKILL ends with a signal");
        self.backend = spawn_backend(
            root,
            &self.backend_addr,
            &self.drive_url,
            serve_extra,
            rust_log,
        )
        .await?;
        Ok(())
    }

    /// SIGTERM to both; each must exit 0.
    pub async fn stop(&mut self) -> TestResult {
        for proc in [&mut self.backend, &mut self.drive] {
            proc.signal("TERM")?;
            let status = proc.wait_exit(Duration::from_secs(30)).await?;
            assert!(status.success(), "{}", proc.logs());
        }
        Ok(())
    }
}

/// `upsim serve` on `backend_addr` with the dev profile, the drive at
/// `drive_url` and `serve_extra`; returns once `/healthz` answers 200.
async fn spawn_backend(
    root: &Path,
    backend_addr: &str,
    drive_url: &str,
    serve_extra: &[&str],
    rust_log: &str,
) -> TestResult<Proc> {
    let serve_args = [
        "serve",
        "--listen",
        backend_addr,
        "--profile",
        "dev",
        "--drive",
        drive_url,
    ];
    let backend = Proc::spawn(
        "serve",
        &[&serve_args[..], serve_extra].concat(),
        root,
        rust_log,
    )?;
    let healthy = || async {
        get(backend_addr, "/healthz", &[])
            .await
            .is_ok_and(|r| r.status == 200)
    };
    assert!(
        wait_until(START_TIMEOUT, POLL, healthy).await,
        "{}",
        backend.logs()
    );
    Ok(backend)
}
