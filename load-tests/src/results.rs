//! The common shape of `load-tests/results/<name>.json`, which every
//! scenario writes and `report` reads (load-tests/README.md documents it).
//! Hand-maintained files (criterion benches, replay, recovery) use the same
//! shape.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One result file: a scenario's run, or a hand-entered set of figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    /// File stem and the report's first column, e.g. `http`.
    pub scenario: String,
    /// Day of the measurement, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The command that produced the figures.
    pub command: String,
    pub machine: Machine,
    /// 1-minute load average of the machine before and after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1m: Option<LoadAvg>,
    pub figures: Vec<Figure>,
    /// Anything a reader needs to interpret the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub cores: u32,
    pub memory_gib: f64,
}

/// 1-minute load average (`/proc/loadavg`) before and after a measurement:
/// other work on the shared 2 cores shows here.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadAvg {
    pub before: f64,
    pub after: f64,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// What was measured, one line (the report's "what" column).
    pub name: String,
    pub value: f64,
    /// Unit of `value`, e.g. `req/s`, `ms`, `MiB`, `events/s`.
    pub unit: String,
    /// The goal as text, e.g. `< 10 ms`; absent when the figure has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// Whether the goal was met; absent when there is no goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    /// Load average around this figure's own measurement, when a run
    /// measures several things one after the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1m: Option<LoadAvg>,
}

impl Figure {
    /// A figure without a goal.
    pub fn info(name: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.to_owned(),
            goal: None,
            pass: None,
            load_1m: None,
        }
    }

    /// A figure with a goal and its verdict.
    pub fn goal(name: impl Into<String>, value: f64, unit: &str, goal: &str, pass: bool) -> Self {
        Self {
            goal: Some(goal.to_owned()),
            pass: Some(pass),
            ..Self::info(name, value, unit)
        }
    }

    pub fn with_load(mut self, load: LoadAvg) -> Self {
        self.load_1m = Some(load);
        self
    }
}

impl RunResult {
    /// A result of a run on this machine today.
    pub fn new(scenario: &str, command: String) -> Self {
        Self {
            scenario: scenario.to_owned(),
            date: crate::util::today_utc(),
            command,
            machine: crate::util::machine(),
            load_1m: None,
            figures: Vec::new(),
            note: None,
        }
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Writes `load-tests/results/<scenario>.json` and says where.
    pub fn write(&self) -> anyhow::Result<()> {
        let dir = results_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")?;
        println!("wrote {}", path.display());
        Ok(())
    }
}

pub fn results_dir() -> PathBuf {
    primetime_e2e::repo_root().join("load-tests/results")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_fields() {
        let text = r#"{"scenario":"x","date":"2026-11-23","command":"c",
            "machine":{"cores":2,"memory_gib":24},
            "figures":[{"name":"n","value":1.5,"unit":"ms","goal":"< 2 ms","pass":true}]}"#;
        let r: RunResult = serde_json::from_str(text).unwrap();
        assert_eq!(r.figures[0].pass, Some(true));
        assert!(r.load_1m.is_none());
        let again: RunResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again.figures[0].value, 1.5);
        let bad = text.replace("\"unit\"", "\"units\"");
        assert!(serde_json::from_str::<RunResult>(&bad).is_err());
    }
}
