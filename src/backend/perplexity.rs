//! What a perplexity is, as every backend computes it: the protocol (llama.cpp's; see
//! [`crate::accuracy`] for its definition and the harness's own computation) and the result, the
//! types [`super::Backend::perplexity_native`] speaks.

use serde::{Deserialize, Serialize};

/// Chunks of `context` tokens over the first `max_tokens` tokens of a text; the second half of each
/// chunk scored ([`crate::accuracy`]).
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
        self.chunks(available) * (self.context - 1 - self.first_scored())
    }
}

/// A perplexity with its standard error and the protocol it was computed under.
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
