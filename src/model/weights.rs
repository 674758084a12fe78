//! LLaMA weights as fp32 matrices in Hugging Face layout (`[out, in]`, Q/K rows in rotate-half order),
//! all in memory: for small models (the reference forward, libtorch). Exports stream tensor by tensor
//! from a [`TensorSource`] instead.
//!
//! GGUF stores Q and K of `llama` models permuted for ggml's adjacent-pair RoPE; [`hf_row_order`]
//! undoes that, so every consumer (ONNX export, reference forward, libtorch) uses the standard
//! rotate-half RoPE.

use ndarray::{Array1, Array2};

use super::config::LlamaConfig;
use super::gguf::GgufFile;
pub use super::tensors::hf_row_order;
use super::tensors::{GgufSource, LayerPart, RandomSource, TensorId, TensorSource};
use crate::error::ModelError;

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Array1<f32>,
    pub wq: Array2<f32>,
    pub wk: Array2<f32>,
    pub wv: Array2<f32>,
    pub wo: Array2<f32>,
    /// Q/K/V biases (Qwen2); `None` without [`LlamaConfig::attention_bias`].
    pub bq: Option<Array1<f32>>,
    pub bk: Option<Array1<f32>>,
    pub bv: Option<Array1<f32>>,
    pub ffn_norm: Array1<f32>,
    pub w_gate: Array2<f32>,
    pub w_up: Array2<f32>,
    pub w_down: Array2<f32>,
}

#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub config: LlamaConfig,
    /// `[vocab, d_model]`
    pub token_embd: Array2<f32>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Array1<f32>,
    /// `[vocab, d_model]`; `None` when tied to `token_embd`.
    pub lm_head: Option<Array2<f32>>,
}

/// GGUF tensor names for one layer, in the order of [`LayerWeights`]' fields.
pub fn layer_tensor_name(layer: usize, part: &str) -> String {
    format!("blk.{layer}.{part}.weight")
}

impl LlamaWeights {
    /// Every tensor of `source`, in memory.
    pub fn from_source(source: &dyn TensorSource) -> Result<Self, ModelError> {
        let config = source.config().clone();
        let m = |id| source.matrix(id);
        let v = |id| source.vector(id);
        let bias = |l, p| -> Result<Option<Array1<f32>>, ModelError> {
            if config.attention_bias {
                Ok(Some(v(TensorId::Layer(l, p))?))
            } else {
                Ok(None)
            }
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let t = |p| TensorId::Layer(l, p);
            layers.push(LayerWeights {
                attn_norm: v(t(LayerPart::AttnNorm))?,
                wq: m(t(LayerPart::Q))?,
                wk: m(t(LayerPart::K))?,
                wv: m(t(LayerPart::V))?,
                wo: m(t(LayerPart::O))?,
                bq: bias(l, LayerPart::QBias)?,
                bk: bias(l, LayerPart::KBias)?,
                bv: bias(l, LayerPart::VBias)?,
                ffn_norm: v(t(LayerPart::FfnNorm))?,
                w_gate: m(t(LayerPart::Gate))?,
                w_up: m(t(LayerPart::Up))?,
                w_down: m(t(LayerPart::Down))?,
            });
        }
        Ok(LlamaWeights {
            token_embd: m(TensorId::TokenEmbd)?,
            final_norm: v(TensorId::FinalNorm)?,
            lm_head: if config.tied_embeddings {
                None
            } else {
                Some(m(TensorId::LmHead)?)
            },
            layers,
            config,
        })
    }

    /// Dequantize every tensor of a LLaMA-family GGUF to fp32.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        Self::from_source(&GgufSource::new(gguf)?)
    }

    /// Seeded random weights of any LLaMA shape (uniform with std 0.02; norms 1): the scaling family.
    pub fn random(config: &LlamaConfig, seed: u64) -> Result<Self, ModelError> {
        Self::from_source(&RandomSource::new(config, seed)?)
    }

    /// The output projection (`lm_head`, or the embedding when tied).
    pub fn output_matrix(&self) -> &Array2<f32> {
        self.lm_head.as_ref().unwrap_or(&self.token_embd)
    }

    /// Parameters actually held, counted tensor by tensor (tied head counted once).
    pub fn parameter_count(&self) -> u64 {
        let len = |b: &Option<Array1<f32>>| b.as_ref().map_or(0, |b| b.len());
        let layer: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.len()
                    + l.wq.len()
                    + l.wk.len()
                    + l.wv.len()
                    + l.wo.len()
                    + len(&l.bq)
                    + len(&l.bk)
                    + len(&l.bv)
                    + l.ffn_norm.len()
                    + l.w_gate.len()
                    + l.w_up.len()
                    + l.w_down.len()
            })
            .sum();
        (self.token_embd.len()
            + layer
            + self.final_norm.len()
            + self.lm_head.as_ref().map_or(0, |m| m.len())) as u64
    }

    /// Multiply every weight matrix of one layer by a factor: the planted fault for negative
    /// accuracy tests.
    pub fn scale_layer(&mut self, layer: usize, factor: f32) -> Result<(), ModelError> {
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Config(format!("no layer {layer}")))?;
        for m in [
            &mut l.wq,
            &mut l.wk,
            &mut l.wv,
            &mut l.wo,
            &mut l.w_gate,
            &mut l.w_up,
            &mut l.w_down,
        ] {
            m.mapv_inplace(|x| x * factor);
        }
        Ok(())
    }
}

/// In-memory weights are a source too (each tensor copied out on request).
impl TensorSource for LlamaWeights {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tensor(&self, id: TensorId) -> Result<Vec<f32>, ModelError> {
        let missing =
            || ModelError::Config(format!("{} is not part of this model", id.gguf_name()));
        let vec1 = |a: &Array1<f32>| a.to_vec();
        let vec2 = |a: &Array2<f32>| a.as_standard_layout().iter().copied().collect::<Vec<f32>>();
        Ok(match id {
            TensorId::TokenEmbd => vec2(&self.token_embd),
            TensorId::FinalNorm => vec1(&self.final_norm),
            TensorId::LmHead => vec2(self.lm_head.as_ref().ok_or_else(missing)?),
            TensorId::Layer(i, part) => {
                let l = self.layers.get(i).ok_or_else(missing)?;
                match part {
                    LayerPart::AttnNorm => vec1(&l.attn_norm),
                    LayerPart::Q => vec2(&l.wq),
                    LayerPart::K => vec2(&l.wk),
                    LayerPart::V => vec2(&l.wv),
                    LayerPart::O => vec2(&l.wo),
                    LayerPart::QBias => vec1(l.bq.as_ref().ok_or_else(missing)?),
                    LayerPart::KBias => vec1(l.bk.as_ref().ok_or_else(missing)?),
                    LayerPart::VBias => vec1(l.bv.as_ref().ok_or_else(missing)?),
                    LayerPart::FfnNorm => vec1(&l.ffn_norm),
                    LayerPart::Gate => vec2(&l.w_gate),
                    LayerPart::Up => vec2(&l.w_up),
                    LayerPart::Down => vec2(&l.w_down),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_family_member_has_the_config_parameter_count() {
        let c = crate::model::config::tests_support::tiny();
        let w = LlamaWeights::random(&c, 7).unwrap();
        assert_eq!(w.parameter_count(), c.parameter_count());
        let w2 = LlamaWeights::random(&c, 7).unwrap();
        assert_eq!(w.layers[1].wq, w2.layers[1].wq, "same seed, same weights");
        let mut biased = c.clone();
        biased.attention_bias = true;
        let w = LlamaWeights::random(&biased, 7).unwrap();
        assert_eq!(w.parameter_count(), biased.parameter_count());
    }

    #[test]
    fn in_memory_weights_hand_out_the_tensors_they_hold() {
        let c = crate::model::config::tests_support::tiny();
        let w = LlamaWeights::random(&c, 3).unwrap();
        let again = LlamaWeights::from_source(&w).unwrap();
        assert_eq!(again.layers[1].w_down, w.layers[1].w_down);
        assert_eq!(again.token_embd, w.token_embd);
    }
}
