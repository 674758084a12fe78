//! Reports of one run directory: `summary.json` (every trial's verdict and metrics, counts by
//! verdict), `report.md` (the decision card, [`card`]), `junit.xml` ([`junit`]) and SVG plots
//! ([`plots`]), all rebuilt from the directory's files ([`input`]) so that `infergate report <dir>`
//! gives the same result after a nextest run (one process per trial) as `infergate run` does.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ReportError;
use crate::gate::{Counts, TrialResult};

pub mod analysis;
pub mod card;
pub mod input;
pub mod junit;
pub mod merge;
pub mod plots;
pub mod roofline;
pub mod scaling;

pub use input::{RunData, TrialRecord};

/// `summary.json`: the count of every verdict and every trial's result.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub counts: Counts,
    pub trials: &'a [TrialResult],
}

pub fn summarize(results: &[TrialResult]) -> Summary<'_> {
    Summary {
        counts: Counts::of(results.iter().map(|r| r.verdict)),
        trials: results,
    }
}

/// Write `<dir>/summary.json` atomically.
pub fn write_summary(dir: &Path, results: &[TrialResult]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("summary.json");
    let tmp = dir.join(format!(".summary.{}.tmp", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&summarize(results)).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Write `path` through a temporary file in the same directory, so a reader never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let write = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}

/// The files a report wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub summary: PathBuf,
    pub report_md: PathBuf,
    pub junit: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Write `summary.json`, `report.md`, `junit.xml` and the plots into `data.dir`. Plots that exist
/// from an earlier build of the same directory are replaced, not removed.
pub fn write_all(data: &RunData) -> Result<Written, ReportError> {
    let dir = data.dir.as_path();
    let results: Vec<TrialResult> = data.trials.iter().map(|t| t.result.clone()).collect();
    let summary = write_summary(dir, &results).map_err(|source| ReportError::Write {
        path: dir.join("summary.json"),
        source,
    })?;

    let rows = analysis::latency_rows(&data.runs);
    let latency_plots = plots::write_latency_plots(dir, &rows)?;
    let fits: Vec<Result<scaling::ScalingFit, String>> = data
        .trials
        .iter()
        .filter_map(|t| scaling::ScalingFit::from_trial(&t.result))
        .collect();
    let drawable: Vec<scaling::ScalingFit> = fits
        .iter()
        .filter_map(|f| f.as_ref().ok().cloned())
        .collect();
    let scaling_plots = plots::write_scaling_plots(dir, &drawable)?;

    let rel = |ps: &[PathBuf]| {
        ps.iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    };
    let files = card::Attachments {
        latency_plots: rel(&latency_plots),
        scaling_plots: rel(&scaling_plots),
    };
    let report_md = dir.join("report.md");
    write_atomic(&report_md, card::render(data, &fits, &files).as_bytes())?;
    let junit_path = dir.join("junit.xml");
    write_atomic(&junit_path, junit::render(data)?.as_bytes())?;
    Ok(Written {
        summary,
        report_md,
        junit: junit_path,
        plots: latency_plots.into_iter().chain(scaling_plots).collect(),
    })
}

/// `infergate report <dir>`: read the run directory and write every report file again.
pub fn rebuild(dir: &Path) -> Result<(RunData, Written), ReportError> {
    let data = RunData::load(dir)?;
    let written = write_all(&data)?;
    Ok((data, written))
}
