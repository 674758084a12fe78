//! `stats.distribution` (TR117's mean/median paradox; conclusive report §3.5, §3.10, AD.2–AD.3,
//! §10.2 rule 5): one number hides the tail, and one scenario does not make a winner.
//!
//! One trial measures every backend of the gate on every scenario of the gate (a fixed-length greedy
//! generation, warmup runs labelled and excluded) and reports the distribution of end-to-end latency
//! per backend × scenario: median, p95, p99, mean, n ([`crate::stats::summarize`], type-7
//! quantiles). A winner is claimed only from the scenario-aggregated comparison: the geometric mean
//! over scenarios of each backend's median ([`winner_claim`]), and only when the stratified
//! bootstrap CI of the ratio winner / runner-up excludes 1 with at least `min_runs_per_side`
//! (default 10) measured runs per backend × scenario and the runner-up is at least
//! `min_winner_margin` slower; otherwise "no winner" with the reason. Per-scenario bests are
//! routing hints, never the winner. Also flagged, not failed: a mean/median paradox (the ranking
//! by mean differs from the ranking by median).
//!
//! The trial reports (INFO): the distribution table is its `distribution` part (FAIL when a backend
//! that is present produced no successful measured run in some scenario), the winner its `winner`
//! part — reported, or asserted when the gate file sets `expect_winner`. Backends that are absent on
//! this machine are listed with their reason and left out of the comparison (never silently).
//!
//! The measurement helpers ([`prompts`], [`measure_backend`], [`backend_availability`]) are in
//! [`super::across_backends`], shared with `economics.cost`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::across_backends::{backend_availability, measure_backend, prompts, require_scenarios};
use super::{Details, Evaluation, GateKind, Part, Skip, SkipCause, Threshold, TrialContext, Unit};
use crate::stats::{geometric_mean, ratio_of_geomean_medians_ci, summarize, Interval, Summary};

pub const DISTRIBUTION: &str = "distribution";
pub const WINNER: &str = "winner";

fn ten() -> usize {
    10
}
fn confidence() -> f64 {
    0.95
}
fn resamples() -> usize {
    2000
}

/// What the report reads: the table and the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionDetails {
    pub cells: Vec<Cell>,
    pub winner: WinnerClaim,
    /// Backends of the gate that are absent here, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
}

/// Parameters of the check, from the gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributionParams {
    /// Generated tokens per run (EOS ignored).
    pub gen_tokens: usize,
    /// A winner needs `runner_up_geomean / winner_geomean − 1 ≥ min_winner_margin`.
    pub min_winner_margin: f64,
    /// A winner needs at least this many measured ok runs per backend × scenario (10).
    #[serde(default = "ten")]
    pub min_runs_per_side: usize,
    /// Confidence level of the winner's ratio CI (0.95).
    #[serde(default = "confidence")]
    pub confidence: f64,
    #[serde(default = "resamples")]
    pub resamples: usize,
    /// If set, the trial fails unless this backend is the claimed winner.
    #[serde(default)]
    pub expect_winner: Option<String>,
}

/// One backend × scenario cell of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub backend: String,
    pub scenario: String,
    /// End-to-end latency (ms) of the successful measured runs.
    pub e2e_ms: Summary,
}

/// Outcome of the scenario-aggregated comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum WinnerClaim {
    Winner {
        backend: String,
        geomean_ms: f64,
        runner_up: String,
        runner_up_geomean_ms: f64,
        margin: f64,
        /// CI of winner / runner-up geometric mean of medians (wholly below 1).
        ratio_ci: Interval,
    },
    NoClaim {
        reason: String,
    },
}

/// Per-backend geometric mean over `scenarios` of `value(backend, scenario)`; backends missing a
/// scenario are left out (a geomean over different scenario sets is not comparable).
pub fn scenario_geomeans(
    values: &BTreeMap<(String, String), f64>,
    backends: &[String],
    scenarios: &[String],
) -> Vec<(String, f64)> {
    backends
        .iter()
        .filter_map(|b| {
            let v: Option<Vec<f64>> = scenarios
                .iter()
                .map(|s| values.get(&(b.clone(), s.clone())).copied())
                .collect();
            v.and_then(|v| geometric_mean(&v).ok())
                .map(|g| (b.clone(), g))
        })
        .collect()
}

/// The winner (lowest latency) from the geometric mean over scenarios of each backend's median,
/// or why no winner can be claimed (§10.2 rule 5). `samples` holds the measured e2e ms per
/// backend × scenario.
pub fn winner_claim(
    samples: &BTreeMap<(String, String), Vec<f64>>,
    backends: &[String],
    scenarios: &[String],
    p: &DistributionParams,
) -> WinnerClaim {
    let no = |reason: String| WinnerClaim::NoClaim { reason };
    if scenarios.len() < 2 {
        return no(format!(
            "{} scenario(s) measured: a single-scenario win is a routing hint, not a winner (scenario aggregation required, §10.2 rule 5)",
            scenarios.len()
        ));
    }
    let medians: BTreeMap<(String, String), f64> = samples
        .iter()
        .filter_map(|(k, v)| crate::stats::median(v).ok().map(|m| (k.clone(), m)))
        .collect();
    let mut g = scenario_geomeans(&medians, backends, scenarios);
    if g.len() < 2 {
        return no(format!(
            "{} backend(s) with data in every scenario: nothing to compare",
            g.len()
        ));
    }
    g.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let (best, runner_up) = (&g[0], &g[1]);
    let groups = |b: &str| -> Vec<Vec<f64>> {
        scenarios
            .iter()
            .map(|s| {
                samples
                    .get(&(b.to_string(), s.clone()))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    let (a, b) = (groups(&best.0), groups(&runner_up.0));
    let n = a.iter().chain(&b).map(Vec::len).min().unwrap_or(0);
    if n < p.min_runs_per_side {
        return no(format!(
            "{} ({:.1} ms) leads {} ({:.1} ms), but with n = {n} measured runs in its smallest backend × scenario cell (< {} per side) no ratio CI can back a winner; the full profile measures enough",
            best.0, best.1, runner_up.0, runner_up.1, p.min_runs_per_side
        ));
    }
    let ci = match ratio_of_geomean_medians_ci(&a, &b, p.confidence, p.resamples, 0x5eed_d157) {
        Ok(ci) => ci,
        Err(e) => {
            return no(format!(
                "no CI of the ratio {} / {}: {e}",
                best.0, runner_up.0
            ))
        }
    };
    if !ci.is_below(1.0) {
        return no(format!(
            "{} / {} = {:.3}, {:.0} % CI [{:.3}, {:.3}] includes 1: no winner",
            best.0,
            runner_up.0,
            ci.point,
            100.0 * ci.level,
            ci.lo,
            ci.hi
        ));
    }
    let margin = runner_up.1 / best.1 - 1.0;
    if margin.is_nan() || margin < p.min_winner_margin {
        return no(format!(
            "{} ({:.1} ms) and {} ({:.1} ms) are within {:.1} % (< {:.1} % margin): no winner",
            best.0,
            best.1,
            runner_up.0,
            runner_up.1,
            100.0 * margin,
            100.0 * p.min_winner_margin
        ));
    }
    WinnerClaim::Winner {
        backend: best.0.clone(),
        geomean_ms: best.1,
        runner_up: runner_up.0.clone(),
        runner_up_geomean_ms: runner_up.1,
        margin,
        ratio_ci: ci,
    }
}

/// Backends ordered by the geometric mean over scenarios of `values` (lowest first).
fn ranking(
    values: &BTreeMap<(String, String), f64>,
    backends: &[String],
    scenarios: &[String],
) -> Vec<String> {
    let mut g = scenario_geomeans(values, backends, scenarios);
    g.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    g.into_iter().map(|(b, _)| b).collect()
}

impl GateKind for DistributionParams {
    fn parts(&self) -> &'static [&'static str] {
        &[DISTRIBUTION, WINNER]
    }

    fn units(&self, backends: &[String]) -> Vec<Unit> {
        vec![Unit::all(backends)]
    }

    fn aggregates_scenarios(&self) -> bool {
        true
    }

    fn validate(&self, spec: &super::GateSpec) -> Result<(), String> {
        require_scenarios(spec)?;
        if let Some(w) = self
            .expect_winner
            .as_ref()
            .filter(|w| !spec.backends.contains(w))
        {
            return Err(format!(
                "expect_winner `{w}` is not one of the gate's backends"
            ));
        }
        crate::stats::bootstrap::check_resamples(self.confidence, self.resamples)
            .map_err(|e| e.to_string())
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

/// The `winner` part: asserted when the gate file names the expected winner, else reported.
pub fn winner_part(claim: &WinnerClaim, expect: Option<&str>) -> Part {
    let text = match claim {
        WinnerClaim::Winner {
            backend,
            geomean_ms,
            runner_up,
            runner_up_geomean_ms,
            margin,
            ratio_ci,
        } => format!(
            "winner on the geometric mean of medians: {backend} {geomean_ms:.1} ms (runner-up {runner_up} {runner_up_geomean_ms:.1} ms, +{:.0} %; ratio {:.3}, {:.0} % CI [{:.3}, {:.3}])",
            100.0 * margin,
            ratio_ci.point,
            100.0 * ratio_ci.level,
            ratio_ci.lo,
            ratio_ci.hi
        ),
        WinnerClaim::NoClaim { reason } => format!("no winner claimed: {reason}"),
    };
    match expect {
        None => Part::reported(WINNER, None, text),
        Some(expected) => {
            let is = matches!(claim, WinnerClaim::Winner { backend, .. } if backend == expected);
            Part::compare(
                WINNER,
                f64::from(u8::from(is)),
                Threshold::equal(1.0),
                format!("expected winner {expected}; {text}"),
            )
        }
    }
}

fn evaluate(ctx: &TrialContext<'_>, p: &DistributionParams) -> Evaluation {
    let prompts = match prompts(ctx) {
        Ok(p) => p,
        Err(e) => return Evaluation::error(e),
    };
    let scenarios: Vec<String> = prompts.iter().map(|(s, _)| s.name.to_string()).collect();
    let mut all_records = Vec::new();
    let mut absent = Vec::new();
    let mut missing = Vec::new();
    let mut cells = Vec::new();
    let mut samples: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut measured_backends = Vec::new();
    for (backend, availability) in backend_availability(ctx) {
        if let Err(reason) = availability {
            absent.push(reason);
            continue;
        }
        let runs = match measure_backend(
            ctx,
            ctx.backends.open(&backend),
            &prompts,
            p.gen_tokens,
            |_, run| run(),
        ) {
            Ok(r) => r,
            Err(e) => return Evaluation::error(e).with_runs(&all_records, all_records.len()),
        };
        measured_backends.push(backend.clone());
        for r in &runs {
            all_records.extend(r.records.iter().cloned());
            let e2e: Vec<f64> = r.ok().iter().map(|t| t.e2e_ms).collect();
            match summarize(&e2e) {
                Ok(summary) => {
                    cells.push(Cell {
                        backend: backend.clone(),
                        scenario: r.scenario.into(),
                        e2e_ms: summary,
                    });
                    samples.insert((backend.clone(), r.scenario.to_string()), e2e);
                }
                Err(_) => missing.push(format!(
                    "{backend} × {}: no successful measured run ({})",
                    r.scenario,
                    r.first_problem().unwrap_or_else(|| "no runs".into())
                )),
            }
        }
    }
    if measured_backends.is_empty() {
        return Evaluation::skip(Skip::new(
            SkipCause::BackendAbsent,
            format!("no backend of the gate is available: {}", absent.join("; ")),
        ));
    }
    // What the plan states: every measured backend × scenario × (warmup + repetitions).
    let stated =
        measured_backends.len() * prompts.len() * (ctx.profile.warmup + ctx.profile.repetitions);
    let key = |c: &Cell| (c.backend.clone(), c.scenario.clone());
    let medians: BTreeMap<_, _> = cells.iter().map(|c| (key(c), c.e2e_ms.median)).collect();
    let means: BTreeMap<_, _> = cells.iter().map(|c| (key(c), c.e2e_ms.mean)).collect();

    let claim = winner_claim(&samples, &measured_backends, &scenarios, p);
    let mut notes = Vec::new();
    // Per-scenario winners: routing hints only.
    let bests: Vec<(&String, &String, f64)> = scenarios
        .iter()
        .filter_map(|s| {
            measured_backends
                .iter()
                .filter_map(|b| medians.get(&(b.clone(), s.clone())).map(|m| (s, b, *m)))
                .min_by(|a, b| a.2.total_cmp(&b.2))
        })
        .collect();
    let hints: Vec<String> = bests
        .iter()
        .map(|(s, b, m)| format!("{s}: {b} {m:.1} ms"))
        .collect();
    if let WinnerClaim::Winner { backend, .. } = &claim {
        let differing: Vec<String> = bests
            .iter()
            .filter(|(_, b, _)| *b != backend)
            .map(|(s, b, _)| format!("{b} in {s}"))
            .collect();
        if !differing.is_empty() {
            notes.push(format!("single-scenario wins by other backends ({}) are routing hints, not a global winner", differing.join(", ")));
        }
    }
    let by_median = ranking(&medians, &measured_backends, &scenarios);
    let by_mean = ranking(&means, &measured_backends, &scenarios);
    if by_median.len() >= 2 && by_median != by_mean {
        notes.push(format!(
            "mean/median paradox (TR117): ranking by median {} vs by mean {} — the tail differs",
            by_median.join(" < "),
            by_mean.join(" < ")
        ));
    }
    if !absent.is_empty() {
        notes.push(format!("not compared: {}", absent.join("; ")));
    }

    let table: Vec<String> = measured_backends
        .iter()
        .map(|b| {
            let per_scenario: Vec<String> = cells
                .iter()
                .filter(|c| &c.backend == b)
                .map(|c| {
                    let s = &c.e2e_ms;
                    format!(
                        "{} {:.1}/{:.1}/{:.1}/{:.1} n={}",
                        c.scenario, s.median, s.p95, s.p99, s.mean, s.n
                    )
                })
                .collect();
            format!("{b}: {}", per_scenario.join(", "))
        })
        .collect();
    let expected_cells = measured_backends.len() * scenarios.len();
    let distribution = if missing.is_empty() {
        Part::compare(
            DISTRIBUTION,
            cells.len() as f64,
            Threshold::equal(expected_cells as f64),
            "backend × scenario cells with a distribution (median, p95, p99, mean, n)",
        )
    } else {
        Part::no_data(DISTRIBUTION, missing.join("; "))
    };
    let parts = vec![
        distribution,
        winner_part(&claim, p.expect_winner.as_deref()),
    ];
    let summary = format!(
        "e2e ms (median/p95/p99/mean) at {} generated tokens — {}; per-scenario bests (routing hints): {}{}",
        p.gen_tokens,
        table.join("; "),
        hints.join(", "),
        if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
    );
    Evaluation::judged(parts, summary)
        .with_runs(&all_records, stated)
        .with_details(Details::Distribution(DistributionDetails {
            cells,
            winner: claim,
            absent,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, f64)]) -> BTreeMap<(String, String), f64> {
        rows.iter()
            .map(|(b, s, v)| ((b.to_string(), s.to_string()), *v))
            .collect()
    }
    /// n runs around each median (±1 %).
    fn runs(rows: &[(&str, &str, f64)], n: usize) -> BTreeMap<(String, String), Vec<f64>> {
        rows.iter()
            .map(|(b, s, v)| {
                let xs = (0..n)
                    .map(|i| v * (1.0 + 0.01 * ((i % 3) as f64 - 1.0)))
                    .collect();
                ((b.to_string(), s.to_string()), xs)
            })
            .collect()
    }
    fn params() -> DistributionParams {
        DistributionParams {
            gen_tokens: 8,
            min_winner_margin: 0.05,
            min_runs_per_side: 10,
            confidence: 0.95,
            resamples: 2000,
            expect_winner: None,
        }
    }
    fn names(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_winner_from_a_single_scenario() {
        let m = runs(&[("a", "micro", 10.0), ("b", "micro", 50.0)], 12);
        let c = winner_claim(&m, &names(&["a", "b"]), &names(&["micro"]), &params());
        assert!(
            matches!(&c, WinnerClaim::NoClaim { reason } if reason.contains("routing hint")),
            "{c:?}"
        );
    }

    #[test]
    fn the_winner_comes_from_the_geomean_not_from_one_scenario() {
        // a wins micro by far, b wins the other three modestly: the aggregate favours b.
        let rows = [
            ("a", "micro", 10.0),
            ("a", "short", 120.0),
            ("a", "medium", 130.0),
            ("a", "long", 140.0),
            ("b", "micro", 40.0),
            ("b", "short", 50.0),
            ("b", "medium", 55.0),
            ("b", "long", 60.0),
        ];
        let s = names(&["micro", "short", "medium", "long"]);
        // Item 6: at n = 3 (the CI profile) no winner is named, however clear the medians.
        let few = winner_claim(&runs(&rows, 3), &names(&["a", "b"]), &s, &params());
        assert!(
            matches!(&few, WinnerClaim::NoClaim { reason } if reason.contains("n = 3")),
            "{few:?}"
        );
        let m = runs(&rows, 12);
        match winner_claim(&m, &names(&["a", "b"]), &s, &params()) {
            WinnerClaim::Winner {
                backend,
                runner_up,
                margin,
                ratio_ci,
                ..
            } => {
                assert_eq!((backend.as_str(), runner_up.as_str()), ("b", "a"));
                assert!(margin > 0.05 && ratio_ci.hi < 1.0);
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn a_close_race_or_incomplete_data_claims_nothing() {
        let s = names(&["micro", "long"]);
        let close = runs(
            &[
                ("a", "micro", 10.0),
                ("a", "long", 20.0),
                ("b", "micro", 10.2),
                ("b", "long", 20.2),
            ],
            12,
        );
        assert!(matches!(
            winner_claim(&close, &names(&["a", "b"]), &s, &params()),
            WinnerClaim::NoClaim { .. }
        ));
        // b lacks `long`: it is not comparable, leaving one backend.
        let partial = [
            ("a", "micro", 10.0),
            ("a", "long", 20.0),
            ("b", "micro", 1.0),
        ];
        assert!(matches!(
            winner_claim(&runs(&partial, 12), &names(&["a", "b"]), &s, &params()),
            WinnerClaim::NoClaim { .. }
        ));
        assert_eq!(
            scenario_geomeans(&table(&partial), &names(&["a", "b"]), &s).len(),
            1
        );
    }

    #[test]
    fn the_runner_plans_one_trial_across_backends_and_scenarios() {
        let dir = tempfile::tempdir().unwrap();
        let gate = |id: &str, backends: &str, check: &str| {
            format!(
                "id = \"{id}\"\nclaim = \"c\"\nsource = \"s\"\nmodel = \"smollm2-135m-instruct\"\nbackends = [{backends}]\n\
                 scenarios = [\"micro\", \"long\"]\n[profiles.ci]\nwarmup = 1\nrepetitions = 2\n[profiles.full]\nwarmup = 1\nrepetitions = 2\n\
                 [check]\n{check}\n"
            )
        };
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "a.toml",
            gate(
                "stats.distribution",
                "\"ort-cpu\", \"llama-cpp\"",
                "kind = \"distribution\"\ngen_tokens = 8\nmin_winner_margin = 0.05",
            ),
        );
        write(
            "b.toml",
            gate("warmup.ratio", "\"ort-cpu\", \"llama-cpp\"", "kind = \"warmup_ratio\"\ngen_tokens = 8\nflag_ratio = 10.0\nflag_phases = [\"e2e\"]"),
        );
        let mut config = crate::runner::RunnerConfig::from_env(dir.path(), "ci");
        config.gates_dir = dir.path().to_path_buf();
        config.profile = "ci".into();
        let runner = crate::runner::Runner::new(config).unwrap();
        let names: Vec<String> = runner
            .plan()
            .into_iter()
            .map(|p| p.id.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "stats.distribution::ort-cpu+llama-cpp",
                "warmup.ratio::ort-cpu::micro",
                "warmup.ratio::ort-cpu::long",
                "warmup.ratio::llama-cpp::micro",
                "warmup.ratio::llama-cpp::long"
            ]
        );
    }

    #[test]
    fn geomean_is_the_scenario_aggregate() {
        let m = table(&[("a", "x", 2.0), ("a", "y", 8.0)]);
        let g = scenario_geomeans(&m, &names(&["a"]), &names(&["x", "y"]));
        assert!((g[0].1 - 4.0).abs() < 1e-12);
    }
}
