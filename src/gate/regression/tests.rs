use std::collections::BTreeMap;
use std::path::Path;

use super::params::RegressionParams;
use super::series::samples;
use super::Metric;
use crate::baseline::session::{Mode, Session};
use crate::baseline::store::{Direction, Workload};
use crate::baseline::Provenance;
use crate::baseline::{fingerprint::gpu_drivers, BaselineStore, Fingerprint};
use crate::gate::{Check, GateSpec};
use crate::measure::{run_series, RunTimings, SeriesPlan};
use crate::pins::RuntimePin;
use crate::workload::Scenario;

/// A store holding one machine's ort-cpu::short records (every metric of `p` and the probe),
/// measured on `runtime`.
fn store_with(
    dir: &Path,
    fp: &Fingerprint,
    p: &RegressionParams,
    runtime: Option<RuntimePin>,
) -> BaselineStore {
    let sc = crate::workload::scenario("short").unwrap();
    let provenance = Provenance {
        recorded_utc: "2026-01-01T00:00:00Z".into(),
        git_commit: None,
        git_dirty: None,
        run_id: "rec-1".into(),
        profile: "full".into(),
        runtime,
        gpu_drivers: gpu_drivers(),
    };
    let session = session(&BaselineStore::new(dir), fp, "ort-cpu", &sc, p);
    session.record_fixture(provenance, vec![1.0, 1.1, 1.2]);
    session.store
}

/// The baseline session of the `regression.baseline` trial `backend` × `sc` on `fp`.
fn session<'a>(
    store: &BaselineStore,
    fp: &Fingerprint,
    backend: &'a str,
    sc: &Scenario,
    p: &'a RegressionParams,
) -> Session<'a> {
    Session {
        store: store.clone(),
        fingerprint: fp.clone(),
        gate: "regression.baseline",
        backend,
        scenario: sc.name,
        workload: Workload {
            prompt_tokens: sc.prompt_tokens,
            gen_tokens: p.gen_tokens,
        },
        metrics: &p.metrics,
    }
}

/// The mode `store` gives the `regression.baseline` trial `backend` × `sc` on `fp` with the
/// runtime `cur` (what the gate asks its baseline session).
fn choose(
    store: &BaselineStore,
    fp: &Fingerprint,
    backend: &str,
    sc: &Scenario,
    p: &RegressionParams,
    cur: Option<&RuntimePin>,
) -> Result<Mode, String> {
    session(store, fp, backend, sc, p).choose(cur).unwrap()
}

/// The repository's regression gate file and its `[check]`.
fn repo_params() -> RegressionParams {
    let (path, text) = repo_gate();
    let spec = GateSpec::parse(&path, &text).unwrap();
    let Check::Regression(p) = spec.check else {
        panic!("not a regression gate: {:?}", spec.check)
    };
    p
}

fn ort_pin(version: &str, fetchable: bool) -> RuntimePin {
    RuntimePin {
        runtime: crate::pins::Runtime::OnnxRuntime,
        reported: version.into(),
        artifact: fetchable
            .then(|| crate::pins::parse(&format!("onnxruntime=={version}")).unwrap()),
    }
}

fn machine(cpu: &str) -> Fingerprint {
    Fingerprint {
        cpu_model: cpu.into(),
        available_cores: 2,
        gpus: vec![],
        models: [("m".to_string(), "ab".repeat(32))].into(),
        build_profile: "dev".into(),
    }
}

#[test]
fn the_mode_follows_the_runtime_and_the_stored_numbers() {
    let p = &repo_params();
    let sc = crate::workload::scenario("short").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let here = machine("AMD EPYC");
    let old = ort_pin("1.31.1", true);
    let new = ort_pin("1.32.0", true);
    let store = store_with(tmp.path(), &here, p, Some(old.clone()));
    let mode =
        |fp: &Fingerprint, cur: &RuntimePin| choose(&store, fp, "ort-cpu", &sc, p, Some(cur));
    // Same runtime: stored numbers, nothing changed.
    match mode(&here, &old) {
        Ok(Mode::Stored { changes, .. }) => assert!(changes.is_empty(), "{changes:?}"),
        _ => panic!("expected stored mode"),
    }
    // A bump with a fetchable baseline pin: paired, naming the baseline's run.
    match mode(&here, &new) {
        Ok(Mode::Paired { baseline, why, .. }) => {
            assert_eq!(baseline, old);
            assert!(why.contains("rec-1"), "{why}");
        }
        _ => panic!("expected paired mode"),
    }
    // Another machine (no stored numbers for its CPU): the bump is still compared, paired
    // from the recipe; the same runtime there has nothing to compare.
    let other = machine("Intel Xeon Processor");
    match mode(&other, &new) {
        Ok(Mode::Paired { why, .. }) => {
            assert!(why.contains("no stored numbers"), "{why}");
            assert!(why.contains(&here.id()), "{why}");
        }
        _ => panic!("expected paired mode from another machine's recipe"),
    }
    match mode(&other, &old) {
        Err(reason) => assert!(reason.contains("nothing to compare"), "{reason}"),
        Ok(_) => panic!("expected nothing to compare"),
    }
    // A different model hash is another recipe: nothing to compare.
    let mut other_model = other.clone();
    other_model.models.insert("m".into(), "cd".repeat(32));
    assert!(mode(&other_model, &new).is_err());
}

#[test]
fn a_bump_that_cannot_be_fetched_is_compared_with_the_stored_numbers_and_named() {
    let p = &repo_params();
    let sc = crate::workload::scenario("short").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let here = machine("AMD EPYC");
    // Recorded on a library given by path: no artifact to fetch again.
    let store = store_with(tmp.path(), &here, p, Some(ort_pin("1.31.1", false)));
    let cur = ort_pin("1.32.0", true);
    match choose(&store, &here, "ort-cpu", &sc, p, Some(&cur)) {
        Ok(Mode::Stored { changes, .. }) => {
            let names: Vec<String> = changes.iter().map(ToString::to_string).collect();
            assert_eq!(names, vec!["onnxruntime 1.31.1 → 1.32.0".to_string()]);
        }
        _ => panic!("expected stored mode"),
    }
}

#[test]
fn no_baseline_anywhere_is_a_skip_reason_with_the_record_command() {
    let p = &repo_params();
    let sc = crate::workload::scenario("short").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = BaselineStore::new(tmp.path().join("baselines"));
    let here = machine("Intel(R) Xeon(R) Processor");
    for cur in [Some(ort_pin("1.31.1", true)), None] {
        match choose(&store, &here, "ort-cpu", &sc, p, cur.as_ref()) {
            Err(reason) => {
                assert!(reason.contains("no baseline for this machine"), "{reason}");
                assert!(reason.contains("record one with"), "{reason}");
            }
            Ok(_) => panic!("a machine without any baseline must have nothing to compare"),
        }
    }
}

/// The committed baselines, read as CI reads them with this build's own runtimes: the machine
/// they were recorded on compares with its stored numbers, and a machine without a baseline
/// (this 2-core Intel Xeon) has nothing to compare. Neither chooses paired mode, so no second
/// runtime is fetched while the runtime equals the baselines'.
#[test]
fn the_committed_baselines_need_no_second_runtime_for_this_build() {
    let p = &repo_params();
    let store = BaselineStore::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines"));
    let ids = store.fingerprint_ids().unwrap();
    let amd = ids
        .iter()
        .find(|id| id.starts_with("amd-epyc-2c-"))
        .expect("the CI machine's baseline is committed");
    let recorded = store.read_fingerprint(amd).unwrap().unwrap().components;
    assert_eq!(
        recorded.id(),
        *amd,
        "the committed fingerprint matches its directory"
    );
    // The default model's declared hash is still the one the baselines were recorded on.
    let model = crate::model::declared::default_model().unwrap();
    assert_eq!(
        recorded.models.get(&model.name),
        Some(&model.sha256),
        "the default model changed: the committed baselines no longer match any machine"
    );
    let file = store.load(amd, "regression.baseline").unwrap().unwrap();
    let mut intel = recorded.clone();
    intel.cpu_model = "Intel(R) Xeon(R) Processor".into();
    assert!(
        !ids.contains(&intel.id()),
        "{} has a baseline now",
        intel.id()
    );
    let mut checked = 0;
    for (backend, current) in [
        ("ort-cpu", crate::pins::default_onnxruntime()),
        ("llama-cpp", crate::pins::default_llama_cpp()),
    ] {
        let runtime = crate::backend::registry::runtime_of(backend).unwrap();
        let reported = file
            .records
            .iter()
            .find(|r| r.backend == backend)
            .and_then(|r| r.provenance.runtime.clone())
            .expect("the committed records name their runtime")
            .reported;
        let cur = RuntimePin {
            runtime,
            reported,
            artifact: Some(current),
        };
        for sc in ["short", "medium", "long"] {
            let Some(sc) = crate::workload::scenario(sc) else {
                continue;
            };
            if !file
                .records
                .iter()
                .any(|r| r.backend == backend && r.scenario.as_deref() == Some(sc.name))
            {
                continue;
            }
            let mode = |fp: &Fingerprint| choose(&store, fp, backend, &sc, p, Some(&cur));
            match mode(&recorded) {
                Ok(Mode::Stored { changes, .. }) => {
                    assert!(
                        changes
                            .iter()
                            .all(|c| !c.to_string().contains(runtime.name())),
                        "{backend} {}: {changes:?}",
                        sc.name
                    )
                }
                Ok(Mode::Paired { why, .. }) => {
                    panic!(
                        "{backend} {}: paired (would fetch a runtime): {why}",
                        sc.name
                    )
                }
                Err(reason) => panic!("{backend} {}: {reason}", sc.name),
            }
            match mode(&intel) {
                Err(reason) => {
                    assert!(reason.contains("no baseline for this machine"), "{reason}")
                }
                Ok(_) => panic!("{backend} {}: {} has no baseline", sc.name, intel.id()),
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no committed record was checked");
}

fn repo_gate() -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gates/regression.baseline.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn the_repository_gate_file_parses() {
    let p = repo_params();
    assert!(p.metrics.contains(&Metric::DecodeTokensPerS));
    assert_eq!(
        p.tolerance_of(Metric::E2eMs, "ort-cpu"),
        p.default_tolerance
    );
}

#[test]
fn overrides_and_bad_values_in_the_gate_file() {
    let (path, text) = repo_gate();
    let with = |extra: &str| GateSpec::parse(&path, &format!("{text}\n{extra}\n"));
    let spec = with("[check.tolerance]\nprefill_ms = 0.3").unwrap();
    let Check::Regression(p) = &spec.check else {
        panic!()
    };
    assert_eq!(p.tolerance_of(Metric::PrefillMs, "ort-cpu"), 0.3);
    assert_eq!(p.tolerance_of(Metric::DecodeMs, "ort-cpu"), 0.10);
    // The per-backend band of the repository file applies, and a per-metric override wins.
    let llama = p.backend_tolerance["llama-cpp"];
    assert!(llama > p.default_tolerance);
    assert_eq!(p.tolerance_of(Metric::DecodeMs, "llama-cpp"), llama);
    assert_eq!(p.tolerance_of(Metric::PrefillMs, "llama-cpp"), 0.3);
    for (bad, expect) in [
        ("[check.tolerance]\nprefill_ms = 0", "tolerance.prefill_ms"),
        ("[check.tolerance]\nprefil_ms = 0.2", "prefil_ms"),
    ] {
        let e = with(bad).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(expect),
            "{e}"
        );
    }
    let e = GateSpec::parse(
        &path,
        &text.replace("\"prefill_ms\"", "\"prefill_seconds\""),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prefill_seconds"), "{e}");
    let e = GateSpec::parse(&path, &text.replace("gen_tokens = 32", "gen_tokens = 1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gen_tokens"), "{e}");
}

#[test]
fn metric_directions_and_values() {
    let t = RunTimings {
        prompt_tokens: 11,
        gen_tokens: 5,
        prefill_ms: 10.0,
        decode_ms: 40.0,
        e2e_ms: 50.0,
        decode_steps: 4,
        timing_source: crate::backend::TimingSource::Harness,
        cold_start_ms: None,
        cached_prompt_tokens: None,
        memory_traffic: None,
    };
    assert_eq!(Metric::DecodeTokensPerS.value(&t, None), Some(100.0));
    assert_eq!(Metric::E2eTokensPerS.value(&t, None), Some(100.0));
    assert_eq!(Metric::PrefillMs.value(&t, None), Some(10.0));
    assert_eq!(Metric::E2eCpuMs.value(&t, None), None);
    assert_eq!(Metric::E2eCpuMs.value(&t, Some(7.0)), Some(7.0));
    assert_eq!(
        Metric::DecodeTokensPerS.direction(),
        Direction::HigherIsBetter
    );
    assert_eq!(Metric::E2eMs.direction(), Direction::LowerIsBetter);
}

#[test]
fn a_series_with_a_degraded_run_is_not_compared() {
    let mut err = Err(crate::error::BackendError::load(
        "ort-cpu",
        "model file missing",
    ));
    let plan = SeriesPlan {
        run_id: "r".into(),
        trial: crate::gate::TrialId::new("g", crate::gate::Unit::backend("ort-cpu"), None),
        sub_series: None,
        scenario: "short".into(),
        prompt: vec![1],
        gen_tokens: 4,
        warmup: 1,
        repetitions: 3,
    };
    let recs = run_series(&mut err, &plan);
    let e = samples(&recs, &BTreeMap::new(), &[Metric::E2eMs]).unwrap_err();
    assert!(
        e.contains("degraded") && e.contains("model file missing"),
        "{e}"
    );
}
