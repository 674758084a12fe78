//! The exported SmolLM2 decoder on ONNX Runtime CPU against the plain-Rust fp32 reference forward.

use infergate::backend::ort::{OptLevel, OrtBackend, OrtOptions};
use infergate::backend::Backend;
use infergate::model::catalog::{self, WeightSource};
use infergate::model::onnx_graph::WeightFormat;
use infergate::model::reference;

mod common;

fn open(opt: OptLevel) -> (OrtBackend, WeightSource) {
    let source = WeightSource::catalog(&catalog::default_model().unwrap());
    let prepared = catalog::ensure_onnx(&source, WeightFormat::Fp32).expect("export");
    let b = OrtBackend::open(OrtOptions::cpu(
        "ort-cpu",
        prepared.model_path,
        prepared.config,
        "fp32",
        opt,
    ))
    .expect("open");
    (b, source)
}

#[test]
fn ort_logits_match_the_reference_forward_within_1e_4_relative() {
    let (mut ort, source) = open(OptLevel::Disabled);
    let weights = source.load_weights().unwrap();
    let tokens: Vec<u32> = vec![
        504, 2365, 6354, 16438, 27003, 690, 260, 23790, 3290, 30, 378, 5248,
    ];
    let expected = reference::forward(&weights, &tokens).unwrap();
    let actual = ort.logits(&tokens).unwrap();
    let rel = common::logits::relative_max_diff(&actual, &expected);
    assert!(rel < 1e-4, "relative max difference {rel:e} ≥ 1e-4");
    assert_eq!(
        reference::argmax_rows(&actual),
        reference::argmax_rows(&expected)
    );
}

#[test]
fn kv_cached_greedy_tokens_equal_full_recompute_tokens() {
    let (mut ort, _) = open(OptLevel::All);
    let prompt: Vec<u32> = vec![504, 2365, 6354, 16438, 27003, 690, 260, 23790];
    let cached = ort.generate(&prompt, 64).unwrap();
    assert_eq!(cached.tokens.len(), 64);
    let recomputed = ort.generate_full_recompute(&prompt, 64).unwrap();
    assert_eq!(cached.tokens, recomputed);
}

#[test]
#[ignore = "exploration: prints how far each ORT variant is from the reference"]
fn explore_variants() {
    use infergate::backend::registry;
    let source = WeightSource::catalog(&catalog::default_model().unwrap());
    let weights = source.load_weights().unwrap();
    let tokens: Vec<u32> = vec![
        504, 2365, 6354, 16438, 27003, 690, 260, 23790, 3290, 30, 378, 5248,
    ];
    let expected = reference::forward(&weights, &tokens).unwrap();
    for id in ["ort-cpu", "ort-cpu-q4", "ort-cpu-int8", "ort-cpu-fp16"] {
        match registry::open(id, &catalog::default_model().unwrap())
            .and_then(|mut b| b.logits(&tokens))
        {
            Ok(actual) => {
                let max_abs_ref = expected.iter().fold(0f32, |a, &b| a.max(b.abs()));
                let max_diff = actual
                    .iter()
                    .zip(expected.iter())
                    .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
                let agree = reference::argmax_rows(&actual)
                    .iter()
                    .zip(reference::argmax_rows(&expected))
                    .filter(|(a, b)| **a == *b)
                    .count();
                eprintln!(
                    "{id}: rel {:e}, top1 {agree}/{}",
                    max_diff / max_abs_ref,
                    tokens.len()
                );
            }
            Err(e) => eprintln!("{id}: ERROR {e}"),
        }
    }
}

/// The deploy forms are built the way ONNX Runtime's fast CPU kernels take them (every
/// `MatMulNBits` with `uint8` or no zero points and `accuracy_level` 4; docs/performance.md), count
/// exactly the model's parameters, and read fewer bytes per token than fp32.
#[test]
fn deploy_exports_are_on_the_fast_path_and_read_fewer_bytes() {
    use infergate::backend::ort::{onnx_memory_traffic, onnx_weight_parameter_count};
    use infergate::onnx_proto::{tensor_proto::DataType, ModelProto};
    use prost::Message;
    let model = catalog::default_model().unwrap();
    let source = WeightSource::catalog(&model);
    let mut bytes = Vec::new();
    for format in [WeightFormat::Fp32, WeightFormat::Int8, WeightFormat::Q4] {
        let prepared = catalog::ensure_onnx(&source, format).expect("export");
        assert_eq!(
            onnx_weight_parameter_count(&prepared.model_path),
            Some(model.declared_parameters),
            "{format:?}"
        );
        let traffic = onnx_memory_traffic(&prepared.model_path, &prepared.config, 4).unwrap();
        bytes.push(traffic.weight_bytes_per_token);
        let graph = ModelProto::decode(std::fs::read(&prepared.model_path).unwrap().as_slice())
            .unwrap()
            .graph
            .unwrap();
        let nbits: Vec<_> = graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("MatMulNBits"))
            .collect();
        assert_eq!(nbits.is_empty(), format == WeightFormat::Fp32, "{format:?}");
        for n in nbits {
            let level = n
                .attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("accuracy_level"))
                .and_then(|a| a.i);
            assert_eq!(level, Some(4), "{format:?} {:?}", n.name);
            if let Some(zp) = n.input.get(3).filter(|z| !z.is_empty()) {
                let t = graph
                    .initializer
                    .iter()
                    .find(|t| t.name.as_ref() == Some(zp))
                    .expect("zero points are an initializer");
                assert_eq!(t.data_type, Some(DataType::Uint8 as i32), "{format:?} {zp}");
            }
        }
    }
    // fp32 > int8 > q4, each by a wide margin (the tied head alone is 28M parameters).
    assert!(
        bytes[0] > 3 * bytes[1] && bytes[1] > bytes[2] * 13 / 10,
        "weight bytes per token fp32/int8/q4: {bytes:?}"
    );
}
