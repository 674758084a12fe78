//! `energy.gating` (TR122; conclusive C6, C10, §3.8, §8.4): energy is attributed to an event only
//! where the sensor can see it. A power poller (default 100 ms) runs alongside a measured series;
//! every prefill and every KV-decode window becomes an event; each event gets energy from the
//! sensor's cumulative counter or from the power trace only when the gating rules hold (≥ 2
//! in-window samples, event at least as long as the sensor's averaging window, counter spanning ≥ 2
//! update periods with a positive delta) — otherwise `no_data` with the reason, never a number.
//! The idle baseline is measured first and subtracted (gross and net both reported).
//!
//! Event windows come from the harness clock around each generation: prefill = [start, start +
//! prefill_ms], decode = [end − decode_ms, end]. For in-process backends these are the measured
//! boundaries; for servers (engine-reported phases) they are placed within the request's wall time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{median, TrialContext, TrialResult, Verdict};
use crate::energy::{self, attribute, EnergyQuality, EnergyResult, EventWindow, PowerPoller};
use crate::measure::{RunOutcome, RunPhase, RunRecord, SeriesPlan};
use crate::workload::prompt_ids;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyGatingParams {
    pub gen_tokens: usize,
    pub poll_period_ms: u64,
    pub idle_seconds: f64,
    /// Pause before the idle calibration so a GPU busy with the previous trial returns to idle clocks.
    #[serde(default)]
    pub settle_seconds: f64,
    /// Longest wait for the idle to come back within the band of the reference idle; a trial whose
    /// idle is not at rest then reports gross energy only (see `energy::settle`).
    #[serde(default = "default_max_settle")]
    pub max_settle_seconds: f64,
    /// Band around the reference idle, as a fraction of it (at least `idle_band_min_w`).
    #[serde(default = "default_band_fraction")]
    pub idle_band_fraction: f64,
    #[serde(default = "default_band_min_w")]
    pub idle_band_min_w: f64,
    /// Expected quality of every prefill event (TR122: `no_data` at 100 ms polling), if asserted.
    #[serde(default)]
    pub expect_prefill: Option<EnergyQuality>,
    /// Expected quality of every decode event (TR122: `good` for 64-token decodes), if asserted.
    #[serde(default)]
    pub expect_decode: Option<EnergyQuality>,
}

fn default_max_settle() -> f64 {
    60.0
}
fn default_band_fraction() -> f64 {
    0.10
}
fn default_band_min_w() -> f64 {
    3.0
}

/// What the trial leaves in `<run-dir>/energy/`.
#[derive(Debug, Serialize)]
struct EnergyArtifact<'a> {
    trial: &'a str,
    /// Which idle was subtracted (or why only gross energy is reported), with the device state.
    idle_settle: &'a energy::SettledIdle,
    idle: &'a energy::IdleBaseline,
    idle_cadence: &'a energy::CadenceStats,
    cadence: &'a energy::CadenceStats,
    events: Vec<energy::EventEnergySummary>,
    results: &'a [EnergyResult],
}

pub fn evaluate(ctx: &TrialContext<'_>, p: &EnergyGatingParams) -> TrialResult {
    let fail = |reason: String, records: &[RunRecord]| {
        ctx.result(
            Verdict::Fail { reason },
            BTreeMap::new(),
            records,
            records.len(),
        )
    };
    let detected = energy::detect_sensors();
    if detected.readable.is_empty() {
        let reason = format!(
            "no readable power sensor here, so every event would be no_data: {}",
            detected.unreadable_summary()
        );
        return ctx.result(Verdict::Skip { reason }, BTreeMap::new(), &[], 0);
    }
    let sensor = detected.best();
    let Some(scenario) = ctx.scenario else {
        return fail("energy.gating needs a scenario".into(), &[]);
    };
    let prompt = match prompt_ids(&scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the prompt: {e}"), &[]),
    };
    let period = Duration::from_millis(p.poll_period_ms.max(1));
    let run_dir = ctx
        .run_log
        .path()
        .parent()
        .map(std::path::Path::to_path_buf);
    let reference = match energy::IdleReference::from_env(sensor.name()) {
        Ok(r) => r.or_else(|| {
            run_dir
                .as_deref()
                .and_then(|d| energy::IdleReference::load(d, sensor.name()))
        }),
        Err(e) => return fail(format!("idle reference: {e}"), &[]),
    };
    let settle_params = energy::SettleParams {
        settle_seconds: p.settle_seconds,
        max_settle_seconds: p.max_settle_seconds,
        band_fraction: p.idle_band_fraction,
        band_min_w: p.idle_band_min_w,
        // NVML power is a trailing average: every reading in the window must postdate the work.
        window: sensor
            .averaging_window()
            .map_or(Duration::from_secs(2), |w| {
                (2 * w).max(Duration::from_secs(2))
            }),
        idle: Duration::from_secs_f64(p.idle_seconds),
        period,
    };
    let settled = match energy::settle_and_calibrate(sensor.clone(), &settle_params, reference) {
        Ok(x) => x,
        Err(e) => return fail(format!("idle baseline: {e}"), &[]),
    };
    if settled.reference.is_none() {
        if let (Some(r), Some(dir)) = (settled.as_reference(ctx.trial), run_dir.as_deref()) {
            let _ = r.store(dir);
        }
    }
    let (idle, idle_trace) = (settled.baseline.clone(), &settled.trace);
    let mut backend = match (ctx.open)() {
        Ok(b) => b,
        Err(e) => return fail(format!("backend could not load: {e}"), &[]),
    };
    let plan = SeriesPlan {
        run_id: ctx.run_id.into(),
        trial: ctx.trial.into(),
        scenario: scenario.name.into(),
        prompt,
        gen_tokens: p.gen_tokens,
        warmup: ctx.profile.warmup,
        repetitions: ctx.profile.repetitions,
    };
    for _ in 0..plan.warmup {
        let _ = backend.generate(&plan.prompt, plan.gen_tokens);
    }
    let poller = match PowerPoller::start(sensor, period) {
        Ok(x) => x,
        Err(e) => return fail(format!("power poller: {e}"), &[]),
    };
    let mut records = Vec::new();
    let mut events = Vec::new();
    for rep in 0..plan.repetitions {
        let t0 = energy::now_s();
        let outcome = backend.generate(&plan.prompt, plan.gen_tokens);
        let t1 = energy::now_s();
        let outcome = match outcome {
            Ok(g) => {
                events.push((
                    EventWindow::new(format!("prefill#{rep}"), t0, t0 + g.prefill_ms / 1e3),
                    g.prompt_tokens as u64,
                ));
                events.push((
                    EventWindow::new(format!("decode#{rep}"), t1 - g.decode_ms / 1e3, t1),
                    g.decode_steps as u64,
                ));
                match crate::measure::timings_of(&g, plan.gen_tokens) {
                    Ok(t) => RunOutcome::Ok(t),
                    Err(reason) => RunOutcome::Degraded {
                        reason: format!("invariant violated: {reason}"),
                    },
                }
            }
            Err(e) => RunOutcome::from_error(&e),
        };
        records.push(RunRecord {
            run_id: plan.run_id.clone(),
            trial: plan.trial.clone(),
            backend: ctx.backend_id.into(),
            scenario: plan.scenario.clone(),
            index: plan.warmup + rep,
            phase: RunPhase::Measured,
            started_unix_ms: crate::measure::unix_ms(),
            outcome,
        });
    }
    let trace = poller.stop();
    let _ = ctx.log(&records);
    let results: Vec<EnergyResult> = events
        .iter()
        .map(|(w, _)| attribute(w, &trace, &idle))
        .collect();
    let summaries: Vec<_> = results
        .iter()
        .zip(&events)
        .map(|(r, (_, tokens))| {
            let mut s = r.summary(Some(*tokens));
            if !settled.subtracts() {
                // The idle is not at rest: a net figure would measure the clock state.
                s.net_j = None;
                s.net_j_per_token = None;
            }
            s
        })
        .collect();
    if let Some(dir) = ctx.run_log.path().parent() {
        let artifact = EnergyArtifact {
            trial: ctx.trial,
            idle_settle: &settled,
            idle: &idle,
            idle_cadence: &idle_trace.cadence,
            cadence: &trace.cadence,
            events: summaries.clone(),
            results: &results,
        };
        let _ = std::fs::create_dir_all(dir.join("energy"));
        let _ = std::fs::write(
            dir.join("energy")
                .join(format!("{}.json", ctx.trial.replace("::", "__"))),
            serde_json::to_vec_pretty(&artifact).unwrap_or_default(),
        );
    }

    let mut failures = Vec::new();
    // The seed rule, re-checked on what attribute() returned: a power-trace number needs ≥ 2 samples.
    for r in &results {
        if r.power_trace.outcome.is_good() && r.power_trace.in_window_samples < 2 {
            failures.push(format!(
                "{}: power-trace energy with {} in-window samples",
                r.event.label, r.power_trace.in_window_samples
            ));
        }
    }
    let count = |prefix: &str, q: EnergyQuality| {
        results
            .iter()
            .filter(|r| r.event.label.starts_with(prefix) && r.quality() == q)
            .count()
    };
    let total = |prefix: &str| {
        results
            .iter()
            .filter(|r| r.event.label.starts_with(prefix))
            .count()
    };
    for (prefix, expect) in [("prefill", p.expect_prefill), ("decode", p.expect_decode)] {
        if let Some(q) = expect {
            let n = count(prefix, q);
            if n != total(prefix) {
                let example = results
                    .iter()
                    .find(|r| r.event.label.starts_with(prefix) && r.quality() != q);
                let why = example
                    .map(|r| {
                        r.no_data_reason().unwrap_or_else(|| {
                            format!("{} had data over {:.3} s", r.event.label, r.duration_s)
                        })
                    })
                    .unwrap_or_default();
                failures.push(format!(
                    "{prefix}: {n}/{} events are {q:?}, expected all ({why})",
                    total(prefix)
                ));
            }
        }
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("idle_mean_w".into(), idle.mean_w);
    metrics.insert("idle_std_w".into(), idle.std_w);
    metrics.insert("idle_at_rest".into(), f64::from(u8::from(settled.at_rest)));
    metrics.insert("idle_settle_waited_s".into(), settled.waited_s);
    if let Some(r) = &settled.reference {
        metrics.insert("idle_reference_w".into(), r.mean_w);
    }
    if let Some(v) = trace.cadence.median_period_s {
        metrics.insert("poll_period_median_ms".into(), v * 1e3);
    }
    if let Some(v) = trace.cadence.p99_gap_s {
        metrics.insert("poll_gap_p99_ms".into(), v * 1e3);
    }
    metrics.insert(
        "prefill_events_good".into(),
        count("prefill", EnergyQuality::Good) as f64,
    );
    metrics.insert(
        "decode_events_good".into(),
        count("decode", EnergyQuality::Good) as f64,
    );
    let per_token: Vec<f64> = summaries
        .iter()
        .filter(|s| s.label.starts_with("decode"))
        .filter_map(|s| s.net_j_per_token)
        .collect();
    if let Some(m) = median(&per_token) {
        metrics.insert("decode_net_j_per_token_median".into(), m);
    }
    let summary = format!(
        "{} (idle {:.1} ± {:.1} W, n = {}; poll median {:.0} ms, p99 gap {:.0} ms): prefill {}/{} good, decode {}/{} good{}",
        results.first().map(|r| r.sensor.as_str()).unwrap_or("sensor"),
        idle.mean_w,
        idle.std_w,
        idle.n,
        trace.cadence.median_period_s.unwrap_or(f64::NAN) * 1e3,
        trace.cadence.p99_gap_s.unwrap_or(f64::NAN) * 1e3,
        count("prefill", EnergyQuality::Good),
        total("prefill"),
        count("decode", EnergyQuality::Good),
        total("decode"),
        metrics.get("decode_net_j_per_token_median").map(|j| format!("; decode {j:.4} J/token net")).unwrap_or_default()
    );
    let summary = format!("{summary}; {}", settled.statement);
    let verdict = if failures.is_empty() {
        Verdict::Pass { summary }
    } else {
        Verdict::Fail {
            reason: format!("{}; {summary}", failures.join("; ")),
        }
    };
    ctx.result(verdict, metrics, &records, plan.repetitions)
}
