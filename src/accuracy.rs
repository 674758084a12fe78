//! Accuracy: perplexity under one fixed protocol, shared by every backend and by llama.cpp's
//! `llama-perplexity`, so numbers are comparable.
//!
//! Protocol (llama.cpp's): tokenize the whole text without BOS (the GGUF's `add_bos_token` is false),
//! take the first `max_tokens` tokens, cut them into non-overlapping chunks of `context` tokens
//! (a trailing partial chunk is dropped), run each chunk as one causal forward from position 0, and
//! score the second half of each chunk: tokens `context/2 + 1 .. context − 1`, each predicted from
//! the logits of the position before it (255 tokens per 512-token chunk), so every scored token has
//! more than `context/2` tokens of context. This is exactly what `llama-perplexity` scores.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

pub use crate::backend::perplexity::{PerplexityProtocol, PerplexityResult};
use crate::backend::Backend;
use crate::error::BackendError;
use crate::model::reference::log_softmax;

/// Negative log-likelihoods of tokens `first_scored + 1 ..` of one chunk (logits row `i − 1`
/// predicts token `i`).
pub fn chunk_nll(logits: &Array2<f32>, chunk: &[u32], first_scored: usize) -> Vec<f64> {
    (first_scored + 1..chunk.len())
        .map(|i| -log_softmax(logits.row(i - 1))[chunk[i] as usize])
        .collect()
}

pub fn summarize_nll(nll: &[f64], chunks: usize, protocol: PerplexityProtocol) -> PerplexityResult {
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let se = (var / n).sqrt();
    let ppl = mean.exp();
    PerplexityResult {
        perplexity: ppl,
        mean_nll: mean,
        mean_nll_std_error: se,
        perplexity_std_error: ppl * se,
        scored_tokens: nll.len(),
        chunks,
        protocol,
    }
}

/// Perplexity of `tokens` through a backend's full-sequence logits.
pub fn perplexity(
    backend: &mut dyn Backend,
    tokens: &[u32],
    protocol: PerplexityProtocol,
) -> Result<PerplexityResult, BackendError> {
    score(backend, tokens, protocol, 0).map(|s| s.perplexity)
}

/// A backend's scores under a protocol: its perplexity, and the raw logits of the first
/// `distribution_positions` scored positions (for KL / top-1 / logit comparisons).
#[derive(Debug, Clone)]
pub struct Scores {
    pub perplexity: PerplexityResult,
    /// `[positions, vocab]`
    pub logits: Array2<f32>,
}

/// Score `tokens` on a backend, keeping the full distributions of the first `keep` scored positions.
pub fn score(
    backend: &mut dyn Backend,
    tokens: &[u32],
    protocol: PerplexityProtocol,
    keep: usize,
) -> Result<Scores, BackendError> {
    let chunks = protocol.chunks(tokens.len());
    if chunks == 0 || protocol.context < 2 {
        return Err(BackendError::Invariant {
            backend: backend.info().id.clone(),
            detail: format!(
                "{} tokens do not fill one chunk of {}",
                tokens.len(),
                protocol.context
            ),
        });
    }
    let mut nll = Vec::with_capacity(protocol.scored_tokens(tokens.len()));
    let mut kept: Vec<f32> = Vec::new();
    let mut vocab = 0;
    let mut kept_rows = 0;
    for c in 0..chunks {
        let chunk = &tokens[c * protocol.context..(c + 1) * protocol.context];
        let logits = backend.logits(chunk)?;
        vocab = logits.ncols();
        nll.extend(chunk_nll(&logits, chunk, protocol.first_scored()));
        for i in protocol.first_scored() + 1..chunk.len() {
            if kept_rows == keep {
                break;
            }
            kept.extend(logits.row(i - 1).iter());
            kept_rows += 1;
        }
    }
    let logits =
        Array2::from_shape_vec((kept_rows, vocab), kept).map_err(|e| BackendError::Invariant {
            backend: backend.info().id.clone(),
            detail: e.to_string(),
        })?;
    Ok(Scores {
        perplexity: summarize_nll(&nll, chunks, protocol),
        logits,
    })
}

/// How a candidate's next-token distributions differ from the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub positions: usize,
    /// Mean over positions of KL(reference ‖ candidate), nats.
    pub kl_divergence_mean: f64,
    /// Fraction of positions where both pick the same most likely token.
    pub top1_agreement: f64,
    pub mean_abs_logit_diff: f64,
}

pub fn compare(reference: &Scores, candidate: &Scores) -> Comparison {
    let positions = reference.logits.nrows().min(candidate.logits.nrows());
    let (mut kl, mut agree, mut abs_diff) = (0.0, 0usize, 0.0);
    for i in 0..positions {
        let (r, c) = (reference.logits.row(i), candidate.logits.row(i));
        let (lr, lc) = (log_softmax(r), log_softmax(c));
        kl += lr
            .iter()
            .zip(lc.iter())
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        if crate::model::reference::argmax(r) == crate::model::reference::argmax(c) {
            agree += 1;
        }
        abs_diff += r
            .iter()
            .zip(c.iter())
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / r.len() as f64;
    }
    let n = positions.max(1) as f64;
    Comparison {
        positions,
        kl_divergence_mean: kl / n,
        top1_agreement: agree as f64 / n,
        mean_abs_logit_diff: abs_diff / n,
    }
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
        assert_eq!(nll.len(), 3);
        let p = PerplexityProtocol {
            context: 8,
            max_tokens: 8,
        };
        let r = summarize_nll(&nll, 1, p);
        assert!((r.perplexity - vocab as f64).abs() < 1e-9);
        assert_eq!(p.scored_tokens(8), 3);
        assert_eq!(
            PerplexityProtocol {
                context: 512,
                max_tokens: 4096
            }
            .scored_tokens(5000),
            8 * 255
        );
    }

    #[test]
    fn identical_distributions_compare_as_identical_and_shifted_logits_too() {
        let logits = Array2::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as f32 * 0.3);
        let p = PerplexityProtocol {
            context: 8,
            max_tokens: 8,
        };
        let a = Scores {
            perplexity: summarize_nll(&[1.0, 2.0], 1, p),
            logits: logits.clone(),
        };
        let b = Scores {
            perplexity: summarize_nll(&[1.0, 2.0], 1, p),
            logits: logits.mapv(|v| v + 2.0),
        };
        let c = compare(&a, &b);
        assert!(
            c.kl_divergence_mean.abs() < 1e-9,
            "a constant shift leaves the distribution unchanged"
        );
        assert_eq!(c.top1_agreement, 1.0);
        assert!((c.mean_abs_logit_diff - 2.0).abs() < 1e-6);
        let flipped = Scores {
            perplexity: a.perplexity.clone(),
            logits: logits.mapv(|v| -v),
        };
        let d = compare(&a, &flipped);
        assert!(d.kl_divergence_mean > 0.1 && d.top1_agreement == 0.0);
    }
}
