//! Unit tests of the libtorch backend against the reference forward (CPU).

use super::*;
use crate::model::reference;

/// max |actual − expected| / max |expected| over all logits.
fn relative_max_diff(actual: &Array2<f32>, expected: &Array2<f32>) -> f32 {
    let max_ref = expected.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let max_diff = actual
        .iter()
        .zip(expected)
        .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
    max_diff / max_ref
}

/// A backend on the CPU in fp32.
fn cpu_fp32(w: &LlamaWeights) -> TchBackend {
    TchBackend::open(
        TchOptions::new("tch-cpu", TchDevice::Cpu, TchDtype::Fp32),
        w,
    )
    .unwrap()
}

fn tiny() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        d_model: 64,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_dim: 96,
        vocab_size: 101,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
        context_length: 64,
        bos_token_id: None,
        eos_token_id: None,
        arch: Default::default(),
        attention_bias: false,
        rope_scaling: Default::default(),
    }
}

#[test]
fn runtime_reports_where_libtorch_came_from() {
    let rt = runtime();
    let path = rt
        .libtorch_path
        .as_ref()
        .expect("libtorch_cpu.so is mapped into a process that links tch");
    assert!(path.exists(), "{}", path.display());
    assert!(
        rt.libtorch_version.starts_with(EXPECTED_LIBTORCH),
        "libtorch {}",
        rt.libtorch_version
    );
    assert!(rt.threads >= 1);
    if !rt.libtorch_cuda.loaded {
        assert!(!rt.libtorch_cuda.reason.is_empty());
        assert!(
            !rt.cuda_available,
            "CUDA cannot be available without libtorch_cuda"
        );
        assert!(rt
            .cuda_unavailable_reason()
            .is_some_and(|r| r.contains("libtorch_cuda not loaded")));
    }
}

#[test]
fn tiny_random_model_matches_the_reference_and_counts_its_parameters() {
    let w = LlamaWeights::random(&tiny(), 3).unwrap();
    let mut b = cpu_fp32(&w);
    assert_eq!(b.loaded_parameter_count(), Some(w.parameter_count()));
    let c = &w.config;
    let traffic = b.memory_traffic().unwrap();
    let table = if c.tied_embeddings {
        0
    } else {
        (c.vocab_size * c.d_model - c.d_model) as u64
    };
    assert_eq!(
        traffic.weight_bytes_per_token,
        (w.parameter_count() - table) * 4
    );
    assert_eq!(
        traffic.kv_bytes_per_position,
        (2 * c.n_layers * c.n_kv_heads * c.head_dim() * 4) as u64
    );
    let tokens = [1u32, 7, 42, 99, 0, 13, 5];
    let expected = reference::forward(&w, &tokens).unwrap();
    let rel = relative_max_diff(&b.logits(&tokens).unwrap(), &expected);
    assert!(rel < 1e-4, "relative difference {rel}");
    let ev = b.tch_evidence();
    assert!(ev.all_on("cpu", "fp32"), "{ev:?}");
    assert_eq!(
        ev.weights.iter().map(|p| p.count).sum::<u64>(),
        w.parameter_count()
    );
}

#[test]
fn cached_prefix_forward_with_past_matches_full_forward() {
    // Exercises the explicit-mask path (several new tokens after a non-empty cache).
    let w = LlamaWeights::random(&tiny(), 4).unwrap();
    let mut b = cpu_fp32(&w);
    let tokens = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let full = to_host(&b.forward(&tokens, 0, None, false).unwrap()).unwrap();
    let mut cache = b.new_cache(tokens.len()).unwrap();
    let _prefix = b.forward(&tokens[..3], 0, Some(&mut cache), false).unwrap();
    let tail = to_host(&b.forward(&tokens[3..], 3, Some(&mut cache), false).unwrap()).unwrap();
    let diff = tail
        .iter()
        .zip(full.slice(ndarray::s![3.., ..]).iter())
        .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
    assert!(diff < 1e-4, "max |Δ| {diff}");
}

#[test]
fn half_precision_paths_run_in_their_dtype_on_cpu() {
    // The CUDA dtypes go through the same code; here they run on the CPU (slowly) so the dtype
    // plumbing (fp32 RMSNorm statistics, RoPE tables, KV cache) is exercised without a GPU.
    let w = LlamaWeights::random(&tiny(), 8).unwrap();
    let tokens = [2u32, 71, 18, 28, 18, 28];
    let expected = reference::forward(&w, &tokens).unwrap();
    for dtype in [TchDtype::Bf16, TchDtype::Fp16] {
        let mut b =
            TchBackend::open(TchOptions::new("tch-cpu-half", TchDevice::Cpu, dtype), &w).unwrap();
        let rel = relative_max_diff(&b.logits(&tokens).unwrap(), &expected);
        assert!(rel < 0.05, "{dtype:?}: relative difference {rel}");
        let g = b.generate(&tokens, 4).unwrap();
        assert_eq!(g.tokens.len(), 4);
        assert!(
            b.tch_evidence().all_on("cpu", dtype.label()),
            "{:?}",
            b.tch_evidence()
        );
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let w = LlamaWeights::random(&tiny(), 5).unwrap();
    let mut b = cpu_fp32(&w);
    assert!(b.logits(&[]).is_err());
    assert!(b.logits(&[101]).is_err(), "token outside the vocabulary");
    assert!(b.generate(&[1, 2], 0).is_err());
    assert!(
        b.generate(&[1; 60], 10).is_err(),
        "beyond the context length"
    );
    assert!(b.tch_evidence().outputs.is_empty(), "no forward ran");
}

#[test]
fn cuda_request_without_cuda_is_unavailable_with_the_reason() {
    if runtime().cuda_available {
        eprintln!("CUDA is available here; the negative case does not apply");
        return;
    }
    let w = LlamaWeights::random(&tiny(), 6).unwrap();
    match TchBackend::open(
        TchOptions::new("tch-cuda", TchDevice::Cuda(0), TchDtype::Fp32),
        &w,
    ) {
        Err(BackendError::Unavailable { reason, .. }) => assert!(
            reason.contains("libtorch_cuda") || reason.contains("device"),
            "{reason}"
        ),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("a CUDA backend opened without CUDA"),
    }
}
