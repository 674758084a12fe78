//! `regression.baseline` (the mission: the build fails when a stored baseline regresses, and only
//! then). For one backend × scenario: run a generation series, take each named metric per run, and
//! compare it with the baseline stored for this machine's fingerprint under the rule of
//! [`crate::baseline::rule`] — fail only when the slowdown CI lies wholly beyond the tolerance band
//! in the first series *and* in a re-measured one. With `INFERGATE_UPDATE_BASELINES=1` (or
//! `infergate baseline update`) the series is recorded as the new baseline instead.
//!
//! The machine's own speed is measured too ([`crate::roofline::probe`], timed between runs) and
//! compared with its speed at the recording. A shared machine's load changes that speed by far more
//! than any tolerance (measured here: ONNX Runtime 4–5× slower at load 8 than at load 2), so when the
//! probe differs by more than `machine_tolerance` only the conclusions the difference cannot explain
//! are drawn — a pass on a slower machine, a failure on a faster one — and the others are a SKIP
//! with the reason (inconclusive), never a guess.
//!
//! One part, `no_regression`: the number of metrics whose regression was confirmed (must be 0).
//! Recording a baseline (update mode) only reports it (INFO).

mod attempt;
mod details;
mod paired;
mod params;
mod series;
mod stored;
#[cfg(test)]
mod tests;
mod trial;

pub use crate::baseline::metric::Metric;
pub use details::{
    ComparisonMode, ComparisonRow, PairedSummary, RegressionDetails, NO_REGRESSION, REMEASURE,
};
pub use params::{PairedParams, RegressionParams};

use crate::baseline::Fingerprint;
use crate::gate::{Check, GateSpec};

/// The fingerprint the suite's regression gate compares under (for the manifest), if it has one.
pub fn fingerprint_of_suite(specs: &[GateSpec]) -> Option<String> {
    specs
        .iter()
        .find(|s| matches!(s.check, Check::Regression(_)))
        .and_then(|s| {
            let model = crate::model::catalog::lookup(&s.model)?;
            Some(Fingerprint::detect(&[model]).id())
        })
}
