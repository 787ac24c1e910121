//! `upsim upload`: the upload client ([`Uploader`]) on a real file.
//!
//! It shows bytes sent beside bytes committed on the drive, which it
//! learns from the backend's event stream (`GET /uploads/{id}/events`,
//! followed with `Last-Event-ID` across drops and backend restarts), with
//! the committed rate and ETA: bars on a terminal, plain lines elsewhere
//! (`upload_progress.rs`). It ends with one line naming the drive's
//! whole-file digest and the source file's, computed here (CRC-64/NVME
//! when the drive's file carries `crc64nvme`, else MD5, `md5Checksum`):
//! exit 0 only if they and the sizes agree.
//!
//! Interrupted (Ctrl-C, network loss, a server restart) and run again, it
//! resumes: the upload id is remembered in a [`ResumeState`] keyed by the
//! server and the file's path, size and mtime, and the backend says what it
//! already has. An upload the backend no longer knows (404) or that failed
//! there is forgotten and started once more from the beginning.
//!
//! Exit codes: 0 done and verified; 1 failed or checksum mismatch; 2 bad
//! arguments; 130 interrupted (run the same command again to resume).

use super::resume::{ResumeKey, ResumeState};
use super::upload_progress::{UploadDisplay, PLAIN_LINE_INTERVAL};
use super::{init_logging, outcome_err, runtime, RealError, ServerUrl};
use crate::checksum::{FileDigest, FileDigestKind, Md5Digest};
use crate::client::events::{FollowConfig, Seen};
use crate::client::{
    ClientAuth, ClientConfig, ClientError, Progress, ProgressFn, UploadOutcome, Uploader,
};
use crate::env::{Clock, Link, LinkRate, Network, ShapedNetwork, TokioClock, TokioNetwork};
use crate::outcome::{Outcome, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::payload::{ChunkSource, FileSource};
use crate::trace::Tracer;
use crate::units::human_bytes;
use crate::user::UserId;
use crate::wire::tls::TlsClient;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Exit code after Ctrl-C: 128 + SIGINT, as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Buffer for checksumming the source file.
const CHECKSUM_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// `upsim upload` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// The file to upload.
    pub file: PathBuf,
    /// The backend's URL, e.g. http://127.0.0.1:8080 or
    /// https://upload.example:8443.
    #[arg(long)]
    pub server: String,
    /// Trust only the CA certificates of this PEM file for an https://
    /// server (default: the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Chunks in flight at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    /// Bearer token (visible to other local users in the process list:
    /// prefer --token-file).
    #[arg(long, conflicts_with_all = ["token_file", "user"])]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, conflicts_with = "user")]
    pub token_file: Option<PathBuf>,
    /// Name the user in x-upsim-user instead of a token (a backend run
    /// without --tokens).
    #[arg(long)]
    pub user: Option<String>,
    /// Where uploads in progress are remembered (default
    /// $XDG_STATE_HOME/upsim/uploads or ~/.local/state/upsim/uploads).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Give up after this many seconds without progress.
    #[arg(long, default_value_t = 900)]
    pub stall_limit_s: u64,
    /// Send at most this many Mbit/s (keeps a shared uplink usable).
    #[arg(long)]
    pub limit_rate_mbit: Option<u64>,
    /// How often to ask the backend while its reorder window is full of
    /// chunks on their way to the drive, ms.
    #[arg(long, default_value_t = STATUS_POLL_DEFAULT.as_millis() as u64)]
    pub status_poll_ms: u64,
    /// Logging.
    #[command(flatten)]
    pub log: super::LogArgs,
}

/// Default `--status-poll-ms`. The library's default (1 s) suits simulated
/// home links; on a real link the window drains in milliseconds to
/// seconds, and a status query costs one small request, so asking ten
/// times a second keeps a small window busy (a 100 MB upload on the dev
/// profile has a one-chunk window).
pub const STATUS_POLL_DEFAULT: Duration = Duration::from_millis(100);

/// Reads chunks from the file and counts them as sent.
struct ProgressSource {
    file: FileSource,
    display: UploadDisplay,
}

impl ChunkSource for ProgressSource {
    fn size_bytes(&self) -> u64 {
        self.file.size_bytes()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_at(offset, buf)?;
        self.display.read(buf.len() as u64);
        Ok(())
    }

    fn name(&self) -> String {
        self.file.name()
    }
}

/// The source's digests, both kinds the drive's file may carry, from one
/// read of the file.
struct SourceDigests {
    /// `crc64nvme`, hex.
    crc64nvme: String,
    /// MD5 (`md5Checksum`), hex.
    md5: String,
    /// The bytes they cover.
    len_bytes: u64,
}

impl SourceDigests {
    /// Reads `path` once through both digests.
    fn of(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut crc = FileDigest::default();
        let mut md5 = Md5Digest::default();
        let mut buf = vec![0u8; CHECKSUM_BUFFER_BYTES];
        loop {
            let got = file.read(&mut buf)?;
            if got == 0 {
                break;
            }
            crc.update(&buf[..got]);
            md5.update(&buf[..got]);
        }
        debug_assert_eq!(crc.len_bytes(), md5.len_bytes());
        Ok(Self {
            crc64nvme: crc.hex(),
            md5: md5.hex(),
            len_bytes: md5.len_bytes(),
        })
    }

    /// The digest of `kind`.
    fn hex(&self, kind: FileDigestKind) -> &str {
        match kind {
            FileDigestKind::Crc64Nvme => &self.crc64nvme,
            FileDigestKind::Md5 => &self.md5,
        }
    }
}

/// The source's digests, computed on a blocking thread while the upload
/// runs (a second read of the file, overlapping the transfer instead of
/// following it: on loopback it was a fifth of an upload's wall time).
type SourceDigestTask = tokio::task::JoinHandle<std::io::Result<SourceDigests>>;

fn client_auth(args: &UploadArgs) -> Result<ClientAuth, RealError> {
    match (&args.token, &args.token_file, &args.user) {
        (Some(token), None, None) => Ok(ClientAuth::Bearer(token.trim().to_owned())),
        (None, Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                RealError::Usage(format!("cannot read token file {}: {e}", path.display()))
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(RealError::Usage(format!(
                    "token file {} is empty",
                    path.display()
                )));
            }
            Ok(ClientAuth::Bearer(token.to_owned()))
        }
        (None, None, Some(user)) => UserId::new(user.clone())
            .map(ClientAuth::UserHeader)
            .map_err(|e| RealError::Usage(format!("--user: {e}"))),
        _ => Err(RealError::Usage(
            "give exactly one of --token, --token-file or --user".into(),
        )),
    }
}

/// Why a run did not end in a verified upload.
enum Failure {
    Usage(RealError),
    Failed(String),
    Interrupted(Option<String>),
}

/// `upsim upload FILE --server URL`.
pub fn upload_command(args: &UploadArgs) -> Outcome {
    init_logging("warn", args.log.log_format);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return outcome_err(EXIT_FAILED, e),
    };
    match rt.block_on(run(args)) {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            code: EXIT_OK,
        },
        Err(Failure::Usage(e)) => outcome_err(EXIT_USAGE, e),
        Err(Failure::Failed(message)) => outcome_err(EXIT_FAILED, message),
        Err(Failure::Interrupted(id)) => outcome_err(
            EXIT_INTERRUPTED,
            match id {
                Some(id) => {
                    format!("interrupted: run the same command again to resume upload {id}")
                }
                None => "interrupted before the upload was created".to_owned(),
            },
        ),
    }
}

async fn run(args: &UploadArgs) -> Result<String, Failure> {
    let started = Instant::now();
    let server = ServerUrl::parse(&args.server).map_err(Failure::Usage)?;
    let tls = server
        .tls_client(args.ca_file.as_deref(), "--ca-file")
        .map_err(Failure::Usage)?;
    let auth = client_auth(args).map_err(Failure::Usage)?;
    let file = FileSource::open(&args.file).map_err(|e| {
        Failure::Usage(RealError::Usage(format!(
            "cannot open {}: {e}",
            args.file.display()
        )))
    })?;
    let size_bytes = file.size_bytes();
    let source_digests: SourceDigestTask = {
        let path = args.file.clone();
        tokio::task::spawn_blocking(move || SourceDigests::of(&path))
    };
    let key =
        ResumeKey::of(&args.server, &args.file).map_err(|e| Failure::Failed(e.to_string()))?;
    let state = ResumeState::new(
        args.state_dir
            .clone()
            .unwrap_or_else(ResumeState::default_dir),
    );
    let display = UploadDisplay::new(size_bytes);
    let (source, progress) = with_progress(file, &display);
    let uploader = uploader(args, server.authority, tls, auth, progress)?;
    let ticker = {
        let display = display.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PLAIN_LINE_INTERVAL / 4);
            loop {
                every.tick().await;
                display.tick();
            }
        })
    };

    let current_id: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let upload = upload_resuming(&uploader, &source, &key, &state, &display, &current_id);
    let outcome = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {
            ticker.abort();
            display.finish("interrupted", false);
            let id = current_id.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return Err(Failure::Interrupted(id));
        }
        outcome = upload => outcome,
    };
    ticker.abort();
    let outcome = outcome.map_err(|e| {
        display.finish("failed", false);
        Failure::Failed(e)
    })?;
    display.committed(outcome.file.size_bytes);
    display.finish("on the drive", true);
    if let Err(e) = state.forget(&key) {
        tracing::warn!(error = %e, "could not forget the finished upload");
    }
    verify(args, &outcome, (size_bytes, source_digests), started).await
}

/// The file as a chunk source that counts what it reads as sent, and the
/// client's status callback, which reports the committed offset too (the
/// event stream reports it sooner; a status fills in while it is down).
fn with_progress(file: FileSource, display: &UploadDisplay) -> (Arc<dyn ChunkSource>, ProgressFn) {
    let source: Arc<dyn ChunkSource> = Arc::new(ProgressSource {
        file,
        display: display.clone(),
    });
    let display = display.clone();
    let progress = Arc::new(move |p: Progress| display.committed(p.committed_bytes));
    (source, progress)
}

/// Follows upload `id`'s event stream in a task of its own, reporting the
/// committed offset to `display`; the task ends with the upload (or when
/// aborted). A backend without the stream (404, an older one) leaves the
/// status replies to report.
fn follow_committed(
    uploader: &Uploader,
    id: &str,
    display: &UploadDisplay,
) -> tokio::task::JoinHandle<()> {
    let follower = uploader.events(id, FollowConfig::default());
    let on_seen = {
        let display = display.clone();
        Arc::new(move |seen: &Seen| match seen {
            Seen::Event { state, .. } => display.committed(state.committed_bytes),
            Seen::Dropped { reason } => {
                tracing::info!(%reason, "progress stream dropped; reopening it");
            }
            Seen::Opened { last_event_id } => {
                let resuming_from = last_event_id.map(|id| id.to_string());
                tracing::info!(?resuming_from, "progress stream opened");
            }
            Seen::KeepAlive => {}
        })
    };
    tokio::spawn(async move {
        if let Err(e) = follower.follow(on_seen).await {
            tracing::warn!(error = %e, "no progress stream: committed bytes come from status replies");
        }
    })
}

/// The client, on real time and TCP (shaped if `--limit-rate-mbit`).
fn uploader(
    args: &UploadArgs,
    server_addr: String,
    tls: Option<TlsClient>,
    auth: ClientAuth,
    progress: ProgressFn,
) -> Result<Uploader, Failure> {
    // Jitter seed: any value; the OS's keeps clients from retrying in step.
    let seed = crate::ids::os_random_id()
        .ok()
        .and_then(|id| u64::from_str_radix(&id[..16], 16).ok())
        .unwrap_or(0);
    let mut config = ClientConfig::with_auth(server_addr, auth, seed);
    config.tls = tls;
    config.parallel = args.parallel.max(1);
    config.stall_limit = Duration::from_secs(args.stall_limit_s.max(1));
    config.status_poll = Duration::from_millis(args.status_poll_ms.max(1));
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
    let net: Arc<dyn Network> = match args.limit_rate_mbit {
        None => Arc::new(TokioNetwork),
        // The simulations' link shaper, on real time.
        Some(mbit) => {
            let rate = LinkRate::mbit_per_second(mbit)
                .map_err(|e| Failure::Usage(RealError::Usage(format!("--limit-rate-mbit: {e}"))))?;
            Arc::new(ShapedNetwork::new(
                Arc::new(TokioNetwork),
                Link::new(clock.clone(), rate),
            ))
        }
    };
    Ok(Uploader::new(
        net,
        clock,
        config,
        Tracer::off(),
        Some(progress),
    ))
}

/// Compares the source's digests (read while the upload ran) with what the
/// drive holds: the one line printed on success, or a mismatch as the
/// failure.
async fn verify(
    args: &UploadArgs,
    outcome: &UploadOutcome,
    (size_bytes, source_digests): (u64, SourceDigestTask),
    started: Instant,
) -> Result<String, Failure> {
    let file = &outcome.file;
    // The digest the backend checked: its `crc64nvme`, or Drive's MD5.
    let (kind, drive_digest) = match (&file.crc64nvme, &file.md5_checksum) {
        (Some(crc), _) => (FileDigestKind::Crc64Nvme, crc.as_str()),
        (None, Some(md5)) => (FileDigestKind::Md5, md5.as_str()),
        (None, None) => (FileDigestKind::Crc64Nvme, "none"),
    };
    let source = source_digests
        .await
        .map_err(|e| Failure::Failed(format!("checksumming the source: {e}")))?
        .map_err(|e| Failure::Failed(format!("checksumming {}: {e}", args.file.display())))?;
    let (source_hex, source_len_bytes) = (source.hex(kind), source.len_bytes);
    let elapsed_s = started.elapsed().as_secs_f64();
    let same = drive_digest == source_hex && file.size_bytes == source_len_bytes;
    let line = format!(
        "uploaded {} ({} bytes, {}) as upload {}: drive {} {} {} source {} ({} bytes); {} chunk requests, {} retried; {:.1} s, {}/s\n",
        args.file.display(),
        size_bytes,
        human_bytes(size_bytes),
        outcome.upload_id,
        kind.field_name(),
        drive_digest,
        if same { "==" } else { "!=" },
        source_hex,
        source_len_bytes,
        outcome.chunks_sent,
        outcome.chunk_failures,
        elapsed_s,
        human_bytes((outcome.sent_bytes as f64 / elapsed_s.max(1e-3)) as u64),
    );
    if same {
        Ok(line)
    } else {
        Err(Failure::Failed(format!("CHECKSUM MISMATCH: {line}")))
    }
}

/// Resumes the remembered upload of `key`, or creates one (remembering it
/// before any chunk is sent). An upload the backend no longer has, or that
/// failed there, is forgotten and replaced once.
async fn upload_resuming(
    uploader: &Uploader,
    source: &Arc<dyn ChunkSource>,
    key: &ResumeKey,
    state: &ResumeState,
    display: &UploadDisplay,
    current_id: &Mutex<Option<String>>,
) -> Result<UploadOutcome, String> {
    let mut remembered = state.load(key).map_err(|e| e.to_string())?;
    for _ in 0..2 {
        let resuming = remembered.is_some();
        let id = match remembered.take() {
            Some(id) => {
                display.say(&format!("resuming upload {id}"));
                id
            }
            None => {
                let id = uploader
                    .create(source.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                state.save(key, &id).map_err(|e| e.to_string())?;
                display.say(&format!("created upload {id}"));
                id
            }
        };
        *current_id.lock().unwrap_or_else(PoisonError::into_inner) = Some(id.clone());
        let following = follow_committed(uploader, &id, display);
        let uploaded = uploader.upload(source.clone(), Some(id.clone())).await;
        following.abort();
        match uploaded {
            Ok(outcome) => return Ok(outcome),
            Err(
                e @ (ClientError::Refused { status: 404, .. } | ClientError::UploadFailed { .. }),
            ) if resuming => {
                display.say(&format!(
                    "upload {id} cannot be resumed ({e}); starting over"
                ));
                state.forget(key).map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(format!("upload {id}: {e}")),
        }
    }
    Err("the new upload could not be resumed either".to_owned())
}
