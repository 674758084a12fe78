//! The machine a baseline belongs to: its hardware (CPU model, available cores, NVIDIA GPU models),
//! the hashes of the model weights and infergate's build profile. Two machines with equal
//! fingerprints are expected to measure the same numbers up to noise; anything else gets its own
//! directory.
//!
//! What is *under test* is deliberately not part of it: the runtime versions (ONNX Runtime,
//! llama.cpp build, libtorch) and the GPU driver are provenance stored with every record
//! ([`crate::baseline::Provenance`]). A runtime or driver bump then still finds the baseline, and
//! the regression verdict names the change instead of going silent.
//!
//! The directory name is human-readable plus a short hash of every component:
//! `<cpu-slug>-<cores>c[-<gpu-slug>]-<hash12>`, e.g. `amd-epyc-2c-3f9a0c1d2e4b`. The hostname is
//! deliberately not part of it: identical CI runners share baselines.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::{nvidia_gpus, Gpu};
use crate::model::catalog::CatalogModel;
use crate::pins::{Runtime, RuntimePin};

/// Everything a baseline's comparability depends on. Serialized (in this field order, maps sorted)
/// it is also the input of the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub available_cores: usize,
    /// GPU model names (no driver: that is provenance); empty when no NVIDIA GPU is visible.
    pub gpus: Vec<String>,
    /// Catalog model name → sha256 of its weights file.
    pub models: BTreeMap<String, String>,
    /// `dev` or `release` (infergate's own build: the harness and the machine-speed probe run at
    /// its optimization level, so `cargo test` and `cargo run --release` measure differently).
    pub build_profile: String,
}

/// The build profile of this binary: `release` without debug assertions, else `dev`.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

impl Fingerprint {
    /// The fingerprint of this machine for a gate on `models`.
    pub fn detect(models: &[CatalogModel]) -> Fingerprint {
        let hw = hardware();
        Fingerprint {
            cpu_model: hw.cpu_model.clone(),
            available_cores: hw.available_cores,
            gpus: hw.gpus.iter().map(|g| g.name.clone()).collect(),
            models: models
                .iter()
                .map(|m| (m.name.clone(), m.sha256.clone()))
                .collect(),
            build_profile: build_profile().to_string(),
        }
    }

    /// sha256 (hex) of the canonical JSON of every component.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    /// Directory name: `<cpu-slug>-<cores>c[-<gpu-slug>]-<first 12 hex digits of the hash>`.
    pub fn id(&self) -> String {
        let mut parts = vec![
            slug(&self.cpu_model, 32),
            format!("{}c", self.available_cores),
        ];
        if let Some(gpu) = self.gpus.first() {
            let count = if self.gpus.len() > 1 {
                format!("{}x", self.gpus.len())
            } else {
                String::new()
            };
            parts.push(format!("{count}{}", slug(gpu, 32)));
        }
        parts.push(self.hash()[..12].to_string());
        parts.retain(|p| !p.is_empty());
        parts.join("-")
    }

    /// One line per component that differs from `other` (`onnxruntime: 1.31.1 → 1.32.0`).
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.cpu_model != other.cpu_model {
            out.push(format!(
                "cpu_model: {} → {}",
                self.cpu_model, other.cpu_model
            ));
        }
        if self.available_cores != other.available_cores {
            out.push(format!(
                "available_cores: {} → {}",
                self.available_cores, other.available_cores
            ));
        }
        if self.build_profile != other.build_profile {
            out.push(format!(
                "build_profile: {} → {}",
                self.build_profile, other.build_profile
            ));
        }
        if self.gpus != other.gpus {
            out.push(format!("gpus: {:?} → {:?}", self.gpus, other.gpus));
        }
        {
            let (what, a, b) = ("model", &self.models, &other.models);
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                if a.get(k) != b.get(k) {
                    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "absent".into());
                    out.push(format!(
                        "{what} {k}: {} → {}",
                        show(a.get(k)),
                        show(b.get(k))
                    ));
                }
            }
        }
        out
    }
}

/// Lowercase ASCII alphanumeric runs joined by `-`, without `(r)`/`(tm)` marks, at most `max` chars.
pub fn slug(text: &str, max: usize) -> String {
    let cleaned = text.to_lowercase().replace("(r)", " ").replace("(tm)", " ");
    let words: Vec<String> = cleaned
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let mut out = String::new();
    for w in words {
        let extra = if out.is_empty() { w.len() } else { w.len() + 1 };
        if out.len() + extra > max {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&w);
    }
    out
}

#[derive(Debug, Clone)]
struct Hardware {
    cpu_model: String,
    available_cores: usize,
    gpus: Vec<Gpu>,
}

/// Read once per process (`nvidia-smi` is a process spawn).
fn hardware() -> &'static Hardware {
    static HW: OnceLock<Hardware> = OnceLock::new();
    HW.get_or_init(|| {
        let m = crate::host::machine();
        Hardware {
            cpu_model: m.cpu_model,
            available_cores: m.available_cores,
            gpus: nvidia_gpus(),
        }
    })
}

/// The GPU drivers visible here (`550.54.15`), distinct, for a record's provenance.
pub fn gpu_drivers() -> Vec<String> {
    let mut out: Vec<String> = hardware()
        .gpus
        .iter()
        .map(|g| g.driver_version.clone())
        .collect();
    out.dedup();
    out
}

/// The runtime behind `backend` as this process would run it: what it reports and, when it came
/// from a pin infergate fetched, the artifact (so that another run can fetch it again). `None` for
/// a backend without a pinnable runtime (a remote server) or a runtime that is absent here.
pub fn current_runtime(backend: &str) -> Option<RuntimePin> {
    match crate::backend::registry::runtime_of(backend)? {
        Runtime::OnnxRuntime => {
            let rt = crate::backend::ort::runtime().ok()?;
            Some(RuntimePin {
                runtime: Runtime::OnnxRuntime,
                reported: rt.version.clone(),
                artifact: crate::pins::onnxruntime_in_use().ok(),
            })
        }
        Runtime::LlamaCpp => {
            use crate::assets::llama_cpp::{self, BuildOrigin};
            // The CUDA build is recorded by what it reports only: a pin re-fetches the CPU
            // build (the paired workers set INFERGATE_LLAMA_CPP_BIN), which is not what
            // `llama-cpp-cuda` runs, so its baselines are compared in stored mode.
            let cuda = matches!(
                crate::backend::registry::spec(backend).map(|s| s.recipe),
                Some(crate::backend::registry::Recipe::LlamaCpp { cuda: true })
            );
            let build = if cuda {
                llama_cpp::locate_cuda()?
            } else {
                llama_cpp::locate()?
            };
            let artifact =
                (build.origin == BuildOrigin::Cache && !cuda).then(crate::pins::default_llama_cpp);
            Some(RuntimePin {
                runtime: Runtime::LlamaCpp,
                reported: build.version,
                artifact,
            })
        }
        Runtime::Libtorch => {
            // The version only: the probe's detail names paths, which must not split a baseline.
            if !crate::backend::registry::probe(backend).is_available() {
                return None;
            }
            Some(RuntimePin {
                runtime: Runtime::Libtorch,
                reported: crate::backend::registry::libtorch_version()?,
                artifact: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint {
            cpu_model: "Intel(R) Xeon(R) Platinum 8480+".into(),
            available_cores: 16,
            gpus: vec!["NVIDIA H100 80GB HBM3".into()],
            models: [("m".to_string(), "ab".repeat(32))].into(),
            build_profile: "dev".into(),
        }
    }

    #[test]
    fn id_is_readable_and_ends_with_the_hash() {
        let f = fp();
        let id = f.id();
        assert!(
            id.starts_with("intel-xeon-platinum-8480-16c-nvidia-h100-80gb-hbm3-"),
            "{id}"
        );
        assert!(id.ends_with(&f.hash()[..12]), "{id}");
    }

    #[test]
    fn every_component_changes_the_id() {
        let base = fp().id();
        let mut variants = Vec::new();
        let mut f = fp();
        f.available_cores = 8;
        variants.push(f);
        let mut f = fp();
        f.gpus[0] = "NVIDIA H200".into();
        variants.push(f);
        let mut f = fp();
        f.cpu_model = "AMD EPYC".into();
        variants.push(f);
        let mut f = fp();
        f.models.insert("m".into(), "cd".repeat(32));
        variants.push(f);
        let mut f = fp();
        f.build_profile = "release".into();
        variants.push(f);
        for v in variants {
            assert_ne!(v.id(), base);
            assert_eq!(fp().differences(&v).len(), 1, "{:?}", fp().differences(&v));
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("AMD EPYC", 32), "amd-epyc");
        assert_eq!(
            slug("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", 20),
            "intel-core-i7-8700"
        );
    }
}
