//! Helpers shared by the model tests: synthetic GGUFs, llama-quantize, and llama.cpp's verdict on
//! the fp32 ONNX export of a GGUF.
#![allow(dead_code)]

pub mod bin;
pub mod logits;

use std::path::{Path, PathBuf};
use std::process::Command;

use infergate::assets::llama_cpp::{self, LlamaCppBuild};
use infergate::backend::llama_cpp::kld::{self, KldAgreement};
use infergate::backend::ort::{OptLevel, OrtBackend, OrtOptions};
use infergate::backend::Backend;
use infergate::model::config::{Architecture, LlamaConfig, RopeScaling};
use infergate::model::ggml::GgmlType;
use infergate::model::gguf::GgufFile;
use infergate::model::gguf_writer;
use infergate::model::onnx_export;
use infergate::model::onnx_graph::WeightFormat;
use infergate::model::tensors::{GgufSource, RandomSource};
use infergate::model::{catalog, Tokenizer};
use infergate::workload::{leading_tokens, Corpus};

/// The llama.cpp build, or a failure that says how to get it (never a silent pass).
pub fn llama_cpp() -> LlamaCppBuild {
    llama_cpp::locate().unwrap_or_else(|| {
        panic!(
            "llama.cpp is not built: run `cargo run --release -- build-llama-cpp` first (CI does)"
        )
    })
}

/// The default model's GGUF (its tokenizer is reused by every synthetic model).
pub fn smollm2() -> PathBuf {
    catalog::default_model()
        .and_then(|m| m.gguf_path())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The first `n` wiki tokens under SmolLM2's tokenizer (shared by every model here).
pub fn wiki_tokens(n: usize) -> Vec<u32> {
    let gguf = GgufFile::open(&smollm2()).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let text = Corpus::Wiki.text().unwrap();
    leading_tokens(&text, n, |t| tok.encode(t)).unwrap()
}

/// A LLaMA-family config with SmolLM2's vocabulary.
pub fn config(
    arch: Architecture,
    n_layers: usize,
    d_model: usize,
    n_heads: usize,
    n_kv_heads: usize,
    ffn_dim: usize,
    tied: bool,
) -> LlamaConfig {
    LlamaConfig {
        n_layers,
        d_model,
        n_heads,
        n_kv_heads,
        ffn_dim,
        vocab_size: 49152,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: tied,
        context_length: 2048,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        arch,
        attention_bias: arch == Architecture::Qwen2,
        rope_scaling: RopeScaling::default(),
    }
}

/// Seeded random weights whose logits are far from uniform (layer matrices of std 1/√d, embedding
/// and head of std 0.08: logits of std ≈ 1.3–1.8, peaked but inside the 16 nats llama.cpp keeps), so agreement is measured token by token, not on a flat
/// distribution where any two random models look alike.
pub fn peaky(config: &LlamaConfig, seed: u64) -> RandomSource {
    let mut s = RandomSource::new(config, seed).unwrap();
    s.std = 1.0 / (config.d_model as f32).sqrt();
    s.embed_std = 0.08;
    s
}

/// Write `source` as an F32 GGUF with SmolLM2's tokenizer.
pub fn write_f32(source: &RandomSource, path: &Path) {
    let donor = GgufFile::open(&smollm2()).unwrap();
    gguf_writer::write_model(path, source, GgmlType::F32, &donor, "infergate-synthetic")
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `llama-quantize --allow-requantize [--pure] src dst TYPE` (an F32 source asked for F32 is copied).
pub fn quantize(build: &LlamaCppBuild, src: &Path, dst: &Path, ty: &str, pure: bool) {
    let source_is_f32 = GgufFile::open(src)
        .map(|g| g.dominant_matrix_type() == GgmlType::F32)
        .unwrap_or(false);
    if ty == "F32" && source_is_f32 {
        std::fs::copy(src, dst).expect("copy");
        return;
    }
    let mut cmd = Command::new(&build.llama_quantize);
    cmd.arg("--allow-requantize");
    if pure {
        cmd.arg("--pure");
    }
    let out = cmd
        .arg(src)
        .arg(dst)
        .arg(ty)
        .output()
        .expect("llama-quantize runs");
    assert!(
        out.status.success(),
        "llama-quantize {ty} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Export `gguf` to fp32 ONNX in `dir` (streamed), open it on ONNX Runtime CPU (no graph
/// optimization: the reference configuration), write its logits of `tokens` as llama.cpp's
/// KL-divergence base, and let `llama-perplexity` compare its own forward on the same GGUF.
pub fn agreement(
    build: &LlamaCppBuild,
    gguf: &Path,
    tokens: &[u32],
    n_ctx: usize,
    dir: &Path,
    fault: Option<(usize, f32)>,
) -> KldAgreement {
    let file = GgufFile::open(gguf).unwrap_or_else(|e| panic!("{e}"));
    let source = GgufSource::new(&file)
        .and_then(|s| s.with_fault(fault))
        .unwrap_or_else(|e| panic!("{e}"));
    let export_dir = dir.join("onnx");
    onnx_export::export(&source, WeightFormat::Fp32, None, &export_dir, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let config = infergate::model::tensors::TensorSource::config(&source).clone();
    let vocab = config.vocab_size;
    let mut ort = OrtBackend::open(OrtOptions::cpu(
        "ort-cpu-ref",
        export_dir.join("model.onnx"),
        config,
        "fp32",
        OptLevel::Disabled,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let base = dir.join("reference.kld");
    kld::write_base(&base, n_ctx, vocab, tokens, |chunk| {
        ort.logits(chunk).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    drop(ort);
    std::fs::remove_dir_all(&export_dir).ok();
    kld::compare(build, gguf, &base, n_ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// The accuracy gate's perplexity threshold for llama.cpp (gates/accuracy.perplexity_delta.toml).
pub fn llama_cpp_ppl_threshold() -> f64 {
    use infergate::gate::{Check, GateSpec};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gates/accuracy.perplexity_delta.toml");
    let spec = GateSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let Check::PerplexityDelta(p) = &spec.check else {
        panic!("unexpected check kind in {}", path.display())
    };
    *p.max_abs_delta
        .get("llama-cpp")
        .expect("the gate file sets a llama-cpp threshold")
}
