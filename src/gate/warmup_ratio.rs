//! `warmup.ratio` (TR117/TR120/TR121; conclusive report §3.7, §6.6, AA.4, §10.2 rule 4): cold start is
//! its own regime. `warmup_ratio = warmup_median / steady_median` per phase (prefill, decode, e2e);
//! a ratio above `flag_ratio` (10 in the report) flags **warm pool required**. Without `fail_ratio`
//! in the gate file the trial only reports (INFO, flag or not); with it, a flag-phase ratio above
//! `fail_ratio` FAILs and one at or below it PASSes.
//!
//! What "warmup" measures here: each of the profile's `warmup` runs is the **first generation on a
//! freshly opened backend** (a new ONNX Runtime session, a newly started llama-server), so the
//! warmup median is a median of real cold first requests, not of the second and third requests of
//! an already warm session. The steady runs are the profile's `repetitions` on the last of those
//! backends, after its cold run. Before the first timed open, the backend is opened once untimed and
//! dropped, so a one-off export of the model or first load of the runtime library is not counted as
//! cold start; the model file is then in the page cache. The ratio is therefore the cold first
//! request of a new worker on a warm host — a lower bound on a new host's cold start. The time to
//! open each backend (session creation, server start to health) is reported separately
//! (`open_ms_median`), never mixed into the run latencies. Warmup runs are labelled `warmup` in
//! `runs.jsonl` and excluded from every steady aggregate.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{median, Details, Evaluation, GateKind, Metrics, Part, Threshold, TrialContext};
use crate::measure::{measured_ok, run_series, RunPhase, RunRecord, RunTimings};
use crate::workload::prompt_ids;

pub const WARMUP_RATIO: &str = "warmup_ratio";

/// What the report reads: every phase's ratio and the flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupDetails {
    pub ratios: Vec<PhaseRatio>,
    pub warm_pool_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ms_median: Option<f64>,
}

/// A phase whose cold/steady ratio can raise the flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Prefill,
    Decode,
    E2e,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Prefill, Phase::Decode, Phase::E2e];
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
            Phase::E2e => "e2e",
        }
    }
    fn of(self, t: &RunTimings) -> f64 {
        match self {
            Phase::Prefill => t.prefill_ms,
            Phase::Decode => t.decode_ms,
            Phase::E2e => t.e2e_ms,
        }
    }
}

/// Parameters of the check, from the gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupRatioParams {
    pub gen_tokens: usize,
    /// A ratio above this flags "warm pool required" (§10.2 rule 4: 10).
    pub flag_ratio: f64,
    /// Phases whose ratio can raise the flag.
    pub flag_phases: Vec<Phase>,
    /// If set, a ratio above this (in a flag phase) fails the trial.
    #[serde(default)]
    pub fail_ratio: Option<f64>,
}

/// Cold/steady ratio of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseRatio {
    pub phase: Phase,
    pub warmup_median_ms: f64,
    pub steady_median_ms: f64,
    pub ratio: f64,
}

/// `warmup_median / steady_median` for every phase that has data in both sets.
pub fn phase_ratios(warmup: &[&RunTimings], steady: &[&RunTimings]) -> Vec<PhaseRatio> {
    Phase::ALL
        .iter()
        .filter_map(|&phase| {
            let w = median(&warmup.iter().map(|t| phase.of(t)).collect::<Vec<_>>())?;
            let s = median(&steady.iter().map(|t| phase.of(t)).collect::<Vec<_>>())?;
            (s > 0.0).then_some(PhaseRatio {
                phase,
                warmup_median_ms: w,
                steady_median_ms: s,
                ratio: w / s,
            })
        })
        .collect()
}

/// The flag-phase ratios above `threshold`.
pub fn above(ratios: &[PhaseRatio], phases: &[Phase], threshold: f64) -> Vec<PhaseRatio> {
    ratios
        .iter()
        .filter(|r| phases.contains(&r.phase) && r.ratio > threshold)
        .copied()
        .collect()
}

/// The trial's one part: the largest flag-phase ratio against `fail_ratio`, or, without one,
/// reported with the flag (INFO).
pub fn judge(ratios: &[PhaseRatio], p: &WarmupRatioParams) -> Part {
    let worst = ratios
        .iter()
        .filter(|r| p.flag_phases.contains(&r.phase))
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let Some(worst) = worst else {
        return Part::no_data(WARMUP_RATIO, "no flag phase has both cold and steady data");
    };
    let flagged = above(ratios, &p.flag_phases, p.flag_ratio);
    let flag = if flagged.is_empty() {
        format!(
            "no warm pool flag (every {} ratio ≤ {})",
            p.flag_phases
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join("/"),
            p.flag_ratio
        )
    } else {
        format!(
            "WARM POOL REQUIRED: {} above {} (§10.2 rule 4)",
            flagged
                .iter()
                .map(|r| format!("{} {:.1}×", r.phase.name(), r.ratio))
                .collect::<Vec<_>>()
                .join(", "),
            p.flag_ratio
        )
    };
    let detail = format!("largest flag-phase ratio ({}); {flag}", worst.phase.name());
    match p.fail_ratio {
        Some(f) => Part::compare(WARMUP_RATIO, worst.ratio, Threshold::at_most(f), detail),
        None => Part::reported(
            WARMUP_RATIO,
            Some(worst.ratio),
            format!(
                "{detail}; the gate file sets no fail_ratio, so the flag is reported, not asserted"
            ),
        ),
    }
}

impl GateKind for WarmupRatioParams {
    fn parts(&self) -> &'static [&'static str] {
        &[WARMUP_RATIO]
    }

    fn validate(&self, spec: &super::GateSpec) -> Result<(), String> {
        if spec.profiles.values().any(|p| p.warmup == 0) {
            return Err("warmup.ratio needs warmup ≥ 1 in every profile (the cold runs)".into());
        }
        Ok(())
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

fn evaluate(ctx: &TrialContext<'_>, p: &WarmupRatioParams) -> Evaluation {
    let Some(scenario) = ctx.scenario else {
        return Evaluation::error("warmup.ratio needs a scenario");
    };
    let cold_runs = ctx.profile.warmup;
    if cold_runs == 0 {
        return Evaluation::error(format!(
            "{}: the profile has warmup = 0; warmup.ratio needs at least one cold run",
            ctx.spec.path.display()
        ));
    }
    let prompt = match prompt_ids(&scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => {
            return Evaluation::error(format!("cannot build the `{}` prompt: {e}", scenario.name))
        }
    };
    let plan = |repetitions: usize| {
        let mut plan = ctx.series(None, scenario.name, prompt.clone(), p.gen_tokens);
        plan.warmup = 0;
        plan.repetitions = repetitions;
        plan
    };
    // Untimed preparation: exports, runtime load, page cache (see the module doc).
    drop(ctx.open());

    let mut records: Vec<RunRecord> = Vec::with_capacity(cold_runs + ctx.profile.repetitions);
    let mut open_ms = Vec::with_capacity(cold_runs);
    let mut backend = None;
    for i in 0..cold_runs {
        drop(backend.take()); // one backend in memory at a time
        let start = Instant::now();
        let mut opened = ctx.open();
        if opened.is_ok() {
            open_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        for mut r in run_series(&mut opened, &plan(1)) {
            r.index = i;
            r.phase = RunPhase::Warmup;
            records.push(r);
        }
        backend = Some(opened);
    }
    let Some(mut backend) = backend else {
        return Evaluation::error("no backend was opened");
    };
    for (j, mut r) in run_series(&mut backend, &plan(ctx.profile.repetitions))
        .into_iter()
        .enumerate()
    {
        r.index = cold_runs + j;
        records.push(r);
    }
    drop(backend);
    let stated = cold_runs + ctx.profile.repetitions;
    if let Err(e) = ctx.log(&records) {
        return Evaluation::error(e).with_runs(&records, stated);
    }

    let warm: Vec<&RunTimings> = records
        .iter()
        .filter(|r| r.phase == RunPhase::Warmup)
        .filter_map(RunRecord::timings)
        .collect();
    let steady = measured_ok(&records);
    if warm.is_empty() || steady.is_empty() {
        let why = records.iter().find_map(|r| r.outcome.not_ok_reason());
        let part = Part::no_data(
            WARMUP_RATIO,
            format!(
                "{} successful cold and {} successful steady runs: {}",
                warm.len(),
                steady.len(),
                why.unwrap_or_else(|| "no runs".into())
            ),
        );
        return Evaluation::judged(vec![part], String::new()).with_runs(&records, stated);
    }
    let ratios = phase_ratios(&warm, &steady);
    let flagged = !above(&ratios, &p.flag_phases, p.flag_ratio).is_empty();
    let mut metrics = Metrics::default();
    let open_median = median(&open_ms);
    if let Some(m) = open_median {
        metrics.insert("open_ms_median", m);
    }
    metrics.insert("warm_pool_required", f64::from(u8::from(flagged)));
    metrics.insert("cold_runs", warm.len() as f64);
    metrics.insert("steady_runs", steady.len() as f64);

    let describe = |r: &PhaseRatio| {
        format!(
            "{} {:.2}× ({:.1} ms cold / {:.1} ms steady)",
            r.phase.name(),
            r.ratio,
            r.warmup_median_ms,
            r.steady_median_ms
        )
    };
    let listed = ratios.iter().map(describe).collect::<Vec<_>>().join(", ");
    let open = open_median
        .map(|m| format!("; open {m:.0} ms median"))
        .unwrap_or_default();
    let summary = format!(
        "warmup/steady medians over {} cold first runs and {} steady runs: {listed}{open}",
        warm.len(),
        steady.len()
    );
    Evaluation::judged(vec![judge(&ratios, p)], summary)
        .with_runs(&records, stated)
        .with_metrics(metrics)
        .with_details(Details::Warmup(WarmupDetails {
            ratios,
            warm_pool_required: flagged,
            open_ms_median: open_median,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;

    fn t(prefill: f64, decode: f64) -> RunTimings {
        RunTimings {
            prompt_tokens: 8,
            gen_tokens: 16,
            prefill_ms: prefill,
            decode_ms: decode,
            e2e_ms: prefill + decode,
            decode_steps: 15,
            timing_source: TimingSource::Harness,
            cold_start_ms: None,
            cached_prompt_tokens: None,
            memory_traffic: None,
        }
    }

    #[test]
    fn a_cold_prefill_spike_flags_a_warm_pool_only_in_its_phase() {
        let warm = [t(300.0, 110.0), t(500.0, 90.0)];
        let steady = [t(10.0, 100.0), t(12.0, 100.0), t(14.0, 100.0)];
        let r = phase_ratios(
            &warm.iter().collect::<Vec<_>>(),
            &steady.iter().collect::<Vec<_>>(),
        );
        let prefill = r.iter().find(|x| x.phase == Phase::Prefill).unwrap();
        assert_eq!(
            (prefill.warmup_median_ms, prefill.steady_median_ms),
            (400.0, 12.0)
        );
        assert!((prefill.ratio - 400.0 / 12.0).abs() < 1e-12);
        assert_eq!(
            above(&r, &[Phase::Prefill, Phase::E2e], 10.0).len(),
            1,
            "prefill flags, e2e (≈4.4×) does not"
        );
        assert!(above(&r, &[Phase::E2e, Phase::Decode], 10.0).is_empty());
        assert!(above(&r, &[Phase::E2e], 4.0)
            .iter()
            .all(|x| x.phase == Phase::E2e));
    }

    #[test]
    fn a_warm_pool_flag_is_info_without_a_fail_ratio_and_fails_above_one() {
        use crate::gate::{verdict::derive, Outcome, Verdict};
        // Item 6: "WARM POOL REQUIRED" used to be a PASS.
        let warm = [t(300.0, 110.0), t(500.0, 90.0)];
        let steady = [t(10.0, 100.0), t(12.0, 100.0), t(14.0, 100.0)];
        let r = phase_ratios(
            &warm.iter().collect::<Vec<_>>(),
            &steady.iter().collect::<Vec<_>>(),
        );
        let mut p = WarmupRatioParams {
            gen_tokens: 8,
            flag_ratio: 10.0,
            flag_phases: vec![Phase::Prefill, Phase::E2e],
            fail_ratio: None,
        };
        let verdict = |p: &WarmupRatioParams| {
            derive(
                &Outcome::Judged {
                    parts: vec![judge(&r, p)],
                },
                "",
                &[],
            )
        };
        let (v, m, _) = verdict(&p);
        assert_eq!(v, Verdict::Info, "{m}");
        assert!(m.contains("WARM POOL REQUIRED"), "{m}");
        p.fail_ratio = Some(20.0);
        assert_eq!(verdict(&p).0, Verdict::Fail);
        p.fail_ratio = Some(50.0);
        assert_eq!(verdict(&p).0, Verdict::Pass);
    }

    #[test]
    fn no_ratio_without_both_sets() {
        let steady = [t(10.0, 100.0)];
        assert!(phase_ratios(&[], &steady.iter().collect::<Vec<_>>()).is_empty());
    }
}
