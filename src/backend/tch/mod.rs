//! libtorch backend (crate `tch` 0.24 / libtorch 2.11.0): a native LLaMA forward with a KV cache,
//! built from [`LlamaWeights`]; fp32 on CPU, fp32/bf16/fp16 on CUDA.
//!
//! The forward is hand-written because no crate runs a LLaMA on libtorch from our own weights (tch
//! has no model zoo for it; candle and burn are different engines). Semantics are those of
//! [`crate::model::reference::forward`]: RMSNorm, rotate-half RoPE, GQA, SiLU-gated MLP, tied head.
//! Q/K/V and gate/up projections are fused into one matrix each (same numbers, fewer kernels).
//!
//! Loading libtorch: `libtorch_cpu.so` is linked (rpath from `build.rs`; elsewhere `LD_LIBRARY_PATH`).
//! `libtorch_cuda.so` is not linked (the setup script's CPU tree leaves it out, and `--as-needed`
//! would drop it anyway), so [`runtime()`] dlopens it with `RTLD_NOW | RTLD_GLOBAL` *before the first
//! tch call*; a tch call before that caches "no CUDA" for the life of the process. Every function
//! here goes through [`runtime()`] first, and every tensor operation uses tch's fallible `f_*` form
//! (the plain forms panic, e.g. on a device that is not there).
//!
//! Files by job: `runtime` (libtorch discovery, `libtorch_cuda` dlopen, version,
//! copy bandwidth), `options` (device, dtype, decode mode), `evidence` (what ran where), `llama`
//! (the model as blocks: RMSNorm, RoPE, attention, MLP), `static_decode` and [`cuda_graph`] (the
//! static-shape step and its CUDA graph); this file holds the backend itself.

use std::collections::BTreeMap;

use ndarray::Array2;
use tch::{Device, Kind, Tensor};

use super::{greedy_by_recompute, Backend, BackendInfo, Generation, MemoryTraffic, PhaseClock};
use crate::error::BackendError;
use crate::model::{LlamaConfig, LlamaWeights};

pub mod cuda_graph;
mod evidence;
mod llama;
mod options;
mod runtime;
mod static_decode;
#[cfg(test)]
mod tests;

pub use crate::backend::evidence::{DecodeMode, GraphEvidence};
use evidence::Tally;
pub use evidence::{Placement, TchEvidence};
use llama::{KvCache, Llama};
pub use options::{TchDevice, TchDtype, TchOptions};
use runtime::{checked, TchResult};
pub use runtime::{
    copy_bandwidth, runtime, LibtorchCuda, TchRuntime, CUDA_FIX, EXPECTED_LIBTORCH,
    LIBTORCH_CUDA_ENV,
};
pub use static_decode::static_len;

/// A libtorch backend: the model's weights on one device in one dtype, run by the eager forward
/// or the static-shape decode step.
pub struct TchBackend {
    info: BackendInfo,
    config: LlamaConfig,
    device: Device,
    kind: Kind,
    /// The model's tensors and RoPE tables on the device, in the model dtype.
    model: Llama,
    weights_seen: Tally,
    outputs_seen: Tally,
    decode: DecodeMode,
    /// Static decoders by cache length (static and CUDA-graph modes).
    static_decoders: BTreeMap<usize, static_decode::StaticDecoder>,
}

impl TchBackend {
    /// Convert `weights` once to `options.dtype` on `options.device`.
    pub fn open(options: TchOptions, weights: &LlamaWeights) -> Result<Self, BackendError> {
        let rt = runtime();
        let id = options.id.clone();
        if let TchDevice::Cuda(index) = options.device {
            if let Some(reason) = rt.cuda_unavailable_reason() {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: format!("{reason}; fix: {CUDA_FIX}"),
                });
            }
            if index as i64 >= rt.cuda_device_count {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: format!(
                        "cuda:{index} requested, {} device(s) visible",
                        rt.cuda_device_count
                    ),
                });
            }
        }
        if options.decode == DecodeMode::CudaGraph {
            if !matches!(options.device, TchDevice::Cuda(_)) {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: "CUDA-graph decoding needs a CUDA device".into(),
                });
            }
            if let Err(reason) = cuda_graph::shim() {
                return Err(BackendError::Unavailable {
                    backend: id,
                    reason: format!("{reason}; fix: {}", cuda_graph::SHIM_FIX),
                });
            }
        }
        weights.config.validate()?;
        let device = options.device.to_tch();
        let kind = options.dtype.kind();
        let load = |e: tch::TchError| {
            BackendError::load(
                &id,
                format!(
                    "moving weights to {} {}: {e}",
                    options.device.label(),
                    options.dtype.label()
                ),
            )
        };
        let mut weights_seen = Tally::default();
        let model =
            tch::no_grad(|| Llama::load(weights, device, kind, &mut weights_seen)).map_err(load)?;
        let info = BackendInfo {
            id: options.id.clone(),
            engine: "libtorch".into(),
            engine_version: rt.libtorch_version.clone(),
            location: rt
                .libtorch_path
                .as_ref()
                .map_or_else(|| "unknown".into(), |p| p.display().to_string()),
            device: options.device.label(),
            precision: options.dtype.label().into(),
        };
        Ok(TchBackend {
            info,
            config: weights.config.clone(),
            device,
            kind,
            model,
            weights_seen,
            outputs_seen: Tally::default(),
            decode: options.decode,
            static_decoders: BTreeMap::new(),
        })
    }

    /// What this backend's tensors and libtorch's CUDA state really are.
    pub fn tch_evidence(&self) -> TchEvidence {
        let rt = runtime();
        TchEvidence {
            backend_id: self.info.id.clone(),
            requested_device: self.info.device.clone(),
            requested_dtype: self.info.precision.clone(),
            libtorch_path: rt.libtorch_path.as_ref().map(|p| p.display().to_string()),
            libtorch_version: rt.libtorch_version.clone(),
            cuda_available: rt.cuda_available,
            cuda_device_count: rt.cuda_device_count,
            libtorch_cuda_loaded: rt.libtorch_cuda.loaded,
            libtorch_cuda_path: rt
                .libtorch_cuda
                .path
                .as_ref()
                .map(|p| p.display().to_string()),
            libtorch_cuda_reason: rt.libtorch_cuda.reason.clone(),
            cudnn_available: rt.cudnn_available,
            decode_mode: self.decode.label().into(),
            graph: self.graph_evidence(),
            weights: self.weights_seen.to_vec(),
            outputs: self.outputs_seen.to_vec(),
        }
    }

    fn err(&self, phase: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::run(&self.info.id, phase, e)
    }

    /// Wait for the device, so the clock read next covers the work queued so far (CUDA is async).
    fn synchronize(&self, phase: &str) -> Result<(), BackendError> {
        if let Device::Cuda(i) = self.device {
            // SAFETY: plain C call with a device index that `open` checked.
            checked(|| unsafe { torch_sys::cuda::atc_synchronize(i as i64) })
                .map_err(|e| self.err(phase, format!("cuda synchronize: {e}")))?;
        }
        Ok(())
    }

    fn check_tokens(
        &self,
        tokens: &[u32],
        past_len: usize,
        phase: &str,
    ) -> Result<(), BackendError> {
        if tokens.is_empty() {
            return Err(self.err(phase, "no tokens"));
        }
        // Checked on the host: an out-of-range index on CUDA is a device-side assert that poisons the context.
        if let Some(&t) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(self.err(
                phase,
                format!(
                    "token id {t} is outside the vocabulary ({})",
                    self.config.vocab_size
                ),
            ));
        }
        let max = self.model.rotary.positions();
        if past_len + tokens.len() > max {
            return Err(self.err(
                phase,
                format!(
                    "{} positions exceed the model's context length {max}",
                    past_len + tokens.len()
                ),
            ));
        }
        Ok(())
    }

    fn new_cache(&self, capacity: usize) -> TchResult<KvCache> {
        KvCache::zeros(&self.config, capacity, self.device, self.kind)
    }

    /// One causal forward over `tokens` at positions `past_len..`, reading and extending `cache`
    /// (None: no cache, `past_len` must be 0). Returns logits `[n, vocab]` in the model dtype on the
    /// device, for the last position only (`last_only`) or every position.
    fn forward(
        &mut self,
        tokens: &[u32],
        past_len: usize,
        cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> TchResult<Tensor> {
        let logits = tch::no_grad(|| self.model.forward(tokens, past_len, cache, last_only))?;
        self.outputs_seen.add(&logits, 1);
        Ok(logits)
    }

    /// Greedy next token from `[1, vocab]` logits (first index among equal maxima, as the reference).
    fn argmax_last(&self, logits: &Tensor, phase: &str) -> Result<u32, BackendError> {
        let idx = logits
            .f_argmax(-1, false)
            .and_then(|t| t.f_int64_value(&[0]))
            .map_err(|e| self.err(phase, e))?;
        u32::try_from(idx).map_err(|_| self.err(phase, format!("argmax returned {idx}")))
    }

    /// Greedy tokens by recomputing the whole sequence at every step (no cache).
    pub fn generate_full_recompute(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Vec<u32>, BackendError> {
        greedy_by_recompute(prompt, gen_tokens, |seq| {
            self.check_tokens(seq, 0, "full_recompute")?;
            let logits = self
                .forward(seq, 0, None, true)
                .map_err(|e| self.err("full_recompute", e))?;
            self.argmax_last(&logits, "full_recompute")
        })
    }
}

/// Logits on the device (any dtype) as a host fp32 `[rows, vocab]` array.
fn to_host(logits: &Tensor) -> TchResult<Array2<f32>> {
    let host = logits
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?;
    let size = host.size();
    let (rows, cols) = match size.as_slice() {
        [r, c] => (*r as usize, *c as usize),
        other => return Err(tch::TchError::Shape(format!("logits of shape {other:?}"))),
    };
    let mut data = vec![0f32; rows * cols];
    host.f_copy_data(&mut data, rows * cols)?;
    Array2::from_shape_vec((rows, cols), data).map_err(|e| tch::TchError::Shape(e.to_string()))
}

impl Backend for TchBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// Runs one short forward so outputs are seen, and a short generation whose graph replays are
    /// counted; then reports where outputs and weights live and how the decode loop ran.
    fn evidence(&mut self) -> Option<Result<crate::backend::evidence::Evidence, BackendError>> {
        if let Err(e) = self.logits(&[1, 2, 3, 4]) {
            return Some(Err(e));
        }
        const PROBE_TOKENS: usize = 8;
        let replays_before = self.graph_evidence().map_or(0, |g| g.replays);
        let probe = match self.generate(&[1, 2, 3, 4], PROBE_TOKENS) {
            Ok(g) => g,
            Err(e) => return Some(Err(e)),
        };
        let t = self.tch_evidence();
        let mut e = crate::backend::evidence::Evidence {
            requested: vec![format!(
                "{} {} decode={}",
                t.requested_device, t.requested_dtype, t.decode_mode
            )],
            cuda_graph: Some(crate::backend::evidence::GraphReplayEvidence {
                decode_mode: t.decode_mode.clone(),
                decode_steps: probe.timings.decode_steps as u64,
                replays: t.graph.as_ref().map_or(0, |g| g.replays) - replays_before,
                kernels_per_step: t.graph.as_ref().map(|g| g.kernels_per_step),
            }),
            ..Default::default()
        };
        if let Some(g) = &t.graph {
            e.notes.push(format!(
                "CUDA graph of the decode step (static cache {}): {} kernels, {} nodes per replay, shim {}",
                g.static_len, g.kernels_per_step, g.nodes_per_step, g.shim
            ));
        }
        for p in &t.outputs {
            *e.executed_on.entry(p.device.clone()).or_insert(0) += p.count as usize;
            *e.output_dtypes.entry(p.dtype.clone()).or_insert(0) += p.count as usize;
        }
        let weight_devices: std::collections::BTreeSet<&str> =
            t.weights.iter().map(|p| p.device.as_str()).collect();
        e.notes.push(format!("weights on {weight_devices:?}"));
        e.notes.push(format!(
            "libtorch {} CUDA available: {} ({} device(s)); libtorch_cuda: {}",
            t.libtorch_version, t.cuda_available, t.cuda_device_count, t.libtorch_cuda_reason
        ));
        Some(Ok(e))
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        if prompt.is_empty() || gen_tokens == 0 {
            return Err(self.err("generate", "prompt and gen_tokens must be non-empty"));
        }
        self.check_tokens(prompt, gen_tokens - 1, "generate")?;
        if self.decode != DecodeMode::Eager {
            return self.generate_static(prompt, gen_tokens);
        }
        let mut cache = self
            .new_cache(prompt.len() + gen_tokens)
            .map_err(|e| self.err("generate", format!("KV cache: {e}")))?;
        self.synchronize("prefill")?;
        let mut clock = PhaseClock::start();
        let logits = self
            .forward(prompt, 0, Some(&mut cache), true)
            .map_err(|e| self.err("prefill", e))?;
        let mut next = self.argmax_last(&logits, "prefill")?;
        self.synchronize("prefill")?;
        clock.prefill_done();
        let mut tokens = vec![next];
        for step in 1..gen_tokens {
            let past_len = prompt.len() + step - 1;
            let logits = self
                .forward(&[next], past_len, Some(&mut cache), true)
                .map_err(|e| self.err("decode", e))?;
            next = self.argmax_last(&logits, "decode")?;
            tokens.push(next);
        }
        self.synchronize("decode")?;
        Ok(clock.finish(prompt.len(), tokens))
    }

    /// Elements of the weight tensors on the device (the tied head is one tensor, counted once).
    fn loaded_parameter_count(&self) -> Option<u64> {
        Some(self.weights_seen.total())
    }

    /// Every weight tensor on the device, read once per decode step in the model dtype, except an
    /// untied embedding table, which the step reads one row of (a tied table is the head's matrix
    /// and is read whole); the KV cache in the model dtype.
    fn memory_traffic(&self) -> Option<MemoryTraffic> {
        let c = &self.config;
        let elem = self.kind.elt_size_in_bytes() as u64;
        let (vocab, d) = (c.vocab_size as u64, c.d_model as u64);
        let gathered_away = if c.tied_embeddings { 0 } else { vocab * d - d };
        Some(MemoryTraffic {
            weight_bytes_per_token: self.weights_seen.total().saturating_sub(gathered_away) * elem,
            kv_bytes_per_position: 2 * (c.n_layers * c.n_kv_heads * c.head_dim()) as u64 * elem,
        })
    }

    fn full_recompute_tokens(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<super::Recompute, BackendError> {
        if prompt.is_empty() || gen_tokens == 0 {
            return Err(self.err("full_recompute", "prompt and gen_tokens must be non-empty"));
        }
        self.check_tokens(prompt, gen_tokens - 1, "full_recompute")?;
        match self.decode {
            DecodeMode::Eager => self.generate_full_recompute(prompt, gen_tokens),
            // The static and graph loops are compared with a recompute of their own formulation.
            DecodeMode::Static | DecodeMode::CudaGraph => {
                self.static_full_recompute(prompt, gen_tokens)
            }
        }
        .map(super::Recompute::Tokens)
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Array2<f32>, BackendError> {
        self.check_tokens(tokens, 0, "logits")?;
        let logits = self
            .forward(tokens, 0, None, false)
            .map_err(|e| self.err("logits", e))?;
        let host = to_host(&logits).map_err(|e| self.err("logits", e))?;
        if host.dim() != (tokens.len(), self.config.vocab_size) {
            return Err(BackendError::Invariant {
                backend: self.info.id.clone(),
                detail: format!(
                    "logits shape {:?}, expected ({}, {})",
                    host.dim(),
                    tokens.len(),
                    self.config.vocab_size
                ),
            });
        }
        Ok(host)
    }
}
