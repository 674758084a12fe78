//! The accuracy gate's planted fault: the same weights with layer 0's seven weight matrices scaled
//! by 1.05 must FAIL `accuracy.perplexity_delta`, with a message that gives the delta and the
//! threshold. Measured on this span: +1.15 % for layer 0; a middle layer (10) moves it only ~0.1 %
//! and the sign flips with the span, too close to the 0.1 % threshold to be a reliable fault.

use std::path::Path;

use infergate::backend::ort::OptLevel;
use infergate::backend::registry;
use infergate::gate::{self, Check, GateSpec, TrialContext, Verdict};
use infergate::measure::RunLog;
use infergate::model::catalog::{self, WeightSource};
use infergate::model::onnx_export::WeightFormat;

#[test]
fn a_planted_weight_fault_fails_the_perplexity_delta_gate_with_delta_and_threshold() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gates/accuracy.perplexity_delta.toml");
    let mut spec = GateSpec::load(&path).expect("the shipped gate file parses");
    // A smaller span than the gate's (4 chunks of 256) keeps the test quick; the fault is large.
    let Check::PerplexityDelta(params) = &mut spec.check else {
        panic!("unexpected check kind")
    };
    params.context = 256;
    params.max_tokens = 1024;
    params.distribution_positions = 64;
    params.max_abs_delta.insert("ort-cpu-fault".into(), 0.001);

    let model = catalog::default_model().unwrap();
    // The CI profile's token budget would override the span above; this test pins its own.
    let mut profile = spec.profile("ci").unwrap();
    profile.perplexity_tokens = None;
    let faulty = WeightSource::Gguf {
        model: model.name.clone(),
        gguf_sha256: model.sha256.clone(),
        fault_scale_layer: Some((0, 1.05)),
    };
    let encode = infergate::runner::load_encoder().expect("tokenizer");
    let open = || registry::open_ort("ort-cpu-fault", &faulty, WeightFormat::Fp32, OptLevel::All);
    let open_named = |id: &str| registry::open(id, &model);
    let open_evidence = |id: &str, extra| registry::open_for_evidence(id, &model, extra);
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::new(dir.path().join("runs.jsonl"));
    let ctx = TrialContext {
        run_id: "planted-fault",
        trial: "accuracy.perplexity_delta::ort-cpu-fault",
        spec: &spec,
        backend_id: "ort-cpu-fault",
        scenario: None,
        profile,
        model: model.clone(),
        encode: encode.as_ref(),
        open: &open,
        open_broken: &open,
        open_evidence: &open_evidence,
        unit: "ort-cpu-fault",
        open_named: &open_named,
        run_log: &log,
    };
    let result = gate::evaluate(&ctx);
    let Verdict::Fail { reason } = &result.verdict else {
        panic!("the planted fault was not caught: {:?}", result.verdict)
    };
    eprintln!("{reason}");
    assert!(
        reason.contains("perplexity delta") && reason.contains("exceeds ±0.10%"),
        "{reason}"
    );
    let delta = result.metrics["perplexity_delta"];
    assert!(delta.abs() >= 0.001, "delta {delta}");
}
