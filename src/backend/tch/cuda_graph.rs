//! CUDA graphs for the libtorch backend, through infergate's shim over `at::cuda::CUDAGraph`.
//!
//! tch 0.24 has no CUDA-graph binding (its PR for one was never merged), so
//! `native/cuda_graph/infergate_cuda_graph.cpp` wraps libtorch's own `CUDAGraph` in a C ABI;
//! `scripts/gpu/build-cuda-graph-shim.sh` builds it against the machine's torch. It is loaded here
//! with `dlopen` *after* `libtorch_cuda.so` (see [`super::runtime()`]), so it shares libtorch's
//! caching allocator and current-stream state with every tch tensor.
//!
//! Lookup: `INFERGATE_CUDA_GRAPH_SHIM`, else `<cache>/cuda-graph-shim/libinfergate_cuda_graph.so`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Serialize;

/// Environment variable naming the shim library.
pub const SHIM_ENV: &str = "INFERGATE_CUDA_GRAPH_SHIM";
/// The ABI version this build speaks (`ig_graph_abi_version` in the shim).
pub const SHIM_ABI: i32 = 1;
/// What fixes a missing shim, for messages.
pub const SHIM_FIX: &str =
    "on the GPU machine run scripts/gpu/build-cuda-graph-shim.sh (needs a C++ \
compiler, torch 2.11 with its headers and the CUDA runtime headers), or set \
INFERGATE_CUDA_GRAPH_SHIM=/path/to/libinfergate_cuda_graph.so";

/// Default location of the shim (where the build script puts it).
pub fn default_shim_path() -> PathBuf {
    crate::assets::cache_root()
        .join("cuda-graph-shim")
        .join("libinfergate_cuda_graph.so")
}

type Status = c_int;

/// The shim's entry points.
pub struct Shim {
    pub path: PathBuf,
    last_error: unsafe extern "C" fn() -> *const c_char,
    new: unsafe extern "C" fn(i32, *mut *mut c_void) -> Status,
    enter_stream: unsafe extern "C" fn(*mut c_void) -> Status,
    exit_stream: unsafe extern "C" fn(*mut c_void) -> Status,
    capture_begin: unsafe extern "C" fn(*mut c_void) -> Status,
    capture_end: unsafe extern "C" fn(*mut c_void, *mut i64, *mut i64) -> Status,
    capture_abort: unsafe extern "C" fn(*mut c_void) -> Status,
    replay: unsafe extern "C" fn(*mut c_void) -> Status,
    replays: unsafe extern "C" fn(*mut c_void) -> i64,
    free: unsafe extern "C" fn(*mut c_void),
}

static SHIM: OnceLock<Result<Shim, String>> = OnceLock::new();

/// Load the shim once. Call only after [`super::runtime()`] reported CUDA available (the shim's
/// symbols resolve against the `libtorch_cuda.so` loaded there).
pub fn shim() -> Result<&'static Shim, String> {
    SHIM.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Shim, String> {
    let path = std::env::var_os(SHIM_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_shim_path);
    if !path.exists() {
        return Err(format!("CUDA-graph shim {} does not exist", path.display()));
    }
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: the shim has no static initializers beyond libstdc++'s; its undefined symbols are
    // libtorch_cuda's, which the runtime loaded (RTLD_GLOBAL) before this is called.
    let lib = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
        .map_err(|e| format!("dlopen({}): {e}", path.display()))?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the type matches the declaration in infergate_cuda_graph.cpp for SHIM_ABI,
            // which is checked below before any other entry point is used.
            *unsafe { lib.get($name) }.map_err(|e| format!("{}: {e}", path.display()))?
        };
    }
    let abi: unsafe extern "C" fn() -> i32 = sym!(b"ig_graph_abi_version\0");
    // SAFETY: no arguments, returns a constant.
    let version = unsafe { abi() };
    if version != SHIM_ABI {
        return Err(format!(
            "{} speaks shim ABI {version}, this build needs {SHIM_ABI}: rebuild it with scripts/gpu/build-cuda-graph-shim.sh",
            path.display()
        ));
    }
    let shim = Shim {
        last_error: sym!(b"ig_last_error\0"),
        new: sym!(b"ig_graph_new\0"),
        enter_stream: sym!(b"ig_graph_enter_stream\0"),
        exit_stream: sym!(b"ig_graph_exit_stream\0"),
        capture_begin: sym!(b"ig_graph_capture_begin\0"),
        capture_end: sym!(b"ig_graph_capture_end\0"),
        capture_abort: sym!(b"ig_graph_capture_abort\0"),
        replay: sym!(b"ig_graph_replay\0"),
        replays: sym!(b"ig_graph_replays\0"),
        free: sym!(b"ig_graph_free\0"),
        path,
    };
    std::mem::forget(lib); // the function pointers live as long as the process
    Ok(shim)
}

impl Shim {
    fn check(&self, what: &str, status: Status) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: returns a pointer to a thread-local NUL-terminated string owned by the shim.
        let msg = unsafe { CStr::from_ptr((self.last_error)()) }
            .to_string_lossy()
            .into_owned();
        Err(format!("{what}: {msg}"))
    }
}

/// Nodes of a captured graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GraphCounts {
    /// Kernel launches the graph replays (one decode step).
    pub kernel_nodes: i64,
    /// All nodes (kernels, memcpys, memsets, event nodes).
    pub total_nodes: i64,
}

/// One captured CUDA graph and its side stream.
pub struct CudaGraph {
    shim: &'static Shim,
    handle: *mut c_void,
    entered: bool,
    counts: Option<GraphCounts>,
}

// SAFETY: the handle is an `at::cuda::CUDAGraph` plus a stream; libtorch allows using it from any
// thread as long as calls are not concurrent, which `&mut self` on every call guarantees.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    pub fn new(device: usize) -> Result<Self, String> {
        let shim = shim()?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out pointer.
        shim.check("ig_graph_new", unsafe {
            (shim.new)(device as i32, &mut handle)
        })?;
        Ok(CudaGraph {
            shim,
            handle,
            entered: false,
            counts: None,
        })
    }

    /// Run `f` with this graph's side stream as libtorch's current stream (capture and replay
    /// need a non-default stream); the previous stream waits for the side stream afterwards. The
    /// outer error is the stream switch's.
    pub fn on_side_stream<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Result<T, String> {
        // SAFETY: valid handle; the shim checks the enter/exit pairing.
        self.shim.check("ig_graph_enter_stream", unsafe {
            (self.shim.enter_stream)(self.handle)
        })?;
        self.entered = true;
        let out = f(self);
        self.entered = false;
        // SAFETY: as above.
        self.shim.check("ig_graph_exit_stream", unsafe {
            (self.shim.exit_stream)(self.handle)
        })?;
        Ok(out)
    }

    /// Capture what `step` issues on the side stream (which must be current: call inside
    /// [`Self::on_side_stream`]); `step` must not synchronize with the host.
    pub fn capture<E: std::fmt::Display>(
        &mut self,
        step: impl FnOnce() -> Result<(), E>,
    ) -> Result<GraphCounts, String> {
        if !self.entered {
            return Err("capture outside on_side_stream".into());
        }
        // SAFETY: valid handle.
        self.shim.check("ig_graph_capture_begin", unsafe {
            (self.shim.capture_begin)(self.handle)
        })?;
        if let Err(e) = step() {
            // SAFETY: valid handle; ends the failed capture.
            unsafe { (self.shim.capture_abort)(self.handle) };
            return Err(format!("the decode step failed during capture: {e}"));
        }
        let (mut kernels, mut nodes) = (0i64, 0i64);
        // SAFETY: valid handle and out pointers.
        self.shim.check("ig_graph_capture_end", unsafe {
            (self.shim.capture_end)(self.handle, &mut kernels, &mut nodes)
        })?;
        let counts = GraphCounts {
            kernel_nodes: kernels,
            total_nodes: nodes,
        };
        self.counts = Some(counts);
        Ok(counts)
    }

    /// Launch the captured graph once on the current stream.
    pub fn replay(&mut self) -> Result<(), String> {
        // SAFETY: valid handle; the shim refuses a replay before a capture.
        self.shim.check("ig_graph_replay", unsafe {
            (self.shim.replay)(self.handle)
        })
    }

    /// Replays so far, as counted by the shim.
    pub fn replays(&self) -> u64 {
        // SAFETY: valid handle.
        unsafe { (self.shim.replays)(self.handle) }.max(0) as u64
    }

    pub fn counts(&self) -> Option<GraphCounts> {
        self.counts
    }

    pub fn shim_path(&self) -> &std::path::Path {
        &self.shim.path
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: the handle came from ig_graph_new and is freed once.
        unsafe { (self.shim.free)(self.handle) };
    }
}
