//! The backends a gate file can name: a cheap availability probe and a constructor for each.

use serde::Serialize;

use super::ort::{OptLevel, OrtBackend, OrtOptions};
use super::Backend;
use crate::error::BackendError;
use crate::model::catalog::{self, CatalogModel, WeightSource};
use crate::model::onnx_export::WeightFormat;

/// Whether a backend can run on this machine, and if not, what fixes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Availability {
    Available { detail: String },
    Absent { reason: String, fix: String },
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available { .. })
    }
}

/// Every backend id, in report order.
const IDS: &[&str] = &["ort-cpu"];

pub fn known_ids() -> Vec<&'static str> {
    IDS.to_vec()
}

pub fn is_known(id: &str) -> bool {
    IDS.contains(&id)
}

/// Probe without running a model. May fetch a pinned runtime from its registry (cached afterwards).
pub fn probe(id: &str) -> Availability {
    match id {
        "ort-cpu" => match super::ort::runtime() {
            Ok(rt) => Availability::Available { detail: format!("ONNX Runtime {} at {}", rt.version, rt.library_path.display()) },
            Err(e) => Availability::Absent {
                reason: e.to_string(),
                fix: "run `infergate fetch` with PyPI reachable, or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1".into(),
            },
        },
        other => Availability::Absent { reason: format!("unknown backend `{other}`"), fix: format!("use one of: {}", IDS.join(", ")) },
    }
}

/// What a backend needs prepared for a model (exports are cached, so this is cheap after the first time).
pub fn open(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    match id {
        "ort-cpu" => {
            let prepared = catalog::ensure_onnx(&WeightSource::catalog(model), WeightFormat::Fp32)?;
            let opts = OrtOptions::cpu(id, prepared.model_path, prepared.config, "fp32", OptLevel::All);
            Ok(Box::new(OrtBackend::open(opts)?))
        }
        other => Err(BackendError::Unavailable { backend: other.into(), reason: "unknown backend".into() }),
    }
}

/// A backend of the same kind pointed at a model file that does not exist: the negative control
/// for degraded-run handling (must yield degraded runs with the reason, never a number).
pub fn open_broken(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    let missing = std::env::temp_dir().join("infergate-negative-control").join("missing-model.onnx");
    match id {
        "ort-cpu" => {
            let config = catalog::ensure_onnx(&WeightSource::catalog(model), WeightFormat::Fp32)?.config;
            let opts = OrtOptions::cpu(id, missing, config, "fp32", OptLevel::All);
            Ok(Box::new(OrtBackend::open(opts)?))
        }
        other => Err(BackendError::Unsupported { backend: other.into(), feature: "a broken-model negative control".into() }),
    }
}
