//! The card's rows from the trial records: cost under pricing tiers, the claim table, and every
//! skip, degraded run and `no_data` with its reason ([`Issue`]).

use std::collections::BTreeMap;

use crate::gate::{Counts, Details, TrialId, Verdict};
use crate::measure::RunOutcome;

use super::super::input::{RunData, TrialRecord};

/// Cost per 1M tokens of one backend under one pricing tier, as the `economics.cost` gate wrote
/// it in its typed details.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    pub trial: TrialId,
    pub backend: String,
    pub tier: String,
    pub usd_per_1m: f64,
    pub tokens_per_s: Option<f64>,
}

pub fn cost_rows(trials: &[TrialRecord]) -> Vec<CostRow> {
    let mut out = Vec::new();
    for t in trials.iter().map(|t| &t.result) {
        let Some(Details::Cost(cost)) = &t.details else {
            continue;
        };
        for line in cost.lines.iter().filter(|l| l.usd_per_1m.is_finite()) {
            out.push(CostRow {
                trial: t.trial.clone(),
                backend: line.backend.clone(),
                tier: line.tier.clone(),
                usd_per_1m: line.usd_per_1m,
                tokens_per_s: Some(line.tokens_per_s).filter(|v| v.is_finite()),
            });
        }
    }
    out
}

/// What kind of missing evidence an [`Issue`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IssueKind {
    /// A trial that did not run (absent backend …).
    Skip,
    /// A run recorded as degraded (no latency).
    Degraded,
    /// A run that started and failed.
    Error,
    /// An energy (or other) measurement with no number, by design (TR122 gating).
    NoData,
}

impl IssueKind {
    pub fn label(&self) -> &'static str {
        match self {
            IssueKind::Skip => "skip",
            IssueKind::Degraded => "degraded",
            IssueKind::Error => "error",
            IssueKind::NoData => "no_data",
        }
    }
}

/// One reason, with how many runs/trials/events it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub kind: IssueKind,
    pub trial: TrialId,
    /// The sub-series or subject within the trial (e.g. `negative-control`, `prefill events`).
    pub within: Option<String>,
    pub count: usize,
    pub reason: String,
    /// A negative control that is meant to degrade (integrity.degraded_runs).
    pub expected: bool,
}

/// Every skip, degraded or failed run and `no_data`, grouped by trial and reason.
pub fn issues(data: &RunData) -> Vec<Issue> {
    type Key = (IssueKind, TrialId, Option<String>, String);
    let mut grouped: BTreeMap<Key, usize> = BTreeMap::new();
    for t in &data.trials {
        let r = &t.result;
        if let Some(skip) = r.skip() {
            *grouped
                .entry((IssueKind::Skip, r.trial.clone(), None, skip.reason.clone()))
                .or_default() += 1;
        }
        for n in &r.no_data {
            *grouped
                .entry((
                    IssueKind::NoData,
                    r.trial.clone(),
                    Some(n.subject.clone()),
                    n.reason.clone(),
                ))
                .or_default() += n.count;
        }
    }
    for r in &data.runs {
        let projected;
        let (kind, reason) = match &r.outcome {
            RunOutcome::Ok(_) => continue,
            RunOutcome::Projected(p) => {
                projected = p.describe();
                (IssueKind::Degraded, &projected)
            }
            RunOutcome::Degraded { reason } => (IssueKind::Degraded, reason),
            RunOutcome::Error { message } => (IssueKind::Error, message),
        };
        *grouped
            .entry((kind, r.trial.clone(), r.sub_series.clone(), reason.clone()))
            .or_default() += 1;
    }
    grouped
        .into_iter()
        .map(|((kind, trial, within, reason), count)| Issue {
            expected: within.as_deref() == Some(crate::gate::degraded_runs::NEGATIVE_CONTROL),
            kind,
            trial,
            within,
            count,
            reason,
        })
        .collect()
}

/// One row of the claim table: one gate, all its trials.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRow {
    /// `C1`, `C2` … in gate order of this run.
    pub id: String,
    pub gate: String,
    pub claim: String,
    pub source: String,
    /// `backend · scenario: VERDICT message` per trial (the measured numbers).
    pub evidence: Vec<String>,
    pub counts: Counts,
}

impl ClaimRow {
    /// The gate's verdict: the worst verdict of the trials that ran (FAIL > XPASS > XFAIL > INFO >
    /// PASS); SKIP only when none ran.
    pub fn verdict(&self) -> Verdict {
        Verdict::worst(
            Verdict::ALL
                .into_iter()
                .filter(|v| self.counts.get(*v) > 0 && v.ran()),
        )
        .unwrap_or(Verdict::Skip)
    }

    /// The verdict with every count behind it: `FAIL (1 FAIL, 2 PASS, 1 SKIP of 4 trials)`.
    pub fn verdict_words(&self) -> String {
        let counts: Vec<String> = Verdict::ALL
            .iter()
            .filter(|v| self.counts.get(**v) > 0)
            .map(|v| format!("{} {v}", self.counts.get(*v)))
            .collect();
        format!(
            "{} ({} of {} trials)",
            self.verdict(),
            counts.join(", "),
            self.counts.total()
        )
    }
}

pub fn claim_rows(data: &RunData) -> Vec<ClaimRow> {
    let mut order: Vec<String> = Vec::new();
    for t in data.results() {
        if !order.contains(&t.trial.gate) {
            order.push(t.trial.gate.clone());
        }
    }
    order
        .into_iter()
        .enumerate()
        .map(|(i, gate)| {
            let trials: Vec<&TrialRecord> = data
                .trials
                .iter()
                .filter(|t| t.result.trial.gate == gate)
                .collect();
            let info = data.gates.get(&gate);
            ClaimRow {
                id: format!("C{}", i + 1),
                claim: info.map_or_else(
                    || "(claim not recorded: gate file unavailable)".into(),
                    |g| g.claim.clone(),
                ),
                source: info.map_or_else(String::new, |g| g.source.clone()),
                evidence: trials
                    .iter()
                    .map(|t| {
                        let r = &t.result;
                        let at = match &r.trial.scenario {
                            Some(s) => format!("{} · {s}", r.trial.unit),
                            None => r.trial.unit.to_string(),
                        };
                        format!("{at}: {} {}", r.verdict, r.message)
                    })
                    .collect(),
                counts: Counts::of(trials.iter().map(|t| t.result.verdict)),
                gate,
            }
        })
        .collect()
}
