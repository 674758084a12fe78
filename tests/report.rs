//! Reports from the outside: `infergate report <dir>` on a fixture run directory (every skip,
//! degraded run, error and no_data reason in report.md; the claim table's verdicts; junit.xml parsed
//! independently with quick-xml; SVGs that parse), and `infergate run` end to end on a fast gate.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use infergate::backend::TimingSource;
use infergate::gate::economics::{CostDetails, CostLine};
use infergate::gate::scaling_fit::{ScalingDetails, ShapePoint, SlopeSummary, PARAMS_ONLY};
use infergate::gate::verdict::derive;
use infergate::gate::{
    Details, KnownFailure, Metrics, NoDataNote, Outcome, Part, RunCounts, Skip, SkipCause,
    Threshold, TrialId, TrialResult, Unit,
};
use infergate::host::Machine;
use infergate::manifest::{GateFileRef, Manifest};
use infergate::measure::{RunOutcome, RunPhase, RunRecord, RunTimings};
use infergate::record::{PlanRecord, TrialRecord};
use quick_xml::events::Event;

mod common;
use common::bin::{text, Infergate};

const RUN_ID: &str = "fixture-run";
const SKIP_REASON: &str = "llama-cpp absent: llama.cpp is not built on this machine (fix: run `cargo run --release -- build-llama-cpp`)";
const FAIL_REASON: &str = "|delta| 0.0123 > 0.005 for ort-cpu-fp16 <fp16> & \"quoted\"";
const DEGRADED_REASON: &str = "ort-cpu-int8 failed to load the model: export missing";
const ERROR_MESSAGE: &str = "ort-cpu failed during decode: session aborted";
const NO_DATA_REASON: &str = "1 in-window sample (< 2) at 100 ms polling";
const ENERGY_NO_DATA: &str = "no readable CPU package power sensor (RAPL: permission denied)";

fn id(gate: &str, backend: &str, scenario: Option<&str>) -> TrialId {
    let unit = if backend.contains('+') {
        Unit::Backends {
            backends: backend.split('+').map(String::from).collect(),
        }
    } else {
        Unit::backend(backend)
    };
    TrialId::new(gate, unit, scenario)
}

/// A result as the runner writes it: the verdict derived from the parts by the one rule.
fn trial(
    trial: TrialId,
    parts: Vec<Part>,
    declared: &[KnownFailure],
    metrics: &[(&'static str, f64)],
) -> TrialRecord {
    let outcome = Outcome::Judged { parts };
    let (verdict, message, known_failure) = derive(&outcome, "", declared);
    let mut m = Metrics::default();
    for (k, v) in metrics {
        m.insert(k, *v);
    }
    let mut r = TrialRecord::from(TrialResult {
        trial,
        verdict,
        message,
        outcome,
        known_failure,
        metrics: m,
        details: None,
        no_data: Vec::new(),
        runs: RunCounts::default(),
        degraded_reasons: vec![],
    });
    r.elapsed_s = Some(2.5);
    r
}

fn held(name: &str, measured: f64, threshold: Threshold, detail: &str) -> Part {
    Part::compare(name, measured, threshold, detail)
}

fn run(
    trial: &TrialId,
    backend: &str,
    scenario: &str,
    index: usize,
    phase: RunPhase,
    outcome: RunOutcome,
) -> RunRecord {
    RunRecord {
        run_id: RUN_ID.into(),
        trial: trial.clone(),
        sub_series: None,
        backend: backend.into(),
        scenario: scenario.into(),
        index,
        phase,
        started_unix_ms: 0,
        outcome,
    }
}

fn ok(prefill: f64, decode: f64) -> RunOutcome {
    RunOutcome::Ok(RunTimings {
        prompt_tokens: 11,
        gen_tokens: 64,
        prefill_ms: prefill,
        decode_ms: decode,
        e2e_ms: prefill + decode,
        decode_steps: 63,
        timing_source: TimingSource::Harness,
        cold_start_ms: None,
        cached_prompt_tokens: None,
        memory_traffic: None,
    })
}

fn jsonl<T: serde::Serialize>(path: &Path, items: &[T]) {
    let text: String = items
        .iter()
        .map(|i| serde_json::to_string(i).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A run directory as a nextest run leaves it: results from several trials, plan-time skips only
/// in plan.jsonl, runs, and a manifest that names the repository's real gate files.
fn fixture(dir: &Path) {
    let known = KnownFailure {
        backends: vec!["llama-cpp".into()],
        scenarios: vec!["medium".into()],
        models: vec!["smollm2-135m-instruct".into()],
        part: "decode_fraction".into(),
        measured: 0.89,
        guard: Some(0.8),
        date: "2026-11-27".parse().unwrap(),
        machine: "AMD EPYC, 2 cores".into(),
        reason: "prefill-heavy on 2 cores".into(),
    };
    let mut cost = trial(
        id("economics.cost", "ort-cpu+ort-cpu-q4", None),
        vec![
            held("throughput", 2.0, Threshold::equal(2.0), ""),
            Part::reported("tier_invariance", None, "no energy term: by construction"),
        ],
        &[],
        &[],
    );
    let line = |backend: &str, tier: &str, usd: f64, tps: f64| CostLine {
        backend: backend.into(),
        tier: tier.into(),
        usd_per_hour: 1.0,
        usd_per_1m: usd,
        usd_per_1k_requests: None,
        tokens_per_s: tps,
        joules_per_token: None,
        energy_share: None,
        workers: None,
    };
    cost.result.details = Some(Details::Cost(CostDetails {
        lines: vec![
            line("ort-cpu", "spot", 0.8125, 100.0),
            line("ort-cpu", "on_demand", 2.4375, 100.0),
            line("ort-cpu-q4", "spot", 0.5, 162.5),
            line("ort-cpu-q4", "on_demand", 1.5, 162.5),
        ],
        throughput: vec![],
        orderings: vec![],
    }));
    cost.result.no_data = vec![NoDataNote {
        subject: "energy term of ort-cpu".into(),
        reason: ENERGY_NO_DATA.into(),
        count: 1,
    }];
    let mut scaling = trial(
        id("scaling.fit_ci", "ort-cpu", None),
        vec![held(PARAMS_ONLY, 1.0, Threshold::equal(1.0), "actionable")],
        &[],
        &[],
    );
    scaling.result.details = Some(Details::Scaling(ScalingDetails {
        points: [
            ("l2-d256", 14_100_000u64, 40.0),
            ("l6-d512", 43_900_000, 110.0),
            ("l3-d768", 59_000_000, 150.0),
        ]
        .iter()
        .map(|(s, p, ms)| ShapePoint {
            shape: s.to_string(),
            layers: 2,
            parameters: *p,
            e2e_ms_geomean: *ms,
        })
        .collect(),
        slopes: vec![SlopeSummary {
            name: PARAMS_ONLY.into(),
            slope: 0.48,
            t_ci: (0.33, 0.66),
            bootstrap_ci: (0.31, 0.64),
            r_squared: 0.93,
            actionable: true,
        }],
    }));
    let mut energy = trial(
        id("energy.gating", "ort-cpu", Some("short")),
        vec![held(
            "prefill_events",
            1.0,
            Threshold::equal(1.0),
            "5/5 prefill events are NoData",
        )],
        &[],
        &[],
    );
    energy.result.no_data = vec![NoDataNote {
        subject: "prefill events".into(),
        reason: NO_DATA_REASON.into(),
        count: 5,
    }];
    let results = vec![
        trial(
            id("phase.decode_fraction", "ort-cpu", Some("short")),
            vec![held(
                "decode_fraction",
                0.97,
                Threshold::above(0.9),
                "6 runs",
            )],
            &[],
            &[("decode_fraction_median", 0.97)],
        ),
        trial(
            id("phase.decode_fraction", "llama-cpp", Some("medium")),
            vec![held(
                "decode_fraction",
                0.8912,
                Threshold::above(0.9),
                "10 runs",
            )],
            &[known],
            &[("decode_fraction_median", 0.8912)],
        ),
        trial(
            id("accuracy.perplexity_delta", "ort-cpu-fp16", None),
            vec![held(
                "perplexity_delta",
                0.0123,
                Threshold::below(0.005),
                FAIL_REASON,
            )],
            &[],
            &[("perplexity_delta", 0.0123)],
        ),
        trial(
            id("accuracy.perplexity_delta", "ort-cpu", None),
            vec![held("perplexity_delta", 1e-5, Threshold::below(0.001), "")],
            &[],
            &[("perplexity_delta", 1e-5)],
        ),
        scaling,
        cost,
        energy,
    ];
    jsonl(&dir.join("results.jsonl"), &results);
    // Plan-time skips no process recorded a result for (nextest never runs ignored trials).
    let skip = |reason: &str| Some(Skip::new(SkipCause::BackendAbsent, reason));
    jsonl(
        &dir.join("plan.jsonl"),
        &[
            PlanRecord {
                trial: id("phase.decode_fraction", "ort-cpu", Some("short")),
                skip: None,
            },
            PlanRecord {
                trial: id("phase.decode_fraction", "llama-cpp", Some("short")),
                skip: skip(SKIP_REASON),
            },
            PlanRecord {
                trial: id("stats.distribution", "ort-cpu+llama-cpp", None),
                skip: skip("no backend of the gate is available"),
            },
        ],
    );

    let mut runs = Vec::new();
    for (backend, scenario, decode) in [
        ("ort-cpu", "short", 900.0),
        ("ort-cpu", "long", 950.0),
        ("ort-cpu-q4", "short", 600.0),
    ] {
        let name = id("phase.decode_fraction", backend, Some(scenario));
        runs.push(run(
            &name,
            backend,
            scenario,
            0,
            RunPhase::Warmup,
            ok(500.0, 5000.0),
        ));
        for i in 1..=6 {
            runs.push(run(
                &name,
                backend,
                scenario,
                i,
                RunPhase::Measured,
                ok(30.0 + i as f64, decode + 10.0 * i as f64),
            ));
        }
    }
    runs.push(run(
        &id("phase.decode_fraction", "ort-cpu-int8", Some("short")),
        "ort-cpu-int8",
        "short",
        0,
        RunPhase::Measured,
        RunOutcome::Degraded {
            reason: DEGRADED_REASON.into(),
        },
    ));
    runs.push(run(
        &id("phase.decode_fraction", "ort-cpu", Some("short")),
        "ort-cpu",
        "short",
        7,
        RunPhase::Measured,
        RunOutcome::Error {
            message: ERROR_MESSAGE.into(),
        },
    ));
    // A record of another run in the same file must be ignored.
    let mut other = run(
        &id("phase.decode_fraction", "ort-cpu", Some("short")),
        "ort-cpu",
        "short",
        0,
        RunPhase::Measured,
        ok(1.0, 1.0),
    );
    other.run_id = "another-run".into();
    runs.push(other);
    jsonl(&dir.join("runs.jsonl"), &runs);

    let gates = Path::new(env!("CARGO_MANIFEST_DIR")).join("gates");
    let gate_files = ["phase.decode_fraction", "accuracy.perplexity_delta"]
        .iter()
        .map(|id| {
            let path = gates.join(format!("{id}.toml"));
            GateFileRef {
                id: id.to_string(),
                sha256: infergate::assets::sha256_file(&path).unwrap(),
                path: path.display().to_string(),
            }
        })
        .collect();
    let manifest = Manifest {
        run_id: RUN_ID.into(),
        started_utc: "2026-01-01T00:00:00Z".into(),
        profile: "ci".into(),
        machine: Machine {
            cpu_model: "Test CPU".into(),
            available_cores: 2,
            os: "Test OS".into(),
            kernel: "6.0".into(),
            hostname: "h".into(),
        },
        runtimes: BTreeMap::from([("onnxruntime".to_string(), "1.31.1".to_string())]),
        crate_versions: BTreeMap::new(),
        git_commit: Some("0123456789abcdef".into()),
        git_dirty: Some(false),
        gate_files,
        models: BTreeMap::from([(
            "smollm2-135m-instruct".to_string(),
            "b179c9523d0e6a0f".to_string(),
        )]),
        gpus: Vec::new(),
        baseline_fingerprint: None,
        test_slowdown: None,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn infergate(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Infergate::new(args);
    for (k, v) in envs {
        cmd = cmd.env(k, v);
    }
    cmd.output()
}

/// How report.md writes text in a table cell.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('<', "\\<")
}

/// JUnit counts read with a generic XML parser: (testcases, failures, skipped, failure messages).
fn junit_counts(xml: &str) -> (usize, usize, usize, Vec<String>) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut cases, mut failures, mut skipped, mut messages) = (0, 0, 0, Vec::new());
    loop {
        match reader.read_event().expect("junit.xml is well-formed XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testcase" => cases += 1,
                b"failure" => {
                    failures += 1;
                    for a in e.attributes() {
                        let a = a.unwrap();
                        if a.key.as_ref() == b"message" {
                            messages.push(
                                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                    .unwrap()
                                    .into_owned(),
                            );
                        }
                    }
                }
                b"skipped" => skipped += 1,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    (cases, failures, skipped, messages)
}

/// The root element's name of an XML document.
fn xml_root(xml: &str) -> String {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut root = None;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) if root.is_none() => {
                root = Some(String::from_utf8_lossy(e.name().as_ref()).into_owned())
            }
            Event::Eof => break,
            _ => {}
        }
    }
    root.unwrap_or_default()
}

#[test]
fn report_rebuilds_the_decision_card_junit_and_plots_from_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let out = infergate(&["report", dir.path().to_str().unwrap()], &[]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed gate in the run makes `report` exit 1: {t}"
    );

    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for reason in [
        SKIP_REASON,
        DEGRADED_REASON,
        ERROR_MESSAGE,
        NO_DATA_REASON,
        ENERGY_NO_DATA,
    ] {
        assert!(
            md.contains(&md_cell(reason)),
            "report.md lacks the reason `{reason}`:\n{md}"
        );
    }
    assert!(
        md.contains(&md_cell(FAIL_REASON)),
        "the failure's evidence is in the claim table:\n{md}"
    );
    assert!(
        md.contains(
            "**Overall: FAIL** — 4 PASS, 1 FAIL, 1 XFAIL, 0 XPASS, 1 INFO, 2 SKIP (9 trials)"
        ),
        "{md}"
    );
    // Claim table: one row per gate, in order, with its verdict and the claim from the gate file.
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| C") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .collect();
    assert_eq!(rows.len(), 6, "{md}");
    assert!(
        rows[0].starts_with("| C1 | Decode dominates")
            && rows[0].contains("**XFAIL (1 PASS, 1 XFAIL, 1 SKIP of 3 trials)**")
            && rows[0].contains(
                "llama-cpp · medium: XFAIL known failure: decode_fraction 0.8912, needs > 0.9"
            )
            && rows[0].contains("llama-cpp · short: SKIP"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("`accuracy.perplexity_delta`")
            && rows[1].contains("**FAIL (1 PASS, 1 FAIL of 2 trials)**"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].contains("(claim not recorded: gate file unavailable)"),
        "{}",
        rows[2]
    );
    assert!(
        rows[3].contains("**INFO (1 INFO of 1 trials)**"),
        "{}",
        rows[3]
    );
    // Item 8: a gate whose only trial was skipped at plan time keeps its row.
    assert!(
        rows[5].contains("`stats.distribution`")
            && rows[5].contains("**SKIP (1 SKIP of 1 trials)**"),
        "{}",
        rows[5]
    );
    // Manifest summary on top, distributions from measured ok runs of this run id only.
    assert!(
        md.contains("Test CPU, 2 cores")
            && md.contains("onnxruntime 1.31.1")
            && md.contains("`0123456789abcdef`"),
        "{md}"
    );
    let short = md
        .lines()
        .find(|l| l.starts_with("| ort-cpu | short |"))
        .expect("latency row ort-cpu · short");
    let cells: Vec<&str> = short.split('|').map(str::trim).collect();
    assert_eq!(
        cells[6], "6",
        "6 measured ok runs (warmup, error and the other run id excluded): {short}"
    );
    // Routing: two decode-heavy backends on the shared workload `short`; q4 is clearly faster.
    assert!(
        md.contains("route decode-heavy work to `ort-cpu-q4`"),
        "{md}"
    );
    assert!(
        md.contains("| ort-cpu | 100.0 | 2.4375 | 0.8125 |")
            && md.contains("| ort-cpu-q4 | 162.5 | 1.5000 | 0.5000 |"),
        "cost by tier:\n{md}"
    );
    assert!(md.contains("| scaling.fit_ci::ort-cpu | 3 | 0.480 | [0.330, 0.660] | [0.310, 0.640] | 0.930 | actionable |"), "{md}");

    let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let (cases, failures, skipped, messages) = junit_counts(&xml);
    assert_eq!(
        (cases, failures, skipped),
        (9, 1, 4),
        "XFAIL, INFO and SKIP are <skipped>, never a success: {xml}"
    );
    assert!(
        messages.len() == 1 && messages[0].contains(FAIL_REASON),
        "the failure message survives XML escaping: {messages:?}"
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let counts = &summary["counts"];
    assert_eq!(
        ["pass", "fail", "xfail", "xpass", "info", "skip"].map(|k| counts[k].as_u64()),
        [Some(4), Some(1), Some(1), Some(0), Some(1), Some(2)],
        "{summary}"
    );

    for name in [
        "latency_e2e_gen64.svg",
        "scaling_scaling.fit_ci-ort-cpu.svg",
    ] {
        let svg = std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{t}"));
        assert_eq!(xml_root(&svg), "svg", "{name}");
        assert!(md.contains(&format!("]({name})")), "report.md links {name}");
    }
    let latency = std::fs::read_to_string(dir.path().join("latency_e2e_gen64.svg")).unwrap();
    assert!(
        latency.contains("ort-cpu-q4 · short"),
        "category labels on the axis"
    );
    assert_eq!(
        latency.matches("<circle").count(),
        18,
        "one dot per measured ok run"
    );
}

#[test]
fn report_on_a_directory_that_is_not_a_run_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = infergate(&["report", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("results.jsonl is missing; run `infergate run`"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_writes_every_file_of_the_run_directory() {
    let target = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = infergate(
        &[
            "run",
            "--repo",
            repo.to_str().unwrap(),
            "--gate",
            "integrity.model_identity",
            "--backend",
            "ort-cpu",
        ],
        &[
            ("CARGO_TARGET_DIR", target.path()),
            ("INFERGATE_RUN_ID", Path::new("e2e")),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("[1/1] start  integrity.model_identity::ort-cpu") && t.contains("[1/1] PASS"),
        "progress on stderr: {t}"
    );
    let dir = target.path().join("infergate").join("e2e");
    for f in [
        "runs.jsonl",
        "results.jsonl",
        "manifest.json",
        "summary.json",
        "report.md",
        "junit.xml",
    ] {
        assert!(
            dir.join(f).is_file(),
            "{f} missing in {}: {t}",
            dir.display()
        );
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("**Overall: PASS**")
            && md.contains("| C1 | The loaded model is the declared SmolLM2-135M-Instruct"),
        "{md}"
    );
    assert!(
        md.contains("No timed run was recorded"),
        "model identity times nothing: {md}"
    );
    let (cases, failures, skipped, _) =
        junit_counts(&std::fs::read_to_string(dir.join("junit.xml")).unwrap());
    assert_eq!((cases, failures, skipped), (1, 0, 0));
    // Rebuilding from the files gives the same card.
    let again = infergate(&["report", dir.to_str().unwrap()], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(dir.join("report.md")).unwrap(), md);
}
