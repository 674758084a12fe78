//! Gate files: one TOML file per gate in `gates/`, parsed strictly (unknown keys are errors, so a
//! misspelt threshold cannot silently fall back to a default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Check, KnownFailure, Unit};
use crate::error::GateFileError;
use crate::model::catalog;
use crate::model::declared::toml_files;
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
    /// Fraction of a trial's recorded runs that may be degraded or errored before the trial
    /// fails (default 0: a run that lost samples makes the trial invalid, MLPerf's rule). Set
    /// only where failed runs are the subject (the degraded-runs gate's absent backends).
    #[serde(default)]
    pub tolerated_failed_run_fraction: f64,
    /// Parts of the claim known not to hold on a backend (× scenario): XFAIL, never PASS.
    #[serde(
        default,
        rename = "known_failure",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub known_failures: Vec<KnownFailure>,
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
        for k in &mut spec.known_failures {
            if k.models.is_empty() {
                k.models.push(spec.model.clone());
            }
        }
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
        let units = self.units();
        for b in units.iter().flat_map(Unit::backends) {
            if !crate::backend::registry::is_known(b) {
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
        let kind = self.check.kind();
        kind.validate(self).or_else(invalid)?;
        if !(0.0..=1.0).contains(&self.tolerated_failed_run_fraction) {
            return invalid(format!(
                "tolerated_failed_run_fraction = {} is not a fraction in [0, 1]",
                self.tolerated_failed_run_fraction
            ));
        }
        for k in &self.known_failures {
            if matches!(units.first(), Some(Unit::Backends { .. })) {
                return invalid(
                    "known failures are declared per backend; this check compares backends in one trial".into(),
                );
            }
            k.validate(kind.parts(), &self.backends, &self.scenarios)
                .or_else(invalid)?;
            if let Some(Err(e)) = k
                .models
                .iter()
                .map(|m| catalog::find(m))
                .find(Result::is_err)
            {
                return invalid(format!("known_failure: {e}"));
            }
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

    /// The trials' units before scenarios: the backends, all of them at once, or the check's cases.
    pub fn units(&self) -> Vec<Unit> {
        self.check.kind().units(&self.backends)
    }

    /// Settings for a profile; the validator guarantees `ci` and `full` exist.
    pub fn profile(&self, name: &str) -> Option<ProfileSettings> {
        self.profiles.get(name).copied()
    }
}

/// Load every `*.toml` in `dir`, sorted by file name. The first bad file is an error naming it.
pub fn load_dir(dir: &Path) -> Result<Vec<GateSpec>, GateFileError> {
    let paths = toml_files(dir).map_err(|e| GateFileError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
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
    use crate::gate::TrialId;

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
            &s.check,
            Check::DecodeFraction(p) if p.gen_tokens == 64 && p.check_kv_equals_recompute
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

    const KNOWN: &str = r#"
[[known_failure]]
backends = ["ort-cpu"]
scenarios = ["short"]
part = "decode_fraction"
measured = 0.86
guard = 0.8
date = "2026-11-27"
machine = "2 cores"
reason = "prefill-heavy"
"#;

    #[test]
    fn a_known_failure_is_parsed_and_checked_against_the_gate() {
        let s = GateSpec::parse(
            Path::new("g.toml"),
            &GOOD.replace("[profiles.ci]", &format!("{KNOWN}\n[profiles.ci]")),
        )
        .unwrap();
        assert_eq!(s.known_failures.len(), 1);
        assert_eq!(s.known_failures[0].date.to_string(), "2026-11-27");
        // Measured on the gate file's model: it excuses that model only (`run --model` another).
        let k = &s.known_failures[0];
        assert_eq!(k.models, vec![s.model.clone()]);
        let trial = TrialId {
            gate: s.id.clone(),
            unit: Unit::Backend {
                backend: "ort-cpu".into(),
            },
            scenario: Some("short".into()),
        };
        assert!(k.applies_to(&trial, &s.model));
        assert!(!k.applies_to(&trial, "smollm2-135m-instruct-q4_k_m"));
        for (bad, expect) in [
            (
                "part = \"decode_fraction\"",
                "models = [\"no-such-model\"]\npart = \"decode_fraction\"",
            ),
            ("part = \"decode_fraction\"", "part = \"decode_fractoin\""),
            (
                "backends = [\"ort-cpu\"]\nscenarios = [\"short\"]\npart",
                "backends = [\"llama-cpp\"]\nscenarios = [\"short\"]\npart",
            ),
            (
                "scenarios = [\"short\"]\npart",
                "scenarios = [\"long\"]\npart",
            ),
            ("reason = \"prefill-heavy\"", "reason = \"\""),
        ] {
            let text = GOOD.replace(
                "[profiles.ci]",
                &format!("{}\n[profiles.ci]", KNOWN.replace(bad, expect)),
            );
            let e = GateSpec::parse(Path::new("gates/x.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("gates/x.toml") && e.contains("known_failure"),
                "{e}"
            );
        }
    }
}
