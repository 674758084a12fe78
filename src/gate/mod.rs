//! Gates: specs (parsed gate files) and verdicts. Each check kind lives in its own file and turns
//! one trial's measurements into a [`Verdict`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{BackendError, ModelError};
use crate::measure::{RunLog, RunOutcome, RunPhase, RunRecord};
use crate::model::catalog::CatalogModel;
use crate::workload::Scenario;

pub mod compile_real;
pub mod decode_fraction;
pub mod degraded_runs;
pub mod distribution;
pub mod economics;
pub mod energy_gating;
pub mod model_identity;
pub mod perplexity_delta;
pub mod regression;
pub mod scaling_fit;
pub mod spec;
pub mod warmup_ratio;

pub use spec::{Check, GateSpec, ProfileSettings};

/// The outcome of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Pass {
        summary: String,
    },
    Fail {
        reason: String,
    },
    /// Not run, with the reason (absent backend, no baseline …). Never counted as a pass.
    Skip {
        reason: String,
    },
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "PASS",
            Verdict::Fail { .. } => "FAIL",
            Verdict::Skip { .. } => "SKIP",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Verdict::Pass { summary } => summary,
            Verdict::Fail { reason } | Verdict::Skip { reason } => reason,
        }
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

/// Everything a trial reports: the verdict and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial: String,
    pub gate: String,
    pub backend: String,
    pub scenario: Option<String>,
    pub verdict: Verdict,
    /// Named measurements (`decode_fraction_median`, `perplexity` …), for reports and baselines.
    pub metrics: BTreeMap<String, f64>,
    pub runs: RunCounts,
    /// Distinct reasons of degraded or failed runs.
    pub degraded_reasons: Vec<String>,
}

/// Opens the backend under test; injectable so tests can hand in a backend that cannot load.
pub type Opener<'a> = &'a (dyn Fn() -> Result<Box<dyn Backend>, BackendError> + Sync);

/// What a check needs to run one trial.
pub struct TrialContext<'a> {
    pub run_id: &'a str,
    pub trial: &'a str,
    pub spec: &'a GateSpec,
    pub backend_id: &'a str,
    pub scenario: Option<Scenario>,
    pub profile: ProfileSettings,
    pub model: CatalogModel,
    pub encode: &'a (dyn Fn(&str) -> Result<Vec<u32>, ModelError> + Sync),
    pub open: Opener<'a>,
    /// The same backend pointed at a missing model: the negative control for degraded runs.
    pub open_broken: Opener<'a>,
    /// A backend opened for runtime evidence, with an optional extra provider requested.
    pub open_evidence: &'a (dyn Fn(
        &str,
        Option<crate::backend::ort::RequestedProvider>,
    ) -> Result<Box<dyn Backend>, BackendError>
             + Sync),
    /// The trial's unit name (the backend id, or a check's case name).
    pub unit: &'a str,
    /// Any backend by id, on the gate's model (e.g. an accuracy reference).
    pub open_named: &'a (dyn Fn(&str) -> Result<Box<dyn Backend>, BackendError> + Sync),
    pub run_log: &'a RunLog,
}

impl TrialContext<'_> {
    fn result(
        &self,
        verdict: Verdict,
        metrics: BTreeMap<String, f64>,
        records: &[RunRecord],
        stated: usize,
    ) -> TrialResult {
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
        TrialResult {
            trial: self.trial.to_string(),
            gate: self.spec.id.clone(),
            backend: self.unit.to_string(),
            scenario: self.scenario.map(|s| s.name.to_string()),
            verdict,
            metrics,
            runs: RunCounts::of(stated, records),
            degraded_reasons: reasons,
        }
    }

    fn log(&self, records: &[RunRecord]) -> Result<(), String> {
        self.run_log
            .append(records)
            .map_err(|e| format!("cannot write {}: {e}", self.run_log.path().display()))
    }
}

/// Why a trial of this gate cannot run on this machine, known before running it (so the trial is
/// ignored with the reason rather than failing): a missing sensor, a negative control that does
/// not apply here.
pub fn precondition(spec: &GateSpec, unit: &str) -> Option<String> {
    match &spec.check {
        Check::EnergyGating(_) => {
            let detected = crate::energy::detect_sensors();
            detected.readable.is_empty().then(|| {
                format!(
                    "no readable power sensor: {}",
                    detected.unreadable_summary()
                )
            })
        }
        Check::CompileReal(p) => p
            .cases
            .iter()
            .find(|c| c.name == unit)
            .and_then(compile_real::precondition),
        _ => None,
    }
}

/// Run one trial of a gate.
pub fn evaluate(ctx: &TrialContext<'_>) -> TrialResult {
    match &ctx.spec.check {
        Check::DecodeFraction {
            gen_tokens,
            min_median_decode_fraction,
            min_median_decode_fraction_for,
            check_kv_equals_recompute,
        } => decode_fraction::evaluate(
            ctx,
            *gen_tokens,
            *min_median_decode_fraction,
            min_median_decode_fraction_for.get(ctx.backend_id).copied(),
            *check_kv_equals_recompute,
        ),
        Check::ModelIdentity {
            sanity_tokens,
            context,
            untrained_fraction,
        } => model_identity::evaluate(ctx, *sanity_tokens, *context, *untrained_fraction),
        Check::DegradedRuns { gen_tokens } => degraded_runs::evaluate(ctx, *gen_tokens),
        Check::PerplexityDelta(p) => perplexity_delta::evaluate(ctx, p),
        Check::EnergyGating(p) => energy_gating::evaluate(ctx, p),
        Check::CompileReal(p) => match p.cases.iter().find(|c| c.name == ctx.unit) {
            Some(case) => compile_real::evaluate(ctx, p, case),
            None => ctx.result(
                Verdict::Fail {
                    reason: format!("no case `{}` in {}", ctx.unit, ctx.spec.path.display()),
                },
                BTreeMap::new(),
                &[],
                0,
            ),
        },
        Check::ScalingFit(p) => scaling_fit::evaluate(ctx, p),
        Check::WarmupRatio(p) => warmup_ratio::evaluate(ctx, p),
        Check::Distribution(p) => distribution::evaluate(ctx, p),
        Check::EconomicsCost(p) => economics::evaluate(ctx, p),
        Check::Regression(p) => regression::evaluate(ctx, p),
    }
}

/// Median (type-7 quantile at 0.5, [`crate::stats::median`]); `None` for an empty sample.
pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    crate::stats::median(xs).ok()
}
