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
const IDS: &[&str] = &["ort-cpu", "tch-cpu", "tch-cuda", "tch-cuda-bf16", "tch-cuda-fp16"];

/// The fix for every `tch-*` id when this build has no libtorch backend.
pub const TCH_FEATURE_FIX: &str = "build with --features torch after scripts/setup-libtorch.sh \
(it prints `export LIBTORCH=~/.cache/infergate/libtorch-2.11.0`; run it as `eval \"$(scripts/setup-libtorch.sh)\"`)";

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
        id if id.starts_with("tch-") && is_known(id) => tch_probe(id),
        other => Availability::Absent { reason: format!("unknown backend `{other}`"), fix: format!("use one of: {}", IDS.join(", ")) },
    }
}

/// Device and dtype of each `tch-*` id.
#[cfg(feature = "torch")]
fn tch_options(id: &str) -> Option<super::tch::TchOptions> {
    use super::tch::{TchDevice, TchDtype, TchOptions};
    let (device, dtype) = match id {
        "tch-cpu" => (TchDevice::Cpu, TchDtype::Fp32),
        "tch-cuda" => (TchDevice::Cuda(0), TchDtype::Fp32),
        "tch-cuda-bf16" => (TchDevice::Cuda(0), TchDtype::Bf16),
        "tch-cuda-fp16" => (TchDevice::Cuda(0), TchDtype::Fp16),
        _ => return None,
    };
    Some(TchOptions::new(id, device, dtype))
}

#[cfg(feature = "torch")]
fn tch_probe(id: &str) -> Availability {
    use super::tch::{runtime, TchDevice, CUDA_FIX};
    let rt = runtime();
    let location = rt.libtorch_path.as_ref().map_or_else(|| "an unknown path".into(), |p| p.display().to_string());
    match tch_options(id).map(|o| o.device) {
        Some(TchDevice::Cpu) => Availability::Available { detail: format!("libtorch {} at {location}", rt.libtorch_version) },
        Some(TchDevice::Cuda(_)) => match rt.cuda_unavailable_reason() {
            None => Availability::Available {
                detail: format!(
                    "libtorch {} at {location}, {}, {} CUDA device(s), cuDNN {}",
                    rt.libtorch_version,
                    rt.libtorch_cuda.reason,
                    rt.cuda_device_count,
                    if rt.cudnn_available { "available" } else { "unavailable" }
                ),
            },
            Some(reason) => Availability::Absent { reason, fix: CUDA_FIX.into() },
        },
        None => Availability::Absent { reason: format!("unknown backend `{id}`"), fix: format!("use one of: {}", IDS.join(", ")) },
    }
}

#[cfg(not(feature = "torch"))]
fn tch_probe(_id: &str) -> Availability {
    Availability::Absent { reason: "this build has no libtorch backend (cargo feature `torch` is off)".into(), fix: TCH_FEATURE_FIX.into() }
}

/// What a backend needs prepared for a model (exports are cached, so this is cheap after the first time).
pub fn open(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    match id {
        "ort-cpu" => {
            let prepared = catalog::ensure_onnx(&WeightSource::catalog(model), WeightFormat::Fp32)?;
            let opts = OrtOptions::cpu(id, prepared.model_path, prepared.config, "fp32", OptLevel::All);
            Ok(Box::new(OrtBackend::open(opts)?))
        }
        id if id.starts_with("tch-") && is_known(id) => open_tch(id, model),
        other => Err(BackendError::Unavailable { backend: other.into(), reason: "unknown backend".into() }),
    }
}

#[cfg(feature = "torch")]
fn open_tch(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    let options = tch_options(id).ok_or_else(|| BackendError::Unavailable { backend: id.into(), reason: "unknown backend".into() })?;
    if let Availability::Absent { reason, fix } = tch_probe(id) {
        return Err(BackendError::Unavailable { backend: id.into(), reason: format!("{reason}; fix: {fix}") });
    }
    let weights = WeightSource::catalog(model).load_weights()?;
    Ok(Box::new(super::tch::TchBackend::open(options, &weights)?))
}

#[cfg(not(feature = "torch"))]
fn open_tch(id: &str, _model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::Unavailable { backend: id.into(), reason: format!("cargo feature `torch` is off; fix: {TCH_FEATURE_FIX}") })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tch_ids_are_known_and_an_absent_one_says_how_to_fix_it() {
        for id in ["tch-cpu", "tch-cuda", "tch-cuda-bf16", "tch-cuda-fp16"] {
            assert!(is_known(id), "{id}");
            match probe(id) {
                Availability::Absent { reason, fix } => {
                    assert!(!reason.is_empty());
                    if cfg!(feature = "torch") {
                        assert_ne!(id, "tch-cpu", "tch-cpu is absent in a torch build: {reason}");
                    } else {
                        assert!(fix.contains("--features torch") && fix.contains("setup-libtorch.sh"), "{fix}");
                    }
                }
                Availability::Available { .. } => {
                    if !cfg!(feature = "torch") {
                        panic!("{id} available without the torch feature");
                    }
                }
            }
        }
        assert!(!is_known("tch-gpu"));
    }
}
