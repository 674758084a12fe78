//! LLaMA weights as fp32 matrices in Hugging Face layout (`[out, in]`, Q/K rows in rotate-half order).
//!
//! GGUF stores Q and K permuted for ggml's adjacent-pair RoPE; [`hf_row_order`] undoes that, so every
//! consumer (ONNX export, reference forward, libtorch) uses the standard rotate-half RoPE.

use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::LlamaConfig;
use super::gguf::GgufFile;
use crate::error::ModelError;

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Array1<f32>,
    pub wq: Array2<f32>,
    pub wk: Array2<f32>,
    pub wv: Array2<f32>,
    pub wo: Array2<f32>,
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

/// For each row of the HF-layout Q (or K) matrix, the GGUF row that holds it.
///
/// llama.cpp's converter maps HF row `j * (hd/2) + i` of every head to row `2 * i + j` (j ∈ {0,1}).
pub fn hf_row_order(n_heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..half {
                order.push(h * head_dim + 2 * i + j);
            }
        }
    }
    order
}

fn permute_rows(m: &Array2<f32>, order: &[usize]) -> Array2<f32> {
    m.select(ndarray::Axis(0), order)
}

impl LlamaWeights {
    /// Dequantize every tensor of a LLaMA GGUF to fp32.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let config = LlamaConfig::from_gguf(gguf)?;
        let d = config.d_model;
        let kv = config.kv_dim();
        let ffn = config.ffn_dim;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Array2<f32>, ModelError> {
            let info = gguf.tensor_info(name)?;
            let shape = info.shape_row_major();
            if shape != [rows, cols] {
                return Err(ModelError::ShapeMismatch {
                    name: name.into(),
                    expected: vec![rows, cols],
                    actual: shape,
                });
            }
            let data = gguf.tensor_f32(name)?;
            Ok(Array2::from_shape_vec((rows, cols), data).expect("length checked against shape"))
        };
        let vector = |name: &str, len: usize| -> Result<Array1<f32>, ModelError> {
            let info = gguf.tensor_info(name)?;
            let shape = info.shape_row_major();
            if shape != [len] {
                return Err(ModelError::ShapeMismatch {
                    name: name.into(),
                    expected: vec![len],
                    actual: shape,
                });
            }
            Ok(Array1::from(gguf.tensor_f32(name)?))
        };
        let q_order = hf_row_order(config.n_heads, config.head_dim());
        let k_order = hf_row_order(config.n_kv_heads, config.head_dim());
        let mut layers = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let n = |part: &str| layer_tensor_name(l, part);
            layers.push(LayerWeights {
                attn_norm: vector(&n("attn_norm"), d)?,
                wq: permute_rows(&matrix(&n("attn_q"), d, d)?, &q_order),
                wk: permute_rows(&matrix(&n("attn_k"), kv, d)?, &k_order),
                wv: matrix(&n("attn_v"), kv, d)?,
                wo: matrix(&n("attn_output"), d, d)?,
                ffn_norm: vector(&n("ffn_norm"), d)?,
                w_gate: matrix(&n("ffn_gate"), ffn, d)?,
                w_up: matrix(&n("ffn_up"), ffn, d)?,
                w_down: matrix(&n("ffn_down"), d, ffn)?,
            });
        }
        let lm_head = if config.tied_embeddings {
            None
        } else {
            Some(matrix("output.weight", config.vocab_size, d)?)
        };
        Ok(LlamaWeights {
            token_embd: matrix("token_embd.weight", config.vocab_size, d)?,
            final_norm: vector("output_norm.weight", d)?,
            lm_head,
            layers,
            config,
        })
    }

    /// Seeded random weights of any LLaMA shape (uniform with std 0.02; norms 1): the scaling family.
    pub fn random(config: &LlamaConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bound = 0.02f32 * 3f32.sqrt();
        let mut matrix = |rows: usize, cols: usize| {
            Array2::from_shape_simple_fn((rows, cols), || rng.gen_range(-bound..bound))
        };
        let (d, kv, ffn) = (config.d_model, config.kv_dim(), config.ffn_dim);
        let token_embd = matrix(config.vocab_size, d);
        let layers = (0..config.n_layers)
            .map(|_| LayerWeights {
                attn_norm: Array1::ones(d),
                wq: matrix(d, d),
                wk: matrix(kv, d),
                wv: matrix(kv, d),
                wo: matrix(d, d),
                ffn_norm: Array1::ones(d),
                w_gate: matrix(ffn, d),
                w_up: matrix(ffn, d),
                w_down: matrix(d, ffn),
            })
            .collect();
        let lm_head = if config.tied_embeddings {
            None
        } else {
            Some(matrix(config.vocab_size, d))
        };
        Ok(LlamaWeights {
            config: config.clone(),
            token_embd,
            layers,
            final_norm: Array1::ones(d),
            lm_head,
        })
    }

    /// The output projection (`lm_head`, or the embedding when tied).
    pub fn output_matrix(&self) -> &Array2<f32> {
        self.lm_head.as_ref().unwrap_or(&self.token_embd)
    }

    /// Parameters actually held, counted tensor by tensor (tied head counted once).
    pub fn parameter_count(&self) -> u64 {
        let layer: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.len()
                    + l.wq.len()
                    + l.wk.len()
                    + l.wv.len()
                    + l.wo.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_row_order_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(...)
        let (n_head, hd) = (3, 8);
        let hf_rows: Vec<usize> = (0..n_head * hd).collect();
        let mut gguf_rows = vec![0; n_head * hd];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    // (h, j, i) -> (h, i, j)
                    gguf_rows[h * hd + i * 2 + j] = hf_rows[h * hd + j * hd / 2 + i];
                }
            }
        }
        let order = hf_row_order(n_head, hd);
        let recovered: Vec<usize> = order.iter().map(|&g| gguf_rows[g]).collect();
        assert_eq!(recovered, hf_rows);
    }

    #[test]
    fn random_family_member_has_the_config_parameter_count() {
        let c = LlamaConfig {
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
        };
        let w = LlamaWeights::random(&c, 7).unwrap();
        assert_eq!(w.parameter_count(), c.parameter_count());
        let w2 = LlamaWeights::random(&c, 7).unwrap();
        assert_eq!(w.layers[1].wq, w2.layers[1].wq, "same seed, same weights");
    }
}
