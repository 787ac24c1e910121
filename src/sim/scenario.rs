//! Scenarios: everything a simulated run needs, as serde data.
//!
//! A scenario is the whole world: the profile, the machine's memory, the
//! files and their users, the links, and an explicit fault schedule. One
//! seed drives every random choice made while running it (turmoil's
//! network, ids, jitter, payload content), so a scenario and its seed
//! replay exactly.
//!
//! The built-in scenarios (`reference`, `smoke`, …) live in
//! [`builtin`](super::builtin).

use crate::buggify::SiteConfig;
use crate::drive::protocol::DriveReason;
use crate::env::MemorySnapshot;
use crate::profile::Profile;
use crate::tus::ChecksumAlgorithm;
use crate::user::UserId;
use serde::{Deserialize, Serialize};

/// One file to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Whose it is.
    pub user: UserId,
    /// Its size.
    pub size_bytes: u64,
    /// How its client uploads it. Default (and left out of the JSON):
    /// [`Protocol::Chunks`], so scenarios written before tus read and
    /// print as they did.
    #[serde(default, skip_serializing_if = "Protocol::is_chunks")]
    pub protocol: Protocol,
}

impl FileSpec {
    /// A file uploaded through the chunk API.
    pub fn chunks(user: UserId, size_bytes: u64) -> Self {
        Self {
            user,
            size_bytes,
            protocol: Protocol::Chunks,
        }
    }
}

/// Which client kind uploads a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Protocol {
    /// The chunk API's client (`client::Uploader`): chunks in parallel.
    #[default]
    Chunks,
    /// A tus 1.0.0 client (`client::tus::TusUploader`) at `/files/`: one
    /// PATCH at a time of `patch_bytes`, resumed by HEAD.
    Tus {
        /// Bytes per PATCH (the last one may be shorter); > 0.
        patch_bytes: u64,
        /// `Upload-Checksum` on every PATCH in this algorithm, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<ChecksumAlgorithm>,
    },
}

impl Protocol {
    /// Whether this is the chunk API (the default).
    pub fn is_chunks(&self) -> bool {
        *self == Self::Chunks
    }
}

/// The links between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// Each client's uplink to the backend. Reference: 100 Mbit/s (home
    /// fibre).
    pub client_uplink_mbit: u64,
    /// One-way latency client ↔ backend. Reference: 20 ms.
    pub client_latency_ms: u64,
    /// The backend's link to the drive. Reference: 1 000 Mbit/s.
    pub drive_link_mbit: u64,
    /// One-way latency backend ↔ drive. Reference: 2 ms.
    pub drive_latency_ms: u64,
}

/// Something going wrong, at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Clients and backend cannot reach each other for a while.
    Partition {
        /// How long.
        duration_ms: u64,
    },
    /// The backend crashes and restarts after a while.
    BackendCrash {
        /// How long it stays down.
        down_ms: u64,
    },
    /// The drive answers the next piece PUTs with an error status.
    DriveErrors {
        /// The status (500, 503, 429, 403, 410, 400…).
        status: u16,
        /// How many PUTs.
        count: u32,
        /// Drive's reason in the error body; absent: the status's default
        /// ([`DriveReason::default_for`]). A 403 means "slow down" with
        /// `userRateLimitExceeded`/`rateLimitExceeded` and "never" with
        /// `storageQuotaExceeded`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<DriveReason>,
    },
    /// Every unfinished drive session expires (404 from now on).
    DriveSessionExpiry,
    /// Every access token the drive issued expires now (with
    /// [`Scenario::drive_oauth`]; nothing otherwise): the backend's next
    /// request is answered 401, and it refreshes its token.
    DriveTokenExpiry,
    /// The drive keeps only part of the next piece (a short `308`).
    DriveShortPiece {
        /// Bytes kept (rounded down to 256 KiB by the drive).
        keep_bytes: u64,
    },
    /// The machine's available memory drops for a while.
    MemoryPressure {
        /// Available memory during the spike.
        available_bytes: u64,
        /// How long.
        duration_ms: u64,
    },
}

impl Fault {
    /// A short stable name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Partition { .. } => "partition",
            Self::BackendCrash { .. } => "backend_crash",
            Self::DriveErrors { .. } => "drive_errors",
            Self::DriveSessionExpiry => "drive_session_expiry",
            Self::DriveShortPiece { .. } => "drive_short_piece",
            Self::DriveTokenExpiry => "drive_token_expiry",
            Self::MemoryPressure { .. } => "memory_pressure",
        }
    }
}

/// A fault at a simulated time. (No `deny_unknown_fields` here: serde does
/// not support it together with `flatten`; the flattened [`Fault`] denies
/// unknown fields itself.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledFault {
    /// When, from the start.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub fault: Fault,
}

/// How a run must end for the scenario to pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// Every file arrives whole.
    Complete,
    /// Every upload is refused at admission with this cause.
    Refused {
        /// The admission cause (`memory_pressure`, …).
        cause: String,
    },
    /// Every upload either arrives whole or ends with one of these typed,
    /// non-retryable causes (e.g. `quota_exceeded` in a crowd).
    Settled {
        /// The causes an upload may end with.
        allowed_causes: Vec<String>,
    },
}

/// A whole simulated world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// The backend's profile.
    pub profile: Profile,
    /// The machine's memory at the start.
    pub memory: MemorySnapshot,
    /// Files to upload, one client host each.
    pub files: Vec<FileSpec>,
    /// Chunks each client keeps in flight.
    pub parallel: u32,
    /// Links.
    pub links: Links,
    /// Faults, by time.
    pub faults: Vec<ScheduledFault>,
    /// turmoil's step. Reference: 5 ms.
    pub tick_ms: u64,
    /// Simulated time after which the run is a failure. Reference: 1 h.
    pub duration_max_ms: u64,
    /// The safety phase: faults and fault points are active before this
    /// time and off after it. Every fault must be scheduled before it.
    pub safety_ms: u64,
    /// The liveness phase: after `safety_ms`, every upload must end
    /// (complete, or a typed non-retryable cause) within this bound.
    pub liveness_bound_ms: u64,
    /// Fault points active during the safety phase.
    #[serde(default)]
    pub buggify: Vec<SiteConfig>,
    /// No upload may wait longer than this to be admitted (starvation).
    /// Default 5 minutes.
    #[serde(default = "default_admission_wait_bound_ms")]
    pub admission_wait_bound_ms: u64,
    /// The UTC time of day at simulated time zero, ms after midnight
    /// (below [`DAY_MS`]). Default 0: a run starts at midnight and, being
    /// shorter than a day, never sees the quota's day roll over; swarm
    /// draws starts shortly before midnight so that some runs cross it.
    /// Left out of the JSON when 0, so older scenario files and reports
    /// read and print as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_of_day_ms: u64,
    /// The drive wants OAuth access tokens, which the backend fetches with
    /// its refresh token from the drive's token endpoint. `None` (left out
    /// of the JSON): a drive without authentication, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_oauth: Option<DriveOAuth>,
    /// Each client follows its upload's event stream (`GET
    /// /uploads/{id}/events`) while it uploads, and the progress checks
    /// judge what it saw (`progress_checks.rs`). Default `false` (left out
    /// of the JSON): the reference, smoke and zoo worlds, and their traces,
    /// stay as they were; swarm draws it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_events: bool,
    /// The largest piece the backend sends the drive at once
    /// (`BackendConfig::piece_bytes_max`). `None` (left out of the JSON):
    /// the backend's default, 32 MiB, so every earlier world and trace
    /// stays as it was. Swarm draws a few chunks' worth for some worlds,
    /// so that pieces are cut at the limit — and, after a drive that kept
    /// part of a piece, start in the middle of a chunk — in runs of
    /// megabytes rather than of hundreds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece_bytes_max: Option<u64>,
    /// How the run must end.
    pub expect: Expectation,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How the simulated drive's token endpoint issues access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveOAuth {
    /// How long each access token is accepted, in whole seconds (Drive's
    /// `expires_in`). At least 1.
    pub access_token_lifetime_s: u64,
}

/// The smallest [`Scenario::piece_bytes_max`]: the drive's 256 KiB unit.
const PIECE_UNIT_BYTES: u64 = crate::units::DRIVE_CHUNK_ALIGN_BYTES;
/// The largest [`Scenario::piece_bytes_max`]: the simulated drive's own
/// limit on a piece (its default `DriveConfig::piece_bytes_max`).
const PIECE_BYTES_MAX_MAX: u64 = crate::drive::PIECE_BYTES_MAX_DEFAULT;

/// A UTC day.
pub const DAY_MS: u64 = 86_400_000;

fn is_zero(ms: &u64) -> bool {
    *ms == 0
}

/// The default of [`Scenario::admission_wait_bound_ms`].
pub(super) fn default_admission_wait_bound_ms() -> u64 {
    300_000
}

impl Scenario {
    /// Every option, one line each: what a run prints at its start.
    pub fn describe(&self) -> String {
        use crate::units::human_bytes;
        let mut users: std::collections::BTreeMap<&str, (u32, u64)> =
            std::collections::BTreeMap::new();
        for f in &self.files {
            let e = users.entry(f.user.as_str()).or_insert((0, 0));
            e.0 += 1;
            e.1 += f.size_bytes;
        }
        let sizes: Vec<u64> = self.files.iter().map(|f| f.size_bytes).collect();
        let mut faults: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for f in &self.faults {
            *faults.entry(f.fault.kind()).or_insert(0) += 1;
        }
        let p = &self.profile;
        let sites: Vec<String> = self
            .buggify
            .iter()
            .map(|b| format!("{:?}@{}‰", b.site, b.permille))
            .collect();
        format!(
            "scenario {} seed {}\n  files: {} from {} users, {} in all, sizes {}..{}\n  profile {}: slots {}/{} per user, chunk {}, memory {} % − {} reserve, quota {}, window ≤ {} chunks\n  machine: {}\n  links: uplink {} Mbit/s {} ms, drive {} Mbit/s {} ms; parallel {}; tick {} ms\n  safety {} s then liveness ≤ {} s\n  faults: {:?}\n  fault points: {}\n",
            self.name,
            self.seed,
            self.files.len(),
            users.len(),
            human_bytes(sizes.iter().sum()),
            human_bytes(sizes.iter().copied().min().unwrap_or(0)),
            human_bytes(sizes.iter().copied().max().unwrap_or(0)),
            p.name,
            p.global_slots,
            p.user_slots,
            human_bytes(p.chunk_size_bytes),
            p.memory_limit_percent,
            human_bytes(p.reserved_memory_bytes),
            if p.upload_limits_enabled { human_bytes(p.daily_limit_bytes) } else { "off".into() },
            p.reorder_window_chunks_max,
            self.memory.describe(),
            self.links.client_uplink_mbit,
            self.links.client_latency_ms,
            self.links.drive_link_mbit,
            self.links.drive_latency_ms,
            self.parallel,
            self.tick_ms,
            self.safety_ms / 1000,
            self.liveness_bound_ms / 1000,
            faults,
            if sites.is_empty() { "none".into() } else { sites.join(", ") },
        ) + if self.follow_events {
            "  event streams: followed by every client\n"
        } else {
            ""
        } + &self
            .piece_bytes_max
            .map(|b| format!("  drive pieces: at most {}\n", human_bytes(b)))
            .unwrap_or_default()
            + &self.describe_tus()
    }

    /// The tus line of [`describe`](Self::describe): empty unless a file
    /// is uploaded with tus (so chunk-only scenarios print as before).
    fn describe_tus(&self) -> String {
        let tus: Vec<String> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f.protocol {
                Protocol::Chunks => None,
                Protocol::Tus {
                    patch_bytes,
                    checksum,
                } => Some(format!(
                    "{i} (PATCH {}{})",
                    crate::units::human_bytes(patch_bytes),
                    checksum.map_or(String::new(), |c| format!(", {}", c.name()))
                )),
            })
            .collect();
        if tus.is_empty() {
            return String::new();
        }
        format!("  tus clients: files {}\n", tus.join(", "))
    }

    /// How many UTC days the run may touch (1 unless it can cross a
    /// midnight): a user may be charged a daily limit on each.
    pub fn utc_days_spanned(&self) -> u64 {
        (self.start_of_day_ms + self.duration_max_ms) / DAY_MS + 1
    }

    /// Checks the scenario can run: a valid profile, at least one file,
    /// non-zero rates and tick, faults in time order.
    pub fn validate(&self) -> Result<(), String> {
        self.profile.validate().map_err(|e| e.to_string())?;
        if self.files.is_empty() {
            return Err("a scenario needs at least one file".into());
        }
        if self.files.len() > 1_000 {
            return Err(format!(
                "{} files: at most 1000 client hosts",
                self.files.len()
            ));
        }
        if self.links.client_uplink_mbit == 0 || self.links.drive_link_mbit == 0 {
            return Err("link rates must be positive".into());
        }
        if self
            .files
            .iter()
            .any(|f| matches!(f.protocol, Protocol::Tus { patch_bytes: 0, .. }))
        {
            return Err("a tus file's patch_bytes must be positive".into());
        }
        if self.tick_ms == 0 || self.parallel == 0 {
            return Err("tick_ms and parallel must be positive".into());
        }
        if self.faults.windows(2).any(|w| w[0].at_ms > w[1].at_ms) {
            return Err("faults must be in time order".into());
        }
        if let Some(late) = self.faults.iter().find(|f| f.at_ms >= self.safety_ms) {
            return Err(format!(
                "fault {} at {} ms is after the safety phase ({} ms)",
                late.fault.kind(),
                late.at_ms,
                self.safety_ms
            ));
        }
        if self.safety_ms + self.liveness_bound_ms > self.duration_max_ms {
            return Err("safety_ms + liveness_bound_ms exceeds duration_max_ms".into());
        }
        if self.start_of_day_ms >= DAY_MS {
            return Err(format!(
                "start_of_day_ms {} is not within a day ({DAY_MS} ms)",
                self.start_of_day_ms
            ));
        }
        if self.memory.available_bytes > self.memory.total_bytes {
            return Err("memory: more available than total".into());
        }
        if let Some(b) = self.piece_bytes_max {
            if !(PIECE_UNIT_BYTES..=PIECE_BYTES_MAX_MAX).contains(&b) {
                return Err(format!(
                    "piece_bytes_max {b} is not within {PIECE_UNIT_BYTES}..={PIECE_BYTES_MAX_MAX} (one drive unit up to what the drive takes at once)"
                ));
            }
        }
        if self
            .drive_oauth
            .is_some_and(|o| o.access_token_lifetime_s == 0)
        {
            return Err("drive_oauth.access_token_lifetime_s must be at least 1".into());
        }
        Ok(())
    }
}
