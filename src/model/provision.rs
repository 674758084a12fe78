//! Getting a declared model's GGUF onto this machine, as its declaration says: fetched (pinned),
//! hash-checked (local) or derived by llama.cpp's `llama-quantize` (recipe), and where it already is.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use super::declared::{find, is_sha256, CatalogModel, ModelSource};
use crate::assets;
use crate::assets::llama_cpp;
use crate::error::{HashMismatch, ModelError};

/// Where a model's GGUF is, if it is already present (no fetch, no derivation, no hashing).
pub fn locate(model: &CatalogModel) -> Option<PathBuf> {
    match &model.source {
        ModelSource::Pinned(a) => assets::locate(a),
        ModelSource::Local(p) => p.exists().then(|| p.clone()),
        ModelSource::LlamaQuantize { .. } => {
            let p = derived_path(model);
            p.exists().then_some(p)
        }
    }
}

/// Cache path of a derived model: keyed by name and declared hash.
fn derived_path(model: &CatalogModel) -> PathBuf {
    assets::cache_root()
        .join("models")
        .join(format!("{}-{}.gguf", model.name, &model.sha256[..16]))
}

impl CatalogModel {
    /// The verified GGUF: fetched (pinned), checked (local) or derived (recipe) as declared.
    pub fn gguf_path(&self) -> Result<PathBuf, ModelError> {
        match &self.source {
            ModelSource::Pinned(asset) => Ok(assets::ensure(asset)?),
            ModelSource::Local(path) => self.verify_local(path),
            ModelSource::LlamaQuantize { from, target, pure } => self.derive(from, target, *pure),
        }
    }

    fn verify_local(&self, path: &Path) -> Result<PathBuf, ModelError> {
        let meta = fs::metadata(path).map_err(|_| ModelError::WeightsMissing {
            model: self.name.clone(),
            path: path.to_path_buf(),
            fix: format!(
                "put the GGUF at that path, or change `source.path` in {}",
                self.declared_in.display()
            ),
        })?;
        let actual = verified_sha256(path, &meta).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if actual != self.sha256 {
            return Err(ModelError::WeightsHashMismatch(Box::new(HashMismatch {
                model: self.name.clone(),
                path: path.to_path_buf(),
                expected: self.sha256.clone(),
                actual: actual.clone(),
                fix: format!("if this file is the model you mean to gate, set sha256 = \"{actual}\" in {}; otherwise restore the file the declaration pins", self.declared_in.display()),
            })));
        }
        Ok(path.to_path_buf())
    }

    /// Run the recipe once (locked, so parallel test processes derive once), verify, cache.
    fn derive(&self, from: &str, target: &str, pure: bool) -> Result<PathBuf, ModelError> {
        let out = derived_path(self);
        if out.exists() {
            return Ok(out);
        }
        let dir = out
            .parent()
            .expect("derived path has a parent")
            .to_path_buf();
        let io = |p: &Path, e: std::io::Error| ModelError::Io {
            path: p.to_path_buf(),
            source: e,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(format!("{}.lock", self.name));
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        lock.lock().map_err(|e| io(&lock_path, e))?;
        if out.exists() {
            return Ok(out);
        }
        let derive_error = |detail: String, fix: String| ModelError::Derive {
            model: self.name.clone(),
            declared_in: self.declared_in.clone(),
            detail,
            fix,
        };
        let parent = find(from)?.gguf_path()?;
        let build = llama_cpp::locate().ok_or_else(|| {
            derive_error(
                "llama.cpp's llama-quantize is not built on this machine".into(),
                "run `cargo run --release -- build-llama-cpp` (cached), then retry".into(),
            )
        })?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}-", self.name))
            .suffix(".gguf")
            .tempfile_in(&dir)
            .map_err(|e| io(&dir, e))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut cmd = Command::new(&build.llama_quantize);
        cmd.arg("--allow-requantize");
        if pure {
            cmd.arg("--pure");
        }
        cmd.arg(&parent)
            .arg(tmp.path())
            .arg(target)
            .arg(threads.to_string())
            .stdin(Stdio::null());
        let shown = format!("{cmd:?}").replace('"', "");
        let output = cmd.output().map_err(|e| {
            derive_error(
                format!("cannot run {}: {e}", build.llama_quantize.display()),
                "rebuild llama.cpp with `cargo run --release -- build-llama-cpp`".into(),
            )
        })?;
        if !output.status.success() {
            let log = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(derive_error(
                format!("`{shown}` failed ({}):\n{}", output.status, tail.join("\n")),
                format!("check `source.type` in {}", self.declared_in.display()),
            ));
        }
        let actual = assets::sha256_file(tmp.path()).map_err(|e| io(tmp.path(), e))?;
        if actual != self.sha256 {
            return Err(ModelError::WeightsHashMismatch(Box::new(HashMismatch {
                model: self.name.clone(),
                path: tmp.path().to_path_buf(),
                expected: self.sha256.clone(),
                actual: actual.clone(),
                fix: format!(
                    "the recipe's output differs from the pinned hash (a different llama.cpp, or a different parent?); \
                     if {} built it and you mean to pin this output, set sha256 = \"{actual}\" in {}",
                    build.version,
                    self.declared_in.display()
                ),
            })));
        }
        tmp.persist(&out).map_err(|e| io(&out, e.error))?;
        Ok(out)
    }
}

/// sha256 of a local file, remembered per process and, across processes, in a stamp in the cache
/// keyed by path, size and modification time (a multi-GB GGUF is hashed once, not once per trial).
fn verified_sha256(path: &Path, meta: &fs::Metadata) -> std::io::Result<String> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static SEEN: OnceLock<Mutex<BTreeMap<Key, String>>> = OnceLock::new();
    let canonical = path.canonicalize()?;
    let key: Key = (canonical.clone(), meta.len(), meta.modified().ok());
    let seen = SEEN.get_or_init(Default::default);
    if let Some(h) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(h.clone());
    }
    let stamp_key = {
        let mtime = key
            .2
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}|{}|{mtime}", canonical.display(), key.1);
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()))
    };
    let stamp = assets::cache_root()
        .join("verified")
        .join(format!("{stamp_key}.sha256"));
    let hash = match fs::read_to_string(&stamp) {
        Ok(h) if is_sha256(h.trim()) => h.trim().to_string(),
        _ => {
            let h = assets::sha256_file(path)?;
            if let Some(d) = stamp.parent() {
                let _ = fs::create_dir_all(d);
            }
            let _ = fs::write(&stamp, &h);
            h
        }
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, hash.clone());
    Ok(hash)
}
