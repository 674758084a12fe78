//! Accuracy: perplexity under one fixed protocol, shared by every backend and by llama.cpp's
//! `llama-perplexity`, so numbers are comparable.
//!
//! Protocol (llama.cpp's): tokenize the whole text without BOS (the GGUF's `add_bos_token` is false),
//! take the first `max_tokens` tokens, cut them into non-overlapping chunks of `context` tokens
//! (a trailing partial chunk is dropped), run each chunk as one causal forward from position 0, and
//! score the second half of each chunk: the predictions of tokens `context/2 .. context`, so every
//! scored token has at least `context/2` tokens of context.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::BackendError;
use crate::model::reference::log_softmax;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerplexityProtocol {
    pub context: usize,
    pub max_tokens: usize,
}

impl PerplexityProtocol {
    pub fn first_scored(&self) -> usize {
        self.context / 2
    }
    pub fn chunks(&self, available: usize) -> usize {
        available.min(self.max_tokens) / self.context
    }
    pub fn scored_tokens(&self, available: usize) -> usize {
        self.chunks(available) * (self.context - 1 - self.first_scored() + 1)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityResult {
    pub perplexity: f64,
    /// Mean negative log-likelihood (nats per token).
    pub mean_nll: f64,
    /// Standard error of `mean_nll` (sample std / √n).
    pub mean_nll_std_error: f64,
    /// Standard error of the perplexity by the delta method: `ppl · se(mean_nll)`.
    pub perplexity_std_error: f64,
    pub scored_tokens: usize,
    pub chunks: usize,
    pub protocol: PerplexityProtocol,
}

/// Per-token negative log-likelihoods of the scored positions of one chunk's logits.
pub fn chunk_nll(logits: &Array2<f32>, chunk: &[u32], first_scored: usize) -> Vec<f64> {
    (first_scored.max(1)..chunk.len()).map(|i| -log_softmax(logits.row(i - 1))[chunk[i] as usize]).collect()
}

pub fn summarize_nll(nll: &[f64], chunks: usize, protocol: PerplexityProtocol) -> PerplexityResult {
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let se = (var / n).sqrt();
    let ppl = mean.exp();
    PerplexityResult { perplexity: ppl, mean_nll: mean, mean_nll_std_error: se, perplexity_std_error: ppl * se, scored_tokens: nll.len(), chunks, protocol }
}

/// Perplexity of `tokens` through a backend's full-sequence logits.
pub fn perplexity(backend: &mut dyn Backend, tokens: &[u32], protocol: PerplexityProtocol) -> Result<PerplexityResult, BackendError> {
    let chunks = protocol.chunks(tokens.len());
    if chunks == 0 || protocol.context < 2 {
        return Err(BackendError::Invariant {
            backend: backend.info().id.clone(),
            detail: format!("{} tokens do not fill one chunk of {}", tokens.len(), protocol.context),
        });
    }
    let mut nll = Vec::with_capacity(protocol.scored_tokens(tokens.len()));
    for c in 0..chunks {
        let chunk = &tokens[c * protocol.context..(c + 1) * protocol.context];
        let logits = backend.logits(chunk)?;
        nll.extend(chunk_nll(&logits, chunk, protocol.first_scored()));
    }
    Ok(summarize_nll(&nll, chunks, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_vocabulary_sized_perplexity() {
        let vocab = 50;
        let chunk: Vec<u32> = (0..8).map(|i| i % vocab as u32).collect();
        let logits = Array2::<f32>::zeros((8, vocab));
        let nll = chunk_nll(&logits, &chunk, 4);
        assert_eq!(nll.len(), 4);
        let p = PerplexityProtocol { context: 8, max_tokens: 8 };
        let r = summarize_nll(&nll, 1, p);
        assert!((r.perplexity - vocab as f64).abs() < 1e-9);
        assert_eq!(p.scored_tokens(8), 4);
    }
}
