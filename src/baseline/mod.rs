//! Stored baselines and the regression rule: the build fails when a stored baseline regresses —
//! and only when the regression beyond tolerance is statistically clear on a noisy machine.
//!
//! - [`fingerprint`]: what machine and model a baseline belongs to; its directory name. Runtimes
//!   and GPU drivers are each record's provenance, so a bump is compared and named, not skipped.
//! - [`migrate`]: `infergate baseline migrate` (schema 1 → 2).
//! - [`store`]: `baselines/<fingerprint>/{fingerprint.json, <gate-id>.json}` — records with their
//!   samples, validated loading (corrupt / foreign / newer-schema files are typed errors naming the
//!   file), atomic writes that report old → new medians.
//! - [`provenance`]: when, from which code and on which runtime a record was measured.
//! - [`rule`]: CI of the slowdown factor vs the tolerance band, confirmation by re-measurement.
//! - the machine-speed probe ([`crate::roofline::probe`]) timed around each run, to normalize away the machine's load.
//! - [`cpu`]: CPU time of this process and its children (the load-robust `e2e_cpu_ms` metric).
//! - [`session`]: one trial's baselines on this machine — what to compare with, and recording.
//! - the test-only `INFERGATE_TEST_SLOWDOWN` knob used to prove detection: [`crate::backend::tweaks`].
//!
//! Environment ([`Settings`]): `INFERGATE_UPDATE_BASELINES=1` (regression trials record instead of
//! compare), `INFERGATE_REQUIRE_BASELINE=1` (no baseline is a failure, for release sign-off),
//! `CI` (nothing is written unless `INFERGATE_FORCE_BASELINE_WRITE=1`), `INFERGATE_BASELINES_DIR`
//! (default: the `baselines/` directory beside the gate file's directory), `INFERGATE_TEST_SLOWDOWN`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub mod cpu;
pub mod fingerprint;
pub mod metric;
pub mod migrate;
pub mod provenance;
pub mod rule;
pub mod session;
pub mod store;

pub use fingerprint::Fingerprint;
pub use provenance::{Provenance, ProvenanceChange};
pub use rule::{
    compare, Comparison, Outcome, DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_TOLERANCE,
};
pub use store::{
    BaselineRecord, BaselineStore, Change, Direction, GateBaselines, Workload, WritePolicy,
    WriteReport, SCHEMA_VERSION,
};

/// How regression trials behave in this process.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Record the measured series as the new baseline instead of comparing.
    pub update: bool,
    /// A missing baseline fails the trial instead of skipping it.
    pub require: bool,
    /// Running in CI (`CI` set to anything but empty, `0`, `false`, `no`).
    pub ci: bool,
    /// Write even in CI.
    pub force_write: bool,
    /// `INFERGATE_TEST_SLOWDOWN`'s fraction, parsed (an invalid value is an error with the fix).
    pub test_slowdown: Result<Option<f64>, String>,
    /// Every test-only backend option (`INFERGATE_TEST_SLOWDOWN`, `INFERGATE_TEST_THREADS`).
    pub tweaks: Result<crate::backend::tweaks::Tweaks, String>,
    /// `INFERGATE_BASELINES_DIR`.
    pub baselines_dir: Option<PathBuf>,
}

/// What `infergate baseline update` sets for the process, on top of the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    pub update: bool,
    pub force_write: bool,
}

static OVERRIDES: Mutex<Option<Overrides>> = Mutex::new(None);

/// Set (or with `None` clear) process-wide overrides of the environment.
pub fn set_overrides(o: Option<Overrides>) {
    *OVERRIDES.lock().unwrap_or_else(|e| e.into_inner()) = o;
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

impl Settings {
    /// From variables looked up by `get` (the environment in [`Settings::current`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let ci = get("CI").is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no"
            )
        });
        let tweaks = crate::backend::tweaks::Tweaks::from_lookup(&get);
        let test_slowdown = tweaks.clone().map(|t| t.planted.map(|p| p.fraction));
        Settings {
            update: truthy(get("INFERGATE_UPDATE_BASELINES")),
            require: truthy(get("INFERGATE_REQUIRE_BASELINE")),
            ci,
            force_write: truthy(get("INFERGATE_FORCE_BASELINE_WRITE")),
            test_slowdown,
            tweaks,
            baselines_dir: get("INFERGATE_BASELINES_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The environment, with [`set_overrides`] applied.
    pub fn current() -> Self {
        let mut s = Settings::from_lookup(|k| std::env::var(k).ok());
        if let Some(o) = *OVERRIDES.lock().unwrap_or_else(|e| e.into_inner()) {
            s.update |= o.update;
            s.force_write |= o.force_write;
        }
        s
    }

    pub fn write_policy(&self) -> WritePolicy {
        WritePolicy {
            ci: self.ci,
            force: self.force_write,
            tweaks: self.tweaks.clone().unwrap_or_default(),
        }
    }

    /// `INFERGATE_BASELINES_DIR`, else `baselines/` beside the directory holding `gate_file`
    /// (`<repo>/gates/x.toml` → `<repo>/baselines`).
    pub fn store_for(&self, gate_file: &Path) -> BaselineStore {
        match &self.baselines_dir {
            Some(d) => BaselineStore::new(d),
            None => {
                let gates_dir = gate_file.parent().unwrap_or(Path::new("."));
                let repo = gates_dir.parent().unwrap_or(Path::new("."));
                BaselineStore::new(repo.join("baselines"))
            }
        }
    }
}

/// The command that records a baseline for one gate and backend.
pub fn record_command(gate: &str, backend: &str) -> String {
    format!("`infergate baseline update --gate {gate} --backend {backend}` (or `INFERGATE_UPDATE_BASELINES=1 cargo test --test gates -- {gate}::{backend}`)")
}

#[cfg(test)]
mod tests;
