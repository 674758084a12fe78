//! A static-shape decode step, run eagerly or captured once as a CUDA graph and replayed per token
//! (the way Hugging Face's static KV cache makes `torch.compile(mode="reduce-overhead")` work).
//!
//! Every tensor the step reads or writes is allocated once, before capture, and updated in place:
//! the KV cache `[n_kv, L, head_dim]` per layer, the input token and its position as one-element
//! device tensors, a step counter and the output token buffer. Attention runs over all `L`
//! positions with an additive mask row selected by the position tensor, and RoPE is one matrix per
//! position (`x · R[pos]`, selected the same way), so the step's kernels and shapes never change.
//! The step ends by writing the greedy token into the input slot and the output buffer and advancing
//! position and step: consecutive replays decode consecutive tokens with no host work in between,
//! and the host reads the tokens once at the end.
//!
//! The prefill (and the full recompute the decode-fraction gate compares against) uses the same
//! formulation over the whole sequence ([`prefill`]), so cached and recomputed tokens differ only in
//! what the cache holds. In CUDA-graph mode the prefill is captured too, once per prompt length
//! (its ids are copied into a fixed slot first), so neither phase is host-launch-bound. Kernel count per step (what a replay launches) is read from the captured graph; a decode step is
//! about 14 kernels per layer: fused RMSNorm ×2, QKV, RoPE (one matmul for Q and K together), two
//! cache writes, scores (mask added by `baddbmm`), softmax, P·V, output projection with the residual
//! add (`addmm`), gate/up, SiLU, multiply, down projection with the residual add.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::cuda_graph::{CudaGraph, GraphCounts};
use super::llama::{Block, KvCache, Llama};
use super::runtime::TchResult;
use super::TchBackend;
use crate::backend::evidence::{DecodeMode, GraphEvidence};
use crate::backend::{Generation, PhaseClock};
use crate::error::BackendError;
use crate::model::LlamaConfig;

/// Smallest static cache length the step is built for; larger needs round up to a power of two.
pub const MIN_STATIC_LEN: usize = 128;

/// The static cache length for a generation of `needed` positions, or `None` beyond the context.
pub fn static_len(needed: usize, context_length: usize) -> Option<usize> {
    let l = needed.max(MIN_STATIC_LEN).next_power_of_two();
    if needed > context_length {
        return None;
    }
    Some(l.min(context_length))
}

/// The step's persistent tensors (fixed addresses: a captured graph refers to them).
pub(super) struct StaticState {
    len: i64,
    cache: KvCache,
    /// `[len]` i64: the prompt ids the prefill reads (copied in before each prefill).
    ids: Tensor,
    /// `[1]` i64: the token the next step reads.
    tok: Tensor,
    /// `[1]` i64: its position.
    pos: Tensor,
    /// `[1]` i64: the index in `out` the next step writes.
    step: Tensor,
    /// `[len]` i64: generated tokens.
    out: Tensor,
    /// `[len, head_dim, head_dim]`: RoPE as a matrix per position (row vector times matrix).
    rope: Tensor,
    /// `[len, 1, len]`: additive mask per position (0 up to it, −inf after).
    mask: Tensor,
}

/// A static decoder for one cache length, with its graph once captured.
pub(super) struct StaticDecoder {
    state: StaticState,
    graph: Option<CudaGraph>,
    /// CUDA-graph mode: the prefill (with the first token written into the slots) captured per
    /// prompt length, so the prefill is not host-launch-bound either.
    prefill_graphs: BTreeMap<usize, CudaGraph>,
}

impl StaticState {
    fn new(c: &LlamaConfig, len: usize, device: Device, kind: Kind) -> TchResult<Self> {
        let l = len as i64;
        let hd = c.head_dim();
        let half = hd / 2;
        // Zeros, not uninitialized memory: masked positions still enter Q·Kᵀ (NaN · 0 is NaN).
        let cache = KvCache::zeros(c, len, device, kind)?;
        let mut rope = vec![0f32; len * hd * hd];
        for pos in 0..len {
            let m = &mut rope[pos * hd * hd..(pos + 1) * hd * hd];
            for i in 0..half {
                let freq = 1.0 / c.rope_theta.powf(2.0 * i as f32 / hd as f32);
                let (s, co) = (pos as f32 * freq).sin_cos();
                // out[i] = x[i]·cos − x[i+half]·sin; out[i+half] = x[i+half]·cos + x[i]·sin
                m[i * hd + i] = co;
                m[(i + half) * hd + i] = -s;
                m[(i + half) * hd + i + half] = co;
                m[i * hd + i + half] = s;
            }
        }
        let mut mask = vec![0f32; len * len];
        for p in 0..len {
            for j in p + 1..len {
                mask[p * len + j] = f32::NEG_INFINITY;
            }
        }
        let put = |v: &[f32], shape: &[i64]| -> TchResult<Tensor> {
            Tensor::f_from_slice(v)?
                .f_reshape(shape)?
                .f_to_kind(kind)?
                .f_to_device(device)
        };
        let index = |v: i64| Tensor::f_from_slice(&[v])?.f_to_device(device);
        Ok(StaticState {
            len: l,
            cache,
            ids: Tensor::f_zeros([l], (Kind::Int64, device))?,
            tok: index(0)?,
            pos: index(0)?,
            step: index(0)?,
            out: Tensor::f_zeros([l], (Kind::Int64, device))?,
            rope: put(&rope, &[l, hd as i64, hd as i64])?,
            mask: put(&mask, &[l, 1, l])?,
        })
    }

    /// Copy `tokens` into the prompt slot the prefill reads (outside any capture: a host copy).
    fn load_ids(&mut self, tokens: &[u32]) -> TchResult<()> {
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let host = Tensor::f_from_slice(&ids)?;
        self.ids.f_narrow(0, 0, ids.len() as i64)?.f_copy_(&host)
    }

    /// Set the slots for the first decode step after a prefill of `prompt_len` tokens whose greedy
    /// token is `first` (`[1]` i64 on the device).
    fn start(&mut self, prompt_len: usize, first: &Tensor) -> TchResult<()> {
        self.tok.f_copy_(first)?;
        self.out.f_narrow(0, 0, 1)?.f_copy_(first)?;
        let _ = self.pos.f_fill_(prompt_len as i64)?;
        let _ = self.step.f_fill_(1)?;
        Ok(())
    }
}

/// The model's dimensions as the static step's tensor shapes use them.
struct Dims {
    d: i64,
    hd: i64,
    nh: i64,
    nkv: i64,
    /// Width of the K and V projections (`nkv · hd`).
    kv: i64,
    /// Query heads per KV head.
    group: i64,
    eps: f64,
    /// `1 / sqrt(head_dim)`.
    scale: f64,
}

impl Dims {
    fn of(c: &LlamaConfig) -> Self {
        let (d, hd, nh, nkv) = (
            c.d_model as i64,
            c.head_dim() as i64,
            c.n_heads as i64,
            c.n_kv_heads as i64,
        );
        Dims {
            d,
            hd,
            nh,
            nkv,
            kv: nkv * hd,
            group: nh / nkv,
            eps: f64::from(c.rms_norm_eps),
            scale: 1.0 / (hd as f64).sqrt(),
        }
    }
}

/// The MLP half of block `b` in the static formulation, residual included: fused RMSNorm, gate/up,
/// SiLU times up, and the down projection with the residual add inside `addmm`.
fn mlp_residual(x: &Tensor, b: &Block, m: &Dims) -> TchResult<Tensor> {
    let ffn = b.mlp.ffn;
    let h = x.f_rms_norm([m.d], Some(&b.ffn_norm.weight), m.eps)?;
    let gate_up = h.f_linear(&b.mlp.w_gate_up, None::<Tensor>)?;
    let act = gate_up
        .f_narrow(1, 0, ffn)?
        .f_silu()?
        .f_mul(&gate_up.f_narrow(1, ffn, ffn)?)?;
    x.f_addmm(&act, &b.mlp.w_down.f_tr()?)
}

/// One decode step on static tensors; returns the step's logits `[1, vocab]` (for evidence only:
/// the step itself already wrote its token into the slots).
fn step(w: &Llama, c: &LlamaConfig, s: &mut StaticState) -> TchResult<Tensor> {
    let m = Dims::of(c);
    let (d, hd, nh, nkv, kv) = (m.d, m.hd, m.nh, m.nkv, m.kv);
    let rope = s.rope.f_index_select(0, &s.pos)?.f_reshape([hd, hd])?;
    let mask = s.mask.f_index_select(0, &s.pos)?; // [1, 1, L], broadcast over heads
    let mut x = w.embed.f_index_select(0, &s.tok)?; // [1, d]
    for (i, b) in w.blocks.iter().enumerate() {
        let h = x.f_rms_norm([d], Some(&b.attn_norm.weight), m.eps)?;
        let qkv = h.f_linear(&b.attn.wqkv, None::<Tensor>)?; // [1, d + 2 kv]
        let qk = qkv
            .f_narrow(1, 0, d + kv)?
            .f_reshape([nh + nkv, hd])?
            .f_mm(&rope)?;
        let q = qk.f_narrow(0, 0, nh)?.f_reshape([nkv, m.group, hd])?;
        let k = qk.f_narrow(0, nh, nkv)?.f_reshape([nkv, 1, hd])?;
        let v = qkv.f_narrow(1, d + kv, kv)?.f_reshape([nkv, 1, hd])?;
        let _ = s.cache.k[i].f_index_copy_(1, &s.pos, &k)?;
        let _ = s.cache.v[i].f_index_copy_(1, &s.pos, &v)?;
        let scores = mask.f_baddbmm(&q, &s.cache.k[i].f_transpose(1, 2)?, 1.0, m.scale)?; // [nkv, group, L]
        let probs = scores.f_softmax(-1, None::<Kind>)?;
        let attn = probs.f_bmm(&s.cache.v[i])?.f_reshape([1, d])?;
        x = x.f_addmm(&attn, &b.attn.wo.f_tr()?)?;
        x = mlp_residual(&x, b, &m)?;
    }
    let x = x.f_rms_norm([d], Some(&w.norm.weight), m.eps)?;
    let logits = x.f_linear(w.head(), None::<Tensor>)?;
    let next = logits.f_argmax(-1, false)?; // [1] i64
    let _ = s.out.f_index_copy_(0, &s.step, &next)?;
    s.tok.f_copy_(&next)?;
    let _ = s.pos.f_add_scalar_(1)?;
    let _ = s.step.f_add_scalar_(1)?;
    Ok(logits)
}

/// The static formulation over a whole sequence at positions `0..s` (the same operations as [`step`]:
/// fused RMSNorm, RoPE as one matrix per position, masked attention through `baddbmm`, residual
/// adds inside `addmm`), writing every position's K and V into the static cache. It is the prefill
/// of the static and graph loops, and, called on a whole sequence with nothing cached, their full
/// recompute: the KV-cached loop and the recompute then differ in nothing but the cache.
/// Returns the logits of the last position, `[1, vocab]`.
fn prefill(w: &Llama, c: &LlamaConfig, st: &mut StaticState, s: usize) -> TchResult<Tensor> {
    let m = Dims::of(c);
    let (d, hd, nh, nkv, kv, group) = (m.d, m.hd, m.nh, m.nkv, m.kv, m.group);
    let s = s as i64;
    if s > st.len {
        return Err(tch::TchError::Shape(format!(
            "{s} positions do not fit the static cache of {}",
            st.len
        )));
    }
    let ids = st.ids.f_narrow(0, 0, s)?;
    // RoPE matrices `[s, hd, hd]`; the causal mask `[s, s]` with its rows repeated per query head of
    // a group (rows ordered (head in group, position)).
    let rope = st.rope.f_narrow(0, 0, s)?;
    let mask = st
        .mask
        .f_narrow(0, 0, s)?
        .f_reshape([s, st.len])?
        .f_narrow(1, 0, s)?
        .f_repeat([group, 1])?;
    let mut x = w.embed.f_index_select(0, &ids)?; // [s, d]
    for (i, b) in w.blocks.iter().enumerate() {
        let h = x.f_rms_norm([d], Some(&b.attn_norm.weight), m.eps)?;
        let qkv = h.f_linear(&b.attn.wqkv, None::<Tensor>)?; // [s, d + 2 kv]
        let qk = qkv
            .f_narrow(1, 0, d + kv)?
            .f_reshape([s, nh + nkv, hd])?
            .f_bmm(&rope)?; // [s, nh + nkv, hd]
        let k = qk.f_narrow(1, nh, nkv)?.f_transpose(0, 1)?; // [nkv, s, hd]
        let v = qkv
            .f_narrow(1, d + kv, kv)?
            .f_reshape([s, nkv, hd])?
            .f_transpose(0, 1)?;
        st.cache.k[i].f_narrow(1, 0, s)?.f_copy_(&k)?;
        st.cache.v[i].f_narrow(1, 0, s)?.f_copy_(&v)?;
        let q = qk
            .f_narrow(1, 0, nh)?
            .f_reshape([s, nkv, group, hd])?
            .f_permute([1, 2, 0, 3])?
            .f_reshape([nkv, group * s, hd])?;
        let scores = mask.f_baddbmm(&q, &k.f_transpose(1, 2)?, 1.0, m.scale)?; // [nkv, group s, s]
        let attn = scores
            .f_softmax(-1, None::<Kind>)?
            .f_bmm(&v)? // [nkv, group s, hd]
            .f_reshape([nkv, group, s, hd])?
            .f_permute([2, 0, 1, 3])?
            .f_reshape([s, d])?;
        x = x.f_addmm(&attn, &b.attn.wo.f_tr()?)?;
        x = mlp_residual(&x, b, &m)?;
    }
    let x = x
        .f_narrow(0, s - 1, 1)?
        .f_rms_norm([d], Some(&w.norm.weight), m.eps)?;
    x.f_linear(w.head(), None::<Tensor>)
}

/// [`prefill`] of the `s` ids in the prompt slot, then the greedy first token into the decode slots
/// (no host synchronization: capturable).
fn prefill_and_start(
    w: &Llama,
    c: &LlamaConfig,
    st: &mut StaticState,
    s: usize,
) -> TchResult<Tensor> {
    let logits = prefill(w, c, st, s)?;
    let first = logits.f_argmax(-1, false)?;
    st.start(s, &first)?;
    Ok(logits)
}

impl TchBackend {
    /// The decoder for a cache of `len` positions, built (and for [`DecodeMode::CudaGraph`],
    /// captured) on first use. Taken out of the map while in use.
    fn take_decoder(&mut self, len: usize) -> Result<StaticDecoder, BackendError> {
        if let Some(d) = self.static_decoders.remove(&len) {
            return Ok(d);
        }
        let state = tch::no_grad(|| StaticState::new(&self.config, len, self.device, self.kind))
            .map_err(|e| self.err("static cache", e))?;
        let mut decoder = StaticDecoder {
            state,
            graph: None,
            prefill_graphs: BTreeMap::new(),
        };
        if self.decode == DecodeMode::CudaGraph {
            let mut graph = self.new_graph()?;
            let (w, c, state) = (&self.model, &self.config, &mut decoder.state);
            let captured = tch::no_grad(|| {
                graph.on_side_stream(|g| -> Result<GraphCounts, String> {
                    // Warm up outside the capture (cuBLAS handles, workspaces, allocator blocks),
                    // from position 0 so every index stays inside the static cache.
                    for _ in 0..2 {
                        let _ = step(w, c, state).map_err(|e| format!("warm-up step: {e}"))?;
                    }
                    g.capture(|| step(w, c, state).map(|_| ()))
                })
            });
            captured
                .and_then(|r| r)
                .map_err(|e| self.err("capture", e))?;
            decoder.graph = Some(graph);
        }
        Ok(decoder)
    }

    /// An empty CUDA graph on this backend's device.
    fn new_graph(&self) -> Result<CudaGraph, BackendError> {
        let Device::Cuda(index) = self.device else {
            return Err(self.err("capture", "CUDA graphs need a CUDA device"));
        };
        CudaGraph::new(index).map_err(|e| self.err("capture", e))
    }

    /// Greedy generation through the static prefill and step (both replayed as CUDA graphs in
    /// CUDA-graph mode).
    pub(super) fn generate_static(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Generation, BackendError> {
        let needed = prompt.len() + gen_tokens;
        let len = static_len(needed, self.config.context_length).ok_or_else(|| {
            self.err(
                "generate",
                format!(
                    "{needed} positions exceed the context length {}",
                    self.config.context_length
                ),
            )
        })?;
        let mut decoder = self.take_decoder(len)?;
        let result = match decoder.graph.take() {
            Some(mut graph) => {
                let r = graph.on_side_stream(|g| {
                    let mut prefill_graph = self.prefill_graph(&mut decoder, prompt)?;
                    let r = self.run_static(
                        &mut decoder.state,
                        Some((g, &mut prefill_graph)),
                        prompt,
                        gen_tokens,
                    );
                    decoder.prefill_graphs.insert(prompt.len(), prefill_graph);
                    r
                });
                decoder.graph = Some(graph);
                r.map_err(|e| self.err("decode", e)).and_then(|r| r)
            }
            None => self.run_static(&mut decoder.state, None, prompt, gen_tokens),
        };
        self.static_decoders.insert(len, decoder);
        result
    }

    /// The captured prefill for `prompt`'s length, taken out of the decoder (captured on first use,
    /// after one eager warm-up). Call on the step graph's side stream; put it back after use.
    fn prefill_graph(
        &self,
        decoder: &mut StaticDecoder,
        prompt: &[u32],
    ) -> Result<CudaGraph, BackendError> {
        let s = prompt.len();
        if let Some(g) = decoder.prefill_graphs.remove(&s) {
            return Ok(g);
        }
        let mut graph = self.new_graph()?;
        let (w, c, state) = (&self.model, &self.config, &mut decoder.state);
        let captured = tch::no_grad(|| {
            graph.on_side_stream(|g| -> Result<GraphCounts, String> {
                state.load_ids(prompt).map_err(|e| e.to_string())?;
                let _ = prefill_and_start(w, c, state, s)
                    .map_err(|e| format!("warm-up prefill: {e}"))?;
                g.capture(|| prefill_and_start(w, c, state, s).map(|_| ()))
            })
        });
        captured
            .and_then(|r| r)
            .map_err(|e| self.err("capture prefill", e))?;
        Ok(graph)
    }

    /// One generation on the static state: prefill and decode steps launched from the host, or
    /// (`graphs`: decode step, prefill) replayed.
    fn run_static(
        &mut self,
        state: &mut StaticState,
        mut graphs: Option<(&mut CudaGraph, &mut CudaGraph)>,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Generation, BackendError> {
        if prompt.len() + gen_tokens > state.len as usize {
            return Err(self.err(
                "generate",
                format!("static cache of {} positions is too short", state.len),
            ));
        }
        self.synchronize("prefill")?;
        let mut clock = PhaseClock::start();
        state.load_ids(prompt).map_err(|e| self.err("prefill", e))?;
        match graphs.as_mut() {
            Some((_, prefill_graph)) => {
                prefill_graph.replay().map_err(|e| self.err("prefill", e))?
            }
            None => {
                let logits = tch::no_grad(|| {
                    prefill_and_start(&self.model, &self.config, state, prompt.len())
                })
                .map_err(|e| self.err("prefill", e))?;
                self.outputs_seen.add(&logits, 1);
            }
        }
        self.synchronize("prefill")?;
        clock.prefill_done();
        for _ in 1..gen_tokens {
            match graphs.as_mut() {
                Some((g, _)) => g.replay().map_err(|e| self.err("decode", e))?,
                None => {
                    let logits = tch::no_grad(|| step(&self.model, &self.config, state))
                        .map_err(|e| self.err("decode", e))?;
                    self.outputs_seen.add(&logits, 1);
                }
            }
        }
        let mut tokens = vec![0i64; gen_tokens];
        state
            .out
            .f_narrow(0, 0, gen_tokens as i64)
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_copy_data(&mut tokens, gen_tokens))
            .map_err(|e| self.err("decode", e))?;
        self.synchronize("decode")?;
        clock.stop();
        let tokens = tokens
            .into_iter()
            .map(|t| u32::try_from(t).map_err(|_| self.err("decode", format!("token {t}"))))
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(clock.finish(prompt.len(), tokens))
    }

    /// Greedy tokens by recomputing the whole sequence at every step with the static formulation and
    /// nothing reused from a cache (see [`prefill`]).
    pub(super) fn static_full_recompute(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Vec<u32>, BackendError> {
        let needed = prompt.len() + gen_tokens;
        let len = static_len(needed, self.config.context_length).ok_or_else(|| {
            self.err(
                "full_recompute",
                format!("{needed} positions exceed the context length"),
            )
        })?;
        let mut decoder = self.take_decoder(len)?;
        let mut seq = prompt.to_vec();
        let mut out = Vec::with_capacity(gen_tokens);
        let result = (|| {
            for _ in 0..gen_tokens {
                let next = tch::no_grad(|| {
                    decoder.state.load_ids(&seq)?;
                    prefill(&self.model, &self.config, &mut decoder.state, seq.len())?
                        .f_argmax(-1, false)?
                        .f_int64_value(&[0])
                })
                .map_err(|e| self.err("full_recompute", e))?;
                let next = u32::try_from(next)
                    .map_err(|_| self.err("full_recompute", format!("argmax returned {next}")))?;
                out.push(next);
                seq.push(next);
            }
            Ok(())
        })();
        self.static_decoders.insert(len, decoder);
        result.map(|()| out)
    }

    /// The graph path's evidence: the captured step's size and the replays so far.
    pub fn graph_evidence(&self) -> Option<GraphEvidence> {
        self.static_decoders.iter().find_map(|(&len, d)| {
            let g = d.graph.as_ref()?;
            let counts = g.counts()?;
            Some(GraphEvidence {
                shim: g.shim_path().display().to_string(),
                static_len: len as i64,
                kernels_per_step: counts.kernel_nodes,
                nodes_per_step: counts.total_nodes,
                replays: g.replays(),
                prefill_graph_lengths: d.prefill_graphs.keys().copied().collect(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_len_rounds_up_and_respects_the_context() {
        assert_eq!(static_len(91, 8192), Some(128));
        assert_eq!(static_len(129, 8192), Some(256));
        assert_eq!(static_len(60, 64), Some(64));
        assert_eq!(static_len(65, 64), None);
    }
}
