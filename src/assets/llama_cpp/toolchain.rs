//! Finding the tools a build needs: the C++ compiler, `nvcc` for the CUDA flavor, Python for pip,
//! and cmake and ninja (the pinned PyPI wheels, or the ones on PATH).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::logged::run_pip;
use super::recipe::{io, ASSET, CMAKE_REQUIREMENT, ENV_CUDA_BIN, ENV_TOOLS, NINJA_REQUIREMENT};
use crate::error::AssetError;

pub(super) fn python() -> String {
    std::env::var("INFERGATE_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub(super) fn find_cxx_compiler() -> Option<PathBuf> {
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

pub(super) fn nvcc_missing() -> AssetError {
    AssetError::ToolMissing {
        asset: ASSET.into(),
        tool: "nvcc (the CUDA compiler: on PATH, $CUDACXX, $CUDA_HOME/bin or /usr/local/cuda/bin)"
            .into(),
        fix: format!(
            "install the CUDA toolkit matching the driver, or set {ENV_CUDA_BIN} to an existing CUDA build's bin dir"
        ),
    }
}

pub(super) fn find_nvcc() -> Option<PathBuf> {
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

pub(super) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// cmake and ninja, with the versions for the marker: the pinned wheels, or with
/// `INFERGATE_LLAMA_CPP_TOOLS=path` the ones on PATH.
#[allow(clippy::type_complexity)]
pub(super) fn build_tools(
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
pub(super) fn install_build_tools(
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
