//! LLaMA-family hyper-parameters, read from GGUF metadata or chosen for a synthetic family member.
//!
//! Architectures: `llama` (LLaMA 1-3, SmolLM, Mistral-style GQA; Llama-3 rope scaling through the
//! `rope_freqs.weight` frequency factors, linear rope scaling) and `qwen2` (q/k/v biases, rope in
//! rotate-half order). Anything else — another architecture, YaRN/LongRoPE scaling, partial rotary
//! dimensions, head sizes other than `d_model / n_heads` — is refused with an error that names it.

use serde::{Deserialize, Serialize};

use super::gguf::{GgufFile, MetaValue};
use crate::error::ModelError;

/// The GGUF architectures this model code implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    #[default]
    Llama,
    Qwen2,
}

impl Architecture {
    pub const SUPPORTED: [Architecture; 2] = [Architecture::Llama, Architecture::Qwen2];

    /// `general.architecture`, also the prefix of its metadata keys.
    pub fn key(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        Self::SUPPORTED.into_iter().find(|a| a.key() == key)
    }

    /// llama.cpp's converter permutes Q/K rows of `llama` models for ggml's adjacent-pair RoPE (the
    /// loader undoes it); `qwen2` uses rotate-half (NEOX) RoPE and is stored in Hugging Face order.
    pub fn permuted_qk(self) -> bool {
        self == Architecture::Llama
    }
}

/// RoPE frequency scaling: `inv_freq[i] = theta^(-2i/hd) / (factor · freq_factors[i])`, which is
/// what ggml's rope computes with `freq_scale = 1/factor` and `freq_factors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// Linear position interpolation (`rope.scaling.type = linear`, `rope.scaling.factor`); 1 = none.
    pub factor: f32,
    /// Per-frequency divisors (`rope_freqs.weight`, written by llama.cpp's converter for Llama 3.x).
    pub freq_factors: Option<Vec<f32>>,
}

impl Default for RopeScaling {
    fn default() -> Self {
        RopeScaling {
            factor: 1.0,
            freq_factors: None,
        }
    }
}

impl RopeScaling {
    pub fn is_none(&self) -> bool {
        *self == RopeScaling::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub tied_embeddings: bool,
    pub context_length: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub arch: Architecture,
    /// Q, K and V projections carry biases (Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub rope_scaling: RopeScaling,
}

impl LlamaConfig {
    /// Read the config from GGUF metadata (`general.architecture` must be one of
    /// [`Architecture::SUPPORTED`]).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let arch_key = gguf
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| missing("general.architecture"))?;
        let supported = || {
            Architecture::SUPPORTED
                .iter()
                .map(|a| a.key())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let arch = Architecture::from_key(arch_key).ok_or_else(|| {
            ModelError::UnsupportedArchitecture {
                arch: arch_key.to_string(),
                supported: supported(),
                detail: format!(
                    "{} declares it; llama.cpp may still run it (backend llama-cpp), the ONNX export and libtorch cannot",
                    gguf.path().display()
                ),
            }
        })?;
        let unsupported = |detail: String| ModelError::UnsupportedArchitecture {
            arch: arch_key.to_string(),
            supported: supported(),
            detail,
        };
        let key = |k: &str| format!("{arch_key}.{k}");
        let u = |k: &str| -> Result<usize, ModelError> {
            let k = key(k);
            gguf.meta(&k)
                .and_then(MetaValue::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| missing(&k))
        };
        let f = |k: &str| -> Result<f32, ModelError> {
            let k = key(k);
            gguf.meta(&k)
                .and_then(MetaValue::as_f64)
                .map(|v| v as f32)
                .ok_or_else(|| missing(&k))
        };
        let vocab_size = match gguf.meta(&key("vocab_size")).and_then(MetaValue::as_u64) {
            Some(v) => v as usize,
            None => gguf
                .meta("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(|a| a.len())
                .ok_or_else(|| missing("tokenizer.ggml.tokens"))?,
        };
        let n_heads = u("attention.head_count")?;
        let d_model = u("embedding_length")?;
        let head_dim = d_model / n_heads.max(1);
        for k in [
            "rope.dimension_count",
            "attention.key_length",
            "attention.value_length",
        ] {
            if let Ok(v) = u(k) {
                if v != head_dim {
                    return Err(unsupported(format!(
                        "{} = {v} differs from d_model / n_heads = {head_dim} (partial rotary or decoupled head sizes are not implemented)",
                        key(k)
                    )));
                }
            }
        }
        let scaling_type = gguf
            .meta(&key("rope.scaling.type"))
            .and_then(MetaValue::as_str)
            .unwrap_or("linear");
        let factor = match scaling_type {
            // llama.cpp's default when the key is absent is `linear` with factor 1.
            "linear" => f("rope.scaling.factor").unwrap_or(1.0),
            "none" => 1.0,
            other => {
                return Err(unsupported(format!(
                    "rope scaling `{other}` ({}) is not implemented (supported: none, linear, Llama-3 frequency factors)",
                    key("rope.scaling.type")
                )))
            }
        };
        if !(factor.is_finite() && factor > 0.0) {
            return Err(unsupported(format!(
                "{} = {factor}",
                key("rope.scaling.factor")
            )));
        }
        let freq_factors = match gguf.tensor_info("rope_freqs.weight") {
            Ok(_) => Some(gguf.tensor_f32("rope_freqs.weight")?),
            Err(_) => None,
        };
        if let Some(ff) = &freq_factors {
            if ff.len() != head_dim / 2 {
                return Err(unsupported(format!(
                    "rope_freqs.weight has {} factors, head_dim / 2 = {}",
                    ff.len(),
                    head_dim / 2
                )));
            }
        }
        let config = LlamaConfig {
            n_layers: u("block_count")?,
            d_model,
            n_heads,
            n_kv_heads: u("attention.head_count_kv").unwrap_or(n_heads),
            ffn_dim: u("feed_forward_length")?,
            vocab_size,
            rope_theta: f("rope.freq_base").unwrap_or(10_000.0),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon")?,
            tied_embeddings: gguf.tensor_info("output.weight").is_err(),
            context_length: u("context_length").unwrap_or(2048),
            bos_token_id: gguf
                .meta("tokenizer.ggml.bos_token_id")
                .and_then(MetaValue::as_u64)
                .map(|v| v as u32),
            eos_token_id: gguf
                .meta("tokenizer.ggml.eos_token_id")
                .and_then(MetaValue::as_u64)
                .map(|v| v as u32),
            arch,
            attention_bias: gguf.tensor_info("blk.0.attn_q.bias").is_ok(),
            rope_scaling: RopeScaling {
                factor,
                freq_factors,
            },
        };
        config.validate()?;
        config.check_tensor_names(gguf)?;
        Ok(config)
    }

    /// Every tensor of the file must be one this model code reads: an unknown tensor (a bias, a
    /// fused QKV, a MoE expert) would otherwise be silently ignored and the export would be wrong.
    fn check_tensor_names(&self, gguf: &GgufFile) -> Result<(), ModelError> {
        let mut known: std::collections::BTreeSet<String> = [
            "token_embd.weight",
            "output_norm.weight",
            "output.weight",
            "rope_freqs.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut parts = vec![
            "attn_norm.weight",
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ];
        if self.attention_bias {
            parts.extend(["attn_q.bias", "attn_k.bias", "attn_v.bias"]);
        }
        for l in 0..self.n_layers {
            known.extend(parts.iter().map(|p| format!("blk.{l}.{p}")));
        }
        if let Some(t) = gguf.tensors.iter().find(|t| !known.contains(&t.name)) {
            return Err(ModelError::UnsupportedArchitecture {
                arch: self.arch.key().into(),
                supported: Architecture::SUPPORTED
                    .iter()
                    .map(|a| a.key())
                    .collect::<Vec<_>>()
                    .join(", "),
                detail: format!(
                    "{} has tensor `{}`, which this model code does not implement{}",
                    gguf.path().display(),
                    t.name,
                    if self.attention_bias {
                        ""
                    } else {
                        " (only q/k/v biases are, when blk.0.attn_q.bias exists)"
                    }
                ),
            });
        }
        Ok(())
    }

    /// RoPE inverse frequencies `[head_dim / 2]`, with the model's scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let hd = self.head_dim();
        (0..hd / 2)
            .map(|i| {
                let base = 1.0 / self.rope_theta.powf(2.0 * i as f32 / hd as f32);
                let ff = self
                    .rope_scaling
                    .freq_factors
                    .as_ref()
                    .map_or(1.0, |f| f[i]);
                base / (self.rope_scaling.factor * ff)
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.n_layers == 0
            || self.d_model == 0
            || self.n_heads == 0
            || self.n_kv_heads == 0
            || self.vocab_size == 0
            || self.ffn_dim == 0
        {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "d_model {} is not divisible by n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Parameters implied by the config alone (embeddings + blocks + final norm + untied head).
    pub fn parameter_count(&self) -> u64 {
        let d = self.d_model as u64;
        let kv = self.kv_dim() as u64;
        let ffn = self.ffn_dim as u64;
        let bias = if self.attention_bias { d + 2 * kv } else { 0 };
        let per_layer = 2 * d + d * d * 2 + 2 * d * kv + 3 * d * ffn + bias;
        let embed = self.vocab_size as u64 * d;
        let head = if self.tied_embeddings { 0 } else { embed };
        embed + self.n_layers as u64 * per_layer + d + head
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A tiny GQA config for unit tests.
    pub fn tiny() -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_dim: 128,
            vocab_size: 100,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tied_embeddings: true,
            context_length: 128,
            bos_token_id: None,
            eos_token_id: None,
            arch: Architecture::Llama,
            attention_bias: false,
            rope_scaling: RopeScaling::default(),
        }
    }
}

fn missing(key: &str) -> ModelError {
    ModelError::MissingMetadata {
        key: key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn smollm2_135m() -> LlamaConfig {
        LlamaConfig {
            n_layers: 30,
            d_model: 576,
            n_heads: 9,
            n_kv_heads: 3,
            ffn_dim: 1536,
            vocab_size: 49152,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            tied_embeddings: true,
            context_length: 8192,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            arch: Architecture::Llama,
            attention_bias: false,
            rope_scaling: RopeScaling::default(),
        }
    }

    #[test]
    fn smollm2_parameter_count_matches_the_model_card() {
        assert_eq!(smollm2_135m().parameter_count(), 134_515_008);
        let mut untied = smollm2_135m();
        untied.tied_embeddings = false;
        assert_eq!(untied.parameter_count(), 134_515_008 + 49152 * 576);
    }

    /// A minimal GGUF with `general.architecture = arch` and llama-style keys.
    fn gguf_with(arch: &str, extra: Vec<(String, MetaValue)>) -> GgufFile {
        let mut meta = vec![
            (
                "general.architecture".to_string(),
                MetaValue::String(arch.into()),
            ),
            (format!("{arch}.block_count"), MetaValue::U32(1)),
            (format!("{arch}.embedding_length"), MetaValue::U32(64)),
            (format!("{arch}.feed_forward_length"), MetaValue::U32(128)),
            (format!("{arch}.attention.head_count"), MetaValue::U32(4)),
            (
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                MetaValue::F32(1e-5),
            ),
            (format!("{arch}.vocab_size"), MetaValue::U32(100)),
        ];
        meta.extend(extra);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        crate::model::gguf_writer::write_gguf(&p, &meta, &[]).unwrap();
        // The map stays valid after the directory is removed.
        GgufFile::open(&p).unwrap()
    }

    #[test]
    fn an_unsupported_architecture_or_rope_scaling_is_named() {
        let err = LlamaConfig::from_gguf(&gguf_with("gemma3", vec![])).unwrap_err();
        assert!(
            matches!(err, ModelError::UnsupportedArchitecture { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("gemma3") && err.to_string().contains("qwen2"),
            "{err}"
        );
        let yarn = vec![(
            "llama.rope.scaling.type".to_string(),
            MetaValue::String("yarn".into()),
        )];
        let err = LlamaConfig::from_gguf(&gguf_with("llama", yarn))
            .unwrap_err()
            .to_string();
        assert!(err.contains("yarn"), "{err}");
        let partial = vec![("llama.rope.dimension_count".to_string(), MetaValue::U32(8))];
        let err = LlamaConfig::from_gguf(&gguf_with("llama", partial))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rope.dimension_count"), "{err}");
        let c = LlamaConfig::from_gguf(&gguf_with("qwen2", vec![])).unwrap();
        assert_eq!(
            (c.arch, c.d_model, c.n_kv_heads),
            (Architecture::Qwen2, 64, 4)
        );
    }

    #[test]
    fn rope_scaling_divides_the_inverse_frequencies() {
        let mut c = smollm2_135m();
        let plain = c.rope_inv_freq();
        c.rope_scaling.factor = 2.0;
        c.rope_scaling.freq_factors = Some(vec![4.0; c.head_dim() / 2]);
        let scaled = c.rope_inv_freq();
        for (p, s) in plain.iter().zip(&scaled) {
            assert!((p / 8.0 - s).abs() <= 1e-7 * p, "{p} {s}");
        }
    }

    #[test]
    fn invalid_head_split_is_rejected() {
        let mut c = smollm2_135m();
        c.n_kv_heads = 4;
        assert!(c.validate().is_err());
    }
}
