//! The backend table: every backend id a gate file can name ([`table::BACKENDS`], one row each),
//! and for each a cheap availability probe and a constructor, both read from its row and
//! dispatched to the engine's own module.

use super::evidence::DecodeMode;
use super::llama_cpp::server::{LlamaCppBackend, ServerSettings};
use super::ollama::{OllamaBackend, OllamaConfig};
use super::ort::{BindTarget, KvCacheHome, OptLevel, OrtBackend, OrtOptions, RequestedProvider};
use super::stretch::Stretch;
use super::tweaks::Tweaks;
use super::{Availability, Backend};
use crate::assets::llama_cpp as llama_build;
use crate::error::BackendError;
use crate::host::ComputeDevice;
use crate::model::catalog::{self, CatalogModel, WeightSource};
use crate::model::onnx_graph::WeightFormat;

mod table;
pub use table::{
    runtime_of, spec, BackendSpec, Engine, OrtDevice, Recipe, TorchDevice, TorchDtype, BACKENDS,
};

/// The fix for every `tch-*` id when this build has no libtorch backend.
pub const TCH_FEATURE_FIX: &str = "build with --features torch after scripts/setup-libtorch.sh \
(it prints `export LIBTORCH=~/.cache/infergate/libtorch-2.11.0`; run it as `eval \"$(scripts/setup-libtorch.sh)\"`)";

/// The weight format and graph optimization level of an ONNX Runtime backend id.
fn ort_variant(id: &str) -> Option<(WeightFormat, OptLevel)> {
    match spec(id)?.recipe {
        Recipe::Ort { format, opt, .. } => Some((format, opt)),
        _ => None,
    }
}

/// The device backend `id` computes on, known without opening it ([`BackendSpec::requested_device`]);
/// `None` where the backend does not decide it, or for an unknown id.
pub fn requested_device(id: &str) -> Option<ComputeDevice> {
    spec(id)?.requested_device()
}

/// The fp32 backend a lower-precision variant was made from ([`BackendSpec::fp32_parent`]).
pub fn fp32_parent(id: &str) -> Option<&'static str> {
    spec(id)?.fp32_parent
}

/// Every backend id, in report order.
pub fn known_ids() -> Vec<&'static str> {
    BACKENDS.iter().map(|s| s.id).collect()
}

pub fn is_known(id: &str) -> bool {
    spec(id).is_some()
}

fn unknown(id: &str) -> Availability {
    Availability::Absent {
        reason: format!("unknown backend `{id}`"),
        fix: format!("use one of: {}", known_ids().join(", ")),
    }
}

/// The version of `engine`'s runtime as this process would load it (for manifests); `None` where
/// it is absent here or, for a remote server, not a runtime of this machine.
pub fn runtime_version(engine: Engine) -> Option<String> {
    match engine {
        Engine::OnnxRuntime => super::ort::runtime().ok().map(|rt| rt.version.clone()),
        Engine::LlamaCpp => llama_build::locate().map(|b| b.version),
        Engine::Libtorch => libtorch_version(),
        Engine::Ollama => None,
    }
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
    let Some(spec) = spec(id) else {
        return unknown(id);
    };
    match spec.recipe {
        Recipe::Ort { device: OrtDevice::Cpu, .. } => probe_ort_cpu(),
        Recipe::Ort { device, .. } => probe_ort_gpu(id, device),
        Recipe::LlamaCpp { cuda: false } => match llama_build::locate() {
            Some(b) => Availability::Available { detail: format!("{} at {}", b.version, b.bin_dir.display()) },
            None => Availability::Absent {
                reason: "llama.cpp is not built on this machine".into(),
                fix: format!("run `cargo run --release -- build-llama-cpp` (about 6 min on 2 cores, cached) or set {}", llama_build::ENV_BIN),
            },
        },
        Recipe::LlamaCpp { cuda: true } => match llama_build::locate_cuda() {
            Some(b) => Availability::Available { detail: format!("{} at {} (all layers on the GPU: -ngl {})", b.version, b.bin_dir.display(), super::llama_cpp::server::ALL_LAYERS) },
            None => Availability::Absent {
                reason: "no CUDA build of llama.cpp on this machine".into(),
                fix: format!("on a machine with nvcc run `infergate build-llama-cpp --cuda` (set {} for the GPU architecture, e.g. 90), or set {}", llama_build::ENV_CUDA_ARCHS, llama_build::ENV_CUDA_BIN),
            },
        },
        Recipe::Ollama => match OllamaConfig::from_env() {
            Ok(config) => super::ollama::probe(&config),
            Err(reason) => Availability::Absent { reason, fix: "set OLLAMA_HOST to host:port or http://host:port".into() },
        },
        Recipe::Tch { .. } => tch_probe(id),
    }
}

fn probe_ort_cpu() -> Availability {
    match super::ort::runtime() {
        Ok(rt) => Availability::Available { detail: format!("ONNX Runtime {} at {}", rt.version, rt.library_path.display()) },
        Err(e) => Availability::Absent {
            reason: e.to_string(),
            fix: "run `infergate fetch` with PyPI reachable, or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1".into(),
        },
    }
}

fn probe_ort_gpu(id: &str, device: OrtDevice) -> Availability {
    let wanted = ort_provider(id).map(|p| p.ort_name()).unwrap_or_default();
    let gpu = if device == OrtDevice::TensorRt {
        super::ort::gpu::GpuProvider::TensorRt
    } else {
        super::ort::gpu::GpuProvider::Cuda
    };
    match super::ort::runtime() {
        Ok(rt) if super::ort::runtime_providers().iter().any(|p| p == wanted) => {
            match super::ort::gpu::check_provider(&rt.library_path, gpu) {
                Ok(c) => Availability::Available { detail: format!("ONNX Runtime {} with {wanted} at {} ({})", rt.version, c.provider_library.display(), c.resolved.iter().map(|(n, p)| format!("{n} → {p}")).collect::<Vec<_>>().join(", ")) },
                Err(reason) => Availability::Absent {
                    reason,
                    fix: match gpu {
                        super::ort::gpu::GpuProvider::Cuda => super::ort::gpu::FIX,
                        super::ort::gpu::GpuProvider::TensorRt => super::ort::gpu::TENSORRT_FIX,
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

/// How a `tch-*` id runs its decode loop (`None`: not a libtorch id).
pub fn tch_decode_mode(id: &str) -> Option<DecodeMode> {
    match spec(id)?.recipe {
        Recipe::Tch { decode, .. } => Some(decode),
        _ => None,
    }
}

/// Device and dtype of each `tch-*` id.
#[cfg(feature = "torch")]
fn tch_options(id: &str) -> Option<super::tch::TchOptions> {
    use super::tch::{TchDevice, TchDtype, TchOptions};
    let Recipe::Tch {
        device,
        dtype,
        decode,
    } = spec(id)?.recipe
    else {
        return None;
    };
    let device = match device {
        TorchDevice::Cpu => TchDevice::Cpu,
        TorchDevice::Cuda => TchDevice::Cuda(0),
        TorchDevice::CudaIfAvailable
            if super::tch::runtime().cuda_unavailable_reason().is_none() =>
        {
            TchDevice::Cuda(0)
        }
        TorchDevice::CudaIfAvailable => TchDevice::Cpu,
    };
    let dtype = match dtype {
        TorchDtype::Fp32 => TchDtype::Fp32,
        TorchDtype::Bf16 => TchDtype::Bf16,
        TorchDtype::Fp16 => TchDtype::Fp16,
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
        None => unknown(id),
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
/// open (never inside a timed loop; [`crate::backend::tweaks`]).
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
    let Some(spec) = spec(id) else {
        return Err(BackendError::Unavailable {
            backend: id.into(),
            reason: "unknown backend".into(),
        });
    };
    match spec.recipe {
        Recipe::Ort { format, opt, .. } => open_ort_with(
            id,
            &WeightSource::catalog(model),
            format,
            opt,
            ort_provider(id),
            false,
            stretch,
        ),
        Recipe::LlamaCpp { cuda } => open_llama_cpp(id, cuda, &model.gguf_path()?, threads),
        Recipe::Ollama => open_ollama(ollama_config()?, model),
        Recipe::Tch { .. } => open_tch(id, model),
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

/// `llama-server` from the CPU build, or from the CUDA build with every layer offloaded (`cuda`);
/// `threads`: the server's thread count (`None`: every core).
fn open_llama_cpp(
    id: &str,
    cuda: bool,
    gguf: &std::path::Path,
    threads: Option<usize>,
) -> Result<Box<dyn Backend>, BackendError> {
    let (build, gpu_layers) = if cuda {
        (
            llama_build::locate_cuda(),
            Some(super::llama_cpp::server::ALL_LAYERS),
        )
    } else {
        (llama_build::locate(), None)
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
    let settings = ServerSettings {
        gpu_layers,
        threads,
        extra_args: &[],
    };
    Ok(Box::new(LlamaCppBackend::open(
        id, &build, gguf, &precision, &settings,
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
    match spec(id)?.recipe {
        Recipe::Ort {
            device: OrtDevice::Cuda,
            ..
        } => Some(RequestedProvider::Cuda { device_id: 0 }),
        Recipe::Ort {
            device: OrtDevice::TensorRt,
            ..
        } => Some(tensorrt_request()),
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
    let recipe = spec(id).map(|s| s.recipe);
    match recipe {
        Some(Recipe::Ort { format, opt, .. }) => {
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
        Some(Recipe::LlamaCpp { cuda }) => {
            open_llama_cpp(id, cuda, &missing.with_extension("gguf"), None)
        }
        // A model name no server has: opening fails with the `ollama pull` fix (or "no server").
        Some(Recipe::Ollama) => open_ollama(
            OllamaConfig {
                model: "infergate-negative-control:missing".into(),
                ..ollama_config()?
            },
            model,
        ),
        Some(Recipe::Tch { .. }) | None => Err(BackendError::Unsupported {
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
