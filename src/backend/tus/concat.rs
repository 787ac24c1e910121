//! tus's concatenation: partial uploads, and final uploads made of them.
//!
//! # Implementation Details
//!
//! A *partial* upload is admitted like any upload (slot, reservation and
//! quota for its length) but opens no drive session: the drive takes a
//! file's bytes in order only, and a partial's place in its file is known
//! when a final upload names it. Its bytes wait in its own window and
//! tail, so a partial is refused (413 `partial_too_large`) unless its
//! reservation covers it whole and it spans at most
//! `reorder_window_chunks_max` chunks: partials are bounded by their
//! reservations, never buffered beyond them. A partial that gets no byte and no final for the
//! upload idle timeout expires (`client_gone`), as any upload does.
//!
//! A *final* upload names complete partials of its user, each not taken
//! by another final (an id may repeat within one final). It holds no slot
//! of its own: its partials keep theirs — slots, reservations and quota
//! charges, which add up to the final's length — until the final ends,
//! and then end with it (complete, keeping their charges; or failed with
//! its cause). It opens a drive session, and a feeder task appends the
//! partials' bytes to it in order through the same intake a PATCH uses
//! (slices of the partials' buffers, never copies, never past the final's
//! window), for the committer to send. The creation answers once the drive
//! has the whole file and its checksum matched (bounded, as the last PATCH
//! of any upload). Partials are memory only: they are not persisted, and a
//! final still receiving at a restart fails (`partial_unusable`).

use super::super::committer::Ending;
use super::super::create::{Admitted, PendingCreate};
use super::super::refusals::Refusal;
use super::super::server::Backend;
use super::super::store::{RecordPhase, UploadRecord};
use super::super::upload::{chunk_count, Upload};
use super::create::{check_length, drive_names};
use super::facts::TusUpload;
use super::tus_of;
use crate::chunk_api::{Cause, CreateUpload, Phase};
use crate::tus::{Concat, Metadata};
use crate::user::UserId;
use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;

/// Partials taken by a final being created; given back on drop unless the
/// final was made.
struct Taken {
    parts: Vec<Arc<Upload>>,
    kept: bool,
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.kept {
            for part in distinct(&self.parts) {
                tus_of(part).give_back();
            }
        }
    }
}

/// Each upload of `parts` once, in order of first appearance.
fn distinct(parts: &[Arc<Upload>]) -> Vec<&Arc<Upload>> {
    let mut seen = Vec::new();
    for part in parts {
        if !seen.iter().any(|p: &&Arc<Upload>| Arc::ptr_eq(p, part)) {
            seen.push(part);
        }
    }
    seen
}

fn unusable(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, Cause::PartialUnusable, message)
}

/// A partial upload's bytes, in order: its window's chunks, then its
/// tail (it holds them all: nothing of a partial is ever committed); or
/// why it no longer has them (it was terminated, or expired, after its
/// final took it).
fn bytes_of(partial: &Upload) -> Result<Vec<Bytes>, Refusal> {
    let state = partial.lock();
    let frames: Vec<Bytes> = state
        .window
        .values()
        .flat_map(|chunk| chunk.frames.iter().cloned())
        .chain(state.tail.frames().cloned())
        .collect();
    let held = frames.iter().map(|f| f.len() as u64).sum::<u64>();
    if state.phase != Phase::Receiving || held != partial.file_size_bytes {
        return Err(Refusal::new(
            StatusCode::GONE,
            Cause::PartialUnusable,
            format!(
                "partial upload {} ended before its bytes were sent ({held} of {} held)",
                partial.id, partial.file_size_bytes
            ),
        ));
    }
    Ok(frames)
}

/// The ending of a final upload read back after a restart while still
/// receiving: its partials lived in memory and died with the process.
pub(in crate::backend) fn unresumable(record: &UploadRecord) -> Option<Ending> {
    let is_final = record
        .tus
        .as_ref()
        .and_then(|t| t.concat.as_deref())
        .is_some_and(|c| c.starts_with("final;"));
    (is_final && record.phase == RecordPhase::Receiving).then(|| {
        Ending::Failed(Refusal::new(
            StatusCode::GONE,
            Cause::PartialUnusable,
            "its partial uploads were held in memory and did not survive the backend's restart: upload them again",
        ))
    })
}

impl Backend {
    /// A partial upload of `create.file_size_bytes`: admitted, held in
    /// memory, expiring when idle.
    pub(super) async fn create_partial(
        &self,
        user: &UserId,
        create: CreateUpload,
        metadata: Option<Metadata>,
    ) -> Result<Arc<Upload>, Refusal> {
        let pending = self.reserve_create(user)?;
        let slot = self.admit(user, create.file_size_bytes).await?;
        // Nothing of a partial leaves memory before its final: its
        // reservation must cover it whole, and its window hold all its
        // chunks (sized so, its bytes stay within the reservation).
        let profile = &self.inner.config.profile;
        let chunk = profile.chunk_size_bytes;
        let chunks = chunk_count(create.file_size_bytes, chunk);
        let fits = slot.memory_bytes() >= create.file_size_bytes
            && chunks <= profile.reorder_window_chunks_max;
        if !fits {
            let most = slot
                .memory_bytes()
                .min(u64::from(profile.reorder_window_chunks_max) * chunk);
            let mut r = Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Cause::PartialTooLarge,
                format!(
                    "a partial upload waits in memory for its final upload: its reservation holds {most} bytes, not {}",
                    create.file_size_bytes
                ),
            );
            r.details = serde_json::json!({ "partial_bytes_max": most });
            return Err(r); // dropping the slot gives everything back
        }
        let id = self.new_id()?;
        let tus = TusUpload::new(metadata, Some(Concat::Partial));
        let admitted = Admitted {
            mime_type: create.mime_type.clone().unwrap_or_default(),
            memory_bytes: u64::from(chunks) * chunk,
            slot: Some(slot),
            session: None,
            tus: Some(tus),
        };
        let upload = self.register(id, user.clone(), create, admitted);
        drop(pending);
        self.spawn_partial_keeper(upload.clone());
        Ok(upload)
    }

    /// Fails a partial upload that gets no byte and is taken by no final
    /// for the upload idle timeout (a committer does this for any other).
    fn spawn_partial_keeper(&self, upload: Arc<Upload>) {
        let this = self.clone();
        tokio::spawn(async move {
            let clock = this.inner.env.clock.clone();
            let idle_timeout = this.inner.config.upload_idle_timeout;
            loop {
                let idle = {
                    let state = upload.lock();
                    if state.phase != Phase::Receiving {
                        return;
                    }
                    clock.now().saturating_sub(state.last_activity)
                };
                if idle >= idle_timeout && !tus_of(&upload).is_taken() {
                    let gone = Refusal::new(
                        StatusCode::GONE,
                        Cause::ClientGone,
                        format!(
                            "a partial upload got no byte and no final upload for {} s",
                            idle_timeout.as_secs()
                        ),
                    );
                    this.end(&upload, Ending::Failed(gone));
                    return;
                }
                clock
                    .sleep(idle_timeout.saturating_sub(idle).max(idle_timeout / 10))
                    .await;
            }
        });
    }

    /// Takes the partials `ids` of `user` for a final upload.
    fn take_partials(&self, user: &UserId, ids: &[String]) -> Result<Taken, Refusal> {
        let mut taken = Taken {
            parts: Vec::with_capacity(ids.len()),
            kept: false,
        };
        for id in ids {
            let part = self
                .find_tus(id, user)
                .map_err(|_| unusable(format!("no partial upload {id:?} of yours")))?;
            let already = taken.parts.iter().any(|p| Arc::ptr_eq(p, &part));
            let tus = tus_of(&part);
            if !tus.is_partial() {
                return Err(unusable(format!("upload {id} is not a partial upload")));
            }
            {
                let state = part.lock();
                let complete = state.phase == Phase::Receiving
                    && part.tus_offset(&state) == part.file_size_bytes;
                if !complete {
                    return Err(unusable(format!(
                        "partial upload {id} is not complete (this server concatenates finished partials only)"
                    )));
                }
            }
            if !already && !tus.take() {
                return Err(unusable(format!(
                    "partial upload {id} belongs to another final upload"
                )));
            }
            taken.parts.push(part);
        }
        Ok(taken)
    }

    /// A final upload made of the partials `concat` names, in the table,
    /// its committer and its feeder running.
    pub(super) async fn create_final(
        &self,
        user: &UserId,
        concat: Concat,
        metadata: Option<Metadata>,
    ) -> Result<Arc<Upload>, Refusal> {
        let Concat::Final { partials, .. } = &concat else {
            unreachable!("create_final gets a final concat");
        };
        // 1. The partials, and the length they add up to.
        let mut taken = self.take_partials(user, partials)?;
        let length = taken.parts.iter().map(|p| p.file_size_bytes).sum::<u64>();
        check_length(length, self.inner.config.profile.file_size_bytes_max)?;
        // 2. The per-user limit, the breaker, a drive session: no
        //    admission, the partials hold the slots.
        let pending: PendingCreate = self.reserve_create(user)?;
        self.check_breaker(user)?;
        let (file_name, mime_type) = drive_names(metadata.as_ref());
        let create = CreateUpload {
            file_name,
            file_size_bytes: length,
            mime_type: Some(mime_type.clone()),
            client_token: None,
        };
        let drive = self.drive_client();
        let session = self.initiate(&drive, user, &create, &mime_type).await?;
        let id = self.new_id()?;
        // 3. The final in the table, its partials kept for it.
        let memory_bytes = distinct(&taken.parts).iter().map(|p| p.memory_bytes).sum();
        let tus = TusUpload::of_parts(metadata, Some(concat), taken.parts.clone());
        let admitted = Admitted {
            mime_type,
            slot: None,
            memory_bytes,
            session: Some(session),
            tus: Some(tus),
        };
        let upload = self.register(id, user.clone(), create, admitted);
        taken.kept = true;
        drop(pending);
        self.spawn_committer(upload.clone(), drive);
        // 4. Its bytes, from the partials, in order.
        self.spawn_feeder(upload.clone());
        Ok(upload)
    }

    /// Appends the final upload's partials' bytes to it, in order, through
    /// the PATCH intake (waiting for room as a PATCH does); fails the final
    /// if that cannot go on.
    fn spawn_feeder(&self, upload: Arc<Upload>) {
        let this = self.clone();
        tokio::spawn(async move {
            let tus = tus_of(&upload);
            let fed = async {
                let mut guard = this.patch_lock(&upload).await?;
                let end = upload.file_size_bytes;
                let mut next_at = upload.tail_end(&upload.lock());
                for part in &tus.parts {
                    for frame in bytes_of(part)? {
                        let at = &mut next_at;
                        this.append(&upload, frame, end, false, &mut guard, at)
                            .await?;
                    }
                }
                Ok::<(), Refusal>(())
            };
            if let Err(r) = fed.await {
                this.end(&upload, Ending::Failed(r));
            }
        });
    }

    /// Ends a final upload's partials as it ended: complete (they keep
    /// their quota charges, which are its bytes) or failed with its cause.
    pub(in crate::backend) fn end_partials_of(&self, upload: &Upload) {
        let Some(tus) = &upload.tus else {
            return;
        };
        if tus.parts.is_empty() {
            return;
        }
        let (phase, failure) = {
            let state = upload.lock();
            (state.phase, state.failure.clone())
        };
        for part in distinct(&tus.parts) {
            let ending = match (phase, &failure) {
                (Phase::Complete, _) => Ending::Complete,
                (_, Some(f)) => Ending::Failed(Refusal::new(
                    StatusCode::GONE,
                    f.cause,
                    format!("its final upload {} ended: {}", upload.id, f.message),
                )),
                (_, None) => Ending::Failed(Refusal::new(
                    StatusCode::GONE,
                    Cause::UploadFailed,
                    format!("its final upload {} ended", upload.id),
                )),
            };
            self.end(part, ending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::TusRecord;
    use super::*;
    use crate::chunk_api::{ErrorDetail, UploadedFile};
    use crate::ids::UploadId;

    fn record(concat: Option<&str>, phase: RecordPhase) -> UploadRecord {
        UploadRecord {
            upload_id: UploadId::new("u"),
            user: UserId::new("alice").expect("valid"),
            file_name: "f.bin".into(),
            mime_type: "application/octet-stream".into(),
            file_size_bytes: 10,
            chunk_size_bytes: 256 * 1024,
            drive_session: None,
            session_generation: 0,
            committed_bytes: 0,
            sent: Default::default(),
            client_token: None,
            tus: Some(TusRecord {
                metadata: None,
                concat: concat.map(str::to_owned),
            }),
            phase,
        }
    }

    fn partial_of(len: u64) -> Upload {
        use super::super::super::upload::{UploadSpec, UploadState};
        Upload::new(
            UploadSpec {
                id: UploadId::new("p"),
                user: UserId::new("alice").expect("valid"),
                file_name: "p.bin".into(),
                mime_type: "application/octet-stream".into(),
                file_size_bytes: len,
                chunk_size_bytes: 4,
                memory_bytes: len.div_ceil(4) * 4,
                window_chunks_max: 16,
                client_token: None,
                tus: Some(TusUpload::new(None, Some(Concat::Partial))),
            },
            UploadState::empty(Phase::Receiving),
        )
    }

    /// This is a regression test that ensures a final upload's feeder
    /// reads a partial's bytes in order when it holds them all, and gets a
    /// typed refusal (never a panic in the feeder task) when it does not:
    /// a partial terminated or expired after its final took it.
    #[test]
    fn a_partials_bytes_are_read_whole_or_refused() {
        let partial = partial_of(10);
        {
            let mut state = partial.lock();
            state.tail.push(Bytes::from_static(b"012345"), false);
            assert_eq!(partial.publish_tail(&mut state), 0..1, "chunk 0 is whole");
        }
        let refused = bytes_of(&partial).expect_err("6 of 10 bytes");
        assert_eq!(refused.cause, Cause::PartialUnusable);
        {
            let mut state = partial.lock();
            state.tail.push(Bytes::from_static(b"6789"), false);
            partial.publish_tail(&mut state);
        }
        let whole = bytes_of(&partial).expect("all 10 bytes").concat();
        assert_eq!(whole, b"0123456789");
        partial.lock().phase = Phase::Failed;
        assert!(
            bytes_of(&partial).is_err(),
            "an ended partial holds nothing to send"
        );
    }

    /// This is a regression test that ensures a final upload read back
    /// after a restart fails at once (its partials died with the
    /// process), and nothing else is failed for it.
    #[test]
    fn only_a_final_still_receiving_is_unresumable() {
        let receiving = record(Some("final;/files/a /files/b"), RecordPhase::Receiving);
        let ending = unresumable(&receiving);
        assert!(
            matches!(&ending, Some(Ending::Failed(r)) if r.cause == Cause::PartialUnusable),
            "a final still receiving fails"
        );
        let file = UploadedFile {
            kind: "drive#file".into(),
            id: "f".into(),
            name: "f.bin".into(),
            mime_type: "application/octet-stream".into(),
            size_bytes: 10,
            md5_checksum: None,
            crc64nvme: None,
        };
        let failure = ErrorDetail {
            status: 410,
            cause: Cause::Aborted,
            message: "aborted".into(),
            details: serde_json::Value::Null,
        };
        for (what, other) in [
            (
                "a complete final",
                record(Some("final;/files/a"), RecordPhase::Complete { file }),
            ),
            (
                "a failed final",
                record(Some("final;/files/a"), RecordPhase::Failed { failure }),
            ),
            ("a plain tus upload", record(None, RecordPhase::Receiving)),
            ("a partial", record(Some("partial"), RecordPhase::Receiving)),
        ] {
            assert!(unresumable(&other).is_none(), "{what}");
        }
    }
}
