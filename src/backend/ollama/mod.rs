//! Ollama backend: `POST /api/generate` over plain HTTP (reqwest, blocking), phases from the
//! engine's own durations (Ollama's API reference: <https://github.com/ollama/ollama/blob/main/docs/api.md>).
//!
//! **Token ids in, text over the wire.** infergate's workloads are exact token-id prefixes; Ollama takes
//! text. The backend holds the catalog model's own tokenizer: [`Backend::generate`] decodes the ids to
//! text, sends it with `raw: true` (no chat template), and checks that Ollama's `prompt_eval_count`
//! equals the number of ids, so a different model or tokenizer behind `INFERGATE_OLLAMA_MODEL` fails
//! loudly instead of measuring another prompt. The trait and the runner stay id-based; callers that
//! start from text use [`OllamaBackend::generate_text`]. Ollama returns text only (raw mode returns
//! no `context`), so [`Generation::tokens`] is the reply re-tokenized with the same tokenizer — as
//! Ollama builds its own `context` — and Ollama's `eval_count` is the count of record.
//!
//! **Phases** (`TimingSource::Engine`, ns → ms): prefill = `prompt_eval_duration` (prompt forward,
//! which yields the first token); decode = `eval_duration` over `eval_count − 1` forward passes (Ollama's
//! runner counts the token sampled from the prompt's logits in `eval_count`); e2e = `total_duration`,
//! which includes `load_duration`, also reported alone as `cold_start_ms`.
//!
//! **Prompt cache.** Ollama cannot switch its prompt cache off. Versions before mid-2024 drop
//! `prompt_eval_count` on a cache hit (ollama/ollama#2068): then no prefill was measured and the run
//! fails with that reason (a degraded run) rather than carrying an invented count. Newer versions
//! report the reused tokens as `prompt_eval_cached_count`, kept as `cached_prompt_tokens`.
//!
//! **Early stop** (EOS cannot be disabled in Ollama): the reply's durations are kept as measured, and
//! [`Generation::early_stop`] records Ollama's own count and `done_reason`. The measurement layer
//! records a run that stopped short of `num_predict` as `projected` ([`crate::measure::ProjectedRun`]),
//! outside every aggregate; its projection divides `eval_duration` by `eval_count − 1`, the forward
//! passes it covers. (Ollama's runner starts the `eval_duration` clock after the prompt's forward pass
//! and counts the token sampled from the prompt's logits in `eval_count`; its API reference says
//! `eval_count` is the output tokens and `eval_duration` the time spent generating them.) A reply
//! with `done_reason: stop` at the full count is marked too: its text holds fewer tokens than
//! `eval_count`, which counts the stop token, and Ollama's count is then the count of record.
//!
//! **KV cache vs full recompute** cannot be checked through Ollama:
//! [`Backend::full_recompute_tokens`] says why ([`RECOMPUTE_NOT_CHECKABLE`]).

mod client;
mod config;
mod probe;
mod wire;

pub use client::OllamaClient;
pub use config::{
    parse_host, OllamaConfig, DEFAULT_HOST, DEFAULT_MODEL, DEFAULT_PORT, HOST_ENV, MODEL_ENV,
};
pub use probe::{probe, server_version, PROBE_CONNECT_TIMEOUT};
pub use wire::{
    ErrorBody, GenerateOptions, GenerateRequest, GenerateResponse, LocalModel, ModelDetails,
    TagsResponse, VersionResponse,
};

use super::{Backend, BackendInfo, EarlyStop, Generation, Recompute, RunTimings, TimingSource};
use crate::error::{BackendError, ModelError};
use crate::model::tokenizer::Tokenizer;
use config::{pull_fix, ENGINE};

/// Why the KV-vs-recompute check cannot run through Ollama's API.
pub const RECOMPUTE_NOT_CHECKABLE: &str = "Ollama's /api/generate cannot switch its prompt cache off \
(the runner loads every completion with the cache on and reuses the longest common prefix), so a \
one-token request over the growing prefix is served by the same cached decode, not a recompute; and \
prompts travel as text, whose re-tokenization need not reproduce the generated ids. Check the engine \
through the `llama-cpp` backend instead";

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Turn one `/api/generate` reply to a request for `requested` tokens into a [`Generation`] of what was
/// measured (see the module docs for the phase mapping, the cache-hit rule and early stops). `encode`
/// re-tokenizes the reply text.
pub fn generation_from_response(
    backend: &str,
    reply: &GenerateResponse,
    requested: usize,
    encode: impl Fn(&str) -> Result<Vec<u32>, ModelError>,
) -> Result<Generation, BackendError> {
    let broken = |detail: String| BackendError::Invariant {
        backend: backend.into(),
        detail,
    };
    if requested == 0 {
        return Err(BackendError::run(
            backend,
            "generate",
            "gen_tokens must be at least 1",
        ));
    }
    if !reply.done {
        return Err(broken(
            "Ollama answered a non-streaming request with done=false".into(),
        ));
    }
    let Some(prompt_tokens) = reply.prompt_eval_count.filter(|&n| n > 0) else {
        return Err(broken(
            "the prefill was served from Ollama's prompt cache: the reply has no prompt_eval_count (Ollama before mid-2024 \
             omits it on a cache hit, ollama/ollama#2068), so no prefill was measured; upgrade Ollama, or unload the model \
             between runs (keep_alive 0)"
                .into(),
        ));
    };
    let positive = |v: Option<u64>, name: &str| {
        v.filter(|&n| n > 0)
            .ok_or_else(|| broken(format!("the reply has no {name}")))
    };
    let prefill_ms = ns_to_ms(positive(
        reply.prompt_eval_duration,
        "prompt_eval_duration",
    )?);
    let generated = positive(reply.eval_count, "eval_count (no token was generated)")? as usize;
    let decode_ms = ns_to_ms(positive(reply.eval_duration, "eval_duration")?);
    let e2e_ms = ns_to_ms(positive(reply.total_duration, "total_duration")?);
    if generated > requested {
        return Err(broken(format!(
            "Ollama generated {generated} tokens with num_predict = {requested}"
        )));
    }
    let tokens = encode(&reply.response)?;
    // Stopped by the model (EOS or a stop string): the text holds fewer tokens than `eval_count`, which
    // counts the stop token; marked even when it reached the requested count.
    let stopped_itself = reply.done_reason.as_deref() == Some("stop");
    let early_stop = (generated < requested || stopped_itself).then(|| EarlyStop {
        generated_tokens: generated,
        requested_tokens: requested,
        stop_reason: reply
            .done_reason
            .clone()
            .unwrap_or_else(|| "unreported".into()),
    });
    if early_stop.is_none() && tokens.len() != generated {
        return Err(broken(format!(
            "Ollama counted {generated} generated tokens, but its text re-tokenizes to {} with the catalog model's \
             tokenizer (a different model behind {MODEL_ENV}, or a multi-byte character cut at the end)",
            tokens.len()
        )));
    }
    Ok(Generation {
        tokens,
        timings: RunTimings {
            prompt_tokens: prompt_tokens as usize,
            gen_tokens: generated,
            prefill_ms,
            decode_ms,
            e2e_ms,
            // `eval_duration` starts after the prompt's forward pass, which produced the first of the
            // `eval_count` tokens: it covers the other `eval_count − 1` forward passes.
            decode_steps: generated - 1,
            timing_source: TimingSource::Engine,
            cold_start_ms: reply.load_duration.map(ns_to_ms),
            cached_prompt_tokens: reply
                .prompt_eval_cached_count
                .filter(|&n| n > 0)
                .map(|n| n as usize),
            memory_traffic: None,
        },
        early_stop,
    })
}

/// A model on an Ollama server, driven through `/api/generate`.
pub struct OllamaBackend {
    info: BackendInfo,
    client: OllamaClient,
    tokenizer: Tokenizer,
    /// The last raw reply, for callers that want Ollama's own numbers.
    last_reply: Option<GenerateResponse>,
}

impl OllamaBackend {
    /// Connect, read the version, and check the server has the model (it is loaded by the first request,
    /// whose `load_duration` is the cold start). `tokenizer` must be the model's own: it turns the
    /// workload's ids into text and the reply back into ids.
    pub fn open(config: OllamaConfig, tokenizer: Tokenizer) -> Result<Self, BackendError> {
        let client = OllamaClient::new(config)?;
        let config = client.config().clone();
        let version = client.version()?;
        let tags = client.tags()?;
        let local = tags.find(&config.model).ok_or_else(|| {
            BackendError::load(
                &config.id,
                format!(
                    "Ollama {version} at {} does not have model `{}`: {}",
                    config.host(),
                    config.model,
                    pull_fix(&config.model)
                ),
            )
        })?;
        let details = local.details.as_ref();
        let info = BackendInfo {
            id: config.id.clone(),
            engine: ENGINE.into(),
            engine_version: version,
            location: format!(
                "{} model {} ({})",
                config.base_url,
                local.name,
                local.digest.as_deref().unwrap_or("no digest")
            ),
            device: "chosen by the Ollama server".into(),
            precision: details
                .and_then(|d| d.quantization_level.clone())
                .unwrap_or_else(|| "unreported".into()),
        };
        Ok(OllamaBackend {
            info,
            client,
            tokenizer,
            last_reply: None,
        })
    }

    pub fn client(&self) -> &OllamaClient {
        &self.client
    }

    /// The raw reply behind the last generation.
    pub fn last_reply(&self) -> Option<&GenerateResponse> {
        self.last_reply.as_ref()
    }

    /// Generate `gen_tokens` tokens after `prompt_text`; `prompt_tokens` is Ollama's own count.
    pub fn generate_text(
        &mut self,
        prompt_text: &str,
        gen_tokens: usize,
    ) -> Result<Generation, BackendError> {
        if prompt_text.is_empty() || gen_tokens == 0 {
            return Err(BackendError::run(
                &self.info.id,
                "generate",
                "prompt and gen_tokens must be non-empty",
            ));
        }
        let reply = self.client.generate(prompt_text, gen_tokens)?;
        let generation = generation_from_response(&self.info.id, &reply, gen_tokens, |t| {
            self.tokenizer.encode(t)
        });
        self.last_reply = Some(reply);
        generation
    }
}

impl Backend for OllamaBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        let text = self.tokenizer.decode(prompt)?;
        let generation = self.generate_text(&text, gen_tokens)?;
        if generation.timings.prompt_tokens != prompt.len() {
            return Err(BackendError::Invariant {
                backend: self.info.id.clone(),
                detail: format!(
                    "Ollama counted {} prompt tokens for a {}-token prompt: `{}` does not tokenize like the catalog model (set {MODEL_ENV} to the same model)",
                    generation.timings.prompt_tokens,
                    prompt.len(),
                    self.client.config().model
                ),
            });
        }
        Ok(generation)
    }

    /// Not checkable through Ollama's API: see [`RECOMPUTE_NOT_CHECKABLE`]. Sends nothing.
    fn full_recompute_tokens(
        &mut self,
        _prompt: &[u32],
        _gen_tokens: usize,
    ) -> Result<Recompute, BackendError> {
        Ok(Recompute::CannotCheck {
            reason: RECOMPUTE_NOT_CHECKABLE.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: &str = include_str!("../../../tests/data/ollama/generate_normal.json");
    const CACHE_HIT: &str = include_str!("../../../tests/data/ollama/generate_cache_hit.json");
    const EARLY_STOP: &str = include_str!("../../../tests/data/ollama/generate_early_stop.json");
    const CACHED_PREFIX: &str =
        include_str!("../../../tests/data/ollama/generate_cached_prefix.json");

    fn reply(json: &str) -> GenerateResponse {
        serde_json::from_str(json).expect("fixture parses")
    }

    /// The catalog model's tokenizer (the GGUF is a pinned, cached asset).
    fn tokenizer() -> &'static Tokenizer {
        static TOKENIZER: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        TOKENIZER.get_or_init(|| {
            let path = crate::model::catalog::default_model()
                .and_then(|m| m.gguf_path())
                .expect("SmolLM2 GGUF");
            Tokenizer::from_gguf(&crate::model::GgufFile::open(&path).expect("GGUF"))
                .expect("tokenizer")
        })
    }

    fn encode(text: &str) -> Result<Vec<u32>, ModelError> {
        tokenizer().encode(text)
    }

    #[test]
    fn normal_reply_maps_engine_durations_to_phases() {
        let r = reply(NORMAL);
        let n = r.eval_count.unwrap() as usize;
        let g = generation_from_response("ollama", &r, n, encode).unwrap();
        assert_eq!(g.timings.prompt_tokens as u64, r.prompt_eval_count.unwrap());
        assert_eq!(g.tokens.len(), n);
        assert_eq!(
            g.timings.prefill_ms,
            r.prompt_eval_duration.unwrap() as f64 / 1e6
        );
        assert_eq!(g.timings.decode_ms, r.eval_duration.unwrap() as f64 / 1e6);
        assert_eq!(g.timings.e2e_ms, r.total_duration.unwrap() as f64 / 1e6);
        assert_eq!(
            g.timings.cold_start_ms,
            Some(r.load_duration.unwrap() as f64 / 1e6)
        );
        assert_eq!(g.timings.decode_steps, n - 1);
        assert_eq!(g.timings.timing_source, TimingSource::Engine);
        assert_eq!(g.early_stop, None);
        assert_eq!(g.timings.cached_prompt_tokens, None);
        assert!(g.timings.e2e_ms >= g.timings.prefill_ms + g.timings.decode_ms);
    }

    #[test]
    fn early_stop_keeps_the_measured_durations_and_becomes_a_projected_run() {
        use crate::measure::{outcome_of, RunOutcome};
        let r = reply(EARLY_STOP);
        let generated = r.eval_count.unwrap() as usize;
        let requested = generated * 4;
        let g = generation_from_response("ollama", &r, requested, encode).unwrap();
        let measured = r.eval_duration.unwrap() as f64 / 1e6;
        let stop = g.early_stop.clone().expect("marked as stopped early");
        assert_eq!(
            (
                stop.generated_tokens,
                stop.requested_tokens,
                stop.stop_reason.as_str()
            ),
            (generated, requested, "stop")
        );
        // Nothing is projected in the generation: the durations are Ollama's.
        assert_eq!(g.timings.decode_ms, measured);
        assert_eq!(g.timings.e2e_ms, r.total_duration.unwrap() as f64 / 1e6);
        assert_eq!(
            g.timings.decode_steps,
            generated - 1,
            "eval_duration covers eval_count − 1 passes"
        );
        assert!(
            g.tokens.len() < requested,
            "the tokens are what was generated, not padded"
        );
        // The run record: projected, with the divisor eval_count − 1, and no timings for aggregates.
        let RunOutcome::Projected(p) = outcome_of(&g, requested) else {
            panic!("an early stop must be a projected run")
        };
        assert_eq!(p.measured.gen_tokens, generated);
        assert_eq!(p.measured.decode_ms, measured);
        let want = measured / (generated - 1) as f64 * (requested - 1) as f64;
        assert!((p.projected_decode_ms.unwrap() - want).abs() < 1e-9);
        assert!((p.projected_e2e_ms.unwrap() - (g.timings.e2e_ms + want - measured)).abs() < 1e-9);
        // Stopped by EOS exactly at the requested count: measured at full length, an ok run.
        let exact = generation_from_response("ollama", &r, generated, encode).unwrap();
        assert_eq!(
            exact.early_stop.as_ref().map(|s| s.generated_tokens),
            Some(generated)
        );
        let RunOutcome::Ok(t) = outcome_of(&exact, generated) else {
            panic!("a run measured at the requested length is ok")
        };
        assert_eq!((t.gen_tokens, t.decode_ms), (generated, measured));
    }

    #[test]
    fn an_eos_as_first_token_projects_nothing() {
        use crate::measure::{outcome_of, RunOutcome};
        let r = GenerateResponse {
            response: String::new(),
            eval_count: Some(1),
            eval_duration: Some(20_000),
            ..reply(EARLY_STOP)
        };
        let g = generation_from_response("ollama", &r, 64, encode).unwrap();
        assert_eq!(g.timings.decode_steps, 0);
        let RunOutcome::Projected(p) = outcome_of(&g, 64) else {
            panic!("projected")
        };
        assert_eq!((p.projected_decode_ms, p.projected_e2e_ms), (None, None));
    }

    #[test]
    fn cache_hit_without_prompt_count_is_refused_not_invented() {
        let r = reply(CACHE_HIT);
        assert_eq!(r.prompt_eval_count, None);
        assert!(
            r.prompt_eval_duration.is_some(),
            "the fixture keeps the duration, as ollama/ollama#2068 shows"
        );
        let e = generation_from_response("ollama", &r, r.eval_count.unwrap() as usize, encode)
            .unwrap_err();
        assert!(matches!(e, BackendError::Invariant { .. }), "{e:?}");
        assert!(e.to_string().contains("prompt cache"), "{e}");
        // It becomes a degraded run carrying the reason, with no latency.
        assert_eq!(
            crate::measure::RunOutcome::from_error(&e).label(),
            "degraded"
        );
    }

    #[test]
    fn reused_prompt_tokens_are_recorded() {
        let r = reply(CACHED_PREFIX);
        let g =
            generation_from_response("ollama", &r, r.eval_count.unwrap() as usize, encode).unwrap();
        assert_eq!(
            g.timings.cached_prompt_tokens,
            r.prompt_eval_cached_count.map(|n| n as usize)
        );
        assert!(g.timings.cached_prompt_tokens.is_some());
        assert_eq!(g.timings.prompt_tokens as u64, r.prompt_eval_count.unwrap());
    }

    #[test]
    fn inconsistent_replies_are_invariant_errors() {
        let r = reply(NORMAL);
        let n = r.eval_count.unwrap() as usize;
        let too_many = generation_from_response("ollama", &r, n - 1, encode).unwrap_err();
        assert!(too_many.to_string().contains("num_predict"), "{too_many}");
        let mismatch = generation_from_response("ollama", &r, n, |_| Ok(vec![1, 2])).unwrap_err();
        assert!(
            mismatch.to_string().contains("re-tokenizes to 2"),
            "{mismatch}"
        );
        let not_done = GenerateResponse {
            done: false,
            ..r.clone()
        };
        assert!(generation_from_response("ollama", &not_done, n, encode).is_err());
        let no_eval = GenerateResponse {
            eval_count: None,
            ..r
        };
        assert!(generation_from_response("ollama", &no_eval, n, encode)
            .unwrap_err()
            .to_string()
            .contains("eval_count"));
    }
}
