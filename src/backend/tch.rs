//! libtorch backend (crate `tch` 0.24 / libtorch 2.11.0): a native LLaMA forward with a KV cache,
//! built from [`LlamaWeights`]; fp32 on CPU, fp32/bf16/fp16 on CUDA.
//!
//! The forward is hand-written because no crate runs a LLaMA on libtorch from our own weights (tch
//! has no model zoo for it; candle and burn are different engines). Semantics are those of
//! [`crate::model::reference::forward`]: RMSNorm, rotate-half RoPE, GQA, SiLU-gated MLP, tied head.
//! Q/K/V and gate/up projections are fused into one matrix each (same numbers, fewer kernels).
//!
//! Loading libtorch: `libtorch_cpu.so` is linked (rpath from `build.rs`; elsewhere `LD_LIBRARY_PATH`).
//! `libtorch_cuda.so` is not linked (the setup script's CPU tree leaves it out, and `--as-needed`
//! would drop it anyway), so [`runtime`] dlopens it with `RTLD_NOW | RTLD_GLOBAL` *before the first
//! tch call*; a tch call before that caches "no CUDA" for the life of the process. Every function
//! here goes through [`runtime`] first, and every tensor operation uses tch's fallible `f_*` form
//! (the plain forms panic, e.g. on a device that is not there).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{Backend, BackendInfo, Generation, MemoryTraffic};
use crate::error::BackendError;
use crate::model::{LlamaConfig, LlamaWeights};

pub mod cuda_graph;
mod static_decode;
pub use static_decode::{static_len, DecodeMode, GraphEvidence};

/// The libtorch version `tch =0.24.0` is built against.
pub const EXPECTED_LIBTORCH: &str = "2.11.0";

/// Environment variable naming a `libtorch_cuda.so` to load instead of searching for one.
pub const LIBTORCH_CUDA_ENV: &str = "INFERGATE_LIBTORCH_CUDA";

/// What fixes a missing CUDA runtime, for messages.
pub const CUDA_FIX: &str = "on a CUDA machine, put libtorch_cuda.so (torch 2.11.0) next to libtorch_cpu.so or on \
LD_LIBRARY_PATH (e.g. LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib), or set \
INFERGATE_LIBTORCH_CUDA=/path/to/libtorch_cuda.so";

// ---------------------------------------------------------------------------------------------
// Runtime: what libtorch this process actually loaded, and whether CUDA is really there.
// ---------------------------------------------------------------------------------------------

/// Whether `libtorch_cuda.so` was loaded at start-up, from where, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibtorchCuda {
    pub loaded: bool,
    pub path: Option<PathBuf>,
    /// "loaded from …", or every attempt and its error.
    pub reason: String,
}

/// The libtorch runtime of this process (one per process, see [`runtime`]).
#[derive(Debug, Clone, Serialize)]
pub struct TchRuntime {
    /// The `libtorch_cpu.so` mapped into this process (from `/proc/self/maps`).
    pub libtorch_path: Option<PathBuf>,
    /// Read next to the loaded library: `build-version` (a libtorch tree) or `version.py` (a torch wheel).
    pub libtorch_version: String,
    /// The lib dir `build.rs` put into the rpath (feature `torch`), if any.
    pub build_lib_dir: Option<String>,
    pub libtorch_cuda: LibtorchCuda,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    /// `at::globalContext().versionCUDART()`, only asked when libtorch_cuda is loaded (it throws otherwise).
    pub cudart_version: Option<i64>,
    /// libtorch intra-op threads after start-up.
    pub threads: i64,
    /// `OMP_WAIT_POLICY` as libgomp read it at process start: with the default (spinning), CPU timings
    /// on a shared, oversubscribed machine are several times slower; `passive` avoids that.
    pub omp_wait_policy: Option<String>,
    /// Queries that returned an error instead of a value.
    pub query_errors: Vec<String>,
}

impl TchRuntime {
    /// Why the CUDA backends cannot run here, or `None` when they can.
    pub fn cuda_unavailable_reason(&self) -> Option<String> {
        if self.cuda_available {
            return None;
        }
        Some(if !self.libtorch_cuda.loaded {
            format!("libtorch_cuda not loaded: {}", self.libtorch_cuda.reason)
        } else if self.cuda_device_count <= 0 {
            let path = self
                .libtorch_cuda
                .path
                .as_ref()
                .map_or_else(|| "?".into(), |p| p.display().to_string());
            format!("libtorch_cuda loaded from {path}, but no CUDA device is visible (no driver, or CUDA_VISIBLE_DEVICES hides them)")
        } else {
            format!(
                "torch::cuda::is_available() is false with {} device(s): {}",
                self.cuda_device_count,
                self.query_errors.join("; ")
            )
        })
    }
}

static RUNTIME: OnceLock<TchRuntime> = OnceLock::new();

/// Start libtorch once: dlopen libtorch_cuda (before any other tch call), then ask what is available.
pub fn runtime() -> &'static TchRuntime {
    RUNTIME.get_or_init(start_runtime)
}

fn start_runtime() -> TchRuntime {
    let libtorch_path = mapped_library("libtorch_cpu.so");
    let libtorch_cuda = load_libtorch_cuda(libtorch_path.as_deref());
    let libtorch_version = libtorch_path.as_deref().and_then(version_next_to).unwrap_or_else(|| {
        format!("unknown (tch 0.24.0 is built for {EXPECTED_LIBTORCH}; no build-version or version.py next to libtorch_cpu.so)")
    });
    let mut errors = Vec::new();
    let mut ask = |what: &str, r: Result<i64, String>| -> i64 {
        r.unwrap_or_else(|e| {
            errors.push(format!("{what}: {e}"));
            0
        })
    };
    // SAFETY (all torch_sys calls here): plain C functions of libtch with no arguments or a plain
    // integer; errors are C++ exceptions caught by libtch and returned by `checked`.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    ask(
        "at_set_num_threads",
        checked(|| unsafe { torch_sys::at_set_num_threads(threads) }).map(|_| 0),
    );
    let threads = ask(
        "at_get_num_threads",
        checked(|| unsafe { torch_sys::at_get_num_threads() } as i64),
    );
    let cuda_device_count = ask(
        "cuda device_count",
        checked(|| unsafe { torch_sys::cuda::atc_cuda_device_count() } as i64),
    );
    let cuda_available = ask(
        "cuda is_available",
        checked(|| unsafe { torch_sys::cuda::atc_cuda_is_available() } as i64),
    ) > 0;
    let cudnn_available = ask(
        "cudnn is_available",
        checked(|| unsafe { torch_sys::cuda::atc_cudnn_is_available() } as i64),
    ) > 0;
    let cudart_version = if libtorch_cuda.loaded {
        Some(ask(
            "versionCUDART",
            checked(|| unsafe { torch_sys::at_context_version_cudart() }),
        ))
    } else {
        None
    };
    TchRuntime {
        libtorch_path,
        libtorch_version,
        build_lib_dir: option_env!("INFERGATE_LIBTORCH_LIB").map(str::to_string),
        libtorch_cuda,
        cuda_available,
        cuda_device_count,
        cudnn_available,
        cudart_version,
        threads,
        omp_wait_policy: std::env::var("OMP_WAIT_POLICY").ok(),
        query_errors: errors,
    }
}

/// Call a libtch C function and collect the error it recorded (libtch catches C++ exceptions into a
/// thread-local string; tch's own wrappers `unwrap` it, i.e. panic).
fn checked<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let value = f();
    // SAFETY: returns the thread-local error string (strdup'ed) or null; ownership passes to us.
    let err = unsafe { torch_sys::get_and_reset_last_err() };
    if err.is_null() {
        return Ok(value);
    }
    // SAFETY: non-null, NUL-terminated, allocated with malloc by strdup.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { libc::free(err.cast()) };
    Err(msg)
}

/// Path of a shared library mapped into this process, by file name.
fn mapped_library(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|n| n == file_name))
        .map(PathBuf::from)
}

/// The torch version recorded next to `libtorch_cpu.so`: `../build-version` in a libtorch tree,
/// `../version.py` (`__version__ = '…'`) inside a torch wheel.
fn version_next_to(lib: &Path) -> Option<String> {
    let root = lib.parent()?.parent()?;
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return Some(v.trim().to_string());
    }
    let py = std::fs::read_to_string(root.join("version.py")).ok()?;
    py.lines().find_map(|l| {
        let rest = l
            .strip_prefix("__version__")?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        Some(rest.trim_matches(|c| c == '\'' || c == '"').to_string())
    })
}

fn load_libtorch_cuda(libtorch_cpu: Option<&Path>) -> LibtorchCuda {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(LIBTORCH_CUDA_ENV).filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    } else {
        if let Some(dir) = libtorch_cpu.and_then(Path::parent) {
            candidates.push(dir.join("libtorch_cuda.so"));
        }
        candidates.push(PathBuf::from("libtorch_cuda.so")); // LD_LIBRARY_PATH, RUNPATH, ld.so.cache
    }
    let mut attempts = Vec::new();
    for candidate in candidates {
        if candidate.components().count() > 1 && !candidate.exists() {
            attempts.push(format!("{} does not exist", candidate.display()));
            continue;
        }
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        // SAFETY: loading libtorch_cuda runs its static initializers, which register the CUDA hooks
        // with the already-loaded libtorch_cpu; that is the purpose. It is never unloaded.
        match unsafe { libloading::os::unix::Library::open(Some(&candidate), flags) } {
            Ok(lib) => {
                std::mem::forget(lib);
                let path = mapped_library("libtorch_cuda.so").unwrap_or(candidate);
                return LibtorchCuda {
                    loaded: true,
                    reason: format!("loaded from {}", path.display()),
                    path: Some(path),
                };
            }
            Err(e) => attempts.push(format!("dlopen({}): {e}", candidate.display())),
        }
    }
    let tree = if libtorch_cpu.is_some_and(|p| {
        p.parent()
            .is_some_and(|d| d.join("../build-version").exists())
    }) {
        " (the CPU tree from scripts/setup-libtorch.sh has no libtorch_cuda.so by design)"
    } else {
        ""
    };
    LibtorchCuda {
        loaded: false,
        path: None,
        reason: format!("{}{tree}", attempts.join("; ")),
    }
}

/// Device copy bandwidth measured with libtorch: one `copy_` of `bytes` between two device buffers,
/// timed over `reps` after a warm-up; bytes moved count both the read and the write (as
/// `cudaMemcpy` bandwidth tests do). The memory-bandwidth roofline of a decode is the weight bytes
/// a token reads divided by this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyBandwidth {
    pub device: String,
    pub bytes: u64,
    pub reps: usize,
    /// Median over `reps` of (2 × bytes) / seconds, in GB/s (10⁹ bytes).
    pub gb_per_s_median: f64,
    pub gb_per_s_max: f64,
}

/// See [`CopyBandwidth`]. `bytes` should be several times the last-level cache (≥ 1 GB on a GPU).
pub fn copy_bandwidth(device: TchDevice, bytes: u64, reps: usize) -> Result<CopyBandwidth, String> {
    let rt = runtime();
    if let (TchDevice::Cuda(_), Some(reason)) = (device, rt.cuda_unavailable_reason()) {
        return Err(reason);
    }
    let d = device.to_tch();
    let n = (bytes / 4) as i64;
    let sync = || -> Result<(), String> {
        if let Device::Cuda(i) = d {
            // SAFETY: plain C call with a device index that exists (checked above).
            checked(|| unsafe { torch_sys::cuda::atc_synchronize(i as i64) })?;
        }
        Ok(())
    };
    let (src, mut dst) = tch::no_grad(|| -> TchResult<(Tensor, Tensor)> {
        Ok((
            Tensor::f_ones([n], (Kind::Float, d))?,
            Tensor::f_zeros([n], (Kind::Float, d))?,
        ))
    })
    .map_err(|e| e.to_string())?;
    dst.f_copy_(&src).map_err(|e| e.to_string())?;
    sync()?;
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        dst.f_copy_(&src).map_err(|e| e.to_string())?;
        sync()?;
        rates.push(2.0 * (n as f64 * 4.0) / t.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    Ok(CopyBandwidth {
        device: device.label(),
        bytes: n as u64 * 4,
        reps: rates.len(),
        gb_per_s_median: rates[rates.len() / 2],
        gb_per_s_max: rates[rates.len() - 1],
    })
}

// ---------------------------------------------------------------------------------------------
// Options, evidence
// ---------------------------------------------------------------------------------------------

/// Precision of weights and activations (RMSNorm statistics are always taken in fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TchDtype {
    Fp32,
    Bf16,
    Fp16,
}

impl TchDtype {
    pub fn label(self) -> &'static str {
        match self {
            TchDtype::Fp32 => "fp32",
            TchDtype::Bf16 => "bf16",
            TchDtype::Fp16 => "fp16",
        }
    }
    pub fn kind(self) -> Kind {
        match self {
            TchDtype::Fp32 => Kind::Float,
            TchDtype::Bf16 => Kind::BFloat16,
            TchDtype::Fp16 => Kind::Half,
        }
    }
}

/// Where the computation is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TchDevice {
    Cpu,
    Cuda(usize),
}

impl TchDevice {
    pub fn label(self) -> String {
        device_label(self.to_tch())
    }
    fn to_tch(self) -> Device {
        match self {
            TchDevice::Cpu => Device::Cpu,
            TchDevice::Cuda(i) => Device::Cuda(i),
        }
    }
}

fn device_label(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn kind_label(k: Kind) -> String {
    match k {
        Kind::Float => "fp32".into(),
        Kind::BFloat16 => "bf16".into(),
        Kind::Half => "fp16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// How to open a libtorch backend.
#[derive(Debug, Clone, PartialEq)]
pub struct TchOptions {
    /// Backend id in trial names (`tch-cpu`, `tch-cuda-bf16` …).
    pub id: String,
    pub device: TchDevice,
    pub dtype: TchDtype,
    /// How the decode loop runs (eager unless a `*-static`/`*-graph` id asks otherwise).
    pub decode: DecodeMode,
}

impl TchOptions {
    pub fn new(id: &str, device: TchDevice, dtype: TchDtype) -> Self {
        TchOptions {
            id: id.into(),
            device,
            dtype,
            decode: DecodeMode::Eager,
        }
    }

    pub fn with_decode(mut self, decode: DecodeMode) -> Self {
        self.decode = decode;
        self
    }
}

/// Device and dtype of tensors, with how many were seen (outputs) or how many elements (weights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub device: String,
    pub dtype: String,
    pub count: u64,
}

/// What the run really did, for the compile-is-real gate: a `cuda`/`bf16` label passes only if the
/// tensors were there and of that type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TchEvidence {
    pub backend_id: String,
    pub requested_device: String,
    pub requested_dtype: String,
    pub libtorch_path: Option<String>,
    pub libtorch_version: String,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub libtorch_cuda_loaded: bool,
    pub libtorch_cuda_path: Option<String>,
    /// "loaded from …", or why not.
    pub libtorch_cuda_reason: String,
    pub cudnn_available: bool,
    /// How the decode loop runs (`eager`, `static`, `cuda_graph`).
    pub decode_mode: String,
    /// The captured decode step and its replays (CUDA-graph mode, once a generation ran).
    pub graph: Option<GraphEvidence>,
    /// Loaded weight tensors: device, dtype, number of elements.
    pub weights: Vec<Placement>,
    /// Every output tensor of a forward (the logits as computed, before the fp32 host copy):
    /// device, dtype, number of tensors.
    pub outputs: Vec<Placement>,
}

impl TchEvidence {
    /// True when at least one output was seen and every output and weight is on `device` in `dtype`.
    pub fn all_on(&self, device: &str, dtype: &str) -> bool {
        let ok = |p: &Placement| p.device == device && p.dtype == dtype;
        !self.outputs.is_empty() && self.outputs.iter().all(ok) && self.weights.iter().all(ok)
    }
}

#[derive(Debug, Default)]
struct Tally(BTreeMap<(String, String), u64>);

impl Tally {
    fn add(&mut self, t: &Tensor, amount: u64) {
        let kind = t
            .f_kind()
            .map(kind_label)
            .unwrap_or_else(|e| format!("unknown ({e})"));
        *self.0.entry((device_label(t.device()), kind)).or_default() += amount;
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
    fn to_vec(&self) -> Vec<Placement> {
        self.0
            .iter()
            .map(|((device, dtype), &count)| Placement {
                device: device.clone(),
                dtype: dtype.clone(),
                count,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

struct Layer {
    attn_norm: Tensor,
    /// `[d + 2 kv, d]`: Q rows, then K, then V.
    wqkv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    /// `[2 ffn, d]`: gate rows, then up.
    w_gate_up: Tensor,
    w_down: Tensor,
}

/// The model's tensors on the device, in the model dtype.
struct Weights {
    embed: Tensor,
    layers: Vec<Layer>,
    final_norm: Tensor,
    /// `None` when tied to `embed`.
    lm_head: Option<Tensor>,
}

impl Weights {
    /// Convert each matrix once (fusing Q/K/V and gate/up), tallying device, dtype and elements.
    fn upload(w: &LlamaWeights, device: Device, kind: Kind, seen: &mut Tally) -> TchResult<Self> {
        let mut put = |host: Tensor| -> TchResult<Tensor> {
            let t = host.f_to_kind(kind)?.f_to_device(device)?;
            seen.add(&t, t.size().iter().product::<i64>() as u64);
            Ok(t)
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let wqkv = Tensor::f_cat(&[matrix(&l.wq)?, matrix(&l.wk)?, matrix(&l.wv)?], 0)?;
            let w_gate_up = Tensor::f_cat(&[matrix(&l.w_gate)?, matrix(&l.w_up)?], 0)?;
            layers.push(Layer {
                attn_norm: put(vector(&l.attn_norm)?)?,
                wqkv: put(wqkv)?,
                wo: put(matrix(&l.wo)?)?,
                ffn_norm: put(vector(&l.ffn_norm)?)?,
                w_gate_up: put(w_gate_up)?,
                w_down: put(matrix(&l.w_down)?)?,
            });
        }
        Ok(Weights {
            embed: put(matrix(&w.token_embd)?)?,
            layers,
            final_norm: put(vector(&w.final_norm)?)?,
            lm_head: w
                .lm_head
                .as_ref()
                .map(|m| matrix(m).and_then(&mut put))
                .transpose()?,
        })
    }

    fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Per-layer K and V, `[n_kv, capacity, head_dim]`.
struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    capacity: i64,
}

pub struct TchBackend {
    info: BackendInfo,
    config: LlamaConfig,
    device: Device,
    kind: Kind,
    weights: Weights,
    /// RoPE tables `[context_length, head_dim / 2]` in the model dtype.
    cos: Tensor,
    sin: Tensor,
    weights_seen: Tally,
    outputs_seen: Tally,
    decode: DecodeMode,
    /// Static decoders by cache length (static and CUDA-graph modes).
    static_decoders: BTreeMap<usize, static_decode::StaticDecoder>,
}

type TchResult<T> = Result<T, tch::TchError>;

impl TchBackend {
    /// Convert `weights` once to `options.dtype` on `options.device`.
    pub fn open(options: TchOptions, weights: &LlamaWeights) -> Result<Self, BackendError> {
        let rt = runtime();
        let id = options.id.clone();
        if let TchDevice::Cuda(index) = options.device {
            if let Some(reason) = rt.cuda_unavailable_reason() {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: format!("{reason}; fix: {CUDA_FIX}"),
                });
            }
            if index as i64 >= rt.cuda_device_count {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: format!(
                        "cuda:{index} requested, {} device(s) visible",
                        rt.cuda_device_count
                    ),
                });
            }
        }
        if options.decode == DecodeMode::CudaGraph {
            if !matches!(options.device, TchDevice::Cuda(_)) {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: "CUDA-graph decoding needs a CUDA device".into(),
                });
            }
            if let Err(reason) = cuda_graph::shim() {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: format!("{reason}; fix: {}", cuda_graph::SHIM_FIX),
                });
            }
        }
        weights.config.validate()?;
        let device = options.device.to_tch();
        let kind = options.dtype.kind();
        let load = |e: tch::TchError| {
            BackendError::load(
                &id,
                format!(
                    "moving weights to {} {}: {e}",
                    options.device.label(),
                    options.dtype.label()
                ),
            )
        };
        let mut weights_seen = Tally::default();
        let on_device = tch::no_grad(|| Weights::upload(weights, device, kind, &mut weights_seen))
            .map_err(load)?;
        let (cos, sin) = rope_tables(&weights.config, device, kind).map_err(load)?;
        let info = BackendInfo {
            id: options.id.clone(),
            engine: "libtorch".into(),
            engine_version: rt.libtorch_version.clone(),
            location: rt
                .libtorch_path
                .as_ref()
                .map_or_else(|| "unknown".into(), |p| p.display().to_string()),
            device: options.device.label(),
            precision: options.dtype.label().into(),
        };
        Ok(TchBackend {
            info,
            config: weights.config.clone(),
            device,
            kind,
            weights: on_device,
            cos,
            sin,
            weights_seen,
            outputs_seen: Tally::default(),
            decode: options.decode,
            static_decoders: BTreeMap::new(),
        })
    }

    /// What this backend's tensors and libtorch's CUDA state really are.
    pub fn tch_evidence(&self) -> TchEvidence {
        let rt = runtime();
        TchEvidence {
            backend_id: self.info.id.clone(),
            requested_device: self.info.device.clone(),
            requested_dtype: self.info.precision.clone(),
            libtorch_path: rt.libtorch_path.as_ref().map(|p| p.display().to_string()),
            libtorch_version: rt.libtorch_version.clone(),
            cuda_available: rt.cuda_available,
            cuda_device_count: rt.cuda_device_count,
            libtorch_cuda_loaded: rt.libtorch_cuda.loaded,
            libtorch_cuda_path: rt
                .libtorch_cuda
                .path
                .as_ref()
                .map(|p| p.display().to_string()),
            libtorch_cuda_reason: rt.libtorch_cuda.reason.clone(),
            cudnn_available: rt.cudnn_available,
            decode_mode: self.decode.label().into(),
            graph: self.graph_evidence(),
            weights: self.weights_seen.to_vec(),
            outputs: self.outputs_seen.to_vec(),
        }
    }

    fn err(&self, phase: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::run(&self.info.id, phase, e)
    }

    /// Wait for the device, so the clock read next covers the work queued so far (CUDA is async).
    fn synchronize(&self, phase: &str) -> Result<(), BackendError> {
        if let Device::Cuda(i) = self.device {
            // SAFETY: plain C call with a device index that `open` checked.
            checked(|| unsafe { torch_sys::cuda::atc_synchronize(i as i64) })
                .map_err(|e| self.err(phase, format!("cuda synchronize: {e}")))?;
        }
        Ok(())
    }

    fn check_tokens(
        &self,
        tokens: &[u32],
        past_len: usize,
        phase: &str,
    ) -> Result<(), BackendError> {
        if tokens.is_empty() {
            return Err(self.err(phase, "no tokens"));
        }
        // Checked on the host: an out-of-range index on CUDA is a device-side assert that poisons the context.
        if let Some(&t) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(self.err(
                phase,
                format!(
                    "token id {t} is outside the vocabulary ({})",
                    self.config.vocab_size
                ),
            ));
        }
        let max = self.cos.size().first().copied().unwrap_or(0) as usize;
        if past_len + tokens.len() > max {
            return Err(self.err(
                phase,
                format!(
                    "{} positions exceed the model's context length {max}",
                    past_len + tokens.len()
                ),
            ));
        }
        Ok(())
    }

    fn new_cache(&self, capacity: usize) -> TchResult<KvCache> {
        let c = &self.config;
        let shape = [c.n_kv_heads as i64, capacity as i64, c.head_dim() as i64];
        let mut k = Vec::with_capacity(c.n_layers);
        let mut v = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            k.push(Tensor::f_zeros(shape, (self.kind, self.device))?);
            v.push(Tensor::f_zeros(shape, (self.kind, self.device))?);
        }
        Ok(KvCache {
            k,
            v,
            capacity: capacity as i64,
        })
    }

    /// One causal forward over `tokens` at positions `past_len..`, reading and extending `cache`
    /// (None: no cache, `past_len` must be 0). Returns logits `[n, vocab]` in the model dtype on the
    /// device, for the last position only (`last_only`) or every position.
    fn forward(
        &mut self,
        tokens: &[u32],
        past_len: usize,
        cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> TchResult<Tensor> {
        let logits = tch::no_grad(|| self.forward_inner(tokens, past_len, cache, last_only))?;
        self.outputs_seen.add(&logits, 1);
        Ok(logits)
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        past_len: usize,
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> TchResult<Tensor> {
        let c = &self.config;
        let (d, hd, nh, nkv) = (
            c.d_model as i64,
            c.head_dim() as i64,
            c.n_heads as i64,
            c.n_kv_heads as i64,
        );
        let (kv, ffn) = (nkv * hd, c.ffn_dim as i64);
        let s = tokens.len() as i64;
        let past = past_len as i64;
        let total = past + s;
        if let Some(cache) = cache.as_deref() {
            if total > cache.capacity {
                return Err(tch::TchError::Shape(format!(
                    "KV cache holds {} positions, {total} needed",
                    cache.capacity
                )));
            }
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::f_from_slice(&ids)?.f_to_device(self.device)?;
        let cos = self.cos.f_narrow(0, past, s)?;
        let sin = self.sin.f_narrow(0, past, s)?;
        // Causal structure: a single new token sees everything; a prompt from 0 is plain causal;
        // otherwise query i (absolute position past + i) sees keys 0..=past + i.
        let mask = if s > 1 && past > 0 {
            Some(Tensor::f_ones([s, total], (Kind::Bool, self.device))?.f_tril(past)?)
        } else {
            None
        };
        let is_causal = s > 1 && past == 0;

        let mut x = self.weights.embed.f_index_select(0, &ids)?; // [s, d]
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_norm_eps)?;
            let qkv = h.f_linear(&layer.wqkv, None::<Tensor>)?;
            let heads = |t: Tensor, n: i64| t.f_reshape([s, n, hd])?.f_transpose(0, 1); // [n, s, hd]
            let q = rope(&heads(qkv.f_narrow(1, 0, d)?, nh)?, &cos, &sin)?;
            let k = rope(&heads(qkv.f_narrow(1, d, kv)?, nkv)?, &cos, &sin)?;
            let v = heads(qkv.f_narrow(1, d + kv, kv)?, nkv)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => {
                    cache.k[i].f_narrow(1, past, s)?.f_copy_(&k)?;
                    cache.v[i].f_narrow(1, past, s)?.f_copy_(&v)?;
                    (
                        cache.k[i].f_narrow(1, 0, total)?,
                        cache.v[i].f_narrow(1, 0, total)?,
                    )
                }
                None => (k, v),
            };
            let attn = Tensor::f_scaled_dot_product_attention(
                &q.f_unsqueeze(0)?,
                &k.f_unsqueeze(0)?,
                &v.f_unsqueeze(0)?,
                mask.as_ref(),
                0.0,
                is_causal,
                None::<f64>,
                true, // GQA: each K/V head serves n_heads / n_kv_heads query heads
            )?; // [1, nh, s, hd]
            let attn = attn
                .f_squeeze_dim(0)?
                .f_transpose(0, 1)?
                .f_reshape([s, d])?;
            x = x.f_add(&attn.f_linear(&layer.wo, None::<Tensor>)?)?;
            let h = rms_norm(&x, &layer.ffn_norm, c.rms_norm_eps)?;
            let gate_up = h.f_linear(&layer.w_gate_up, None::<Tensor>)?;
            let act = gate_up
                .f_narrow(1, 0, ffn)?
                .f_silu()?
                .f_mul(&gate_up.f_narrow(1, ffn, ffn)?)?;
            x = x.f_add(&act.f_linear(&layer.w_down, None::<Tensor>)?)?;
        }
        if last_only {
            x = x.f_narrow(0, s - 1, 1)?;
        }
        let x = rms_norm(&x, &self.weights.final_norm, c.rms_norm_eps)?;
        x.f_linear(self.weights.head(), None::<Tensor>)
    }

    /// Greedy next token from `[1, vocab]` logits (first index among equal maxima, as the reference).
    fn argmax_last(&self, logits: &Tensor, phase: &str) -> Result<u32, BackendError> {
        let idx = logits
            .f_argmax(-1, false)
            .and_then(|t| t.f_int64_value(&[0]))
            .map_err(|e| self.err(phase, e))?;
        u32::try_from(idx).map_err(|_| self.err(phase, format!("argmax returned {idx}")))
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
            self.check_tokens(&seq, 0, "full_recompute")?;
            let logits = self
                .forward(&seq, 0, None, true)
                .map_err(|e| self.err("full_recompute", e))?;
            let next = self.argmax_last(&logits, "full_recompute")?;
            out.push(next);
            seq.push(next);
        }
        Ok(out)
    }
}

/// An ndarray matrix as a CPU fp32 tensor of the same shape.
fn matrix(m: &Array2<f32>) -> TchResult<Tensor> {
    let m = m.as_standard_layout();
    let data = m
        .as_slice()
        .ok_or_else(|| tch::TchError::Shape("matrix not contiguous".into()))?;
    Tensor::f_from_slice(data)?.f_reshape([m.nrows() as i64, m.ncols() as i64])
}

fn vector(v: &Array1<f32>) -> TchResult<Tensor> {
    Tensor::f_from_slice(&v.to_vec())
}

/// RoPE cos/sin `[context_length, head_dim / 2]`, computed in f32 exactly as the reference does.
fn rope_tables(c: &LlamaConfig, device: Device, kind: Kind) -> TchResult<(Tensor, Tensor)> {
    let hd = c.head_dim();
    let half = hd / 2;
    let positions = c.context_length.max(1);
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for pos in 0..positions {
        for i in 0..half {
            let freq = 1.0 / c.rope_theta.powf(2.0 * i as f32 / hd as f32);
            let (s, co) = (pos as f32 * freq).sin_cos();
            cos.push(co);
            sin.push(s);
        }
    }
    let table = |v: &[f32]| -> TchResult<Tensor> {
        Tensor::f_from_slice(v)?
            .f_reshape([positions as i64, half as i64])?
            .f_to_kind(kind)?
            .f_to_device(device)
    };
    Ok((table(&cos)?, table(&sin)?))
}

/// Rotate-half RoPE on `x` = `[heads, s, hd]` with tables `[s, hd/2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> TchResult<Tensor> {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let a = x.f_narrow(-1, 0, half)?;
    let b = x.f_narrow(-1, half, half)?;
    let first = a.f_mul(cos)?.f_sub(&b.f_mul(sin)?)?;
    let second = b.f_mul(cos)?.f_add(&a.f_mul(sin)?)?;
    Tensor::f_cat(&[first, second], -1)
}

/// RMSNorm with the statistics in fp32 (as HF does), scaled by `weight` in the model dtype.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> TchResult<Tensor> {
    let kind = x.f_kind()?;
    let xf = x.f_to_kind(Kind::Float)?;
    let inv = xf
        .f_square()?
        .f_mean_dim(-1i64, true, None::<Kind>)?
        .f_add_scalar(f64::from(eps))?
        .f_rsqrt()?;
    xf.f_mul(&inv)?.f_to_kind(kind)?.f_mul(weight)
}

/// Logits on the device (any dtype) as a host fp32 `[rows, vocab]` array.
fn to_host(logits: &Tensor) -> TchResult<Array2<f32>> {
    let host = logits
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?;
    let size = host.size();
    let (rows, cols) = match size.as_slice() {
        [r, c] => (*r as usize, *c as usize),
        other => return Err(tch::TchError::Shape(format!("logits of shape {other:?}"))),
    };
    let mut data = vec![0f32; rows * cols];
    host.f_copy_data(&mut data, rows * cols)?;
    Array2::from_shape_vec((rows, cols), data).map_err(|e| tch::TchError::Shape(e.to_string()))
}

impl Backend for TchBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// Runs one short forward so outputs are seen, then reports where outputs and weights live.
    /// Runs one short forward so outputs are seen, and a short generation whose graph replays are
    /// counted; then reports where outputs and weights live and how the decode loop ran.
    fn evidence(&mut self) -> Option<Result<crate::backend::evidence::Evidence, BackendError>> {
        if let Err(e) = self.logits(&[1, 2, 3, 4]) {
            return Some(Err(e));
        }
        const PROBE_TOKENS: usize = 8;
        let replays_before = self.graph_evidence().map_or(0, |g| g.replays);
        let probe = match self.generate(&[1, 2, 3, 4], PROBE_TOKENS) {
            Ok(g) => g,
            Err(e) => return Some(Err(e)),
        };
        let t = self.tch_evidence();
        let mut e = crate::backend::evidence::Evidence {
            requested: vec![format!(
                "{} {} decode={}",
                t.requested_device, t.requested_dtype, t.decode_mode
            )],
            cuda_graph: Some(crate::backend::evidence::GraphReplayEvidence {
                decode_mode: t.decode_mode.clone(),
                decode_steps: probe.decode_steps as u64,
                replays: t.graph.as_ref().map_or(0, |g| g.replays) - replays_before,
                kernels_per_step: t.graph.as_ref().map(|g| g.kernels_per_step),
            }),
            ..Default::default()
        };
        if let Some(g) = &t.graph {
            e.notes.push(format!(
                "CUDA graph of the decode step (static cache {}): {} kernels, {} nodes per replay, shim {}",
                g.static_len, g.kernels_per_step, g.nodes_per_step, g.shim
            ));
        }
        for p in &t.outputs {
            *e.executed_on.entry(p.device.clone()).or_insert(0) += p.count as usize;
            *e.output_dtypes.entry(p.dtype.clone()).or_insert(0) += p.count as usize;
        }
        let weight_devices: std::collections::BTreeSet<&str> =
            t.weights.iter().map(|p| p.device.as_str()).collect();
        e.notes.push(format!("weights on {weight_devices:?}"));
        e.notes.push(format!(
            "libtorch {} CUDA available: {} ({} device(s)); libtorch_cuda: {}",
            t.libtorch_version, t.cuda_available, t.cuda_device_count, t.libtorch_cuda_reason
        ));
        Some(Ok(e))
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        if prompt.is_empty() || gen_tokens == 0 {
            return Err(self.err("generate", "prompt and gen_tokens must be non-empty"));
        }
        self.check_tokens(prompt, gen_tokens - 1, "generate")?;
        if self.decode != DecodeMode::Eager {
            return self.generate_static(prompt, gen_tokens);
        }
        let mut cache = self
            .new_cache(prompt.len() + gen_tokens)
            .map_err(|e| self.err("generate", format!("KV cache: {e}")))?;
        self.synchronize("prefill")?;
        let start = Instant::now();
        let logits = self
            .forward(prompt, 0, Some(&mut cache), true)
            .map_err(|e| self.err("prefill", e))?;
        let mut next = self.argmax_last(&logits, "prefill")?;
        self.synchronize("prefill")?;
        let prefill_done = Instant::now();
        let mut tokens = vec![next];
        for step in 1..gen_tokens {
            let past_len = prompt.len() + step - 1;
            let logits = self
                .forward(&[next], past_len, Some(&mut cache), true)
                .map_err(|e| self.err("decode", e))?;
            next = self.argmax_last(&logits, "decode")?;
            tokens.push(next);
        }
        self.synchronize("decode")?;
        let end = Instant::now();
        Ok(Generation::harness_timed(
            prompt.len(),
            tokens,
            start,
            prefill_done,
            end,
        ))
    }

    /// Elements of the weight tensors on the device (the tied head is one tensor, counted once).
    fn loaded_parameter_count(&self) -> Option<u64> {
        Some(self.weights_seen.total())
    }

    /// Every weight tensor on the device, read once per decode step in the model dtype, except an
    /// untied embedding table, which the step reads one row of (a tied table is the head's matrix
    /// and is read whole); the KV cache in the model dtype.
    fn memory_traffic(&self) -> Option<MemoryTraffic> {
        let c = &self.config;
        let elem = self.kind.elt_size_in_bytes() as u64;
        let (vocab, d) = (c.vocab_size as u64, c.d_model as u64);
        let gathered_away = if c.tied_embeddings { 0 } else { vocab * d - d };
        Some(MemoryTraffic {
            weight_bytes_per_token: self.weights_seen.total().saturating_sub(gathered_away) * elem,
            kv_bytes_per_position: 2 * (c.n_layers * c.n_kv_heads * c.head_dim()) as u64 * elem,
        })
    }

    fn full_recompute_tokens(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<super::Recompute, BackendError> {
        if prompt.is_empty() || gen_tokens == 0 {
            return Err(self.err("full_recompute", "prompt and gen_tokens must be non-empty"));
        }
        self.check_tokens(prompt, gen_tokens - 1, "full_recompute")?;
        match self.decode {
            DecodeMode::Eager => self.generate_full_recompute(prompt, gen_tokens),
            // The static and graph loops are compared with a recompute of their own formulation.
            DecodeMode::Static | DecodeMode::CudaGraph => {
                self.static_full_recompute(prompt, gen_tokens)
            }
        }
        .map(super::Recompute::Tokens)
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Array2<f32>, BackendError> {
        self.check_tokens(tokens, 0, "logits")?;
        let logits = self
            .forward(tokens, 0, None, false)
            .map_err(|e| self.err("logits", e))?;
        let host = to_host(&logits).map_err(|e| self.err("logits", e))?;
        if host.dim() != (tokens.len(), self.config.vocab_size) {
            return Err(BackendError::Invariant {
                backend: self.info.id.clone(),
                detail: format!(
                    "logits shape {:?}, expected ({}, {})",
                    host.dim(),
                    tokens.len(),
                    self.config.vocab_size
                ),
            });
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reference;

    /// max |actual − expected| / max |expected| over all logits.
    fn relative_max_diff(actual: &Array2<f32>, expected: &Array2<f32>) -> f32 {
        let max_ref = expected.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let max_diff = actual
            .iter()
            .zip(expected)
            .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
        max_diff / max_ref
    }

    fn tiny() -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_dim: 96,
            vocab_size: 101,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tied_embeddings: true,
            context_length: 64,
            bos_token_id: None,
            eos_token_id: None,
            arch: Default::default(),
            attention_bias: false,
            rope_scaling: Default::default(),
        }
    }

    #[test]
    fn runtime_reports_where_libtorch_came_from() {
        let rt = runtime();
        let path = rt
            .libtorch_path
            .as_ref()
            .expect("libtorch_cpu.so is mapped into a process that links tch");
        assert!(path.exists(), "{}", path.display());
        assert!(
            rt.libtorch_version.starts_with(EXPECTED_LIBTORCH),
            "libtorch {}",
            rt.libtorch_version
        );
        assert!(rt.threads >= 1);
        if !rt.libtorch_cuda.loaded {
            assert!(!rt.libtorch_cuda.reason.is_empty());
            assert!(
                !rt.cuda_available,
                "CUDA cannot be available without libtorch_cuda"
            );
            assert!(rt
                .cuda_unavailable_reason()
                .is_some_and(|r| r.contains("libtorch_cuda not loaded")));
        }
    }

    #[test]
    fn tiny_random_model_matches_the_reference_and_counts_its_parameters() {
        let w = LlamaWeights::random(&tiny(), 3).unwrap();
        let mut b = TchBackend::open(
            TchOptions::new("tch-cpu", TchDevice::Cpu, TchDtype::Fp32),
            &w,
        )
        .unwrap();
        assert_eq!(b.loaded_parameter_count(), Some(w.parameter_count()));
        let c = &w.config;
        let traffic = b.memory_traffic().unwrap();
        let table = if c.tied_embeddings {
            0
        } else {
            (c.vocab_size * c.d_model - c.d_model) as u64
        };
        assert_eq!(
            traffic.weight_bytes_per_token,
            (w.parameter_count() - table) * 4
        );
        assert_eq!(
            traffic.kv_bytes_per_position,
            (2 * c.n_layers * c.n_kv_heads * c.head_dim() * 4) as u64
        );
        let tokens = [1u32, 7, 42, 99, 0, 13, 5];
        let expected = reference::forward(&w, &tokens).unwrap();
        let rel = relative_max_diff(&b.logits(&tokens).unwrap(), &expected);
        assert!(rel < 1e-4, "relative difference {rel}");
        let ev = b.tch_evidence();
        assert!(ev.all_on("cpu", "fp32"), "{ev:?}");
        assert_eq!(
            ev.weights.iter().map(|p| p.count).sum::<u64>(),
            w.parameter_count()
        );
    }

    #[test]
    fn cached_prefix_forward_with_past_matches_full_forward() {
        // Exercises the explicit-mask path (several new tokens after a non-empty cache).
        let w = LlamaWeights::random(&tiny(), 4).unwrap();
        let mut b = TchBackend::open(
            TchOptions::new("tch-cpu", TchDevice::Cpu, TchDtype::Fp32),
            &w,
        )
        .unwrap();
        let tokens = [3u32, 1, 4, 1, 5, 9, 2, 6];
        let full = to_host(&b.forward(&tokens, 0, None, false).unwrap()).unwrap();
        let mut cache = b.new_cache(tokens.len()).unwrap();
        let _prefix = b.forward(&tokens[..3], 0, Some(&mut cache), false).unwrap();
        let tail = to_host(&b.forward(&tokens[3..], 3, Some(&mut cache), false).unwrap()).unwrap();
        let diff = tail
            .iter()
            .zip(full.slice(ndarray::s![3.., ..]).iter())
            .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
        assert!(diff < 1e-4, "max |Δ| {diff}");
    }

    #[test]
    fn half_precision_paths_run_in_their_dtype_on_cpu() {
        // The CUDA dtypes go through the same code; here they run on the CPU (slowly) so the dtype
        // plumbing (fp32 RMSNorm statistics, RoPE tables, KV cache) is exercised without a GPU.
        let w = LlamaWeights::random(&tiny(), 8).unwrap();
        let tokens = [2u32, 71, 18, 28, 18, 28];
        let expected = reference::forward(&w, &tokens).unwrap();
        for dtype in [TchDtype::Bf16, TchDtype::Fp16] {
            let mut b =
                TchBackend::open(TchOptions::new("tch-cpu-half", TchDevice::Cpu, dtype), &w)
                    .unwrap();
            let rel = relative_max_diff(&b.logits(&tokens).unwrap(), &expected);
            assert!(rel < 0.05, "{dtype:?}: relative difference {rel}");
            let g = b.generate(&tokens, 4).unwrap();
            assert_eq!(g.tokens.len(), 4);
            assert!(
                b.tch_evidence().all_on("cpu", dtype.label()),
                "{:?}",
                b.tch_evidence()
            );
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let w = LlamaWeights::random(&tiny(), 5).unwrap();
        let mut b = TchBackend::open(
            TchOptions::new("tch-cpu", TchDevice::Cpu, TchDtype::Fp32),
            &w,
        )
        .unwrap();
        assert!(b.logits(&[]).is_err());
        assert!(b.logits(&[101]).is_err(), "token outside the vocabulary");
        assert!(b.generate(&[1, 2], 0).is_err());
        assert!(
            b.generate(&[1; 60], 10).is_err(),
            "beyond the context length"
        );
        assert!(b.tch_evidence().outputs.is_empty(), "no forward ran");
    }

    #[test]
    fn cuda_request_without_cuda_is_unavailable_with_the_reason() {
        if runtime().cuda_available {
            eprintln!("CUDA is available here; the negative case does not apply");
            return;
        }
        let w = LlamaWeights::random(&tiny(), 6).unwrap();
        match TchBackend::open(
            TchOptions::new("tch-cuda", TchDevice::Cuda(0), TchDtype::Fp32),
            &w,
        ) {
            Err(BackendError::Unavailable { reason, .. }) => assert!(
                reason.contains("libtorch_cuda") || reason.contains("device"),
                "{reason}"
            ),
            Err(e) => panic!("expected Unavailable, got {e}"),
            Ok(_) => panic!("a CUDA backend opened without CUDA"),
        }
    }
}
