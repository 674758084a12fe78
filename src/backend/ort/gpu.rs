//! The CUDA build of ONNX Runtime: PyPI `onnxruntime-gpu==1.31.1` (built for CUDA 13), its
//! execution-provider libraries, and the checks that say why a provider cannot run here.
//!
//! ONNX Runtime loads a provider from the directory of the `libonnxruntime.so` it runs from
//! (`libonnxruntime_providers_shared.so` plus `libonnxruntime_providers_cuda.so` or `…_tensorrt.so`),
//! and when that fails it falls back to the CPU **silently** unless the session asks for an error.
//! So before a CUDA session is opened, [`check_provider`] verifies each library by sha256 and tries to
//! load every library the provider links against (cuBLAS, cuRAND, the CUDA runtime, the driver;
//! TensorRT's `libnvinfer`), naming each one that is missing. `scripts/gpu/stage-onnxruntime-gpu.sh`
//! extracts and verifies the four libraries; point `ORT_DYLIB_PATH` at the staged
//! `libonnxruntime.so.1.31.1` (its sha256 is accepted there beside the CPU build's).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The pinned wheel (cp312 manylinux_2_28 x86_64; the libraries are the same in every cp tag).
pub const WHEEL: &str = "onnxruntime-gpu==1.31.1";
pub const WHEEL_CP312_SHA256: &str =
    "05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7";

/// `onnxruntime/capi/libonnxruntime.so.1.31.1` of the GPU wheel (29,421,832 B).
pub const RUNTIME_SHA256: &str = "5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303";

/// One library of the GPU wheel that ONNX Runtime loads next to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLibrary {
    pub file: &'static str,
    pub sha256: &'static str,
    pub bytes: u64,
    /// Its `DT_NEEDED` entries outside glibc/libstdc++ (readelf -d), loaded here to check them.
    pub needs: &'static [&'static str],
}

pub const PROVIDERS_SHARED: ProviderLibrary = ProviderLibrary {
    file: "libonnxruntime_providers_shared.so",
    sha256: "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
    bytes: 14_632,
    needs: &[],
};

pub const PROVIDERS_CUDA: ProviderLibrary = ProviderLibrary {
    file: "libonnxruntime_providers_cuda.so",
    sha256: "8387867e857499e045caff5d13ac6a5de29571c801562fa2dde0e45f1f31de52",
    bytes: 284_014_752,
    needs: &[
        "libcuda.so.1",
        "libcudart.so.13",
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcurand.so.10",
    ],
};

pub const PROVIDERS_TENSORRT: ProviderLibrary = ProviderLibrary {
    file: "libonnxruntime_providers_tensorrt.so",
    sha256: "1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e",
    bytes: 994_968,
    needs: &[
        "libcuda.so.1",
        "libcudart.so.13",
        "libcublas.so.13",
        "libcudnn.so.9",
        "libnvinfer.so.10",
        "libnvonnxparser.so.10",
    ],
};

/// Which provider to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuProvider {
    Cuda,
    TensorRt,
}

impl GpuProvider {
    pub fn library(self) -> ProviderLibrary {
        match self {
            GpuProvider::Cuda => PROVIDERS_CUDA,
            GpuProvider::TensorRt => PROVIDERS_TENSORRT,
        }
    }
}

/// The fix printed when a provider cannot load.
pub const FIX: &str = "stage onnxruntime-gpu 1.31.1 with scripts/gpu/stage-onnxruntime-gpu.sh DIR and set \
ORT_DYLIB_PATH=DIR/libonnxruntime.so.1.31.1; its CUDA provider needs CUDA 13's libcudart, libcublas(Lt) and \
libcurand on the loader path (with a pip-installed torch 2.11: LD_LIBRARY_PATH=<site-packages>/nvidia/cu13/lib)";

/// The fix printed when the TensorRT provider cannot load.
pub const TENSORRT_FIX: &str = "install TensorRT 10 for CUDA 13 (libnvinfer.so.10, libnvonnxparser.so.10) and cuDNN 9 \
and put them on LD_LIBRARY_PATH, beside onnxruntime-gpu 1.31.1 staged with scripts/gpu/stage-onnxruntime-gpu.sh \
(ORT_DYLIB_PATH=DIR/libonnxruntime.so.1.31.1)";

/// A provider that can be loaded: where its files are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderCheck {
    pub provider_library: PathBuf,
    /// Each needed library and the path the loader found for it.
    pub resolved: Vec<(String, String)>,
}

/// Check that `provider`'s libraries sit next to `runtime_library` with their pinned hashes and
/// that everything they link against loads here. The error names every missing piece.
pub fn check_provider(
    runtime_library: &Path,
    provider: GpuProvider,
) -> Result<ProviderCheck, String> {
    let dir = runtime_library
        .parent()
        .ok_or_else(|| format!("{} has no directory", runtime_library.display()))?;
    let mut problems = Vec::new();
    let lib = provider.library();
    for l in [PROVIDERS_SHARED, lib] {
        let path = dir.join(l.file);
        match crate::assets::sha256_file(&path) {
            Ok(h) if h == l.sha256 => {}
            Ok(h) => problems.push(format!(
                "{} has sha256 {h}, expected {} (onnxruntime-gpu 1.31.1)",
                path.display(),
                l.sha256
            )),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    let mut resolved = Vec::new();
    for name in lib.needs {
        match loadable(name) {
            Ok(path) => resolved.push((name.to_string(), path)),
            Err(e) => problems.push(format!("{name} does not load ({e})")),
        }
    }
    if problems.is_empty() {
        Ok(ProviderCheck {
            provider_library: dir.join(lib.file),
            resolved,
        })
    } else {
        Err(format!(
            "the {} provider of the ONNX Runtime at {} cannot load: {}",
            match provider {
                GpuProvider::Cuda => "CUDA",
                GpuProvider::TensorRt => "TensorRT",
            },
            runtime_library.display(),
            problems.join("; ")
        ))
    }
}

/// `dlopen` a library by name as ONNX Runtime's loader would, and report where it came from.
fn loadable(name: &str) -> Result<String, String> {
    let flags = libloading::os::unix::RTLD_LAZY | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: loading a system/CUDA library runs its initializers, as ONNX Runtime would when the
    // provider loads; it stays loaded (CUDA libraries are not designed to be unloaded).
    let lib = unsafe { libloading::os::unix::Library::open(Some(name), flags) }
        .map_err(|e| e.to_string())?;
    std::mem::forget(lib);
    Ok(mapped_path(name).unwrap_or_else(|| "loaded".into()))
}

fn mapped_path(name: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().is_some_and(|n| n == name))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_runtime_directory_has_no_cuda_provider_and_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("libonnxruntime.so.1.31.1");
        std::fs::write(&runtime, b"not really").unwrap();
        let err = check_provider(&runtime, GpuProvider::Cuda).unwrap_err();
        assert!(err.contains(PROVIDERS_CUDA.file), "{err}");
        assert!(err.contains(PROVIDERS_SHARED.file), "{err}");
        // A wrong file under the right name is caught by its hash.
        std::fs::write(dir.path().join(PROVIDERS_SHARED.file), b"x").unwrap();
        let err = check_provider(&runtime, GpuProvider::Cuda).unwrap_err();
        assert!(err.contains("expected 086ec1d5"), "{err}");
    }

    #[test]
    fn tensorrt_needs_nvinfer() {
        assert!(PROVIDERS_TENSORRT.needs.contains(&"libnvinfer.so.10"));
        assert!(loadable("libinfergate-no-such-library.so.1").is_err());
    }
}
