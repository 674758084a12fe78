//! The run manifest: what machine, which runtimes, which code, which gate files. Everything a reader
//! needs to tell whether two runs are comparable.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::host::{Gpu, Machine};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateFileRef {
    pub id: String,
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub started_utc: String,
    pub profile: String,
    pub machine: Machine,
    /// Runtime name → version as the runtime reports it (e.g. `onnxruntime` → `1.31.1`).
    pub runtimes: BTreeMap<String, String>,
    /// Resolved versions of infergate's direct dependencies (cargo_metadata at build time).
    pub crate_versions: BTreeMap<String, String>,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub gate_files: Vec<GateFileRef>,
    /// Model name → sha256 of its weights file.
    pub models: BTreeMap<String, String>,
    /// NVIDIA GPUs with their driver (nvidia-smi); empty without one.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// The `baselines/` directory this machine's runs compare with (regression gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_fingerprint: Option<String>,
    /// `INFERGATE_TEST_SLOWDOWN` when set: this run's ONNX Runtime timings were deliberately slowed
    /// (test-only, see `backend::tweaks`); never a clean run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_slowdown: Option<f64>,
}

pub fn crate_versions() -> BTreeMap<String, String> {
    serde_json::from_str(include_str!(concat!(
        env!("OUT_DIR"),
        "/crate_versions.json"
    )))
    .unwrap_or_default()
}

/// `(commit, dirty)` of the git checkout at `dir`, if it is one and git is installed.
pub fn git_state(dir: &Path) -> (Option<String>, Option<bool>) {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let commit =
        run(&["rev-parse", "HEAD"]).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).map(|o| !o.stdout.is_empty());
    (commit, dirty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_versions_include_the_engines_bindings() {
        let v = crate_versions();
        assert_eq!(v.get("ort").map(String::as_str), Some("2.0.0-rc.15"));
        assert!(v.contains_key("infergate"));
    }
}
