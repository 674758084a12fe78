//! Measurement: timed series of generations with labelled warmup, and one record per run.
//!
//! Every run is recorded — `ok` with its phase timings, `degraded(reason)` or `error(message)` with
//! none. A degraded run cannot carry a latency: the type has nowhere to put one (TR117's 0.30 ms
//! placeholders are unrepresentable).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, DecodeProjection, Generation, MemoryTraffic, TimingSource};
use crate::error::BackendError;

/// Warmup runs are kept in the record but excluded from every aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    Warmup,
    Measured,
}

/// Phase timings of one successful run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTimings {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub e2e_ms: f64,
    pub decode_steps: usize,
    pub timing_source: TimingSource,
    /// See [`Generation`]: engine-reported load time, prompt-cache reuse, early-stop projection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<DecodeProjection>,
    /// What the backend's decode step reads from memory, where it can tell (the roofline's input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_traffic: Option<MemoryTraffic>,
}

impl RunTimings {
    /// `kv_decode_ms / e2e_ms` (TR121).
    pub fn decode_fraction(&self) -> f64 {
        self.decode_ms / self.e2e_ms
    }
    /// Generated tokens per second over the decode loop.
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_steps as f64 / (self.decode_ms / 1e3)
    }
    /// Generated tokens per second end to end.
    pub fn e2e_tokens_per_s(&self) -> f64 {
        self.gen_tokens as f64 / (self.e2e_ms / 1e3)
    }
}

/// What happened in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunOutcome {
    Ok(RunTimings),
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
            RunOutcome::Degraded { .. } => "degraded",
            RunOutcome::Error { .. } => "error",
        }
    }
}

/// One line of `runs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub trial: String,
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
    pub fn timings(&self) -> Option<&RunTimings> {
        match &self.outcome {
            RunOutcome::Ok(t) => Some(t),
            _ => None,
        }
    }
}

/// What to run for one trial.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    pub run_id: String,
    pub trial: String,
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
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A generation's timings as a run record's, or why they are not plausible.
pub fn timings_of(g: &Generation, gen_tokens: usize) -> Result<RunTimings, String> {
    match &g.projection {
        None if g.tokens.len() != gen_tokens => {
            return Err(format!(
                "generated {} tokens, asked for {gen_tokens}",
                g.tokens.len()
            ))
        }
        Some(p) if p.requested_tokens != gen_tokens => {
            return Err(format!(
                "decode projected to {} tokens, asked for {gen_tokens}",
                p.requested_tokens
            ));
        }
        _ => {}
    }
    let finite = [g.prefill_ms, g.decode_ms, g.e2e_ms]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0);
    if !finite || g.e2e_ms + 1e-9 < g.prefill_ms + g.decode_ms - 1e-6 * g.e2e_ms {
        return Err(format!(
            "implausible timings: prefill {} ms, decode {} ms, e2e {} ms",
            g.prefill_ms, g.decode_ms, g.e2e_ms
        ));
    }
    Ok(RunTimings {
        prompt_tokens: g.prompt_tokens,
        gen_tokens,
        prefill_ms: g.prefill_ms,
        decode_ms: g.decode_ms,
        e2e_ms: g.e2e_ms,
        decode_steps: g.decode_steps,
        timing_source: g.timing_source,
        cold_start_ms: g.cold_start_ms,
        cached_prompt_tokens: g.cached_prompt_tokens,
        projection: g.projection.clone(),
        memory_traffic: None,
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
                Ok(g) => match timings_of(&g, plan.gen_tokens) {
                    Ok(t) => RunOutcome::Ok(RunTimings {
                        memory_traffic: b.memory_traffic(),
                        ..t
                    }),
                    Err(reason) => RunOutcome::Degraded {
                        reason: format!("invariant violated: {reason}"),
                    },
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
            &plan.trial,
            index + 1,
            plan.stated_runs(),
            phase_label,
            outcome.label(),
            clock.elapsed(),
        );
        records.push(RunRecord {
            run_id: plan.run_id.clone(),
            trial: plan.trial.clone(),
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

/// Measured (non-warmup) ok timings.
pub fn measured_ok(records: &[RunRecord]) -> Vec<&RunTimings> {
    records
        .iter()
        .filter(|r| r.phase == RunPhase::Measured)
        .filter_map(RunRecord::timings)
        .collect()
}

/// Appends records to a JSONL file; safe across threads and processes (one locked write per batch).
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
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.lock()?;
        f.write_all(&buf)?;
        f.flush()
    }
    /// Read every record back, failing on a malformed line (with its number).
    pub fn read(&self) -> std::io::Result<Vec<RunRecord>> {
        read_jsonl(&self.path)
    }
}

pub fn read_jsonl(path: &Path) -> std::io::Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| std::io::Error::other(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degraded_record_serializes_without_latency_fields() {
        let r = RunRecord {
            run_id: "r".into(),
            trial: "t".into(),
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
            trial: "t".into(),
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
