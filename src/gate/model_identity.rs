//! `integrity.model_identity` (TR118's "INVALID DATA": a random 0.1M fixture was measured instead of
//! gpt2). The parameter count of the weights the backend loaded, the count the config implies and
//! the declared count must be equal, and a trained model's perplexity must be far below the
//! vocabulary size (a random model sits near it).

use serde::{Deserialize, Serialize};

use super::{Evaluation, GateKind, Metrics, Part, Threshold, TrialContext};
use crate::accuracy::{perplexity, PerplexityProtocol};
use crate::model::{GgufFile, LlamaConfig};
use crate::workload::Corpus;

pub const LOADED_PARAMETERS: &str = "loaded_parameters";
pub const CONFIG_PARAMETERS: &str = "config_parameters";
pub const TRAINED_PERPLEXITY: &str = "trained_perplexity";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentityParams {
    /// Tokens of the wiki text scored for the sanity perplexity.
    pub sanity_tokens: usize,
    pub context: usize,
    /// Perplexity above `vocab_size * untrained_fraction` → untrained fixture.
    pub untrained_fraction: f64,
}

impl GateKind for ModelIdentityParams {
    fn parts(&self) -> &'static [&'static str] {
        &[LOADED_PARAMETERS, CONFIG_PARAMETERS, TRAINED_PERPLEXITY]
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        let config = match ctx
            .model
            .gguf_path()
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let g = GgufFile::open(&p).map_err(|e| e.to_string())?;
                LlamaConfig::from_gguf(&g).map_err(|e| e.to_string())
            }) {
            Ok(c) => c,
            Err(e) => return Evaluation::error(format!("cannot read the model config: {e}")),
        };
        let mut backend = match ctx.open() {
            Ok(b) => b,
            Err(e) => return Evaluation::error(format!("backend could not load the model: {e}")),
        };
        let from_config = config.parameter_count();
        let declared = ctx.model.declared_parameters;
        let mut metrics = Metrics::default();
        metrics.insert("parameters_config", from_config as f64);
        metrics.insert("parameters_declared", declared as f64);
        let exact = Threshold::equal(declared as f64);
        let mut parts = vec![Part::compare(
            CONFIG_PARAMETERS,
            from_config as f64,
            exact,
            "parameters the GGUF's config implies, against the declared count",
        )];
        parts.push(match backend.loaded_parameter_count() {
            Some(loaded) => {
                metrics.insert("parameters_loaded", loaded as f64);
                Part::compare(
                    LOADED_PARAMETERS,
                    loaded as f64,
                    exact,
                    "parameters in the weights the backend loaded, against the declared count",
                )
            }
            None => Part::not_checked(
                LOADED_PARAMETERS,
                format!(
                    "backend `{}` cannot report the parameter count of its loaded weights",
                    ctx.backend_id()
                ),
            ),
        });
        let text = match Corpus::Wiki.text() {
            Ok(t) => t,
            Err(e) => return Evaluation::error(format!("cannot prepare the sanity text: {e}")),
        };
        let protocol = PerplexityProtocol {
            context: self.context,
            max_tokens: self.sanity_tokens,
        };
        // Engines without logits (llama.cpp) score the same text with their own tool.
        let measured = match backend.perplexity_native(&text, protocol) {
            Some(r) => r.map_err(|e| e.to_string()),
            None => crate::workload::leading_tokens(&text, self.sanity_tokens, ctx.encode)
                .map_err(|e| format!("cannot prepare the sanity text: {e}"))
                .and_then(|tokens| {
                    perplexity(backend.as_mut(), &tokens, protocol).map_err(|e| e.to_string())
                }),
        };
        let bound = config.vocab_size as f64 * self.untrained_fraction;
        parts.push(match measured {
            Ok(p) => {
                metrics.insert("perplexity", p.perplexity);
                metrics.insert("perplexity_std_error", p.perplexity_std_error);
                Part::compare(
                    TRAINED_PERPLEXITY,
                    p.perplexity,
                    Threshold::at_most(bound),
                    format!(
                        "wiki perplexity over {} tokens; an untrained fixture scores above {} × vocabulary {}",
                        p.scored_tokens, self.untrained_fraction, config.vocab_size
                    ),
                )
            }
            Err(e) => Part::no_data(TRAINED_PERPLEXITY, format!("perplexity could not be measured: {e}")),
        });
        Evaluation::judged(parts, String::new()).with_metrics(metrics)
    }
}
