//! The backend's Prometheus metrics (`GET /metrics`).
//!
//! Crate choice: `prometheus-client` (the Prometheus project's own Rust
//! client) rather than `metrics` + `metrics-exporter-prometheus`, because it
//! keeps metrics in a registry value instead of a process-global recorder:
//! tests and simulations run several backends in one process (one per
//! simulated boot), and each must count only its own. It also needs no HTTP
//! server of its own; the chunk API's server renders the text.
//!
//! What is counted, and where:
//! - `upsim_admissions_total{outcome, cause}`: every create and resume
//!   decision (`outcome` is `admitted` or `refused`; `cause` is the refusal's
//!   stable cause, `none` when admitted);
//! - `upsim_admission_wait_seconds`: how long admitted uploads waited for
//!   their slots;
//! - `upsim_received_bytes_total` / `upsim_committed_bytes_total`: chunk
//!   bytes taken into reorder windows / acknowledged by the drive;
//! - `upsim_retries_total{kind}`: drive piece retries, new drive sessions,
//!   resume admission retries;
//! - `upsim_uploads_ended_total{outcome}`: uploads completed or failed;
//! - gauges read at scrape time from admission, the upload table and the
//!   event streams.
//!
//! Invariant: counters only move forward; every gauge is set from one
//! snapshot just before rendering, never accumulated.

use crate::chunk_api::Cause;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The content type of the text rendering (OpenMetrics 1.0, which
/// Prometheus scrapes natively).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the admission wait histogram: the same
/// decades as the admission controller's own buckets, up to the default
/// 30 s slot wait timeout and beyond.
const WAIT_BUCKETS_SECONDS: [f64; 7] = [0.001, 0.01, 0.1, 1.0, 10.0, 30.0, 60.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    outcome: String,
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Where a retry happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// A drive request failed and is tried again after a backoff.
    DrivePiece,
    /// A drive session was lost and a new one started.
    DriveSession,
    /// Taking an upload back after a restart was refused for now.
    ResumeAdmission,
}

impl RetryKind {
    fn label(self) -> &'static str {
        match self {
            Self::DrivePiece => "drive_piece",
            Self::DriveSession => "drive_session",
            Self::ResumeAdmission => "resume_admission",
        }
    }
}

/// A snapshot for the gauges, taken just before rendering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GaugeSnapshot {
    /// Uploads receiving or resuming.
    pub active_uploads: u64,
    /// Global slots in use.
    pub global_slots_in_use: u64,
    /// The most slots any one user holds.
    pub user_slots_in_use_max: u64,
    /// Uploads waiting for admission.
    pub admission_waiting: u64,
    /// Memory reserved by uploads.
    pub reserved_bytes: u64,
    /// Chunk bytes held in reorder windows.
    pub buffered_bytes: u64,
    /// Chunk requests being received.
    pub chunks_in_flight: u64,
    /// 1 while draining for shutdown.
    pub draining: u64,
    /// Event streams open.
    pub event_streams_open: u64,
    /// Events tokens held (unexpired, and expired ones not yet pruned).
    pub event_tokens_held: u64,
}

/// The backend's metrics.
pub struct BackendMetrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    wait_seconds: Histogram,
    received_bytes: Counter,
    committed_bytes: Counter,
    retries: Family<KindLabels, Counter>,
    ended: Family<OutcomeLabels, Counter>,
    active_uploads: Gauge,
    global_slots_in_use: Gauge,
    user_slots_in_use_max: Gauge,
    admission_waiting: Gauge,
    reserved_bytes: Gauge,
    buffered_bytes: Gauge,
    chunks_in_flight: Gauge,
    draining: Gauge,
    event_streams_open: Gauge,
    event_tokens_held: Gauge,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Default for BackendMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendMetrics {
    /// Fresh metrics, all zero.
    ///
    /// Longer than the house's 70 lines on purpose: it is one flat list,
    /// a registration per metric in the order they render, and reads best
    /// as that list (split, the names and help texts would scatter).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("upsim");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission decisions by outcome and cause",
            admissions.clone(),
        );
        let wait_seconds = Histogram::new(WAIT_BUCKETS_SECONDS);
        registry.register(
            "admission_wait_seconds",
            "Time admitted uploads waited for their slots",
            wait_seconds.clone(),
        );
        let received_bytes = Counter::default();
        registry.register(
            "received_bytes",
            "Chunk bytes accepted into reorder windows",
            received_bytes.clone(),
        );
        let committed_bytes = Counter::default();
        registry.register(
            "committed_bytes",
            "Bytes the drive acknowledged holding",
            committed_bytes.clone(),
        );
        let retries = Family::<KindLabels, Counter>::default();
        registry.register("retries", "Retries by kind", retries.clone());
        let ended = Family::<OutcomeLabels, Counter>::default();
        registry.register("uploads_ended", "Uploads ended by outcome", ended.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let active_uploads = gauge(
            &mut registry,
            "active_uploads",
            "Uploads receiving or resuming",
        );
        let global_slots_in_use = gauge(&mut registry, "global_slots_in_use", "Global slots held");
        let user_slots_in_use_max = gauge(
            &mut registry,
            "user_slots_in_use_max",
            "The most slots held by any one user",
        );
        let admission_waiting = gauge(
            &mut registry,
            "admission_waiting",
            "Uploads waiting for admission",
        );
        let reserved_bytes = gauge(
            &mut registry,
            "reserved_memory_bytes",
            "Memory reserved by admitted uploads",
        );
        let buffered_bytes = gauge(
            &mut registry,
            "buffered_bytes",
            "Chunk bytes held in reorder windows",
        );
        let chunks_in_flight = gauge(
            &mut registry,
            "chunks_in_flight",
            "Chunk requests being received",
        );
        let draining = gauge(&mut registry, "draining", "1 while draining for shutdown");
        let event_streams_open = gauge(
            &mut registry,
            "event_streams_open",
            "Progress event streams open",
        );
        let event_tokens_held = gauge(
            &mut registry,
            "event_tokens_held",
            "Events tokens held for progress streams",
        );
        Self {
            registry,
            admissions,
            wait_seconds,
            received_bytes,
            committed_bytes,
            retries,
            ended,
            active_uploads,
            global_slots_in_use,
            user_slots_in_use_max,
            admission_waiting,
            reserved_bytes,
            buffered_bytes,
            chunks_in_flight,
            draining,
            event_streams_open,
            event_tokens_held,
        }
    }

    /// An upload was admitted after waiting `waited`.
    pub fn admitted(&self, waited: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                outcome: "admitted".into(),
                cause: "none".into(),
            })
            .inc();
        self.wait_seconds.observe(waited.as_secs_f64());
    }

    /// An upload was refused with `cause`.
    pub fn refused(&self, cause: Cause) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                outcome: "refused".into(),
                cause: cause.as_str().to_owned(),
            })
            .inc();
    }

    /// `bytes` of chunk bodies entered a reorder window.
    pub fn received(&self, bytes: u64) {
        self.received_bytes.inc_by(bytes);
    }

    /// The drive acknowledged `bytes` more.
    pub fn committed(&self, bytes: u64) {
        self.committed_bytes.inc_by(bytes);
    }

    /// A retry of `kind`.
    pub fn retry(&self, kind: RetryKind) {
        self.retries
            .get_or_create(&KindLabels {
                kind: kind.label().into(),
            })
            .inc();
    }

    /// An upload ended (`complete` or `failed`).
    pub fn ended(&self, outcome: &'static str) {
        self.ended
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text rendering, gauges set from `gauges` first.
    pub fn render(&self, gauges: GaugeSnapshot) -> String {
        self.active_uploads.set(gauge_value(gauges.active_uploads));
        self.global_slots_in_use
            .set(gauge_value(gauges.global_slots_in_use));
        self.user_slots_in_use_max
            .set(gauge_value(gauges.user_slots_in_use_max));
        self.admission_waiting
            .set(gauge_value(gauges.admission_waiting));
        self.reserved_bytes.set(gauge_value(gauges.reserved_bytes));
        self.buffered_bytes.set(gauge_value(gauges.buffered_bytes));
        self.chunks_in_flight
            .set(gauge_value(gauges.chunks_in_flight));
        self.draining.set(gauge_value(gauges.draining));
        self.event_streams_open
            .set(gauge_value(gauges.event_streams_open));
        self.event_tokens_held
            .set(gauge_value(gauges.event_tokens_held));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing into a String cannot fail; say so rather than panic.
            tracing::error!(%error, "rendering metrics failed");
        }
        text
    }
}

/// Reads one sample from a rendering: the value of the line that starts
/// with `series` (name and labels exactly as rendered). For tests and
/// tools that sample `/metrics`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = BackendMetrics::new();
        m.admitted(Duration::from_millis(5));
        m.refused(Cause::SlotsBusy);
        m.refused(Cause::SlotsBusy);
        m.received(10);
        m.committed(7);
        m.retry(RetryKind::DrivePiece);
        m.ended("complete");
        let text = m.render(GaugeSnapshot {
            global_slots_in_use: 3,
            ..GaugeSnapshot::default()
        });
        assert_eq!(
            sample(
                &text,
                r#"upsim_admissions_total{outcome="refused",cause="slots_busy"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(sample(&text, "upsim_received_bytes_total"), Some(10.0));
        assert_eq!(sample(&text, "upsim_committed_bytes_total"), Some(7.0));
        assert_eq!(sample(&text, "upsim_global_slots_in_use"), Some(3.0));
        assert_eq!(
            sample(&text, "upsim_admission_wait_seconds_count"),
            Some(1.0)
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
