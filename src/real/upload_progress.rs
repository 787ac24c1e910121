//! What `upsim upload` shows while it works: bytes *sent* (read from the
//! file for sending, resends included) beside bytes *committed* (on the
//! drive, as the backend's event stream reports them), with the committed
//! rate and the time left at that rate.
//!
//! On a terminal: two bars redrawn in place (indicatif). Anywhere else (a
//! file, a pipe, CI): one plain line at most every
//! [`PLAIN_LINE_INTERVAL`], and only when something moved — never a
//! carriage return.
//!
//! The rate is measured over the last [`RATE_WINDOW`] of real time (the
//! upload's pace now, not its average since a slow admission).

use crate::units::human_bytes;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the bars redraw on their own.
const TICK: Duration = Duration::from_millis(250);
/// Off a terminal, at most one line this often.
pub const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(1);
/// The committed rate is measured over this much time.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Samples kept for the rate: one a tick over the window, and some room.
const RATE_SAMPLES_MAX: usize = 128;

/// The committed rate over a sliding window.
#[derive(Debug, Default)]
pub struct Meter {
    /// (when, committed bytes), oldest first; at most
    /// [`RATE_SAMPLES_MAX`], none older than [`RATE_WINDOW`] unless there
    /// are only two (sparse reports still give a rate, over their span).
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    /// Records `committed` at `now`.
    pub fn record(&mut self, now: Instant, committed: u64) {
        if let Some(&(_, last)) = self.samples.back() {
            if committed < last {
                // A new drive session started again from 0: so does the rate.
                self.samples.clear();
            }
        }
        self.samples.push_back((now, committed));
        while self.samples.len() > RATE_SAMPLES_MAX
            || (self.samples.len() > 2
                && self
                    .samples
                    .front()
                    .is_some_and(|&(t, _)| now.duration_since(t) > RATE_WINDOW))
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window, if it spans any time.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.duration_since(t0).as_secs_f64();
        (span > 0.0).then(|| b1.saturating_sub(b0) as f64 / span)
    }

    /// Time left for `remaining` bytes at the rate, if it is positive.
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        self.rate()
            .filter(|&r| r > 0.0)
            .map(|r| Duration::from_secs_f64(remaining as f64 / r))
    }
}

/// One progress line: sent and committed with their shares, rate, ETA.
pub fn plain_line(sent: u64, committed: u64, total: u64, meter: &Meter) -> String {
    let share = |b: u64| {
        if total == 0 {
            100.0
        } else {
            b.min(total) as f64 * 100.0 / total as f64
        }
    };
    let rate = meter.rate().map_or_else(
        || "rate –".to_owned(),
        |r| format!("{}/s", human_bytes(r as u64)),
    );
    let eta = meter
        .eta(total.saturating_sub(committed))
        .map_or_else(|| "ETA –".to_owned(), |d| format!("ETA {} s", d.as_secs()));
    format!(
        "sent {} ({:.1} %), committed {} of {} ({:.1} %), {rate}, {eta}",
        human_bytes(sent.min(total)),
        share(sent),
        human_bytes(committed.min(total)),
        human_bytes(total),
        share(committed),
    )
}

/// The display: bars on a terminal, plain lines elsewhere.
#[derive(Clone)]
pub struct UploadDisplay {
    inner: Arc<Shared>,
}

struct Shared {
    total: u64,
    /// Bytes read for sending since the start, resends included.
    read: AtomicU64,
    /// Committed when this run started (a resumed upload's head start).
    base: AtomicU64,
    committed: AtomicU64,
    meter: Mutex<Meter>,
    /// `None` off a terminal.
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
    /// Off a terminal: the last line printed and when.
    last_plain: Mutex<(Option<Instant>, String)>,
}

impl UploadDisplay {
    /// A display of an upload of `total` bytes, on standard error.
    pub fn new(total: u64) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = |template: &str| {
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
            };
            let sent = multi.add(ProgressBar::new(total));
            sent.set_style(style("sent      {bar:40} {bytes}/{total_bytes}"));
            let committed = multi.add(ProgressBar::new(total));
            committed.set_style(style(
                "committed {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            ));
            for bar in [&sent, &committed] {
                bar.enable_steady_tick(TICK);
            }
            (multi, sent, committed)
        });
        Self {
            inner: Arc::new(Shared {
                total,
                read: AtomicU64::new(0),
                base: AtomicU64::new(0),
                committed: AtomicU64::new(0),
                meter: Mutex::new(Meter::default()),
                bars,
                last_plain: Mutex::new((None, String::new())),
            }),
        }
    }

    /// `len` more bytes read for sending.
    pub fn read(&self, len: u64) {
        let s = &self.inner;
        let read = s.read.fetch_add(len, Ordering::Relaxed) + len;
        if let Some((_, sent, _)) = &s.bars {
            sent.set_position(
                s.base
                    .load(Ordering::Relaxed)
                    .saturating_add(read)
                    .min(s.total),
            );
        }
    }

    /// The drive holds `committed` bytes (from the event stream, or a
    /// status reply). The first report is the run's head start.
    pub fn committed(&self, committed: u64) {
        let s = &self.inner;
        if s.committed.swap(committed, Ordering::Relaxed) == 0
            && s.read.load(Ordering::Relaxed) == 0
        {
            s.base.store(committed, Ordering::Relaxed);
        }
        s.meter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(Instant::now(), committed);
        if let Some((_, _, bar)) = &s.bars {
            bar.set_position(committed.min(s.total));
        }
    }

    /// The line for now; printed off a terminal if something moved and
    /// [`PLAIN_LINE_INTERVAL`] has passed since the last one.
    pub fn tick(&self) {
        let s = &self.inner;
        if s.bars.is_some() {
            return;
        }
        let sent = s.base.load(Ordering::Relaxed) + s.read.load(Ordering::Relaxed);
        let committed = s.committed.load(Ordering::Relaxed);
        let line = {
            let meter = s.meter.lock().unwrap_or_else(PoisonError::into_inner);
            plain_line(sent, committed, s.total, &meter)
        };
        let mut last = s.last_plain.lock().unwrap_or_else(PoisonError::into_inner);
        let due = last.0.is_none_or(|t| t.elapsed() >= PLAIN_LINE_INTERVAL);
        if due && line != last.1 {
            eprintln!("{line}");
            *last = (Some(Instant::now()), line);
        }
    }

    /// A line above the bars (or just a line).
    pub fn say(&self, line: &str) {
        match &self.inner.bars {
            Some((multi, _, _)) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// The end: bars finished with `message`, or the last plain line.
    pub fn finish(&self, message: &'static str, success: bool) {
        match &self.inner.bars {
            Some((_, sent, committed)) => {
                for bar in [sent, committed] {
                    if success {
                        bar.finish_with_message(message);
                    } else {
                        bar.abandon_with_message(message);
                    }
                }
            }
            None => {
                self.inner
                    .last_plain
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .0 = None;
                self.tick();
                eprintln!("{message}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    #[test]
    fn the_rate_is_the_windows_and_a_new_session_starts_it_again() {
        let t0 = Instant::now();
        let mut meter = Meter::default();
        assert_eq!(meter.rate(), None);
        meter.record(t0, 0);
        assert_eq!(meter.rate(), None, "no span yet");
        meter.record(t0 + Duration::from_secs(2), 20 * MIB);
        assert_eq!(meter.rate(), Some(10.0 * MIB as f64));
        assert_eq!(meter.eta(30 * MIB), Some(Duration::from_secs(3)));
        // Far later, at another pace: only the window counts.
        meter.record(t0 + Duration::from_secs(60), 30 * MIB);
        meter.record(t0 + Duration::from_secs(62), 34 * MIB);
        assert_eq!(meter.rate(), Some(2.0 * MIB as f64));
        meter.record(t0 + Duration::from_secs(63), 0);
        assert_eq!(meter.rate(), None, "a new drive session");
        assert_eq!(meter.eta(1), None);
    }

    #[test]
    fn a_plain_line_says_sent_committed_rate_and_eta() {
        let t0 = Instant::now();
        let mut meter = Meter::default();
        meter.record(t0, 0);
        meter.record(t0 + Duration::from_secs(1), 16 * MIB);
        assert_eq!(
            plain_line(24 * MIB, 16 * MIB, 64 * MIB, &meter),
            "sent 24.00 MB (37.5 %), committed 16.00 MB of 64.00 MB (25.0 %), 16.00 MB/s, ETA 3 s"
        );
        assert_eq!(
            plain_line(0, 0, 64 * MIB, &Meter::default()),
            "sent 0 B (0.0 %), committed 0 B of 64.00 MB (0.0 %), rate –, ETA –"
        );
    }
}
