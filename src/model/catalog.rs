//! Models a gate file can name (declared in `models/*.toml`, see [`super::declared`]), and the cached
//! artifacts derived from them (ONNX exports, keyed by the GGUF's sha256).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::onnx_export::{self, EXPORTER_VERSION};
use super::onnx_graph::WeightFormat;
use super::tensors::{GgufSource, RandomSource, TensorSource};
use super::{GgufFile, LlamaConfig, LlamaWeights};
use crate::assets;
use crate::error::ModelError;

pub use super::declared::{
    default_model, find, known_names, lookup, models_dir, registry, CatalogModel, ModelRegistry,
    ModelSource, DEFAULT_MODEL, MODELS_DIR_ENV,
};
pub use super::provision::locate;

/// Where weights for an export come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightSource {
    /// A catalog GGUF, optionally with one layer's output projections scaled (a planted fault).
    Gguf {
        model: String,
        gguf_sha256: String,
        fault_scale_layer: Option<(usize, f32)>,
    },
    /// Seeded random weights of a given shape (the scaling family).
    Synthetic { config: LlamaConfig, seed: u64 },
}

impl WeightSource {
    pub fn catalog(model: &CatalogModel) -> Self {
        WeightSource::Gguf {
            model: model.name.clone(),
            gguf_sha256: model.sha256.clone(),
            fault_scale_layer: None,
        }
    }

    fn cache_key(&self, format: WeightFormat) -> String {
        let json = serde_json::to_string(&(self, format, EXPORTER_VERSION)).unwrap_or_default();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(json.as_bytes()));
        let stem = match self {
            WeightSource::Gguf {
                model, gguf_sha256, ..
            } => format!("{model}-{}", &gguf_sha256[..gguf_sha256.len().min(12)]),
            WeightSource::Synthetic { config, .. } => {
                format!("synthetic-l{}-d{}", config.n_layers, config.d_model)
            }
        };
        format!("{stem}-{}-{}", format.label(), &digest[..16])
    }

    /// Load the fp32 weights this source describes.
    pub fn load_weights(&self) -> Result<LlamaWeights, ModelError> {
        match self {
            WeightSource::Gguf {
                model,
                fault_scale_layer,
                ..
            } => {
                let gguf = GgufFile::open(&find(model)?.gguf_path()?)?;
                let mut w = LlamaWeights::from_gguf(&gguf)?;
                if let Some((layer, factor)) = fault_scale_layer {
                    w.scale_layer(*layer, *factor)?;
                }
                Ok(w)
            }
            WeightSource::Synthetic { config, seed } => LlamaWeights::random(config, *seed),
        }
    }
}

/// A cached ONNX export and the config it was built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedOnnx {
    pub model_path: PathBuf,
    pub config: LlamaConfig,
    pub source: WeightSource,
    pub format: WeightFormat,
    pub node_count: usize,
    pub parameter_count: u64,
}

const MANIFEST: &str = "export.json";

/// Export (once) and return the cached ONNX model for `source` in `format`.
pub fn ensure_onnx(
    source: &WeightSource,
    format: WeightFormat,
) -> Result<PreparedOnnx, ModelError> {
    let root = assets::cache_root().join("onnx");
    let dir = root.join(source.cache_key(format));
    if let Some(p) = read_prepared(&dir) {
        return Ok(p);
    }
    let io = |path: &Path, e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let lock_path = root.join(format!("{}.lock", source.cache_key(format)));
    let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    lock.lock().map_err(|e| io(&lock_path, e))?;
    if let Some(p) = read_prepared(&dir) {
        return Ok(p);
    }
    let tmp = tempfile::tempdir_in(&root).map_err(|e| io(&root, e))?;
    let meta = [(
        "infergate.weight_source",
        serde_json::to_string(source).unwrap_or_default(),
    )];
    if format.needs_gguf_blocks()
        && !matches!(
            source,
            WeightSource::Gguf {
                fault_scale_layer: None,
                ..
            }
        )
    {
        return Err(ModelError::Config(format!(
            "the {} format needs an unmodified catalog GGUF",
            format.label()
        )));
    }
    // Weights stream from the source tensor by tensor (see onnx_export::export).
    let (exported, config) = match source {
        WeightSource::Gguf {
            model,
            fault_scale_layer,
            ..
        } => {
            let file = GgufFile::open(&find(model)?.gguf_path()?)?;
            let tensors = GgufSource::new(&file)?.with_fault(*fault_scale_layer)?;
            let blocks = format.needs_gguf_blocks().then_some(&file);
            let e = onnx_export::export(&tensors, format, blocks, tmp.path(), &meta)?;
            (e, tensors.config().clone())
        }
        WeightSource::Synthetic { config, seed } => {
            let tensors = RandomSource::new(config, *seed)?;
            let e = onnx_export::export(&tensors, format, None, tmp.path(), &meta)?;
            (e, config.clone())
        }
    };
    let prepared = PreparedOnnx {
        model_path: dir.join("model.onnx"),
        parameter_count: config.parameter_count(),
        config,
        source: source.clone(),
        format,
        node_count: exported.node_count,
    };
    let json =
        serde_json::to_vec_pretty(&prepared).map_err(|e| ModelError::Config(e.to_string()))?;
    fs::write(tmp.path().join(MANIFEST), json).map_err(|e| io(tmp.path(), e))?;
    let tmp_path = tmp.keep();
    fs::rename(&tmp_path, &dir).map_err(|e| io(&dir, e))?;
    Ok(prepared)
}

fn read_prepared(dir: &Path) -> Option<PreparedOnnx> {
    let bytes = fs::read(dir.join(MANIFEST)).ok()?;
    let p: PreparedOnnx = serde_json::from_slice(&bytes).ok()?;
    p.model_path.exists().then_some(p)
}
