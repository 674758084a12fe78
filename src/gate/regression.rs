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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Details, Evaluation, GateKind, GateSpec, Part, PlanContext, Skip, SkipCause, Threshold,
    TrialContext,
};
use crate::backend::Backend;
use crate::baseline::cpu;
use crate::baseline::fingerprint::{current_runtime, gpu_drivers};
use crate::roofline::probe::{Probe, PROBE_METRIC};
use crate::baseline::rule::{self, Comparison, Outcome};
use crate::baseline::store::{
    self, BaselineRecord, Direction, Provenance, ProvenanceChange, Workload,
};
use crate::baseline::{record_command, BaselineStore, Fingerprint, Settings};
use crate::error::{BackendError, BaselineError};
use crate::measure::{run_series, RunOutcome, RunPhase, RunRecord, SeriesPlan};
use crate::paired::{Answer, MetricResult};
use crate::pins::RuntimePin;
use crate::workload::{prompt_ids, Scenario};

pub use crate::baseline::metric::Metric;

fn default_tolerance() -> f64 {
    rule::DEFAULT_TOLERANCE
}
fn default_confidence() -> f64 {
    rule::DEFAULT_CONFIDENCE
}
fn default_resamples() -> usize {
    rule::DEFAULT_RESAMPLES
}

/// `[check]` of a `kind = "regression"` gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionParams {
    /// Tokens generated per run (EOS ignored).
    pub gen_tokens: usize,
    /// Metrics compared with the baseline.
    pub metrics: Vec<Metric>,
    /// Band half-width as a fraction (0.10 = 10 %), for metrics without an override.
    #[serde(default = "default_tolerance")]
    pub default_tolerance: f64,
    /// Per-metric overrides of `default_tolerance`.
    #[serde(default)]
    pub tolerance: BTreeMap<Metric, f64>,
    /// Per-backend overrides of `default_tolerance` (a per-metric override still wins), for an
    /// engine whose between-session spread on this machine kind is wider than the default band;
    /// the gate file states the measurement behind each.
    #[serde(default)]
    pub backend_tolerance: BTreeMap<String, f64>,
    /// Confidence level of the slowdown CI.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Bootstrap resamples per CI.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// How far the machine's own speed (the probe timed between runs, [`crate::roofline::probe`])
    /// may differ from its speed when the baseline was recorded for every conclusion to stand
    /// (fraction; 0.10 = 10 %). Beyond it only the conclusions the difference cannot explain are
    /// drawn: on a slower machine a pass, on a faster one a regression; the rest is a SKIP.
    #[serde(default = "default_machine_tolerance")]
    pub machine_tolerance: f64,
    /// Paired mode (`[check.paired]`): both runtimes measured in this job.
    #[serde(default)]
    pub paired: PairedParams,
}

/// `[check.paired]`: rounds and rule of paired mode ([`crate::paired`]). Defaults measured on the
/// 2-core CI machine kind (docs/regression.md, calibration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairedParams {
    /// Generations per side before the rounds, discarded.
    pub warmup: usize,
    /// Rounds before the first look.
    pub rounds: usize,
    /// Rounds added after an unknown answer.
    pub extra_rounds: usize,
    /// Cap on rounds (then unknown is a SKIP, inconclusive).
    pub max_rounds: usize,
    /// Family-wise false-alarm rate of one trial (all metrics, all looks).
    pub alpha: f64,
    /// A slowdown up to this fraction is not a regression.
    pub min_effect: f64,
    /// "Same" excludes a slowdown of this fraction or more.
    pub same_within: f64,
}

impl Default for PairedParams {
    fn default() -> Self {
        PairedParams {
            warmup: 2,
            rounds: 20,
            extra_rounds: 20,
            max_rounds: 60,
            alpha: 0.05,
            min_effect: 0.01,
            same_within: 0.03,
        }
    }
}

impl PairedParams {
    /// The paired settings with `seed` (intervals reported at 95 %).
    pub fn settings(&self, seed: u64) -> crate::paired::Settings {
        crate::paired::Settings {
            warmup: self.warmup,
            rounds: self.rounds,
            extra_rounds: self.extra_rounds,
            max_rounds: self.max_rounds,
            level: 0.95,
            alpha: self.alpha,
            min_effect: self.min_effect,
            same_within: self.same_within,
            seed,
        }
    }
}

fn default_machine_tolerance() -> f64 {
    0.10
}

impl RegressionParams {
    pub fn tolerance_of(&self, m: Metric, backend: &str) -> f64 {
        self.tolerance
            .get(&m)
            .or_else(|| self.backend_tolerance.get(backend))
            .copied()
            .unwrap_or(self.default_tolerance)
    }

    /// Parameter checks the gate-file loader runs (the message goes after the file name).
    pub fn validate(&self) -> Result<(), String> {
        if self.gen_tokens < 2 {
            return Err(format!(
                "gen_tokens = {} leaves no decode step; use at least 2",
                self.gen_tokens
            ));
        }
        if self.metrics.is_empty() {
            return Err("`metrics` is empty; name at least one of e2e_ms, decode_ms, prefill_ms, decode_tokens_per_s, e2e_tokens_per_s".into());
        }
        let tolerances = [
            ("default_tolerance".to_string(), self.default_tolerance),
            ("machine_tolerance".to_string(), self.machine_tolerance),
        ]
        .into_iter()
        .chain(
            self.tolerance
                .iter()
                .map(|(m, t)| (format!("tolerance.{}", m.name()), *t)),
        )
        .chain(
            self.backend_tolerance
                .iter()
                .map(|(b, t)| (format!("backend_tolerance.{b}"), *t)),
        );
        for (name, t) in tolerances {
            if !(t > 0.0 && t < 10.0) {
                return Err(format!(
                    "{name} = {t} is not a fraction in (0, 10) (0.10 = 10 %)"
                ));
            }
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err(format!(
                "confidence = {} is not in (0.5, 1)",
                self.confidence
            ));
        }
        self.paired
            .settings(0)
            .validate()
            .map_err(|e| format!("[check.paired]: {e}"))?;
        crate::stats::bootstrap::check_resamples(self.confidence, self.resamples)
            .map_err(|e| e.to_string())
    }
}

/// The stored side of a trial: one record per metric (in `params.metrics` order) and the probe
/// times of the same runs.
struct Stored {
    records: Vec<BaselineRecord>,
    probe: BaselineRecord,
}

/// Either the stored records for this trial or why there are none (a missing baseline: skip, or
/// fail under `INFERGATE_REQUIRE_BASELINE=1`).
type Lookup = Result<Stored, String>;

fn lookup(
    store: &BaselineStore,
    fp: &Fingerprint,
    gate: &str,
    backend: &str,
    scenario: &Scenario,
    p: &RegressionParams,
) -> Result<Lookup, BaselineError> {
    let id = fp.id();
    let missing = |what: String| {
        Ok(Err(format!("no baseline for this machine: {what}; record one with {} (INFERGATE_REQUIRE_BASELINE=1 makes this a failure)", record_command(gate, backend))))
    };
    let Some(file) = store.load(&id, gate)? else {
        let path = store.gate_path(&id, gate);
        let others = store
            .fingerprint_ids()?
            .into_iter()
            .filter(|d| *d != id)
            .collect::<Vec<_>>();
        let others = if others.is_empty() {
            String::new()
        } else {
            format!(" (stored for other fingerprints: {})", others.join(", "))
        };
        return missing(format!("{} does not exist{others}", path.display()));
    };
    let want = Workload {
        prompt_tokens: scenario.prompt_tokens,
        gen_tokens: p.gen_tokens,
    };
    let mut records = Vec::new();
    let mut absent = Vec::new();
    let probe = file
        .get(backend, Some(scenario.name), PROBE_METRIC)
        .cloned();
    if probe.is_none() {
        absent.push(PROBE_METRIC);
    }
    for (name, direction, unit) in p
        .metrics
        .iter()
        .map(|m| (m.name(), m.direction(), m.unit()))
        .chain(probe.iter().map(|r| (PROBE_METRIC, r.direction, "ms")))
    {
        match file.get(backend, Some(scenario.name), name) {
            None => absent.push(name),
            Some(r) if r.workload != want => {
                return missing(format!(
                    "{} holds {} for {} prompt / {} generated tokens, the gate now measures {} / {}",
                    file.path.display(),
                    r.label(),
                    r.workload.prompt_tokens,
                    r.workload.gen_tokens,
                    want.prompt_tokens,
                    want.gen_tokens
                ));
            }
            Some(r) if r.direction != direction || r.unit != unit => {
                return Err(BaselineError::Corrupt {
                    path: file.path.clone(),
                    detail: format!(
                        "{} is stored as {:?} in {}, but the metric is {direction:?} in {unit}",
                        r.label(),
                        r.direction,
                        r.unit
                    ),
                });
            }
            Some(r)
                if probe
                    .as_ref()
                    .is_some_and(|pr| pr.samples.len() != r.samples.len()) =>
            {
                return Err(BaselineError::Corrupt {
                    path: file.path.clone(),
                    detail: format!(
                        "{} has {} samples but {PROBE_METRIC} has {}: they must pair run by run",
                        r.label(),
                        r.samples.len(),
                        probe.as_ref().map_or(0, |p| p.samples.len())
                    ),
                });
            }
            Some(r) if name != PROBE_METRIC => records.push(r.clone()),
            Some(_) => {}
        }
    }
    match probe {
        Some(probe) if absent.is_empty() => Ok(Ok(Stored { records, probe })),
        _ => missing(format!(
            "{} has no record for {backend}::{} {}",
            file.path.display(),
            scenario.name,
            absent.join(", ")
        )),
    }
}

/// How a trial compares, chosen before anything is measured ([`choose`]).
enum Mode {
    /// With this machine's stored numbers. `changes` names what differs from the recording and
    /// could not be re-run (a runtime without a fetchable pin, a GPU driver).
    Stored {
        stored: Stored,
        changes: Vec<ProvenanceChange>,
    },
    /// Both runtimes measured in this job ([`crate::paired`]): the baseline's, fetched by its
    /// pin, and this process's.
    Paired {
        baseline: RuntimePin,
        current: RuntimePin,
        /// Why paired mode decides (which baseline's recipe is re-run).
        why: String,
    },
}

/// A baseline recorded on another machine for this trial whose runtime pin can be re-run here:
/// `(fingerprint id, pin)`. Only a record of the same model weights counts (the recipe is the
/// runtime pin, the model hash and the gate's parameters).
fn recipe_elsewhere(
    store: &BaselineStore,
    fp: &Fingerprint,
    gate: &str,
    backend: &str,
    scenario: &Scenario,
    p: &RegressionParams,
) -> Result<Vec<(String, RuntimePin)>, BaselineError> {
    let mut out = Vec::new();
    let here = fp.id();
    for id in store.fingerprint_ids()? {
        if id == here {
            continue;
        }
        let Some(theirs) = store.read_fingerprint(&id)? else {
            continue;
        };
        if theirs.components.models != fp.models {
            continue;
        }
        let Some(file) = store.load(&id, gate)? else {
            continue;
        };
        let pin = p.metrics.first().and_then(|m| {
            file.get(backend, Some(scenario.name), m.name())
                .and_then(|r| r.provenance.runtime.clone())
        });
        out.extend(pin.map(|pin| (id, pin)));
    }
    Ok(out)
}

/// The comparison a trial makes: paired when the runtime differs from the baseline's and the
/// baseline's pin can be fetched (from this machine's record, else from another machine's
/// recipe); stored with this machine's numbers otherwise; `Err(reason)` when there is nothing to
/// compare (a counted SKIP, or a failure under `INFERGATE_REQUIRE_BASELINE=1`).
fn choose(
    store: &BaselineStore,
    fp: &Fingerprint,
    gate: &str,
    backend: &str,
    scenario: &Scenario,
    p: &RegressionParams,
    current: Option<&RuntimePin>,
) -> Result<Result<Mode, String>, BaselineError> {
    let drivers = gpu_drivers();
    match lookup(store, fp, gate, backend, scenario, p)? {
        Ok(stored) => {
            let prov = stored
                .records
                .first()
                .map(|r| r.provenance.clone())
                .unwrap_or_else(|| stored.probe.provenance.clone());
            if let (Some(base), Some(cur)) = (&prov.runtime, current) {
                if !base.same_build(cur) && base.fetchable() {
                    return Ok(Ok(Mode::Paired {
                        baseline: base.clone(),
                        current: cur.clone(),
                        why: format!(
                            "this machine's baseline (run {}) ran on {}",
                            prov.run_id,
                            base.short()
                        ),
                    }));
                }
            }
            Ok(Ok(Mode::Stored {
                changes: prov.changes(current, &drivers),
                stored,
            }))
        }
        Err(missing) => {
            let Some(cur) = current else {
                return Ok(Err(missing));
            };
            let recipes = recipe_elsewhere(store, fp, gate, backend, scenario, p)?;
            if let Some((id, pin)) = recipes
                .iter()
                .find(|(_, pin)| pin.fetchable() && !pin.same_build(cur))
            {
                return Ok(Ok(Mode::Paired {
                    baseline: pin.clone(),
                    current: cur.clone(),
                    why: format!(
                        "no stored numbers for this machine; the baseline recorded on {id} ran on {}, re-run here from its pin",
                        pin.short()
                    ),
                }));
            }
            if recipes.is_empty() {
                Ok(Err(missing))
            } else {
                let on: Vec<String> = recipes
                    .iter()
                    .map(|(id, pin)| format!("{id} ({})", pin.short()))
                    .collect();
                Ok(Err(format!(
                    "{missing}; the baselines of other machines ({}) ran on this machine's runtime ({}) or cannot be fetched, so paired mode has nothing to compare either",
                    on.join(", "),
                    cur.short()
                )))
            }
        }
    }
}

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

impl GateKind for RegressionParams {
    fn parts(&self) -> &'static [&'static str] {
        &[NO_REGRESSION]
    }

    fn validate(&self, _spec: &GateSpec) -> Result<(), String> {
        RegressionParams::validate(self)
    }

    /// No baseline for this machine (and neither update nor require mode): skipped before running.
    /// When loading fails the trial runs and fails with the error, never skips past it.
    fn precondition(&self, plan: &PlanContext<'_>) -> Option<Skip> {
        let backend = plan.unit.single_backend()?;
        skip_reason(plan.spec, self, backend, plan.scenario)
            .map(|reason| Skip::new(SkipCause::Precondition, reason))
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

fn skip_reason(
    spec: &GateSpec,
    p: &RegressionParams,
    backend: &str,
    scenario: Option<&Scenario>,
) -> Option<String> {
    let settings = Settings::current();
    if settings.update || settings.require {
        return None;
    }
    let model = crate::model::catalog::lookup(&spec.model)?;
    let fp = Fingerprint::detect(&[model]);
    match choose(
        &settings.store_for(&spec.path),
        &fp,
        &spec.id,
        backend,
        scenario?,
        p,
        current_runtime(backend).as_ref(),
    ) {
        Ok(Err(missing)) => Some(missing),
        _ => None,
    }
}

/// A measured series: per measured run, each metric's value and the probe time around it (mean of
/// the probe just before and just after the run).
struct Series {
    values: BTreeMap<Metric, Vec<f64>>,
    probe_ms: Vec<f64>,
}

/// Run `plan` one run at a time with the probe timed between measured runs (n + 1 probes for n
/// runs; a run's probe time is the mean of the one before and the one after it). Records keep their
/// position in the series as `index`.
fn measure(
    opened: &mut Result<Box<dyn Backend>, BackendError>,
    plan: &SeriesPlan,
    probe: &Probe,
    metrics: &[Metric],
) -> (Vec<RunRecord>, Result<Series, String>) {
    let mut records = Vec::with_capacity(plan.stated_runs());
    let mut probe_ms = Vec::with_capacity(plan.repetitions);
    let mut cpu_ms = BTreeMap::new();
    let mut before = None;
    for i in 0..plan.stated_runs() {
        let warmup = i < plan.warmup;
        let one = SeriesPlan {
            warmup: usize::from(warmup),
            repetitions: usize::from(!warmup),
            ..plan.clone()
        };
        if !warmup && before.is_none() {
            before = Some(probe.time_ms());
        }
        let cpu_before = cpu::process_tree_cpu_ms();
        let mut recs = run_series(opened, &one);
        let cpu = cpu_before.and_then(|b| cpu::process_tree_cpu_ms().map(|a| a - b));
        cpu_ms.insert(i, cpu);
        if let (false, Some(b)) = (warmup, before) {
            let after = probe.time_ms();
            probe_ms.push(0.5 * (b + after));
            before = Some(after);
        }
        for r in &mut recs {
            r.index = i;
        }
        records.extend(recs);
    }
    let series = samples(&records, &cpu_ms, metrics).map(|values| Series { values, probe_ms });
    (records, series)
}

/// Values of each metric over the measured runs; every measured run must be ok. `cpu_ms` holds
/// the CPU time of each run by its index in the series.
fn samples(
    records: &[RunRecord],
    cpu_ms: &BTreeMap<usize, Result<f64, String>>,
    metrics: &[Metric],
) -> Result<BTreeMap<Metric, Vec<f64>>, String> {
    let mut out: BTreeMap<Metric, Vec<f64>> = metrics.iter().map(|m| (*m, Vec::new())).collect();
    for r in records.iter().filter(|r| r.phase == RunPhase::Measured) {
        let t = match &r.outcome {
            RunOutcome::Ok(t) => t,
            RunOutcome::Degraded { reason } => return Err(format!("measured run {} was degraded ({reason}); a series with failed runs is not compared", r.index)),
            RunOutcome::Error { message } => return Err(format!("measured run {} failed ({message}); a series with failed runs is not compared", r.index)),
            RunOutcome::Projected(p) => return Err(format!("measured run {}: {}; a series with such runs is not compared", r.index, p.describe())),
        };
        for m in metrics {
            let cpu = match cpu_ms.get(&r.index) {
                Some(Ok(c)) => Some(*c),
                Some(Err(e)) if *m == Metric::E2eCpuMs => {
                    return Err(format!(
                        "measured run {}: CPU time unavailable: {e}",
                        r.index
                    ))
                }
                _ => None,
            };
            let Some(v) = m.value(t, cpu) else {
                return Err(format!(
                    "measured run {}: {} was not measured",
                    r.index,
                    m.name()
                ));
            };
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "measured run {}: {} = {v} is not a positive number",
                    r.index,
                    m.name()
                ));
            }
            out.entry(*m).or_default().push(v);
        }
    }
    if out.values().any(Vec::is_empty) {
        return Err("no measured run".into());
    }
    Ok(out)
}

type Compared = Vec<(String, Comparison)>;

/// How the machine's speed (by the probe) compares with its speed when the baseline was recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MachineState {
    Comparable,
    /// The probe is slower by more than `machine_tolerance`: a regression cannot be attributed.
    Slower,
    /// The probe is faster by more than `machine_tolerance`: a faster machine may hide a regression.
    Faster,
}

/// One attempt: each metric against its baseline, and the machine against its own baseline speed.
struct Attempt {
    compared: Compared,
    machine: Comparison,
    state: MachineState,
}

fn compare_attempt(
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
    fn insert_into(&self, details: &mut RegressionDetails, attempt: u8) {
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

    fn describe(&self, p: &RegressionParams) -> String {
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

    fn regressed(&self) -> Vec<&str> {
        self.compared
            .iter()
            .filter(|(_, c)| c.outcome == Outcome::Regressed)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn improved(&self) -> Vec<&str> {
        self.compared
            .iter()
            .filter(|(_, c)| c.outcome == Outcome::Improved)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The outcome of a trial with no confirmed regression, given the machine's state in its last
/// series: a pass, or inconclusive on a faster machine (a regression could hide in the extra speed).
fn clean(
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

fn evaluate(ctx: &TrialContext<'_>, p: &RegressionParams) -> Evaluation {
    let settings = Settings::current();
    let fail = Evaluation::error;
    if let Err(e) = p.validate() {
        return fail(format!("{}: {e}", ctx.spec.path.display()));
    }
    let planted = match &settings.test_slowdown {
        Ok(s) => *s,
        Err(e) => return fail(e.clone()),
    };
    let Some(scenario) = ctx.scenario else {
        return fail(format!(
            "{}: a regression gate needs `scenarios`",
            ctx.spec.path.display()
        ));
    };
    let store = settings.store_for(&ctx.spec.path);
    let fp = Fingerprint::detect(std::slice::from_ref(&ctx.model));
    let current = current_runtime(ctx.backend_id());
    let (stored, changes) = if settings.update {
        (None, Vec::new())
    } else {
        match choose(
            &store,
            &fp,
            &ctx.spec.id,
            ctx.backend_id(),
            &scenario,
            p,
            current.as_ref(),
        ) {
            Err(e) => return fail(e.to_string()),
            Ok(Err(missing)) if settings.require => {
                return fail(format!(
                    "{missing} (INFERGATE_REQUIRE_BASELINE=1: a missing baseline is a failure)"
                ))
            }
            Ok(Err(missing)) => {
                return Evaluation::skip(Skip::new(SkipCause::Precondition, missing))
            }
            Ok(Ok(Mode::Paired {
                baseline,
                current,
                why,
            })) => {
                let tweaks = settings.tweaks.clone().unwrap_or_default();
                return evaluate_paired(ctx, p, &scenario, &baseline, &current, &why, tweaks);
            }
            Ok(Ok(Mode::Stored { stored, changes })) => (Some(stored), changes),
        }
    };
    let prompt = match prompt_ids(&scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the `{}` prompt: {e}", scenario.name)),
    };
    let plan = |sub: Option<&str>| ctx.series(sub, scenario.name, prompt.clone(), p.gen_tokens);
    let first_plan = plan(None);
    let mut stated = first_plan.stated_runs();
    let probe = Probe::for_this_machine();
    let mut opened = ctx.open();
    // Only in-process ONNX Runtime timings can be stretched (see baseline::slowdown).
    let note = match (planted, &opened) {
        (None, _) => String::new(),
        (Some(f), Ok(b)) if b.info().engine == "onnxruntime" => format!("[planted test slowdown {f} active (INFERGATE_TEST_SLOWDOWN)] "),
        (Some(f), _) => format!("[INFERGATE_TEST_SLOWDOWN={f} is set but does not affect this backend's engine-reported timings] "),
    };
    let (mut records, first) = measure(&mut opened, &first_plan, &probe, &p.metrics);
    if let Err(e) = ctx.log(&records) {
        return fail(e).with_runs(&records, stated);
    }
    let mut details = RegressionDetails {
        test_slowdown: planted,
        mode: stored.as_ref().map(|_| ComparisonMode::Stored),
        changes: changes.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    // Every stored-mode verdict says which mode decided and names what changed since the recording.
    let note = if stored.is_some() {
        let changed = if changes.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = changes.iter().map(ToString::to_string).collect();
            format!(
                "{} (cannot be re-run side by side: compared with the stored numbers): ",
                names.join("; ")
            )
        };
        format!("[{}] {note}{changed}", ComparisonMode::Stored.label())
    } else {
        note
    };
    let first = match first {
        Ok(s) => s,
        Err(e) => {
            return fail(format!("{note}{e}"))
                .with_runs(&records, stated)
                .with_details(Details::Regression(Box::new(details)))
        }
    };
    for (m, v) in &first.values {
        if let Some(med) = super::median(v) {
            details.medians.insert(*m, med);
        }
    }
    details.probe_ms_median = super::median(&first.probe_ms);
    let done = |parts: Result<Part, Skip>, records: &[RunRecord], stated, details| match parts {
        Ok(part) => Evaluation::judged(vec![part], String::new())
            .with_runs(records, stated)
            .with_details(Details::Regression(Box::new(details))),
        Err(skip) => Evaluation::skip(skip)
            .with_runs(records, stated)
            .with_details(Details::Regression(Box::new(details))),
    };

    let Some(stored) = stored else {
        return match record_series(ctx, p, &settings, &store, &fp, &scenario, &first) {
            Ok(report) => done(
                Ok(Part::reported(
                    NO_REGRESSION,
                    None,
                    format!("{note}recorded baseline (update mode, nothing compared): {report}"),
                )),
                &records,
                stated,
                details,
            ),
            Err(e) => fail(format!("{note}update requested but {e}"))
                .with_runs(&records, stated)
                .with_details(Details::Regression(Box::new(details))),
        };
    };

    let one = match compare_attempt(ctx, p, &first, &stored, "1") {
        Ok(c) => c,
        Err(e) => {
            return fail(format!("{note}{e}"))
                .with_runs(&records, stated)
                .with_details(Details::Regression(Box::new(details)))
        }
    };
    one.insert_into(&mut details, 1);
    let suspects = one.regressed();
    let hint = |a: &Attempt| {
        let improved = a.improved();
        if improved.is_empty() || a.state == MachineState::Faster {
            String::new()
        } else {
            format!("; {} improved beyond the band: if the change is intended, update the baseline with {}", improved.join(", "), record_command(&ctx.spec.id, ctx.backend_id()))
        }
    };
    let against = format!(
        "against baseline run {}",
        stored
            .records
            .first()
            .map_or("?", |b| b.provenance.run_id.as_str())
    );
    if suspects.is_empty() {
        let part = clean(
            one.state,
            &note,
            format!(
                "no clear regression {against}: {}{}",
                one.describe(p),
                hint(&one)
            ),
            &one.machine,
        );
        return done(part, &records, stated, details);
    }

    // A suspected regression: measure again before failing (false alarms p → p²).
    let second_plan = plan(Some(REMEASURE));
    stated += second_plan.stated_runs();
    let (again, second) = measure(&mut opened, &second_plan, &probe, &p.metrics);
    records.extend(again.iter().cloned());
    if let Err(e) = ctx.log(&again) {
        return fail(e).with_runs(&records, stated);
    }
    let two = match second.and_then(|s| compare_attempt(ctx, p, &s, &stored, "2")) {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "{note}re-measurement after a suspected regression of {}: {e}",
                suspects.join(", ")
            ))
            .with_runs(&records, stated)
            .with_details(Details::Regression(Box::new(details)))
        }
    };
    two.insert_into(&mut details, 2);
    let confirmed = rule::confirmed(&one.compared, &two.compared);
    let both = format!("first {}; re-measured {}", one.describe(p), two.describe(p));
    let part = if confirmed.is_empty() {
        clean(
            two.state,
            &note,
            format!(
                "suspected regression of {} not confirmed on re-measurement {against}: {both}{}",
                suspects.join(", "),
                hint(&two)
            ),
            &two.machine,
        )
    } else if two.state == MachineState::Slower {
        Err(Skip::new(
            SkipCause::Inconclusive,
            format!(
                "{note}inconclusive: {} regressed beyond tolerance in both series {against}, but the machine itself is ×{:.3} slower than when the baseline was recorded (probe), which can explain it: {both}. Re-run when the machine is as loaded as at the recording",
                confirmed.join(", "),
                two.machine.slowdown.point
            ),
        ))
    } else {
        Ok(Part::compare(
            NO_REGRESSION,
            confirmed.len() as f64,
            Threshold::equal(0.0),
            format!("{note}regression of {} beyond tolerance, confirmed on re-measurement {against}: {both}", confirmed.join(", ")),
        ))
    };
    done(part, &records, stated, details)
}

/// Paired mode inside the gate: the baseline's runtime (fetched by its pin) and this process's
/// runtime, each in its own worker, rounds interleaved in a seeded random order; the answer of
/// [`crate::paired`] decides: slower → FAIL, same or faster → PASS, unknown after the capped
/// extra rounds → SKIP (inconclusive). A planted test slowdown goes to the current side.
fn evaluate_paired(
    ctx: &TrialContext<'_>,
    p: &RegressionParams,
    scenario: &Scenario,
    baseline: &RuntimePin,
    current: &RuntimePin,
    why: &str,
    tweaks: crate::baseline::slowdown::Tweaks,
) -> Evaluation {
    let mode = ComparisonMode::Paired;
    let change = ProvenanceChange::Runtime {
        from: Box::new(baseline.clone()),
        to: Box::new(current.clone()),
    };
    let head = format!("[{}] {change}: ", mode.label());
    let fail = |e: String| Evaluation::error(format!("{head}{e}"));
    let Some(artifact) = baseline.artifact.clone() else {
        return fail(format!("{} has no fetchable artifact", baseline.short()));
    };
    let prompt = match prompt_ids(scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the `{}` prompt: {e}", scenario.name)),
    };
    let workload = crate::paired::Workload {
        backend: ctx.backend_id().to_string(),
        model: ctx.model.name.clone(),
        prompt,
        gen_tokens: p.gen_tokens,
        metrics: p.metrics.clone(),
    };
    let planted = if tweaks.is_none() {
        String::new()
    } else {
        format!(" with {}", tweaks.describe())
    };
    let sides = (
        crate::paired::Side {
            label: format!("baseline ({})", baseline.short()),
            runtime: crate::paired::SideRuntime::Pinned { artifact },
            tweaks: Default::default(),
        },
        crate::paired::Side {
            label: format!("current ({}{planted})", current.short()),
            runtime: crate::paired::SideRuntime::Inherited,
            tweaks,
        },
    );
    let trial = ctx.trial.to_string();
    let seed = rule::seed_for(&[&trial, "paired"]);
    let settings = p.paired.settings(seed);
    let mut progress = std::io::sink();
    let r = match crate::paired::run(&workload, &sides.0, &sides.1, &settings, &mut progress) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let slower = r.with_answer(Answer::Slower);
    let text = format!(
        "{why}; {} rounds in {} look(s), seed {}, {:.0} s: {}",
        r.rounds.len(),
        r.looks,
        r.settings.seed,
        r.elapsed_s,
        r.describe_metrics()
    );
    let details = RegressionDetails {
        test_slowdown: tweaks.planted.map(|p| p.fraction),
        mode: Some(mode),
        changes: vec![change.to_string()],
        paired: Some(PairedSummary {
            baseline: baseline.clone(),
            candidate: current.clone(),
            rounds: r.rounds.len(),
            looks: r.looks,
            seed: r.settings.seed,
            answer: r.answer,
            metrics: r.metrics.clone(),
            elapsed_s: r.elapsed_s,
        }),
        ..Default::default()
    };
    let eval = match r.answer {
        Answer::Slower => Evaluation::judged(
            vec![Part::compare(
                NO_REGRESSION,
                slower.len() as f64,
                Threshold::equal(0.0),
                format!("{head}regression of {} (slower beyond {:.0} % at family-wise α {}): {text}", slower.join(", "), p.paired.min_effect * 100.0, p.paired.alpha),
            )],
            String::new(),
        ),
        Answer::Same | Answer::Faster => Evaluation::judged(
            vec![Part::compare(
                NO_REGRESSION,
                0.0,
                Threshold::equal(0.0),
                format!("{head}{}: {text}", r.answer.label()),
            )],
            String::new(),
        ),
        Answer::Unknown => Evaluation::skip(Skip::new(
            SkipCause::Inconclusive,
            format!("{head}inconclusive after the capped {} rounds (the pair spread is too wide to tell a {:.0} % slowdown from none, e.g. under load): {text}. Re-run on a quieter machine", r.rounds.len(), p.paired.same_within * 100.0),
        )),
    };
    eval.with_details(Details::Regression(Box::new(details)))
}

/// The sub-series of a re-measurement after a suspected regression.
pub const REMEASURE: &str = "remeasure";

/// Write the series (each metric and the probe times) as this trial's baseline records.
fn record_series(
    ctx: &TrialContext<'_>,
    p: &RegressionParams,
    settings: &Settings,
    store: &BaselineStore,
    fp: &Fingerprint,
    scenario: &Scenario,
    series: &Series,
) -> Result<crate::baseline::WriteReport, BaselineError> {
    let repo = ctx
        .spec
        .path
        .parent()
        .and_then(|g| g.parent())
        .unwrap_or(std::path::Path::new("."));
    let (git_commit, git_dirty) = crate::manifest::git_state(repo);
    let provenance = Provenance {
        recorded_utc: chrono::Utc::now().to_rfc3339(),
        git_commit,
        git_dirty,
        run_id: ctx.run_id.to_string(),
        profile: profile_name(ctx),
        runtime: current_runtime(ctx.backend_id()),
        gpu_drivers: gpu_drivers(),
    };
    let workload = Workload {
        prompt_tokens: scenario.prompt_tokens,
        gen_tokens: p.gen_tokens,
    };
    let rec = |name: &str, direction, unit: &str, values: Vec<f64>| {
        store::record(
            ctx.backend_id(),
            Some(scenario.name),
            name,
            direction,
            unit,
            values,
            workload,
            provenance.clone(),
        )
    };
    let mut records = p
        .metrics
        .iter()
        .map(|m| {
            rec(
                m.name(),
                m.direction(),
                m.unit(),
                series.values.get(m).cloned().unwrap_or_default(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    records.push(rec(
        PROBE_METRIC,
        Direction::LowerIsBetter,
        "ms",
        series.probe_ms.clone(),
    )?);
    store.write(fp, &ctx.spec.id, records, &settings.write_policy())
}

/// The profile in use, e.g. `ci (warmup 1, repetitions 10)` (the context carries its settings, so
/// the names are those of the gate file's profiles with these settings).
fn profile_name(ctx: &TrialContext<'_>) -> String {
    let names: Vec<&str> = ctx
        .spec
        .profiles
        .iter()
        .filter(|(_, s)| **s == ctx.profile)
        .map(|(n, _)| n.as_str())
        .collect();
    format!(
        "{} (warmup {}, repetitions {})",
        names.join("/"),
        ctx.profile.warmup,
        ctx.profile.repetitions
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Check;
    use crate::measure::RunTimings;
    use std::path::Path;

    /// A store holding one machine's ort-cpu::short records (every metric of `p` and the probe),
    /// measured on `runtime`.
    fn store_with(
        dir: &Path,
        fp: &Fingerprint,
        p: &RegressionParams,
        runtime: Option<RuntimePin>,
    ) -> BaselineStore {
        let store = BaselineStore::new(dir);
        let sc = crate::workload::scenario("short").unwrap();
        let provenance = Provenance {
            recorded_utc: "2026-01-01T00:00:00Z".into(),
            git_commit: None,
            git_dirty: None,
            run_id: "rec-1".into(),
            profile: "full".into(),
            runtime,
            gpu_drivers: gpu_drivers(),
        };
        let workload = Workload {
            prompt_tokens: sc.prompt_tokens,
            gen_tokens: p.gen_tokens,
        };
        let mut records: Vec<BaselineRecord> = p
            .metrics
            .iter()
            .map(|m| (m.name(), m.direction(), m.unit()))
            .chain([(PROBE_METRIC, Direction::LowerIsBetter, "ms")])
            .map(|(name, d, unit)| {
                store::record(
                    "ort-cpu",
                    Some("short"),
                    name,
                    d,
                    unit,
                    vec![1.0, 1.1, 1.2],
                    workload,
                    provenance.clone(),
                )
                .unwrap()
            })
            .collect();
        records.sort_by_key(|r| r.key());
        let policy = crate::baseline::WritePolicy {
            ci: false,
            force: true,
            tweaks: Default::default(),
        };
        store
            .write(fp, "regression.baseline", records, &policy)
            .unwrap();
        store
    }

    fn ort_pin(version: &str, fetchable: bool) -> RuntimePin {
        RuntimePin {
            runtime: crate::pins::Runtime::OnnxRuntime,
            reported: version.into(),
            artifact: fetchable
                .then(|| crate::pins::parse(&format!("onnxruntime=={version}")).unwrap()),
        }
    }

    fn machine(cpu: &str) -> Fingerprint {
        Fingerprint {
            cpu_model: cpu.into(),
            available_cores: 2,
            gpus: vec![],
            models: [("m".to_string(), "ab".repeat(32))].into(),
            build_profile: "dev".into(),
        }
    }

    #[test]
    fn the_mode_follows_the_runtime_and_the_stored_numbers() {
        let (path, text) = repo_gate();
        let spec = GateSpec::parse(&path, &text).unwrap();
        let Check::Regression(p) = &spec.check else {
            panic!("not a regression gate")
        };
        let sc = crate::workload::scenario("short").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let here = machine("AMD EPYC");
        let old = ort_pin("1.31.1", true);
        let new = ort_pin("1.32.0", true);
        let store = store_with(tmp.path(), &here, p, Some(old.clone()));
        let mode = |fp: &Fingerprint, cur: &RuntimePin| {
            choose(
                &store,
                fp,
                "regression.baseline",
                "ort-cpu",
                &sc,
                p,
                Some(cur),
            )
            .unwrap()
        };
        // Same runtime: stored numbers, nothing changed.
        match mode(&here, &old) {
            Ok(Mode::Stored { changes, .. }) => assert!(changes.is_empty(), "{changes:?}"),
            _ => panic!("expected stored mode"),
        }
        // A bump with a fetchable baseline pin: paired, naming the baseline's run.
        match mode(&here, &new) {
            Ok(Mode::Paired { baseline, why, .. }) => {
                assert_eq!(baseline, old);
                assert!(why.contains("rec-1"), "{why}");
            }
            _ => panic!("expected paired mode"),
        }
        // Another machine (no stored numbers for its CPU): the bump is still compared, paired
        // from the recipe; the same runtime there has nothing to compare.
        let other = machine("Intel Xeon Processor");
        match mode(&other, &new) {
            Ok(Mode::Paired { why, .. }) => {
                assert!(why.contains("no stored numbers"), "{why}");
                assert!(why.contains(&here.id()), "{why}");
            }
            _ => panic!("expected paired mode from another machine's recipe"),
        }
        match mode(&other, &old) {
            Err(reason) => assert!(reason.contains("nothing to compare"), "{reason}"),
            Ok(_) => panic!("expected nothing to compare"),
        }
        // A different model hash is another recipe: nothing to compare.
        let mut other_model = other.clone();
        other_model.models.insert("m".into(), "cd".repeat(32));
        assert!(mode(&other_model, &new).is_err());
    }

    #[test]
    fn a_bump_that_cannot_be_fetched_is_compared_with_the_stored_numbers_and_named() {
        let (path, text) = repo_gate();
        let spec = GateSpec::parse(&path, &text).unwrap();
        let Check::Regression(p) = &spec.check else {
            panic!("not a regression gate")
        };
        let sc = crate::workload::scenario("short").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let here = machine("AMD EPYC");
        // Recorded on a library given by path: no artifact to fetch again.
        let store = store_with(tmp.path(), &here, p, Some(ort_pin("1.31.1", false)));
        let cur = ort_pin("1.32.0", true);
        match choose(
            &store,
            &here,
            "regression.baseline",
            "ort-cpu",
            &sc,
            p,
            Some(&cur),
        )
        .unwrap()
        {
            Ok(Mode::Stored { changes, .. }) => {
                let names: Vec<String> = changes.iter().map(ToString::to_string).collect();
                assert_eq!(names, vec!["onnxruntime 1.31.1 → 1.32.0".to_string()]);
            }
            _ => panic!("expected stored mode"),
        }
    }

    #[test]
    fn no_baseline_anywhere_is_a_skip_reason_with_the_record_command() {
        let (path, text) = repo_gate();
        let spec = GateSpec::parse(&path, &text).unwrap();
        let Check::Regression(p) = &spec.check else {
            panic!("not a regression gate")
        };
        let sc = crate::workload::scenario("short").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = BaselineStore::new(tmp.path().join("baselines"));
        let here = machine("Intel(R) Xeon(R) Processor");
        for cur in [Some(ort_pin("1.31.1", true)), None] {
            match choose(
                &store,
                &here,
                "regression.baseline",
                "ort-cpu",
                &sc,
                p,
                cur.as_ref(),
            )
            .unwrap()
            {
                Err(reason) => {
                    assert!(reason.contains("no baseline for this machine"), "{reason}");
                    assert!(reason.contains("record one with"), "{reason}");
                }
                Ok(_) => panic!("a machine without any baseline must have nothing to compare"),
            }
        }
    }

    /// The committed baselines, read as CI reads them with this build's own runtimes: the machine
    /// they were recorded on compares with its stored numbers, and a machine without a baseline
    /// (this 2-core Intel Xeon) has nothing to compare. Neither chooses paired mode, so no second
    /// runtime is fetched while the runtime equals the baselines'.
    #[test]
    fn the_committed_baselines_need_no_second_runtime_for_this_build() {
        let (path, text) = repo_gate();
        let spec = GateSpec::parse(&path, &text).unwrap();
        let Check::Regression(p) = &spec.check else {
            panic!("not a regression gate")
        };
        let store = BaselineStore::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines"));
        let ids = store.fingerprint_ids().unwrap();
        let amd = ids
            .iter()
            .find(|id| id.starts_with("amd-epyc-2c-"))
            .expect("the CI machine's baseline is committed");
        let recorded = store.read_fingerprint(amd).unwrap().unwrap().components;
        assert_eq!(
            recorded.id(),
            *amd,
            "the committed fingerprint matches its directory"
        );
        // The default model's declared hash is still the one the baselines were recorded on.
        let model = crate::model::declared::default_model().unwrap();
        assert_eq!(
            recorded.models.get(&model.name),
            Some(&model.sha256),
            "the default model changed: the committed baselines no longer match any machine"
        );
        let file = store.load(amd, "regression.baseline").unwrap().unwrap();
        let mut intel = recorded.clone();
        intel.cpu_model = "Intel(R) Xeon(R) Processor".into();
        assert!(
            !ids.contains(&intel.id()),
            "{} has a baseline now",
            intel.id()
        );
        let mut checked = 0;
        for (backend, current) in [
            ("ort-cpu", crate::pins::default_onnxruntime()),
            ("llama-cpp", crate::pins::default_llama_cpp()),
        ] {
            let runtime = crate::pins::Runtime::of_backend(backend).unwrap();
            let reported = file
                .records
                .iter()
                .find(|r| r.backend == backend)
                .and_then(|r| r.provenance.runtime.clone())
                .expect("the committed records name their runtime")
                .reported;
            let cur = RuntimePin {
                runtime,
                reported,
                artifact: Some(current),
            };
            for sc in ["short", "medium", "long"] {
                let Some(sc) = crate::workload::scenario(sc) else {
                    continue;
                };
                if !file
                    .records
                    .iter()
                    .any(|r| r.backend == backend && r.scenario.as_deref() == Some(sc.name))
                {
                    continue;
                }
                let mode = |fp: &Fingerprint| {
                    choose(
                        &store,
                        fp,
                        "regression.baseline",
                        backend,
                        &sc,
                        p,
                        Some(&cur),
                    )
                    .unwrap()
                };
                match mode(&recorded) {
                    Ok(Mode::Stored { changes, .. }) => {
                        assert!(
                            changes
                                .iter()
                                .all(|c| !c.to_string().contains(runtime.name())),
                            "{backend} {}: {changes:?}",
                            sc.name
                        )
                    }
                    Ok(Mode::Paired { why, .. }) => {
                        panic!(
                            "{backend} {}: paired (would fetch a runtime): {why}",
                            sc.name
                        )
                    }
                    Err(reason) => panic!("{backend} {}: {reason}", sc.name),
                }
                match mode(&intel) {
                    Err(reason) => {
                        assert!(reason.contains("no baseline for this machine"), "{reason}")
                    }
                    Ok(_) => panic!("{backend} {}: {} has no baseline", sc.name, intel.id()),
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "no committed record was checked");
    }

    fn repo_gate() -> (std::path::PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gates/regression.baseline.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    #[test]
    fn the_repository_gate_file_parses() {
        let (path, text) = repo_gate();
        let spec = GateSpec::parse(&path, &text).unwrap();
        let super::super::Check::Regression(p) = &spec.check else {
            panic!("not a regression gate: {:?}", spec.check)
        };
        assert!(p.metrics.contains(&Metric::DecodeTokensPerS));
        assert_eq!(
            p.tolerance_of(Metric::E2eMs, "ort-cpu"),
            p.default_tolerance
        );
    }

    #[test]
    fn overrides_and_bad_values_in_the_gate_file() {
        let (path, text) = repo_gate();
        let with = |extra: &str| GateSpec::parse(&path, &format!("{text}\n{extra}\n"));
        let spec = with("[check.tolerance]\nprefill_ms = 0.3").unwrap();
        let super::super::Check::Regression(p) = &spec.check else {
            panic!()
        };
        assert_eq!(p.tolerance_of(Metric::PrefillMs, "ort-cpu"), 0.3);
        assert_eq!(p.tolerance_of(Metric::DecodeMs, "ort-cpu"), 0.10);
        // The per-backend band of the repository file applies, and a per-metric override wins.
        let llama = p.backend_tolerance["llama-cpp"];
        assert!(llama > p.default_tolerance);
        assert_eq!(p.tolerance_of(Metric::DecodeMs, "llama-cpp"), llama);
        assert_eq!(p.tolerance_of(Metric::PrefillMs, "llama-cpp"), 0.3);
        for (bad, expect) in [
            ("[check.tolerance]\nprefill_ms = 0", "tolerance.prefill_ms"),
            ("[check.tolerance]\nprefil_ms = 0.2", "prefil_ms"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(expect),
                "{e}"
            );
        }
        let e = GateSpec::parse(
            &path,
            &text.replace("\"prefill_ms\"", "\"prefill_seconds\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("prefill_seconds"), "{e}");
        let e = GateSpec::parse(&path, &text.replace("gen_tokens = 32", "gen_tokens = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gen_tokens"), "{e}");
    }

    #[test]
    fn metric_directions_and_values() {
        let t = RunTimings {
            prompt_tokens: 11,
            gen_tokens: 5,
            prefill_ms: 10.0,
            decode_ms: 40.0,
            e2e_ms: 50.0,
            decode_steps: 4,
            timing_source: crate::backend::TimingSource::Harness,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            memory_traffic: None,
        };
        assert_eq!(Metric::DecodeTokensPerS.value(&t, None), Some(100.0));
        assert_eq!(Metric::E2eTokensPerS.value(&t, None), Some(100.0));
        assert_eq!(Metric::PrefillMs.value(&t, None), Some(10.0));
        assert_eq!(Metric::E2eCpuMs.value(&t, None), None);
        assert_eq!(Metric::E2eCpuMs.value(&t, Some(7.0)), Some(7.0));
        assert_eq!(
            Metric::DecodeTokensPerS.direction(),
            Direction::HigherIsBetter
        );
        assert_eq!(Metric::E2eMs.direction(), Direction::LowerIsBetter);
    }

    #[test]
    fn a_series_with_a_degraded_run_is_not_compared() {
        let mut err = Err(crate::error::BackendError::load(
            "ort-cpu",
            "model file missing",
        ));
        let plan = SeriesPlan {
            run_id: "r".into(),
            trial: crate::gate::TrialId::new("g", crate::gate::Unit::backend("ort-cpu"), None),
            sub_series: None,
            scenario: "short".into(),
            prompt: vec![1],
            gen_tokens: 4,
            warmup: 1,
            repetitions: 3,
        };
        let recs = run_series(&mut err, &plan);
        let e = samples(&recs, &BTreeMap::new(), &[Metric::E2eMs]).unwrap_err();
        assert!(
            e.contains("degraded") && e.contains("model file missing"),
            "{e}"
        );
    }
}
