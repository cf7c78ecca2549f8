//! The evidence a drill leaves: what was done and when, what was measured,
//! and whether each control held, as Markdown for people and JSON for tools.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One thing the drill did or saw.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What.
    pub what: String,
}

/// A figure, against its target when it has one.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Milliseconds, or `None` when it could not be measured (the control says why).
    pub value_ms: Option<i64>,
    /// The target, in words.
    pub target: String,
}

/// A control: a property that must hold, with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Control {
    /// The property.
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// What shows it, in one line.
    pub evidence: String,
}

/// A drill's whole record.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `server-outage`, `revocation`, `ca-rotation`, `node-ban`.
    pub drill: String,
    /// `self-contained` or `live`.
    pub mode: String,
    /// The deployment's admin API.
    pub server: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds.
    pub finished_at_ms: i64,
    /// In order.
    pub steps: Vec<Step>,
    /// Figures.
    pub measurements: Vec<Measurement>,
    /// Properties and whether they held.
    pub controls: Vec<Control>,
    /// True when every control held.
    pub passed: bool,
}

impl Report {
    /// A report starting now.
    pub fn new(drill: &str, mode: &str, server: &str) -> Self {
        Self {
            drill: drill.into(),
            mode: mode.into(),
            server: server.into(),
            trust_domain: String::new(),
            started_at_ms: now_ms(),
            finished_at_ms: 0,
            steps: Vec::new(),
            measurements: Vec::new(),
            controls: Vec::new(),
            passed: false,
        }
    }

    /// Records a step (and says it on stderr, so an operator can follow).
    pub fn step(&mut self, what: impl Into<String>) {
        let s = Step { at_ms: now_ms(), what: what.into() };
        eprintln!("[{:>7} ms] {}", s.at_ms - self.started_at_ms, s.what);
        self.steps.push(s);
    }

    /// Records a figure.
    pub fn measure(&mut self, name: &str, value_ms: Option<i64>, target: &str) {
        self.measurements.push(Measurement { name: name.into(), value_ms, target: target.into() });
    }

    /// Records a control.
    pub fn control(&mut self, name: &str, held: bool, evidence: impl Into<String>) {
        self.controls.push(Control { name: name.into(), held, evidence: evidence.into() });
    }

    /// Closes the report: the verdict is that of the controls (none at all is a failure).
    pub fn finish(&mut self) {
        self.finished_at_ms = now_ms();
        self.passed = !self.controls.is_empty() && self.controls.iter().all(|c| c.held);
    }

    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let verdict = if self.passed { "PASSED: every control held" } else { "FAILED: a control did not hold" };
        m.push_str(&format!("# Hallmark drill: {}\n\n**{verdict}**\n\n", self.drill));
        m.push_str(&format!(
            "- Mode: {}\n- Deployment: {} (trust domain `{}`)\n- Started: {}, finished: {}, {} ms in all\n\n",
            self.mode,
            self.server,
            self.trust_domain,
            hallmark_core::time::rfc3339(self.started_at_ms.div_euclid(1000)),
            hallmark_core::time::rfc3339(self.finished_at_ms.div_euclid(1000)),
            self.finished_at_ms - self.started_at_ms
        ));
        m.push_str("## Controls\n\n| control | held | evidence |\n|---|:-:|---|\n");
        for c in &self.controls {
            m.push_str(&format!("| {} | {} | {} |\n", c.name, if c.held { "yes" } else { "**NO**" }, c.evidence));
        }
        m.push_str("\n## Measurements\n\n| measurement | value | target |\n|---|---:|---|\n");
        for x in &self.measurements {
            let v = x.value_ms.map(|v| format!("{v} ms")).unwrap_or_else(|| "not measured".into());
            m.push_str(&format!("| {} | {v} | {} |\n", x.name, x.target));
        }
        m.push_str("\n## Steps\n\n| at (ms from start) | step |\n|---:|---|\n");
        for s in &self.steps {
            m.push_str(&format!("| {} | {} |\n", s.at_ms - self.started_at_ms, s.what));
        }
        m
    }

    /// Writes `report.md` and `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn the_verdict_is_that_of_the_controls() {
        let mut r = Report::new("revocation", "self-contained", "http://127.0.0.1:1");
        r.finish();
        assert!(!r.passed, "a drill that checked nothing did not pass");
        r.control("a", true, "ok");
        r.measure("m", Some(12), "under 1000 ms");
        r.finish();
        assert!(r.passed);
        r.control("b", false, "it did not");
        r.finish();
        assert!(!r.passed);
        let md = r.markdown();
        assert!(md.contains("FAILED") && md.contains("| b | **NO** | it did not |") && md.contains("12 ms"));
    }
}
