//! Models a gate file can name, and the cached artifacts derived from them (fp32 ONNX exports).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::onnx_export::{self, WeightFormat, EXPORTER_VERSION};
use super::{GgufFile, LlamaConfig, LlamaWeights};
use crate::assets::{self, PinnedAsset};
use crate::error::ModelError;

/// A model known to infergate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogModel {
    /// The name gate files use.
    pub name: &'static str,
    pub asset: PinnedAsset,
    /// Parameter count the model card declares.
    pub declared_parameters: u64,
}

pub const SMOLLM2_135M: CatalogModel = CatalogModel {
    name: "smollm2-135m-instruct",
    asset: assets::SMOLLM2_GGUF,
    declared_parameters: 134_515_008,
};

pub const CATALOG: [CatalogModel; 1] = [SMOLLM2_135M];

pub fn lookup(name: &str) -> Option<CatalogModel> {
    CATALOG.iter().copied().find(|m| m.name == name)
}

pub fn known_names() -> Vec<&'static str> {
    CATALOG.iter().map(|m| m.name).collect()
}

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
            model: model.name.into(),
            gguf_sha256: model.asset.member_sha256.into(),
            fault_scale_layer: None,
        }
    }

    fn cache_key(&self, format: WeightFormat) -> String {
        let json = serde_json::to_string(&(self, format, EXPORTER_VERSION)).unwrap_or_default();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(json.as_bytes()));
        let stem = match self {
            WeightSource::Gguf { model, .. } => model.clone(),
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
                let m = lookup(model)
                    .ok_or_else(|| ModelError::Config(format!("unknown model `{model}`")))?;
                let path = assets::ensure(&m.asset)?;
                let gguf = GgufFile::open(&path)?;
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
    let weights = source.load_weights()?;
    let tmp = tempfile::tempdir_in(&root).map_err(|e| io(&root, e))?;
    let meta = [(
        "infergate.weight_source",
        serde_json::to_string(source).unwrap_or_default(),
    )];
    let gguf = match source {
        WeightSource::Gguf {
            model,
            fault_scale_layer: None,
            ..
        } if format.needs_gguf_blocks() => {
            let m = lookup(model)
                .ok_or_else(|| ModelError::Config(format!("unknown model `{model}`")))?;
            Some(GgufFile::open(&assets::ensure(&m.asset)?)?)
        }
        _ if format.needs_gguf_blocks() => {
            return Err(ModelError::Config(format!(
                "the {} format needs an unmodified catalog GGUF",
                format.label()
            )))
        }
        _ => None,
    };
    let exported = onnx_export::export(&weights, format, gguf.as_ref(), tmp.path(), &meta)?;
    let prepared = PreparedOnnx {
        model_path: dir.join("model.onnx"),
        config: weights.config.clone(),
        source: source.clone(),
        format,
        node_count: exported.node_count,
        parameter_count: weights.parameter_count(),
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
