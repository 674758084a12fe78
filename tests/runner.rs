//! The runner's behaviour from the outside: bad gate files, failing gates, absent backends, and the
//! libtest-mimic arguments (`--list`, `--exact`, filters) of the `gates` test binary.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::bin::{text, Infergate};

const IDENTITY: &str = r#"
id = "integrity.model_identity"
claim = "test"
source = "test"
model = "smollm2-135m-instruct"
backends = ["ort-cpu"]
[profiles.ci]
warmup = 0
repetitions = 1
[profiles.full]
warmup = 0
repetitions = 1
[check]
kind = "model_identity"
sanity_tokens = 512
context = 256
untrained_fraction = UNTRAINED
"#;

fn gate_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn infergate(args: &[&str], gates: &Path, envs: &[(&str, &str)]) -> Output {
    let out_root = tempfile::tempdir().unwrap();
    let mut cmd = Infergate::new(args)
        .arg("--gates")
        .arg(gates)
        .env("CARGO_TARGET_DIR", out_root.path());
    for (k, v) in envs {
        cmd = cmd.env(k, v);
    }
    cmd.output()
}

#[test]
fn a_gate_file_naming_a_missing_model_fails_naming_the_file() {
    let dir = gate_dir(&[(
        "bad.toml",
        IDENTITY
            .replace("smollm2-135m-instruct", "gpt2")
            .replace("UNTRAINED", "0.5"),
    )]);
    let out = infergate(&["run", "--profile", "ci"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("bad.toml") && t.contains("`gpt2`"), "{t}");
}

#[test]
fn a_failed_gate_makes_the_run_exit_non_zero_with_the_number_and_threshold() {
    // A bound far below any real perplexity: the (trained) model is flagged.
    let dir = gate_dir(&[("g.toml", IDENTITY.replace("UNTRAINED", "0.0001"))]);
    let out = infergate(&["run", "--profile", "ci"], dir.path(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL  integrity.model_identity::ort-cpu")
            && t.contains("NOT HELD: trained_perplexity")
            && t.contains("needs ≤ 4.915"),
        "{t}"
    );
}

#[test]
fn a_run_in_which_nothing_ran_exits_2_with_the_skip_reason_and_fix() {
    // Item 11: with ONNX Runtime missing this printed "1 skipped" and exited 0 (CI green).
    let dir = gate_dir(&[("g.toml", IDENTITY.replace("UNTRAINED", "0.5"))]);
    let out = infergate(
        &["run", "--profile", "ci"],
        dir.path(),
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "nothing ran: {t}");
    assert!(
        t.contains("SKIP  integrity.model_identity::ort-cpu")
            && t.contains("ORT_DYLIB_PATH")
            && t.contains("no trial ran")
            && t.contains("infergate summary: 0 PASS, 0 FAIL, 0 XFAIL, 0 XPASS, 0 INFO, 1 SKIP"),
        "{t}"
    );
}

#[test]
fn a_backend_named_with_backend_that_is_absent_fails_the_run() {
    // Item 11: `--backend ollama` without an Ollama server must not end green.
    let dir = gate_dir(&[(
        "g.toml",
        IDENTITY
            .replace("UNTRAINED", "0.5")
            .replace("[\"ort-cpu\"]", "[\"ort-cpu\", \"ollama\"]"),
    )]);
    let out = infergate(
        &["run", "--profile", "ci", "--backend", "ort-cpu,ollama"],
        dir.path(),
        &[("OLLAMA_HOST", "127.0.0.1:9")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("PASS  integrity.model_identity::ort-cpu")
            && t.contains("named with --backend are absent here: ollama absent"),
        "{t}"
    );
}

const NO_BASELINE: &str = r#"
id = "regression.baseline"
claim = "test"
source = "test"
model = "smollm2-135m-instruct"
backends = ["ort-cpu"]
scenarios = ["micro"]
[profiles.ci]
warmup = 0
repetitions = 2
[profiles.full]
warmup = 0
repetitions = 2
[check]
kind = "regression"
gen_tokens = 4
metrics = ["e2e_ms"]
resamples = 400
"#;

#[test]
fn strict_mode_fails_a_skip_of_a_backend_that_is_usable_here() {
    // A regression trial without a baseline for this machine: ort-cpu runs here, the baseline is
    // missing. A SKIP, counted as one; under INFERGATE_STRICT=1 it fails the run.
    let dir = gate_dir(&[
        ("a.toml", IDENTITY.replace("UNTRAINED", "0.5")),
        ("b.toml", NO_BASELINE.to_string()),
    ]);
    let baselines = tempfile::tempdir().unwrap();
    let store = baselines.path().to_str().unwrap();
    let out = infergate(
        &["run", "--profile", "ci"],
        dir.path(),
        &[("INFERGATE_BASELINES_DIR", store)],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("SKIP  regression.baseline::ort-cpu::micro: no baseline for this machine")
            && t.contains("infergate summary: 1 PASS, 0 FAIL, 0 XFAIL, 0 XPASS, 0 INFO, 1 SKIP"),
        "{t}"
    );
    let out = infergate(
        &["run", "--profile", "ci"],
        dir.path(),
        &[
            ("INFERGATE_STRICT", "1"),
            ("INFERGATE_BASELINES_DIR", store),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "INFERGATE_STRICT=1: a skip of a trial whose backend is usable here fails the run"
        ),
        "{t}"
    );
}

/// The `gates` test binary, run through cargo like a user would.
fn cargo_gates(args: &[&str], gates: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["test", "--quiet", "--test", "gates", "--"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd.env("INFERGATE_GATES_DIR", gates);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn gates_binary_lists_filters_and_fails_like_libtest() {
    let failing = IDENTITY.replace("UNTRAINED", "0.0001").replace(
        "integrity.model_identity",
        "integrity.model_identity_strict",
    );
    let dir = gate_dir(&[
        ("a.toml", IDENTITY.replace("UNTRAINED", "0.5")),
        ("b.toml", failing),
    ]);
    let list = cargo_gates(&["--list"], dir.path(), &[]);
    let t = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        t.contains("integrity.model_identity::ort-cpu: test")
            && t.contains("integrity.model_identity_strict::ort-cpu: test"),
        "{}",
        text(&list)
    );

    let exact = cargo_gates(
        &["--exact", "integrity.model_identity::ort-cpu"],
        dir.path(),
        &[],
    );
    let t = text(&exact);
    assert!(exact.status.success(), "{t}");
    assert!(
        t.contains("1 passed") && t.contains("1 of 2 trials selected"),
        "{t}"
    );
    assert!(
        t.contains("infergate summary: 1 PASS, 0 FAIL, 0 XFAIL, 0 XPASS, 0 INFO, 0 SKIP"),
        "the harness's own summary after libtest's: {t}"
    );

    // Item 12: several filters, as libtest takes them (this exited 2).
    let two = cargo_gates(
        &["model_identity::ort-cpu", "model_identity_strict::ort-cpu"],
        dir.path(),
        &[],
    );
    let t = text(&two);
    assert!(
        t.contains("running 2 tests") && t.contains("FAILED"),
        "both filters select their trial: {t}"
    );

    let all = cargo_gates(&[], dir.path(), &[]);
    let t = text(&all);
    assert!(
        !all.status.success(),
        "a failing gate must fail cargo test: {t}"
    );
    assert!(
        t.contains("integrity.model_identity_strict::ort-cpu") && t.contains("FAILED"),
        "{t}"
    );

    let absent = cargo_gates(
        &[],
        dir.path(),
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let t = text(&absent);
    assert_eq!(absent.status.code(), Some(2), "no trial ran: {t}");
    assert!(
        t.contains("2 ignored")
            && t.contains("ORT_DYLIB_PATH")
            && t.contains("0 PASS, 0 FAIL, 0 XFAIL, 0 XPASS, 0 INFO, 2 SKIP"),
        "ignored with the reason printed and counted as skipped: {t}"
    );
}
