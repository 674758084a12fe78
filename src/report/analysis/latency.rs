//! Per backend × scenario latency distributions (measured runs only, medians and type-7
//! percentiles), the decode fraction per backend, and the routing recommendation (scenarios
//! combined by geometric mean, §3.10).

use std::collections::BTreeMap;

use crate::measure::{RunOutcome, RunPhase, RunRecord};
use crate::stats;

/// Decision card routing triggers (conclusive report, Operational Defaults).
pub const DECODE_HEAVY_GEN_TOKENS: usize = 64;
pub const DECODE_HEAVY_FRACTION: f64 = 0.9;

/// Distribution of one backend × scenario × generation length (measured ok runs).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub backend: String,
    pub scenario: String,
    /// The run's sub-series: a model variant such as the scaling gate's `l4-d384` shapes, a
    /// negative control, a re-measurement. Empty for the trial's own series on the gate's model.
    pub variant: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// e2e_ms of every measured ok run, in record order.
    pub e2e_ms: Vec<f64>,
    pub e2e: stats::Summary,
    pub prefill_ms_median: f64,
    pub decode_ms_median: f64,
    pub decode_fraction_median: f64,
    /// Per-run decode tokens/s (decode steps over the decode loop).
    pub decode_tokens_per_s: Vec<f64>,
    pub decode_tokens_per_s_median: f64,
}

impl LatencyRow {
    /// Decision card: decode-heavy if gen_tokens ≥ 64 or decode fraction > 0.9.
    pub fn decode_heavy(&self) -> bool {
        self.gen_tokens >= DECODE_HEAVY_GEN_TOKENS
            || self.decode_fraction_median > DECODE_HEAVY_FRACTION
    }
}

fn scenario_rank(name: &str) -> usize {
    crate::workload::SCENARIOS
        .iter()
        .position(|s| s.name == name)
        .unwrap_or(usize::MAX)
}

fn backend_rank(id: &str) -> usize {
    crate::backend::registry::known_ids()
        .iter()
        .position(|b| *b == id)
        .unwrap_or(usize::MAX)
}

/// The record's sub-series (empty for the trial's own series on the gate's model).
pub fn variant_of(r: &RunRecord) -> String {
    r.sub_series.clone().unwrap_or_default()
}

/// One row per backend × scenario × gen_tokens × variant with at least one measured ok run.
pub fn latency_rows(runs: &[RunRecord]) -> Vec<LatencyRow> {
    type Key = (usize, String, String, usize, String, usize);
    let mut groups: BTreeMap<Key, Vec<&crate::measure::RunTimings>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.phase == RunPhase::Measured) {
        if let RunOutcome::Ok(t) = &r.outcome {
            let key = (
                backend_rank(&r.backend),
                r.backend.clone(),
                variant_of(r),
                scenario_rank(&r.scenario),
                r.scenario.clone(),
                t.gen_tokens,
            );
            groups.entry(key).or_default().push(t);
        }
    }
    let med = |xs: &[f64]| stats::median(xs).unwrap_or(f64::NAN);
    groups
        .into_iter()
        .filter_map(|((_, backend, variant, _, scenario, gen_tokens), ts)| {
            let e2e_ms: Vec<f64> = ts.iter().map(|t| t.e2e_ms).collect();
            let e2e = stats::summarize(&e2e_ms).ok()?;
            let col = |f: fn(&crate::measure::RunTimings) -> f64| {
                ts.iter().map(|t| f(t)).collect::<Vec<f64>>()
            };
            let tps: Vec<f64> = col(|t| t.decode_tokens_per_s())
                .into_iter()
                .filter(|v| v.is_finite() && *v > 0.0)
                .collect();
            Some(LatencyRow {
                prompt_tokens: ts[0].prompt_tokens,
                prefill_ms_median: med(&col(|t| t.prefill_ms)),
                decode_ms_median: med(&col(|t| t.decode_ms)),
                decode_fraction_median: med(&col(|t| t.decode_fraction())),
                decode_tokens_per_s_median: med(&tps),
                decode_tokens_per_s: tps,
                backend,
                scenario,
                variant,
                gen_tokens,
                e2e_ms,
                e2e,
            })
        })
        .collect()
}

/// Decode fraction of one backend at one generation length, over its scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeFractionRow {
    pub backend: String,
    pub gen_tokens: usize,
    pub scenarios: Vec<String>,
    pub runs: usize,
    /// Smallest and largest per-scenario median.
    pub min_median: f64,
    pub max_median: f64,
    /// Geometric mean over scenarios of the per-scenario medians.
    pub geomean_median: f64,
    /// Geometric mean over scenarios of the median decode tokens/s.
    pub decode_tokens_per_s_geomean: f64,
}

/// Per backend and generation length, over the gate's own model (variants such as the scaling
/// gate's synthetic shapes are left out: they are not the model being deployed).
pub fn decode_fraction_rows(rows: &[LatencyRow]) -> Vec<DecodeFractionRow> {
    let mut groups: BTreeMap<(usize, String, usize), Vec<&LatencyRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.variant.is_empty()) {
        groups
            .entry((backend_rank(&r.backend), r.backend.clone(), r.gen_tokens))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((_, backend, gen_tokens), rs)| {
            let meds: Vec<f64> = rs.iter().map(|r| r.decode_fraction_median).collect();
            let tps: Vec<f64> = rs.iter().map(|r| r.decode_tokens_per_s_median).collect();
            DecodeFractionRow {
                backend,
                gen_tokens,
                scenarios: rs.iter().map(|r| r.scenario.clone()).collect(),
                runs: rs.iter().map(|r| r.e2e.n).sum(),
                min_median: meds.iter().copied().fold(f64::INFINITY, f64::min),
                max_median: meds.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                geomean_median: stats::geometric_mean(&meds).unwrap_or(f64::NAN),
                decode_tokens_per_s_geomean: stats::geometric_mean(&tps).unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// What the data supports for routing, in sentences, with the numbers behind them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Routing {
    /// The decode-heavy route: the best decode backend, or why none can be named.
    pub decode_heavy: String,
    /// The prefill-heavy route (batch > 1 with minimal decode).
    pub prefill_heavy: String,
    /// How each measured workload classifies, e.g. `ort-cpu · short · gen 64: decode-heavy (...)`.
    pub classification: Vec<String>,
}

/// Bootstrap settings for the winner's ratio-of-medians CI.
const LEVEL: f64 = 0.95;
const RESAMPLES: usize = 2000;
const SEED: u64 = 0x1f_2026;

/// Decision card: decode-heavy → the backend with the highest decode throughput (geometric mean
/// over the scenarios every candidate measured), checked scenario by scenario with a 95 % CI of the
/// ratio of median decode tokens/s against the runner-up. Only the gate's own model counts.
pub fn routing(rows: &[LatencyRow]) -> Routing {
    let rows: Vec<&LatencyRow> = rows.iter().filter(|r| r.variant.is_empty()).collect();
    let classification = rows
        .iter()
        .map(|r| {
            let why = format!(
                "gen_tokens {} {} {DECODE_HEAVY_GEN_TOKENS}, median decode fraction {:.3} {} {DECODE_HEAVY_FRACTION}",
                r.gen_tokens,
                if r.gen_tokens >= DECODE_HEAVY_GEN_TOKENS { "≥" } else { "<" },
                r.decode_fraction_median,
                if r.decode_fraction_median > DECODE_HEAVY_FRACTION { ">" } else { "≤" },
            );
            let class = if r.decode_heavy() { "decode-heavy" } else { "not decode-heavy" };
            format!("{} · {} · gen {}: {class} ({why})", r.backend, r.scenario, r.gen_tokens)
        })
        .collect();
    let heavy: Vec<&LatencyRow> = rows
        .iter()
        .copied()
        .filter(|r| r.decode_heavy() && !r.decode_tokens_per_s.is_empty())
        .collect();
    let mut backends: Vec<&str> = heavy.iter().map(|r| r.backend.as_str()).collect();
    backends.sort_by_key(|b| backend_rank(b));
    backends.dedup();
    let decode_heavy = match backends.as_slice() {
        [] => "No decode-heavy workload was measured in this run (none with gen_tokens ≥ 64 or decode fraction > 0.9): no decode route can be recommended.".to_string(),
        [only] => format!(
            "Only `{only}` was measured on decode-heavy workloads ({}); it is the route by default, not by comparison. Add backends to `phase.decode_fraction` to compare.",
            decode_tps_text(heavy.iter().copied().filter(|r| r.backend == *only))
        ),
        many => compare_decode(&heavy, many),
    };
    let batched = rows
        .iter()
        .filter(|r| crate::workload::scenario(&r.scenario).is_some_and(|s| s.batch > 1))
        .count();
    let prefill_heavy = if batched == 0 {
        "No prefill-heavy workload (batch > 1 with minimal decode) was measured in this run: the prefill-heavy route is not evaluated."
            .to_string()
    } else {
        format!(
            "{batched} batched workload(s) measured; compare their prefill medians in the latency table before routing prefill-heavy work."
        )
    };
    Routing {
        decode_heavy,
        prefill_heavy,
        classification,
    }
}

fn decode_tps_text<'a>(rows: impl Iterator<Item = &'a LatencyRow>) -> String {
    rows.map(|r| {
        format!(
            "{} gen {}: {:.1} tok/s",
            r.scenario, r.gen_tokens, r.decode_tokens_per_s_median
        )
    })
    .collect::<Vec<_>>()
    .join(", ")
}

fn compare_decode(heavy: &[&LatencyRow], backends: &[&str]) -> String {
    // Workloads (scenario, gen_tokens) that every candidate measured.
    let workloads_of = |b: &str| {
        heavy
            .iter()
            .filter(|r| r.backend == b)
            .map(|r| (r.scenario.clone(), r.gen_tokens))
            .collect::<Vec<_>>()
    };
    let mut common = workloads_of(backends[0]);
    for b in &backends[1..] {
        let theirs = workloads_of(b);
        common.retain(|w| theirs.contains(w));
    }
    if common.is_empty() {
        return format!(
            "Decode-heavy backends {} share no workload (scenario × gen_tokens), so no comparison is supported: run them on the same scenarios.",
            backends.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
        );
    }
    let row = |b: &str, w: &(String, usize)| {
        heavy
            .iter()
            .copied()
            .find(|r| r.backend == b && r.scenario == w.0 && r.gen_tokens == w.1)
    };
    let mut ranked: Vec<(&str, f64)> = backends
        .iter()
        .map(|b| {
            let meds: Vec<f64> = common
                .iter()
                .filter_map(|w| row(b, w))
                .map(|r| r.decode_tokens_per_s_median)
                .collect();
            (*b, stats::geometric_mean(&meds).unwrap_or(f64::NAN))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (best, best_tps) = ranked[0];
    let (second, second_tps) = ranked[1];
    let mut clear = 0;
    let mut detail = Vec::new();
    for w in &common {
        let (Some(a), Some(b)) = (row(best, w), row(second, w)) else {
            continue;
        };
        match stats::ratio_of_medians_ci(
            &a.decode_tokens_per_s,
            &b.decode_tokens_per_s,
            LEVEL,
            RESAMPLES,
            SEED,
        ) {
            Ok(ci) => {
                if ci.lo > 1.0 {
                    clear += 1;
                }
                detail.push(format!(
                    "{} gen {}: ×{:.2} [{:.2}, {:.2}]",
                    w.0, w.1, ci.point, ci.lo, ci.hi
                ));
            }
            Err(e) => detail.push(format!("{} gen {}: no CI ({e})", w.0, w.1)),
        }
    }
    let ranking = ranked
        .iter()
        .map(|(b, t)| format!("`{b}` {t:.1} tok/s"))
        .collect::<Vec<_>>()
        .join(" > ");
    let verdict = if clear == common.len() {
        format!("route decode-heavy work to `{best}`: faster than `{second}` on every shared workload (95 % CI of the ratio of median decode tok/s above 1)")
    } else {
        format!(
            "`{best}` leads `{second}` ({best_tps:.1} vs {second_tps:.1} tok/s) but the lead is clear (95 % CI above 1) on only {clear} of {} shared workloads: not a supported routing change",
            common.len()
        )
    };
    format!("Decode throughput, geometric mean over {} shared workload(s): {ranking}. Ratio best / runner-up per workload: {}. Verdict: {verdict}.", common.len(), detail.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;
    use crate::gate::TrialId;
    use crate::measure::RunTimings;

    fn ok(
        backend: &str,
        scenario: &str,
        gen: usize,
        prefill: f64,
        decode: f64,
        phase: RunPhase,
    ) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            trial: TrialId::new("g", crate::gate::Unit::backend(backend), Some(scenario)),
            sub_series: None,
            backend: backend.into(),
            scenario: scenario.into(),
            index: 0,
            phase,
            started_unix_ms: 0,
            outcome: RunOutcome::Ok(RunTimings {
                prompt_tokens: 8,
                gen_tokens: gen,
                prefill_ms: prefill,
                decode_ms: decode,
                e2e_ms: prefill + decode,
                decode_steps: gen - 1,
                timing_source: TimingSource::Harness,
                cold_start_ms: None,
                cached_prompt_tokens: None,
                memory_traffic: None,
            }),
        }
    }

    #[test]
    fn warmup_and_degraded_runs_never_enter_a_distribution() {
        let mut runs = vec![
            ok("ort-cpu", "short", 64, 10.0, 90.0, RunPhase::Measured),
            ok("ort-cpu", "short", 64, 10.0, 190.0, RunPhase::Measured),
            ok("ort-cpu", "short", 64, 1000.0, 9000.0, RunPhase::Warmup),
        ];
        runs.push(RunRecord {
            outcome: RunOutcome::Degraded { reason: "x".into() },
            ..runs[0].clone()
        });
        let rows = latency_rows(&runs);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].e2e.n, 2);
        assert_eq!(rows[0].e2e.median, 150.0);
        // Per-run fractions 90/100 and 190/200: the median of 0.90 and 0.95.
        assert!(
            (rows[0].decode_fraction_median - 0.925).abs() < 1e-12,
            "{}",
            rows[0].decode_fraction_median
        );
    }

    #[test]
    fn one_backend_is_the_route_by_default_and_a_clear_winner_is_named() {
        // Six measured decode-heavy runs of `backend`, decode times from `base_ms` up.
        let six = |backend: &str, base_ms: f64| -> Vec<RunRecord> {
            (0..6)
                .map(|i| {
                    ok(
                        backend,
                        "short",
                        64,
                        10.0,
                        base_ms + i as f64,
                        RunPhase::Measured,
                    )
                })
                .collect()
        };
        let mut runs = six("ort-cpu", 100.0);
        let r = routing(&latency_rows(&runs));
        assert!(
            r.decode_heavy.contains("Only `ort-cpu`"),
            "{}",
            r.decode_heavy
        );
        assert!(r.prefill_heavy.contains("not evaluated"));
        // A second backend, twice as fast at decode, on the same workload.
        runs.extend(six("llama-cpp", 50.0));
        let r = routing(&latency_rows(&runs));
        assert!(
            r.decode_heavy
                .contains("route decode-heavy work to `llama-cpp`"),
            "{}",
            r.decode_heavy
        );
        // Equal backends: the lead is not clear.
        let tie: Vec<RunRecord> = six("ort-cpu", 100.0)
            .into_iter()
            .zip(six("llama-cpp", 100.0))
            .flat_map(|(a, b)| [a, b])
            .collect();
        let r = routing(&latency_rows(&tie));
        assert!(
            r.decode_heavy.contains("not a supported routing change"),
            "{}",
            r.decode_heavy
        );
    }

    #[test]
    fn short_generation_with_low_decode_fraction_is_not_decode_heavy() {
        let rows = latency_rows(&[ok("ort-cpu", "long", 16, 50.0, 50.0, RunPhase::Measured)]);
        assert!(!rows[0].decode_heavy());
        assert!(routing(&rows)
            .decode_heavy
            .starts_with("No decode-heavy workload"));
    }

    #[test]
    fn a_sub_series_is_a_variant_and_it_stays_out_of_routing() {
        let mut shape = ok("ort-cpu", "short", 64, 10.0, 10.0, RunPhase::Measured);
        shape.sub_series = Some("l4-d384".into());
        assert_eq!(variant_of(&shape), "l4-d384");
        let own = ok("ort-cpu", "short", 64, 10.0, 100.0, RunPhase::Measured);
        assert_eq!(variant_of(&own), "");
        let rows = latency_rows(&[shape, own]);
        assert_eq!(
            rows.len(),
            2,
            "a shape never shares a row with the real model"
        );
        assert_eq!(decode_fraction_rows(&rows).len(), 1);
        assert_eq!(routing(&rows).classification.len(), 1);
    }
}
