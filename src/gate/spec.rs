//! Gate files: one TOML file per gate in `gates/`, parsed strictly (unknown keys are errors, so a
//! misspelt threshold cannot silently fall back to a default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::GateFileError;
use crate::model::catalog;
use crate::workload;

/// Repetition counts for one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    pub warmup: usize,
    pub repetitions: usize,
    /// Tokens scored by perplexity checks in this profile (default: the check's `max_tokens`), so
    /// the CI profile can score a shorter span than the main job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_tokens: Option<usize>,
}

/// The check a gate performs, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// TR121: median `kv_decode_ms / e2e_ms` above a threshold at a fixed generation length.
    DecodeFraction {
        gen_tokens: usize,
        min_median_decode_fraction: f64,
        /// Per-backend overrides of `min_median_decode_fraction`, each justified in the gate file by
        /// a measurement; a pass below the claim's own threshold says so in its summary.
        #[serde(default)]
        min_median_decode_fraction_for: std::collections::BTreeMap<String, f64>,
        /// Also require KV-cached tokens = full-recompute tokens where the backend can recompute.
        #[serde(default = "yes")]
        check_kv_equals_recompute: bool,
    },
    /// The model measured is the model claimed: parameter counts and a perplexity sanity bound.
    ModelIdentity {
        /// Tokens of the wiki text scored for the sanity perplexity.
        sanity_tokens: usize,
        context: usize,
        /// Perplexity above `vocab_size * untrained_fraction` → untrained fixture.
        untrained_fraction: f64,
    },
    /// Failures are visible, never placeholders.
    DegradedRuns { gen_tokens: usize },
    /// Accuracy against a reference backend on the same weights and text.
    PerplexityDelta(super::perplexity_delta::PerplexityDeltaParams),
    /// Energy attributed to prefill/decode events only where the sensor can see them.
    EnergyGating(super::energy_gating::EnergyGatingParams),
    /// Every backend label proven by runtime evidence; negative controls must be caught.
    CompileReal(super::compile_real::CompileRealParams),
    /// TR121 (C4/C5, §10.2 rule 1): log latency on log params (and + log layers) over a synthetic
    /// model family, scenario-aggregated; each slope actionable or not identifiable.
    ScalingFit(super::scaling_fit::ScalingFitParams),
    /// §10.2 rule 4: cold (first run after open) median / steady median; above the threshold flags
    /// "warm pool required".
    WarmupRatio(super::warmup_ratio::WarmupRatioParams),
    /// TR117 / §3.10 / §10.2 rule 5: median, p95, p99, mean, n per backend × scenario; a winner only
    /// from the scenario-aggregated geometric mean.
    Distribution(super::distribution::DistributionParams),
    /// TR119 / C3 / Appendix A: cost per 1M tokens per pricing tier (energy as a second term where
    /// measured); backend ordering invariant under the tier.
    EconomicsCost(super::economics::EconomicsParams),
    /// A stored baseline regresses: slowdown CI wholly beyond the tolerance band, confirmed by re-measurement.
    Regression(super::regression::RegressionParams),
}

impl Check {
    /// One trial compares all of the gate's backends (named `<gate>::<b1>+<b2>+…`) instead of one
    /// trial per backend.
    pub fn spans_backends(&self) -> bool {
        matches!(self, Check::Distribution(_) | Check::EconomicsCost(_))
    }

    /// The gate's `scenarios` are aggregated inside one trial instead of one trial per scenario.
    pub fn aggregates_scenarios(&self) -> bool {
        matches!(
            self,
            Check::ScalingFit(_) | Check::Distribution(_) | Check::EconomicsCost(_)
        )
    }
}

fn yes() -> bool {
    true
}

/// One parsed gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub id: String,
    /// The claim, in words.
    pub claim: String,
    /// Where the claim comes from (report sections).
    pub source: String,
    /// Catalog model name.
    pub model: String,
    pub backends: Vec<String>,
    /// Scenario names; empty = one trial per backend.
    #[serde(default)]
    pub scenarios: Vec<String>,
    pub profiles: BTreeMap<String, ProfileSettings>,
    pub check: Check,
    #[serde(skip)]
    pub path: PathBuf,
    /// sha256 of the file's bytes (goes into the manifest).
    #[serde(skip)]
    pub file_sha256: String,
}

impl GateSpec {
    pub fn parse(path: &Path, text: &str) -> Result<GateSpec, GateFileError> {
        let mut spec: GateSpec = toml::from_str(text).map_err(|e| GateFileError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        spec.path = path.to_path_buf();
        spec.file_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<GateSpec, GateFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| GateFileError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(path, &text)
    }

    fn validate(&self) -> Result<(), GateFileError> {
        let invalid = |detail: String| {
            Err(GateFileError::Invalid {
                path: self.path.clone(),
                detail,
            })
        };
        if let Err(e) = catalog::find(&self.model) {
            return invalid(e.to_string());
        }
        if self.backends.is_empty() {
            return invalid("`backends` is empty".into());
        }
        for b in self.units().iter().flat_map(|(_, b)| b.split('+')) {
            if !crate::backend::registry::is_known(&b) {
                return invalid(format!(
                    "backend `{b}` is unknown (known: {})",
                    crate::backend::registry::known_ids().join(", ")
                ));
            }
        }
        for s in &self.scenarios {
            if workload::scenario(s).is_none() {
                return invalid(format!(
                    "scenario `{s}` is unknown (known: {})",
                    workload::scenario_names().join(", ")
                ));
            }
        }
        if let Check::Regression(p) = &self.check {
            p.validate().or_else(invalid)?;
        }
        for p in ["ci", "full"] {
            match self.profiles.get(p) {
                None => {
                    return invalid(format!(
                        "profile `{p}` is missing: add [profiles.{p}] with warmup and repetitions"
                    ))
                }
                Some(s) if s.repetitions == 0 => {
                    return invalid(format!("profile `{p}` has zero repetitions"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The trials' `(name, backend id)` pairs before scenarios: the backends, or a check's own cases.
    pub fn units(&self) -> Vec<(String, String)> {
        match &self.check {
            Check::CompileReal(p) => p
                .cases
                .iter()
                .map(|c| (c.name.clone(), c.backend.clone()))
                .collect(),
            _ if self.check.spans_backends() => {
                vec![(self.backends.join("+"), self.backends.join("+"))]
            }
            _ => self
                .backends
                .iter()
                .map(|b| (b.clone(), b.clone()))
                .collect(),
        }
    }

    /// Settings for a profile; the validator guarantees `ci` and `full` exist.
    pub fn profile(&self, name: &str) -> Option<ProfileSettings> {
        self.profiles.get(name).copied()
    }
}

/// Load every `*.toml` in `dir`, sorted by file name. The first bad file is an error naming it.
pub fn load_dir(dir: &Path) -> Result<Vec<GateSpec>, GateFileError> {
    let entries = std::fs::read_dir(dir).map_err(|e| GateFileError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let specs = paths
        .iter()
        .map(|p| GateSpec::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for s in &specs {
        if !seen.insert(&s.id) {
            return Err(GateFileError::Invalid {
                path: s.path.clone(),
                detail: format!("gate id `{}` is used by another file", s.id),
            });
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "phase.decode_fraction"
claim = "decode dominates"
source = "TR121"
model = "smollm2-135m-instruct"
backends = ["ort-cpu"]
scenarios = ["short"]
[profiles.ci]
warmup = 1
repetitions = 3
[profiles.full]
warmup = 2
repetitions = 10
[check]
kind = "decode_fraction"
gen_tokens = 64
min_median_decode_fraction = 0.9
"#;

    #[test]
    fn parses_a_gate_file() {
        let s = GateSpec::parse(Path::new("g.toml"), GOOD).unwrap();
        assert_eq!(s.profile("ci").unwrap().repetitions, 3);
        assert!(matches!(
            s.check,
            Check::DecodeFraction {
                gen_tokens: 64,
                check_kv_equals_recompute: true,
                ..
            }
        ));
    }

    #[test]
    fn a_misspelt_key_is_an_error_naming_the_file() {
        let bad = GOOD.replace("min_median_decode_fraction", "min_median_decode_fractoin");
        let e = GateSpec::parse(Path::new("gates/x.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gates/x.toml") && e.contains("min_median_decode_fractoin"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_model_is_an_error_naming_the_file_and_the_model() {
        let bad = GOOD.replace("smollm2-135m-instruct", "gpt2");
        let e = GateSpec::parse(Path::new("gates/x.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gates/x.toml") && e.contains("`gpt2`"), "{e}");
    }
}
