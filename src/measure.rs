//! Measurement: timed series of generations with labelled warmup, and one record per run.
//!
//! Every run is recorded — `ok` with its phase timings, `projected` when the engine stopped before
//! the requested length (its measured timings and the fixed-length projection, for reading only),
//! `degraded(reason)` or `error(message)` with none. A degraded run cannot carry a latency: the type
//! has nowhere to put one (TR117's 0.30 ms placeholders are unrepresentable). Only `ok` runs have
//! [`RunRecord::timings`], so a projected run cannot enter a median, a decode fraction, a
//! distribution or a regression comparison by accident.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Generation};
use crate::error::{BackendError, ReportError};
use crate::id::TrialId;

/// Warmup runs are kept in the record but excluded from every aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    Warmup,
    Measured,
}

/// A successful run's timings are its generation's ([`Generation::timings`]), with the backend's
/// memory traffic added.
pub use crate::backend::RunTimings;

/// A run whose engine stopped before the requested length (EOS it cannot be told to ignore): what it
/// measured, and the fixed-length projection (TR121) for reading only. Never part of an aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectedRun {
    /// Timings over what was generated: `gen_tokens` = tokens generated (the engine's count),
    /// `decode_steps` = the decode forward passes that `decode_ms` covers.
    pub measured: RunTimings,
    /// Tokens the workload asked for.
    pub requested_tokens: usize,
    /// Why the engine stopped (Ollama `done_reason`).
    pub stop_reason: String,
    /// Decode time at the requested length: `decode_ms / decode_steps × (requested_tokens − 1)`, the
    /// divisor being the forward passes the measured decode time covers. `None` when no decode step
    /// was measured (the engine stopped on its first token): nothing to project from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_decode_ms: Option<f64>,
    /// `e2e_ms` grown by the projected decode time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_e2e_ms: Option<f64>,
}

impl ProjectedRun {
    /// Project `measured` (taken over `measured.gen_tokens` tokens) to `requested_tokens`.
    pub fn new(measured: RunTimings, requested_tokens: usize, stop_reason: String) -> Self {
        let steps = measured.decode_steps;
        let projected_decode_ms = (steps > 0 && requested_tokens > 0)
            .then(|| measured.decode_ms / steps as f64 * (requested_tokens - 1) as f64);
        let projected_e2e_ms =
            projected_decode_ms.map(|d| measured.e2e_ms + (d - measured.decode_ms));
        ProjectedRun {
            measured,
            requested_tokens,
            stop_reason,
            projected_decode_ms,
            projected_e2e_ms,
        }
    }

    /// One line for verdicts and reports.
    pub fn describe(&self) -> String {
        format!(
            "the engine stopped early ({}) after {} of {} tokens: timings are projected, not measured at the \
             requested length, and the run is kept out of every aggregate",
            self.stop_reason, self.measured.gen_tokens, self.requested_tokens
        )
    }
}

/// What happened in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunOutcome {
    Ok(RunTimings),
    /// The engine stopped before the requested length; see [`ProjectedRun`].
    Projected(ProjectedRun),
    /// The backend could not run the workload as specified (absent, failed to load, broke an invariant).
    Degraded {
        reason: String,
    },
    /// The run started and failed.
    Error {
        message: String,
    },
}

impl RunOutcome {
    pub fn from_error(e: &BackendError) -> Self {
        match e {
            BackendError::Run { .. } => RunOutcome::Error {
                message: e.to_string(),
            },
            _ => RunOutcome::Degraded {
                reason: e.to_string(),
            },
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            RunOutcome::Ok(_) => "ok",
            RunOutcome::Projected(_) => "projected",
            RunOutcome::Degraded { .. } => "degraded",
            RunOutcome::Error { .. } => "error",
        }
    }
    /// Why this run is not an `ok` run (`None` for an ok run), for verdicts that name such runs.
    pub fn not_ok_reason(&self) -> Option<String> {
        match self {
            RunOutcome::Ok(_) => None,
            RunOutcome::Projected(p) => Some(p.describe()),
            RunOutcome::Degraded { reason } => Some(reason.clone()),
            RunOutcome::Error { message } => Some(message.clone()),
        }
    }
}

/// One line of `runs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub trial: TrialId,
    /// A named series inside the trial: a model variant (the scaling gate's shape `l4-d384`), a
    /// negative control, a re-measurement. `None` = the trial's own series on the gate's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_series: Option<String>,
    pub backend: String,
    pub scenario: String,
    /// Position in the trial's series, warmup included, from 0.
    pub index: usize,
    pub phase: RunPhase,
    pub started_unix_ms: u64,
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

impl RunRecord {
    /// The timings of an `ok` run; `None` for every other outcome, a projected run included.
    pub fn timings(&self) -> Option<&RunTimings> {
        match &self.outcome {
            RunOutcome::Ok(t) => Some(t),
            _ => None,
        }
    }
    /// The record of a run that stopped early, if this is one.
    pub fn projected(&self) -> Option<&ProjectedRun> {
        match &self.outcome {
            RunOutcome::Projected(p) => Some(p),
            _ => None,
        }
    }
}

/// What to run for one trial.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    pub run_id: String,
    pub trial: TrialId,
    /// See [`RunRecord::sub_series`].
    pub sub_series: Option<String>,
    pub scenario: String,
    pub prompt: Vec<u32>,
    pub gen_tokens: usize,
    pub warmup: usize,
    pub repetitions: usize,
}

impl SeriesPlan {
    /// The number of records this plan states it will produce.
    pub fn stated_runs(&self) -> usize {
        self.warmup + self.repetitions
    }

    /// The trial name with the sub-series, for progress lines (`…::short [negative-control]`).
    pub fn series_name(&self) -> String {
        match &self.sub_series {
            Some(s) => format!("{} [{s}]", self.trial),
            None => self.trial.to_string(),
        }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A generation's timings as a run record's, or why they are not plausible. A generation that
/// stopped before `gen_tokens` is refused here (it was not measured at the requested length); use
/// [`outcome_of`] to record it as projected.
pub fn timings_of(g: &Generation, gen_tokens: usize) -> Result<RunTimings, String> {
    // The engine's own count is the count of record when it stopped itself (its text may lack the
    // stop token); otherwise the tokens returned.
    let generated = match &g.early_stop {
        Some(stop) if stop.requested_tokens != gen_tokens => {
            return Err(format!(
                "the engine was asked for {} tokens, the workload for {gen_tokens}",
                stop.requested_tokens
            ))
        }
        Some(stop) => stop.generated_tokens,
        None => g.tokens.len(),
    };
    if generated != gen_tokens {
        let why = g
            .early_stop
            .as_ref()
            .map(|s| format!(" (the engine stopped: {})", s.stop_reason))
            .unwrap_or_default();
        return Err(format!(
            "generated {generated} tokens, asked for {gen_tokens}{why}"
        ));
    }
    measured_timings(g, gen_tokens)
}

/// The run record's outcome for a generation of `gen_tokens` requested tokens: `ok` when it was
/// measured at that length, `projected` when the engine stopped short, `degraded` when its numbers
/// are not plausible.
pub fn outcome_of(g: &Generation, gen_tokens: usize) -> RunOutcome {
    let invariant = |reason: String| RunOutcome::Degraded {
        reason: format!("invariant violated: {reason}"),
    };
    match &g.early_stop {
        Some(stop) if stop.requested_tokens == gen_tokens && stop.generated_tokens < gen_tokens => {
            match measured_timings(g, stop.generated_tokens) {
                Ok(measured) => RunOutcome::Projected(ProjectedRun::new(
                    measured,
                    gen_tokens,
                    stop.stop_reason.clone(),
                )),
                Err(reason) => invariant(reason),
            }
        }
        _ => timings_of(g, gen_tokens).map_or_else(invariant, RunOutcome::Ok),
    }
}

/// `g`'s phases as timings over `tokens` generated tokens, if they are plausible: finite, prefill
/// and e2e positive, decode positive when a decode step was taken, e2e ≥ prefill + decode.
fn measured_timings(g: &Generation, tokens: usize) -> Result<RunTimings, String> {
    let t = &g.timings;
    let finite = [t.prefill_ms, t.decode_ms, t.e2e_ms]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0);
    let positive =
        t.prefill_ms > 0.0 && t.e2e_ms > 0.0 && (t.decode_ms > 0.0 || t.decode_steps == 0);
    if !finite || !positive || t.e2e_ms + 1e-9 < t.prefill_ms + t.decode_ms - 1e-6 * t.e2e_ms {
        return Err(format!(
            "implausible timings: prefill {} ms, decode {} ms, e2e {} ms",
            t.prefill_ms, t.decode_ms, t.e2e_ms
        ));
    }
    Ok(RunTimings {
        gen_tokens: tokens,
        memory_traffic: None,
        ..t.clone()
    })
}

/// Run `plan` on a backend that may have failed to open. A backend that could not be opened yields
/// `stated_runs()` degraded records carrying the reason, never a number.
pub fn run_series(
    backend: &mut Result<Box<dyn Backend>, BackendError>,
    plan: &SeriesPlan,
) -> Vec<RunRecord> {
    let mut records = Vec::with_capacity(plan.stated_runs());
    let backend_id = match &backend {
        Ok(b) => b.info().id.clone(),
        Err(e) => backend_id_of(e),
    };
    for index in 0..plan.stated_runs() {
        let phase = if index < plan.warmup {
            RunPhase::Warmup
        } else {
            RunPhase::Measured
        };
        let started_unix_ms = unix_ms();
        let clock = std::time::Instant::now();
        let outcome = match backend {
            Err(e) => RunOutcome::from_error(e),
            Ok(b) => match b.generate(&plan.prompt, plan.gen_tokens) {
                Ok(g) => match outcome_of(&g, plan.gen_tokens) {
                    RunOutcome::Ok(t) => RunOutcome::Ok(RunTimings {
                        memory_traffic: b.memory_traffic(),
                        ..t
                    }),
                    other => other,
                },
                Err(e) => RunOutcome::from_error(&e),
            },
        };
        let phase_label = if phase == RunPhase::Warmup {
            "warmup"
        } else {
            "measured"
        };
        crate::progress::series_run(
            &plan.series_name(),
            index + 1,
            plan.stated_runs(),
            phase_label,
            outcome.label(),
            clock.elapsed(),
        );
        records.push(RunRecord {
            run_id: plan.run_id.clone(),
            trial: plan.trial.clone(),
            sub_series: plan.sub_series.clone(),
            backend: backend_id.clone(),
            scenario: plan.scenario.clone(),
            index,
            phase,
            started_unix_ms,
            outcome,
        });
    }
    records
}

fn backend_id_of(e: &BackendError) -> String {
    match e {
        BackendError::Unavailable { backend, .. }
        | BackendError::Load { backend, .. }
        | BackendError::Run { backend, .. }
        | BackendError::Invariant { backend, .. }
        | BackendError::Unsupported { backend, .. } => backend.clone(),
        BackendError::Model(_) => "unknown".into(),
    }
}

/// Measured (non-warmup) ok timings: what every aggregate is computed from. Projected, degraded and
/// errored runs are not in it.
pub fn measured_ok(records: &[RunRecord]) -> Vec<&RunTimings> {
    records
        .iter()
        .filter(|r| r.phase == RunPhase::Measured)
        .filter_map(RunRecord::timings)
        .collect()
}

/// Appends run records to `runs.jsonl`; safe across threads and processes.
#[derive(Debug, Clone)]
pub struct RunLog {
    path: PathBuf,
}

impl RunLog {
    pub fn new(path: PathBuf) -> Self {
        RunLog { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn append(&self, records: &[RunRecord]) -> std::io::Result<()> {
        crate::jsonl::append(&self.path, records)
    }
    /// Read every record back, failing on a malformed line (with its number).
    pub fn read(&self) -> Result<Vec<RunRecord>, ReportError> {
        crate::jsonl::read(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degraded_record_serializes_without_latency_fields() {
        let r = RunRecord {
            run_id: "r".into(),
            trial: TrialId::new("g", crate::id::Unit::backend("b"), None),
            sub_series: None,
            backend: "b".into(),
            scenario: "s".into(),
            index: 0,
            phase: RunPhase::Measured,
            started_unix_ms: 1,
            outcome: RunOutcome::Degraded {
                reason: "no runtime".into(),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "degraded");
        for key in ["prefill_ms", "decode_ms", "e2e_ms"] {
            assert!(v.get(key).is_none(), "{key} present on a degraded run");
        }
        let back: RunRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unloadable_backend_gives_stated_count_of_degraded_runs() {
        let mut err = Err(BackendError::load("ort-cpu", "model file missing"));
        let plan = SeriesPlan {
            run_id: "r".into(),
            trial: TrialId::new("g", crate::id::Unit::backend("ort-cpu"), None),
            sub_series: None,
            scenario: "s".into(),
            prompt: vec![1],
            gen_tokens: 4,
            warmup: 2,
            repetitions: 3,
        };
        let recs = run_series(&mut err, &plan);
        assert_eq!(recs.len(), plan.stated_runs());
        assert!(recs.iter().all(|r| matches!(&r.outcome, RunOutcome::Degraded { reason } if reason.contains("model file missing"))));
        assert_eq!(
            recs.iter().filter(|r| r.phase == RunPhase::Warmup).count(),
            2
        );
        assert!(measured_ok(&recs).is_empty());
    }
}
