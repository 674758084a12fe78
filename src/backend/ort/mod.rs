//! ONNX Runtime backend (crate `ort`, `load-dynamic`): the exported LLaMA decoder with a KV cache.
//!
//! The runtime library is the pinned PyPI `onnxruntime` `.so` ([`crate::assets::ONNXRUNTIME`]) unless
//! `ORT_DYLIB_PATH` names another. ONNX Runtime allows one environment per process, so it is created
//! once and shared.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use ndarray::Array2;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::evidence::{is_compute_op, Evidence, GraphOptimization};
use super::{Backend, BackendInfo, Generation, MemoryTraffic};
use crate::error::BackendError;
use crate::model::onnx_export::{
    past_key_name, past_value_name, present_key_name, present_value_name,
};
use crate::model::reference::argmax;
use crate::model::LlamaConfig;

/// The loaded ONNX Runtime library: one per process.
#[derive(Debug, Clone, Serialize)]
pub struct OrtRuntime {
    pub library_path: PathBuf,
    /// As reported by the library (`OrtGetApiBase()->GetVersionString()`).
    pub version: String,
    /// `ort::info()`: the runtime's build string (git commit, flags).
    pub build_info: String,
    #[serde(skip)]
    environment: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<OrtRuntime, String>> = OnceLock::new();

/// Load ONNX Runtime once (fetching the pinned library if needed); the error says how to fix it.
pub fn runtime() -> Result<&'static OrtRuntime, BackendError> {
    RUNTIME
        .get_or_init(|| load_runtime().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|reason| BackendError::Unavailable {
            backend: "onnxruntime".into(),
            reason: reason.clone(),
        })
}

fn load_runtime() -> Result<OrtRuntime, String> {
    // INFERGATE_ONNXRUNTIME (another pinned version, crate::pins) wins over the compiled-in pin.
    let selected = crate::pins::selected_onnxruntime()?;
    let library_path = match &selected {
        Some(pin) => match crate::pins::fetch(pin, &mut std::io::sink()) {
            Ok(crate::pins::Fetched::Library(p)) => p,
            Ok(other) => return Err(format!("{}: not a library: {other:?}", pin.requirement())),
            Err(e) => return Err(format!("{}={}: {e}", crate::pins::ONNXRUNTIME_ENV, pin.requirement())),
        },
        None => crate::assets::ensure(&crate::assets::ONNXRUNTIME).map_err(|e| {
            format!("libonnxruntime not found: {e}\n  fix: run `infergate fetch` with PyPI reachable, or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1")
        })?,
    };
    let version = library_version(&library_path)?;
    if let Some(pin) = selected.as_ref().filter(|p| p.version() != version) {
        return Err(format!(
            "{} reports version {version}, not the pinned {}",
            library_path.display(),
            pin.version()
        ));
    }
    let builder = ort::init_from(&library_path).map_err(|e| {
        format!("cannot load ONNX Runtime from {}: {e}\n  fix: set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 (this build uses ort's api-31)", library_path.display())
    })?;
    let environment = builder
        .with_name("infergate")
        .build()
        .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
    Ok(OrtRuntime {
        library_path,
        version,
        build_info: ort::info().to_string(),
        environment,
    })
}

/// Ask the library itself for its version; does not depend on the file name.
fn library_version(path: &Path) -> Result<String, String> {
    #[repr(C)]
    struct OrtApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
        get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
    }
    // SAFETY: loading the ONNX Runtime shared library runs its initializers, which is what ort does too.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot dlopen {}: {e}", path.display()))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (onnxruntime_c_api.h).
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }
            .map_err(|e| format!("{} is not ONNX Runtime: {e}", path.display()))?;
    // SAFETY: the base struct is static in the library; GetVersionString returns a static C string.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        std::ffi::CStr::from_ptr(((*base).get_version_string)())
            .to_string_lossy()
            .into_owned()
    };
    std::mem::forget(lib); // ort keeps the library loaded for the life of the process anyway
    Ok(version)
}

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
    /// Test-only planted slowdown (a no-op by default; [`crate::baseline::slowdown`]).
    pub stretch: crate::baseline::slowdown::Stretch,
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
    fn memory_info(self) -> Result<ort::memory::MemoryInfo<'static>, ort::Error> {
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

/// Providers compiled into the loaded ONNX Runtime library.
pub fn runtime_providers() -> Vec<String> {
    let mut found = Vec::new();
    for (name, available) in [
        ("CPUExecutionProvider", Ok(true)),
        (
            "CUDAExecutionProvider",
            <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available(),
        ),
        (
            "TensorrtExecutionProvider",
            <ort::ep::TensorRT as ort::ep::ExecutionProvider>::is_available(),
        ),
    ] {
        if matches!(available, Ok(true)) {
            found.push(name.to_string());
        }
    }
    found
}

/// Memory infos of a bound session: the cache's, and host memory for the logits.
struct Bound {
    cache: ort::memory::MemoryInfo<'static>,
    host: ort::memory::MemoryInfo<'static>,
}

pub struct OrtBackend {
    info: BackendInfo,
    bound: Option<Bound>,
    /// TensorRT: the engine cache and the largest shapes its profile covers.
    tensorrt: Option<(PathBuf, String)>,
    session: Session,
    config: LlamaConfig,
    loaded_parameters: Option<u64>,
    memory_traffic: Option<MemoryTraffic>,
    /// Set when opened for evidence: where the profile and optimized graph go, what was asked for.
    evidence_setup: Option<EvidenceSetup>,
    stretch: crate::baseline::slowdown::Stretch,
}

struct EvidenceSetup {
    dir: tempfile::TempDir,
    requested: Vec<String>,
    opt_level: OptLevel,
    exported_model: PathBuf,
}

/// Parameters in the weights of the graph the session loaded: plain weight initializers
/// (`model.*`, `lm_head.*`) by element count, `MatMulNBits` weights by their `N·K` attributes; a
/// quantized copy of a tied head (`*tied_to*`) is the embedding again and is not counted twice.
pub fn onnx_weight_parameter_count(model_path: &Path) -> Option<u64> {
    use prost::Message;
    let bytes = std::fs::read(model_path).ok()?;
    let graph = crate::onnx_proto::ModelProto::decode(bytes.as_slice())
        .ok()?
        .graph?;
    // A deploy 4-bit node reads `[x, block sums of x]` (model::onnx_quant::q4_1_deploy): its K
    // includes the block-sum columns, which are corrections, not parameters.
    let producer: std::collections::HashMap<&str, &crate::onnx_proto::NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let block_sum_columns = |input: &str| -> i64 {
        let sums = producer
            .get(input)
            .filter(|n| n.op_type.as_deref() == Some("Concat"))
            .and_then(|concat| producer.get(concat.input.get(1)?.as_str()))
            .filter(|n| n.op_type.as_deref() == Some("MatMul"))
            .and_then(|matmul| matmul.input.get(1))
            .filter(|m| m.starts_with("const_block_sums_"));
        sums.and_then(|m| {
            graph
                .initializer
                .iter()
                .find(|t| t.name.as_ref() == Some(m))
        })
        .and_then(|t| t.dims.get(1).copied())
        .unwrap_or(0)
    };
    let mut quantized_inputs = std::collections::HashSet::new();
    let mut count = 0u64;
    for node in graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("MatMulNBits"))
    {
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(name))
                .and_then(|a| a.i)
        };
        quantized_inputs.extend(node.input.iter().cloned());
        if !node
            .input
            .first()
            .is_some_and(|_| node.input.get(1).is_some_and(|b| b.contains("tied_to")))
        {
            let k = attr("K")? - node.input.first().map_or(0, |x| block_sum_columns(x));
            count += (attr("N")? * k).max(0) as u64;
        }
    }
    count += graph
        .initializer
        .iter()
        .filter(|t| {
            t.name.as_deref().is_some_and(|n| {
                (n.starts_with("model.") || n.starts_with("lm_head."))
                    && !quantized_inputs.contains(n)
            })
        })
        .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
        .sum::<u64>();
    Some(count)
}

/// What one decode step of the exported decoder reads ([`MemoryTraffic`]), from the graph the session
/// loads: every initializer in its stored type (a `MatMulNBits` weight as its blocks, scales and
/// zero points), except that one consumed only by `Gather` (the embedding table) counts one row.
/// The KV cache holds keys and values of every layer in the activation type (`kv_elem_bytes`).
pub fn onnx_memory_traffic(
    model_path: &Path,
    config: &LlamaConfig,
    kv_elem_bytes: u64,
) -> Option<MemoryTraffic> {
    use crate::onnx_proto::tensor_proto::DataType;
    use prost::Message;
    let bytes = std::fs::read(model_path).ok()?;
    let graph = crate::onnx_proto::ModelProto::decode(bytes.as_slice())
        .ok()?
        .graph?;
    let mut gather_only: BTreeMap<&str, bool> = BTreeMap::new();
    for node in &graph.node {
        for (i, input) in node.input.iter().enumerate() {
            let gathered = node.op_type.as_deref() == Some("Gather") && i == 0;
            gather_only
                .entry(input.as_str())
                .and_modify(|g| *g &= gathered)
                .or_insert(gathered);
        }
    }
    let mut weight_bytes = 0u64;
    for t in &graph.initializer {
        let elem = match DataType::try_from(t.data_type.unwrap_or(0)).ok()? {
            DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int64 | DataType::Uint64 | DataType::Double => 8,
            _ => 1,
        };
        let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
        let total = dims.iter().product::<u64>() * elem;
        let name = t.name.as_deref().unwrap_or_default();
        weight_bytes += match (gather_only.get(name), dims.first()) {
            (Some(true), Some(&rows)) if rows > 0 => total / rows,
            _ => total,
        };
    }
    Some(MemoryTraffic {
        weight_bytes_per_token: weight_bytes,
        kv_bytes_per_position: 2
            * (config.n_layers * config.n_kv_heads * config.head_dim()) as u64
            * kv_elem_bytes,
    })
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

impl OrtBackend {
    pub fn open(options: OrtOptions) -> Result<Self, BackendError> {
        let rt = runtime()?;
        let id = options.id.clone();
        let load = |e: ort::Error| {
            BackendError::load(&id, format!("{} ({e})", options.model_path.display()))
        };
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
        let info = BackendInfo {
            id: options.id.clone(),
            engine: "onnxruntime".into(),
            engine_version: rt.version.clone(),
            location: rt.library_path.display().to_string(),
            device: match options.providers.first() {
                Some(
                    RequestedProvider::Cuda { device_id }
                    | RequestedProvider::TensorRt { device_id, .. },
                ) => format!("cuda:{device_id}"),
                None => "cpu".into(),
            },
            precision: options.precision.clone(),
        };
        let loaded_parameters = onnx_weight_parameter_count(&options.model_path);
        let kv_elem_bytes = if options.precision == "fp16" { 2 } else { 4 };
        let memory_traffic =
            onnx_memory_traffic(&options.model_path, &options.config, kv_elem_bytes);
        let tensorrt = options.providers.iter().find_map(|p| match p {
            RequestedProvider::TensorRt {
                engine_cache_dir,
                profile_max_shapes,
                ..
            } => Some((engine_cache_dir.clone(), profile_max_shapes.clone())),
            _ => None,
        });
        let bound = match options.kv_cache {
            KvCacheHome::HostRoundTrip => None,
            KvCacheHome::Bound(target) => Some(Bound {
                cache: target.memory_info().map_err(load)?,
                host: BindTarget::Cpu.memory_info().map_err(load)?,
            }),
        };
        Ok(OrtBackend {
            info,
            bound,
            tensorrt,
            session,
            config: options.config,
            loaded_parameters,
            memory_traffic,
            evidence_setup,
            stretch: options.stretch,
        })
    }

    fn err(&self, phase: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::run(&self.info.id, phase, e)
    }

    /// One forward: `tokens` at positions `past_len..`, with `past` (None = empty cache).
    /// Returns logits of every position `[tokens.len(), vocab]` and the new cache.
    fn forward(
        &mut self,
        tokens: &[u32],
        past_len: usize,
        past: Option<Vec<DynValue>>,
        phase: &str,
    ) -> Result<(Vec<f32>, Vec<DynValue>), BackendError> {
        let c = &self.config;
        let (n_layers, n_kv, hd) = (c.n_layers, c.n_kv_heads, c.head_dim());
        let s = tokens.len();
        let total = past_len + s;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(3 + 2 * n_layers);
        let tensor_i64 =
            |shape: [usize; 2], v: Vec<i64>| Tensor::from_array((shape, v)).map(|t| t.into_dyn());
        let mk = |r: Result<DynValue, ort::Error>| {
            r.map_err(|e| BackendError::run(&self.info.id, phase, e))
        };
        inputs.push(("input_ids".into(), mk(tensor_i64([1, s], ids))?));
        inputs.push((
            "attention_mask".into(),
            mk(tensor_i64([1, total], vec![1; total]))?,
        ));
        inputs.push((
            "position_ids".into(),
            mk(tensor_i64(
                [1, s],
                (past_len as i64..total as i64).collect(),
            ))?,
        ));
        match past {
            Some(values) => {
                if values.len() != 2 * n_layers {
                    return Err(self.err(
                        phase,
                        format!(
                            "cache has {} tensors, expected {}",
                            values.len(),
                            2 * n_layers
                        ),
                    ));
                }
                for (i, v) in values.into_iter().enumerate() {
                    let name = if i % 2 == 0 {
                        past_key_name(i / 2)
                    } else {
                        past_value_name(i / 2)
                    };
                    inputs.push((name, v));
                }
            }
            None => {
                let fp16 = self.info.precision == "fp16";
                for i in 0..n_layers {
                    for name in [past_key_name(i), past_value_name(i)] {
                        let shape = [1usize, n_kv, 0, hd];
                        let empty = if fp16 {
                            Tensor::<half::f16>::from_array((shape, Vec::new()))
                                .map(|t| t.into_dyn())
                        } else {
                            Tensor::<f32>::from_array((shape, Vec::new())).map(|t| t.into_dyn())
                        };
                        inputs.push((name, mk(empty)?));
                    }
                }
            }
        }
        let id = self.info.id.clone();
        let run_err = |e: ort::Error| BackendError::run(&id, phase, e);
        let expect = [1, s as i64, c.vocab_size as i64];
        match &self.bound {
            None => {
                let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = inputs
                    .into_iter()
                    .map(|(n, v)| (Cow::Owned(n), SessionInputValue::from(v)))
                    .collect();
                let mut outputs = self.session.run(inputs).map_err(run_err)?;
                take_outputs(&mut outputs, &id, phase, expect, n_layers)
            }
            Some(bound) => {
                let mut binding = self.session.create_binding().map_err(run_err)?;
                for (name, value) in &inputs {
                    binding.bind_input(name.as_str(), value).map_err(run_err)?;
                }
                binding
                    .bind_output_to_device("logits", &bound.host)
                    .map_err(run_err)?;
                for i in 0..n_layers {
                    for name in [present_key_name(i), present_value_name(i)] {
                        binding
                            .bind_output_to_device(name, &bound.cache)
                            .map_err(run_err)?;
                    }
                }
                let mut outputs = self.session.run_binding(&binding).map_err(run_err)?;
                take_outputs(&mut outputs, &id, phase, expect, n_layers)
            }
        }
    }

    fn last_argmax(&self, logits: &[f32]) -> u32 {
        let v = self.config.vocab_size;
        let last = &logits[logits.len() - v..];
        argmax(ndarray::ArrayView1::from(last)) as u32
    }

    fn collect_evidence(&mut self) -> Result<Evidence, BackendError> {
        let id = self.info.id.clone();
        let err = |e: String| BackendError::run(&id, "evidence", e);
        self.forward(&[1, 2, 3, 4], 0, None, "evidence")?;
        let profile = self
            .session
            .end_profiling()
            .map_err(|e| err(e.to_string()))?;
        let setup = self.evidence_setup.as_ref().expect("checked by the caller");
        let profile_text = std::fs::read_to_string(&profile)
            .or_else(|_| std::fs::read_to_string(setup.dir.path().join(&profile)))
            .map_err(|e| err(format!("cannot read the profile {profile}: {e}")))?;
        let (executed_on, compute_executed_on) = parse_profile(&profile_text).map_err(err)?;
        let exported = graph_op_histogram(&setup.exported_model)
            .ok_or_else(|| err("cannot read the exported graph".into()))?;
        let optimized_path = setup.dir.path().join("optimized.onnx");
        let graph_optimization =
            graph_op_histogram(&optimized_path).map(|optimized| GraphOptimization {
                level_requested: format!("{:?}", setup.opt_level).to_lowercase(),
                exported_nodes: exported.values().sum(),
                optimized_nodes: optimized.values().sum(),
                fused_ops: optimized
                    .into_iter()
                    .filter(|(op, _)| !exported.contains_key(op))
                    .collect(),
            });
        let mut notes = Vec::new();
        if graph_optimization.is_none() {
            notes.push(format!(
                "no optimized graph was written to {}",
                optimized_path.display()
            ));
        }
        Ok(Evidence {
            requested: setup.requested.clone(),
            runtime_providers: runtime_providers(),
            executed_on,
            compute_executed_on,
            output_dtypes: Default::default(),
            graph_optimization,
            cuda_graph: None,
            notes,
        })
    }

    /// Greedy tokens by recomputing the whole sequence at every step (no cache).
    pub fn generate_full_recompute(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Vec<u32>, BackendError> {
        let mut seq = prompt.to_vec();
        let mut out = Vec::with_capacity(gen_tokens);
        for _ in 0..gen_tokens {
            let (logits, _) = self.forward(&seq, 0, None, "full_recompute")?;
            let next = self.last_argmax(&logits);
            out.push(next);
            seq.push(next);
        }
        Ok(out)
    }
}

impl Backend for OrtBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        if prompt.is_empty() || gen_tokens == 0 {
            return Err(self.err("generate", "prompt and gen_tokens must be non-empty"));
        }
        if let Some((_, max_shapes)) = &self.tensorrt {
            let total = prompt.len() + gen_tokens;
            for (input, len) in [("input_ids", prompt.len()), ("attention_mask", total)] {
                if !profile_covers(max_shapes, input, len) {
                    return Err(BackendError::Invariant {
                        backend: self.info.id.clone(),
                        detail: format!("profile_mismatch: {input} needs length {len}, the TensorRT profile's max shapes are `{max_shapes}`"),
                    });
                }
            }
        }
        // Test-only planted slowdown (a no-op unless the backend was opened with one): see
        // baseline::slowdown.
        use crate::baseline::slowdown::Phase;
        let stretch = self.stretch.clone();
        let start = Instant::now();
        let (logits, mut cache) = self.forward(prompt, 0, None, "prefill")?;
        stretch.apply(Phase::Prefill, start);
        let mut next = self.last_argmax(&logits);
        let prefill_done = Instant::now();
        let mut tokens = vec![next];
        for step in 1..gen_tokens {
            let past_len = prompt.len() + step - 1;
            let step_start = Instant::now();
            let (logits, new_cache) = self.forward(&[next], past_len, Some(cache), "decode")?;
            stretch.apply(Phase::Decode, step_start);
            cache = new_cache;
            next = self.last_argmax(&logits);
            tokens.push(next);
        }
        let end = Instant::now();
        if let Some((cache, _)) = &self.tensorrt {
            let engines = std::fs::read_dir(cache)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.path().extension().is_some_and(|x| x == "engine"))
                        .count()
                })
                .unwrap_or(0);
            if engines == 0 {
                return Err(BackendError::Invariant {
                    backend: self.info.id.clone(),
                    detail: format!(
                        "TensorRT built no engine: {} holds no .engine file",
                        cache.display()
                    ),
                });
            }
        }
        Ok(Generation::harness_timed(
            prompt.len(),
            tokens,
            start,
            prefill_done,
            end,
        ))
    }

    fn loaded_parameter_count(&self) -> Option<u64> {
        self.loaded_parameters
    }

    fn memory_traffic(&self) -> Option<MemoryTraffic> {
        self.memory_traffic
    }

    fn full_recompute_tokens(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<super::Recompute, BackendError> {
        self.generate_full_recompute(prompt, gen_tokens)
            .map(super::Recompute::Tokens)
    }

    /// Runs one short forward, ends profiling and reads back where every node ran and what the
    /// optimizer wrote. Only for sessions opened with `collect_evidence`.
    fn evidence(&mut self) -> Option<Result<Evidence, BackendError>> {
        self.evidence_setup.as_ref()?;
        Some(self.collect_evidence())
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Array2<f32>, BackendError> {
        let (logits, _) = self.forward(tokens, 0, None, "logits")?;
        Array2::from_shape_vec((tokens.len(), self.config.vocab_size), logits)
            .map_err(|e| self.err("logits", e))
    }
}

/// The logits (host memory) and the new cache from a run's outputs.
fn take_outputs(
    outputs: &mut ort::session::SessionOutputs<'_>,
    id: &str,
    phase: &str,
    expect: [i64; 3],
    n_layers: usize,
) -> Result<(Vec<f32>, Vec<DynValue>), BackendError> {
    let run_err = |e: ort::Error| BackendError::run(id, phase, e);
    let logits = outputs
        .remove("logits")
        .ok_or_else(|| BackendError::run(id, phase, "no `logits` output"))?;
    let (shape, data) = logits.try_extract_tensor::<f32>().map_err(run_err)?;
    if **shape != expect {
        return Err(BackendError::Invariant {
            backend: id.into(),
            detail: format!("logits shape {:?}, expected {expect:?}", &**shape),
        });
    }
    let logits = data.to_vec();
    let mut cache = Vec::with_capacity(2 * n_layers);
    for i in 0..n_layers {
        for name in [present_key_name(i), present_value_name(i)] {
            cache.push(
                outputs
                    .remove(&name)
                    .ok_or_else(|| BackendError::run(id, phase, format!("no `{name}` output")))?,
            );
        }
    }
    Ok((logits, cache))
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

/// Node counts per provider from an ONNX Runtime profile (JSON array of trace events; node events
/// have `cat = "Node"` and `args.provider`, `args.op_name`): all nodes, and heavy compute nodes.
#[allow(clippy::type_complexity)]
pub fn parse_profile(
    text: &str,
) -> Result<(BTreeMap<String, usize>, BTreeMap<String, usize>), String> {
    let events: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("profile is not a JSON event array: {e}"))?;
    let mut seen = std::collections::BTreeSet::new();
    let (mut all, mut compute) = (BTreeMap::new(), BTreeMap::new());
    for e in &events {
        if e["cat"] != "Node" {
            continue;
        }
        let (Some(name), Some(provider)) = (e["name"].as_str(), e["args"]["provider"].as_str())
        else {
            continue;
        };
        let node = name
            .trim_end_matches("_kernel_time")
            .trim_end_matches("_fence_before")
            .trim_end_matches("_fence_after");
        if !seen.insert(node.to_string()) {
            continue;
        }
        *all.entry(provider.to_string()).or_insert(0) += 1;
        if e["args"]["op_name"].as_str().is_some_and(is_compute_op) {
            *compute.entry(provider.to_string()).or_insert(0) += 1;
        }
    }
    if all.is_empty() {
        return Err("the profile holds no node events".into());
    }
    Ok((all, compute))
}

/// Op type → count of an ONNX file's graph (weights are external, so this reads only the graph).
pub fn graph_op_histogram(path: &Path) -> Option<BTreeMap<String, usize>> {
    use prost::Message;
    let bytes = std::fs::read(path).ok()?;
    let graph = crate::onnx_proto::ModelProto::decode(bytes.as_slice())
        .ok()?
        .graph?;
    let mut h = BTreeMap::new();
    for n in &graph.node {
        *h.entry(n.op_type.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    Some(h)
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

    #[test]
    fn profile_events_are_counted_per_provider_once_per_node() {
        let text = r#"[
            {"cat":"Session","name":"model_run","args":{}},
            {"cat":"Node","name":"MatMul_1_kernel_time","args":{"op_name":"MatMul","provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"MatMul_1_kernel_time","args":{"op_name":"MatMul","provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"Shape_2_kernel_time","args":{"op_name":"Shape","provider":"CPUExecutionProvider"}}
        ]"#;
        let (all, compute) = parse_profile(text).unwrap();
        assert_eq!(all["CUDAExecutionProvider"], 1);
        assert_eq!(all["CPUExecutionProvider"], 1);
        assert_eq!(compute.get("CPUExecutionProvider"), None);
        assert!(parse_profile("[]").is_err());
    }
}
