//! LLaMA hyper-parameters, read from GGUF metadata or chosen for a synthetic family member.

use serde::{Deserialize, Serialize};

use super::gguf::{GgufFile, MetaValue};
use crate::error::ModelError;

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
}

impl LlamaConfig {
    /// Read the config from GGUF metadata (`general.architecture` must be `llama`).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let arch = gguf
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| missing("general.architecture"))?;
        if arch != "llama" {
            return Err(ModelError::Config(format!(
                "architecture is `{arch}`; this model code implements `llama`"
            )));
        }
        let u = |key: &str| -> Result<usize, ModelError> {
            gguf.meta(key)
                .and_then(MetaValue::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| missing(key))
        };
        let f = |key: &str| -> Result<f32, ModelError> {
            gguf.meta(key)
                .and_then(MetaValue::as_f64)
                .map(|v| v as f32)
                .ok_or_else(|| missing(key))
        };
        let vocab_size = match gguf.meta("llama.vocab_size").and_then(MetaValue::as_u64) {
            Some(v) => v as usize,
            None => gguf
                .meta("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(|a| a.len())
                .ok_or_else(|| missing("tokenizer.ggml.tokens"))?,
        };
        let n_heads = u("llama.attention.head_count")?;
        let config = LlamaConfig {
            n_layers: u("llama.block_count")?,
            d_model: u("llama.embedding_length")?,
            n_heads,
            n_kv_heads: u("llama.attention.head_count_kv").unwrap_or(n_heads),
            ffn_dim: u("llama.feed_forward_length")?,
            vocab_size,
            rope_theta: f("llama.rope.freq_base").unwrap_or(10_000.0),
            rms_norm_eps: f("llama.attention.layer_norm_rms_epsilon")?,
            tied_embeddings: gguf.tensor_info("output.weight").is_err(),
            context_length: u("llama.context_length").unwrap_or(2048),
            bos_token_id: gguf
                .meta("tokenizer.ggml.bos_token_id")
                .and_then(MetaValue::as_u64)
                .map(|v| v as u32),
            eos_token_id: gguf
                .meta("tokenizer.ggml.eos_token_id")
                .and_then(MetaValue::as_u64)
                .map(|v| v as u32),
        };
        config.validate()?;
        Ok(config)
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
        if self.d_model % self.n_heads != 0 {
            return bad(format!(
                "d_model {} is not divisible by n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return bad(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
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
        let per_layer = 2 * d + d * d * 2 + 2 * d * kv + 3 * d * ffn;
        let embed = self.vocab_size as u64 * d;
        let head = if self.tied_embeddings { 0 } else { embed };
        embed + self.n_layers as u64 * per_layer + d + head
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
        }
    }

    #[test]
    fn smollm2_parameter_count_matches_the_model_card() {
        assert_eq!(smollm2_135m().parameter_count(), 134_515_008);
        let mut untied = smollm2_135m();
        untied.tied_embeddings = false;
        assert_eq!(untied.parameter_count(), 134_515_008 + 49152 * 576);
    }

    #[test]
    fn invalid_head_split_is_rejected() {
        let mut c = smollm2_135m();
        c.n_kv_heads = 4;
        assert!(c.validate().is_err());
    }
}
