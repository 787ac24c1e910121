//! The picture's SVG: four panels over one time axis (bytes committed per
//! upload, slots in use, reserved memory against its limit, waiters), a
//! strip of retry marks, and the fault bands, the liveness line, the
//! longest stall and the violations drawn across all of them.
//!
//! Coordinates: x grows with simulated time from [`LEFT`] to
//! `WIDTH - RIGHT`; each panel is [`PANEL_H`] high with its own y scale,
//! whose top is a "nice" number (1, 2 or 5 × 10ⁿ) at or above the panel's
//! largest value, labelled in the panel's unit.

use super::{escape, Band, Mark, Stall};
use crate::sim::timeline::{Sample, Timeline};
use std::fmt::Write;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 200.0;
/// Rows of fault labels above the first panel.
const LABEL_ROWS: usize = 4;
const LABEL_ROW_H: f64 = 13.0;
/// Room for the label rows and, under them, the first panel's title.
const TOP: f64 = 30.0 + LABEL_ROW_H * (LABEL_ROWS + 1) as f64;
/// A label's width per character, about, at 11 px.
const CHAR_W: f64 = 6.2;
const PANEL_H: f64 = 130.0;
const GAP: f64 = 34.0;
const STRIP_H: f64 = 22.0;
/// Uploads and users named in a legend; the rest are counted.
const LEGEND_MAX: usize = 8;
const MB: f64 = 1_000_000.0;

/// What [`draw`] draws.
pub(super) struct Drawing<'a> {
    pub timeline: &'a Timeline,
    pub end_ms: u64,
    pub liveness_from_ms: u64,
    pub bands: &'a [Band],
    pub marks: &'a [Mark],
    pub stall: Option<Stall>,
    pub files: usize,
}

/// One panel: a title with its unit, and its series.
struct Panel {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    series: Vec<Series>,
    /// A dashed limit line and its label.
    limit: Option<(f64, String)>,
}

struct Series {
    name: String,
    points: Vec<(u64, f64)>,
    width: f64,
    colour: String,
}

impl Drawing<'_> {
    fn x(&self, at_ms: u64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (at_ms.min(self.end_ms) as f64 / self.end_ms as f64)
    }
}

/// The whole SVG element.
pub(super) fn draw(d: &Drawing<'_>) -> String {
    let samples: Vec<&Sample> = d.timeline.samples().collect();
    let panels = panels(d, &samples);
    let strip_top = TOP + PANEL_H + GAP;
    let first_below = strip_top + STRIP_H + GAP;
    let tops: Vec<f64> = std::iter::once(TOP)
        .chain((1..panels.len()).map(|i| first_below + (i - 1) as f64 * (PANEL_H + GAP)))
        .collect();
    let bottom = tops.last().map_or(TOP, |t| t + PANEL_H);
    let height = bottom + 50.0;
    let mut s = format!(
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"the run over simulated time\">\n"
    );
    s.push_str(&backdrops(d, bottom));
    for (panel, &top) in panels.iter().zip(&tops) {
        s.push_str(&draw_panel(d, panel, top));
    }
    s.push_str(&retry_strip(d, strip_top));
    s.push_str(&time_axis(d, bottom));
    s.push_str(&violation_lines(d, bottom));
    s.push_str("</svg>\n");
    s
}

/// The four panels' data.
fn panels(d: &Drawing<'_>, samples: &[&Sample]) -> Vec<Panel> {
    let committed = (0..d.files)
        .map(|i| Series {
            name: format!("upload {i}"),
            points: samples
                .iter()
                .map(|s| {
                    (
                        s.at_ms,
                        s.committed_bytes.get(i).copied().unwrap_or(0) as f64 / MB,
                    )
                })
                .collect(),
            width: 1.5,
            colour: colour(i),
        })
        .collect();
    let mut users: Vec<&String> = samples.iter().flat_map(|s| s.user_in_use.keys()).collect();
    users.sort();
    users.dedup();
    let mut slots = vec![series("global", samples, 2.5, "#222", |s| {
        f64::from(s.global_in_use)
    })];
    slots.extend(users.iter().enumerate().map(|(i, u)| {
        Series {
            name: (*u).clone(),
            points: samples
                .iter()
                .map(|s| {
                    (
                        s.at_ms,
                        f64::from(s.user_in_use.get(*u).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            width: 1.0,
            colour: colour(i),
        }
    }));
    let limit_mb = d.timeline.memory_limit_bytes as f64 / MB;
    vec![
        Panel {
            id: "committed",
            title: "Bytes committed per upload",
            unit: "MB",
            series: committed,
            limit: None,
        },
        Panel {
            id: "slots",
            title: "Slots in use, global and per user",
            unit: "slots",
            series: slots,
            limit: None,
        },
        Panel {
            id: "memory",
            title: "Reserved memory against its limit",
            unit: "MB",
            series: vec![series("reserved", samples, 2.0, "#6a1b9a", |s| {
                s.reserved_bytes as f64 / MB
            })],
            limit: (limit_mb > 0.0).then(|| (limit_mb, format!("limit {limit_mb:.1} MB"))),
        },
        Panel {
            id: "waiters",
            title: "Uploads waiting for admission",
            unit: "waiters",
            series: vec![series("waiting", samples, 2.0, "#00695c", |s| {
                f64::from(s.waiting)
            })],
            limit: None,
        },
    ]
}

fn series(
    name: &str,
    samples: &[&Sample],
    width: f64,
    colour: &str,
    value: impl Fn(&Sample) -> f64,
) -> Series {
    Series {
        name: name.to_owned(),
        points: samples.iter().map(|s| (s.at_ms, value(s))).collect(),
        width,
        colour: colour.to_owned(),
    }
}

/// A colour for the i-th series, spread around the hue circle.
fn colour(i: usize) -> String {
    format!("hsl({}, 65%, 42%)", (i * 137) % 360)
}

/// Fault bands, the longest stall and the liveness line, behind everything.
fn backdrops(d: &Drawing<'_>, bottom: f64) -> String {
    let mut s = String::from("<g class=\"faults\">\n");
    // Labels go on the first row where they do not run into the last one.
    let mut row_ends = [f64::MIN; LABEL_ROWS];
    for (i, b) in d.bands.iter().enumerate() {
        let (x0, x1) = (d.x(b.from_ms), d.x(b.to_ms));
        let row = row_ends
            .iter()
            .position(|&end| end < x0)
            .unwrap_or(i % LABEL_ROWS);
        row_ends[row] = x0 + CHAR_W * b.kind.len() as f64 + 4.0;
        let label_y = TOP - 8.0 - LABEL_ROW_H * (row + 1) as f64;
        let _ = writeln!(
            s,
            "<g class=\"fault\"><title>{} at {:.1} s: {}</title><rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ef6c00\" fill-opacity=\"0.16\"/><line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"{:.1}\" y2=\"{TOP}\" stroke=\"#ef6c00\" stroke-opacity=\"0.5\"/><text x=\"{x0:.1}\" y=\"{label_y:.1}\" fill=\"#bf360c\">{}</text></g>",
            b.kind, b.from_ms as f64 / 1e3, escape(&b.detail),
            (x1 - x0).max(1.5), bottom - TOP, label_y + 2.0, b.kind
        );
    }
    s.push_str("</g>\n");
    if let Some(st) = d.stall {
        let (x0, x1) = (d.x(st.from_ms), d.x(st.to_ms));
        let _ = writeln!(
            s,
            "<g class=\"stall\"><title>no committed progress for {:.1} s</title><rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#9e9e9e\" fill-opacity=\"0.18\"/><text x=\"{x0:.1}\" y=\"{:.1}\" fill=\"#616161\">longest stall</text></g>",
            (st.to_ms - st.from_ms) as f64 / 1e3, (x1 - x0).max(1.5), bottom - TOP, bottom + 12.0
        );
    }
    let xl = d.x(d.liveness_from_ms);
    let _ = writeln!(
        s,
        "<g class=\"liveness\"><line x1=\"{xl:.1}\" x2=\"{xl:.1}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"#1565c0\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1565c0\">liveness phase (faults off)</text></g>",
        xl + 3.0, TOP + 12.0
    );
    s
}

/// One panel: frame, y axis with unit, series, limit, legend.
fn draw_panel(d: &Drawing<'_>, p: &Panel, top: f64) -> String {
    let data_max = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, v)| v))
        .chain(p.limit.iter().map(|&(v, _)| v))
        .fold(0.0, f64::max);
    let top_value = nice(data_max);
    let y = |v: f64| top + PANEL_H - PANEL_H * (v / top_value);
    // Counts take whole ticks: 0, 1 (, 2) rather than quarters of one.
    let ticks = if p.unit != "MB" && top_value < 4.0 {
        top_value as u32
    } else {
        4
    };
    let mut s = format!(
        "<g class=\"panel\" id=\"panel-{}\">\n<text class=\"panel-title\" x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{} ({})</text>\n<rect x=\"{LEFT}\" y=\"{top}\" width=\"{:.1}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#bbb\"/>\n",
        p.id, top - 6.0, p.title, p.unit, WIDTH - LEFT - RIGHT
    );
    for i in 0..=ticks {
        let v = top_value * f64::from(i) / f64::from(ticks);
        let _ = writeln!(
            s,
            "<text class=\"y-tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} {}</text>",
            LEFT - 6.0,
            y(v) + 4.0,
            tick_label(v),
            p.unit
        );
    }
    for series in &p.series {
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", d.x(t), y(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" points=\"{}\"><title>{}</title></polyline>",
            series.colour, series.width, points.join(" "), escape(&series.name)
        );
    }
    if let Some((v, label)) = &p.limit {
        let _ = writeln!(
            s,
            "<g class=\"limit\"><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">{}</text></g>",
            WIDTH - RIGHT, y(*v), y(*v), WIDTH - RIGHT + 6.0, y(*v) + 4.0, escape(label)
        );
    }
    s.push_str(&legend(p, top));
    s.push_str("</g>\n");
    s
}

/// A panel's legend, right of it: at most [`LEGEND_MAX`] names.
fn legend(p: &Panel, top: f64) -> String {
    let mut s = String::from("<g class=\"legend\">");
    let x = WIDTH - RIGHT + 10.0;
    for (i, series) in p.series.iter().take(LEGEND_MAX).enumerate() {
        let yy = top + 14.0 + 13.0 * i as f64;
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{yy:.1}\" fill=\"{}\">— {}</text>",
            series.colour,
            escape(&series.name)
        );
    }
    if p.series.len() > LEGEND_MAX {
        let yy = top + 14.0 + 13.0 * LEGEND_MAX as f64;
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{yy:.1}\">… and {} more</text>",
            p.series.len() - LEGEND_MAX
        );
    }
    s.push_str("</g>\n");
    s
}

/// Retries and restarts as ticks in their own strip.
fn retry_strip(d: &Drawing<'_>, top: f64) -> String {
    let mut s = format!(
        "<g class=\"retries\" id=\"retries\"><text class=\"panel-title\" x=\"{LEFT}\" y=\"{:.1}\">Retries and restarts ({} marks)</text><rect x=\"{LEFT}\" y=\"{top}\" width=\"{:.1}\" height=\"{STRIP_H}\" fill=\"none\" stroke=\"#ddd\"/>\n",
        top - 6.0, d.marks.len(), WIDTH - LEFT - RIGHT
    );
    for m in d.marks {
        let x = d.x(m.at_ms);
        let _ = writeln!(
            s,
            "<line class=\"retry\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#5d4037\"><title>{:.3} s: {}</title></line>",
            top + 3.0, top + STRIP_H - 3.0, m.at_ms as f64 / 1e3, escape(&m.what)
        );
    }
    s.push_str("</g>\n");
    s
}

/// The shared time axis, in simulated seconds.
fn time_axis(d: &Drawing<'_>, bottom: f64) -> String {
    let end_s = d.end_ms as f64 / 1e3;
    let step_s = nice(end_s / 10.0).max(0.001);
    let mut s = String::from("<g class=\"time-axis\">\n");
    let mut t = 0.0;
    while t <= end_s + 1e-9 {
        let x = d.x((t * 1e3) as u64);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{bottom}\" y2=\"{:.1}\" stroke=\"#999\"/><text class=\"x-tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 4.0, bottom + 16.0, tick_label(t)
        );
        t += step_s;
    }
    let _ = writeln!(
        s,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">simulated time (s)</text>\n</g>",
        (LEFT + WIDTH - RIGHT) / 2.0, bottom + 34.0
    );
    s
}

/// Each violation: a red line where it was found, its check's name.
fn violation_lines(d: &Drawing<'_>, bottom: f64) -> String {
    let mut s = String::from("<g class=\"violations\">\n");
    for p in d.timeline.violations() {
        let x = d.x(p.at_ms);
        let _ = writeln!(
            s,
            "<g class=\"violation\"><title>{} at {:.3} s: {}</title><line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"#c62828\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">✖ {}</text></g>",
            escape(p.violation.check), p.at_ms as f64 / 1e3, escape(&p.violation.detail),
            x + 3.0, TOP + 26.0, escape(p.violation.check)
        );
    }
    s.push_str("</g>\n");
    s
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v` (1 for nothing).
fn nice(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&n| n >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// A tick value, without trailing zeros.
fn tick_label(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers_bound_their_values() {
        for (v, n) in [
            (0.0, 1.0),
            (0.7, 1.0),
            (1.0, 1.0),
            (1.2, 2.0),
            (3.0, 5.0),
            (7.0, 10.0),
            (130.0, 200.0),
        ] {
            assert_eq!(nice(v), n, "{v}");
        }
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(40.0), "40");
    }
}
