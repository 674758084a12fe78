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

use super::{Backend, BackendInfo, Generation, TimingSource};
use crate::error::BackendError;
use crate::model::onnx_export::{past_key_name, past_value_name, present_key_name, present_value_name};
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
        .map_err(|reason| BackendError::Unavailable { backend: "onnxruntime".into(), reason: reason.clone() })
}

fn load_runtime() -> Result<OrtRuntime, String> {
    let library_path = crate::assets::ensure(&crate::assets::ONNXRUNTIME).map_err(|e| {
        format!("libonnxruntime not found: {e}\n  fix: run `infergate fetch` with PyPI reachable, or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1")
    })?;
    let version = library_version(&library_path)?;
    let builder = ort::init_from(&library_path).map_err(|e| {
        format!("cannot load ONNX Runtime from {}: {e}\n  fix: set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 (this build uses ort's api-31)", library_path.display())
    })?;
    let environment = builder.with_name("infergate").build().map_err(|e| format!("ONNX Runtime environment: {e}"))?;
    Ok(OrtRuntime { library_path, version, build_info: ort::info().to_string(), environment })
}

/// Ask the library itself for its version; does not depend on the file name.
fn library_version(path: &Path) -> Result<String, String> {
    #[repr(C)]
    struct OrtApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
        get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
    }
    // SAFETY: loading the ONNX Runtime shared library runs its initializers, which is what ort does too.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot dlopen {}: {e}", path.display()))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (onnxruntime_c_api.h).
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }.map_err(|e| format!("{} is not ONNX Runtime: {e}", path.display()))?;
    // SAFETY: the base struct is static in the library; GetVersionString returns a static C string.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        std::ffi::CStr::from_ptr(((*base).get_version_string)()).to_string_lossy().into_owned()
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
    /// Write the optimized graph here (evidence that optimization happened).
    pub optimized_model_path: Option<PathBuf>,
}

pub struct OrtBackend {
    info: BackendInfo,
    session: Session,
    config: LlamaConfig,
    loaded_parameters: Option<u64>,
}

/// Parameters in the weights of the graph the session loaded: plain weight initializers
/// (`model.*`, `lm_head.*`) by element count, `MatMulNBits` weights by their `N·K` attributes; a
/// quantized copy of a tied head (`*tied_to*`) is the embedding again and is not counted twice.
pub fn onnx_weight_parameter_count(model_path: &Path) -> Option<u64> {
    use prost::Message;
    let bytes = std::fs::read(model_path).ok()?;
    let graph = crate::onnx_proto::ModelProto::decode(bytes.as_slice()).ok()?.graph?;
    let mut quantized_inputs = std::collections::HashSet::new();
    let mut count = 0u64;
    for node in graph.node.iter().filter(|n| n.op_type.as_deref() == Some("MatMulNBits")) {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.i);
        quantized_inputs.extend(node.input.iter().cloned());
        if !node.input.first().is_some_and(|_| node.input.get(1).is_some_and(|b| b.contains("tied_to"))) {
            count += (attr("N")? * attr("K")?).max(0) as u64;
        }
    }
    count += graph
        .initializer
        .iter()
        .filter(|t| t.name.as_deref().is_some_and(|n| (n.starts_with("model.") || n.starts_with("lm_head.")) && !quantized_inputs.contains(n)))
        .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
        .sum::<u64>();
    Some(count)
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl OrtOptions {
    pub fn cpu(id: &str, model_path: PathBuf, config: LlamaConfig, precision: &str, opt_level: OptLevel) -> Self {
        OrtOptions { id: id.into(), model_path, config, precision: precision.into(), opt_level, intra_threads: default_threads(), optimized_model_path: None }
    }
}

impl OrtBackend {
    pub fn open(options: OrtOptions) -> Result<Self, BackendError> {
        let rt = runtime()?;
        let id = options.id.clone();
        let load = |e: ort::Error| BackendError::load(&id, format!("{} ({e})", options.model_path.display()));
        if !options.model_path.exists() {
            return Err(BackendError::load(&id, format!("model file {} does not exist", options.model_path.display())));
        }
        let mut builder = Session::builder(&rt.environment)
            .map_err(load)?
            .with_optimization_level(options.opt_level.to_ort())
            .map_err(|e| load(e.into()))?
            .with_intra_threads(options.intra_threads)
            .map_err(|e| load(e.into()))?;
        if let Some(p) = &options.optimized_model_path {
            builder = builder.with_optimized_model_path(p).map_err(|e| load(e.into()))?;
        }
        let session = builder.commit_from_file(&options.model_path).map_err(load)?;
        let info = BackendInfo {
            id: options.id.clone(),
            engine: "onnxruntime".into(),
            engine_version: rt.version.clone(),
            location: rt.library_path.display().to_string(),
            device: "cpu".into(),
            precision: options.precision.clone(),
        };
        let loaded_parameters = onnx_weight_parameter_count(&options.model_path);
        Ok(OrtBackend { info, session, config: options.config, loaded_parameters })
    }

    fn err(&self, phase: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::run(&self.info.id, phase, e)
    }

    /// One forward: `tokens` at positions `past_len..`, with `past` (None = empty cache).
    /// Returns logits of every position `[tokens.len(), vocab]` and the new cache.
    fn forward(&mut self, tokens: &[u32], past_len: usize, past: Option<Vec<DynValue>>, phase: &str) -> Result<(Vec<f32>, Vec<DynValue>), BackendError> {
        let c = &self.config;
        let (n_layers, n_kv, hd) = (c.n_layers, c.n_kv_heads, c.head_dim());
        let s = tokens.len();
        let total = past_len + s;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(3 + 2 * n_layers);
        let tensor_i64 = |shape: [usize; 2], v: Vec<i64>| Tensor::from_array((shape, v)).map(|t| SessionInputValue::from(t.into_dyn()));
        let mk = |r: Result<SessionInputValue<'static>, ort::Error>| r.map_err(|e| BackendError::run(&self.info.id, phase, e));
        inputs.push(("input_ids".into(), mk(tensor_i64([1, s], ids))?));
        inputs.push(("attention_mask".into(), mk(tensor_i64([1, total], vec![1; total]))?));
        inputs.push(("position_ids".into(), mk(tensor_i64([1, s], (past_len as i64..total as i64).collect()))?));
        match past {
            Some(values) => {
                if values.len() != 2 * n_layers {
                    return Err(self.err(phase, format!("cache has {} tensors, expected {}", values.len(), 2 * n_layers)));
                }
                for (i, v) in values.into_iter().enumerate() {
                    let name = if i % 2 == 0 { past_key_name(i / 2) } else { past_value_name(i / 2) };
                    inputs.push((name.into(), SessionInputValue::from(v)));
                }
            }
            None => {
                let fp16 = self.info.precision == "fp16";
                for i in 0..n_layers {
                    for name in [past_key_name(i), past_value_name(i)] {
                        let shape = [1usize, n_kv, 0, hd];
                        let empty = if fp16 {
                            Tensor::<half::f16>::from_array((shape, Vec::new())).map(|t| SessionInputValue::from(t.into_dyn()))
                        } else {
                            Tensor::<f32>::from_array((shape, Vec::new())).map(|t| SessionInputValue::from(t.into_dyn()))
                        };
                        inputs.push((name.into(), mk(empty)?));
                    }
                }
            }
        }
        let id = self.info.id.clone();
        let run_err = |e: ort::Error| BackendError::run(&id, phase, e);
        let mut outputs = self.session.run(inputs).map_err(run_err)?;
        let logits = outputs.remove("logits").ok_or_else(|| BackendError::run(&id, phase, "no `logits` output"))?;
        let (shape, data) = logits.try_extract_tensor::<f32>().map_err(run_err)?;
        let expect = [1, s as i64, c.vocab_size as i64];
        if **shape != expect {
            return Err(BackendError::Invariant { backend: id, detail: format!("logits shape {:?}, expected {expect:?}", &**shape) });
        }
        let logits = data.to_vec();
        let mut cache = Vec::with_capacity(2 * n_layers);
        for i in 0..n_layers {
            for name in [present_key_name(i), present_value_name(i)] {
                cache.push(outputs.remove(&name).ok_or_else(|| BackendError::run(&id, phase, format!("no `{name}` output")))?);
            }
        }
        Ok((logits, cache))
    }

    fn last_argmax(&self, logits: &[f32]) -> u32 {
        let v = self.config.vocab_size;
        let last = &logits[logits.len() - v..];
        argmax(ndarray::ArrayView1::from(last)) as u32
    }

    /// Greedy tokens by recomputing the whole sequence at every step (no cache).
    pub fn generate_full_recompute(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Vec<u32>, BackendError> {
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
        // Test-only planted slowdown (INFERGATE_TEST_SLOWDOWN; a no-op unless set): see baseline::slowdown.
        let stretch = crate::baseline::slowdown::Stretch::from_env().map_err(|e| self.err("generate", e))?;
        let start = Instant::now();
        let (logits, mut cache) = self.forward(prompt, 0, None, "prefill")?;
        stretch.apply(start);
        let mut next = self.last_argmax(&logits);
        let prefill_done = Instant::now();
        let mut tokens = vec![next];
        for step in 1..gen_tokens {
            let past_len = prompt.len() + step - 1;
            let step_start = Instant::now();
            let (logits, new_cache) = self.forward(&[next], past_len, Some(cache), "decode")?;
            stretch.apply(step_start);
            cache = new_cache;
            next = self.last_argmax(&logits);
            tokens.push(next);
        }
        let end = Instant::now();
        Ok(Generation {
            prompt_tokens: prompt.len(),
            tokens,
            prefill_ms: ms(prefill_done - start),
            decode_ms: ms(end - prefill_done),
            e2e_ms: ms(end - start),
            decode_steps: gen_tokens - 1,
            timing_source: TimingSource::Harness,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            projection: None,
        })
    }

    fn loaded_parameter_count(&self) -> Option<u64> {
        self.loaded_parameters
    }

    fn full_recompute_tokens(&mut self, prompt: &[u32], gen_tokens: usize) -> Option<Result<Vec<u32>, BackendError>> {
        Some(self.generate_full_recompute(prompt, gen_tokens))
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Array2<f32>, BackendError> {
        let (logits, _) = self.forward(tokens, 0, None, "logits")?;
        Array2::from_shape_vec((tokens.len(), self.config.vocab_size), logits).map_err(|e| self.err("logits", e))
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
