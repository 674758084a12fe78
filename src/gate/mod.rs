//! Gates: gate files ([`spec`]), the kinds of check they name ([`Check`], one file per kind, each
//! implementing [`GateKind`]), and the typed result of a trial ([`TrialResult`]) whose verdict is
//! derived in one place ([`verdict::derive`]).
//!
//! This file is the one place that lists every kind of check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::Availability;
use crate::measure::{RunOutcome, RunPhase, RunRecord};
use crate::workload::Scenario;

pub mod across_backends;
pub mod compile_real;
pub mod context;
pub mod decode_fraction;
pub mod degraded_runs;
pub mod distribution;
pub mod economics;
pub mod energy_gating;
pub mod finding;
pub mod known;
pub mod model_identity;
pub mod perplexity_delta;
pub mod regression;
pub mod scaling_fit;
pub mod spec;
pub mod verdict;
pub mod warmup_ratio;

pub use crate::id::{TrialId, Unit};
pub use context::{BackendDoor, TrialContext};
pub use finding::{Finding, Part, Threshold};
pub use known::KnownFailure;
pub use spec::{GateSpec, ProfileSettings};
pub use verdict::{Counts, Outcome, Skip, SkipCause, Verdict};

/// The check a gate performs, with its parameters (`[check]` of a gate file, `kind = "…"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// TR121: median `kv_decode_ms / e2e_ms` above a threshold; KV-cached tokens = full recompute.
    DecodeFraction(decode_fraction::DecodeFractionParams),
    /// The model measured is the model claimed: parameter counts and a perplexity sanity bound.
    ModelIdentity(model_identity::ModelIdentityParams),
    /// Failures are visible, never placeholders.
    DegradedRuns(degraded_runs::DegradedRunsParams),
    /// Accuracy against a reference backend on the same weights and text.
    PerplexityDelta(perplexity_delta::PerplexityDeltaParams),
    /// Energy attributed to prefill/decode events only where the sensor can see them.
    EnergyGating(energy_gating::EnergyGatingParams),
    /// Every backend label proven by runtime evidence; negative controls must be caught.
    CompileReal(compile_real::CompileRealParams),
    /// TR121 (C4/C5, §10.2 rule 1): log latency on log params over a synthetic model family.
    ScalingFit(scaling_fit::ScalingFitParams),
    /// §10.2 rule 4: cold (first run after open) median / steady median.
    WarmupRatio(warmup_ratio::WarmupRatioParams),
    /// TR117 / §10.2 rule 5: latency distributions; a winner only with a clear CI.
    Distribution(distribution::DistributionParams),
    /// TR119 / C3: cost per 1M tokens per pricing tier; ordering invariant under the tier.
    EconomicsCost(economics::EconomicsParams),
    /// A stored baseline regresses: slowdown CI wholly beyond the tolerance band, confirmed.
    Regression(regression::RegressionParams),
}

impl Check {
    /// The kind behind this check.
    pub fn kind(&self) -> &dyn GateKind {
        match self {
            Check::DecodeFraction(p) => p,
            Check::ModelIdentity(p) => p,
            Check::DegradedRuns(p) => p,
            Check::PerplexityDelta(p) => p,
            Check::EnergyGating(p) => p,
            Check::CompileReal(p) => p,
            Check::ScalingFit(p) => p,
            Check::WarmupRatio(p) => p,
            Check::Distribution(p) => p,
            Check::EconomicsCost(p) => p,
            Check::Regression(p) => p,
        }
    }
}

/// What a trial produced beyond its findings, for the report (typed, never keys built as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "details", rename_all = "snake_case")]
pub enum Details {
    Distribution(distribution::DistributionDetails),
    Cost(economics::CostDetails),
    Scaling(scaling_fit::ScalingDetails),
    Warmup(warmup_ratio::WarmupDetails),
    Regression(Box<regression::RegressionDetails>),
}

/// Everything the runner knows about a trial before running it.
pub struct PlanContext<'a> {
    pub spec: &'a GateSpec,
    pub unit: &'a Unit,
    pub scenario: Option<&'a Scenario>,
    /// Whether a backend can run here (cached by the runner).
    pub availability: &'a dyn Fn(&str) -> Availability,
}

/// One kind of check: what its trials are, what it needs before running, and how it judges.
pub trait GateKind {
    /// The parts of the claim this kind reports a finding for (known failures name one).
    fn parts(&self) -> &'static [&'static str];

    /// The trials' units before scenarios: by default one per backend of the gate.
    fn units(&self, backends: &[String]) -> Vec<Unit> {
        backends.iter().map(|b| Unit::backend(b)).collect()
    }

    /// The gate's scenarios are aggregated inside one trial instead of one trial per scenario.
    fn aggregates_scenarios(&self) -> bool {
        false
    }

    /// The trial runs even when its backend is absent (recording that honestly is the check).
    fn runs_with_absent_backend(&self) -> bool {
        false
    }

    /// Parameter checks the gate-file loader runs (the message goes after the file name).
    fn validate(&self, spec: &GateSpec) -> Result<(), String> {
        let _ = spec;
        Ok(())
    }

    /// Why a trial of this kind cannot run here although its backend is available, known before
    /// running it: a missing sensor or baseline, a negative control that does not apply here.
    fn precondition(&self, plan: &PlanContext<'_>) -> Option<Skip> {
        let _ = plan;
        None
    }

    /// Run one trial.
    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation;
}

/// Why a planned trial will not run here, if it will not: an absent backend (a cross-backend
/// trial runs when at least one of its backends is available), then the kind's precondition.
pub fn skip_reason(
    spec: &GateSpec,
    unit: &Unit,
    scenario: Option<&Scenario>,
    availability: &dyn Fn(&str) -> Availability,
) -> Option<Skip> {
    let kind = spec.check.kind();
    let backends = unit.backends();
    let absent: Vec<String> = backends
        .iter()
        .filter_map(|b| match availability(b) {
            Availability::Available { .. } => None,
            Availability::Absent { reason, fix } => {
                Some(format!("{b} absent: {reason} (fix: {fix})"))
            }
        })
        .collect();
    let blocked = match unit {
        Unit::Backends { .. } => absent.len() == backends.len(),
        _ => !absent.is_empty(),
    };
    if blocked && !kind.runs_with_absent_backend() {
        return Some(Skip::new(SkipCause::BackendAbsent, absent.join("; ")));
    }
    kind.precondition(&PlanContext {
        spec,
        unit,
        scenario,
        availability,
    })
}

/// Named measurements of a trial. Names are constants (`&'static str`), never built from data;
/// per-backend or per-scenario numbers go into typed [`Details`]. Non-finite values are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    pub fn insert(&mut self, name: &'static str, value: f64) {
        if value.is_finite() {
            self.0.insert(name.to_string(), value);
        }
    }
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Counts of recorded runs by status (warmup included), against the count the plan stated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub stated: usize,
    pub recorded: usize,
    pub ok: usize,
    pub degraded: usize,
    pub error: usize,
    pub warmup: usize,
    /// Runs that stopped early and were projected (excluded from every aggregate).
    #[serde(default)]
    pub projected: usize,
}

impl RunCounts {
    pub fn of(stated: usize, records: &[RunRecord]) -> Self {
        let mut c = RunCounts {
            stated,
            recorded: records.len(),
            ..Default::default()
        };
        for r in records {
            match r.outcome {
                RunOutcome::Ok(_) => c.ok += 1,
                RunOutcome::Projected(_) => c.projected += 1,
                RunOutcome::Degraded { .. } => c.degraded += 1,
                RunOutcome::Error { .. } => c.error += 1,
            }
            if r.phase == RunPhase::Warmup {
                c.warmup += 1;
            }
        }
        c
    }
    pub fn success_rate(&self) -> f64 {
        if self.recorded == 0 {
            0.0
        } else {
            self.ok as f64 / self.recorded as f64
        }
    }
}

/// A measurement that has no number by design (TR122's energy gating), listed in the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoDataNote {
    /// What has no number (e.g. `prefill events`, `energy term of ort-cpu`).
    pub subject: String,
    pub reason: String,
    pub count: usize,
}

/// What a gate kind returns for one trial; [`TrialResult::judge`] applies the verdict rule to it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// What was measured, in words (tables, rankings): the verdict message's second half.
    pub summary: String,
    pub metrics: Metrics,
    pub details: Option<Details>,
    pub no_data: Vec<NoDataNote>,
    pub runs: RunCounts,
    /// Distinct reasons of degraded, failed or projected runs.
    pub run_problems: Vec<String>,
}

impl Evaluation {
    fn new(outcome: Outcome, summary: String) -> Self {
        Evaluation {
            outcome,
            summary,
            metrics: Metrics::default(),
            details: None,
            no_data: Vec::new(),
            runs: RunCounts::default(),
            run_problems: Vec::new(),
        }
    }
    /// The trial ran and found `parts`.
    pub fn judged(parts: Vec<Part>, summary: impl Into<String>) -> Self {
        Self::new(Outcome::Judged { parts }, summary.into())
    }
    /// The trial could not be set up (FAIL with the message).
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(
            Outcome::Error {
                message: message.into(),
            },
            String::new(),
        )
    }
    pub fn skip(skip: Skip) -> Self {
        Self::new(Outcome::Skipped(skip), String::new())
    }
    /// The runs behind the trial (every record, warmup included) and the count the plan stated.
    pub fn with_runs(mut self, records: &[RunRecord], stated: usize) -> Self {
        self.runs = RunCounts::of(stated, records);
        let mut reasons: Vec<String> = records
            .iter()
            .filter_map(|r| match &r.outcome {
                RunOutcome::Degraded { reason } => Some(reason.clone()),
                RunOutcome::Error { message } => Some(message.clone()),
                RunOutcome::Projected(p) => Some(p.describe()),
                RunOutcome::Ok(_) => None,
            })
            .collect();
        reasons.sort();
        reasons.dedup();
        self.run_problems = reasons;
        self
    }
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }
    pub fn with_details(mut self, details: Details) -> Self {
        self.details = Some(details);
        self
    }
    pub fn with_no_data(mut self, notes: Vec<NoDataNote>) -> Self {
        self.no_data = notes;
        self
    }
}

/// Everything a trial reports: the verdict, the findings behind it and the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial: TrialId,
    /// Derived by [`verdict::derive`]; stored so that readers never re-judge.
    pub verdict: Verdict,
    pub message: String,
    pub outcome: Outcome,
    /// The gate file's declaration that made this trial XFAIL or XPASS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_failure: Option<KnownFailure>,
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_data: Vec<NoDataNote>,
    #[serde(default)]
    pub runs: RunCounts,
    /// Distinct reasons of degraded or failed runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded_reasons: Vec<String>,
}

impl TrialResult {
    /// The one constructor of a ran trial's result: the gate file's known failures for this trial
    /// and the `failed_runs` part (failed runs beyond the gate's tolerated fraction) join the gate's
    /// findings, and [`verdict::derive`] decides.
    pub fn judge(spec: &GateSpec, trial: TrialId, e: Evaluation) -> TrialResult {
        let mut outcome = e.outcome;
        if let Outcome::Judged { parts } = &mut outcome {
            parts.extend(verdict::runs_part(
                &e.runs,
                &e.run_problems,
                spec.tolerated_failed_run_fraction,
            ));
        }
        let declared: Vec<KnownFailure> = spec
            .known_failures
            .iter()
            .filter(|k| k.applies_to(&trial, &spec.model))
            .cloned()
            .collect();
        let (verdict, message, known_failure) = verdict::derive(&outcome, &e.summary, &declared);
        TrialResult {
            trial,
            verdict,
            message,
            outcome,
            known_failure,
            metrics: e.metrics,
            details: e.details,
            no_data: e.no_data,
            runs: e.runs,
            degraded_reasons: e.run_problems,
        }
    }

    /// A trial that did not run.
    pub fn skipped(trial: TrialId, skip: Skip) -> TrialResult {
        Self::unjudged(trial, Outcome::Skipped(skip))
    }

    /// A trial that could not be set up (no gate spec to judge it with).
    pub fn error(trial: TrialId, message: impl Into<String>) -> TrialResult {
        Self::unjudged(
            trial,
            Outcome::Error {
                message: message.into(),
            },
        )
    }

    fn unjudged(trial: TrialId, outcome: Outcome) -> TrialResult {
        let (verdict, message, _) = verdict::derive(&outcome, "", &[]);
        TrialResult {
            trial,
            verdict,
            message,
            outcome,
            known_failure: None,
            metrics: Metrics::default(),
            details: None,
            no_data: Vec::new(),
            runs: RunCounts::default(),
            degraded_reasons: Vec::new(),
        }
    }

    /// The skip, when the trial did not run.
    pub fn skip(&self) -> Option<&Skip> {
        match &self.outcome {
            Outcome::Skipped(s) => Some(s),
            _ => None,
        }
    }

    /// The findings, when the trial ran to a judgement.
    pub fn parts(&self) -> &[Part] {
        match &self.outcome {
            Outcome::Judged { parts } => parts,
            _ => &[],
        }
    }
}

/// Median (type-7 quantile at 0.5, [`crate::stats::median`]); `None` for an empty sample.
pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    crate::stats::median(xs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;
    use crate::measure::RunTimings;

    fn spec(tolerated: &str) -> GateSpec {
        GateSpec::parse(
            std::path::Path::new("g.toml"),
            &format!(
                "id = \"phase.decode_fraction\"\nclaim = \"c\"\nsource = \"s\"\nmodel = \"smollm2-135m-instruct\"\n\
                 backends = [\"llama-cpp\"]\nscenarios = [\"short\"]\n{tolerated}\n\
                 [profiles.ci]\nwarmup = 0\nrepetitions = 1\n[profiles.full]\nwarmup = 0\nrepetitions = 1\n\
                 [check]\nkind = \"decode_fraction\"\ngen_tokens = 64\nmin_median_decode_fraction = 0.9\n"
            ),
        )
        .unwrap()
    }

    fn record(index: usize, outcome: RunOutcome) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            trial: TrialId::new(
                "phase.decode_fraction",
                Unit::backend("llama-cpp"),
                Some("short"),
            ),
            sub_series: None,
            backend: "llama-cpp".into(),
            scenario: "short".into(),
            index,
            phase: RunPhase::Measured,
            started_unix_ms: 0,
            outcome,
        }
    }

    #[test]
    fn a_trial_whose_runs_failed_names_them_and_fails_unless_its_gate_tolerates_them() {
        // Item 13: llama-server killed mid-trial, 4 of 10 measured runs errored, and the trial
        // said PASS "(6 runs, …)" with no word of the errors.
        let ok = RunOutcome::Ok(RunTimings {
            prompt_tokens: 11,
            gen_tokens: 64,
            prefill_ms: 20.0,
            decode_ms: 330.0,
            e2e_ms: 350.0,
            decode_steps: 63,
            timing_source: TimingSource::Engine,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            memory_traffic: None,
        });
        let error = RunOutcome::Error {
            message: "llama-cpp failed during decode: connection refused".into(),
        };
        let records: Vec<RunRecord> = (0..10)
            .map(|i| record(i, if i < 6 { ok.clone() } else { error.clone() }))
            .collect();
        let id = TrialId::new(
            "phase.decode_fraction",
            Unit::backend("llama-cpp"),
            Some("short"),
        );
        let evaluation = || {
            let held = Part::compare("decode_fraction", 0.94, Threshold::above(0.9), "6 runs");
            Evaluation::judged(vec![held], "").with_runs(&records, 10)
        };
        let r = TrialResult::judge(&spec(""), id.clone(), evaluation());
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.message);
        assert!(
            r.message
                .contains("4 of 10 recorded runs failed (4 errored")
                && r.message.contains("connection refused"),
            "{}",
            r.message
        );
        let tolerated = TrialResult::judge(
            &spec("tolerated_failed_run_fraction = 0.5"),
            id,
            evaluation(),
        );
        assert_eq!(tolerated.verdict, Verdict::Pass, "{}", tolerated.message);
        assert!(tolerated.message.contains("4 of 10 recorded runs failed"));
    }
}
