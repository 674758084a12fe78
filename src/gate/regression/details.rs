//! What a regression trial records for the report: the compared metrics per attempt, the machine's
//! own slowdown, which mode decided and paired mode's result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::metric::Metric;
use crate::paired::{Answer, MetricResult};
use crate::pins::RuntimePin;

pub const NO_REGRESSION: &str = "no_regression";

/// One metric compared with its baseline in one attempt (1 = first series, 2 = re-measured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub attempt: u8,
    pub metric: String,
    /// Slowdown factor (> 1 = worse) and its CI.
    pub slowdown: f64,
    pub slowdown_lo: f64,
    pub slowdown_hi: f64,
    pub regressed: bool,
}

/// What the report reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegressionDetails {
    /// Median of each metric over the first series.
    pub medians: BTreeMap<Metric, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ms_median: Option<f64>,
    pub comparisons: Vec<ComparisonRow>,
    /// The machine's own slowdown (probe) per attempt.
    pub machine_slowdown: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_slowdown: Option<f64>,
    /// Which comparison decided (absent in update mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ComparisonMode>,
    /// What differs from the baseline's recording (`onnxruntime 1.31.1 → 1.32.0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Paired mode's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedSummary>,
}

/// Which comparison decided a regression verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonMode {
    /// With the numbers stored for this machine.
    Stored,
    /// Both runtimes measured in this job, interleaved.
    Paired,
}

impl ComparisonMode {
    pub fn label(self) -> &'static str {
        match self {
            ComparisonMode::Stored => "stored mode",
            ComparisonMode::Paired => "paired mode",
        }
    }
}

/// What a paired comparison inside the gate found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedSummary {
    pub baseline: RuntimePin,
    pub candidate: RuntimePin,
    pub rounds: usize,
    pub looks: usize,
    pub seed: u64,
    pub answer: Answer,
    pub metrics: Vec<MetricResult>,
    pub elapsed_s: f64,
}

/// The sub-series of a re-measurement after a suspected regression.
pub const REMEASURE: &str = "remeasure";
