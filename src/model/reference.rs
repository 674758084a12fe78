//! A plain fp32 LLaMA forward in Rust (ndarray): the independent reference that the ONNX export and
//! every backend's logits are checked against. Full recompute, no cache, no fusion — written to be
//! obviously the textbook computation (HF `LlamaForCausalLM` semantics, rotate-half RoPE).

use ndarray::{s, Array1, Array2, ArrayView1, Axis};

use super::weights::LlamaWeights;
use crate::error::ModelError;

fn rms_norm(x: &Array2<f32>, weight: ArrayView1<f32>, eps: f32) -> Array2<f32> {
    let mut out = x.clone();
    for mut row in out.rows_mut() {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        row.iter_mut()
            .zip(weight.iter())
            .for_each(|(v, w)| *v = *v * inv * w);
    }
    out
}

/// Apply rotate-half RoPE in place to `x` = `[seq, heads * hd]` for absolute positions `0..seq`,
/// with inverse frequencies `inv_freq` (`[hd / 2]`, scaling applied).
fn rope(x: &mut Array2<f32>, n_heads: usize, hd: usize, inv_freq: &[f32]) {
    let half = hd / 2;
    for (pos, mut row) in x.rows_mut().into_iter().enumerate() {
        for h in 0..n_heads {
            for (i, &freq) in inv_freq.iter().enumerate().take(half) {
                let angle = pos as f32 * freq;
                let (sin, cos) = angle.sin_cos();
                let (a, b) = (row[h * hd + i], row[h * hd + half + i]);
                row[h * hd + i] = a * cos - b * sin;
                row[h * hd + half + i] = b * cos + a * sin;
            }
        }
    }
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// Logits `[tokens.len(), vocab]` for every position of `tokens` (causal attention, positions from 0).
pub fn forward(w: &LlamaWeights, tokens: &[u32]) -> Result<Array2<f32>, ModelError> {
    let c = &w.config;
    let (d, hd, n_heads, n_kv) = (c.d_model, c.head_dim(), c.n_heads, c.n_kv_heads);
    let groups = n_heads / n_kv;
    let seq = tokens.len();
    if seq == 0 {
        return Err(ModelError::Config(
            "reference forward needs at least one token".into(),
        ));
    }
    let mut x = Array2::<f32>::zeros((seq, d));
    for (r, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        if t >= c.vocab_size {
            return Err(ModelError::Config(format!(
                "token id {t} is outside the vocabulary ({})",
                c.vocab_size
            )));
        }
        x.row_mut(r).assign(&w.token_embd.row(t));
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let inv_freq = c.rope_inv_freq();
    for l in &w.layers {
        let h = rms_norm(&x, l.attn_norm.view(), c.rms_norm_eps);
        let mut q = h.dot(&l.wq.t());
        let mut k = h.dot(&l.wk.t());
        let mut v = h.dot(&l.wv.t());
        for (m, b) in [(&mut q, &l.bq), (&mut k, &l.bk), (&mut v, &l.bv)] {
            if let Some(b) = b {
                *m += b;
            }
        }
        rope(&mut q, n_heads, hd, &inv_freq);
        rope(&mut k, n_kv, hd, &inv_freq);
        let mut attn = Array2::<f32>::zeros((seq, d));
        for head in 0..n_heads {
            let kv = head / groups;
            let qh = q.slice(s![.., head * hd..(head + 1) * hd]);
            let kh = k.slice(s![.., kv * hd..(kv + 1) * hd]);
            let vh = v.slice(s![.., kv * hd..(kv + 1) * hd]);
            let mut scores = qh.dot(&kh.t()) * scale;
            for i in 0..seq {
                let mut row = scores.row_mut(i);
                row.slice_mut(s![i + 1..]).fill(f32::NEG_INFINITY);
                let max = row
                    .iter()
                    .take(i + 1)
                    .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                row.mapv_inplace(|v| (v - max).exp());
                let sum = row.sum();
                row.mapv_inplace(|v| v / sum);
            }
            attn.slice_mut(s![.., head * hd..(head + 1) * hd])
                .assign(&scores.dot(&vh));
        }
        x = x + attn.dot(&l.wo.t());
        let h = rms_norm(&x, l.ffn_norm.view(), c.rms_norm_eps);
        let gate = h.dot(&l.w_gate.t());
        let up = h.dot(&l.w_up.t());
        let act = ndarray::Zip::from(&gate)
            .and(&up)
            .map_collect(|&g, &u| silu(g) * u);
        x = x + act.dot(&l.w_down.t());
    }
    let x = rms_norm(&x, w.final_norm.view(), c.rms_norm_eps);
    Ok(x.dot(&w.output_matrix().t()))
}

/// Index of the largest logit in each row.
pub fn argmax_rows(logits: &Array2<f32>) -> Vec<u32> {
    logits
        .axis_iter(Axis(0))
        .map(|row| argmax(row.view()) as u32)
        .collect()
}

pub fn argmax(row: ArrayView1<f32>) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// log-softmax of one row, in f64 for stable perplexity sums.
pub fn log_softmax(row: ArrayView1<f32>) -> Array1<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.mapv(|v| v as f64 - lse)
}
