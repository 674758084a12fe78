//! `[check]` and `[check.paired]` of a `kind = "regression"` gate file, and their checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::metric::Metric;
use crate::baseline::rule;

fn default_tolerance() -> f64 {
    rule::DEFAULT_TOLERANCE
}
fn default_confidence() -> f64 {
    rule::DEFAULT_CONFIDENCE
}
fn default_resamples() -> usize {
    rule::DEFAULT_RESAMPLES
}

/// `[check]` of a `kind = "regression"` gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionParams {
    /// Tokens generated per run (EOS ignored).
    pub gen_tokens: usize,
    /// Metrics compared with the baseline.
    pub metrics: Vec<Metric>,
    /// Band half-width as a fraction (0.10 = 10 %), for metrics without an override.
    #[serde(default = "default_tolerance")]
    pub default_tolerance: f64,
    /// Per-metric overrides of `default_tolerance`.
    #[serde(default)]
    pub tolerance: BTreeMap<Metric, f64>,
    /// Per-backend overrides of `default_tolerance` (a per-metric override still wins), for an
    /// engine whose between-session spread on this machine kind is wider than the default band;
    /// the gate file states the measurement behind each.
    #[serde(default)]
    pub backend_tolerance: BTreeMap<String, f64>,
    /// Confidence level of the slowdown CI.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Bootstrap resamples per CI.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// How far the machine's own speed (the probe timed between runs, [`crate::roofline::probe`])
    /// may differ from its speed when the baseline was recorded for every conclusion to stand
    /// (fraction; 0.10 = 10 %). Beyond it only the conclusions the difference cannot explain are
    /// drawn: on a slower machine a pass, on a faster one a regression; the rest is a SKIP.
    #[serde(default = "default_machine_tolerance")]
    pub machine_tolerance: f64,
    /// Paired mode (`[check.paired]`): both runtimes measured in this job.
    #[serde(default)]
    pub paired: PairedParams,
}

/// `[check.paired]`: rounds and rule of paired mode ([`crate::paired`]). Defaults measured on the
/// 2-core CI machine kind (docs/regression.md, calibration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairedParams {
    /// Generations per side before the rounds, discarded.
    pub warmup: usize,
    /// Rounds before the first look.
    pub rounds: usize,
    /// Rounds added after an unknown answer.
    pub extra_rounds: usize,
    /// Cap on rounds (then unknown is a SKIP, inconclusive).
    pub max_rounds: usize,
    /// Family-wise false-alarm rate of one trial (all metrics, all looks).
    pub alpha: f64,
    /// A slowdown up to this fraction is not a regression.
    pub min_effect: f64,
    /// "Same" excludes a slowdown of this fraction or more.
    pub same_within: f64,
}

impl Default for PairedParams {
    fn default() -> Self {
        PairedParams {
            warmup: 2,
            rounds: 20,
            extra_rounds: 20,
            max_rounds: 60,
            alpha: 0.05,
            min_effect: 0.01,
            same_within: 0.03,
        }
    }
}

impl PairedParams {
    /// The paired settings with `seed` (intervals reported at 95 %).
    pub fn settings(&self, seed: u64) -> crate::paired::Settings {
        crate::paired::Settings {
            warmup: self.warmup,
            rounds: self.rounds,
            extra_rounds: self.extra_rounds,
            max_rounds: self.max_rounds,
            level: 0.95,
            alpha: self.alpha,
            min_effect: self.min_effect,
            same_within: self.same_within,
            seed,
        }
    }
}

fn default_machine_tolerance() -> f64 {
    0.10
}

impl RegressionParams {
    pub fn tolerance_of(&self, m: Metric, backend: &str) -> f64 {
        self.tolerance
            .get(&m)
            .or_else(|| self.backend_tolerance.get(backend))
            .copied()
            .unwrap_or(self.default_tolerance)
    }

    /// Parameter checks the gate-file loader runs (the message goes after the file name).
    pub fn validate(&self) -> Result<(), String> {
        if self.gen_tokens < 2 {
            return Err(format!(
                "gen_tokens = {} leaves no decode step; use at least 2",
                self.gen_tokens
            ));
        }
        if self.metrics.is_empty() {
            return Err("`metrics` is empty; name at least one of e2e_ms, decode_ms, prefill_ms, decode_tokens_per_s, e2e_tokens_per_s".into());
        }
        let tolerances = [
            ("default_tolerance".to_string(), self.default_tolerance),
            ("machine_tolerance".to_string(), self.machine_tolerance),
        ]
        .into_iter()
        .chain(
            self.tolerance
                .iter()
                .map(|(m, t)| (format!("tolerance.{}", m.name()), *t)),
        )
        .chain(
            self.backend_tolerance
                .iter()
                .map(|(b, t)| (format!("backend_tolerance.{b}"), *t)),
        );
        for (name, t) in tolerances {
            if !(t > 0.0 && t < 10.0) {
                return Err(format!(
                    "{name} = {t} is not a fraction in (0, 10) (0.10 = 10 %)"
                ));
            }
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err(format!(
                "confidence = {} is not in (0.5, 1)",
                self.confidence
            ));
        }
        self.paired
            .settings(0)
            .validate()
            .map_err(|e| format!("[check.paired]: {e}"))?;
        crate::stats::bootstrap::check_resamples(self.confidence, self.resamples)
            .map_err(|e| e.to_string())
    }
}
