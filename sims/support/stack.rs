//! A backend and a drive in process on 127.0.0.1, in either of two
//! wirings, and the backend's chunk API as requests (for tables of raw
//! cases) and as calls.

use super::files::{files_fingerprint, FileFingerprint};
use super::http::{raw_exchange, request, send, Header, RawReply, REPLY_TIMEOUT};
use super::TestResult;
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;
use upsim::admission::Admitter;
use upsim::auth::TokenTable;
use upsim::backend::{Backend, BackendConfig, BackendEnv, MemoryStore};
use upsim::checksum::{crc32c, crc32c_hex, FileDigestKind};
use upsim::chunk_api::CHECKSUM_HEADER;
use upsim::drive::{DigestStore, DriveConfig, DriveControl, DriveServer};
use upsim::env::{Clock, MemorySnapshot, Network, ScriptedMemory, TokioClock, TokioNetwork};
use upsim::profile::Profile;
use upsim::real::{bind_backend, bind_drive, DriveSettings, ServeSettings};
use upsim::trace::Tracer;
use upsim::user::{BadUserId, UserId};

/// A backend and its drive, serving on loopback until dropped.
pub struct Stack {
    /// The backend's address.
    pub backend: String,
    /// The drive's address.
    pub drive: String,
    /// The drive's fault controls (in-memory wiring only).
    pub drive_control: Option<DriveControl>,
    /// Where the servers store files (none in memory).
    stored_dirs: Vec<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl Stack {
    /// The simulation's wiring on real TCP: admission on a scripted
    /// `memory` snapshot, upload records in memory, a drive that keeps
    /// only digests, and no credentials (the [`user`](super::user) header
    /// names the user).
    pub async fn in_memory(profile: Profile, memory: MemorySnapshot) -> TestResult<Self> {
        Self::in_memory_checking(profile, memory, FileDigestKind::Crc64Nvme).await
    }

    /// [`in_memory`](Self::in_memory), the backend checking the drive's
    /// files with digest `file_digest`.
    pub async fn in_memory_checking(
        profile: Profile,
        memory: MemorySnapshot,
        file_digest: FileDigestKind,
    ) -> TestResult<Self> {
        Self::in_memory_configured(profile, memory, |config| config.file_digest = file_digest).await
    }

    /// [`in_memory`](Self::in_memory), the backend's configuration changed
    /// by `configure` first.
    pub async fn in_memory_configured(
        profile: Profile,
        memory: MemorySnapshot,
        configure: impl FnOnce(&mut BackendConfig),
    ) -> TestResult<Self> {
        let net: Arc<dyn Network> = Arc::new(TokioNetwork);
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::real());
        let drive_listener = net.listen("127.0.0.1:0").await?;
        let drive = drive_listener.local_addr()?.to_string();
        let config = DriveConfig {
            public_base_url: format!("http://{drive}"),
            ..DriveConfig::default()
        };
        let server = DriveServer::new(config, clock.clone(), Arc::new(DigestStore));
        let drive_control = Some(server.control());
        let drive_task = tokio::spawn(async move {
            let _ = server.serve(drive_listener).await;
        });
        let memory = Arc::new(ScriptedMemory::new(clock.clone(), memory));
        let admitter = Admitter::new(profile.clone(), clock.clone(), memory);
        let mut config = BackendConfig::new(profile, format!("http://{drive}"), 1);
        configure(&mut config);
        let backend = Backend::new(
            config,
            BackendEnv {
                clock,
                drive_net: net.clone(),
                admission: Arc::new(admitter),
                store: Arc::new(MemoryStore::default()),
                tracer: Tracer::off(),
            },
        );
        let listener = net.listen("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let backend_task = tokio::spawn(async move {
            let _ = backend.run(listener).await;
        });
        Ok(Self {
            backend: addr,
            drive,
            drive_control,
            stored_dirs: Vec::new(),
            tasks: vec![drive_task, backend_task],
        })
    }

    /// The wiring of `upsim drive` and `upsim serve` (`bind_drive`,
    /// `bind_backend`), in process: `serve` is given the drive's URL and
    /// returns the backend's settings.
    pub async fn real_mode(
        drive: &DriveSettings,
        serve: impl FnOnce(String) -> ServeSettings,
    ) -> TestResult<Self> {
        let bound_drive = bind_drive(drive).await?;
        let drive_addr = bound_drive.addr.to_string();
        let drive_task = tokio::spawn(async move {
            let _ = bound_drive.server.serve(bound_drive.listener).await;
        });
        let serve = serve(format!("http://{drive_addr}"));
        let bound = bind_backend(&serve).await?;
        let backend_task = tokio::spawn(async move {
            let _ = bound
                .backend
                .run_until(bound.listener, std::future::pending())
                .await;
        });
        let mut stored_dirs = vec![
            drive.dir.clone(),
            drive.dir.join(".partial"),
            drive.dir.join(".sessions"),
        ];
        stored_dirs.extend(serve.state_dir.clone());
        Ok(Self {
            backend: bound.addr.to_string(),
            drive: drive_addr,
            drive_control: None,
            stored_dirs,
            tasks: vec![drive_task, backend_task],
        })
    }

    /// [`real_mode`](Self::real_mode) with bearer tokens everywhere, as a
    /// deployment runs it: the drive (`drive`, its token table set by the
    /// caller) accepts `drive_token`, which the backend reads from
    /// `root/drive-token`; the backend keeps its records under
    /// `root/state` and accepts `users` ((token, user) pairs); `serve`
    /// adjusts the rest of its settings.
    pub async fn real_mode_with_tokens(
        root: &Path,
        drive: &DriveSettings,
        drive_token: &str,
        users: &[(&str, &str)],
        profile: Profile,
        serve: impl FnOnce(&mut ServeSettings),
    ) -> TestResult<Self> {
        let drive_token_file = root.join("drive-token");
        std::fs::write(&drive_token_file, drive_token)?;
        let tokens = token_table(users)?;
        Self::real_mode(drive, |drive_url| {
            let mut settings = ServeSettings::new("127.0.0.1:0", profile, drive_url);
            settings.state_dir = Some(root.join("state"));
            settings.tokens = Some(tokens);
            settings.drive_token_file = Some(drive_token_file);
            serve(&mut settings);
            settings
        })
        .await
    }

    /// Stops the drive (both wirings spawn it first): its listener closes,
    /// so the backend's next connection to it is refused.
    pub async fn stop_drive(&mut self) {
        let drive = self.tasks.remove(0);
        drive.abort();
        // Cancelled: the task and its listener are gone once this returns.
        let _ = drive.await;
    }

    /// Every file the servers store: the drive's finished, partial and
    /// session files and the backend's records.
    pub fn stored_files(&self) -> TestResult<Vec<FileFingerprint>> {
        files_fingerprint(&self.stored_dirs)
    }

    /// One request to the backend.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[Header],
        body: &[u8],
    ) -> TestResult<RawReply> {
        send(&self.backend, method, path, headers, body).await
    }

    /// `POST /uploads` of a file of `size` bytes, with `auth`.
    pub async fn create(&self, auth: &[Header], size: u64) -> TestResult<RawReply> {
        self.call("POST", "/uploads", auth, &create_body(size))
            .await
    }

    /// `PUT /uploads/ID/chunks/INDEX`, with `auth` and `extra` headers.
    pub async fn put_chunk(
        &self,
        auth: &[Header],
        id: &str,
        index: impl Display,
        extra: &[Header],
        body: &[u8],
    ) -> TestResult<RawReply> {
        let index = index.to_string();
        let bytes = chunk_request(&self.backend, auth, id, &index, extra, body);
        raw_exchange(&self.backend, &bytes, REPLY_TIMEOUT).await
    }

    /// `GET /uploads/ID`, which must answer 200, as `T`.
    pub async fn status<T: DeserializeOwned>(&self, auth: &[Header], id: &str) -> TestResult<T> {
        let reply = self
            .call("GET", &format!("/uploads/{id}"), auth, b"")
            .await?;
        assert_eq!(reply.status, 200, "{}", reply.text());
        Ok(serde_json::from_slice(&reply.body)?)
    }
}

/// A create's body: a file of `size` bytes.
pub fn create_body(size: u64) -> Vec<u8> {
    serde_json::json!({ "file_name": "f.bin", "file_size_bytes": size })
        .to_string()
        .into_bytes()
}

/// The raw request of [`Stack::put_chunk`], for tables of cases.
pub fn chunk_request(
    addr: &str,
    auth: &[Header],
    id: &str,
    index: &str,
    extra: &[Header],
    body: &[u8],
) -> Vec<u8> {
    let mut headers = auth.to_vec();
    headers.extend_from_slice(extra);
    let path = format!("/uploads/{id}/chunks/{index}");
    request("PUT", addr, &path, &headers, body)
}

/// The `upload_id` of a create's reply.
pub fn upload_id(reply: &RawReply) -> TestResult<String> {
    let value: serde_json::Value = serde_json::from_slice(&reply.body)?;
    Ok(value["upload_id"]
        .as_str()
        .ok_or_else(|| format!("no upload_id in {}", reply.text()))?
        .to_owned())
}

/// The checksum header of a chunk of `bytes`.
pub fn checksum(bytes: &[u8]) -> Header {
    (CHECKSUM_HEADER, crc32c_hex(crc32c(bytes)))
}

/// A token table of (token, user) pairs.
pub fn token_table(pairs: &[(&str, &str)]) -> TestResult<TokenTable> {
    let pairs: Vec<(String, UserId)> = pairs
        .iter()
        .map(|(t, u)| Ok((t.to_string(), UserId::new(*u)?)))
        .collect::<Result<_, BadUserId>>()?;
    Ok(TokenTable::from_pairs(pairs)?)
}
