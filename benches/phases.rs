//! Criterion benches of the two inference phases per backend and scenario (TR121's phase split):
//!
//! - `prefill/<backend>/<scenario>`: one forward over the scenario's prompt (a 1-token generation;
//!   the time is the backend's own `prefill_ms`).
//! - `decode/<backend>/<scenario>`: the KV-cached greedy loop after prefill (`decode_ms` of a
//!   `DECODE_TOKENS`-token generation), throughput in generated tokens per second.
//!
//! Both use `iter_custom` with the phase time each backend measures at its own boundary (the harness
//! clock for ONNX Runtime, llama.cpp's `timings` for llama-server), so prefill is not polluted by the
//! decode loop and vice versa. Backends: the ONNX Runtime CPU variants and llama.cpp; one that is not
//! available here is skipped with its reason printed. `INFERGATE_BENCH_BACKENDS` and
//! `INFERGATE_BENCH_SCENARIOS` (comma-separated) narrow the set.
//!
//! `cargo bench --bench phases` (a few minutes for everything on 2 cores). These benches inform; the
//! gates in `gates/` decide. The same decode loops against each runtime's own tool (Python
//! onnxruntime on the same export, `llama-bench` on the same build) are in
//! `scripts/harness_overhead.sh` and docs/performance.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use infergate::backend::{registry, Availability};
use infergate::model::catalog;
use infergate::workload::{prompt_ids, SCENARIOS};

const BACKENDS: [&str; 4] = ["ort-cpu", "ort-cpu-int8", "ort-cpu-q4", "llama-cpp"];
const DECODE_TOKENS: usize = 16;

fn selected(var: &str, all: &[&'static str]) -> Vec<&'static str> {
    match std::env::var(var) {
        Ok(list) if !list.trim().is_empty() => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            all.iter().copied().filter(|x| wanted.contains(x)).collect()
        }
        _ => all.to_vec(),
    }
}

fn ms(d: f64) -> Duration {
    Duration::from_secs_f64(d / 1e3)
}

fn phases(c: &mut Criterion) {
    let encode = match infergate::runner::load_encoder() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("phases: skipped: the tokenizer could not load: {e}");
            return;
        }
    };
    let model = catalog::default_model().unwrap();
    let scenario_names: Vec<&'static str> = SCENARIOS.iter().map(|s| s.name).collect();
    let scenarios: Vec<_> = selected("INFERGATE_BENCH_SCENARIOS", &scenario_names)
        .into_iter()
        .filter_map(|n| SCENARIOS.iter().find(|s| s.name == n).copied())
        .collect();
    for backend_id in selected("INFERGATE_BENCH_BACKENDS", &BACKENDS) {
        if let Availability::Absent { reason, fix } = registry::probe(backend_id) {
            eprintln!("phases: {backend_id} skipped: {reason} (fix: {fix})");
            continue;
        }
        let mut backend = match registry::open(backend_id, &model) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("phases: {backend_id} skipped: it could not be opened: {e}");
                continue;
            }
        };
        // Pre-flight: a backend that cannot generate is skipped with the reason, not benched.
        if let Some(first) = scenarios.first() {
            let check = prompt_ids(first, encode.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|p| backend.generate(&p, 2).map_err(|e| e.to_string()));
            if let Err(e) = check {
                eprintln!("phases: {backend_id} skipped: a test generation failed: {e}");
                continue;
            }
        }
        // A failure after a successful pre-flight stops the bench with the backend's message
        // (criterion has no way to record a failed iteration, and a made-up time would be a lie).
        let mut prefill = c.benchmark_group(format!("prefill/{backend_id}"));
        prefill
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for s in &scenarios {
            let Ok(prompt) = prompt_ids(s, encode.as_ref()) else {
                eprintln!(
                    "phases: scenario {} skipped: its prompt could not be built",
                    s.name
                );
                continue;
            };
            prefill.throughput(Throughput::Elements(prompt.len() as u64));
            prefill.bench_function(BenchmarkId::from_parameter(s.name), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            backend
                                .generate(&prompt, 1)
                                .map(|g| ms(g.timings.prefill_ms))
                                .unwrap_or_else(|e| panic!("{backend_id} prefill failed: {e}"))
                        })
                        .sum()
                })
            });
        }
        prefill.finish();
        let mut decode = c.benchmark_group(format!("decode/{backend_id}"));
        decode
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        decode.throughput(Throughput::Elements(DECODE_TOKENS as u64 - 1));
        for s in &scenarios {
            let Ok(prompt) = prompt_ids(s, encode.as_ref()) else {
                continue;
            };
            decode.bench_function(BenchmarkId::from_parameter(s.name), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            backend
                                .generate(&prompt, DECODE_TOKENS)
                                .map(|g| ms(g.timings.decode_ms))
                                .unwrap_or_else(|e| panic!("{backend_id} decode failed: {e}"))
                        })
                        .sum()
                })
            });
        }
        decode.finish();
    }
}

criterion_group!(benches, phases);
criterion_main!(benches);
