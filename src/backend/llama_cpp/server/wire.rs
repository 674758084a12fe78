//! The `/completion` wire format: the request every call sends ([`completion_body`]) and the
//! response's tokens, timings and candidate log-probabilities, turned into a [`Generation`].

use serde::Deserialize;

use crate::backend::{Generation, RunTimings, TimingSource};

const SEED: u64 = 42;

/// The `timings` object of a `/completion` response.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerTimings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub tokens: Vec<u32>,
    pub timings: ServerTimings,
    /// One entry per generated token when the request asked for `n_probs > 0`.
    #[serde(default)]
    pub completion_probabilities: Vec<TokenProbabilities>,
}

/// A generated token with the most likely candidates at its position, log-probabilities from the
/// softmax of the raw logits (before sampling: `post_sampling_probs` off), so the difference of two
/// log-probabilities is the difference of their logits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenProbabilities {
    pub id: u32,
    pub logprob: f64,
    #[serde(default)]
    pub top_logprobs: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Candidate {
    pub id: u32,
    pub logprob: f64,
}

impl TokenProbabilities {
    /// Logit of the chosen token minus the best other candidate's (`None` with fewer than two
    /// candidates): how far a numerics difference must move the logits to change a greedy choice.
    pub fn margin(&self) -> Option<f64> {
        let chosen = self
            .top_logprobs
            .iter()
            .find(|c| c.id == self.id)
            .map_or(self.logprob, |c| c.logprob);
        self.top_logprobs
            .iter()
            .filter(|c| c.id != self.id)
            .map(|c| c.logprob)
            .reduce(f64::max)
            .map(|other| chosen - other)
    }
}

/// The `/completion` request every call sends: `prompt` as token ids, `n_predict` tokens, greedy
/// (temperature 0, top-k 1), a fixed seed, repetition penalties off, EOS ignored (its logit biased to
/// −∞, so generation and recompute choose among the same tokens), prompt cache off, and the top
/// `n_probs` candidates per token (0 = none) reported before sampling.
pub fn completion_body(prompt: &[u32], n_predict: usize, n_probs: usize) -> serde_json::Value {
    serde_json::json!({
        "prompt": prompt,
        "n_predict": n_predict,
        "temperature": 0.0,
        "top_k": 1,
        "seed": SEED,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "cache_prompt": false,
        "ignore_eos": true,
        "return_tokens": true,
        "n_probs": n_probs,
        "post_sampling_probs": false,
        "stream": false,
    })
}

/// One step of the full recompute: the greedy token after `sequence`, computed from all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecomputeStep {
    pub token: u32,
    /// The candidates at this position, when asked for.
    pub probabilities: Option<TokenProbabilities>,
}

/// Turn a `/completion` response into a [`Generation`]; `wall_ms` is the HTTP round trip.
pub fn generation_from(resp: &CompletionResponse, gen_tokens: usize, wall_ms: f64) -> Generation {
    let t = &resp.timings;
    Generation {
        tokens: resp.tokens.clone(),
        timings: RunTimings {
            prompt_tokens: t.prompt_n,
            gen_tokens: resp.tokens.len(),
            prefill_ms: t.prompt_ms,
            decode_ms: t.predicted_ms,
            e2e_ms: wall_ms.max(t.prompt_ms + t.predicted_ms),
            decode_steps: t.predicted_n.saturating_sub(1).min(gen_tokens),
            timing_source: TimingSource::Engine,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            memory_traffic: None,
        },
        early_stop: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_timings_become_engine_phases() {
        let body = r#"{"content":"x","tokens":[1,2,3],"timings":{"prompt_n":8,"prompt_ms":12.5,"prompt_per_token_ms":1.5,"predicted_n":3,"predicted_ms":30.0}}"#;
        let r: CompletionResponse = serde_json::from_str(body).unwrap();
        let g = generation_from(&r, 3, 50.0);
        assert_eq!(
            (
                g.timings.prompt_tokens,
                g.timings.prefill_ms,
                g.timings.decode_ms,
                g.timings.e2e_ms,
                g.timings.decode_steps
            ),
            (8, 12.5, 30.0, 50.0, 2)
        );
        assert_eq!(g.timings.timing_source, TimingSource::Engine);
    }
}
