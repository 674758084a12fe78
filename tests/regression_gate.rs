//! The regression gate end to end through the `infergate` binary, on the real ONNX Runtime backend
//! with a tiny workload: the CI refusal, recording (`baseline update --force`), `baseline show`,
//! comparing, a corrupt baseline, no baseline (skip, or fail under INFERGATE_REQUIRE_BASELINE=1),
//! and the planted-slowdown knob being recorded. No assertion depends on how fast anything ran.

use std::path::Path;
use std::process::Output;

mod common;
use common::bin::{text, Infergate};

const GATE: &str = r#"
id = "regression.baseline"
claim = "test"
source = "test"
model = "smollm2-135m-instruct"
backends = ["ort-cpu"]
scenarios = ["micro"]
[profiles.ci]
warmup = 1
repetitions = 3
[profiles.full]
warmup = 1
repetitions = 3
[check]
kind = "regression"
gen_tokens = 4
metrics = ["e2e_ms", "decode_tokens_per_s", "e2e_cpu_ms"]
resamples = 400
"#;

/// A checkout-like directory: `gates/regression.baseline.toml` and (once recorded) `baselines/`.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("gates")).unwrap();
    std::fs::write(dir.path().join("gates/regression.baseline.toml"), GATE).unwrap();
    dir
}

/// Run the binary with a clean baseline-related environment plus `envs`.
fn infergate(args: &[&str], repo: &Path, out_root: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Infergate::new(args)
        .arg("--repo")
        .arg(repo)
        .env("CARGO_TARGET_DIR", out_root);
    for k in [
        "CI",
        "INFERGATE_UPDATE_BASELINES",
        "INFERGATE_REQUIRE_BASELINE",
        "INFERGATE_FORCE_BASELINE_WRITE",
        "INFERGATE_TEST_SLOWDOWN",
        "INFERGATE_BASELINES_DIR",
        "INFERGATE_GATES_DIR",
        "INFERGATE_RUN_ID",
    ] {
        cmd = cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd = cmd.env(k, v);
    }
    cmd.output()
}

fn gate_files(repo: &Path) -> Vec<std::path::PathBuf> {
    let Ok(dirs) = std::fs::read_dir(repo.join("baselines")) else {
        return vec![];
    };
    dirs.flatten()
        .map(|d| d.path().join("regression.baseline.json"))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn record_show_compare_and_every_refusal() {
    let repo = repo();
    let out = tempfile::tempdir().unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| infergate(args, repo.path(), out.path(), envs);

    // No baseline: the trial is skipped with the reason and the command that records one (and
    // as nothing else ran, the run exits 2: nothing was checked) ...
    let o = run(&["run", "--profile", "ci"], &[]);
    let t = text(&o);
    assert!(
        o.status.code() == Some(2)
            && t.contains("SKIP  regression.baseline::ort-cpu::micro")
            && t.contains("infergate baseline update"),
        "{t}"
    );
    // ... or a failure for release sign-off.
    let o = run(
        &["run", "--profile", "ci"],
        &[("INFERGATE_REQUIRE_BASELINE", "1")],
    );
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("FAIL") && t.contains("INFERGATE_REQUIRE_BASELINE=1"),
        "{t}"
    );

    // In CI nothing is written unless forced, and the message says so (both update paths).
    let o = run(
        &["baseline", "update", "--profile", "ci"],
        &[("CI", "true")],
    );
    let t = text(&o);
    assert!(
        !o.status.success()
            && t.contains("CI is set")
            && t.contains("--force")
            && t.contains("nothing was written"),
        "{t}"
    );
    let o = run(
        &["run", "--profile", "ci"],
        &[("CI", "true"), ("INFERGATE_UPDATE_BASELINES", "1")],
    );
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("update requested but") && t.contains("CI is set"),
        "{t}"
    );
    assert!(
        gate_files(repo.path()).is_empty(),
        "a baseline was written in CI"
    );
    // A planted slowdown can never become a baseline.
    let o = run(
        &["baseline", "update", "--profile", "ci"],
        &[("INFERGATE_TEST_SLOWDOWN", "0.1")],
    );
    assert!(
        !o.status.success() && text(&o).contains("planted slowdown"),
        "{}",
        text(&o)
    );
    assert!(gate_files(repo.path()).is_empty());

    // Forced: recorded, with what changed.
    let o = run(
        &["baseline", "update", "--profile", "ci", "--force"],
        &[("CI", "true")],
    );
    let t = text(&o);
    assert!(
        o.status.success()
            && t.contains("recorded baseline")
            && t.contains("ort-cpu::micro e2e_cpu_ms: (new) →"),
        "{t}"
    );
    let files = gate_files(repo.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let records = stored["records"].as_array().unwrap();
    // Three metrics and the probe, each with all three measured samples.
    assert_eq!(records.len(), 4, "{stored}");
    assert!(
        records
            .iter()
            .all(|r| r["samples"].as_array().unwrap().len() == 3),
        "{stored}"
    );

    let o = run(&["baseline", "show"], &[]);
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("ort-cpu::micro e2e_ms") && t.contains("onnxruntime"),
        "{t}"
    );

    // Compared (the verdict itself depends on the machine — PASS, FAIL, or SKIP when the machine is
    // not in its recorded state; that a comparison happened does not).
    let o = run(&["run", "--profile", "ci"], &[]);
    let t = text(&o);
    assert!(
        t.contains("regression.baseline::ort-cpu::micro")
            && t.contains("against baseline run")
            && !t.contains("no baseline"),
        "{t}"
    );

    // The planted slowdown is named in the verdict and recorded in the manifest.
    let o = infergate(
        &["run", "--profile", "ci"],
        repo.path(),
        out.path(),
        &[
            ("INFERGATE_TEST_SLOWDOWN", "0.01"),
            ("INFERGATE_RUN_ID", "slowed"),
        ],
    );
    let t = text(&o);
    assert!(t.contains("planted test slowdown 0.01"), "{t}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("infergate/slowed/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["test_slowdown"], 0.01, "{manifest}");
    // An invalid knob value is a failure naming the variable, not a silent clean run.
    let o = run(
        &["run", "--profile", "ci"],
        &[("INFERGATE_TEST_SLOWDOWN", "fast")],
    );
    assert!(
        !o.status.success() && text(&o).contains("INFERGATE_TEST_SLOWDOWN"),
        "{}",
        text(&o)
    );

    // A corrupt baseline fails the trial and `baseline show`, naming the file.
    std::fs::write(&files[0], b"{ not json").unwrap();
    let name = files[0].display().to_string();
    let o = run(&["run", "--profile", "ci"], &[]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("FAIL") && t.contains(&name),
        "{t}"
    );
    let o = run(&["baseline", "show"], &[]);
    assert!(
        !o.status.success() && text(&o).contains(&name),
        "{}",
        text(&o)
    );
}
