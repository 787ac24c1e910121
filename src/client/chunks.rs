//! One round of chunks (step 2 of the client's rounds): the missing
//! chunks that fit the backend's window, at most `parallel` in flight, each
//! read at its own offset and checksummed just before it is sent.

use super::*;

impl Inner {
    /// Sends `chunks` with at most `parallel` in flight. Returns how many
    /// were accepted and the last retryable error.
    pub(super) async fn send_round(
        self: &Arc<Self>,
        id: &UploadId,
        status: &UploadStatus,
        chunks: &[u32],
        source: &Arc<dyn ChunkSource>,
    ) -> Result<(u32, Option<String>), ClientError> {
        let parallel = self.config.parallel.max(1) as usize;
        let mut accepted = 0u32;
        let mut last_error = None;
        let mut queue = chunks.iter().copied();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut stop: Option<RoundStop> = None;
        loop {
            while in_flight.len() < parallel && stop.is_none() {
                let Some(index) = queue.next() else { break };
                // Simulation only: the same chunk twice at once.
                let copies = if buggify::fire(Site::ClientDuplicateChunk) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let this = self.clone();
                    let (id, source) = (id.clone(), source.clone());
                    let chunk_size = status.chunk_size_bytes;
                    in_flight.spawn(async move {
                        this.send_chunk(&id, index, chunk_size, &*source).await
                    });
                }
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            if buggify::fire(Site::ClientRestart) {
                // Simulation only: the client restarts. In-flight chunks
                // are dropped mid-request; the next round resumes from the
                // backend's status, as a restarted client with its upload
                // id would.
                in_flight.abort_all();
                crate::coverage::hit(crate::coverage::Probe::ClientResume);
                self.tracer.record(Event::ClientRestart {
                    upload: id.to_string(),
                });
                return Ok((accepted, Some("client restarted".into())));
            }
            match joined {
                Ok(ChunkResult::Accepted) => accepted += 1,
                Ok(ChunkResult::Retry(e)) => last_error = Some(e),
                Ok(ChunkResult::Ended) => stop = stop.or(Some(RoundStop::Ended)),
                Ok(ChunkResult::Fatal(e)) => stop = Some(RoundStop::Fatal(e)),
                Err(join) => last_error = Some(format!("chunk task failed: {join}")),
            }
        }
        match stop {
            Some(RoundStop::Fatal(e)) => Err(e),
            _ => Ok((accepted, last_error)),
        }
    }

    /// Sends one chunk, read from the source and checksummed just now.
    async fn send_chunk(
        &self,
        id: &UploadId,
        index: u32,
        chunk_size_bytes: u64,
        source: &dyn ChunkSource,
    ) -> ChunkResult {
        // Paired with the backend's intake (`chunk_header` in
        // backend/intake.rs), which checks the same geometry on arrival:
        // chunk `index` starts at index × chunk size, is non-empty, lies
        // inside the file, and is a whole chunk unless it ends the file.
        // The index and chunk size come from the backend's status, so a
        // chunk outside the file is the backend's protocol error, not ours.
        let size_bytes = source.size_bytes();
        let offset = u64::from(index).checked_mul(chunk_size_bytes);
        let Some(offset) = offset.filter(|&o| o < size_bytes) else {
            return ChunkResult::Fatal(ClientError::Protocol {
                reason: format!(
                    "the backend asked for chunk {index} of {chunk_size_bytes} bytes, past the end of a {size_bytes}-byte file"
                ),
            });
        };
        let len = chunk_size_bytes.min(size_bytes - offset);
        assert!(len > 0 && offset + len <= size_bytes);
        assert!(len == chunk_size_bytes || offset + len == size_bytes);
        let Ok(len_usize) = usize::try_from(len) else {
            return ChunkResult::Fatal(ClientError::Protocol {
                reason: format!("chunk of {len} bytes does not fit in memory"),
            });
        };
        let mut buf = vec![0u8; len_usize];
        if let Err(e) = source.read_at(offset, &mut buf) {
            return ChunkResult::Fatal(ClientError::Source {
                reason: e.to_string(),
            });
        }
        let crc = crc32c(&buf);
        let checksum = crc32c_hex(crc);
        // Paired with the backend's parse of the header and its CRC over
        // the body: the header names exactly these bytes' checksum.
        debug_assert_eq!(buf.len() as u64, len);
        debug_assert_eq!(parse_crc32c_hex(&checksum).ok(), Some(crc));
        {
            let mut c = self.counters();
            c.chunks_sent += 1;
            c.sent_bytes += len;
        }
        self.tracer.record(Event::ChunkSent {
            upload: id.to_string(),
            index,
        });
        if buggify::fire(Site::ClientChunkBitFlip) {
            // Simulation only: the bytes are damaged after the checksum
            // was taken, as a link would damage them; the header still
            // names the true bytes, so the backend must refuse them.
            buggify::flip_bit(&mut buf);
        }
        let reply = self
            .request(
                Method::PUT,
                &format!("/uploads/{id}/chunks/{index}"),
                FramesBody::new([Bytes::from(buf)]),
                &[(CHECKSUM_HEADER, checksum)],
            )
            .await;
        let result = Self::chunk_result(index, reply);
        if let ChunkResult::Retry(reason) = &result {
            self.counters().chunk_failures += 1;
            self.tracer.record(Event::ChunkFailed {
                upload: id.to_string(),
                index,
                reason: reason.chars().take(120).collect(),
            });
        }
        result
    }

    /// What the backend's answer to chunk `index` means.
    fn chunk_result(index: u32, reply: Result<ClientReply, NoReply>) -> ChunkResult {
        match reply {
            Ok(reply) if reply.status == StatusCode::OK => {
                match serde_json::from_slice::<ChunkAccepted>(&reply.body) {
                    Ok(a) if a.index == index => ChunkResult::Accepted,
                    Ok(a) => ChunkResult::Fatal(ClientError::Protocol {
                        reason: format!(
                            "sent chunk {index}, the backend acknowledged chunk {}",
                            a.index
                        ),
                    }),
                    Err(e) => ChunkResult::Fatal(ClientError::Protocol {
                        reason: format!("bad chunk reply: {e}"),
                    }),
                }
            }
            // The upload ended meanwhile (complete, failed, aborted): the
            // next status query says how.
            Ok(reply) if matches!(reply.status, StatusCode::CONFLICT | StatusCode::GONE) => {
                ChunkResult::Ended
            }
            // Busy, window full, resuming, timeouts: try again later. A
            // checksum mismatch means the bytes were damaged on the way:
            // resending them is the fix.
            Ok(reply)
                if Self::transient(reply.status)
                    || Self::cause(&reply) == Cause::ChecksumMismatch =>
            {
                ChunkResult::Retry(Self::error_of(&reply).to_string())
            }
            Ok(reply) => ChunkResult::Fatal(Self::error_of(&reply)),
            Err(NoReply::Transient(e)) => ChunkResult::Retry(e),
            Err(NoReply::Fatal(e)) => ChunkResult::Fatal(e),
        }
    }
}
