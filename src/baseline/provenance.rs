//! Each record's provenance: when, from which code, which run and on which runtime and GPU drivers
//! it was measured — what a later run names when it compares across a change.

use serde::{Deserialize, Serialize};

use crate::pins::RuntimePin;

/// When, from which code and which run a record was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub recorded_utc: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub run_id: String,
    pub profile: String,
    /// The runtime the record's backend ran on (with its fetchable artifact when infergate
    /// fetched it): what a later run on another runtime compares against, and re-runs in paired
    /// mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimePin>,
    /// GPU drivers visible at the recording (empty without a GPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_drivers: Vec<String>,
}

/// Something under test that differs between a record's provenance and this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvenanceChange {
    /// The backend's runtime: another version or build.
    Runtime {
        from: Box<RuntimePin>,
        to: Box<RuntimePin>,
    },
    /// The GPU driver.
    GpuDriver { from: Vec<String>, to: Vec<String> },
}

impl std::fmt::Display for ProvenanceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProvenanceChange::Runtime { from, to } if from.runtime == to.runtime => {
                let name = from.runtime.name();
                let strip = |p: &RuntimePin| {
                    let s = p.short();
                    s.strip_prefix(name)
                        .map_or(s.clone(), |r| r.trim().to_string())
                };
                write!(f, "{name} {} → {}", strip(from), strip(to))
            }
            ProvenanceChange::Runtime { from, to } => {
                write!(f, "{} → {}", from.short(), to.short())
            }
            ProvenanceChange::GpuDriver { from, to } => write!(
                f,
                "GPU driver {} → {}",
                if from.is_empty() {
                    "none".into()
                } else {
                    from.join(", ")
                },
                if to.is_empty() {
                    "none".into()
                } else {
                    to.join(", ")
                }
            ),
        }
    }
}

impl Provenance {
    /// What differs between this recording and a run on `runtime` with `gpu_drivers`. A record
    /// without a stored runtime (none was known) names no runtime change.
    pub fn changes(
        &self,
        runtime: Option<&RuntimePin>,
        gpu_drivers: &[String],
    ) -> Vec<ProvenanceChange> {
        let mut out = Vec::new();
        if let (Some(from), Some(to)) = (&self.runtime, runtime) {
            if !from.same_build(to) {
                out.push(ProvenanceChange::Runtime {
                    from: Box::new(from.clone()),
                    to: Box::new(to.clone()),
                });
            }
        }
        if self.gpu_drivers != gpu_drivers {
            out.push(ProvenanceChange::GpuDriver {
                from: self.gpu_drivers.clone(),
                to: gpu_drivers.to_vec(),
            });
        }
        out
    }
}
