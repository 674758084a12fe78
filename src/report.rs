//! Reports: the run's `summary.json` (every trial's verdict and metrics, counts by verdict).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::gate::{TrialResult, Verdict};

#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub trials: &'a [TrialResult],
}

pub fn summarize(results: &[TrialResult]) -> Summary<'_> {
    let count = |f: fn(&Verdict) -> bool| results.iter().filter(|r| f(&r.verdict)).count();
    Summary {
        passed: count(|v| matches!(v, Verdict::Pass { .. })),
        failed: count(|v| matches!(v, Verdict::Fail { .. })),
        skipped: count(|v| matches!(v, Verdict::Skip { .. })),
        trials: results,
    }
}

/// Write `<dir>/summary.json` atomically.
pub fn write_summary(dir: &Path, results: &[TrialResult]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("summary.json");
    let tmp = dir.join(format!(".summary.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&summarize(results)).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
