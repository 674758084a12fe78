//! One attempt of stored mode: each metric's series against its stored samples under the rule of
//! [`crate::baseline::rule`], the machine's speed (probe) against its speed at the recording, and
//! the texts a verdict is assembled from.

use super::details::{ComparisonRow, RegressionDetails, NO_REGRESSION};
use super::params::RegressionParams;
use super::series::Series;
use crate::baseline::rule::{self, Comparison, Outcome};
use crate::baseline::session::Stored;
use crate::baseline::Direction;
use crate::gate::{Part, Skip, SkipCause, Threshold, TrialContext};
use crate::roofline::probe::PROBE_METRIC;

type Compared = Vec<(String, Comparison)>;

/// How the machine's speed (by the probe) compares with its speed when the baseline was recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum MachineState {
    Comparable,
    /// The probe is slower by more than `machine_tolerance`: a regression cannot be attributed.
    Slower,
    /// The probe is faster by more than `machine_tolerance`: a faster machine may hide a regression.
    Faster,
}

/// One attempt: each metric against its baseline, and the machine against its own baseline speed.
pub(super) struct Attempt {
    pub(super) compared: Compared,
    pub(super) machine: Comparison,
    pub(super) state: MachineState,
}

pub(super) fn compare_attempt(
    ctx: &TrialContext<'_>,
    p: &RegressionParams,
    series: &Series,
    stored: &Stored,
    attempt: &str,
) -> Result<Attempt, String> {
    let trial = ctx.trial.to_string();
    let seed = |name: &str| rule::seed_for(&[&trial, name, attempt]);
    let probe = &stored.probe;
    let machine = rule::compare(
        &series.probe_ms,
        &probe.samples,
        Direction::LowerIsBetter,
        p.machine_tolerance,
        p.confidence,
        p.resamples,
        seed(PROBE_METRIC),
    )
    .map_err(|e| format!("{PROBE_METRIC}: {e}"))?;
    let (lower, upper) = rule::band(p.machine_tolerance);
    let state = match machine.slowdown.point {
        x if x > upper => MachineState::Slower,
        x if x < lower => MachineState::Faster,
        _ => MachineState::Comparable,
    };
    let mut compared = Vec::new();
    for (m, b) in p.metrics.iter().zip(&stored.records) {
        let cur = series.values.get(m).map(Vec::as_slice).unwrap_or_default();
        let c = rule::compare(
            cur,
            &b.samples,
            m.direction(),
            p.tolerance_of(*m, ctx.backend_id()),
            p.confidence,
            p.resamples,
            seed(m.name()),
        )
        .map_err(|e| format!("{}: cannot compare with {}: {e}", m.name(), b.label()))?;
        compared.push((m.name().to_string(), c));
    }
    Ok(Attempt {
        compared,
        machine,
        state,
    })
}

impl Attempt {
    pub(super) fn insert_into(&self, details: &mut RegressionDetails, attempt: u8) {
        for (name, c) in &self.compared {
            details.comparisons.push(ComparisonRow {
                attempt,
                metric: name.clone(),
                slowdown: c.slowdown.point,
                slowdown_lo: c.slowdown.lo,
                slowdown_hi: c.slowdown.hi,
                regressed: c.outcome == Outcome::Regressed,
            });
        }
        details.machine_slowdown.push(self.machine.slowdown.point);
    }

    pub(super) fn describe(&self, p: &RegressionParams) -> String {
        let metrics = self
            .compared
            .iter()
            .zip(&p.metrics)
            .map(|((name, c), m)| c.describe(name, m.unit()))
            .collect::<Vec<_>>();
        let state = match self.state {
            MachineState::Comparable => "comparable",
            MachineState::Slower => "SLOWER than at the baseline",
            MachineState::Faster => "FASTER than at the baseline",
        };
        format!(
            "{} [machine speed by the probe: ×{:.3} ({:.1} → {:.1} ms), {state} (machine tolerance {:.0} %)]",
            metrics.join("; "),
            self.machine.slowdown.point,
            self.machine.baseline_median,
            self.machine.current_median,
            p.machine_tolerance * 100.0
        )
    }

    pub(super) fn regressed(&self) -> Vec<&str> {
        self.compared
            .iter()
            .filter(|(_, c)| c.outcome == Outcome::Regressed)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub(super) fn improved(&self) -> Vec<&str> {
        self.compared
            .iter()
            .filter(|(_, c)| c.outcome == Outcome::Improved)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The outcome of a trial with no confirmed regression, given the machine's state in its last
/// series: a pass, or inconclusive on a faster machine (a regression could hide in the extra speed).
pub(super) fn clean(
    state: MachineState,
    note: &str,
    text: String,
    machine: &Comparison,
) -> Result<Part, Skip> {
    match state {
        MachineState::Faster => Err(Skip::new(
            SkipCause::Inconclusive,
            format!(
                "{note}inconclusive: the machine is faster than when the baseline was recorded (the probe takes ×{:.3} of its time then), so a regression could hide in the extra speed; nothing regressed beyond the band: {text}. Re-run when the machine is as loaded as at the recording, or record a new baseline",
                machine.slowdown.point
            ),
        )),
        MachineState::Comparable | MachineState::Slower => Ok(Part::compare(
            NO_REGRESSION,
            0.0,
            Threshold::equal(0.0),
            format!("{note}{text}"),
        )),
    }
}
