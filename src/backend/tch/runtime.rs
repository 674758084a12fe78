//! The libtorch runtime of this process: which `libtorch_cpu.so` is mapped, its version, loading
//! `libtorch_cuda.so` before the first tch call ([`runtime`]), libtch's error channel ([`checked`]),
//! and the device copy-bandwidth probe.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::options::TchDevice;
use crate::backend::CopyBandwidth;

/// A fallible tch call's result (every tensor operation here uses tch's `f_*` form).
pub(super) type TchResult<T> = Result<T, tch::TchError>;

/// The libtorch version `tch =0.24.0` is built against.
pub const EXPECTED_LIBTORCH: &str = "2.11.0";

/// Environment variable naming a `libtorch_cuda.so` to load instead of searching for one.
pub const LIBTORCH_CUDA_ENV: &str = "INFERGATE_LIBTORCH_CUDA";

/// What fixes a missing CUDA runtime, for messages.
pub const CUDA_FIX: &str = "on a CUDA machine, put libtorch_cuda.so (torch 2.11.0) next to libtorch_cpu.so or on \
LD_LIBRARY_PATH (e.g. LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib), or set \
INFERGATE_LIBTORCH_CUDA=/path/to/libtorch_cuda.so";

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
pub(super) fn checked<T>(f: impl FnOnce() -> T) -> Result<T, String> {
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
        device: device.into(),
        bytes: n as u64 * 4,
        reps: rates.len(),
        gb_per_s_median: rates[rates.len() / 2],
        gb_per_s_max: rates[rates.len() - 1],
    })
}
