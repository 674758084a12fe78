//! ONNX Runtime's CUDA backend (`ort-cuda`): the I/O-binding decode loop it uses (checked on the CPU
//! allocator here, where it must give the plain loop's tokens), and where the CUDA build of ONNX
//! Runtime is staged (`ORT_DYLIB_PATH` → onnxruntime-gpu, CUDA 13 libraries reachable), the real
//! provider: compute nodes on CUDA by ONNX Runtime's own profile, logits close to the CPU's.

use infergate::backend::ort::{BindTarget, KvCacheHome, OptLevel, OrtBackend, OrtOptions};
use infergate::backend::Backend;
use infergate::backend::{registry, Availability};
use infergate::model::catalog::{self, WeightSource};
use infergate::model::onnx_graph::WeightFormat;

const PROMPT: [u32; 8] = [504, 2365, 6354, 16438, 27003, 690, 260, 23790];

fn open(kv_cache: KvCacheHome) -> OrtBackend {
    let source = WeightSource::catalog(&catalog::default_model().expect("default model"));
    let prepared = catalog::ensure_onnx(&source, WeightFormat::Fp32).expect("export");
    let mut o = OrtOptions::cpu(
        "ort-cpu",
        prepared.model_path,
        prepared.config,
        "fp32",
        OptLevel::All,
    );
    o.kv_cache = kv_cache;
    OrtBackend::open(o).expect("open")
}

#[test]
fn the_bound_cache_loop_decodes_the_plain_loops_tokens() {
    let mut plain = open(KvCacheHome::HostRoundTrip);
    let mut bound = open(KvCacheHome::Bound(BindTarget::Cpu));
    let a = plain.generate(&PROMPT, 24).unwrap();
    let b = bound.generate(&PROMPT, 24).unwrap();
    assert_eq!(b.timings.decode_steps, 23);
    assert_eq!(a.tokens, b.tokens);
    let (la, lb) = (
        plain.logits(&PROMPT[..4]).unwrap(),
        bound.logits(&PROMPT[..4]).unwrap(),
    );
    assert_eq!(
        la, lb,
        "same session options, same kernels: identical logits"
    );
}

/// Where `ort-cuda` is available (probe: provider libraries verified, CUDA libraries loadable).
#[test]
fn ort_cuda_runs_its_compute_nodes_on_cuda_and_agrees_with_the_cpu() {
    let probe = registry::probe("ort-cuda");
    if let Availability::Absent { reason, .. } = &probe {
        eprintln!("skipping the CUDA check: {reason}");
        return;
    }
    let model = &catalog::default_model().expect("default model");
    let mut cuda = registry::open_for_evidence("ort-cuda", model, None).expect("ort-cuda");
    let ev = cuda.evidence().expect("evidence").expect("profile");
    eprintln!("{ev:?}");
    let on_cuda = ev.compute_fraction_on("CUDAExecutionProvider");
    assert!(
        on_cuda >= 0.95,
        "{:.0}% of compute nodes on CUDA",
        100.0 * on_cuda
    );
    let mut cpu = registry::open("ort-cpu", model).unwrap();
    let mut cuda = registry::open("ort-cuda", model).unwrap();
    let (a, b) = (cpu.logits(&PROMPT).unwrap(), cuda.logits(&PROMPT).unwrap());
    let max_ref = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = a
        .iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        max_diff / max_ref < 1e-3,
        "relative difference {:e}",
        max_diff / max_ref
    );
    let g = cuda.generate(&PROMPT, 64).unwrap();
    eprintln!(
        "ort-cuda: prefill {:.2} ms, decode {:.2} ms for {} steps",
        g.timings.prefill_ms, g.timings.decode_ms, g.timings.decode_steps
    );
}
