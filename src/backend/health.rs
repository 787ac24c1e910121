//! Health and metrics glue: `GET /healthz` ([`Health`], with a drive probe)
//! and `GET /metrics` (the gauges read from the backend's state, rendered
//! by [`metrics`](super::metrics)).

use super::breaker::BreakerState;
use super::metrics::{GaugeSnapshot, METRICS_CONTENT_TYPE};
use super::server::{ms, Backend};
use super::upload::Upload;
use crate::admission::{AdmissionMetrics, AdmissionState};
use crate::auth::Auth;
use crate::chunk_api::Phase;
use crate::wire::Reply;
use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Full;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long `GET /healthz` waits for a TCP connection to the drive.
const DRIVE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Slots, reservations, waiters.
    pub admission: AdmissionState,
    /// Outcomes since start.
    pub metrics: AdmissionMetrics,
    /// The drive link's breaker.
    pub drive: BreakerState,
    /// Uploads in memory by phase.
    pub uploads: BTreeMap<String, u32>,
    /// `ok`, `degraded` (the drive is unreachable) or `draining`.
    pub status: &'static str,
    /// Whether the drive answers a TCP connection now (only from
    /// `GET /healthz`, which probes it).
    pub drive_link: Option<DriveLink>,
    /// Whether the per-user maps were left out (token mode: `/healthz`
    /// answers without authentication, and they name users).
    pub per_user_redacted: bool,
}

/// The drive probe of `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct DriveLink {
    /// Whether a TCP connection to the drive opened in time.
    pub reachable: bool,
    /// How long it took (or how long was waited), ms.
    pub probe_ms: u64,
    /// Why not, when not.
    pub error: Option<String>,
}

impl Backend {
    /// The health report, without probing the drive.
    pub fn health(&self) -> Health {
        let mut uploads = BTreeMap::new();
        for u in self.uploads().values() {
            let phase = format!("{:?}", u.lock().phase).to_lowercase();
            *uploads.entry(phase).or_insert(0) += 1;
        }
        let draining = self.inner.draining.load(Ordering::Acquire);
        Health {
            admission: self.inner.env.admission.state(),
            metrics: self.inner.env.admission.metrics(),
            drive: self.breaker().state(),
            uploads,
            status: if draining { "draining" } else { "ok" },
            drive_link: None,
            per_user_redacted: false,
        }
    }

    /// The health report with a drive probe (a TCP connection, bounded by
    /// `DRIVE_PROBE_TIMEOUT`, 2 s). Always answered with 200: an unreachable
    /// drive makes the backend `degraded` (uploads in flight wait and
    /// retry), not dead, so a liveness check must not restart it.
    pub async fn health_probed(&self) -> Health {
        let clock = &self.inner.env.clock;
        let started = clock.now();
        let probe = clock
            .timeout(DRIVE_PROBE_TIMEOUT, self.drive_client().probe())
            .await;
        let probe_ms = ms(clock.now().saturating_sub(started));
        let error = match probe {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.to_string()),
            None => Some(format!(
                "no connection within {} ms",
                ms(DRIVE_PROBE_TIMEOUT)
            )),
        };
        let mut health = self.health();
        if error.is_some() && health.status == "ok" {
            health.status = "degraded";
        }
        health.drive_link = Some(DriveLink {
            reachable: error.is_none(),
            probe_ms,
            error,
        });
        health
    }

    /// What `GET /healthz` answers anyone: [`health_probed`](Self::health_probed),
    /// less the per-user figures when requests are authenticated (they
    /// name users and what they uploaded today; the totals stay).
    pub(super) async fn health_public(&self) -> Health {
        let mut health = self.health_probed().await;
        if matches!(self.inner.config.auth, Auth::Tokens(_)) {
            health.admission.ledger.user_in_use.clear();
            health.admission.ledger.quota_charged.clear();
            health.per_user_redacted = true;
        }
        health
    }

    /// `GET /metrics`: the Prometheus text rendering.
    pub fn metrics_text(&self) -> String {
        let admission = self.inner.env.admission.state();
        let uploads: Vec<Arc<Upload>> = self.uploads().values().cloned().collect();
        let mut gauges = GaugeSnapshot {
            global_slots_in_use: u64::from(admission.ledger.global_in_use),
            user_slots_in_use_max: admission
                .ledger
                .user_in_use
                .values()
                .copied()
                .max()
                .map_or(0, u64::from),
            admission_waiting: u64::from(admission.ledger.waiting),
            reserved_bytes: admission.ledger.reserved_bytes,
            chunks_in_flight: self.inner.chunks_in_flight.load(Ordering::Acquire),
            draining: u64::from(self.inner.draining.load(Ordering::Acquire)),
            event_streams_open: self.inner.event_streams.open_count() as u64,
            event_tokens_held: self.inner.event_tokens.len() as u64,
            ..GaugeSnapshot::default()
        };
        for u in &uploads {
            let state = u.lock();
            if matches!(state.phase, Phase::Receiving | Phase::Resuming) {
                gauges.active_uploads += 1;
            }
            gauges.buffered_bytes += Upload::buffered_bytes(&state);
        }
        self.inner.metrics.render(gauges)
    }

    pub(super) fn metrics_reply(&self) -> Reply {
        let mut reply = Response::new(Full::new(Bytes::from(self.metrics_text())));
        reply.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        );
        reply
    }
}

/// A read-only view of what a backend buffers, for the simulation's
/// checks. It holds the backend weakly: a crashed boot's backend is gone,
/// not kept alive by its observer.
#[derive(Clone)]
pub struct BufferGauge(std::sync::Weak<super::server::Inner>);

impl BufferGauge {
    /// Every upload's buffered bytes and bounds, in id order; empty once
    /// the backend is gone.
    pub fn uploads(&self) -> Vec<super::upload::BufferedUpload> {
        self.with_uploads(|uploads| uploads.iter().map(|u| u.buffered()).collect())
    }

    /// `read` of every upload, in id order (taken out of the map's lock
    /// first); empty once the backend is gone.
    pub(super) fn with_uploads<T>(&self, read: impl FnOnce(&[Arc<Upload>]) -> Vec<T>) -> Vec<T> {
        let Some(inner) = self.0.upgrade() else {
            return Vec::new();
        };
        let backend = Backend { inner };
        let uploads: Vec<Arc<Upload>> = backend.uploads().values().cloned().collect();
        read(&uploads)
    }
}

impl Backend {
    /// A read-only gauge of what this backend buffers.
    pub fn buffer_gauge(&self) -> BufferGauge {
        BufferGauge(Arc::downgrade(&self.inner))
    }
}
