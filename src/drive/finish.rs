//! Step 3 of a PUT: settling the piece. While bytes are missing the handle
//! goes back to its session and the answer is `308`; once the last byte is
//! held the file is finished in storage, the session marked finished and
//! journalled, and the answer is `200` with the file resource.

use super::checkout::Checkout;
use super::journal::SessionRecord;
use super::protocol::{FileResource, FILE_KIND};
use super::put::Streaming;
use super::replies::{complete, incomplete, lose_reply_sometimes, Refusal, Reply};
use super::server::Inner;
use super::session::SessionState;
use crate::ids::SessionId;

impl Inner {
    /// Step 3: gives the handle back and answers `308` while bytes are
    /// missing; otherwise finishes the file and answers `200`.
    pub(super) async fn settle(
        &self,
        upload_id: &SessionId,
        streaming: Streaming,
    ) -> Result<Reply, Refusal> {
        let Streaming {
            mut checkout,
            plan,
            file,
            fields,
            ..
        } = streaming;
        let committed_bytes = checkout.committed_bytes;
        if plan.total_bytes != Some(committed_bytes) {
            if !checkout.give_back(Some(self.clock.now())) {
                return Err(Refusal::new(
                    404,
                    format!("upload session {upload_id} expired while the piece was in flight"),
                ));
            }
            return Ok(lose_reply_sometimes(incomplete(committed_bytes)));
        }
        let mut resource = finish_file(&mut checkout, file).await?;
        if self.control.lock().take_misreport() {
            misreport(&mut resource);
            tracing::info!(%upload_id, "drive fault: file digests misreported");
        }
        self.record_finished(upload_id, &resource).await;
        tracing::info!(
            %upload_id,
            size_bytes = resource.size_bytes,
            crc64nvme = resource.crc64nvme.as_deref().unwrap_or("-"),
            md5 = resource.md5_checksum.as_deref().unwrap_or("-"),
            "drive: file finished"
        );
        Ok(lose_reply_sometimes(complete(&resource, fields)))
    }

    /// Marks the session finished with `resource`, records the file and
    /// journals the session.
    async fn record_finished(&self, upload_id: &SessionId, resource: &FileResource) {
        let record = {
            let mut state = self.control.lock();
            let record = state.sessions.get_mut(upload_id).map(|session| {
                session.state = SessionState::Finished(resource.clone());
                session.last_active_at = self.clock.now();
                SessionRecord {
                    upload_id: upload_id.clone(),
                    file_id: session.file_id.clone(),
                    name: session.name.clone(),
                    mime_type: session.mime_type.clone(),
                    declared_total_bytes: session.declared_total_bytes,
                    owner: session.owner.clone(),
                    fields: session.fields,
                    finished: Some(resource.clone()),
                }
            });
            state.record_finished(resource.clone());
            record
        };
        if let Some(record) = record {
            // The file is whole on disk either way; a failed journal write
            // means a restart would not know it (the client would start
            // over), so it is logged rather than refused.
            if let Err(error) = self.journal_save(record).await {
                tracing::error!(%upload_id, %error, "drive: journalling a finished session failed");
            }
        }
    }
}

/// Finishes the checked-out handle's file, checking storage holds exactly
/// the bytes committed; the session is abandoned if not.
async fn finish_file(
    checkout: &mut Checkout,
    (id, name, mime_type): (String, String, String),
) -> Result<FileResource, Refusal> {
    let committed_bytes = checkout.committed_bytes;
    let Some(handle) = checkout.handle.take() else {
        return Err(Refusal::new(500, "storage handle already released"));
    };
    let stored = match handle.finish().await {
        Ok(stored) => stored,
        Err(error) => {
            checkout.abandon();
            return Err(Refusal::new(
                500,
                format!("storage failed finishing {committed_bytes} bytes: {error}"),
            ));
        }
    };
    if stored.size_bytes != committed_bytes {
        checkout.abandon();
        return Err(Refusal::new(
            500,
            format!(
                "storage finished {} bytes but {committed_bytes} were committed",
                stored.size_bytes
            ),
        ));
    }
    Ok(FileResource {
        kind: FILE_KIND.to_owned(),
        id,
        name,
        mime_type,
        size_bytes: stored.size_bytes,
        md5_checksum: stored.md5_checksum,
        crc64nvme: Some(stored.crc64nvme),
    })
}

/// The misreport fault ([`DriveControl::misreport_next_digests`](super::DriveControl::misreport_next_digests)):
/// each digest's first hex digit changed, so it stays well formed but is
/// not the file's.
fn misreport(resource: &mut FileResource) {
    for digest in [&mut resource.md5_checksum, &mut resource.crc64nvme]
        .into_iter()
        .flatten()
        .filter(|digest| !digest.is_empty())
    {
        let changed = if digest.starts_with('0') { "1" } else { "0" };
        digest.replace_range(..1, changed);
    }
}
