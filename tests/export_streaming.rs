//! The fp32 and fp16 exports stream: a synthetic model of 0.35 B parameters (1.4 GB in fp32) is
//! exported while the process's peak resident memory grows by a small multiple of its largest
//! tensor, not by the model. Own test binary, one test: the peak (`VmHWM`) is the process's.
//!
//! Measured numbers are printed and recorded in docs/models.md.

use infergate::model::config::{Architecture, LlamaConfig, RopeScaling};
use infergate::model::onnx_export;
use infergate::model::onnx_graph::WeightFormat;
use infergate::model::tensors::RandomSource;

fn vm_hwm_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM line");
    kb * 1024
}

#[test]
fn exports_hold_about_two_copies_of_the_largest_tensor_not_the_model() {
    let config = LlamaConfig {
        n_layers: 24,
        d_model: 1024,
        n_heads: 16,
        n_kv_heads: 4,
        ffn_dim: 2816,
        vocab_size: 32000,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
        context_length: 2048,
        bos_token_id: None,
        eos_token_id: None,
        arch: Architecture::Llama,
        attention_bias: false,
        rope_scaling: RopeScaling::default(),
    };
    let source = RandomSource::new(&config, 1).unwrap();
    let params = config.parameter_count();
    let largest = (config.vocab_size * config.d_model) as u64 * 4;
    for format in [WeightFormat::Fp32, WeightFormat::Fp16] {
        let dir = tempfile::tempdir().unwrap();
        // Reset the peak to the current RSS (Linux: `5` to clear_refs), so each format is measured alone.
        std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
        let before = vm_hwm_bytes();
        let started = std::time::Instant::now();
        let exported = onnx_export::export(&source, format, None, dir.path(), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let peak_growth = vm_hwm_bytes().saturating_sub(before);
        let data = std::fs::metadata(&exported.data_path).unwrap().len();
        let onnx = std::fs::metadata(&exported.model_path).unwrap().len();
        eprintln!(
            "{}: {params} parameters, external data {:.2} GB, .onnx {} kB, peak RSS growth {:.0} MB \
             (largest fp32 tensor {:.0} MB), {:.1} s",
            format.label(),
            data as f64 / 1e9,
            onnx / 1024,
            peak_growth as f64 / 1e6,
            largest as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        assert!(data >= params * if format == WeightFormat::Fp16 { 2 } else { 4 });
        assert!(
            onnx < 4 << 20,
            "the protobuf holds no weights: {onnx} bytes"
        );
        assert!(
            peak_growth < 3 * largest,
            "{}: peak grew by {peak_growth} bytes, more than 3 × the largest tensor ({largest})",
            format.label()
        );
    }
}
