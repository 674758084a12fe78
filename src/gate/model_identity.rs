//! `integrity.model_identity` (TR118's "INVALID DATA": a random 0.1M fixture was measured instead of
//! gpt2). The parameter count of the weights the backend loaded, the count the config implies and
//! the declared count must be equal, and a trained model's perplexity must be far below the
//! vocabulary size (a random model sits near it).

use std::collections::BTreeMap;

use super::{TrialContext, TrialResult, Verdict};
use crate::accuracy::{perplexity, PerplexityProtocol};
use crate::model::{GgufFile, LlamaConfig};
use crate::workload::Corpus;

pub fn evaluate(
    ctx: &TrialContext<'_>,
    sanity_tokens: usize,
    context: usize,
    untrained_fraction: f64,
) -> TrialResult {
    let mut metrics = BTreeMap::new();
    let done =
        |verdict: Verdict, metrics: BTreeMap<String, f64>| ctx.result(verdict, metrics, &[], 0);
    let fail = |reason: String, metrics| done(Verdict::Fail { reason }, metrics);

    let config = match ctx
        .model
        .gguf_path()
        .map_err(|e| e.to_string())
        .and_then(|p| {
            let g = GgufFile::open(&p).map_err(|e| e.to_string())?;
            LlamaConfig::from_gguf(&g).map_err(|e| e.to_string())
        }) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot read the model config: {e}"), metrics),
    };
    let mut backend = match (ctx.open)() {
        Ok(b) => b,
        Err(e) => return fail(format!("backend could not load the model: {e}"), metrics),
    };
    let from_config = config.parameter_count();
    let declared = ctx.model.declared_parameters;
    metrics.insert("parameters_config".into(), from_config as f64);
    metrics.insert("parameters_declared".into(), declared as f64);
    let mut failures = Vec::new();
    match backend.loaded_parameter_count() {
        Some(loaded) => {
            metrics.insert("parameters_loaded".into(), loaded as f64);
            if !(loaded == from_config && from_config == declared) {
                failures.push(format!("parameter counts disagree: loaded {loaded}, config {from_config}, declared {declared}"));
            }
        }
        None => failures.push(format!(
            "backend `{}` cannot report the parameter count of its loaded weights",
            ctx.backend_id
        )),
    }
    let text = match Corpus::Wiki.text() {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot prepare the sanity text: {e}"), metrics),
    };
    let protocol = PerplexityProtocol {
        context,
        max_tokens: sanity_tokens,
    };
    // Engines without logits (llama.cpp) score the same text with their own tool.
    let measured = match backend.perplexity_native(&text, protocol) {
        Some(r) => r.map_err(|e| e.to_string()),
        None => crate::workload::leading_tokens(&text, sanity_tokens, ctx.encode)
            .map_err(|e| format!("cannot prepare the sanity text: {e}"))
            .and_then(|tokens| {
                perplexity(backend.as_mut(), &tokens, protocol).map_err(|e| e.to_string())
            }),
    };
    match measured {
        Ok(p) => {
            metrics.insert("perplexity".into(), p.perplexity);
            metrics.insert("perplexity_std_error".into(), p.perplexity_std_error);
            let bound = config.vocab_size as f64 * untrained_fraction;
            if p.perplexity > bound {
                failures.push(format!(
                    "untrained fixture: perplexity {:.1} on {} wiki tokens is above {bound:.0} ({untrained_fraction} × vocabulary {}); a trained model scores far lower",
                    p.perplexity, p.scored_tokens, config.vocab_size
                ));
            }
        }
        Err(e) => failures.push(format!("perplexity could not be measured: {e}")),
    }
    if failures.is_empty() {
        let ppl = metrics.get("perplexity").copied().unwrap_or(f64::NAN);
        done(
            Verdict::Pass {
                summary: format!(
                    "{declared} parameters (loaded = config = declared); wiki perplexity {ppl:.2}"
                ),
            },
            metrics,
        )
    } else {
        fail(failures.join("; "), metrics)
    }
}
