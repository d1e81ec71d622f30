//! A bounded history of one member's counters (a ring buffer of samples), the rates
//! between samples, and small server-side SVG charts of them.
//!
//! Plain data: time comes in as a parameter (Unix milliseconds of the member that
//! took the sample), nothing here reads a clock.

use std::collections::VecDeque;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::html::escape;

/// Samples kept per member: one a second, five minutes.
pub(crate) const KEEP: usize = 300;

/// The cumulative counters of one node, summed over its contexts and peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// Requests through the session layer.
    pub(crate) requests: u64,
    /// Requests that committed a changed session.
    pub(crate) commits: u64,
    /// Channel messages sent and received.
    pub(crate) messages: u64,
    /// Channel payload bytes sent and received.
    pub(crate) bytes: u64,
    /// Acks received.
    pub(crate) acks: u64,
    /// Failed sends (channel and session replication).
    pub(crate) failures: u64,
    /// Sends whose ack timed out.
    pub(crate) timeouts: u64,
}

/// One series a chart can draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    Requests,
    Commits,
    Messages,
    Bytes,
    Acks,
    Failures,
    Timeouts,
}

impl Metric {
    fn value(self, c: &Counters) -> u64 {
        match self {
            Metric::Requests => c.requests,
            Metric::Commits => c.commits,
            Metric::Messages => c.messages,
            Metric::Bytes => c.bytes,
            Metric::Acks => c.acks,
            Metric::Failures => c.failures,
            Metric::Timeouts => c.timeouts,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Metric::Requests => "requests/s",
            Metric::Commits => "commits/s",
            Metric::Messages => "messages/s",
            Metric::Bytes => "bytes/s",
            Metric::Acks => "acks/s",
            Metric::Failures => "failures/s",
            Metric::Timeouts => "timeouts/s",
        }
    }

    /// Stroke colours with at least 4.5:1 contrast on white.
    fn colour(self) -> &'static str {
        match self {
            Metric::Requests | Metric::Messages | Metric::Acks => "#1a5fb4",
            Metric::Commits | Metric::Bytes => "#26734d",
            Metric::Failures => "#b3261e",
            Metric::Timeouts => "#8a4b00",
        }
    }
}

/// A sample: a member's counters at `at_ms` (its clock, Unix milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) at_ms: u64,
    pub(crate) counters: Counters,
}

/// The last [`KEEP`] samples of one member, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds a sample. One not newer than the last (a duplicate or a reordered report)
    /// is ignored; the oldest is dropped beyond [`KEEP`].
    pub(crate) fn push(&mut self, sample: Sample) {
        if self.samples.back().is_some_and(|last| last.at_ms >= sample.at_ms) {
            return;
        }
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The time of the oldest sample.
    pub(crate) fn first_at(&self) -> Option<u64> {
        self.samples.front().map(|s| s.at_ms)
    }

    /// The time of the newest sample.
    pub(crate) fn last_at(&self) -> Option<u64> {
        self.samples.back().map(|s| s.at_ms)
    }

    /// Per-second rates of `metric` between consecutive samples, at the later one's time.
    /// A counter that went down (it cannot, unless the process restarted under the same
    /// id) counts as zero.
    pub(crate) fn rates(&self, metric: Metric) -> Vec<(u64, f64)> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter(|(a, b)| b.at_ms > a.at_ms)
            .map(|(a, b)| {
                let delta = metric.value(&b.counters).saturating_sub(metric.value(&a.counters));
                (b.at_ms, delta as f64 * 1000.0 / (b.at_ms - a.at_ms) as f64)
            })
            .collect()
    }
}

/// Formats a rate for people: `0`, `3.5`, `120`, `4.2k`, `1.3M`.
pub(crate) fn human(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Chart size in CSS pixels.
const W: f64 = 132.0;
const H: f64 = 30.0;

/// A small SVG line chart of `metrics` from `history` over the `window_ms` before
/// `now_ms`, with the latest values as text and an accessible label naming `who`.
pub(crate) fn chart(who: &str, history: &History, metrics: &[Metric], now_ms: u64, window_ms: u64) -> String {
    let series: Vec<(Metric, Vec<(u64, f64)>)> = metrics.iter().map(|&m| (m, history.rates(m))).collect();
    let max = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let start = now_ms.saturating_sub(window_ms);
    let latest: Vec<String> = series
        .iter()
        .map(|(m, pts)| format!("{} {}", human(pts.last().map_or(0.0, |p| p.1)), m.label()))
        .collect();
    let summary = latest.join(", ");
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" role=\"img\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         aria-label=\"{label}\"><title>{label}</title>\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#f6f8fa\"/>",
        label = escape(&format!(
            "{who}: {summary} now; peak {} in the last {}",
            human(max),
            if window_ms >= 60_000 {
                format!("{} min", window_ms / 60_000)
            } else {
                format!("{} s", window_ms / 1000)
            }
        )),
    );
    for (m, pts) in &series {
        let visible: Vec<&(u64, f64)> = pts.iter().filter(|p| p.0 >= start).collect();
        let mut points = String::new();
        for (at, v) in &visible {
            let x = (at - start) as f64 / window_ms.max(1) as f64 * W;
            let y = H - 2.0 - v / top * (H - 4.0);
            let _ = write!(points, "{x:.1},{y:.1} ");
        }
        let _ = write!(
            svg,
            "<polyline class=\"series\" data-metric=\"{metric}\" data-points=\"{n}\" fill=\"none\" \
             stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{points}\"/>",
            metric = m.label(),
            n = visible.len(),
            colour = m.colour(),
            points = points.trim_end(),
        );
    }
    svg.push_str("</svg>");
    let _ = write!(svg, "<div class=\"now\">{}</div>", escape(&summary));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, requests: u64) -> Sample {
        Sample {
            at_ms: ms,
            counters: Counters {
                requests,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn rates_per_second_between_samples_and_bounded() {
        let mut h = History::default();
        h.push(at(1_000, 0));
        h.push(at(2_000, 10));
        h.push(at(2_000, 99)); // duplicate time: ignored
        h.push(at(1_500, 99)); // reordered: ignored
        h.push(at(2_500, 20));
        assert_eq!(h.rates(Metric::Requests), vec![(2_000, 10.0), (2_500, 20.0)]);
        for i in 0..(KEEP as u64 + 50) {
            h.push(at(10_000 + i * 1_000, i));
        }
        assert_eq!(h.len(), KEEP);
        assert_eq!(h.last_at(), Some(10_000 + (KEEP as u64 + 49) * 1_000));
    }

    #[test]
    fn chart_draws_only_the_window_and_labels_it() {
        let mut h = History::default();
        for i in 0..10u64 {
            h.push(at(i * 1_000, i * i));
        }
        let svg = chart("b", &h, &[Metric::Requests, Metric::Failures], 9_000, 5_000);
        // Rates at 4..=9 s (the window is 4 s..9 s; the rate at 1 s..3 s is left out).
        assert!(svg.contains("data-metric=\"requests/s\" data-points=\"6\""), "{svg}");
        assert!(svg.contains("data-metric=\"failures/s\" data-points=\"6\""), "{svg}");
        assert!(
            svg.contains("points=\"0.0,17.3 "),
            "the first point at the left edge: {svg}"
        );
        assert!(
            svg.contains("aria-label=\"b: 17 requests/s, 0 failures/s now; peak 17 in the last 5 s\""),
            "{svg}"
        );
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(3.46), "3.5");
        assert_eq!(human(120.2), "120");
        assert_eq!(human(4_200.0), "4.2k");
        assert_eq!(human(1_300_000.0), "1.3M");
    }
}
