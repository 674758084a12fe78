//! `accuracy.perplexity_delta` (TR118 §2.3/§9, TR118v2 §6.2): the same weights on a candidate
//! backend/precision keep the reference's perplexity: `delta = (ppl − ppl_ref) / ppl_ref` within the
//! candidate's threshold. Also reported: KL divergence and top-1 agreement of the candidate's
//! next-token distributions against the reference's, and the mean absolute logit difference.
//!
//! The reference (ONNX Runtime CPU fp32, graph optimizations disabled) is scored once per process
//! and reused by every candidate trial.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::{Evaluation, GateKind, Metrics, Part, Threshold, TrialContext};
use crate::accuracy::{compare, score, PerplexityProtocol, Scores};
use crate::workload::{leading_tokens, Corpus};

/// Parameters of the check, from the gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexityDeltaParams {
    /// Backend id of the reference.
    pub reference: String,
    pub corpus: Corpus,
    pub context: usize,
    pub max_tokens: usize,
    /// Scored positions whose full distributions are kept for KL / top-1 / logit differences.
    pub distribution_positions: usize,
    /// Backend id → largest allowed |delta|.
    pub max_abs_delta: BTreeMap<String, f64>,
}

type ReferenceKey = (String, String, PerplexityProtocol, usize);
static REFERENCES: OnceLock<Mutex<BTreeMap<String, std::sync::Arc<Scores>>>> = OnceLock::new();

fn reference_scores(
    ctx: &TrialContext<'_>,
    p: &PerplexityDeltaParams,
    tokens: &[u32],
    protocol: PerplexityProtocol,
) -> Result<std::sync::Arc<Scores>, String> {
    let key: ReferenceKey = (
        p.reference.clone(),
        format!("{:?}", p.corpus),
        protocol,
        p.distribution_positions,
    );
    let key = format!("{key:?}");
    let cache = REFERENCES.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = guard.get(&key) {
        return Ok(s.clone());
    }
    let mut reference = ctx
        .backends
        .open(&p.reference)
        .map_err(|e| format!("reference `{}` could not load: {e}", p.reference))?;
    let scores = score(
        reference.as_mut(),
        tokens,
        protocol,
        p.distribution_positions,
    )
    .map_err(|e| format!("reference `{}` failed: {e}", p.reference))?;
    let scores = std::sync::Arc::new(scores);
    guard.insert(key, scores.clone());
    Ok(scores)
}

pub const PERPLEXITY_DELTA: &str = "perplexity_delta";

impl GateKind for PerplexityDeltaParams {
    fn parts(&self) -> &'static [&'static str] {
        &[PERPLEXITY_DELTA]
    }

    fn validate(&self, spec: &super::GateSpec) -> Result<(), String> {
        match spec
            .backends
            .iter()
            .find(|b| !self.max_abs_delta.contains_key(*b))
        {
            Some(b) => Err(format!("no max_abs_delta for backend `{b}`")),
            None => Ok(()),
        }
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

fn evaluate(ctx: &TrialContext<'_>, p: &PerplexityDeltaParams) -> Evaluation {
    let fail = Evaluation::error;
    let Some(&threshold) = p.max_abs_delta.get(ctx.backend_id()) else {
        return fail(format!(
            "{}: no max_abs_delta for backend `{}`",
            ctx.spec.path.display(),
            ctx.backend_id()
        ));
    };
    let max_tokens = ctx.profile.perplexity_tokens.unwrap_or(p.max_tokens);
    let protocol = PerplexityProtocol {
        context: p.context,
        max_tokens,
    };
    let text = match p.corpus.text() {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot load the {:?} text: {e}", p.corpus)),
    };
    let tokens = match leading_tokens(&text, max_tokens, ctx.encode) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot tokenize the text: {e}")),
    };
    let reference = match reference_scores(ctx, p, &tokens, protocol) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut candidate = match ctx.open() {
        Ok(b) => b,
        Err(e) => return fail(format!("candidate could not load: {e}")),
    };
    let mut metrics = Metrics::default();
    metrics.insert("reference_perplexity", reference.perplexity.perplexity);
    let (cand_ppl, note) = match candidate.perplexity_native(&text, protocol) {
        Some(Ok(native)) => (
            native,
            "perplexity from the engine's own tool; KL/top-1 not available from it".to_string(),
        ),
        Some(Err(e)) => return fail(format!("candidate perplexity failed: {e}")),
        None => match score(
            candidate.as_mut(),
            &tokens,
            protocol,
            p.distribution_positions,
        ) {
            Ok(s) => {
                let c = compare(&reference, &s);
                metrics.insert("kl_divergence_mean", c.kl_divergence_mean);
                metrics.insert("top1_agreement", c.top1_agreement);
                metrics.insert("mean_abs_logit_diff", c.mean_abs_logit_diff);
                let note = format!(
                    "KL {:.2e} nats, top-1 agreement {:.2}%, mean |Δlogit| {:.4} over {} positions",
                    c.kl_divergence_mean,
                    100.0 * c.top1_agreement,
                    c.mean_abs_logit_diff,
                    c.positions
                );
                (s.perplexity, note)
            }
            Err(e) => return fail(format!("candidate perplexity failed: {e}")),
        },
    };
    if cand_ppl.scored_tokens != reference.perplexity.scored_tokens {
        return fail(format!(
            "candidate scored {} tokens, reference {}: not the same protocol",
            cand_ppl.scored_tokens, reference.perplexity.scored_tokens
        ));
    }
    let delta =
        (cand_ppl.perplexity - reference.perplexity.perplexity) / reference.perplexity.perplexity;
    metrics.insert("perplexity", cand_ppl.perplexity);
    metrics.insert("perplexity_std_error", cand_ppl.perplexity_std_error);
    metrics.insert("perplexity_delta", delta);
    let part = Part::compare(
        PERPLEXITY_DELTA,
        delta.abs(),
        Threshold::below(threshold),
        format!(
            "|(ppl − ref) / ref|: ppl {:.4} ± {:.4} vs reference {:.4} ({}), delta {:+.4}%",
            cand_ppl.perplexity,
            cand_ppl.perplexity_std_error,
            reference.perplexity.perplexity,
            p.reference,
            100.0 * delta
        ),
    );
    Evaluation::judged(vec![part], note).with_metrics(metrics)
}
