//! The exported decoder's forward pass with its KV cache (kept in host memory or bound where the
//! session computes), the harness-timed greedy loop over it, and the full recompute that checks it.

use std::borrow::Cow;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use super::session::{BindTarget, KvCacheHome};
use crate::backend::stretch::{Phase, Stretch};
use crate::backend::{greedy_by_recompute, Generation, PhaseClock};
use crate::error::BackendError;
use crate::model::onnx_export::{
    past_key_name, past_value_name, present_key_name, present_value_name,
};
use crate::model::reference::argmax;
use crate::model::LlamaConfig;

/// Memory infos of a bound session: the cache's, and host memory for the logits.
struct Bound {
    cache: ort::memory::MemoryInfo<'static>,
    host: ort::memory::MemoryInfo<'static>,
}

/// A session over the exported decoder and what its forward passes need.
pub(super) struct Decoder {
    pub(super) session: Session,
    pub(super) config: LlamaConfig,
    /// Where the cache lives between steps: `None` = every output back to host memory.
    bound: Option<Bound>,
    /// Backend id, for errors.
    pub(super) id: String,
    /// fp16 weights: the empty cache of the first forward is fp16 too.
    fp16: bool,
}

impl Decoder {
    /// A decoder over `session`, its cache kept where `kv_cache` says.
    pub(super) fn new(
        session: Session,
        config: LlamaConfig,
        kv_cache: KvCacheHome,
        id: String,
        fp16: bool,
    ) -> Result<Self, ort::Error> {
        let bound = match kv_cache {
            KvCacheHome::HostRoundTrip => None,
            KvCacheHome::Bound(target) => Some(Bound {
                cache: target.memory_info()?,
                host: BindTarget::Cpu.memory_info()?,
            }),
        };
        Ok(Decoder {
            session,
            config,
            bound,
            id,
            fp16,
        })
    }

    fn err(&self, phase: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::run(&self.id, phase, e)
    }

    /// One forward: `tokens` at positions `past_len..`, with `past` (None = empty cache).
    /// Returns logits of every position `[tokens.len(), vocab]` and the new cache.
    pub(super) fn forward(
        &mut self,
        tokens: &[u32],
        past_len: usize,
        past: Option<Vec<DynValue>>,
        phase: &str,
    ) -> Result<(Vec<f32>, Vec<DynValue>), BackendError> {
        let c = &self.config;
        let (n_layers, n_kv, hd) = (c.n_layers, c.n_kv_heads, c.head_dim());
        let s = tokens.len();
        let total = past_len + s;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(3 + 2 * n_layers);
        let tensor_i64 =
            |shape: [usize; 2], v: Vec<i64>| Tensor::from_array((shape, v)).map(|t| t.into_dyn());
        let mk =
            |r: Result<DynValue, ort::Error>| r.map_err(|e| BackendError::run(&self.id, phase, e));
        inputs.push(("input_ids".into(), mk(tensor_i64([1, s], ids))?));
        inputs.push((
            "attention_mask".into(),
            mk(tensor_i64([1, total], vec![1; total]))?,
        ));
        inputs.push((
            "position_ids".into(),
            mk(tensor_i64(
                [1, s],
                (past_len as i64..total as i64).collect(),
            ))?,
        ));
        match past {
            Some(values) => {
                if values.len() != 2 * n_layers {
                    return Err(self.err(
                        phase,
                        format!(
                            "cache has {} tensors, expected {}",
                            values.len(),
                            2 * n_layers
                        ),
                    ));
                }
                for (i, v) in values.into_iter().enumerate() {
                    let name = if i % 2 == 0 {
                        past_key_name(i / 2)
                    } else {
                        past_value_name(i / 2)
                    };
                    inputs.push((name, v));
                }
            }
            None => {
                let fp16 = self.fp16;
                for i in 0..n_layers {
                    for name in [past_key_name(i), past_value_name(i)] {
                        let shape = [1usize, n_kv, 0, hd];
                        let empty = if fp16 {
                            Tensor::<half::f16>::from_array((shape, Vec::new()))
                                .map(|t| t.into_dyn())
                        } else {
                            Tensor::<f32>::from_array((shape, Vec::new())).map(|t| t.into_dyn())
                        };
                        inputs.push((name, mk(empty)?));
                    }
                }
            }
        }
        let id = self.id.clone();
        let run_err = |e: ort::Error| BackendError::run(&id, phase, e);
        let expect = [1, s as i64, c.vocab_size as i64];
        match &self.bound {
            None => {
                let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = inputs
                    .into_iter()
                    .map(|(n, v)| (Cow::Owned(n), SessionInputValue::from(v)))
                    .collect();
                let mut outputs = self.session.run(inputs).map_err(run_err)?;
                take_outputs(&mut outputs, &id, phase, expect, n_layers)
            }
            Some(bound) => {
                let mut binding = self.session.create_binding().map_err(run_err)?;
                for (name, value) in &inputs {
                    binding.bind_input(name.as_str(), value).map_err(run_err)?;
                }
                binding
                    .bind_output_to_device("logits", &bound.host)
                    .map_err(run_err)?;
                for i in 0..n_layers {
                    for name in [present_key_name(i), present_value_name(i)] {
                        binding
                            .bind_output_to_device(name, &bound.cache)
                            .map_err(run_err)?;
                    }
                }
                let mut outputs = self.session.run_binding(&binding).map_err(run_err)?;
                take_outputs(&mut outputs, &id, phase, expect, n_layers)
            }
        }
    }

    pub(super) fn last_argmax(&self, logits: &[f32]) -> u32 {
        let v = self.config.vocab_size;
        let last = &logits[logits.len() - v..];
        argmax(ndarray::ArrayView1::from(last)) as u32
    }

    /// Greedy generation of `gen_tokens` tokens after `prompt` with the KV cache, timed by the
    /// harness's clock per phase. `stretch` is the test-only planted slowdown (a no-op unless the
    /// backend was opened with one: [`crate::backend::stretch`]).
    pub(super) fn generate_timed(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
        stretch: &Stretch,
    ) -> Result<Generation, BackendError> {
        let mut clock = PhaseClock::start();
        let (logits, mut cache) = self.forward(prompt, 0, None, "prefill")?;
        stretch.apply(Phase::Prefill, clock.started_at());
        let mut next = self.last_argmax(&logits);
        clock.prefill_done();
        let mut tokens = vec![next];
        for step in 1..gen_tokens {
            let past_len = prompt.len() + step - 1;
            let step_start = Instant::now();
            let (logits, new_cache) = self.forward(&[next], past_len, Some(cache), "decode")?;
            stretch.apply(Phase::Decode, step_start);
            cache = new_cache;
            next = self.last_argmax(&logits);
            tokens.push(next);
        }
        Ok(clock.finish(prompt.len(), tokens))
    }

    /// Greedy tokens by recomputing the whole sequence at every step (no cache).
    pub(super) fn full_recompute(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Vec<u32>, BackendError> {
        greedy_by_recompute(prompt, gen_tokens, |seq| {
            let (logits, _) = self.forward(seq, 0, None, "full_recompute")?;
            Ok(self.last_argmax(&logits))
        })
    }
}

/// The logits (host memory) and the new cache from a run's outputs.
fn take_outputs(
    outputs: &mut ort::session::SessionOutputs<'_>,
    id: &str,
    phase: &str,
    expect: [i64; 3],
    n_layers: usize,
) -> Result<(Vec<f32>, Vec<DynValue>), BackendError> {
    let run_err = |e: ort::Error| BackendError::run(id, phase, e);
    let logits = outputs
        .remove("logits")
        .ok_or_else(|| BackendError::run(id, phase, "no `logits` output"))?;
    let (shape, data) = logits.try_extract_tensor::<f32>().map_err(run_err)?;
    if **shape != expect {
        return Err(BackendError::Invariant {
            backend: id.into(),
            detail: format!("logits shape {:?}, expected {expect:?}", &**shape),
        });
    }
    let logits = data.to_vec();
    let mut cache = Vec::with_capacity(2 * n_layers);
    for i in 0..n_layers {
        for name in [present_key_name(i), present_value_name(i)] {
            cache.push(
                outputs
                    .remove(&name)
                    .ok_or_else(|| BackendError::run(id, phase, format!("no `{name}` output")))?,
            );
        }
    }
    Ok((logits, cache))
}
