//! The accuracy gate's planted fault: the same weights with layer 0's seven weight matrices scaled
//! by 1.05 must FAIL `accuracy.perplexity_delta`, with a message that gives the delta and the
//! threshold. Measured on this span: +1.15 % for layer 0; a middle layer (10) moves it only ~0.1 %
//! and the sign flips with the span, too close to the 0.1 % threshold to be a reliable fault.

use std::path::Path;

use infergate::backend::ort::OptLevel;
use infergate::backend::Backend;
use infergate::backend::{registry, Availability};
use infergate::error::BackendError;
use infergate::gate::context::OnnxWeights;
use infergate::gate::{
    BackendDoor, Check, Finding, GateSpec, TrialContext, TrialId, TrialResult, Unit, Verdict,
};
use infergate::measure::RunLog;
use infergate::model::catalog::{self, CatalogModel, WeightSource};
use infergate::model::onnx_graph::WeightFormat;

/// The registry, except that `ort-cpu-fault` opens the faulty weights.
struct Faulty {
    model: CatalogModel,
    faulty: WeightSource,
}

impl BackendDoor for Faulty {
    fn availability(&self, id: &str) -> Availability {
        registry::probe(id)
    }
    fn open(&self, id: &str) -> Result<Box<dyn Backend>, BackendError> {
        match id {
            "ort-cpu-fault" => {
                registry::open_ort(id, &self.faulty, WeightFormat::Fp32, OptLevel::All)
            }
            _ => registry::open(id, &self.model),
        }
    }
    fn open_broken(&self, id: &str) -> Result<Box<dyn Backend>, BackendError> {
        registry::open_broken(id, &self.model)
    }
    fn open_for_evidence(
        &self,
        id: &str,
        _extra: Option<&str>,
    ) -> Result<Box<dyn Backend>, BackendError> {
        registry::open_for_evidence(id, &self.model, None)
    }
    fn open_onnx(
        &self,
        id: &str,
        weights: &OnnxWeights<'_>,
    ) -> Result<Box<dyn Backend>, BackendError> {
        registry::open_ort(id, weights.source, weights.format, weights.opt)
    }
}

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
    let door = Faulty {
        model: model.clone(),
        faulty,
    };
    let dir = tempfile::tempdir().unwrap();
    let log = RunLog::new(dir.path().join("runs.jsonl"));
    let trial = TrialId::new(&spec.id, Unit::backend("ort-cpu-fault"), None);
    let ctx = TrialContext {
        run_id: "planted-fault",
        trial: &trial,
        spec: &spec,
        scenario: None,
        profile,
        model: model.clone(),
        encode: encode.as_ref(),
        backends: &door,
        run_log: &log,
    };
    let result = TrialResult::judge(&spec, trial.clone(), spec.check.kind().evaluate(&ctx));
    assert_eq!(
        result.verdict,
        Verdict::Fail,
        "the planted fault was not caught: {}",
        result.message
    );
    eprintln!("{}", result.message);
    let part = &result.parts()[0];
    let Finding::NotHeld {
        measured,
        threshold,
    } = &part.finding
    else {
        panic!("{part:?}")
    };
    assert!(*measured >= 0.001 && threshold.value == 0.001, "{part:?}");
    assert!(
        result.message.contains("perplexity_delta") && result.message.contains("needs < 0.001"),
        "{}",
        result.message
    );
    let delta = result.metrics.get("perplexity_delta").unwrap();
    assert!(delta.abs() >= 0.001, "delta {delta}");
}
