//! The roofline's tests: the CPU table and findings, and the GPU section against the tools.

use super::super::input::RunData;
use super::super::tools::Tools;
use super::*;
use crate::backend::{MemoryTraffic, TimingSource};
use crate::measure::{RunOutcome, RunPhase, RunRecord, RunTimings};
use crate::roofline::BandwidthSample;

fn run(backend: &str, scenario: &str, decode_ms: f64, traffic: MemoryTraffic) -> RunRecord {
    RunRecord {
        run_id: "r".into(),
        trial: crate::gate::TrialId::new(
            "phase.decode_fraction",
            crate::gate::Unit::backend(backend),
            Some(scenario),
        ),
        sub_series: None,
        backend: backend.into(),
        scenario: scenario.into(),
        index: 0,
        phase: RunPhase::Measured,
        started_unix_ms: 0,
        outcome: RunOutcome::Ok(RunTimings {
            prompt_tokens: 10,
            gen_tokens: 64,
            prefill_ms: 5.0,
            decode_ms,
            e2e_ms: decode_ms + 5.0,
            decode_steps: 63,
            timing_source: TimingSource::Harness,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            memory_traffic: Some(traffic),
        }),
    }
}

fn data(runs: Vec<RunRecord>, gb_per_s: Option<f64>) -> RunData {
    let mut d = RunData {
        runs,
        ..Default::default()
    };
    if let Some(g) = gb_per_s {
        let s = BandwidthSample {
            run_id: "r".into(),
            measured_unix_ms: 0,
            gb_per_s: g,
            timings_gb_per_s: vec![g],
            threads: 2,
            bytes_per_timing: 24 << 26,
            load_average_1m: Some(0.1),
        };
        d.bandwidth.push(s);
    }
    d
}

const FP32: MemoryTraffic = MemoryTraffic {
    weight_bytes_per_token: 500_000_000,
    kv_bytes_per_position: 0,
};
const Q4: MemoryTraffic = MemoryTraffic {
    weight_bytes_per_token: 100_000_000,
    kv_bytes_per_position: 0,
};

#[test]
fn a_slow_quantized_variant_is_flagged_and_left_out_of_routing() {
    // fp32: 63 steps in 1.5 s = 42 tok/s; limit 20 GB/s / 0.5 GB = 40 tok/s.
    // q4: 63 steps in 9 s = 7 tok/s; limit 200 tok/s → 3.5 %, and slower than fp32.
    let runs = vec![
        run("ort-cpu", "short", 1500.0, FP32),
        run("ort-cpu", "short", 1510.0, FP32),
        run("ort-cpu-q4", "short", 9000.0, Q4),
        run("ort-cpu-q4", "short", 9100.0, Q4),
    ];
    let d = data(runs, Some(20.0));
    let rows = super::super::analysis::latency_rows(&d.runs);
    let r = Roofline::from_run(&d, &rows);
    assert_eq!(r.rows.len(), 2);
    let fp32 = &r.rows[0];
    assert!((fp32.limit_tokens_per_s.unwrap() - 40.0).abs() < 1e-9);
    assert!(fp32.findings().is_empty(), "{:?}", fp32.findings());
    let q4 = &r.rows[1];
    assert!(q4.fraction.unwrap() < MIN_FRACTION);
    assert!(q4.parent.as_ref().unwrap().ratio < 1.0);
    assert_eq!(q4.findings().len(), 2, "{:?}", q4.findings());
    let flagged = r.flagged();
    assert_eq!(flagged.keys().collect::<Vec<_>>(), ["ort-cpu-q4"]);
    let routable = r.routable(&rows);
    assert!(routable.iter().all(|x| x.backend == "ort-cpu"));
    let mut md = String::new();
    section(&mut md, &r);
    assert!(
        md.contains("**`ort-cpu-q4`: check its configuration**"),
        "{md}"
    );
}

#[test]
fn on_a_busy_machine_fractions_are_not_judged_but_parents_still_are() {
    let runs = vec![
        run("ort-cpu", "short", 1500.0, FP32),
        run("ort-cpu-q4", "short", 9000.0, Q4),
    ];
    let mut d = data(runs, Some(20.0));
    d.bandwidth[0].load_average_1m = Some(16.2);
    let rows = super::super::analysis::latency_rows(&d.runs);
    let r = Roofline::from_run(&d, &rows);
    assert!(r
        .rows
        .iter()
        .all(|x| !x.fraction_judged && x.fraction.is_some()));
    assert_eq!(r.rows[1].findings().len(), 1, "{:?}", r.rows[1].findings());
    let mut md = String::new();
    section(&mut md, &r);
    assert!(md.contains("not judged"), "{md}");
}

#[test]
fn a_fast_variant_is_not_flagged_and_without_bandwidth_there_is_no_limit() {
    let runs = vec![
        run("ort-cpu", "short", 1500.0, FP32),
        run("ort-cpu-q4", "short", 700.0, Q4),
    ];
    let d = data(runs, None);
    let rows = super::super::analysis::latency_rows(&d.runs);
    let r = Roofline::from_run(&d, &rows);
    assert!(r.rows.iter().all(|x| x.limit_tokens_per_s.is_none()));
    assert!(r.flagged().is_empty());
    let mut md = String::new();
    section(&mut md, &r);
    assert!(md.contains("No CPU bandwidth was measured"), "{md}");
}

// GPU table fixtures: the tools' outputs with their real field names (trimmed).
const MODES: &str = r#"{"copy_bandwidth":{"bytes":1073741824,"device":"cuda:0","gb_per_s_max":4146.2,"gb_per_s_median":4000.0,"reps":20}}
{"mode":"static","error":"out of memory"}
"#;
const BENCH: &str = r#"[{"build_commit":"abc","build_number":11434,"backends":"CUDA","gpu_info":"NVIDIA H200","n_gpu_layers":99,"flash_attn":false,"n_prompt":27,"n_gen":0,"avg_ts":30000.0,"stddev_ts":100.0},
 {"build_commit":"abc","build_number":11434,"backends":"CUDA","gpu_info":"NVIDIA H200","n_gpu_layers":99,"flash_attn":false,"n_prompt":0,"n_gen":64,"avg_ts":920.0,"stddev_ts":7.0}]"#;
const HF_EAGER: &str = r#"{"transformers":"4.57","torch":"2.11.0","device":"NVIDIA H200","dtype":"bfloat16","mode":"eager","attn_implementation":"eager","gen_tokens":64,
 "scenarios":{"short":{"prompt_tokens":10,"prefill_ms_median":9.0,"e2e_ms_median":900.0,"decode_tokens_per_s":70.0}}}"#;
const HF_COMPILE: &str = r#"{"transformers":"4.57","torch":"2.11.0","device":"NVIDIA H200","dtype":"bfloat16","mode":"compile","attn_implementation":"sdpa","gen_tokens":64,
 "scenarios":{"short":{"prompt_tokens":10,"prefill_ms_median":3.0,"e2e_ms_median":204.3,"decode_tokens_per_s":315.0,"tokens":[1,2]}}}"#;

const BF16: MemoryTraffic = MemoryTraffic {
    weight_bytes_per_token: 200_000_000,
    kv_bytes_per_position: 0,
};

fn tools_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Tools, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let t = dir.path().join(super::super::tools::TOOLS_DIR);
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join(name), text).unwrap();
    }
    let mut notes = Vec::new();
    let tools = Tools::load(dir.path(), &mut notes);
    (dir, tools, notes)
}

/// 63 decode steps in `ms` → 63 000 / ms tok/s.
fn gpu_runs() -> Vec<RunRecord> {
    vec![
        // 63 / 0.070 s = 900 tok/s: ×0.978 of llama-bench's 920.
        run("llama-cpp-cuda", "short", 70.0, Q4),
        // 63 / 0.100 s = 630 tok/s: ×0.685.
        run("llama-cpp-cuda", "long", 100.0, Q4),
        // 63 / 0.090 s = 700 tok/s; limit 4000 GB/s ÷ 0.2 GB = 20 000 tok/s → 3.5 %.
        run("tch-cuda-graph-bf16", "short", 90.0, BF16),
        run("ort-cpu", "short", 1500.0, FP32),
    ]
}

fn gpu_table(tools: Tools) -> (Roofline, Vec<GpuRow>, String) {
    let mut d = data(gpu_runs(), Some(20.0));
    d.tools = tools;
    let rows = super::super::analysis::latency_rows(&d.runs);
    let r = Roofline::from_run(&d, &rows);
    let g = gpu_rows(&r, &d.tools);
    let mut md = String::new();
    gpu_section(&mut md, &r, &d.tools);
    (r, g, md)
}

fn row<'a>(g: &'a [GpuRow], backend: &str, scenario: &str) -> &'a GpuRow {
    g.iter()
        .find(|x| x.backend == backend && x.scenario == scenario)
        .unwrap_or_else(|| panic!("no row {backend} · {scenario} in {g:?}"))
}

/// The llama-bench check of `llama-cpp-cuda` · short.
fn bench_check(g: &[GpuRow]) -> Result<LlamaBenchCheck, String> {
    row(g, "llama-cpp-cuda", "short")
        .vs_llama_bench
        .clone()
        .unwrap()
}

#[test]
fn the_gpu_table_compares_each_gpu_backend_with_the_tools_of_its_run() {
    let (_dir, tools, notes) = tools_dir(&[
        (super::super::tools::DECODE_MODES_FILE, MODES),
        (super::super::tools::LLAMA_BENCH_FILE, BENCH),
        (super::super::tools::HF_EAGER_FILE, HF_EAGER),
        (super::super::tools::HF_COMPILE_FILE, HF_COMPILE),
    ]);
    assert!(notes.is_empty(), "{notes:?}");
    let (r, g, md) = gpu_table(tools);
    assert_eq!(g.len(), 3, "the CPU backend is not in the GPU table: {g:?}");
    assert!(g.iter().all(|x| x.backend != "ort-cpu"));
    // The CPU row still divides by the CPU probe, never the device copy bandwidth.
    let cpu = r.rows.iter().find(|x| x.backend == "ort-cpu").unwrap();
    assert_eq!(cpu.bandwidth.unwrap().source, BandwidthSource::CpuProbe);

    let graph = row(&g, "tch-cuda-graph-bf16", "short");
    assert!((graph.decode_tokens_per_s - 700.0).abs() < 1e-6);
    assert!((graph.fraction.clone().unwrap() - 0.035).abs() < 1e-9);
    let eager = graph.vs_hf_eager.clone().unwrap();
    assert!((eager.ratio - 10.0).abs() < 1e-9, "{eager:?}");
    let compiled = graph.vs_hf_compile.clone().unwrap();
    assert!((compiled.ratio - 700.0 / 315.0).abs() < 1e-9);
    assert!(
        graph.vs_llama_bench.is_none(),
        "only llama-cpp-cuda is checked"
    );

    let short = row(&g, "llama-cpp-cuda", "short");
    let b = short.vs_llama_bench.clone().unwrap().unwrap();
    assert!(b.holds, "{b:?}");
    assert!((b.comparison.ratio - 900.0 / 920.0).abs() < 1e-9);
    assert_eq!(b.n_gpu_layers, Some(99));
    let long = row(&g, "llama-cpp-cuda", "long");
    assert!(!long.vs_llama_bench.clone().unwrap().unwrap().holds);
    // transformers has no `long` scenario in this fixture: said, not blank.
    assert_eq!(
        long.vs_hf_eager.clone().unwrap_err(),
        "`tools/hf-eager.json` has no scenario `long`"
    );

    assert!(
        md.contains("## GPU backends against the engines' own tools"),
        "{md}"
    );
    assert!(
        md.contains("- llama-bench agreement **holds**: `llama-cpp-cuda` · short"),
        "{md}"
    );
    assert!(
        md.contains("- llama-bench agreement **does not hold**: `llama-cpp-cuda` · long"),
        "{md}"
    );
    assert!(md.contains("- CUDA graph at or above transformers compiled **holds**: `tch-cuda-graph-bf16` · short"), "{md}");
}

#[test]
fn a_missing_tool_file_is_named_in_the_row() {
    let (_dir, tools, _) = tools_dir(&[]);
    let (r, g, md) = gpu_table(tools);
    let graph = row(&g, "tch-cuda-graph-bf16", "short");
    assert_eq!(
        graph.fraction.clone().unwrap_err(),
        "no `tools/tch-decode-modes.jsonl` in this run"
    );
    assert_eq!(
        graph.vs_hf_compile.clone().unwrap_err(),
        "no `tools/hf-compile.json` in this run"
    );
    let gpu_row = r
        .rows
        .iter()
        .find(|x| x.backend == "tch-cuda-graph-bf16")
        .unwrap();
    assert!(gpu_row.bandwidth.is_none(), "never the CPU's bandwidth");
    let bench = bench_check(&g);
    assert_eq!(
        bench.unwrap_err(),
        "no `tools/llama-bench.json` in this run"
    );
    assert!(
        md.contains("missing: no `tools/hf-eager.json` in this run"),
        "{md}"
    );
    assert!(md.contains("- llama-bench agreement **not checked**: `llama-cpp-cuda` · short: no `tools/llama-bench.json` in this run"), "{md}");
    assert!(
        md.contains("- CUDA graph at or above transformers compiled **not checked**"),
        "{md}"
    );
}

#[test]
fn an_unreadable_tool_file_or_a_failed_probe_says_so_in_the_row() {
    let (_dir, tools, notes) = tools_dir(&[
        (
            super::super::tools::DECODE_MODES_FILE,
            r#"{"copy_bandwidth_error":"CUDA unavailable"}"#,
        ),
        (
            super::super::tools::LLAMA_BENCH_FILE,
            "llama-bench: error: model not found",
        ),
        (super::super::tools::HF_EAGER_FILE, HF_EAGER),
    ]);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (_, g, _) = gpu_table(tools);
    let graph = row(&g, "tch-cuda-graph-bf16", "short");
    let why = graph.fraction.clone().unwrap_err();
    assert!(
        why.contains("could not measure") && why.contains("CUDA unavailable"),
        "{why}"
    );
    let bench = bench_check(&g);
    assert!(bench
        .unwrap_err()
        .starts_with("`tools/llama-bench.json` unreadable"));

    // A prompt-processing test only: no tg.
    let pp_only = BENCH.replace("\"n_gen\":64", "\"n_gen\":0");
    let (_dir, tools, _) = tools_dir(&[(super::super::tools::LLAMA_BENCH_FILE, &pp_only)]);
    let (_, g, _) = gpu_table(tools);
    let bench = bench_check(&g);
    assert_eq!(
        bench.unwrap_err(),
        "`tools/llama-bench.json` has no text-generation (tg) test"
    );
}

#[test]
fn a_run_without_gpu_backends_has_no_gpu_section() {
    let runs = vec![run("ort-cpu", "short", 1500.0, FP32)];
    let d = data(runs, Some(20.0));
    let rows = super::super::analysis::latency_rows(&d.runs);
    let r = Roofline::from_run(&d, &rows);
    assert!(gpu_rows(&r, &d.tools).is_empty());
    let mut md = String::new();
    gpu_section(&mut md, &r, &d.tools);
    assert!(md.is_empty(), "{md}");
}
