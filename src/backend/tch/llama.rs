//! The LLaMA forward on libtorch, written as small blocks in the way candle-transformers'
//! `models/llama.rs` reads: [`RmsNorm`], [`Rotary`] (the RoPE tables), [`Attention`], [`Mlp`],
//! [`Block`] and [`Llama`], each holding its tensors with its own `forward`.
//!
//! Semantics are those of [`crate::model::reference::forward`]: RMSNorm with fp32 statistics,
//! rotate-half RoPE, GQA, SiLU-gated MLP, tied head. Q/K/V and gate/up projections are fused into
//! one matrix each (same numbers, fewer kernels). Every tensor operation uses tch's fallible `f_*`
//! form.

use ndarray::{Array1, Array2};
use tch::{Device, Kind, Tensor};

use super::evidence::Tally;
use super::runtime::TchResult;
use crate::model::{LlamaConfig, LlamaWeights};

/// RMSNorm with the statistics in fp32 (as HF does), scaled by `weight` in the model dtype.
pub(super) struct RmsNorm {
    pub(super) weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let kind = x.f_kind()?;
        let xf = x.f_to_kind(Kind::Float)?;
        let inv = xf
            .f_square()?
            .f_mean_dim(-1i64, true, None::<Kind>)?
            .f_add_scalar(f64::from(self.eps))?
            .f_rsqrt()?;
        xf.f_mul(&inv)?.f_to_kind(kind)?.f_mul(&self.weight)
    }
}

/// RoPE cos/sin tables `[context_length, head_dim / 2]` in the model dtype.
pub(super) struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// The tables for every position of the context, computed in f32 exactly as the reference does.
    fn new(c: &LlamaConfig, device: Device, kind: Kind) -> TchResult<Self> {
        let hd = c.head_dim();
        let half = hd / 2;
        let positions = c.context_length.max(1);
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for pos in 0..positions {
            for i in 0..half {
                let freq = 1.0 / c.rope_theta.powf(2.0 * i as f32 / hd as f32);
                let (s, co) = (pos as f32 * freq).sin_cos();
                cos.push(co);
                sin.push(s);
            }
        }
        let table = |v: &[f32]| -> TchResult<Tensor> {
            Tensor::f_from_slice(v)?
                .f_reshape([positions as i64, half as i64])?
                .f_to_kind(kind)?
                .f_to_device(device)
        };
        Ok(Rotary {
            cos: table(&cos)?,
            sin: table(&sin)?,
        })
    }

    /// How many positions the tables cover.
    pub(super) fn positions(&self) -> usize {
        self.cos.size().first().copied().unwrap_or(0) as usize
    }
}

/// What every block of one forward shares: the new tokens' positions `past..past + len`, their
/// rows of the RoPE tables, and the causal structure of their attention.
struct Window {
    past: i64,
    len: i64,
    /// `[len, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    /// Explicit mask `[len, past + len]` (several new tokens after a non-empty cache).
    mask: Option<Tensor>,
    /// A prompt from position 0: plain causal.
    is_causal: bool,
}

impl Window {
    fn new(rotary: &Rotary, past: i64, len: i64, device: Device) -> TchResult<Self> {
        let cos = rotary.cos.f_narrow(0, past, len)?;
        let sin = rotary.sin.f_narrow(0, past, len)?;
        // Causal structure: a single new token sees everything; a prompt from 0 is plain causal;
        // otherwise query i (absolute position past + i) sees keys 0..=past + i.
        let mask = if len > 1 && past > 0 {
            Some(Tensor::f_ones([len, past + len], (Kind::Bool, device))?.f_tril(past)?)
        } else {
            None
        };
        Ok(Window {
            past,
            len,
            cos,
            sin,
            mask,
            is_causal: len > 1 && past == 0,
        })
    }

    /// Rotate-half RoPE on `x` = `[heads, len, hd]`.
    fn rope(&self, x: &Tensor) -> TchResult<Tensor> {
        let half = x.size().last().copied().unwrap_or(0) / 2;
        let a = x.f_narrow(-1, 0, half)?;
        let b = x.f_narrow(-1, half, half)?;
        let first = a.f_mul(&self.cos)?.f_sub(&b.f_mul(&self.sin)?)?;
        let second = b.f_mul(&self.cos)?.f_add(&a.f_mul(&self.sin)?)?;
        Tensor::f_cat(&[first, second], -1)
    }
}

/// Grouped-query self-attention with fused Q/K/V and the output projection.
pub(super) struct Attention {
    /// `[d + 2 kv, d]`: Q rows, then K, then V.
    pub(super) wqkv: Tensor,
    pub(super) wo: Tensor,
    d: i64,
    head_dim: i64,
    n_heads: i64,
    n_kv_heads: i64,
}

impl Attention {
    /// Attention of the normed hidden states `h` = `[len, d]`, writing their K and V into `cache`
    /// (this layer's `[n_kv, capacity, head_dim]` pair) and attending over everything cached.
    fn forward(
        &self,
        h: &Tensor,
        w: &Window,
        cache: Option<(&Tensor, &Tensor)>,
    ) -> TchResult<Tensor> {
        let (d, hd, s) = (self.d, self.head_dim, w.len);
        let kv = self.n_kv_heads * hd;
        let qkv = h.f_linear(&self.wqkv, None::<Tensor>)?;
        let heads = |t: Tensor, n: i64| t.f_reshape([s, n, hd])?.f_transpose(0, 1); // [n, s, hd]
        let q = w.rope(&heads(qkv.f_narrow(1, 0, d)?, self.n_heads)?)?;
        let k = w.rope(&heads(qkv.f_narrow(1, d, kv)?, self.n_kv_heads)?)?;
        let v = heads(qkv.f_narrow(1, d + kv, kv)?, self.n_kv_heads)?;
        let (k, v) = match cache {
            Some((cache_k, cache_v)) => {
                cache_k.f_narrow(1, w.past, s)?.f_copy_(&k)?;
                cache_v.f_narrow(1, w.past, s)?.f_copy_(&v)?;
                let total = w.past + s;
                (
                    cache_k.f_narrow(1, 0, total)?,
                    cache_v.f_narrow(1, 0, total)?,
                )
            }
            None => (k, v),
        };
        let attn = Tensor::f_scaled_dot_product_attention(
            &q.f_unsqueeze(0)?,
            &k.f_unsqueeze(0)?,
            &v.f_unsqueeze(0)?,
            w.mask.as_ref(),
            0.0,
            w.is_causal,
            None::<f64>,
            true, // GQA: each K/V head serves n_heads / n_kv_heads query heads
        )?; // [1, nh, s, hd]
        let attn = attn
            .f_squeeze_dim(0)?
            .f_transpose(0, 1)?
            .f_reshape([s, d])?;
        attn.f_linear(&self.wo, None::<Tensor>)
    }
}

/// SiLU-gated MLP with fused gate/up.
pub(super) struct Mlp {
    /// `[2 ffn, d]`: gate rows, then up.
    pub(super) w_gate_up: Tensor,
    pub(super) w_down: Tensor,
    pub(super) ffn: i64,
}

impl Mlp {
    fn forward(&self, h: &Tensor) -> TchResult<Tensor> {
        let ffn = self.ffn;
        let gate_up = h.f_linear(&self.w_gate_up, None::<Tensor>)?;
        let act = gate_up
            .f_narrow(1, 0, ffn)?
            .f_silu()?
            .f_mul(&gate_up.f_narrow(1, ffn, ffn)?)?;
        act.f_linear(&self.w_down, None::<Tensor>)
    }
}

/// One transformer layer: pre-norm attention and pre-norm MLP, each with its residual add.
pub(super) struct Block {
    pub(super) attn_norm: RmsNorm,
    pub(super) attn: Attention,
    pub(super) ffn_norm: RmsNorm,
    pub(super) mlp: Mlp,
}

impl Block {
    fn forward(
        &self,
        x: &Tensor,
        w: &Window,
        cache: Option<(&Tensor, &Tensor)>,
    ) -> TchResult<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let x = x.f_add(&self.attn.forward(&h, w, cache)?)?;
        let h = self.ffn_norm.forward(&x)?;
        x.f_add(&self.mlp.forward(&h)?)
    }
}

/// Per-layer K and V, `[n_kv, capacity, head_dim]`.
pub(super) struct KvCache {
    pub(super) k: Vec<Tensor>,
    pub(super) v: Vec<Tensor>,
    pub(super) capacity: i64,
}

impl KvCache {
    /// A zeroed cache of `capacity` positions for every layer of `c`.
    pub(super) fn zeros(
        c: &LlamaConfig,
        capacity: usize,
        device: Device,
        kind: Kind,
    ) -> TchResult<Self> {
        let shape = [c.n_kv_heads as i64, capacity as i64, c.head_dim() as i64];
        let mut k = Vec::with_capacity(c.n_layers);
        let mut v = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            k.push(Tensor::f_zeros(shape, (kind, device))?);
            v.push(Tensor::f_zeros(shape, (kind, device))?);
        }
        Ok(KvCache {
            k,
            v,
            capacity: capacity as i64,
        })
    }
}

/// The model's tensors on the device, in the model dtype, with the RoPE tables.
pub(super) struct Llama {
    pub(super) embed: Tensor,
    pub(super) blocks: Vec<Block>,
    pub(super) norm: RmsNorm,
    /// `None` when tied to `embed`.
    lm_head: Option<Tensor>,
    pub(super) rotary: Rotary,
    device: Device,
}

impl Llama {
    /// Convert each matrix once (fusing Q/K/V and gate/up), tallying device, dtype and elements,
    /// then build the RoPE tables.
    pub(super) fn load(
        w: &LlamaWeights,
        device: Device,
        kind: Kind,
        seen: &mut Tally,
    ) -> TchResult<Self> {
        let c = &w.config;
        let eps = c.rms_norm_eps;
        let mut put = |host: Tensor| -> TchResult<Tensor> {
            let t = host.f_to_kind(kind)?.f_to_device(device)?;
            seen.add(&t, t.size().iter().product::<i64>() as u64);
            Ok(t)
        };
        let mut blocks = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let wqkv = Tensor::f_cat(&[matrix(&l.wq)?, matrix(&l.wk)?, matrix(&l.wv)?], 0)?;
            let w_gate_up = Tensor::f_cat(&[matrix(&l.w_gate)?, matrix(&l.w_up)?], 0)?;
            let attn_norm = put(vector(&l.attn_norm)?)?;
            let wqkv = put(wqkv)?;
            let wo = put(matrix(&l.wo)?)?;
            let ffn_norm = put(vector(&l.ffn_norm)?)?;
            let w_gate_up = put(w_gate_up)?;
            let w_down = put(matrix(&l.w_down)?)?;
            blocks.push(Block {
                attn_norm: RmsNorm {
                    weight: attn_norm,
                    eps,
                },
                attn: Attention {
                    wqkv,
                    wo,
                    d: c.d_model as i64,
                    head_dim: c.head_dim() as i64,
                    n_heads: c.n_heads as i64,
                    n_kv_heads: c.n_kv_heads as i64,
                },
                ffn_norm: RmsNorm {
                    weight: ffn_norm,
                    eps,
                },
                mlp: Mlp {
                    w_gate_up,
                    w_down,
                    ffn: c.ffn_dim as i64,
                },
            });
        }
        let embed = put(matrix(&w.token_embd)?)?;
        let norm = RmsNorm {
            weight: put(vector(&w.final_norm)?)?,
            eps,
        };
        let lm_head = w
            .lm_head
            .as_ref()
            .map(|m| matrix(m).and_then(&mut put))
            .transpose()?;
        Ok(Llama {
            embed,
            blocks,
            norm,
            lm_head,
            rotary: Rotary::new(c, device, kind)?,
            device,
        })
    }

    /// The output projection: the untied head, or the embedding table.
    pub(super) fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// One causal forward over `tokens` at positions `past_len..`, reading and extending `cache`
    /// (None: no cache, `past_len` must be 0). Returns logits `[n, vocab]` in the model dtype on the
    /// device, for the last position only (`last_only`) or every position.
    pub(super) fn forward(
        &self,
        tokens: &[u32],
        past_len: usize,
        cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> TchResult<Tensor> {
        let s = tokens.len() as i64;
        let past = past_len as i64;
        let total = past + s;
        if let Some(cache) = cache.as_deref() {
            if total > cache.capacity {
                return Err(tch::TchError::Shape(format!(
                    "KV cache holds {} positions, {total} needed",
                    cache.capacity
                )));
            }
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::f_from_slice(&ids)?.f_to_device(self.device)?;
        let window = Window::new(&self.rotary, past, s, self.device)?;
        let mut x = self.embed.f_index_select(0, &ids)?; // [s, d]
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref().map(|c| (&c.k[i], &c.v[i]));
            x = block.forward(&x, &window, layer_cache)?;
        }
        if last_only {
            x = x.f_narrow(0, s - 1, 1)?;
        }
        let x = self.norm.forward(&x)?;
        x.f_linear(self.head(), None::<Tensor>)
    }
}

/// An ndarray matrix as a CPU fp32 tensor of the same shape.
fn matrix(m: &Array2<f32>) -> TchResult<Tensor> {
    let m = m.as_standard_layout();
    let data = m
        .as_slice()
        .ok_or_else(|| tch::TchError::Shape("matrix not contiguous".into()))?;
    Tensor::f_from_slice(data)?.f_reshape([m.nrows() as i64, m.ncols() as i64])
}

fn vector(v: &Array1<f32>) -> TchResult<Tensor> {
    Tensor::f_from_slice(&v.to_vec())
}
