//! The run directory `target/infergate/<run-id>/` and the records in it: written by the runner, read
//! by [`crate::report`], each a type written once and read back as the same type (no JSON edited
//! as untyped values, no names parsed back).
//!
//! | file | record |
//! |---|---|
//! | `runs.jsonl` | [`RunRecord`] per run (written through [`crate::measure::RunLog`]) |
//! | `results.jsonl` | [`TrialRecord`] per trial: its [`TrialResult`], how long it took |
//! | `plan.jsonl` | [`PlanRecord`] per planned trial: runnable, or its plan-time skip |
//! | `manifest.json` | [`Manifest`] |
//!
//! Several processes may append to one directory (nextest runs every trial in its own process):
//! every append is one locked write of whole lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::gate::{Skip, TrialResult};
use crate::id::TrialId;
use crate::jsonl;
pub use crate::manifest::Manifest;
use crate::measure::RunLog;
pub use crate::measure::RunRecord;

pub const RUNS: &str = "runs.jsonl";
pub const RESULTS: &str = "results.jsonl";
pub const PLAN: &str = "plan.jsonl";
pub const MANIFEST: &str = "manifest.json";

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    #[serde(flatten)]
    pub result: TrialResult,
    /// Seconds the trial took (JUnit times), when the runner timed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_utc: Option<String>,
    /// Rebuilt by `infergate report` from `plan.jsonl` (a plan-time skip no process recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_plan: bool,
}

impl From<TrialResult> for TrialRecord {
    fn from(result: TrialResult) -> Self {
        TrialRecord {
            result,
            elapsed_s: None,
            finished_utc: None,
            from_plan: false,
        }
    }
}

/// One line of `plan.jsonl`: a planned trial and, when it will not run here, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub trial: TrialId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<Skip>,
}

/// A run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new(path: PathBuf) -> Self {
        RunDir { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    pub fn run_log(&self) -> RunLog {
        RunLog::new(self.file(RUNS))
    }

    /// Create the directory with an empty `runs.jsonl` (so a run whose gates time nothing still
    /// says "no runs") and write `manifest.json` once per run directory (parallel processes of one
    /// run share it; `manifest` is called only by the first). Returns the manifest's path.
    pub fn start(&self, manifest: impl FnOnce() -> Manifest) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.path)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(RUNS))?;
        let path = self.file(MANIFEST);
        if path.exists() {
            return Ok(path);
        }
        let tmp = self
            .path
            .join(format!(".manifest.{}.tmp", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&manifest()).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Append one trial's result with its elapsed time.
    pub fn append_result(&self, result: &TrialResult, elapsed_s: f64) -> std::io::Result<()> {
        let record = TrialRecord {
            result: result.clone(),
            elapsed_s: Some(elapsed_s),
            finished_utc: Some(chrono::Utc::now().to_rfc3339()),
            from_plan: false,
        };
        jsonl::append(&self.file(RESULTS), std::slice::from_ref(&record))
    }

    /// Append planned trials.
    pub fn append_plan(&self, plan: &[PlanRecord]) -> std::io::Result<()> {
        jsonl::append(&self.file(PLAN), plan)
    }

    /// Write the plan only if no process of this run wrote one yet (nextest: every trial's process
    /// plans the whole suite; one copy is enough). Returns whether it wrote.
    pub fn write_plan_once(&self, plan: &[PlanRecord]) -> std::io::Result<bool> {
        std::fs::create_dir_all(&self.path)?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.file(PLAN))
        {
            Ok(mut f) => {
                f.lock()?;
                f.write_all(&jsonl::lines(plan)?)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn read_results(&self) -> Result<Vec<TrialRecord>, ReportError> {
        jsonl::read(&self.file(RESULTS))
    }
    /// `plan.jsonl`, empty when no process wrote one.
    pub fn read_plan(&self) -> Result<Vec<PlanRecord>, ReportError> {
        let path = self.file(PLAN);
        if path.exists() {
            jsonl::read(&path)
        } else {
            Ok(Vec::new())
        }
    }
    /// `runs.jsonl` records of `run_id` (a file shared by several runs keeps only this run's).
    pub fn read_runs(&self, run_id: &str) -> Result<Vec<RunRecord>, ReportError> {
        let path = self.file(RUNS);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let runs: Vec<RunRecord> = jsonl::read(&path)?;
        Ok(runs.into_iter().filter(|r| r.run_id == run_id).collect())
    }
    /// `bandwidth.jsonl`: the memory-bandwidth samples of the run ([`crate::roofline`]).
    pub fn read_bandwidth(&self) -> Result<Vec<crate::roofline::BandwidthSample>, ReportError> {
        let path = self.file(crate::roofline::BANDWIDTH_FILE);
        if path.exists() {
            jsonl::read(&path)
        } else {
            Ok(Vec::new())
        }
    }
    pub fn read_manifest(&self) -> Result<Option<Manifest>, ReportError> {
        let path = self.file(MANIFEST);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ReportError::Malformed {
                path,
                line: e.line(),
                detail: e.to_string(),
            })
    }
}
