//! Known failures: a gate file may declare that a part of its claim is known not to hold on a
//! backend (× scenario), with the figure measured, when, where and why. Such a trial is XFAIL —
//! never a PASS under a lowered threshold — and XPASS once the part holds again (then the
//! declaration must go). An optional `guard` keeps the build failing if the measured level itself
//! regresses past it.
//!
//! ```toml
//! [[known_failure]]
//! backends = ["llama-cpp", "ollama"]   # the same engine gets the same treatment
//! scenarios = ["long"]                 # omit for every scenario
//! models = ["smollm2-135m-instruct"]   # omit for the gate file's own `model`
//! part = "decode_fraction"             # a part the gate kind lists
//! measured = 0.86                      # what was measured (the claim's own quantity)
//! guard = 0.8                          # still FAIL past this, with the claim's comparison
//! date = 2026-11-27
//! machine = "AMD EPYC, 2 cores"
//! reason = "prefill costs ~2 ms per prompt token on 2 CPU cores"
//! ```

use serde::{Deserialize, Serialize};

use crate::id::{TrialId, Unit};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailure {
    /// Backend ids the declaration covers (a case trial matches by the backend it opens).
    pub backends: Vec<String>,
    /// Scenario names; empty = every scenario (and trials without one).
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// Models it was measured on; omitted = the gate file's `model` (filled in when the file is
    /// parsed), so a declaration never excuses a model it was not measured on (`run --model`).
    #[serde(default)]
    pub models: Vec<String>,
    /// The claim part that does not hold.
    pub part: String,
    /// The value measured when the failure was declared.
    pub measured: f64,
    /// A value past which the trial FAILs even though the failure is declared (same comparison
    /// as the part's threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<f64>,
    pub date: chrono::NaiveDate,
    /// The machine it was measured on.
    pub machine: String,
    pub reason: String,
}

impl KnownFailure {
    /// Whether the declaration covers this trial of `model`.
    pub fn applies_to(&self, trial: &TrialId, model: &str) -> bool {
        if !self.models.iter().any(|m| m == model) {
            return false;
        }
        let backend = match &trial.unit {
            Unit::Backend { backend } | Unit::Case { backend, .. } => backend,
            Unit::Backends { .. } => return false,
        };
        self.backends.iter().any(|b| b == backend)
            && (self.scenarios.is_empty()
                || trial
                    .scenario
                    .as_ref()
                    .is_some_and(|s| self.scenarios.contains(s)))
    }

    /// `declared 2026-11-27: measured 0.86 on <machine>; <reason>`.
    pub fn describe(&self) -> String {
        format!(
            "declared {}: measured {} on {}; {}",
            self.date,
            super::finding::number(self.measured),
            self.machine,
            self.reason
        )
    }

    /// Checks the gate-file loader runs; `parts` are the kind's part names, `backends` and
    /// `scenarios` the gate's.
    pub fn validate(
        &self,
        parts: &[&str],
        backends: &[String],
        scenarios: &[String],
    ) -> Result<(), String> {
        if !parts.contains(&self.part.as_str()) {
            return Err(format!(
                "known_failure names part `{}`; this check's parts are {}",
                self.part,
                parts.join(", ")
            ));
        }
        if self.backends.is_empty() {
            return Err("known_failure has no `backends`".into());
        }
        if let Some(b) = self.backends.iter().find(|b| !backends.contains(b)) {
            return Err(format!(
                "known_failure names backend `{b}`, which is not in this gate's backends"
            ));
        }
        if let Some(s) = self.scenarios.iter().find(|s| !scenarios.contains(s)) {
            return Err(format!(
                "known_failure names scenario `{s}`, which is not in this gate's scenarios"
            ));
        }
        if !self.measured.is_finite() || self.guard.is_some_and(|g| !g.is_finite()) {
            return Err("known_failure's `measured` and `guard` must be numbers".into());
        }
        if self.reason.trim().is_empty() || self.machine.trim().is_empty() {
            return Err(
                "known_failure needs a `reason` and the `machine` it was measured on".into(),
            );
        }
        Ok(())
    }
}
