//! A run directory read back: `results.jsonl` (one verdict per trial), `runs.jsonl` (every run),
//! `manifest.json`, and the gate files the manifest names (for each gate's claim in words).
//!
//! Several processes may write one run directory (nextest runs each trial in its own process with a
//! shared `NEXTEST_RUN_ID`); a trial run twice keeps its last result. A malformed line is an error
//! naming the file and line: a report must not silently drop evidence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::gate::{GateSpec, TrialResult};
use crate::manifest::Manifest;
use crate::measure::RunRecord;

/// One line of `results.jsonl`: the trial's result and, when the runner wrote it, how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    #[serde(flatten)]
    pub result: TrialResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_utc: Option<String>,
}

impl From<TrialResult> for TrialRecord {
    fn from(result: TrialResult) -> Self {
        TrialRecord {
            result,
            elapsed_s: None,
            finished_utc: None,
        }
    }
}

/// A gate's claim in words and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct GateInfo {
    pub claim: String,
    pub source: String,
}

/// Everything a report is built from.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub dir: PathBuf,
    pub run_id: String,
    pub manifest: Option<Manifest>,
    /// Last result per trial, in order of first appearance.
    pub trials: Vec<TrialRecord>,
    /// Records of this run id (warmup included).
    pub runs: Vec<RunRecord>,
    /// Gate id → claim and source.
    pub gates: BTreeMap<String, GateInfo>,
    /// Raw JSON lines of every `*.jsonl` in the directory (for `no_data` outcomes, whatever wrote them).
    pub raw_lines: Vec<(String, serde_json::Value)>,
    /// What could not be read, said in the report.
    pub notes: Vec<String>,
}

impl RunData {
    /// Read `dir`. `results.jsonl` must exist; the rest is optional and its absence is noted.
    pub fn load(dir: &Path) -> Result<RunData, ReportError> {
        let results_path = dir.join("results.jsonl");
        if !results_path.exists() {
            return Err(ReportError::NotARunDir {
                dir: dir.to_path_buf(),
                file: "results.jsonl".into(),
            });
        }
        let mut data = RunData {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        let manifest_path = dir.join("manifest.json");
        if manifest_path.exists() {
            let text = read(&manifest_path)?;
            let m: Manifest = serde_json::from_str(&text).map_err(|e| ReportError::Malformed {
                path: manifest_path.clone(),
                line: e.line(),
                detail: e.to_string(),
            })?;
            data.run_id = m.run_id.clone();
            data.manifest = Some(m);
        } else {
            data.notes.push(format!(
                "{} is missing: machine, runtimes and commit are unknown",
                manifest_path.display()
            ));
        }
        if data.run_id.is_empty() {
            data.run_id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        let results = read_results(&results_path, &mut data.notes)?;
        data.trials = last_per_trial(results);
        let runs_path = dir.join("runs.jsonl");
        if runs_path.exists() {
            let runs: Vec<RunRecord> = read_jsonl(&runs_path)?;
            data.runs = runs
                .into_iter()
                .filter(|r| r.run_id == data.run_id)
                .collect();
        }
        data.raw_lines = read_all_jsonl(dir)?;
        data.gates = gate_infos(data.manifest.as_ref(), &mut data.notes);
        Ok(data)
    }

    /// Claims from gate specs already in memory (what `infergate run` has), overriding the files.
    pub fn with_specs(mut self, specs: &[GateSpec]) -> Self {
        for s in specs {
            self.gates.insert(
                s.id.clone(),
                GateInfo {
                    claim: s.claim.clone(),
                    source: s.source.clone(),
                },
            );
        }
        self
    }
}

fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse every non-empty line of a JSONL file as `T`.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReportError> {
    let text = read(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ReportError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                detail: e.to_string(),
            })
        })
        .collect()
}

/// `results.jsonl`, tolerating metrics written as `null` (serde_json writes NaN so): they are dropped
/// and noted, never turned into numbers.
fn read_results(path: &Path, notes: &mut Vec<String>) -> Result<Vec<TrialRecord>, ReportError> {
    let values: Vec<serde_json::Value> = read_jsonl(path)?;
    let mut out = Vec::with_capacity(values.len());
    for (i, mut v) in values.into_iter().enumerate() {
        let trial = v
            .get("trial")
            .and_then(|t| t.as_str())
            .unwrap_or("?")
            .to_string();
        if let Some(metrics) = v.get_mut("metrics").and_then(|m| m.as_object_mut()) {
            let nulls: Vec<String> = metrics
                .iter()
                .filter(|(_, x)| x.is_null())
                .map(|(k, _)| k.clone())
                .collect();
            for k in nulls {
                metrics.remove(&k);
                notes.push(format!(
                    "{trial}: metric `{k}` is not a number (NaN) and is left out"
                ));
            }
        }
        let record = serde_json::from_value(v).map_err(|e| ReportError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        out.push(record);
    }
    Ok(out)
}

/// `(file name, value)` for every line of every `*.jsonl` in `dir`, sorted by file name.
fn read_all_jsonl(dir: &Path) -> Result<Vec<(String, serde_json::Value)>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for v in read_jsonl::<serde_json::Value>(&f)? {
            out.push((name.clone(), v));
        }
    }
    Ok(out)
}

fn last_per_trial(results: Vec<TrialRecord>) -> Vec<TrialRecord> {
    let mut order: Vec<String> = Vec::new();
    let mut last: BTreeMap<String, TrialRecord> = BTreeMap::new();
    for r in results {
        if !last.contains_key(&r.result.trial) {
            order.push(r.result.trial.clone());
        }
        last.insert(r.result.trial.clone(), r);
    }
    order.into_iter().filter_map(|t| last.remove(&t)).collect()
}

/// Claims from the gate files the manifest names, if they are still there and unchanged.
fn gate_infos(manifest: Option<&Manifest>, notes: &mut Vec<String>) -> BTreeMap<String, GateInfo> {
    let mut out = BTreeMap::new();
    for g in manifest
        .map(|m| m.gate_files.as_slice())
        .unwrap_or_default()
    {
        let path = Path::new(&g.path);
        match GateSpec::load(path) {
            Ok(spec) if spec.file_sha256 == g.sha256 => {
                out.insert(
                    g.id.clone(),
                    GateInfo {
                        claim: spec.claim,
                        source: spec.source,
                    },
                );
            }
            Ok(_) => notes.push(format!(
                "gate file {} changed since the run (sha256 differs): its claim is not shown",
                g.path
            )),
            Err(e) => notes.push(format!(
                "gate file of `{}` unreadable ({e}): its claim is not shown",
                g.id
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{RunCounts, Verdict};

    fn result(trial: &str, verdict: Verdict) -> TrialResult {
        TrialResult {
            trial: trial.into(),
            gate: "g".into(),
            backend: "b".into(),
            scenario: None,
            verdict,
            metrics: BTreeMap::new(),
            runs: RunCounts::default(),
            degraded_reasons: vec![],
        }
    }

    #[test]
    fn a_rerun_trial_keeps_its_last_result_in_first_order() {
        let a1 = TrialRecord::from(result("a", Verdict::Fail { reason: "x".into() }));
        let b = TrialRecord::from(result(
            "b",
            Verdict::Pass {
                summary: "y".into(),
            },
        ));
        let a2 = TrialRecord::from(result(
            "a",
            Verdict::Pass {
                summary: "z".into(),
            },
        ));
        let kept = last_per_trial(vec![a1, b, a2.clone()]);
        assert_eq!(
            kept.iter()
                .map(|r| r.result.trial.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(kept[0], a2);
    }

    #[test]
    fn a_results_line_with_timing_round_trips_and_one_without_reads() {
        let mut r = TrialRecord::from(result(
            "a",
            Verdict::Skip {
                reason: "absent".into(),
            },
        ));
        r.elapsed_s = Some(1.5);
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.contains("\"elapsed_s\":1.5") && line.contains("\"verdict\":\"skip\""),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<TrialRecord>(&line).unwrap(), r);
        let plain = serde_json::to_string(&r.result).unwrap();
        assert_eq!(
            serde_json::from_str::<TrialRecord>(&plain)
                .unwrap()
                .elapsed_s,
            None
        );
    }

    #[test]
    fn a_directory_without_results_is_not_a_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        let e = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("results.jsonl") && e.contains("infergate run"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_string(&result(
            "a",
            Verdict::Pass {
                summary: "ok".into(),
            },
        ))
        .unwrap();
        std::fs::write(
            dir.path().join("results.jsonl"),
            format!("{line}\n{{not json\n"),
        )
        .unwrap();
        let e = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("results.jsonl:2"), "{e}");
    }
}
