//! The decode roofline on the decision card: per backend × scenario, median decode tokens/s against
//! the limit `bandwidth ÷ bytes read per token` (the machine's bandwidth measured in the run,
//! [`crate::roofline`]; the bytes from what the backend loaded, [`MemoryTraffic`]).
//!
//! Two findings say "check its configuration", and keep a backend out of the routing
//! recommendation — a ranking that a configuration choice explains is not a finding about engines:
//!
//! - **below the roofline**: decode runs under [`MIN_FRACTION`] of its limit;
//! - **slower than its fp32 parent**: a lower-precision variant of the same engine reads fewer bytes
//!   per token, so in decode (memory-bound at batch 1) it must not be slower than the fp32 model it
//!   was made from, on the same workload.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::analysis::{variant_of, LatencyRow};
use super::input::RunData;
use crate::backend::MemoryTraffic;
use crate::measure::{RunOutcome, RunPhase};
use crate::roofline::{BandwidthSample, BANDWIDTH_FILE};

/// A backend decoding below this fraction of its roofline is flagged. Measured here (2-core EPYC,
/// docs/performance.md): the deploy-form ONNX Runtime variants and llama.cpp run at 0.5–1.1 of
/// their limit; the fp32-zero-point 4-bit export that this flag exists for ran at 0.04.
pub const MIN_FRACTION: f64 = 0.25;

/// The bandwidth sample is trusted for the fraction check only on a machine no busier than this
/// many runnable threads per core it measured with (load average / threads). Measured here: under
/// a load of 16 on 2 cores the probe read 5.9 GB/s and every backend decoded at 1–30 % of its
/// limit, because decode suffers more from load than the probe does (docs/regression.md); the
/// fractions are then shown but not judged.
pub const MAX_LOAD_PER_THREAD: f64 = 1.0;

/// Bootstrap settings for the variant/parent ratio.
const LEVEL: f64 = 0.95;
const RESAMPLES: usize = 2000;
const SEED: u64 = 0x20f1;

/// A lower-precision variant's decode throughput against its fp32 parent's, same workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentComparison {
    pub parent: String,
    pub parent_tokens_per_s: f64,
    /// Median variant / median parent.
    pub ratio: f64,
    /// 95 % bootstrap CI of the ratio of medians, where both have enough runs.
    pub ci: Option<(f64, f64)>,
}

/// One backend × scenario: the longest generation measured (the most decode steps).
#[derive(Debug, Clone, PartialEq)]
pub struct RooflineRow {
    pub backend: String,
    pub scenario: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub runs: usize,
    pub decode_tokens_per_s: f64,
    pub traffic: Option<MemoryTraffic>,
    /// Weights + KV cache at the decode loop's mean context (prompt + gen/2 positions).
    pub bytes_per_token: Option<f64>,
    pub limit_tokens_per_s: Option<f64>,
    pub fraction: Option<f64>,
    /// Whether the fraction is judged against [`MIN_FRACTION`] (the bandwidth sample was taken on
    /// a machine no busier than [`MAX_LOAD_PER_THREAD`]).
    pub fraction_judged: bool,
    pub parent: Option<ParentComparison>,
}

impl RooflineRow {
    /// Why this row says "check its configuration" (empty: it does not).
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = self
            .fraction
            .filter(|f| self.fraction_judged && *f < MIN_FRACTION)
        {
            out.push(format!(
                "{} · {}: decode at {:.0} % of its roofline (below {:.0} %)",
                self.backend,
                self.scenario,
                f * 100.0,
                MIN_FRACTION * 100.0
            ));
        }
        if let Some(p) = self.parent.as_ref().filter(|p| p.ratio < 1.0) {
            out.push(format!(
                "{} · {}: decode {:.1} tok/s, slower than its fp32 parent `{}` ({:.1} tok/s, ×{:.2}) while reading fewer bytes per token",
                self.backend, self.scenario, self.decode_tokens_per_s, p.parent, p.parent_tokens_per_s, p.ratio
            ));
        }
        out
    }
}

/// The roofline of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Roofline {
    /// Every bandwidth sample of the run (several when shards were merged).
    pub bandwidth: Vec<BandwidthSample>,
    pub rows: Vec<RooflineRow>,
}

impl Roofline {
    /// From the run's bandwidth samples, its ok measured runs' memory traffic and the latency rows
    /// of the gate's own model (variants such as the scaling gate's synthetic shapes are left out).
    pub fn from_run(data: &RunData, rows: &[LatencyRow]) -> Self {
        let bandwidth: Vec<BandwidthSample> = data
            .bandwidth
            .iter()
            .filter(|s| s.gb_per_s.is_finite() && s.gb_per_s > 0.0)
            .cloned()
            .collect();
        let mut traffic: BTreeMap<&str, MemoryTraffic> = BTreeMap::new();
        for r in data
            .runs
            .iter()
            .filter(|r| r.phase == RunPhase::Measured && variant_of(r).is_empty())
        {
            if let RunOutcome::Ok(t) = &r.outcome {
                if let Some(m) = t.memory_traffic {
                    traffic.entry(r.backend.as_str()).or_insert(m);
                }
            }
        }
        let best = bandwidth
            .iter()
            .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s));
        let best_gb_per_s = best.map(|s| s.gb_per_s);
        let fraction_judged = best.is_some_and(quiet_enough);
        let own: Vec<&LatencyRow> = rows
            .iter()
            .filter(|r| r.variant.is_empty() && !r.decode_tokens_per_s.is_empty())
            .collect();
        // The longest generation per backend × scenario, in the latency rows' order.
        let mut chosen: Vec<&LatencyRow> = Vec::new();
        for r in &own {
            match chosen
                .iter_mut()
                .find(|c| c.backend == r.backend && c.scenario == r.scenario)
            {
                Some(c) if r.gen_tokens > c.gen_tokens => *c = r,
                Some(_) => {}
                None => chosen.push(r),
            }
        }
        let out = chosen
            .into_iter()
            .map(|r| {
                let traffic = traffic.get(r.backend.as_str()).copied();
                let positions = r.prompt_tokens as f64 + r.gen_tokens as f64 / 2.0;
                let bytes_per_token = traffic.map(|t| t.bytes_per_token(positions));
                let limit = match (best_gb_per_s, bytes_per_token) {
                    (Some(gb), Some(b)) if b > 0.0 => Some(gb * 1e9 / b),
                    _ => None,
                };
                let parent = crate::backend::registry::fp32_parent(&r.backend).and_then(|p| {
                    let pr = own.iter().find(|x| {
                        x.backend == p && x.scenario == r.scenario && x.gen_tokens == r.gen_tokens
                    })?;
                    let ci = crate::stats::ratio_of_medians_ci(
                        &r.decode_tokens_per_s,
                        &pr.decode_tokens_per_s,
                        LEVEL,
                        RESAMPLES,
                        SEED,
                    )
                    .ok()
                    .map(|ci| (ci.lo, ci.hi));
                    Some(ParentComparison {
                        parent: p.to_string(),
                        parent_tokens_per_s: pr.decode_tokens_per_s_median,
                        ratio: r.decode_tokens_per_s_median / pr.decode_tokens_per_s_median,
                        ci,
                    })
                });
                RooflineRow {
                    backend: r.backend.clone(),
                    scenario: r.scenario.clone(),
                    prompt_tokens: r.prompt_tokens,
                    gen_tokens: r.gen_tokens,
                    runs: r.decode_tokens_per_s.len(),
                    decode_tokens_per_s: r.decode_tokens_per_s_median,
                    traffic,
                    bytes_per_token,
                    limit_tokens_per_s: limit,
                    fraction: limit.map(|l| r.decode_tokens_per_s_median / l),
                    fraction_judged,
                    parent,
                }
            })
            .collect();
        Roofline {
            bandwidth,
            rows: out,
        }
    }

    /// The best bandwidth sample (GB/s): the limit is what the machine can do.
    pub fn best_bandwidth(&self) -> Option<&BandwidthSample> {
        self.bandwidth
            .iter()
            .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s))
    }

    /// Backend → every reason it says "check its configuration".
    pub fn flagged(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.rows {
            let f = r.findings();
            if !f.is_empty() {
                out.entry(r.backend.clone()).or_default().extend(f);
            }
        }
        out
    }

    /// The latency rows routing may use: those of backends without a finding.
    pub fn routable(&self, rows: &[LatencyRow]) -> Vec<LatencyRow> {
        let flagged = self.flagged();
        rows.iter()
            .filter(|r| !flagged.contains_key(&r.backend))
            .cloned()
            .collect()
    }
}

/// Whether a bandwidth sample was taken on a machine quiet enough to judge fractions by.
pub fn quiet_enough(s: &BandwidthSample) -> bool {
    s.load_average_1m
        .is_none_or(|l| l <= MAX_LOAD_PER_THREAD * s.threads.max(1) as f64)
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or("n/a".into(), f)
}

/// The card's roofline section.
pub fn section(md: &mut String, r: &Roofline) {
    let _ = writeln!(md, "## Decode roofline (memory bandwidth, this run)\n");
    match r.best_bandwidth() {
        Some(b) => {
            let load = b
                .load_average_1m
                .map_or(String::new(), |l| format!(", load average {l:.2}"));
            let _ = writeln!(
                md,
                "Bandwidth **{:.1} GB/s**: the best of {} sample(s) of the probe's streaming fp32 matrix-vector kernel ({} MiB streamed per timing, {} thread(s){load}). \
Limit = bandwidth ÷ bytes one decode step reads (the weights in their stored type, an embedding read by row gather counted as one row, plus the KV cache at the loop's mean context). \
A backend below {:.0} % of its limit, or a lower-precision variant slower than its fp32 parent in decode (it reads fewer bytes, and decode is memory-bound), is flagged **check its configuration** and left out of routing.\n",
                b.gb_per_s,
                r.bandwidth.len(),
                b.bytes_per_timing >> 20,
                b.threads,
                MIN_FRACTION * 100.0,
            );
            if !quiet_enough(b) {
                let _ = writeln!(
                    md,
                    "**The machine was busy when the bandwidth was measured** (load average {} on {} thread(s)): the fractions below are shown but not judged; run on a quiet machine to judge them. Variants are still compared with their fp32 parents (same run).\n",
                    b.load_average_1m.map_or("unknown".into(), |l| format!("{l:.2}")),
                    b.threads
                );
            }
        }
        None => {
            let _ = writeln!(md, "No bandwidth was measured in this run (`{BANDWIDTH_FILE}` is absent), so no limit can be drawn; variants are still compared with their fp32 parents.\n");
        }
    }
    if r.rows.is_empty() {
        let _ = writeln!(md, "No decode timings in this run.\n");
        return;
    }
    let _ = writeln!(md, "| backend | scenario | gen | runs | decode tok/s (median) | bytes/token | limit tok/s | of limit | vs fp32 parent | |");
    let _ = writeln!(
        md,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    );
    for row in &r.rows {
        let parent = row.parent.as_ref().map_or("—".to_string(), |p| {
            let ci =
                p.ci.map_or(String::new(), |(lo, hi)| format!(" [{lo:.2}, {hi:.2}]"));
            format!("×{:.2}{ci} vs `{}`", p.ratio, p.parent)
        });
        let flag = if row.findings().is_empty() {
            ""
        } else {
            "**check its configuration**"
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            row.backend,
            row.scenario,
            row.gen_tokens,
            row.runs,
            row.decode_tokens_per_s,
            opt(row.bytes_per_token, fmt_bytes),
            opt(row.limit_tokens_per_s, |v| format!("{v:.1}")),
            opt(row.fraction, |v| format!("{:.0} %", v * 100.0)),
            parent,
            flag
        );
    }
    md.push('\n');
    let unknown: Vec<&str> = {
        let mut v: Vec<&str> = r
            .rows
            .iter()
            .filter(|x| x.traffic.is_none())
            .map(|x| x.backend.as_str())
            .collect();
        v.dedup();
        v
    };
    if !unknown.is_empty() {
        let _ = writeln!(
            md,
            "No bytes-per-token for {}: the backend does not report what it loaded, so it has no limit here.\n",
            unknown
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let flagged = r.flagged();
    if flagged.is_empty() {
        let judged = r.rows.iter().any(|x| x.fraction_judged);
        let _ = writeln!(
            md,
            "No backend is flagged: {}no variant is slower than its fp32 parent.\n",
            if judged {
                format!(
                    "each runs at ≥ {:.0} % of its limit where one is known, and ",
                    MIN_FRACTION * 100.0
                )
            } else {
                String::new()
            }
        );
    } else {
        for (backend, reasons) in &flagged {
            let _ = writeln!(
                md,
                "- **`{backend}`: check its configuration** (not a routing candidate in this run): {}",
                reasons.join("; ")
            );
        }
        md.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;
    use crate::measure::{RunRecord, RunTimings};

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
        assert!(md.contains("No bandwidth was measured"), "{md}");
    }
}
