//! How a session is opened: the options a backend id sets ([`OrtOptions`]: graph optimization level,
//! execution providers, where the KV cache lives, evidence collection) and building the ONNX Runtime
//! session from them.

use std::path::{Path, PathBuf};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use serde::{Deserialize, Serialize};

use super::runtime::OrtRuntime;
use crate::backend::stretch::Stretch;
use crate::error::BackendError;
use crate::model::LlamaConfig;

/// ONNX Runtime's graph optimization levels, as a gate file names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptLevel {
    Disabled,
    Basic,
    Extended,
    All,
}

impl OptLevel {
    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            OptLevel::Disabled => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// How to open a session.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// Backend id in trial names (`ort-cpu`, `ort-cpu-noopt` …).
    pub id: String,
    pub model_path: PathBuf,
    pub config: LlamaConfig,
    pub precision: String,
    pub opt_level: OptLevel,
    pub intra_threads: usize,
    /// Execution providers to request before the CPU provider (ONNX Runtime falls back silently
    /// when one cannot register: only [`Backend::evidence`] tells).
    pub providers: Vec<RequestedProvider>,
    /// Open for evidence: profile every node and write the optimized graph (slower; not for timing).
    pub collect_evidence: bool,
    /// A requested provider that cannot register is an error (default). Off only for the
    /// silent-fallback negative control, which must show what ONNX Runtime does on its own.
    pub strict_providers: bool,
    /// Test-only planted slowdown (a no-op by default; [`crate::backend::stretch`]).
    pub stretch: Stretch,
    /// Where the KV cache lives between decode steps.
    pub kv_cache: KvCacheHome,
}

/// Where the KV cache lives between decode steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheHome {
    /// Plain `run()`: every output comes back to host memory and goes in again next step (for a
    /// CUDA session: 60 cache tensors copied each way per token).
    HostRoundTrip,
    /// ONNX Runtime's I/O binding: `present.*` outputs stay in this memory and feed the next step's
    /// `past_key_values.*` without a copy; only the logits are bound to host memory. How ONNX
    /// Runtime's own generation loop (onnxruntime-genai) keeps a CUDA session's cache on the GPU.
    Bound(BindTarget),
}

/// Memory the bound cache lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindTarget {
    /// The CPU allocator (exercises the binding path on machines without a GPU).
    Cpu,
    Cuda(i32),
}

impl BindTarget {
    pub(super) fn memory_info(self) -> Result<ort::memory::MemoryInfo<'static>, ort::Error> {
        use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
        match self {
            BindTarget::Cpu => MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            ),
            BindTarget::Cuda(id) => MemoryInfo::new(
                AllocationDevice::CUDA,
                id,
                AllocatorType::Device,
                MemoryType::Default,
            ),
        }
    }
}

/// An execution provider to request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum RequestedProvider {
    Cuda {
        device_id: i32,
    },
    /// TensorRT with an engine cache and explicit shape profiles (`name:dims,...` strings).
    TensorRt {
        device_id: i32,
        engine_cache_dir: PathBuf,
        profile_min_shapes: String,
        profile_opt_shapes: String,
        profile_max_shapes: String,
    },
}

impl RequestedProvider {
    pub fn ort_name(&self) -> &'static str {
        match self {
            RequestedProvider::Cuda { .. } => "CUDAExecutionProvider",
            RequestedProvider::TensorRt { .. } => "TensorrtExecutionProvider",
        }
    }
    fn dispatch(&self, strict: bool) -> ort::ep::ExecutionProviderDispatch {
        let d = self.dispatch_lenient();
        if strict {
            d.error_on_failure()
        } else {
            d
        }
    }

    fn dispatch_lenient(&self) -> ort::ep::ExecutionProviderDispatch {
        match self {
            // TF32 off explicitly: the CUDA ids carry fp32/fp16 labels, and TF32 would round fp32
            // matmul inputs to 10 mantissa bits.
            RequestedProvider::Cuda { device_id } => ort::ep::CUDA::default()
                .with_device_id(*device_id)
                .with_tf32(false)
                .build(),
            RequestedProvider::TensorRt {
                device_id,
                engine_cache_dir,
                profile_min_shapes,
                profile_opt_shapes,
                profile_max_shapes,
            } => ort::ep::TensorRT::default()
                .with_device_id(*device_id)
                .with_engine_cache(true)
                .with_engine_cache_path(engine_cache_dir.display())
                .with_profile_min_shapes(profile_min_shapes)
                .with_profile_opt_shapes(profile_opt_shapes)
                .with_profile_max_shapes(profile_max_shapes)
                .build(),
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl OrtOptions {
    pub fn cpu(
        id: &str,
        model_path: PathBuf,
        config: LlamaConfig,
        precision: &str,
        opt_level: OptLevel,
    ) -> Self {
        OrtOptions {
            id: id.into(),
            model_path,
            config,
            precision: precision.into(),
            opt_level,
            intra_threads: default_threads(),
            providers: Vec::new(),
            collect_evidence: false,
            strict_providers: true,
            stretch: Default::default(),
            kv_cache: KvCacheHome::HostRoundTrip,
        }
    }
}

/// Set when a session is opened for evidence: where the profile and optimized graph go, what was
/// asked for.
pub(super) struct EvidenceSetup {
    pub(super) dir: tempfile::TempDir,
    pub(super) requested: Vec<String>,
    pub(super) opt_level: OptLevel,
    pub(super) exported_model: PathBuf,
}

/// A failure of backend `id` to load the model at `model_path` into a session.
pub(super) fn load_error(id: &str, model_path: &Path, e: ort::Error) -> BackendError {
    BackendError::load(id, format!("{} ({e})", model_path.display()))
}

/// The session `options` ask for over their model file, and where its evidence goes when opened
/// for evidence. Providers that cannot register are an error unless `strict_providers` is off.
pub(super) fn build_session(
    rt: &OrtRuntime,
    options: &OrtOptions,
) -> Result<(Session, Option<EvidenceSetup>), BackendError> {
    let id = options.id.clone();
    let load = |e: ort::Error| load_error(&id, &options.model_path, e);
    if !options.model_path.exists() {
        return Err(BackendError::load(
            &id,
            format!("model file {} does not exist", options.model_path.display()),
        ));
    }
    let mut builder = Session::builder(&rt.environment)
        .map_err(load)?
        .with_optimization_level(options.opt_level.to_ort())
        .map_err(|e| load(e.into()))?
        .with_intra_threads(options.intra_threads)
        .map_err(|e| load(e.into()))?;
    if !options.providers.is_empty() {
        let eps: Vec<_> = options
            .providers
            .iter()
            .map(|p| p.dispatch(options.strict_providers))
            .collect();
        builder = builder.with_execution_providers(eps).map_err(|e| {
            let names: Vec<&str> = options
                .providers
                .iter()
                .map(RequestedProvider::ort_name)
                .collect();
            BackendError::Unavailable {
                backend: id.clone(),
                reason: format!("{} could not be registered: {e}", names.join(", ")),
            }
        })?;
    }
    let evidence_setup = if options.collect_evidence {
        let dir = tempfile::tempdir().map_err(|e| BackendError::load(&id, e))?;
        builder = builder
            .with_optimized_model_path(dir.path().join("optimized.onnx"))
            .map_err(|e| load(e.into()))?
            .with_profiling(dir.path().join("profile"))
            .map_err(|e| load(e.into()))?;
        let mut requested: Vec<String> = options
            .providers
            .iter()
            .map(|p| p.ort_name().to_string())
            .collect();
        requested.push("CPUExecutionProvider".into());
        Some(EvidenceSetup {
            dir,
            requested,
            opt_level: options.opt_level,
            exported_model: options.model_path.clone(),
        })
    } else {
        None
    };
    let session = builder
        .commit_from_file(&options.model_path)
        .map_err(load)?;
    Ok((session, evidence_setup))
}

/// Whether a TensorRT shape-profile string (`name:1x32,other:1x128`) allows `input`'s last dimension
/// to reach `len`.
pub fn profile_covers(max_shapes: &str, input: &str, len: usize) -> bool {
    max_shapes
        .split(',')
        .filter_map(|entry| entry.split_once(':'))
        .find(|(name, _)| name.trim() == input)
        .and_then(|(_, dims)| {
            dims.split('x')
                .next_back()
                .and_then(|d| d.trim().parse::<usize>().ok())
        })
        .is_some_and(|max| len <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorrt_profiles_cover_only_what_they_declare() {
        let max = "input_ids:1x32,attention_mask:1x128,position_ids:1x32";
        assert!(profile_covers(max, "input_ids", 27));
        assert!(!profile_covers(max, "input_ids", 33));
        assert!(profile_covers(max, "attention_mask", 91));
        assert!(
            !profile_covers(max, "past_key_values.0.key", 1),
            "an input the profile does not name is not covered"
        );
    }
}
