//! Baseline files: round trip, every kind of bad file, atomic writes, the CI refusal, settings.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::store::{record, FINGERPRINT_FILE};
use super::*;
use crate::backend::stretch::{Phases, Planted};
use crate::backend::tweaks::Tweaks;
use crate::error::BaselineError;

fn fp(cores: usize) -> Fingerprint {
    Fingerprint {
        cpu_model: "AMD EPYC".into(),
        available_cores: cores,
        gpus: vec![],
        models: [("smollm2-135m-instruct".to_string(), "ab".repeat(32))].into(),
        build_profile: "dev".into(),
    }
}

fn provenance() -> Provenance {
    Provenance {
        recorded_utc: "2026-01-01T00:00:00Z".into(),
        git_commit: Some("c0ffee".into()),
        git_dirty: Some(false),
        run_id: "run-1".into(),
        profile: "ci".into(),
        runtime: Some(crate::pins::RuntimePin {
            runtime: crate::pins::Runtime::OnnxRuntime,
            reported: "1.31.1".into(),
            artifact: Some(crate::pins::default_onnxruntime()),
        }),
        gpu_drivers: vec![],
    }
}

fn rec(backend: &str, metric: &str, samples: Vec<f64>) -> BaselineRecord {
    let w = Workload {
        prompt_tokens: 11,
        gen_tokens: 32,
    };
    record(
        backend,
        Some("short"),
        metric,
        Direction::LowerIsBetter,
        "ms",
        samples,
        w,
        provenance(),
    )
    .unwrap()
}

const GATE: &str = "regression.baseline";
const WRITE: WritePolicy = WritePolicy {
    ci: false,
    force: false,
    tweaks: NO_TWEAKS,
};
const NO_TWEAKS: Tweaks = Tweaks {
    planted: None,
    threads: None,
};

fn stored(dir: &Path) -> (BaselineStore, Fingerprint) {
    let store = BaselineStore::new(dir.join("baselines"));
    let f = fp(2);
    store
        .write(
            &f,
            GATE,
            vec![rec("ort-cpu", "e2e_ms", vec![10.0, 12.0, 11.0])],
            &WRITE,
        )
        .unwrap();
    (store, f)
}

fn gate_file(store: &BaselineStore, f: &Fingerprint) -> std::path::PathBuf {
    store.gate_path(&f.id(), GATE)
}

/// Rewrite the gate file's JSON through `edit`.
fn tamper(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn load_err(store: &BaselineStore, f: &Fingerprint) -> (BaselineError, String) {
    let e = store.load(&f.id(), GATE).unwrap_err();
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn round_trip_and_change_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let loaded = store.load(&f.id(), GATE).unwrap().unwrap();
    assert_eq!(loaded.schema_version, SCHEMA_VERSION);
    assert_eq!(loaded.fingerprint, f.id());
    let r = loaded.get("ort-cpu", Some("short"), "e2e_ms").unwrap();
    assert_eq!((r.median, r.samples.len()), (11.0, 3));
    let fp_file = store.read_fingerprint(&f.id()).unwrap().unwrap();
    assert_eq!(fp_file.components, f);

    // Replacing one record and adding another keeps the rest and reports old → new.
    let report = store
        .write(
            &f,
            GATE,
            vec![
                rec("ort-cpu", "e2e_ms", vec![20.0, 22.0]),
                rec("llama-cpp", "e2e_ms", vec![5.0]),
            ],
            &WRITE,
        )
        .unwrap();
    let text = report.to_string();
    assert!(
        text.contains("ort-cpu::short e2e_ms: 11.000 ms (n=3) → 21.000 ms (n=2), +90.9 %"),
        "{text}"
    );
    assert!(
        text.contains("llama-cpp::short e2e_ms: (new) → 5.000 ms (n=1)"),
        "{text}"
    );
    let loaded = store.load(&f.id(), GATE).unwrap().unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(
        loaded
            .get("ort-cpu", Some("short"), "e2e_ms")
            .unwrap()
            .median,
        21.0
    );
}

#[test]
fn nothing_stored_is_none_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BaselineStore::new(tmp.path().join("baselines"));
    assert!(store.load(&fp(2).id(), GATE).unwrap().is_none());
    assert!(store.fingerprint_ids().unwrap().is_empty());
    // A fingerprint directory without this gate's file: also none.
    let (store, f) = stored(tmp.path());
    assert!(store.load(&f.id(), "other.gate").unwrap().is_none());
}

#[test]
fn a_file_that_is_not_json_is_corrupt_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let path = gate_file(&store, &f);
    fs::write(&path, b"{\"schema_version\": 2, \"records\": [").unwrap();
    let (e, msg) = load_err(&store, &f);
    assert!(matches!(e, BaselineError::Corrupt { .. }), "{e:?}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("baseline update"),
        "{msg}"
    );
}

#[test]
fn inconsistent_records_are_corrupt() {
    type Corrupt = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Corrupt)> = vec![
        (
            "states median",
            Box::new(|v| v["records"][0]["median"] = 99.0.into()),
        ),
        (
            "positive number",
            Box::new(|v| v["records"][0]["samples"][1] = (-1.0).into()),
        ),
        (
            "no samples",
            Box::new(|v| v["records"][0]["samples"] = serde_json::json!([])),
        ),
        (
            "repeats record 0",
            Box::new(|v| {
                let r = v["records"][0].clone();
                v["records"].as_array_mut().unwrap().push(r);
            }),
        ),
        (
            "unknown field",
            Box::new(|v| v["records"][0]["mean"] = 1.0.into()),
        ),
        (
            "holds gate",
            Box::new(|v| v["gate"] = "phase.decode_fraction".into()),
        ),
        (
            "schema_version",
            Box::new(|v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("schema_version")
                    .map(|_| ())
                    .unwrap_or(())
            }),
        ),
    ];
    for (expect, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (store, f) = stored(tmp.path());
        let path = gate_file(&store, &f);
        tamper(&path, edit);
        let (e, msg) = load_err(&store, &f);
        assert!(
            matches!(e, BaselineError::Corrupt { .. }),
            "{expect}: {e:?}"
        );
        assert!(
            msg.contains(expect) && msg.contains(&path.display().to_string()),
            "{expect}: {msg}"
        );
    }
}

#[test]
fn a_file_of_another_fingerprint_is_foreign() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let path = gate_file(&store, &f);
    let other = fp(16).id();
    tamper(&path, |v| v["fingerprint"] = other.clone().into());
    let (e, msg) = load_err(&store, &f);
    assert!(
        matches!(&e, BaselineError::Foreign { found, .. } if *found == other),
        "{e:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(&other),
        "{msg}"
    );
}

#[test]
fn a_directory_copied_under_another_fingerprint_is_foreign() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    // Someone copies the 2-core machine's baselines into the 16-core machine's directory.
    let other = fp(16);
    let to = store.dir(&other.id());
    fs::create_dir_all(&to).unwrap();
    for name in [FINGERPRINT_FILE, &format!("{GATE}.json")] {
        fs::copy(store.dir(&f.id()).join(name), to.join(name)).unwrap();
    }
    let e = store.load(&other.id(), GATE).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, BaselineError::Foreign { .. }), "{e:?}");
    assert!(
        msg.contains(&to.join(FINGERPRINT_FILE).display().to_string()),
        "{msg}"
    );
}

#[test]
fn an_edited_fingerprint_or_a_missing_one_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let fp_path = store.dir(&f.id()).join(FINGERPRINT_FILE);
    tamper(&fp_path, |v| v["components"]["available_cores"] = 64.into());
    let (e, msg) = load_err(&store, &f);
    assert!(
        matches!(e, BaselineError::Corrupt { .. }) && msg.contains("edited by hand"),
        "{msg}"
    );
    fs::remove_file(&fp_path).unwrap();
    let (e, msg) = load_err(&store, &f);
    assert!(
        matches!(e, BaselineError::Corrupt { .. }) && msg.contains(FINGERPRINT_FILE),
        "{msg}"
    );
}

#[test]
fn a_newer_schema_is_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let path = gate_file(&store, &f);
    // A newer infergate may also have added fields; the version check comes first.
    tamper(&path, |v| {
        v["schema_version"] = (SCHEMA_VERSION + 1).into();
        v["records"][0]["new_field"] = true.into();
    });
    let (e, msg) = load_err(&store, &f);
    assert!(
        matches!(e, BaselineError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{e:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("newer"),
        "{msg}"
    );
}

#[test]
fn a_bad_existing_file_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let path = gate_file(&store, &f);
    fs::write(&path, b"garbage").unwrap();
    let e = store
        .write(&f, GATE, vec![rec("ort-cpu", "e2e_ms", vec![1.0])], &WRITE)
        .unwrap_err();
    assert!(matches!(e, BaselineError::Corrupt { .. }), "{e:?}");
    assert_eq!(fs::read(&path).unwrap(), b"garbage");
}

#[test]
fn writes_replace_the_file_by_rename() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, f) = stored(tmp.path());
    let path = gate_file(&store, &f);
    let before = fs::read(&path).unwrap();
    // A hard link keeps the old inode: an in-place rewrite would change what it shows, a rename does not.
    let link = tmp.path().join("old-link.json");
    fs::hard_link(&path, &link).unwrap();
    store
        .write(
            &f,
            GATE,
            vec![rec("ort-cpu", "e2e_ms", vec![30.0, 31.0, 32.0])],
            &WRITE,
        )
        .unwrap();
    assert_eq!(
        fs::read(&link).unwrap(),
        before,
        "the old file was modified in place"
    );
    assert_ne!(fs::read(&path).unwrap(), before);
    let leftovers: Vec<String> = fs::read_dir(store.dir(&f.id()))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn ci_refuses_to_write_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BaselineStore::new(tmp.path().join("baselines"));
    let f = fp(2);
    let ci = WritePolicy {
        ci: true,
        force: false,
        tweaks: NO_TWEAKS,
    };
    let e = store
        .write(&f, GATE, vec![rec("ort-cpu", "e2e_ms", vec![1.0])], &ci)
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, BaselineError::WriteRefused { .. }), "{e:?}");
    assert!(
        msg.contains("CI")
            && msg.contains("INFERGATE_FORCE_BASELINE_WRITE=1")
            && msg.contains("--force")
            && msg.contains("nothing was written"),
        "{msg}"
    );
    assert!(!store.root().exists(), "something was written");
    let forced = WritePolicy { force: true, ..ci };
    store
        .write(&f, GATE, vec![rec("ort-cpu", "e2e_ms", vec![1.0])], &forced)
        .unwrap();
    assert!(store.load(&f.id(), GATE).unwrap().is_some());
}

#[test]
fn a_slowed_run_never_becomes_a_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BaselineStore::new(tmp.path().join("baselines"));
    let slowed = WritePolicy {
        ci: false,
        force: true,
        tweaks: Tweaks {
            planted: Some(Planted {
                fraction: 0.25,
                phases: Phases::All,
            }),
            threads: None,
        },
    };
    let e = store
        .write(
            &fp(2),
            GATE,
            vec![rec("ort-cpu", "e2e_ms", vec![1.0])],
            &slowed,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("planted slowdown 0.25 (INFERGATE_TEST_SLOWDOWN)"),
        "{e}"
    );
    assert!(!store.root().exists());
}

#[test]
fn unusable_samples_cannot_be_recorded() {
    let w = Workload {
        prompt_tokens: 1,
        gen_tokens: 2,
    };
    assert!(record(
        "b",
        None,
        "m",
        Direction::LowerIsBetter,
        "ms",
        vec![],
        w,
        provenance()
    )
    .is_err());
    let tmp = tempfile::tempdir().unwrap();
    let store = BaselineStore::new(tmp.path());
    let mut bad = rec("ort-cpu", "e2e_ms", vec![1.0, 2.0, 3.0]);
    bad.samples[0] = f64::NAN;
    assert!(matches!(
        store.write(&fp(2), GATE, vec![bad], &WRITE),
        Err(BaselineError::Corrupt { .. })
    ));
}

#[test]
fn settings_from_variables() {
    let vars = |pairs: &[(&str, &str)]| {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(move |k| m.get(k).cloned())
    };
    let none = vars(&[]);
    assert!(!none.update && !none.require && !none.ci && !none.force_write);
    assert_eq!(none.test_slowdown, Ok(None));
    assert_eq!(none.write_policy().refusal(), None);
    for (v, ci) in [
        ("true", true),
        ("1", true),
        ("yes", true),
        ("false", false),
        ("0", false),
        ("", false),
    ] {
        assert_eq!(vars(&[("CI", v)]).ci, ci, "CI={v}");
    }
    let s = vars(&[
        ("CI", "true"),
        ("INFERGATE_UPDATE_BASELINES", "1"),
        ("INFERGATE_REQUIRE_BASELINE", "1"),
    ]);
    assert!(s.update && s.require && s.write_policy().refusal().is_some());
    let s = vars(&[("CI", "true"), ("INFERGATE_FORCE_BASELINE_WRITE", "1")]);
    assert_eq!(s.write_policy().refusal(), None);
    let s = vars(&[("INFERGATE_TEST_SLOWDOWN", "0.1")]);
    assert_eq!(s.test_slowdown, Ok(Some(0.1)));
    assert!(s.write_policy().refusal().is_some());
    assert!(vars(&[("INFERGATE_TEST_SLOWDOWN", "ten")])
        .test_slowdown
        .is_err());
    let s = vars(&[("INFERGATE_BASELINES_DIR", "/x/b")]);
    assert_eq!(
        s.store_for(Path::new("/repo/gates/g.toml")).root(),
        Path::new("/x/b")
    );
    assert_eq!(
        none.store_for(Path::new("/repo/gates/g.toml")).root(),
        Path::new("/repo/baselines")
    );
}
