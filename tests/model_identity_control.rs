//! The planted negative control of `integrity.model_identity` (TR118 measured a random fixture while
//! reporting a trained model): a model of seeded random weights, declared in a models file as a
//! trained model with its true parameter count, must FAIL the gate on ONNX Runtime and on llama.cpp,
//! and the failure must carry its measured perplexity.
//!
//! Own test binary: it points `INFERGATE_MODELS_DIR` at a directory of its own before the process
//! reads any declaration.

mod common;

use std::path::Path;

use infergate::assets::sha256_file;
use infergate::gate::finding::Finding;
use infergate::gate::model_identity::{CONFIG_PARAMETERS, TRAINED_PERPLEXITY};
use infergate::gate::verdict::Outcome;
use infergate::gate::Verdict;
use infergate::model::catalog::{ModelRegistry, DEFAULT_MODEL, MODELS_DIR_ENV};
use infergate::model::config::Architecture;
use infergate::model::ggml::GgmlType;
use infergate::model::gguf::GgufFile;
use infergate::model::gguf_writer;
use infergate::model::tensors::RandomSource;
use infergate::runner::{verdict_line, Runner, RunnerConfig};

#[test]
fn a_random_model_declared_as_trained_fails_model_identity_with_its_perplexity() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = ModelRegistry::load(&repo.join("models")).unwrap_or_else(|e| panic!("{e}"));
    let smollm2 = shipped.find(DEFAULT_MODEL).unwrap();
    let donor = GgufFile::open(&smollm2.gguf_path().unwrap()).unwrap();

    // The fixture: SmolLM2's tokenizer, random weights (std 0.02, as a freshly initialized model).
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let config = common::config(Architecture::Llama, 2, 256, 4, 2, 512, true);
    let gguf = work.path().join("random-fixture.gguf");
    let source = RandomSource::new(&config, 118).unwrap();
    gguf_writer::write_model(&gguf, &source, GgmlType::F32, &donor, "random fixture").unwrap();
    let sha = sha256_file(&gguf).unwrap();
    std::fs::write(
        models.join("random-fixture.toml"),
        format!(
            "name = \"random-fixture\"\ndescription = \"seeded random weights declared as trained: the negative control\"\nparameters = {}\ntrained = true\nsha256 = \"{sha}\"\n[source]\nkind = \"local\"\npath = \"{}\"\n",
            config.parameter_count(),
            gguf.display()
        ),
    )
    .unwrap();
    std::fs::copy(
        &smollm2.declared_in,
        models.join(format!("{DEFAULT_MODEL}.toml")),
    )
    .unwrap();
    // Before any declaration is read in this process (single test in this binary).
    std::env::set_var(MODELS_DIR_ENV, &models);

    let gates = work.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let shipped_gate =
        std::fs::read_to_string(repo.join("gates/integrity.model_identity.toml")).unwrap();
    let gate = shipped_gate
        .lines()
        .map(|l| {
            if l.starts_with("model = ") {
                "model = \"random-fixture\"".to_string()
            } else if l.starts_with("backends = ") {
                "backends = [\"ort-cpu\", \"llama-cpp\"]".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(gates.join("integrity.model_identity.toml"), gate).unwrap();

    let mut rc = RunnerConfig::from_env(repo, "ci");
    rc.gates_dir = gates;
    rc.out_root = work.path().join("runs");
    rc.run_id = "random-fixture".into();
    rc.model = None;
    let runner = Runner::new(rc).unwrap_or_else(|e| panic!("{e}"));
    let plans = runner.plan();
    assert_eq!(plans.len(), 2);
    for plan in plans {
        assert_eq!(
            runner.skip_reason(&plan),
            None,
            "{} must run here (CI builds llama.cpp first)",
            plan.id
        );
        let result = runner.run_trial(&plan);
        eprintln!("{}", verdict_line(&result));
        assert_eq!(
            result.verdict,
            Verdict::Fail,
            "{}: the random fixture was not caught: {}",
            plan.id,
            verdict_line(&result)
        );
        let Outcome::Judged { parts } = &result.outcome else {
            panic!("{}: not judged: {}", plan.id, verdict_line(&result))
        };
        let part = |name: &str| {
            parts
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("{}: no part {name}: {parts:?}", plan.id))
        };
        // Only the perplexity fails: the declared count is the fixture's true one.
        let Finding::NotHeld { measured, .. } = part(TRAINED_PERPLEXITY).finding else {
            panic!(
                "{}: perplexity part {:?}",
                plan.id,
                part(TRAINED_PERPLEXITY)
            )
        };
        assert!(
            measured > 0.5 * 49152.0,
            "{}: perplexity {measured}",
            plan.id
        );
        assert_eq!(result.metrics.get("perplexity"), Some(measured));
        assert!(
            result.message.contains(TRAINED_PERPLEXITY),
            "{}: {}",
            plan.id,
            result.message
        );
        assert!(
            matches!(part(CONFIG_PARAMETERS).finding, Finding::Held { .. }),
            "{parts:?}"
        );
    }
}
