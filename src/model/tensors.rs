//! Weights one tensor at a time: a [`TensorSource`] hands out each fp32 tensor in Hugging Face layout
//! when asked, so an exporter can write a model of billions of parameters while holding one tensor
//! (not the model) in fp32. [`LlamaWeights`](super::LlamaWeights) is the in-memory source for small
//! models (the reference forward, libtorch).
//!
//! Sources: a GGUF (dequantized and un-permuted on demand, optionally with a planted fault), seeded
//! random weights (each tensor from its own seed, so any order gives the same values), and
//! in-memory weights.

use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::LlamaConfig;
use super::gguf::GgufFile;
use crate::error::ModelError;

/// One tensor of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerPart {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerPart {
    pub const MATRICES: [LayerPart; 7] = [
        LayerPart::Q,
        LayerPart::K,
        LayerPart::V,
        LayerPart::O,
        LayerPart::Gate,
        LayerPart::Up,
        LayerPart::Down,
    ];

    /// GGUF name stem (`blk.N.<stem>.weight|bias`).
    pub fn gguf_stem(self) -> &'static str {
        match self {
            LayerPart::AttnNorm => "attn_norm",
            LayerPart::Q | LayerPart::QBias => "attn_q",
            LayerPart::K | LayerPart::KBias => "attn_k",
            LayerPart::V | LayerPart::VBias => "attn_v",
            LayerPart::O => "attn_output",
            LayerPart::FfnNorm => "ffn_norm",
            LayerPart::Gate => "ffn_gate",
            LayerPart::Up => "ffn_up",
            LayerPart::Down => "ffn_down",
        }
    }

    fn is_bias(self) -> bool {
        matches!(self, LayerPart::QBias | LayerPart::KBias | LayerPart::VBias)
    }

    /// Row-major shape (`[out, in]` for matrices).
    pub fn shape(self, c: &LlamaConfig) -> Vec<usize> {
        let (d, kv, ffn) = (c.d_model, c.kv_dim(), c.ffn_dim);
        match self {
            LayerPart::AttnNorm | LayerPart::FfnNorm | LayerPart::QBias => vec![d],
            LayerPart::KBias | LayerPart::VBias => vec![kv],
            LayerPart::Q | LayerPart::O => vec![d, d],
            LayerPart::K | LayerPart::V => vec![kv, d],
            LayerPart::Gate | LayerPart::Up => vec![ffn, d],
            LayerPart::Down => vec![d, ffn],
        }
    }
}

/// A tensor of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorId {
    TokenEmbd,
    FinalNorm,
    /// The untied output projection (`None`-equivalent when the config ties it).
    LmHead,
    Layer(usize, LayerPart),
}

impl TensorId {
    pub fn gguf_name(self) -> String {
        match self {
            TensorId::TokenEmbd => "token_embd.weight".into(),
            TensorId::FinalNorm => "output_norm.weight".into(),
            TensorId::LmHead => "output.weight".into(),
            TensorId::Layer(l, p) => format!(
                "blk.{l}.{}.{}",
                p.gguf_stem(),
                if p.is_bias() { "bias" } else { "weight" }
            ),
        }
    }

    pub fn shape(self, c: &LlamaConfig) -> Vec<usize> {
        match self {
            TensorId::TokenEmbd | TensorId::LmHead => vec![c.vocab_size, c.d_model],
            TensorId::FinalNorm => vec![c.d_model],
            TensorId::Layer(_, p) => p.shape(c),
        }
    }

    fn is_norm(self) -> bool {
        matches!(
            self,
            TensorId::FinalNorm
                | TensorId::Layer(_, LayerPart::AttnNorm)
                | TensorId::Layer(_, LayerPart::FfnNorm)
        )
    }
}

/// Hands out the model's tensors one at a time, fp32, Hugging Face layout (`[out, in]`, Q/K rows in
/// rotate-half order).
pub trait TensorSource: Sync {
    fn config(&self) -> &LlamaConfig;
    /// The tensor as a flat row-major fp32 vector of [`TensorId::shape`].
    fn tensor(&self, id: TensorId) -> Result<Vec<f32>, ModelError>;

    fn matrix(&self, id: TensorId) -> Result<Array2<f32>, ModelError> {
        let shape = id.shape(self.config());
        let data = self.tensor(id)?;
        Array2::from_shape_vec((shape[0], shape[1]), data)
            .map_err(|e| ModelError::Config(format!("{}: {e}", id.gguf_name())))
    }
    fn vector(&self, id: TensorId) -> Result<Array1<f32>, ModelError> {
        Ok(Array1::from(self.tensor(id)?))
    }
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

/// Reorder the rows of a row-major `[rows, cols]` buffer (`order[i]` = source row of row i).
fn permute_rows(data: &[f32], cols: usize, order: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for &r in order {
        out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    out
}

/// A GGUF, dequantized tensor by tensor on request.
pub struct GgufSource<'a> {
    gguf: &'a GgufFile,
    config: LlamaConfig,
    q_order: Vec<usize>,
    k_order: Vec<usize>,
    /// Every matrix of one layer multiplied by a factor: a planted fault for negative tests.
    fault_scale_layer: Option<(usize, f32)>,
}

impl<'a> GgufSource<'a> {
    pub fn new(gguf: &'a GgufFile) -> Result<Self, ModelError> {
        let config = LlamaConfig::from_gguf(gguf)?;
        let hd = config.head_dim();
        Ok(GgufSource {
            q_order: hf_row_order(config.n_heads, hd),
            k_order: hf_row_order(config.n_kv_heads, hd),
            config,
            gguf,
            fault_scale_layer: None,
        })
    }

    pub fn with_fault(mut self, fault: Option<(usize, f32)>) -> Result<Self, ModelError> {
        if let Some((layer, _)) = fault {
            if layer >= self.config.n_layers {
                return Err(ModelError::Config(format!("no layer {layer}")));
            }
        }
        self.fault_scale_layer = fault;
        Ok(self)
    }

    pub fn gguf(&self) -> &GgufFile {
        self.gguf
    }
}

impl TensorSource for GgufSource<'_> {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tensor(&self, id: TensorId) -> Result<Vec<f32>, ModelError> {
        let name = id.gguf_name();
        let info = self.gguf.tensor_info(&name)?;
        let expected = id.shape(&self.config);
        let actual = info.shape_row_major();
        if actual != expected {
            return Err(ModelError::ShapeMismatch {
                name,
                expected,
                actual,
            });
        }
        let mut data = self.gguf.tensor_f32(&name)?;
        if self.config.arch.permuted_qk() {
            let cols = if expected.len() == 2 { expected[1] } else { 1 };
            match id {
                TensorId::Layer(_, LayerPart::Q | LayerPart::QBias) => {
                    data = permute_rows(&data, cols, &self.q_order)
                }
                TensorId::Layer(_, LayerPart::K | LayerPart::KBias) => {
                    data = permute_rows(&data, cols, &self.k_order)
                }
                _ => {}
            }
        }
        if let (Some((layer, factor)), TensorId::Layer(l, part)) = (self.fault_scale_layer, id) {
            if l == layer && LayerPart::MATRICES.contains(&part) {
                data.iter_mut().for_each(|v| *v *= factor);
            }
        }
        Ok(data)
    }
}

/// Seeded random weights of any LLaMA shape: uniform, standard deviation `std` for layer matrices
/// and biases and `embed_std` for the embedding and head (both 0.02 by default), norms 1. Each tensor
/// has its own stream (seed × tensor name), so values do not depend on the order tensors are asked for.
#[derive(Debug, Clone)]
pub struct RandomSource {
    pub config: LlamaConfig,
    pub seed: u64,
    pub std: f32,
    pub embed_std: f32,
}

impl RandomSource {
    pub fn new(config: &LlamaConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        Ok(RandomSource {
            config: config.clone(),
            seed,
            std: 0.02,
            embed_std: 0.02,
        })
    }

    fn stream(&self, id: TensorId) -> ChaCha8Rng {
        let tag = <sha2::Sha256 as sha2::Digest>::digest(
            format!("{}:{}", self.seed, id.gguf_name()).as_bytes(),
        );
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&tag);
        ChaCha8Rng::from_seed(seed)
    }
}

impl TensorSource for RandomSource {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tensor(&self, id: TensorId) -> Result<Vec<f32>, ModelError> {
        let n: usize = id.shape(&self.config).iter().product();
        if id.is_norm() {
            return Ok(vec![1.0; n]);
        }
        let std = match id {
            TensorId::TokenEmbd | TensorId::LmHead => self.embed_std,
            _ => self.std,
        };
        let bound = std * 3f32.sqrt();
        let mut rng = self.stream(id);
        Ok((0..n).map(|_| rng.gen_range(-bound..bound)).collect())
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
    fn random_tensors_do_not_depend_on_the_order_they_are_asked_for() {
        let c = crate::model::config::tests_support::tiny();
        let s = RandomSource::new(&c, 9).unwrap();
        let a = s.tensor(TensorId::Layer(1, LayerPart::Q)).unwrap();
        let _ = s.tensor(TensorId::TokenEmbd).unwrap();
        assert_eq!(a, s.tensor(TensorId::Layer(1, LayerPart::Q)).unwrap());
        assert_ne!(a, s.tensor(TensorId::Layer(0, LayerPart::Q)).unwrap());
        let other = RandomSource::new(&c, 10).unwrap();
        assert_ne!(a, other.tensor(TensorId::Layer(1, LayerPart::Q)).unwrap());
    }
}
