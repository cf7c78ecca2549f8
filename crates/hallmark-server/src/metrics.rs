//! The server's Prometheus metrics, served at `GET /metrics` on the admin
//! listener (no token, like `/live` and `/ready`; counts only, no identities).
//!
//! Counters and histograms are plain atomics updated on the issuance path;
//! gauges (connected agents, registry size, authority expiry) are read when
//! scraped. No global registry: the one [`Metrics`] lives in the server state.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hallmark_core::{Class, CredentialKind};

/// A latency histogram with fixed buckets (seconds), Prometheus-style
/// (cumulative on output).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b)
            && let Some(c) = self.counts.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Policy decisions take tens of microseconds to a few milliseconds.
const DECISION_BOUNDS: &[f64] = &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05];
/// Audit appends are group commits: milliseconds to tens of milliseconds.
pub const APPEND_BOUNDS: &[f64] = &[0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

pub(crate) const CLASSES: [Class; 3] = [Class::Machine, Class::Agent, Class::Human];

fn class_index(c: Class) -> usize {
    match c {
        Class::Machine => 0,
        Class::Agent => 1,
        Class::Human => 2,
    }
}

/// What the issuance path counts.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) issued: [[AtomicU64; CredentialKind::ALL.len()]; 3],
    pub(crate) denied: [AtomicU64; 3],
    pub(crate) decision: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { issued: Default::default(), denied: Default::default(), decision: Histogram::new(DECISION_BOUNDS) }
    }
}

impl Metrics {
    /// Counts a credential issued: an X.509-SVID (first issue or renewal) or a JWT-SVID.
    pub fn issued(&self, class: Class, kind: CredentialKind) {
        // Indexed as `render` lists them: in `CredentialKind::ALL` order.
        let k = CredentialKind::ALL.iter().position(|x| *x == kind);
        if let Some(c) = self.issued.get(class_index(class)).zip(k).and_then(|(row, k)| row.get(k)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a denial (by class rule or policy).
    pub fn denied(&self, class: Class) {
        if let Some(c) = self.denied.get(class_index(class)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how long one policy decision took.
    pub fn decision(&self, d: Duration) {
        self.decision.observe(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\nx_bucket{le=\"0.01\"} 2\nx_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3"));
    }
}
