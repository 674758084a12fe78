//! Shards of one run, merged into one run directory: when the suite is spread over several runners
//! (`cargo nextest run --partition count:K/N`, every shard with the same `INFERGATE_RUN_ID`), each
//! runner leaves its own `target/infergate/<run-id>/`; `infergate report --into <dir> <shard>…`
//! merges them so the card, `junit.xml` and `summary.json` cover the whole run.
//!
//! Every `*.jsonl` file (results, runs, bandwidth samples, energy records) is concatenated shard by
//! shard, in the order given; the manifest is the earliest-started shard's. Shards must carry one run
//! id — the report reads only the runs of its run id, so shards of different runs would silently
//! lose their runs — and a trial present in two shards is an error (a partition overlap), never
//! resolved by picking one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::ReportError;
use crate::manifest::Manifest;

/// What a merge wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub dir: PathBuf,
    pub run_id: String,
    /// Shard directory → trials it contributed.
    pub trials_per_shard: Vec<(PathBuf, usize)>,
    /// Machines (CPU model, cores) of the shards, where they differ from the first.
    pub other_machines: Vec<String>,
}

fn merge_error(detail: String, fix: &str) -> ReportError {
    ReportError::Merge {
        detail,
        fix: fix.into(),
    }
}

fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Merge `shards` into `into` (created if needed; its `*.jsonl` and `manifest.json` are replaced).
pub fn merge(shards: &[PathBuf], into: &Path) -> Result<Merged, ReportError> {
    if shards.is_empty() {
        return Err(merge_error(
            "no shard directory given".into(),
            "pass every shard's target/infergate/<run-id> directory",
        ));
    }
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    if shards.iter().any(|s| canonical(s) == canonical(into)) {
        return Err(merge_error(
            format!("{} is both a shard and the output", into.display()),
            "merge into a new directory (--into)",
        ));
    }
    let mut manifests: Vec<(PathBuf, Manifest)> = Vec::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut trials_per_shard = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for shard in shards {
        let results = shard.join("results.jsonl");
        if !results.exists() {
            return Err(ReportError::NotARunDir {
                dir: shard.clone(),
                file: "results.jsonl".into(),
            });
        }
        let manifest_path = shard.join("manifest.json");
        let m: Manifest =
            serde_json::from_str(&read(&manifest_path)?).map_err(|e| ReportError::Malformed {
                path: manifest_path.clone(),
                line: e.line(),
                detail: e.to_string(),
            })?;
        // A trial in two shards means the partitions overlapped (or a shard ran twice).
        let mut trials = BTreeSet::new();
        for (i, line) in read(&results)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| ReportError::Malformed {
                    path: results.clone(),
                    line: i + 1,
                    detail: e.to_string(),
                })?;
            if let Some(t) = v.get("trial").and_then(|t| t.as_str()) {
                trials.insert(t.to_string());
            }
        }
        for t in &trials {
            if let Some(other) = seen.insert(t.clone(), shard.clone()) {
                return Err(merge_error(
                    format!("trial `{t}` is in {} and in {}", other.display(), shard.display()),
                    "give every trial to one shard (nextest --partition count:K/N over the same N), or pass each shard once",
                ));
            }
        }
        trials_per_shard.push((shard.clone(), trials.len()));
        let mut names: Vec<String> = std::fs::read_dir(shard)
            .map_err(|source| ReportError::Read {
                path: shard.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        names.sort();
        for name in names {
            let mut text = read(&shard.join(&name))?;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            files.entry(name).or_default().push_str(&text);
        }
        manifests.push((shard.clone(), m));
    }
    let run_ids: BTreeSet<&str> = manifests.iter().map(|(_, m)| m.run_id.as_str()).collect();
    if run_ids.len() > 1 {
        return Err(merge_error(
            format!(
                "the shards belong to different runs ({})",
                run_ids.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "run every shard with the same INFERGATE_RUN_ID (CI: the workflow run id)",
        ));
    }
    manifests.sort_by(|a, b| a.1.started_utc.cmp(&b.1.started_utc));
    let first = &manifests[0].1;
    let other_machines = manifests[1..]
        .iter()
        .filter(|(_, m)| {
            m.machine.cpu_model != first.machine.cpu_model
                || m.machine.available_cores != first.machine.available_cores
        })
        .map(|(p, m)| {
            format!(
                "{}: {}, {} cores",
                p.display(),
                m.machine.cpu_model,
                m.machine.available_cores
            )
        })
        .collect();
    std::fs::create_dir_all(into).map_err(|source| ReportError::Write {
        path: into.to_path_buf(),
        source,
    })?;
    let manifest =
        serde_json::to_vec_pretty(first).map_err(|e| merge_error(e.to_string(), "report a bug"))?;
    super::write_atomic(&into.join("manifest.json"), &manifest)?;
    for (name, text) in &files {
        super::write_atomic(&into.join(name), text.as_bytes())?;
    }
    Ok(Merged {
        dir: into.to_path_buf(),
        run_id: first.run_id.clone(),
        trials_per_shard,
        other_machines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(run_id: &str, started: &str) -> String {
        serde_json::json!({
            "run_id": run_id, "started_utc": started, "profile": "ci",
            "machine": {"cpu_model": "cpu", "available_cores": 2, "os": "linux", "kernel": "6", "hostname": "h"},
            "runtimes": {}, "crate_versions": {}, "git_commit": null, "git_dirty": null,
            "gate_files": [], "models": {}
        })
        .to_string()
    }

    fn shard(root: &Path, name: &str, run_id: &str, started: &str, trials: &[&str]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), manifest(run_id, started)).unwrap();
        let lines: String = trials
            .iter()
            .map(|t| {
                format!(
                    "{}\n",
                    serde_json::json!({"trial": t, "gate": "g", "backend": "b", "scenario": null,
                        "verdict": "pass", "summary": "ok", "metrics": {}, "runs": {}})
                )
            })
            .collect();
        std::fs::write(dir.join("results.jsonl"), lines).unwrap();
        std::fs::write(
            dir.join("bandwidth.jsonl"),
            format!("{{\"shard\":\"{name}\"}}\n"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn shards_of_one_run_concatenate_and_the_earliest_manifest_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let a = shard(
            tmp.path(),
            "a",
            "r1",
            "2026-01-02T00:00:00Z",
            &["g::x", "g::y"],
        );
        let b = shard(tmp.path(), "b", "r1", "2026-01-01T00:00:00Z", &["g::z"]);
        let out = tmp.path().join("merged");
        let m = merge(&[a.clone(), b.clone()], &out).unwrap();
        assert_eq!(m.run_id, "r1");
        assert_eq!(m.trials_per_shard, vec![(a, 2), (b, 1)]);
        let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
        assert_eq!(results.lines().count(), 3);
        let bw = std::fs::read_to_string(out.join("bandwidth.jsonl")).unwrap();
        assert_eq!(bw.lines().count(), 2);
        let man: Manifest =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(man.started_utc, "2026-01-01T00:00:00Z");
        // Merging again replaces, never appends.
        merge(&[tmp.path().join("a"), tmp.path().join("b")], &out).unwrap();
        let again = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
        assert_eq!(again, results);
    }

    #[test]
    fn different_runs_overlapping_trials_and_merging_into_a_shard_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = shard(tmp.path(), "a", "r1", "t1", &["g::x"]);
        let b = shard(tmp.path(), "b", "r2", "t2", &["g::y"]);
        let c = shard(tmp.path(), "c", "r1", "t3", &["g::x"]);
        let out = tmp.path().join("m");
        let e = merge(&[a.clone(), b], &out).unwrap_err().to_string();
        assert!(
            e.contains("different runs") && e.contains("INFERGATE_RUN_ID"),
            "{e}"
        );
        let e = merge(&[a.clone(), c], &out).unwrap_err().to_string();
        assert!(e.contains("g::x") && e.contains("partition"), "{e}");
        let e = merge(std::slice::from_ref(&a), &a).unwrap_err().to_string();
        assert!(e.contains("both a shard and the output"), "{e}");
    }
}
