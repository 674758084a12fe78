//! Finding and loading the ONNX Runtime library once per process: the pinned `.so` (or
//! `ORT_DYLIB_PATH`, or another pinned version), its self-reported version, the shared environment,
//! and the execution providers compiled into it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::error::BackendError;

/// The loaded ONNX Runtime library: one per process.
#[derive(Debug, Clone, Serialize)]
pub struct OrtRuntime {
    pub library_path: PathBuf,
    /// As reported by the library (`OrtGetApiBase()->GetVersionString()`).
    pub version: String,
    /// `ort::info()`: the runtime's build string (git commit, flags).
    pub build_info: String,
    #[serde(skip)]
    pub(super) environment: ort::environment::Environment,
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
