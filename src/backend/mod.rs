//! Backends: one trait, one file per engine.
//!
//! A backend runs a fixed-length greedy generation and reports per-phase timings measured at its own
//! boundary (the harness's clock for in-process engines, the engine's own timings for servers), and,
//! where it can, next-token logits for perplexity.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::host::ComputeDevice;

pub mod evidence;
pub mod llama_cpp;
pub mod ollama;
pub mod ort;
pub mod perplexity;
pub mod registry;
pub mod stretch;
#[cfg(feature = "torch")]
pub mod tch;
pub mod tweaks;

/// Whether a backend can run on this machine, and if not, what fixes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Availability {
    Available { detail: String },
    Absent { reason: String, fix: String },
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available { .. })
    }
}

/// What a backend is and where it came from (goes into the manifest and the report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Stable id used in trial names, e.g. `ort-cpu`.
    pub id: String,
    /// Engine name, e.g. `onnxruntime`.
    pub engine: String,
    /// Engine version as the engine itself reports it.
    pub engine_version: String,
    /// Where the engine library/binary was found.
    pub location: String,
    /// Device the computation is requested on (`cpu`, `cuda:0`).
    pub device: String,
    /// Weight precision label (`fp32`, `q4_1` …).
    pub precision: String,
}

impl BackendInfo {
    /// [`device`](Self::device) as a typed device; `None` when it names none (Ollama: "chosen by the
    /// Ollama server").
    pub fn compute_device(&self) -> Option<ComputeDevice> {
        self.device.parse().ok()
    }
}

/// Whose clock measured the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingSource {
    /// `std::time::Instant` around the engine calls in this process.
    Harness,
    /// Durations reported by the engine (e.g. llama.cpp `timings`, Ollama `*_duration`).
    Engine,
}

/// The timings of one generation: its phases as the backend measured them at its own boundary (the
/// harness's clock for in-process engines, the engine's own timings for servers), and over how
/// many tokens. A backend returns them in its [`Generation`]; a run record keeps them
/// ([`crate::measure::RunOutcome`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTimings {
    pub prompt_tokens: usize,
    /// Tokens generated: the engine's own count when it stopped on its own, else the tokens returned.
    pub gen_tokens: usize,
    /// One forward over the prompt (produces the first generated token).
    pub prefill_ms: f64,
    /// The cached decode loop that produces the remaining tokens.
    pub decode_ms: f64,
    /// Whole generation as seen from outside: ≥ prefill + decode.
    pub e2e_ms: f64,
    /// Forward passes in the decode loop.
    pub decode_steps: usize,
    pub timing_source: TimingSource,
    /// Model load time the engine reported for this request (Ollama `load_duration`), kept out of the
    /// phases. `None` where the engine reports none (in-process backends load once, before timing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_ms: Option<f64>,
    /// Prompt tokens the engine reused from its prompt cache: `prefill_ms` covers only the others.
    /// `None` where nothing was reused or the engine cannot reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<usize>,
    /// What the backend's decode step reads from memory, where it can tell (the roofline's input):
    /// [`Backend::memory_traffic`], added when the run is recorded ([`crate::measure::run_series`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_traffic: Option<MemoryTraffic>,
}

impl RunTimings {
    /// Phases timed by the harness's own clock at the phase boundaries (in-process backends):
    /// prefill = `start..prefill_done`, decode = `prefill_done..end`, over `generated` tokens.
    pub fn harness_timed(
        prompt_tokens: usize,
        generated: usize,
        start: std::time::Instant,
        prefill_done: std::time::Instant,
        end: std::time::Instant,
    ) -> RunTimings {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let (prefill_ms, decode_ms) = (ms(prefill_done - start), ms(end - prefill_done));
        RunTimings {
            prompt_tokens,
            gen_tokens: generated,
            prefill_ms,
            decode_ms,
            // (prefill_done − start) + (end − prefill_done) is end − start exactly; the sum of the
            // rounded parts keeps e2e ≥ prefill + decode in floating point too (ms(end − start)
            // can round one ulp below it).
            e2e_ms: prefill_ms + decode_ms,
            decode_steps: generated.saturating_sub(1),
            timing_source: TimingSource::Harness,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            memory_traffic: None,
        }
    }

    /// `kv_decode_ms / e2e_ms` (TR121).
    pub fn decode_fraction(&self) -> f64 {
        self.decode_ms / self.e2e_ms
    }
    /// Generated tokens per second over the decode loop.
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_steps as f64 / (self.decode_ms / 1e3)
    }
    /// Generated tokens per second end to end.
    pub fn e2e_tokens_per_s(&self) -> f64 {
        self.gen_tokens as f64 / (self.e2e_ms / 1e3)
    }
}

/// One fixed-length greedy generation: its tokens and its timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Generated token ids; EOS does not stop generation.
    pub tokens: Vec<u32>,
    #[serde(flatten)]
    pub timings: RunTimings,
    /// Set when the engine stopped on its own (end-of-sequence or a stop string it cannot be told to
    /// ignore): the timings are what was measured over the tokens it generated, nothing is
    /// projected here. [`crate::measure::timings_of`] records a run that stopped short of the request
    /// as `projected`, outside every aggregate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<EarlyStop>,
}

/// Greedy tokens by recomputing the whole sequence at every step, no cache reused: `next` gives the
/// greedy token after a sequence (one full forward). The check that a KV-cached loop computes the
/// same thing ([`Backend::full_recompute_tokens`]).
pub fn greedy_by_recompute(
    prompt: &[u32],
    gen_tokens: usize,
    mut next: impl FnMut(&[u32]) -> Result<u32, BackendError>,
) -> Result<Vec<u32>, BackendError> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::with_capacity(gen_tokens);
    for _ in 0..gen_tokens {
        let token = next(&seq)?;
        out.push(token);
        seq.push(token);
    }
    Ok(out)
}

/// The harness's clock at an in-process backend's phase boundaries: started just before the
/// prompt's forward pass, marked when its first token is out, stopped when the last one is. Prefill
/// is `start..prefill_done`, decode `prefill_done..stop`.
#[derive(Debug, Clone, Copy)]
pub struct PhaseClock {
    start: std::time::Instant,
    prefill_done: Option<std::time::Instant>,
    stop: Option<std::time::Instant>,
}

impl PhaseClock {
    pub fn start() -> PhaseClock {
        PhaseClock {
            start: std::time::Instant::now(),
            prefill_done: None,
            stop: None,
        }
    }

    /// When the clock started (the prefill's own start, for work timed against it).
    pub fn started_at(&self) -> std::time::Instant {
        self.start
    }

    /// The prompt's forward pass is done and its token is out.
    pub fn prefill_done(&mut self) {
        self.prefill_done = Some(std::time::Instant::now());
    }

    /// The last token is out (what follows, e.g. copying tokens to the host, is not timed).
    pub fn stop(&mut self) {
        self.stop = Some(std::time::Instant::now());
    }

    /// The generation of `tokens` after a prompt of `prompt_tokens`, stopping the clock now if it
    /// was not stopped. A clock never marked at the prefill counts the whole time as prefill.
    pub fn finish(self, prompt_tokens: usize, tokens: Vec<u32>) -> Generation {
        let stop = self.stop.unwrap_or_else(std::time::Instant::now);
        let prefill_done = self.prefill_done.unwrap_or(stop);
        let timings =
            RunTimings::harness_timed(prompt_tokens, tokens.len(), self.start, prefill_done, stop);
        Generation {
            tokens,
            timings,
            early_stop: None,
        }
    }
}

/// An engine that stopped on its own before or at the requested length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// Tokens the engine generated by its own count (Ollama `eval_count`, which counts the stop
    /// token): the count of record, as the reply's text may hold fewer.
    pub generated_tokens: usize,
    /// Tokens the workload asked for.
    pub requested_tokens: usize,
    /// Why the engine stopped (Ollama `done_reason`, e.g. `stop` for end-of-sequence).
    pub stop_reason: String,
}

/// The result of asking a backend for greedy tokens by full recompute (see
/// [`Backend::full_recompute_tokens`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Recompute {
    /// Greedy tokens, each computed from the whole sequence so far with no cache reused.
    Tokens(Vec<u32>),
    /// This backend cannot run the check here; the reason says why. A `not_checked` finding, never
    /// a pass.
    CannotCheck { reason: String },
}

/// Bytes one decode step reads from memory, from what the engine actually loaded: the weights a
/// token passes through in their stored type (quantized blocks with their scales and zero points),
/// an embedding table read by a row gather counted as one row; and the KV cache per cached position.
/// Divided into the machine's measured bandwidth it is the decode roofline ([`crate::roofline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryTraffic {
    pub weight_bytes_per_token: u64,
    /// Keys and values of every layer for one cached position, in the cache's element type.
    pub kv_bytes_per_position: u64,
}

impl MemoryTraffic {
    /// Bytes read by a decode step that attends over `positions` cached positions.
    pub fn bytes_per_token(&self, positions: f64) -> f64 {
        self.weight_bytes_per_token as f64 + self.kv_bytes_per_position as f64 * positions
    }
}

/// A device's copy bandwidth, measured by the engine on that device (libtorch's `copy_` between two
/// device buffers, `tch::copy_bandwidth`, run by the `tch_decode_modes` example
/// on a GPU): bytes moved count both the read and the write, as `cudaMemcpy` bandwidth tests do.
/// The roofline of a backend on that device is the weight bytes a token reads divided by the
/// median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyBandwidth {
    pub device: ComputeDevice,
    /// Bytes one copy reads (and writes).
    pub bytes: u64,
    pub reps: usize,
    /// Median over `reps` of (2 × bytes) / seconds, in GB/s (10⁹ bytes).
    pub gb_per_s_median: f64,
    pub gb_per_s_max: f64,
}

/// An inference engine under test.
pub trait Backend: Send {
    fn info(&self) -> &BackendInfo;

    /// Greedy generation of exactly `gen_tokens` tokens after `prompt` (EOS ignored), timed per phase.
    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError>;

    /// Parameters in the weights the engine actually loaded (not what a config says), if it can tell.
    fn loaded_parameter_count(&self) -> Option<u64> {
        None
    }

    /// What a decode step reads from memory, where the engine's loaded weights tell (the decode
    /// roofline, [`crate::roofline`]).
    fn memory_traffic(&self) -> Option<MemoryTraffic> {
        None
    }

    /// Greedy tokens by recomputing the whole sequence at every step (no cache): the check that the
    /// KV-cached loop computes the same thing. Same sampling as [`generate`](Self::generate). A
    /// backend that cannot do it says why with [`Recompute::CannotCheck`].
    fn full_recompute_tokens(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Recompute, BackendError> {
        let _ = (prompt, gen_tokens);
        Ok(Recompute::CannotCheck {
            reason: format!("`{}` has no full-recompute path", self.info().id),
        })
    }

    /// Runtime evidence of what this session actually executes, where the engine can tell
    /// (backends opened for evidence collection; see `registry::open_for_evidence`).
    fn evidence(&mut self) -> Option<Result<evidence::Evidence, BackendError>> {
        None
    }

    /// Perplexity computed by the engine's own tool on `text` under `protocol`, for engines that do
    /// not expose logits (llama.cpp's `llama-perplexity`). `None` = use [`Backend::logits`].
    fn perplexity_native(
        &mut self,
        text: &str,
        protocol: perplexity::PerplexityProtocol,
    ) -> Option<Result<perplexity::PerplexityResult, BackendError>> {
        let _ = (text, protocol);
        None
    }

    /// Logits `[tokens.len(), vocab]` of one causal forward over `tokens` (for perplexity).
    fn logits(&mut self, tokens: &[u32]) -> Result<Array2<f32>, BackendError> {
        let _ = tokens;
        Err(BackendError::Unsupported {
            backend: self.info().id.clone(),
            feature: "full-sequence logits".into(),
        })
    }
}
