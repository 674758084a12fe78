//! Trial ids: a typed value (gate, unit, scenario) rendered to the libtest name
//! `<gate>::<unit>[::<scenario>]` and never parsed back. Records carry the typed value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a trial runs on: one backend, all of a gate's backends at once, or one of a check's own
/// cases (which names the backend it opens).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "unit", rename_all = "snake_case")]
pub enum Unit {
    Backend {
        backend: String,
    },
    /// A trial comparing several backends (rendered `a+b+…`).
    Backends {
        backends: Vec<String>,
    },
    /// A check's named case (e.g. a label of `attribution.compile_real`) on `backend`.
    Case {
        case: String,
        backend: String,
    },
}

impl Unit {
    pub fn backend(id: &str) -> Unit {
        Unit::Backend { backend: id.into() }
    }

    /// One unit over all of `backends` (a cross-backend trial).
    pub fn all(backends: &[String]) -> Unit {
        Unit::Backends {
            backends: backends.to_vec(),
        }
    }

    /// The backend ids this unit opens.
    pub fn backends(&self) -> Vec<&str> {
        match self {
            Unit::Backend { backend } | Unit::Case { backend, .. } => vec![backend.as_str()],
            Unit::Backends { backends } => backends.iter().map(String::as_str).collect(),
        }
    }

    /// The one backend of a single-backend unit (`None` for a cross-backend trial).
    pub fn single_backend(&self) -> Option<&str> {
        match self {
            Unit::Backend { backend } | Unit::Case { backend, .. } => Some(backend),
            Unit::Backends { .. } => None,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Backend { backend } => f.write_str(backend),
            Unit::Backends { backends } => f.write_str(&backends.join("+")),
            Unit::Case { case, .. } => f.write_str(case),
        }
    }
}

/// One gate × unit × scenario.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrialId {
    pub gate: String,
    #[serde(flatten)]
    pub unit: Unit,
    /// `None` for a trial that runs no scenario or aggregates all of its gate's scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
}

impl TrialId {
    pub fn new(gate: &str, unit: Unit, scenario: Option<&str>) -> TrialId {
        TrialId {
            gate: gate.into(),
            unit,
            scenario: scenario.map(String::from),
        }
    }

    /// A file name for this trial's artifacts (`::` and other separators become `__`).
    pub fn file_stem(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// The libtest name: `<gate>::<unit>[::<scenario>]`.
impl fmt::Display for TrialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.gate, self.unit)?;
        if let Some(s) = &self.scenario {
            write!(f, "::{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_libtest_name_and_round_trips_as_a_record() {
        let ids = [
            TrialId::new(
                "phase.decode_fraction",
                Unit::backend("ort-cpu"),
                Some("short"),
            ),
            TrialId::new(
                "stats.distribution",
                Unit::Backends {
                    backends: vec!["ort-cpu".into(), "llama-cpp".into()],
                },
                None,
            ),
            TrialId::new(
                "attribution.compile_real",
                Unit::Case {
                    case: "ort-cpu-opt-all".into(),
                    backend: "ort-cpu".into(),
                },
                None,
            ),
        ];
        let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "phase.decode_fraction::ort-cpu::short",
                "stats.distribution::ort-cpu+llama-cpp",
                "attribution.compile_real::ort-cpu-opt-all"
            ]
        );
        for id in &ids {
            let line = serde_json::to_string(id).unwrap();
            assert_eq!(
                &serde_json::from_str::<TrialId>(&line).unwrap(),
                id,
                "{line}"
            );
        }
        assert_eq!(ids[0].file_stem(), "phase.decode_fraction__ort-cpu__short");
    }
}
