//! The libtorch backend on the real SmolLM2 weights: against the plain-Rust fp32 reference, against
//! itself without a cache, against ONNX Runtime, and (where CUDA is really there) on the GPU.
#![cfg(feature = "torch")]

use std::sync::OnceLock;

use infergate::backend::tch::{runtime, DecodeMode, TchBackend, TchDevice, TchDtype, TchOptions};
use infergate::backend::{registry, Availability};
use infergate::backend::{Backend, Recompute};
use infergate::error::BackendError;
use infergate::model::catalog::{self, WeightSource};
use infergate::model::{reference, LlamaWeights};
use ndarray::Array2;

mod common;
use common::logits::relative_max_diff;

const TOKENS: [u32; 12] = [
    504, 2365, 6354, 16438, 27003, 690, 260, 23790, 3290, 30, 378, 5248,
];
const PROMPT: [u32; 8] = [504, 2365, 6354, 16438, 27003, 690, 260, 23790];

fn weights() -> &'static LlamaWeights {
    static W: OnceLock<LlamaWeights> = OnceLock::new();
    W.get_or_init(|| {
        WeightSource::catalog(&catalog::default_model().unwrap())
            .load_weights()
            .expect("SmolLM2 weights")
    })
}

fn reference_logits() -> &'static Array2<f32> {
    static R: OnceLock<Array2<f32>> = OnceLock::new();
    R.get_or_init(|| reference::forward(weights(), &TOKENS).expect("reference forward"))
}

fn open(id: &str, device: TchDevice, dtype: TchDtype) -> Result<TchBackend, BackendError> {
    TchBackend::open(TchOptions::new(id, device, dtype), weights())
}

#[test]
fn tch_cpu_fp32_logits_match_the_reference_forward_within_1e_4_relative() {
    let mut tch = open("tch-cpu", TchDevice::Cpu, TchDtype::Fp32).unwrap();
    let actual = tch.logits(&TOKENS).unwrap();
    let expected = reference_logits();
    let rel = relative_max_diff(&actual, expected);
    assert!(rel < 1e-4, "relative max difference {rel:e} ≥ 1e-4");
    assert_eq!(
        reference::argmax_rows(&actual),
        reference::argmax_rows(expected)
    );
    let ev = tch.tch_evidence();
    assert!(ev.all_on("cpu", "fp32"), "{ev:?}");
    assert_eq!(
        ev.outputs.iter().map(|p| p.count).sum::<u64>(),
        1,
        "one forward, one output tensor"
    );
}

#[test]
fn tch_loaded_parameters_are_the_declared_count() {
    let tch = open("tch-cpu", TchDevice::Cpu, TchDtype::Fp32).unwrap();
    assert_eq!(
        tch.loaded_parameter_count(),
        Some(catalog::default_model().unwrap().declared_parameters)
    );
    let info = tch.info();
    assert_eq!(
        (
            info.engine.as_str(),
            info.device.as_str(),
            info.precision.as_str()
        ),
        ("libtorch", "cpu", "fp32")
    );
    assert!(
        info.engine_version.starts_with("2.11.0"),
        "{}",
        info.engine_version
    );
}

#[test]
fn tch_kv_cached_greedy_tokens_equal_full_recompute_tokens() {
    let mut tch = open("tch-cpu", TchDevice::Cpu, TchDtype::Fp32).unwrap();
    let cached = tch.generate(&PROMPT, 64).unwrap();
    assert_eq!(cached.tokens.len(), 64);
    assert_eq!(cached.timings.decode_steps, 63);
    assert!(cached.timings.e2e_ms >= cached.timings.prefill_ms + cached.timings.decode_ms);
    let recomputed = tch.generate_full_recompute(&PROMPT, 64).unwrap();
    assert_eq!(cached.tokens, recomputed);
    let distinct: std::collections::BTreeSet<_> = cached.tokens.iter().collect();
    assert!(
        distinct.len() > 1,
        "a trained model does not repeat one token 64 times: {:?}",
        cached.tokens
    );
}

/// The static-shape decode step (fixed cache, position as a tensor, masked full-length attention,
/// RoPE as a matrix) is the step the CUDA-graph backend captures; on the CPU in fp32 it must decode
/// exactly the tokens of the eager loop, and keep doing so when its buffers are reused.
#[test]
fn tch_static_decode_step_gives_the_eager_tokens() {
    let mut eager = open("tch-cpu", TchDevice::Cpu, TchDtype::Fp32).unwrap();
    let mut fixed = TchBackend::open(
        TchOptions::new("tch-cpu-static", TchDevice::Cpu, TchDtype::Fp32)
            .with_decode(DecodeMode::Static),
        weights(),
    )
    .unwrap();
    let expected = eager.generate(&PROMPT, 64).unwrap();
    for round in 0..2 {
        let got = fixed.generate(&PROMPT, 64).unwrap();
        assert_eq!(got.timings.decode_steps, 63);
        assert_eq!(got.tokens, expected.tokens, "round {round}");
    }
    // A different prompt length on the same static buffers: stale cache entries stay masked.
    let short = &PROMPT[..3];
    assert_eq!(
        fixed.generate(short, 20).unwrap().tokens,
        eager.generate(short, 20).unwrap().tokens
    );
    let ev = fixed.tch_evidence();
    assert_eq!(ev.decode_mode, "static");
    assert!(ev.graph.is_none(), "no graph on the CPU: {ev:?}");
}

/// In bf16 the static formulation rounds differently from the eager forward (RoPE as a matmul,
/// fused RMSNorm, residual adds inside the matmul), so near-ties can flip; the decode-fraction
/// gate therefore compares the static and graph loops with a recompute of their own formulation,
/// which must give the cached loop's tokens: the cache changes nothing.
#[test]
fn tch_static_bf16_cached_tokens_equal_its_own_full_recompute() {
    let mut fixed = TchBackend::open(
        TchOptions::new("tch-cpu-static-bf16", TchDevice::Cpu, TchDtype::Bf16)
            .with_decode(DecodeMode::Static),
        weights(),
    )
    .unwrap();
    let long: [u32; 27] = [
        504, 1463, 282, 260, 33059, 5634, 351, 9935, 1150, 335, 13083, 33959, 288, 3948, 7761,
        8342, 618, 28899, 28, 284, 690, 800, 5034, 623, 2232, 325, 38317,
    ];
    let cached = fixed.generate(&long, 64).unwrap();
    match fixed.full_recompute_tokens(&long, 64).unwrap() {
        Recompute::Tokens(recomputed) => assert_eq!(cached.tokens, recomputed),
        Recompute::CannotCheck { reason } => {
            panic!("the static formulation has its own recompute: {reason}")
        }
    }
}

/// CUDA-graph decoding where CUDA and the shim are there: every decode step is a replay, the
/// tokens equal the static step's launched from the host (the same kernels), and the captured
/// step's kernel count is reported.
#[test]
fn tch_cuda_graph_replays_every_decode_step() {
    let probe = registry::probe("tch-cuda-graph-bf16");
    if let Availability::Absent { reason, .. } = &probe {
        eprintln!("skipping the CUDA-graph check: {reason}");
        return;
    }
    let open_mode = |mode| {
        TchBackend::open(
            TchOptions::new("tch-cuda-graph-bf16", TchDevice::Cuda(0), TchDtype::Bf16)
                .with_decode(mode),
            weights(),
        )
        .unwrap()
    };
    let mut graph = open_mode(DecodeMode::CudaGraph);
    let mut fixed = open_mode(DecodeMode::Static);
    let g = graph.generate(&PROMPT, 64).unwrap();
    let replays = graph.tch_evidence().graph.expect("graph evidence").replays;
    assert_eq!(replays, 63, "one replay per decode step");
    assert_eq!(g.tokens, fixed.generate(&PROMPT, 64).unwrap().tokens);
    let again = graph.generate(&PROMPT, 64).unwrap();
    assert_eq!(again.tokens, g.tokens);
    let ev = graph.tch_evidence().graph.unwrap();
    assert_eq!(ev.replays, 126);
    assert!(ev.kernels_per_step > 30, "{ev:?}");
    eprintln!(
        "graph: {} kernels per step; decode {:.2} ms for 63 steps",
        ev.kernels_per_step, again.timings.decode_ms
    );
}

#[test]
fn tch_fp32_logits_agree_with_onnx_runtime_fp32_within_1e_4_relative() {
    let mut ort = registry::open("ort-cpu", &catalog::default_model().unwrap()).expect("ort-cpu");
    let mut tch = registry::open("tch-cpu", &catalog::default_model().unwrap()).expect("tch-cpu");
    assert_eq!(tch.info().engine, "libtorch");
    let ort_logits = ort.logits(&TOKENS).unwrap();
    let tch_logits = tch.logits(&TOKENS).unwrap();
    let rel = relative_max_diff(&tch_logits, &ort_logits);
    assert!(rel < 1e-4, "relative max difference {rel:e} ≥ 1e-4");
    assert_eq!(
        reference::argmax_rows(&tch_logits),
        reference::argmax_rows(&ort_logits)
    );
}

#[test]
fn tch_registry_ids_probe_truthfully() {
    assert!(
        registry::probe("tch-cpu").is_available(),
        "{:?}",
        registry::probe("tch-cpu")
    );
    for id in ["tch-cuda", "tch-cuda-bf16", "tch-cuda-fp16"] {
        match (registry::probe(id), runtime().cuda_available) {
            (Availability::Available { .. }, true) => {}
            (Availability::Absent { reason, fix }, false) => {
                assert!(
                    reason.contains("libtorch_cuda") || reason.contains("device"),
                    "{reason}"
                );
                assert!(fix.contains("libtorch_cuda.so"), "{fix}");
                // The negative control for the compile-is-real gate: a cuda label cannot open here.
                match registry::open(id, &catalog::default_model().unwrap()) {
                    Err(BackendError::Unavailable { reason, .. }) => assert!(
                        reason.contains("libtorch_cuda") || reason.contains("device"),
                        "{reason}"
                    ),
                    Err(e) => panic!("{id}: expected Unavailable, got {e}"),
                    Ok(_) => panic!("{id} opened without CUDA"),
                }
            }
            (probe, cuda) => panic!("{id}: probe {probe:?} disagrees with cuda_available = {cuda}"),
        }
    }
}

/// Runs only where libtorch really has CUDA (on the borrowed H100 with
/// LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib); elsewhere it says why.
#[test]
fn tch_cuda_fp32_bf16_fp16_run_on_the_gpu_in_their_dtype() {
    let rt = runtime();
    if let Some(reason) = rt.cuda_unavailable_reason() {
        eprintln!("skipping the CUDA check: {reason}");
        return;
    }
    eprintln!(
        "libtorch {} at {:?}; {}; cudnn {}",
        rt.libtorch_version, rt.libtorch_path, rt.libtorch_cuda.reason, rt.cudnn_available
    );
    let expected = reference_logits();
    // Sanity bounds, not accuracy gates (those are perplexity-based): fp32 must be near-exact, the
    // half types within a few percent of the largest logit.
    for (id, dtype, max_rel) in [
        ("tch-cuda", TchDtype::Fp32, 1e-3f32),
        ("tch-cuda-bf16", TchDtype::Bf16, 0.1),
        ("tch-cuda-fp16", TchDtype::Fp16, 0.05),
    ] {
        let mut b = open(id, TchDevice::Cuda(0), dtype).unwrap();
        let logits = b.logits(&TOKENS).unwrap();
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{id}: non-finite logits"
        );
        let rel = relative_max_diff(&logits, expected);
        assert!(
            rel < max_rel,
            "{id}: relative max difference {rel:e} ≥ {max_rel:e}"
        );
        let agree = reference::argmax_rows(&logits)
            .iter()
            .zip(reference::argmax_rows(expected))
            .filter(|(a, b)| *a == b)
            .count();
        eprintln!(
            "{id}: argmax agrees with the fp32 reference at {agree}/{} positions",
            TOKENS.len()
        );
        let gen = b.generate(&PROMPT, 64).unwrap();
        eprintln!(
            "{id}: prefill {:.2} ms, decode {:.2} ms for 63 steps",
            gen.timings.prefill_ms, gen.timings.decode_ms
        );
        if dtype == TchDtype::Fp32 {
            assert_eq!(
                agree,
                TOKENS.len(),
                "{id}: fp32 argmax differs from the reference"
            );
            assert_eq!(
                gen.tokens,
                b.generate_full_recompute(&PROMPT, 64).unwrap(),
                "{id}: cached ≠ full recompute"
            );
        }
        let ev = b.tch_evidence();
        eprintln!("{id}: {ev:?}");
        assert!(ev.cuda_available && ev.libtorch_cuda_loaded);
        assert!(
            ev.all_on("cuda:0", dtype.label()),
            "{id}: tensors not all on cuda:0 in {}: {ev:?}",
            dtype.label()
        );
    }
}

/// Informational: decode tokens/s of tch-cpu and ort-cpu on one 64-token generation each, after a
/// warm-up. No assertion on time. `cargo test --features torch --test tch_backend -- --ignored --nocapture`
#[test]
#[ignore = "informational timing; run explicitly"]
fn decode_tokens_per_second_tch_cpu_vs_ort_cpu() {
    for id in ["tch-cpu", "ort-cpu"] {
        let mut b = registry::open(id, &catalog::default_model().unwrap()).unwrap();
        b.generate(&PROMPT, 8).unwrap();
        let g = b.generate(&PROMPT, 64).unwrap();
        eprintln!(
            "{id}: prefill {:.1} ms ({} tokens), decode {:.1} ms for {} steps = {:.1} tokens/s, e2e {:.1} ms",
            g.timings.prefill_ms,
            g.timings.prompt_tokens,
            g.timings.decode_ms,
            g.timings.decode_steps,
            g.timings.decode_steps as f64 / (g.timings.decode_ms / 1e3),
            g.timings.e2e_ms
        );
    }
}
