//! A run directory read back through [`crate::record`]: `results.jsonl` (one verdict per trial),
//! `plan.jsonl` (plan-time skips no process recorded, e.g. under nextest), `runs.jsonl` (every
//! run), `manifest.json`, and the gate files the manifest names (for each gate's claim in words).
//!
//! Several processes may write one run directory (nextest runs each trial in its own process with a
//! shared `NEXTEST_RUN_ID`); a trial run twice keeps its last result. A malformed line is an error
//! naming the file and line: a report must not silently drop evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::ReportError;
use crate::gate::{GateSpec, TrialId, TrialResult};
use crate::manifest::Manifest;
use crate::measure::RunRecord;
pub use crate::record::TrialRecord;
use crate::record::{PlanRecord, RunDir, RESULTS};

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
    /// Last result per trial, in order of first appearance; then the plan's skips that no process
    /// recorded, in plan order.
    pub trials: Vec<TrialRecord>,
    /// Records of this run id (warmup included).
    pub runs: Vec<RunRecord>,
    /// Gate id → claim and source.
    pub gates: BTreeMap<String, GateInfo>,
    /// Memory-bandwidth samples of the run (several when shards were merged).
    pub bandwidth: Vec<crate::roofline::BandwidthSample>,
    /// What could not be read, said in the report.
    pub notes: Vec<String>,
}

impl RunData {
    /// Read `dir`. `results.jsonl` or `plan.jsonl` must exist; the rest is optional and its
    /// absence is noted.
    pub fn load(dir: &Path) -> Result<RunData, ReportError> {
        let run_dir = RunDir::new(dir.to_path_buf());
        let results_path = run_dir.file(RESULTS);
        let plan = run_dir.read_plan()?;
        if !results_path.exists() && plan.is_empty() {
            return Err(ReportError::NotARunDir {
                dir: dir.to_path_buf(),
                file: RESULTS.into(),
            });
        }
        let mut data = RunData {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        match run_dir.read_manifest()? {
            Some(m) => {
                data.run_id = m.run_id.clone();
                data.manifest = Some(m);
            }
            None => data.notes.push(format!(
                "{} is missing: machine, runtimes and commit are unknown",
                run_dir.file(crate::record::MANIFEST).display()
            )),
        }
        if data.run_id.is_empty() {
            data.run_id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        let results = if results_path.exists() {
            run_dir.read_results()?
        } else {
            Vec::new()
        };
        data.trials = with_plan_skips(last_per_trial(results), plan);
        data.runs = run_dir.read_runs(&data.run_id)?;
        data.bandwidth = run_dir.read_bandwidth()?;
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

    /// The trials' results, in card order.
    pub fn results(&self) -> impl Iterator<Item = &TrialResult> {
        self.trials.iter().map(|t| &t.result)
    }
}

fn last_per_trial(results: Vec<TrialRecord>) -> Vec<TrialRecord> {
    let mut order: Vec<TrialId> = Vec::new();
    let mut last: BTreeMap<TrialId, TrialRecord> = BTreeMap::new();
    for r in results {
        if !last.contains_key(&r.result.trial) {
            order.push(r.result.trial.clone());
        }
        last.insert(r.result.trial.clone(), r);
    }
    order.into_iter().filter_map(|t| last.remove(&t)).collect()
}

/// Plan-time skips without a result of their own become SKIP records (marked `from_plan`), so a
/// gate whose trials were all skipped before running still has its row in the card.
fn with_plan_skips(mut trials: Vec<TrialRecord>, plan: Vec<PlanRecord>) -> Vec<TrialRecord> {
    let mut seen: BTreeSet<TrialId> = trials.iter().map(|t| t.result.trial.clone()).collect();
    for p in plan {
        let Some(skip) = p.skip else { continue };
        if seen.insert(p.trial.clone()) {
            let mut record = TrialRecord::from(TrialResult::skipped(p.trial, skip));
            record.from_plan = true;
            trials.push(record);
        }
    }
    trials
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
    use crate::gate::{Part, Skip, SkipCause, Threshold, Unit, Verdict};

    fn id(trial: &str) -> TrialId {
        TrialId::new("g", Unit::backend(trial), None)
    }

    fn result(trial: &str, held: bool) -> TrialResult {
        let spec = GateSpec::parse(
            Path::new("g.toml"),
            "id = \"g\"\nclaim = \"c\"\nsource = \"s\"\nmodel = \"smollm2-135m-instruct\"\nbackends = [\"ort-cpu\"]\n\
             [profiles.ci]\nwarmup = 0\nrepetitions = 1\n[profiles.full]\nwarmup = 0\nrepetitions = 1\n\
             [check]\nkind = \"degraded_runs\"\ngen_tokens = 4\n",
        )
        .unwrap();
        let part = Part::compare("x", if held { 1.0 } else { 2.0 }, Threshold::equal(1.0), "");
        TrialResult::judge(
            &spec,
            id(trial),
            crate::gate::Evaluation::judged(vec![part], "s"),
        )
    }

    #[test]
    fn a_rerun_trial_keeps_its_last_result_in_first_order() {
        let a1 = TrialRecord::from(result("a", false));
        let b = TrialRecord::from(result("b", true));
        let a2 = TrialRecord::from(result("a", true));
        let kept = last_per_trial(vec![a1, b, a2.clone()]);
        assert_eq!(
            kept.iter()
                .map(|r| r.result.trial.clone())
                .collect::<Vec<_>>(),
            [id("a"), id("b")]
        );
        assert_eq!(kept[0], a2);
        assert_eq!(kept[0].result.verdict, Verdict::Pass);
    }

    #[test]
    fn a_results_line_round_trips_with_and_without_timing() {
        let mut r = TrialRecord::from(TrialResult::skipped(
            id("a"),
            Skip::new(SkipCause::BackendAbsent, "absent"),
        ));
        r.elapsed_s = Some(1.5);
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.contains("\"elapsed_s\":1.5") && line.contains("\"verdict\":\"skip\""),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<TrialRecord>(&line).unwrap(), r);
        let judged = TrialRecord::from(result("b", false));
        let line = serde_json::to_string(&judged).unwrap();
        assert_eq!(serde_json::from_str::<TrialRecord>(&line).unwrap(), judged);
    }

    #[test]
    fn plan_time_skips_without_a_result_are_rebuilt_from_the_plan() {
        // Item 8: under nextest, plan-time skips never reached results.jsonl.
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().to_path_buf());
        let skip = Skip::new(SkipCause::BackendAbsent, "llama-cpp absent (fix: build it)");
        run.append_plan(&[
            PlanRecord {
                trial: id("ran"),
                skip: None,
            },
            PlanRecord {
                trial: id("skipped"),
                skip: Some(skip.clone()),
            },
        ])
        .unwrap();
        let data = RunData::load(dir.path()).unwrap();
        assert_eq!(
            data.trials.len(),
            1,
            "a runnable trial without a result is not invented"
        );
        let t = &data.trials[0];
        assert!(t.from_plan && t.result.verdict == Verdict::Skip);
        assert_eq!(t.result.skip(), Some(&skip));
        // A result recorded for a planned skip wins over the plan.
        run.append_result(&TrialResult::skipped(id("skipped"), skip), 0.1)
            .unwrap();
        let data = RunData::load(dir.path()).unwrap();
        assert_eq!(data.trials.len(), 1);
        assert!(!data.trials[0].from_plan);
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
        let line = serde_json::to_string(&TrialRecord::from(result("a", true))).unwrap();
        std::fs::write(
            dir.path().join("results.jsonl"),
            format!("{line}\n{{not json\n"),
        )
        .unwrap();
        let e = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("results.jsonl:2"), "{e}");
    }
}
