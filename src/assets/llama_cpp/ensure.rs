//! Making a build available: [`ensure_built`] and its kin (override, cache, else a cold build under
//! a lock), and [`prepare_for_run`] for `infergate run`.

use std::fs::{self, File};
use std::io::Write;

use super::build::build;
use super::cache::{
    cache_dir, cache_dir_of, env_override, from_cache, from_override, locate, LlamaCppBuild,
};
use super::recipe::{io, Flavor, Sdist, ENV_BIN};
use super::toolchain::{find_cxx_compiler, find_nvcc, nvcc_missing};
use crate::error::AssetError;

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

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Instant;

    use super::*;
    use crate::assets::llama_cpp::cache::version_of;
    use crate::assets::llama_cpp::recipe::BUILD_COMMIT;

    /// The real cold build (≈ 6 min on 2 cores the first time; instant once cached):
    /// `cargo test --lib assets::llama_cpp -- --ignored --nocapture`.
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
}
