//! The backends a gate file can name: a cheap availability probe and a constructor for each.

use serde::Serialize;

use super::llama_cpp::server::LlamaCppBackend;
use super::llama_cpp::setup;
use super::ollama::{OllamaBackend, OllamaConfig};
use super::ort::{BindTarget, KvCacheHome, OptLevel, OrtBackend, OrtOptions, RequestedProvider};
use super::{Backend, ComputeDevice};
use crate::baseline::slowdown::{Stretch, Tweaks};
use crate::error::BackendError;
use crate::model::catalog::{self, CatalogModel, WeightSource};
use crate::model::onnx_graph::WeightFormat;

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
const IDS: &[&str] = &[
    "ort-cpu",
    "ort-cpu-ref",
    "ort-cpu-int8",
    "ort-cpu-q4",
    "ort-cpu-q4-exact",
    "ort-cpu-fp16",
    "ort-cuda",
    "ort-cuda-fp16",
    "ort-tensorrt",
    "llama-cpp",
    "llama-cpp-cuda",
    "ollama",
    "tch-cpu",
    "tch-auto",
    "tch-cuda",
    "tch-cuda-bf16",
    "tch-cuda-fp16",
    "tch-cuda-static-bf16",
    "tch-cuda-graph-bf16",
];

/// The fix for every `tch-*` id when this build has no libtorch backend.
pub const TCH_FEATURE_FIX: &str = "build with --features torch after scripts/setup-libtorch.sh \
(it prints `export LIBTORCH=~/.cache/infergate/libtorch-2.11.0`; run it as `eval \"$(scripts/setup-libtorch.sh)\"`)";

/// The ONNX Runtime CPU variants: weight format and graph optimization level.
fn ort_variant(id: &str) -> Option<(WeightFormat, OptLevel)> {
    Some(match id {
        "ort-cpu" => (WeightFormat::Fp32, OptLevel::All),
        // The accuracy reference: fp32 with every graph optimization disabled.
        "ort-cpu-ref" => (WeightFormat::Fp32, OptLevel::Disabled),
        // The deploy forms ONNX Runtime's integer CPU kernels run (docs/performance.md).
        "ort-cpu-int8" => (WeightFormat::Int8, OptLevel::All),
        "ort-cpu-q4" => (WeightFormat::Q4, OptLevel::All),
        // The bit-exact Q4_1 blocks (fp32 zero points, ONNX Runtime's slow path): an accuracy
        // reference for the 4-bit form, never a speed candidate.
        "ort-cpu-q4-exact" => (WeightFormat::GgufQ4_1, OptLevel::All),
        "ort-cpu-fp16" => (WeightFormat::Fp16, OptLevel::All),
        "ort-cuda" | "ort-tensorrt" => (WeightFormat::Fp32, OptLevel::All),
        "ort-cuda-fp16" => (WeightFormat::Fp16, OptLevel::All),
        _ => return None,
    })
}

/// The device backend `id` computes on, known without opening it; `None` where the backend does not
/// decide it (Ollama: its server chooses; `tch-auto`: CUDA if available, else CPU, decided when
/// opened — use [`BackendInfo::compute_device`](super::BackendInfo::compute_device) of the opened
/// backend) or for an unknown id.
pub fn requested_device(id: &str) -> Option<ComputeDevice> {
    match id {
        "ort-cuda" | "ort-cuda-fp16" | "ort-tensorrt" => Some(ComputeDevice::Cuda(0)),
        "tch-cuda" | "tch-cuda-bf16" | "tch-cuda-fp16" => Some(ComputeDevice::Cuda(0)),
        "tch-cuda-static-bf16" | "tch-cuda-graph-bf16" | "llama-cpp-cuda" => {
            Some(ComputeDevice::Cuda(0))
        }
        "tch-cpu" | "llama-cpp" => Some(ComputeDevice::Cpu),
        id if ort_variant(id).is_some() => Some(ComputeDevice::Cpu),
        _ => None,
    }
}

/// The fp32 backend a lower-precision variant was made from (same engine, same device). A variant
/// reads fewer bytes per token, so in memory-bound decode it must be at least as fast as its parent
/// ([`crate::report::roofline`]).
pub fn fp32_parent(id: &str) -> Option<&'static str> {
    match id {
        "ort-cpu-int8" | "ort-cpu-q4" | "ort-cpu-q4-exact" | "ort-cpu-fp16" => Some("ort-cpu"),
        "ort-cuda-fp16" => Some("ort-cuda"),
        "tch-cuda-bf16" | "tch-cuda-fp16" => Some("tch-cuda"),
        _ => None,
    }
}

pub fn known_ids() -> Vec<&'static str> {
    IDS.to_vec()
}

pub fn is_known(id: &str) -> bool {
    IDS.contains(&id)
}

/// The libtorch version this build loads (feature `torch`), for manifests and fingerprints.
#[cfg(feature = "torch")]
pub fn libtorch_version() -> Option<String> {
    Some(super::tch::runtime().libtorch_version.clone())
}

/// The libtorch version this build loads: none without the `torch` feature.
#[cfg(not(feature = "torch"))]
pub fn libtorch_version() -> Option<String> {
    None
}

/// Probe without running a model. May fetch a pinned runtime from its registry (cached afterwards).
pub fn probe(id: &str) -> Availability {
    match id {
        id if ort_provider(id).is_some() => {
            let wanted = ort_provider(id).map(|p| p.ort_name()).unwrap_or_default();
            let gpu = if id == "ort-tensorrt" { super::ort_gpu::GpuProvider::TensorRt } else { super::ort_gpu::GpuProvider::Cuda };
            match super::ort::runtime() {
                Ok(rt) if super::ort::runtime_providers().iter().any(|p| p == wanted) => {
                    match super::ort_gpu::check_provider(&rt.library_path, gpu) {
                        Ok(c) => Availability::Available { detail: format!("ONNX Runtime {} with {wanted} at {} ({})", rt.version, c.provider_library.display(), c.resolved.iter().map(|(n, p)| format!("{n} → {p}")).collect::<Vec<_>>().join(", ")) },
                        Err(reason) => Availability::Absent {
                            reason,
                            fix: match gpu {
                                super::ort_gpu::GpuProvider::Cuda => super::ort_gpu::FIX,
                                super::ort_gpu::GpuProvider::TensorRt => super::ort_gpu::TENSORRT_FIX,
                            }
                            .into(),
                        },
                    }
                }
                Ok(rt) => Availability::Absent {
                    reason: format!("the ONNX Runtime at {} has no {wanted} (providers: {})", rt.library_path.display(), super::ort::runtime_providers().join(", ")),
                    fix: "point ORT_DYLIB_PATH at an onnxruntime-gpu 1.31 build with its provider libraries and CUDA 13 (see docs/gpu.md); TensorRT also needs libnvinfer.so.10".into(),
                },
                Err(e) => Availability::Absent { reason: e.to_string(), fix: "set ORT_DYLIB_PATH".into() },
            }
        }
        id if ort_variant(id).is_some() => match super::ort::runtime() {
            Ok(rt) => Availability::Available { detail: format!("ONNX Runtime {} at {}", rt.version, rt.library_path.display()) },
            Err(e) => Availability::Absent {
                reason: e.to_string(),
                fix: "run `infergate fetch` with PyPI reachable, or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1".into(),
            },
        },
        "llama-cpp" => match setup::locate() {
            Some(b) => Availability::Available { detail: format!("{} at {}", b.version, b.bin_dir.display()) },
            None => Availability::Absent {
                reason: "llama.cpp is not built on this machine".into(),
                fix: format!("run `cargo run --release -- build-llama-cpp` (about 6 min on 2 cores, cached) or set {}", setup::ENV_BIN),
            },
        },
        "llama-cpp-cuda" => match setup::locate_cuda() {
            Some(b) => Availability::Available { detail: format!("{} at {} (all layers on the GPU: -ngl {})", b.version, b.bin_dir.display(), super::llama_cpp::server::ALL_LAYERS) },
            None => Availability::Absent {
                reason: "no CUDA build of llama.cpp on this machine".into(),
                fix: format!("on a machine with nvcc run `infergate build-llama-cpp --cuda` (set {} for the GPU architecture, e.g. 90), or set {}", setup::ENV_CUDA_ARCHS, setup::ENV_CUDA_BIN),
            },
        },
        "ollama" => match OllamaConfig::from_env() {
            Ok(config) => super::ollama::probe(&config),
            Err(reason) => Availability::Absent { reason, fix: "set OLLAMA_HOST to host:port or http://host:port".into() },
        },
        id if id.starts_with("tch-") && is_known(id) => tch_probe(id),
        other => Availability::Absent { reason: format!("unknown backend `{other}`"), fix: format!("use one of: {}", IDS.join(", ")) },
    }
}
/// How a `tch-*` id runs its decode loop (`None`: not a libtorch id).
pub fn tch_decode_mode(id: &str) -> Option<super::evidence::DecodeMode> {
    use super::evidence::DecodeMode;
    match id {
        // The static-shape decode step, launched from the host per token (same kernels as the graph).
        "tch-cuda-static-bf16" => Some(DecodeMode::Static),
        // That step captured once as a CUDA graph and replayed per token.
        "tch-cuda-graph-bf16" => Some(DecodeMode::CudaGraph),
        "tch-cpu" | "tch-auto" | "tch-cuda" | "tch-cuda-bf16" | "tch-cuda-fp16" => {
            Some(DecodeMode::Eager)
        }
        _ => None,
    }
}

/// Device and dtype of each `tch-*` id.
#[cfg(feature = "torch")]
fn tch_options(id: &str) -> Option<super::tch::TchOptions> {
    use super::tch::{TchDevice, TchDtype, TchOptions};
    let decode = tch_decode_mode(id)?;
    let (device, dtype) = match id {
        "tch-cpu" => (TchDevice::Cpu, TchDtype::Fp32),
        // `cuda if available, else cpu`: the silent-fallback pattern behind TR117's "gpu" labels.
        "tch-auto" if super::tch::runtime().cuda_unavailable_reason().is_none() => {
            (TchDevice::Cuda(0), TchDtype::Fp32)
        }
        "tch-auto" => (TchDevice::Cpu, TchDtype::Fp32),
        "tch-cuda" => (TchDevice::Cuda(0), TchDtype::Fp32),
        "tch-cuda-bf16" => (TchDevice::Cuda(0), TchDtype::Bf16),
        "tch-cuda-fp16" => (TchDevice::Cuda(0), TchDtype::Fp16),
        "tch-cuda-static-bf16" | "tch-cuda-graph-bf16" => (TchDevice::Cuda(0), TchDtype::Bf16),
        _ => return None,
    };
    Some(TchOptions::new(id, device, dtype).with_decode(decode))
}

#[cfg(feature = "torch")]
fn tch_probe(id: &str) -> Availability {
    use super::tch::{runtime, TchDevice, CUDA_FIX};
    let rt = runtime();
    let location = rt
        .libtorch_path
        .as_ref()
        .map_or_else(|| "an unknown path".into(), |p| p.display().to_string());
    let options = tch_options(id);
    if let (Some(o), None) = (&options, rt.cuda_unavailable_reason()) {
        if o.decode == super::tch::DecodeMode::CudaGraph {
            if let Err(reason) = super::tch::cuda_graph::shim() {
                return Availability::Absent {
                    reason,
                    fix: super::tch::cuda_graph::SHIM_FIX.into(),
                };
            }
        }
    }
    match options.map(|o| o.device) {
        Some(TchDevice::Cpu) => Availability::Available {
            detail: format!("libtorch {} at {location}", rt.libtorch_version),
        },
        Some(TchDevice::Cuda(_)) => match rt.cuda_unavailable_reason() {
            None => Availability::Available {
                detail: format!(
                    "libtorch {} at {location}, {}, {} CUDA device(s), cuDNN {}",
                    rt.libtorch_version,
                    rt.libtorch_cuda.reason,
                    rt.cuda_device_count,
                    if rt.cudnn_available {
                        "available"
                    } else {
                        "unavailable"
                    }
                ),
            },
            Some(reason) => Availability::Absent {
                reason,
                fix: CUDA_FIX.into(),
            },
        },
        None => Availability::Absent {
            reason: format!("unknown backend `{id}`"),
            fix: format!("use one of: {}", IDS.join(", ")),
        },
    }
}

#[cfg(not(feature = "torch"))]
fn tch_probe(_id: &str) -> Availability {
    Availability::Absent {
        reason: "this build has no libtorch backend (cargo feature `torch` is off)".into(),
        fix: TCH_FEATURE_FIX.into(),
    }
}

/// The test-only options of `INFERGATE_TEST_SLOWDOWN` / `INFERGATE_TEST_THREADS`, read once per
/// open (never inside a timed loop; [`crate::baseline::slowdown`]).
fn env_tweaks(id: &str) -> Result<Tweaks, BackendError> {
    Tweaks::from_env().map_err(|reason| BackendError::Unavailable {
        backend: id.into(),
        reason,
    })
}

/// What a backend needs prepared for a model (exports are cached, so this is cheap after the first time).
pub fn open(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    let tweaks = env_tweaks(id)?;
    open_tweaked(id, model, Stretch::new(tweaks.planted), tweaks.threads)
}

/// [`open`] with test-only options: a planted slowdown for ONNX Runtime (`stretch`; a clone kept
/// by the caller reads the time it added) and llama.cpp's thread count (`None`: every core).
pub fn open_tweaked(
    id: &str,
    model: &CatalogModel,
    stretch: Stretch,
    threads: Option<usize>,
) -> Result<Box<dyn Backend>, BackendError> {
    match ort_variant(id) {
        Some((format, opt)) => open_ort_with(
            id,
            &WeightSource::catalog(model),
            format,
            opt,
            ort_provider(id),
            false,
            stretch,
        ),
        None if id == "llama-cpp" || id == "llama-cpp-cuda" => {
            open_llama_cpp(id, &model.gguf_path()?, threads)
        }
        None if id == "ollama" => open_ollama(ollama_config()?, model),
        None if id.starts_with("tch-") && is_known(id) => open_tch(id, model),
        None => Err(BackendError::Unavailable {
            backend: id.into(),
            reason: "unknown backend".into(),
        }),
    }
}

#[cfg(feature = "torch")]
fn open_tch(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    let options = tch_options(id).ok_or_else(|| BackendError::Unavailable {
        backend: id.into(),
        reason: "unknown backend".into(),
    })?;
    if let Availability::Absent { reason, fix } = tch_probe(id) {
        return Err(BackendError::Unavailable {
            backend: id.into(),
            reason: format!("{reason}; fix: {fix}"),
        });
    }
    let weights = WeightSource::catalog(model).load_weights()?;
    // The libtorch forward implements plain LLaMA: refuse what it would silently get wrong.
    let c = &weights.config;
    if c.attention_bias || !c.rope_scaling.is_none() {
        return Err(BackendError::Unsupported {
            backend: id.into(),
            feature: format!(
                "model `{}` ({}{}{})",
                model.name,
                c.arch.key(),
                if c.attention_bias {
                    ", q/k/v biases"
                } else {
                    ""
                },
                if c.rope_scaling.is_none() {
                    ""
                } else {
                    ", rope scaling"
                }
            ),
        });
    }
    Ok(Box::new(super::tch::TchBackend::open(options, &weights)?))
}

#[cfg(not(feature = "torch"))]
fn open_tch(id: &str, _model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::Unavailable {
        backend: id.into(),
        reason: format!("cargo feature `torch` is off; fix: {TCH_FEATURE_FIX}"),
    })
}

/// `llama-cpp` (CPU build) or `llama-cpp-cuda` (CUDA build, every layer offloaded); `threads`:
/// the server's thread count (`None`: every core).
fn open_llama_cpp(
    id: &str,
    gguf: &std::path::Path,
    threads: Option<usize>,
) -> Result<Box<dyn Backend>, BackendError> {
    let (build, gpu_layers) = if id == "llama-cpp-cuda" {
        (
            setup::locate_cuda(),
            Some(super::llama_cpp::server::ALL_LAYERS),
        )
    } else {
        (setup::locate(), None)
    };
    let build = build.ok_or_else(|| BackendError::Unavailable {
        backend: id.into(),
        reason: match probe(id) {
            Availability::Absent { reason, fix } => format!("{reason}; fix: {fix}"),
            Availability::Available { .. } => "llama.cpp is not built".into(),
        },
    })?;
    // The precision label is the file's own: its most common matrix type (`q4_1`, `q4_k` …).
    let precision = crate::model::GgufFile::open(gguf)
        .map(|g| g.dominant_matrix_type().name().to_lowercase())
        .unwrap_or_else(|_| "gguf".into());
    Ok(Box::new(LlamaCppBackend::open_with_threads(
        id, &build, gguf, &precision, gpu_layers, threads,
    )?))
}

fn ollama_config() -> Result<OllamaConfig, BackendError> {
    OllamaConfig::from_env().map_err(|reason| BackendError::Unavailable {
        backend: "ollama".into(),
        reason,
    })
}

/// The Ollama server's model, with the catalog model's tokenizer to turn workload ids into text.
pub fn open_ollama(
    config: OllamaConfig,
    model: &CatalogModel,
) -> Result<Box<dyn Backend>, BackendError> {
    let tokenizer = crate::model::tokenizer::Tokenizer::from_gguf(&crate::model::GgufFile::open(
        &model.gguf_path()?,
    )?)?;
    Ok(Box::new(OllamaBackend::open(config, tokenizer)?))
}

/// The cached ONNX export an ORT backend id runs (exported now if needed), for running the same
/// file outside the harness (scripts/harness_overhead.sh). `None` for other engines.
pub fn ort_export(
    id: &str,
    model: &CatalogModel,
) -> Result<Option<catalog::PreparedOnnx>, BackendError> {
    match ort_variant(id) {
        Some((format, _)) => Ok(Some(catalog::ensure_onnx(
            &WeightSource::catalog(model),
            format,
        )?)),
        None => Ok(None),
    }
}

/// The execution provider an ORT backend id requests (none for the CPU variants).
pub fn ort_provider(id: &str) -> Option<RequestedProvider> {
    match id {
        "ort-cuda" | "ort-cuda-fp16" => Some(RequestedProvider::Cuda { device_id: 0 }),
        "ort-tensorrt" => Some(tensorrt_request()),
        _ => None,
    }
}

/// TensorRT with an engine cache under the infergate cache and a shape profile covering every
/// scenario (batch 1, prompt up to 32 tokens, cache up to 128 positions).
pub fn tensorrt_request() -> RequestedProvider {
    RequestedProvider::TensorRt {
        device_id: 0,
        engine_cache_dir: crate::assets::cache_root().join("tensorrt-engines"),
        profile_min_shapes: "input_ids:1x1,attention_mask:1x1,position_ids:1x1".into(),
        profile_opt_shapes: "input_ids:1x1,attention_mask:1x64,position_ids:1x1".into(),
        profile_max_shapes: "input_ids:1x32,attention_mask:1x128,position_ids:1x32".into(),
    }
}

/// An ONNX Runtime session over the cached export of `source` in `format`.
pub fn open_ort(
    id: &str,
    source: &WeightSource,
    format: WeightFormat,
    opt: OptLevel,
) -> Result<Box<dyn Backend>, BackendError> {
    let stretch = Stretch::new(env_tweaks(id)?.planted);
    open_ort_with(id, source, format, opt, ort_provider(id), false, stretch)
}

fn open_ort_with(
    id: &str,
    source: &WeightSource,
    format: WeightFormat,
    opt: OptLevel,
    provider: Option<RequestedProvider>,
    evidence: bool,
    stretch: Stretch,
) -> Result<Box<dyn Backend>, BackendError> {
    let prepared = catalog::ensure_onnx(source, format)?;
    let mut opts = OrtOptions::cpu(
        id,
        prepared.model_path,
        prepared.config,
        format.label(),
        opt,
    );
    opts.providers.extend(provider);
    // A CUDA id keeps its KV cache on the GPU between steps (I/O binding), as ONNX Runtime's own
    // generation loop does; an extra provider requested on top (the fallback control) does not.
    if let Some(RequestedProvider::Cuda { device_id }) = ort_provider(id) {
        opts.kv_cache = KvCacheHome::Bound(BindTarget::Cuda(device_id));
    }
    opts.collect_evidence = evidence;
    // Evidence sessions keep ONNX Runtime's own (lenient) behaviour: the fallback is what they expose.
    opts.strict_providers = !evidence;
    opts.stretch = stretch;
    Ok(Box::new(OrtBackend::open(opts)?))
}

/// A backend opened to collect runtime evidence (profiling on, optimized graph written), with an
/// extra execution provider requested on top of what the id implies (the silent-fallback control).
pub fn open_for_evidence(
    id: &str,
    model: &CatalogModel,
    extra: Option<RequestedProvider>,
) -> Result<Box<dyn Backend>, BackendError> {
    match ort_variant(id) {
        Some((format, opt)) => open_ort_with(
            id,
            &WeightSource::catalog(model),
            format,
            opt,
            extra.or_else(|| ort_provider(id)),
            true,
            Stretch::default(),
        ),
        None => open(id, model),
    }
}

/// A backend of the same kind pointed at a model file that does not exist: the negative control
/// for degraded-run handling (must yield degraded runs with the reason, never a number).
pub fn open_broken(id: &str, model: &CatalogModel) -> Result<Box<dyn Backend>, BackendError> {
    let missing = std::env::temp_dir()
        .join("infergate-negative-control")
        .join("missing-model.onnx");
    match ort_variant(id) {
        Some((format, opt)) => {
            let config =
                catalog::ensure_onnx(&WeightSource::catalog(model), WeightFormat::Fp32)?.config;
            Ok(Box::new(OrtBackend::open(OrtOptions::cpu(
                id,
                missing,
                config,
                format.label(),
                opt,
            ))?))
        }
        None if id == "llama-cpp" || id == "llama-cpp-cuda" => {
            open_llama_cpp(id, &missing.with_extension("gguf"), None)
        }
        // A model name no server has: opening fails with the `ollama pull` fix (or "no server").
        None if id == "ollama" => open_ollama(
            OllamaConfig {
                model: "infergate-negative-control:missing".into(),
                ..ollama_config()?
            },
            model,
        ),
        None => Err(BackendError::Unsupported {
            backend: id.into(),
            feature: "a broken-model negative control".into(),
        }),
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
                        assert_ne!(
                            id, "tch-cpu",
                            "tch-cpu is absent in a torch build: {reason}"
                        );
                    } else {
                        assert!(
                            fix.contains("--features torch") && fix.contains("setup-libtorch.sh"),
                            "{fix}"
                        );
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
