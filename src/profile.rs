//! Profiles: every knob of the upload system, as serde/TOML, with validation
//! and drift reports.
//!
//! Built-in `dev` and `prod` reproduce the root-cause report's values. A
//! profile is only ever used after [`Profile::validate`] has accepted it
//! ([`Profile::from_toml`] and [`Profile::builtin`] both validate), so the
//! rest of the system can rely on: slots > 0, chunk size a non-zero multiple
//! of 256 KiB, percentages ≤ 100, timeouts > 0, retry bounds ordered.

use crate::units::{DRIVE_CHUNK_ALIGN_BYTES, GIB, MIB};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest file size a profile may allow: 5 TiB, Drive's own per-file limit.
pub const FILE_SIZE_BYTES_LIMIT: u64 = 5 * 1024 * GIB;
/// Most slots a profile may configure. Far above any real need; stops a
/// typo (an extra zero or three) from turning into an unbounded server.
pub const SLOTS_MAX: u32 = 100_000;
/// Longest queue of waiting uploads a profile may configure.
pub const WAITERS_MAX_LIMIT: u32 = 1_000_000;
/// Largest reorder window a profile may configure, in chunks.
pub const REORDER_WINDOW_CHUNKS_LIMIT: u32 = 4_096;
/// Largest chunk a profile may configure: the chunk is one request body.
pub const CHUNK_SIZE_BYTES_MAX: u64 = 256 * MIB;

/// How much memory an upload reserves for its reorder window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MemoryPolicy {
    /// A percentage of the file size (the report computes 10 %).
    PercentOfFile {
        /// 1–100.
        percent: u8,
    },
    /// A fixed number of bytes whatever the file size.
    Fixed {
        /// Bytes reserved per upload.
        bytes: u64,
    },
    /// Room for this many chunks (capped at the file size).
    ChunkWindow {
        /// Chunks held at most.
        chunks: u32,
    },
}

impl MemoryPolicy {
    /// The reservation for a file of `file_size_bytes` with chunks of
    /// `chunk_size_bytes`. Never more than needed to hold the whole file;
    /// at least one chunk (or the whole file, if smaller), since the
    /// backend's reorder window holds whole chunks and cannot hold less
    /// than one: the reservation is then a true bound on what an upload
    /// buffers (`sim/buffers.rs` checks it, with no allowance).
    pub fn required_bytes(&self, file_size_bytes: u64, chunk_size_bytes: u64) -> u64 {
        let raw = match *self {
            // Widen so that sizes near u64::MAX cannot overflow.
            Self::PercentOfFile { percent } => {
                let bytes = u128::from(file_size_bytes) * u128::from(percent) / 100;
                u64::try_from(bytes).unwrap_or(u64::MAX)
            }
            Self::Fixed { bytes } => bytes,
            Self::ChunkWindow { chunks } => u64::from(chunks).saturating_mul(chunk_size_bytes),
        };
        raw.max(chunk_size_bytes)
            .min(file_size_bytes)
            .max(u64::from(file_size_bytes > 0))
    }
}

/// Retry policy: exponential backoff with full jitter, bounded attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts including the first. Default 10.
    pub attempts_max: u32,
    /// First backoff ceiling. Default 100 ms.
    pub backoff_ms_min: u64,
    /// Largest backoff ceiling. Default 32 000 ms (Google's guidance).
    pub backoff_ms_max: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 10,
            backoff_ms_min: 100,
            backoff_ms_max: 32_000,
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before attempt `attempt` (0-based): min·2^attempt,
    /// capped at max. The caller draws the actual wait uniformly below it.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.backoff_ms_min
                .saturating_mul(factor)
                .min(self.backoff_ms_max),
        )
    }
}

/// One configuration of the upload system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Name, for messages.
    pub name: String,
    /// Whether the daily upload quota applies (the report's
    /// `ENABLE_UPLOAD_LIMITS`). dev: false, prod: true.
    pub upload_limits_enabled: bool,
    /// Bytes a user may upload per UTC day, when limits are enabled. 5 GB.
    pub daily_limit_bytes: u64,
    /// Largest file accepted. 50 GB.
    pub file_size_bytes_max: u64,
    /// Share of physical memory the machine may use with this upload's
    /// reservation added. dev: 100, prod: 80.
    pub memory_limit_percent: u8,
    /// Memory kept free for everything else. dev: 0, prod: 512 MB.
    pub reserved_memory_bytes: u64,
    /// Uploads in flight across all users. 20.
    pub global_slots: u32,
    /// Uploads in flight per user. 5.
    pub user_slots: u32,
    /// Client chunk size; a multiple of 256 KiB. 8 MiB.
    pub chunk_size_bytes: u64,
    /// Memory reserved per upload. 10 % of the file size.
    pub memory_per_upload: MemoryPolicy,
    /// Most chunks an upload's reorder window holds, whatever its
    /// reservation allows: the window only has to absorb the client's
    /// parallelism and a late head chunk. 16 (128 MiB of 8 MiB chunks).
    pub reorder_window_chunks_max: u32,
    /// Longest wait for slots before `SlotsBusy`. 30 000 ms.
    pub slot_wait_timeout_ms: u64,
    /// Longest queue of waiting uploads before `QueueFull`. 1 000.
    pub waiters_max: u32,
    /// Whether a failed upload gets its quota charge back. true.
    pub refund_quota_on_failure: bool,
    /// Retry policy for the client and the drive link.
    pub retry: RetryPolicy,
    /// Timeout of one request to the drive. 120 000 ms.
    pub drive_request_timeout_ms: u64,
}

/// A profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The text is not valid TOML for a profile.
    #[error("profile {source_name}: {message}")]
    Parse {
        /// Where the text came from.
        source_name: String,
        /// The parser's message (it names the line and the field).
        message: String,
    },
    /// A field holds a value that makes no sense.
    #[error("profile {profile:?}: field `{field}` is {value}: {reason}")]
    Invalid {
        /// The profile's name.
        profile: String,
        /// The field, as it is spelled in TOML.
        field: &'static str,
        /// Its value, as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// No built-in profile has that name and no such file exists.
    #[error("no profile {name:?}: built-in profiles are dev and prod; otherwise give a path to a TOML file ({reason})")]
    Unknown {
        /// What was asked for.
        name: String,
        /// Why it was not found as a file.
        reason: String,
    },
}

impl Profile {
    /// The report's development profile: limits off, 100 % memory, no
    /// reserve.
    pub fn dev() -> Self {
        Self {
            name: "dev".into(),
            upload_limits_enabled: false,
            daily_limit_bytes: 5 * GIB,
            file_size_bytes_max: 50 * GIB,
            memory_limit_percent: 100,
            reserved_memory_bytes: 0,
            global_slots: 20,
            user_slots: 5,
            chunk_size_bytes: 8 * MIB,
            memory_per_upload: MemoryPolicy::PercentOfFile { percent: 10 },
            reorder_window_chunks_max: 16,
            slot_wait_timeout_ms: 30_000,
            waiters_max: 1_000,
            refund_quota_on_failure: true,
            retry: RetryPolicy::default(),
            drive_request_timeout_ms: 120_000,
        }
    }

    /// The report's production profile: limits on with 5 GB a day, 80 %
    /// memory, 512 MB reserved.
    pub fn prod() -> Self {
        Self {
            name: "prod".into(),
            upload_limits_enabled: true,
            memory_limit_percent: 80,
            reserved_memory_bytes: 512 * MIB,
            ..Self::dev()
        }
    }

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "dev" => Some(Self::dev()),
            "prod" => Some(Self::prod()),
            _ => None,
        }
    }

    /// A built-in profile by name, or else a TOML file at that path.
    pub fn load(name_or_path: &str) -> Result<Self, ProfileError> {
        if let Some(profile) = Self::builtin(name_or_path) {
            return Ok(profile);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| ProfileError::Unknown {
            name: name_or_path.into(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, name_or_path)
    }

    /// Parses and validates a TOML profile. `source_name` is for messages.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ProfileError> {
        let profile: Self = toml::from_str(text).map_err(|e| ProfileError::Parse {
            source_name: source_name.into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as TOML.
    pub fn to_toml(&self) -> String {
        // Serialising plain integers, strings and enums cannot fail.
        toml::to_string(self).expect("a Profile always serialises to TOML")
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.validate_sizes()?;
        self.validate_slots()?;
        self.validate_chunks_and_memory()?;
        self.validate_timing()
    }

    /// A field's value and why it is invalid.
    fn invalid(&self, field: &'static str, value: String, reason: &str) -> ProfileError {
        ProfileError::Invalid {
            profile: self.name.clone(),
            field,
            value,
            reason: reason.into(),
        }
    }

    /// The name, the daily limit, the file size bound and memory's limit and reserve.
    fn validate_sizes(&self) -> Result<(), ProfileError> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(self.invalid(
                "name",
                format!("{:?}", self.name),
                "must be 1 to 64 characters",
            ));
        }
        if self.upload_limits_enabled && self.daily_limit_bytes == 0 {
            return Err(self.invalid(
                "daily_limit_bytes",
                "0".into(),
                "limits are enabled, so nothing could ever be uploaded",
            ));
        }
        if self.file_size_bytes_max == 0 || self.file_size_bytes_max > FILE_SIZE_BYTES_LIMIT {
            return Err(self.invalid(
                "file_size_bytes_max",
                self.file_size_bytes_max.to_string(),
                &format!("must be between 1 and {FILE_SIZE_BYTES_LIMIT} (5 TiB)"),
            ));
        }
        if self.memory_limit_percent == 0 || self.memory_limit_percent > 100 {
            return Err(self.invalid(
                "memory_limit_percent",
                self.memory_limit_percent.to_string(),
                "must be between 1 and 100",
            ));
        }
        if self.reserved_memory_bytes > FILE_SIZE_BYTES_LIMIT {
            return Err(self.invalid(
                "reserved_memory_bytes",
                self.reserved_memory_bytes.to_string(),
                "is larger than any machine's memory",
            ));
        }
        Ok(())
    }

    /// The global and per-user slots.
    fn validate_slots(&self) -> Result<(), ProfileError> {
        for (field, value) in [
            ("global_slots", self.global_slots),
            ("user_slots", self.user_slots),
        ] {
            if value == 0 || value > SLOTS_MAX {
                return Err(self.invalid(
                    field,
                    value.to_string(),
                    &format!("must be between 1 and {SLOTS_MAX}"),
                ));
            }
        }
        if self.user_slots > self.global_slots {
            return Err(self.invalid(
                "user_slots",
                self.user_slots.to_string(),
                &format!(
                    "exceeds global_slots ({}): one user could never use them",
                    self.global_slots
                ),
            ));
        }
        Ok(())
    }

    /// The chunk size, the memory per upload and the reorder window.
    fn validate_chunks_and_memory(&self) -> Result<(), ProfileError> {
        if self.chunk_size_bytes == 0
            || self.chunk_size_bytes % DRIVE_CHUNK_ALIGN_BYTES != 0
            || self.chunk_size_bytes > CHUNK_SIZE_BYTES_MAX
        {
            return Err(self.invalid(
                "chunk_size_bytes",
                self.chunk_size_bytes.to_string(),
                &format!(
                    "must be a non-zero multiple of {DRIVE_CHUNK_ALIGN_BYTES} (256 KiB, the drive's piece unit) \
                     and at most {CHUNK_SIZE_BYTES_MAX}"
                ),
            ));
        }
        match self.memory_per_upload {
            MemoryPolicy::PercentOfFile { percent } if percent == 0 || percent > 100 => {
                return Err(self.invalid(
                    "memory_per_upload.percent",
                    percent.to_string(),
                    "must be between 1 and 100",
                ));
            }
            MemoryPolicy::Fixed { bytes: 0 } => {
                return Err(self.invalid(
                    "memory_per_upload.bytes",
                    "0".into(),
                    "an upload needs some memory",
                ));
            }
            MemoryPolicy::ChunkWindow { chunks: 0 } => {
                return Err(self.invalid(
                    "memory_per_upload.chunks",
                    "0".into(),
                    "the window must hold at least one chunk",
                ));
            }
            _ => {}
        }
        if self.reorder_window_chunks_max == 0
            || self.reorder_window_chunks_max > REORDER_WINDOW_CHUNKS_LIMIT
        {
            return Err(self.invalid(
                "reorder_window_chunks_max",
                self.reorder_window_chunks_max.to_string(),
                &format!("must be between 1 and {REORDER_WINDOW_CHUNKS_LIMIT}"),
            ));
        }
        Ok(())
    }

    /// Waiting, retries and timeouts.
    fn validate_timing(&self) -> Result<(), ProfileError> {
        if self.slot_wait_timeout_ms == 0 {
            return Err(self.invalid("slot_wait_timeout_ms", "0".into(), "must be positive"));
        }
        if self.waiters_max > WAITERS_MAX_LIMIT {
            return Err(self.invalid(
                "waiters_max",
                self.waiters_max.to_string(),
                &format!("must be at most {WAITERS_MAX_LIMIT}"),
            ));
        }
        if self.retry.attempts_max == 0 {
            return Err(self.invalid(
                "retry.attempts_max",
                "0".into(),
                "at least one attempt is needed",
            ));
        }
        if self.retry.backoff_ms_min == 0 || self.retry.backoff_ms_min > self.retry.backoff_ms_max {
            return Err(self.invalid(
                "retry.backoff_ms_min",
                self.retry.backoff_ms_min.to_string(),
                &format!(
                    "must be positive and at most retry.backoff_ms_max ({})",
                    self.retry.backoff_ms_max
                ),
            ));
        }
        if self.drive_request_timeout_ms == 0 {
            return Err(self.invalid("drive_request_timeout_ms", "0".into(), "must be positive"));
        }
        Ok(())
    }

    /// The longest a request waits for slots.
    pub fn slot_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.slot_wait_timeout_ms)
    }

    /// Every field as a flat, ordered map of dotted paths to values.
    pub fn flatten(&self) -> BTreeMap<String, serde_json::Value> {
        fn walk(
            prefix: &str,
            value: &serde_json::Value,
            out: &mut BTreeMap<String, serde_json::Value>,
        ) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, v) in map {
                        let path = if prefix.is_empty() {
                            key.clone()
                        } else {
                            format!("{prefix}.{key}")
                        };
                        walk(&path, v, out);
                    }
                }
                other => {
                    out.insert(prefix.to_owned(), other.clone());
                }
            }
        }
        let mut out = BTreeMap::new();
        // A Profile is plain data: serialising it to JSON cannot fail.
        let value = serde_json::to_value(self).expect("a Profile always serialises to JSON");
        walk("", &value, &mut out);
        out
    }
}

/// One field that differs between two profiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDrift {
    /// Dotted path of the field.
    pub field: String,
    /// Value in the first profile (`null` if absent there).
    pub left: serde_json::Value,
    /// Value in the second profile.
    pub right: serde_json::Value,
}

/// Every field that differs between `left` and `right`, in field order.
/// The name is skipped: it always differs and changes nothing.
pub fn drift(left: &Profile, right: &Profile) -> Vec<FieldDrift> {
    let (l, r) = (left.flatten(), right.flatten());
    let mut fields: Vec<&String> = l.keys().chain(r.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|f| f.as_str() != "name")
        .filter_map(|f| {
            let (a, b) = (
                l.get(f).cloned().unwrap_or_default(),
                r.get(f).cloned().unwrap_or_default(),
            );
            (a != b).then(|| FieldDrift {
                field: f.clone(),
                left: a,
                right: b,
            })
        })
        .collect()
}

/// `base` with one field (dotted path) set to `value`, validated.
pub fn with_field(
    base: &Profile,
    field: &str,
    value: &serde_json::Value,
) -> Result<Profile, ProfileError> {
    let mut json = serde_json::to_value(base).expect("a Profile always serialises to JSON");
    let mut slot = &mut json;
    for part in field.split('.') {
        slot = slot.get_mut(part).ok_or_else(|| ProfileError::Parse {
            source_name: base.name.clone(),
            message: format!("no field {field}"),
        })?;
    }
    *slot = value.clone();
    let profile: Profile = serde_json::from_value(json).map_err(|e| ProfileError::Parse {
        source_name: base.name.clone(),
        message: e.to_string(),
    })?;
    profile.validate()?;
    Ok(profile)
}

#[cfg(test)]
mod tests;
