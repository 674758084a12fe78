//! Over 600 lines: 182 of them are this gate's tests.
//!
//! `economics.cost` (TR119; conclusive report C3, §7, Appendix A, AV.3): throughput drives cost, so
//! the backend ordering by cost per 1M tokens does not depend on the pricing tier.
//!
//! One trial measures every backend of the gate on every scenario of the gate (fixed-length greedy
//! generation; warmup labelled and excluded). Per backend: `tokens_per_s` = generated tokens /
//! (e2e ms / 1000) per run (Appendix A), the median per scenario, and the geometric mean of those
//! medians over the scenarios (TR121's scenario aggregate). Then, with [`crate::cost`], for every
//! pricing tier of the gate file: compute cost per 1M tokens, the energy term where it was measured,
//! the total, the workers needed for the gate's monthly token volume, and the cost of the gate's
//! request mix. Parts: `throughput` (FAIL when a present backend yields no successful run in some
//! scenario), `tier_invariance` (the ordering is the same under every tier — checked only when
//! every backend has an energy term: a compute-only cost is `price / throughput`, so its ordering
//! cannot change with the tier by construction, which `src/cost.rs`'s property test proves; then
//! the part is reported, INFO, never a PASS) and `energy_share` (C3: energy is at most
//! `max_energy_share` of every backend's cost, where measured; not checked without a sensor).
//!
//! Energy (TR119's second term, TR122's gates): with a readable CPU package sensor (RAPL; TR119
//! uses CPU package power for CPU backends, and every backend here runs on the CPU), the idle baseline is
//! calibrated once, a poller runs around each backend × scenario series, and the series window's
//! gross energy ([`crate::energy::attribute`], counter preferred) divided by the tokens generated in
//! it gives J/token (geometric mean over scenarios per backend). Gross, not net: a dedicated
//! worker's idle draw is paid for too. A window whose energy is `no_data`, or without a readable
//! sensor, leaves the energy term `no_data` with the reason, and the cost is compute only — then
//! tier invariance holds by the formula, and the verdict says so (INFO).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::across_backends::{backend_availability, measure_backend, prompts, require_scenarios};
use super::{
    median, Details, Evaluation, GateKind, NoDataNote, Part, Skip, SkipCause, Threshold,
    TrialContext, Unit,
};
use crate::cost::{self, BackendThroughput, EnergyCost, EnergyInput, PricingTier};
use crate::energy::{
    self, energy_per_token, EnergyPerToken, EventWindow, IdleBaseline, PowerPoller, PowerSensor,
};
use crate::measure::RunRecord;
use crate::stats::geometric_mean;

/// A request shape for the request-cost line (Appendix G.1: 256 prompt + 128 generated tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMix {
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

/// Parameters of the check, from the gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomicsParams {
    pub gen_tokens: usize,
    pub tiers: Vec<PricingTier>,
    /// Electricity price for the energy term.
    pub usd_per_kwh: f64,
    /// Monthly volume for the capacity line (`workers`).
    pub tokens_per_month: f64,
    pub request: RequestMix,
    /// Fail when the energy term is more than this share of a backend's total (where measured).
    pub max_energy_share: f64,
    /// Idle calibration before measuring (only with a readable sensor).
    pub idle_calibration_s: f64,
    pub poll_period_ms: u64,
}

/// Power measurement set up for the trial, or why there is none.
enum EnergySetup {
    Sensor {
        sensor: Arc<dyn PowerSensor>,
        baseline: IdleBaseline,
        period: Duration,
    },
    None {
        reason: String,
    },
}

/// The CPU package sensor (TR119 attributes CPU backends to CPU package power, GPU backends to GPU
/// power; every backend this gate can name runs on the CPU), calibrated at idle.
fn energy_setup(p: &EconomicsParams) -> EnergySetup {
    let detected = energy::detect_sensors();
    let Some(sensor) = detected
        .readable
        .iter()
        .find(|s| s.name().starts_with("rapl"))
        .cloned()
    else {
        let rapl = detected
            .unreadable
            .iter()
            .find(|u| u.kind == "RAPL")
            .map_or("no RAPL zone found".to_string(), |u| u.reason.clone());
        return EnergySetup::None {
            reason: format!("no readable CPU package power sensor (RAPL: {rapl})"),
        };
    };
    let period = Duration::from_millis(p.poll_period_ms.max(1));
    match energy::calibrate_idle(
        sensor.clone(),
        Duration::from_secs_f64(p.idle_calibration_s.max(0.0)),
        period,
    ) {
        Ok((baseline, _)) => EnergySetup::Sensor {
            sensor,
            baseline,
            period,
        },
        Err(e) => EnergySetup::None {
            reason: format!("{}: idle calibration failed: {e}", sensor.name()),
        },
    }
}

/// Runs `work` inside a power-polled window and returns its records with the window's gross J per
/// generated token, or the reason there is none.
pub fn with_energy(
    sensor: &Arc<dyn PowerSensor>,
    baseline: &IdleBaseline,
    period: Duration,
    label: &str,
    work: &mut dyn FnMut() -> Vec<RunRecord>,
) -> (Vec<RunRecord>, EnergyInput) {
    let poller = match PowerPoller::start(sensor.clone(), period) {
        Ok(p) => p,
        Err(e) => {
            return (
                work(),
                EnergyInput::NoData {
                    reason: format!("poller: {e}"),
                },
            )
        }
    };
    // The poller reads on its own thread: give it time for readings before the window opens.
    std::thread::sleep(period * 2);
    let start = energy::now_s();
    let records = work();
    let end = energy::now_s();
    let trace = poller.stop();
    let not_ok = records.iter().filter(|r| r.timings().is_none()).count();
    if not_ok > 0 {
        return (
            records,
            EnergyInput::NoData {
                reason: format!("{label}: {not_ok} runs in the window were not ok"),
            },
        );
    }
    let tokens: u64 = records
        .iter()
        .filter_map(|r| r.timings())
        .map(|t| t.gen_tokens as u64)
        .sum();
    let result = energy::attribute(&EventWindow::new(label, start, end), &trace, baseline);
    let input = match energy_per_token(&result, tokens) {
        EnergyPerToken::Good {
            gross_j_per_token, ..
        } => EnergyInput::Good {
            joules_per_token: gross_j_per_token,
        },
        EnergyPerToken::NoData { reason } => EnergyInput::NoData {
            reason: format!("{label}: {reason}"),
        },
    };
    (records, input)
}

/// Geometric mean of the per-scenario J/token when every scenario has one.
fn aggregate_energy(per_scenario: &[EnergyInput]) -> EnergyInput {
    let mut values = Vec::new();
    for e in per_scenario {
        match e {
            EnergyInput::Good { joules_per_token } => values.push(*joules_per_token),
            EnergyInput::NoData { reason } => {
                return EnergyInput::NoData {
                    reason: reason.clone(),
                }
            }
        }
    }
    match geometric_mean(&values) {
        Ok(j) => EnergyInput::Good {
            joules_per_token: j,
        },
        Err(e) => EnergyInput::NoData {
            reason: e.to_string(),
        },
    }
}

pub const THROUGHPUT: &str = "throughput";
pub const TIER_INVARIANCE: &str = "tier_invariance";
pub const ENERGY_SHARE: &str = "energy_share";

/// One backend × tier line of the cost table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    pub backend: String,
    pub tier: String,
    pub usd_per_hour: f64,
    /// Total cost per 1M generated tokens (compute, + energy where measured).
    pub usd_per_1m: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_1k_requests: Option<f64>,
    /// Geometric mean over scenarios of the median tokens/s.
    pub tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules_per_token: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_share: Option<f64>,
    /// Workers needed for the gate's monthly token volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<f64>,
}

/// Median tokens/s of one backend in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioThroughput {
    pub backend: String,
    pub scenario: String,
    pub tokens_per_s_median: f64,
}

/// What the report reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostDetails {
    pub lines: Vec<CostLine>,
    pub throughput: Vec<ScenarioThroughput>,
    /// Tier name → backends cheapest first.
    pub orderings: Vec<(String, Vec<String>)>,
}

/// The `tier_invariance` part: asserted only when every backend has an energy term.
pub fn tier_invariance_part(
    throughputs: &[BackendThroughput],
    invariant: bool,
    orderings: &str,
) -> Part {
    let compute_only = throughputs
        .iter()
        .all(|t| matches!(t.energy, EnergyInput::NoData { .. }));
    if compute_only || throughputs.len() < 2 {
        return Part::reported(
            TIER_INVARIANCE,
            None,
            format!(
                "{}: cost = price per hour / throughput, so the ordering cannot change with the tier (by construction, not by measurement); {orderings}",
                if throughputs.len() < 2 { "one backend measured" } else { "no energy term" }
            ),
        );
    }
    Part::compare(
        TIER_INVARIANCE,
        f64::from(u8::from(invariant)),
        Threshold::equal(1.0),
        format!("1 = the same ordering under every tier: {orderings}"),
    )
}

impl GateKind for EconomicsParams {
    fn parts(&self) -> &'static [&'static str] {
        &[THROUGHPUT, TIER_INVARIANCE, ENERGY_SHARE]
    }

    fn units(&self, backends: &[String]) -> Vec<Unit> {
        vec![Unit::all(backends)]
    }

    fn aggregates_scenarios(&self) -> bool {
        true
    }

    fn validate(&self, spec: &super::GateSpec) -> Result<(), String> {
        require_scenarios(spec)?;
        if self.tiers.is_empty() {
            return Err("`tiers` is empty".into());
        }
        Ok(())
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

fn evaluate(ctx: &TrialContext<'_>, p: &EconomicsParams) -> Evaluation {
    let prompts = match prompts(ctx) {
        Ok(x) => x,
        Err(e) => return Evaluation::error(e),
    };
    let setup = energy_setup(p);
    let mut all_records = Vec::new();
    let mut absent = Vec::new();
    let mut missing = Vec::new();
    let mut throughputs = Vec::new();
    let mut per_scenario = Vec::new();
    let mut measured = 0usize;
    for (backend, availability) in backend_availability(ctx) {
        if let Err(reason) = availability {
            absent.push(reason);
            continue;
        }
        let mut energies = Vec::new();
        let runs = measure_backend(
            ctx,
            ctx.backends.open(&backend),
            &prompts,
            p.gen_tokens,
            |scenario, run| match &setup {
                EnergySetup::Sensor {
                    sensor,
                    baseline,
                    period,
                } => {
                    let (records, e) = with_energy(
                        sensor,
                        baseline,
                        *period,
                        &format!("{backend} × {scenario}"),
                        run,
                    );
                    energies.push(e);
                    records
                }
                EnergySetup::None { reason } => {
                    energies.push(EnergyInput::NoData {
                        reason: reason.clone(),
                    });
                    run()
                }
            },
        );
        let runs = match runs {
            Ok(r) => r,
            Err(e) => return Evaluation::error(e).with_runs(&all_records, all_records.len()),
        };
        measured += 1;
        let mut medians = Vec::new();
        for r in &runs {
            all_records.extend(r.records.iter().cloned());
            match median(
                &r.ok()
                    .iter()
                    .map(|t| t.e2e_tokens_per_s())
                    .collect::<Vec<_>>(),
            ) {
                Some(m) => {
                    per_scenario.push(ScenarioThroughput {
                        backend: backend.clone(),
                        scenario: r.scenario.into(),
                        tokens_per_s_median: m,
                    });
                    medians.push(m);
                }
                None => missing.push(format!(
                    "{backend} × {}: no successful measured run ({})",
                    r.scenario,
                    r.first_problem().unwrap_or_else(|| "no runs".into())
                )),
            }
        }
        if medians.len() == runs.len() {
            if let Ok(tps) = geometric_mean(&medians) {
                throughputs.push(BackendThroughput {
                    backend: backend.clone(),
                    tokens_per_s: tps,
                    energy: aggregate_energy(&energies),
                });
            }
        }
    }
    // What the plan states: every measured backend × scenario × (warmup + repetitions).
    let stated = measured * prompts.len() * (ctx.profile.warmup + ctx.profile.repetitions);
    if measured == 0 {
        return Evaluation::skip(Skip::new(
            SkipCause::BackendAbsent,
            format!("no backend of the gate is available: {}", absent.join("; ")),
        ));
    }
    let throughput = if missing.is_empty() {
        Part::compare(
            THROUGHPUT,
            throughputs.len() as f64,
            Threshold::equal(measured as f64),
            "present backends with a throughput in every scenario",
        )
    } else {
        Part::no_data(THROUGHPUT, missing.join("; "))
    };
    if throughputs.is_empty() {
        return Evaluation::judged(vec![throughput], String::new()).with_runs(&all_records, stated);
    }

    let orderings = match cost::ordering_is_tier_invariant(&throughputs, &p.tiers, p.usd_per_kwh) {
        Ok(o) => o,
        Err(e) => {
            return Evaluation::error(format!("{}: {e}", ctx.spec.path.display()))
                .with_runs(&all_records, stated)
        }
    };
    let avg_tps = cost::avg_tokens_per_s(p.tokens_per_month, cost::SECONDS_PER_30_DAY_MONTH);
    let mut lines = Vec::new();
    let mut words = Vec::new();
    let mut shares = Vec::new();
    for tier in &p.tiers {
        let table = match cost::cost_table(&throughputs, tier, p.usd_per_kwh) {
            Ok(t) => t,
            Err(e) => return Evaluation::error(e.to_string()).with_runs(&all_records, stated),
        };
        let mut parts = Vec::new();
        for c in &table {
            let request = cost::cost_per_request(
                p.request.prompt_tokens,
                p.request.generated_tokens,
                c.total_usd_per_1m,
            )
            .ok();
            let (joules, energy) = match &c.energy {
                EnergyCost::Good {
                    usd_per_1m,
                    joules_per_token,
                    ..
                } => {
                    let share = c.energy_share();
                    if let Some(share) = share {
                        shares.push((c.backend.clone(), tier.name.clone(), share));
                    }
                    (
                        Some(*joules_per_token),
                        format!(" (energy ${usd_per_1m:.4}, {joules_per_token:.2} J/token)"),
                    )
                }
                EnergyCost::NoData { .. } => (None, String::new()),
            };
            let workers = avg_tps
                .clone()
                .and_then(|a| cost::workers(a, c.tokens_per_s))
                .ok();
            lines.push(CostLine {
                backend: c.backend.clone(),
                tier: tier.name.clone(),
                usd_per_hour: tier.usd_per_hour,
                usd_per_1m: c.total_usd_per_1m,
                usd_per_1k_requests: request.map(|r| r * 1e3),
                tokens_per_s: c.tokens_per_s,
                joules_per_token: joules,
                energy_share: c.energy_share(),
                workers,
            });
            parts.push(format!(
                "{} ${:.3}{energy}{}",
                c.backend,
                c.total_usd_per_1m,
                request
                    .map(|r| format!(", ${:.4}/1k req", r * 1e3))
                    .unwrap_or_default()
            ));
        }
        words.push(format!(
            "{} (${}/h): {}",
            tier.name,
            tier.usd_per_hour,
            parts.join(", ")
        ));
    }
    let ordering_words = orderings
        .orderings
        .iter()
        .map(|(t, o)| format!("{t}: {}", o.join(" < ")))
        .collect::<Vec<_>>()
        .join("; ");
    let mut parts = vec![
        throughput,
        tier_invariance_part(&throughputs, orderings.invariant, &ordering_words),
    ];
    let no_energy: Vec<String> = throughputs
        .iter()
        .filter_map(|t| match &t.energy {
            EnergyInput::NoData { reason } => Some(format!("{}: {reason}", t.backend)),
            EnergyInput::Good { .. } => None,
        })
        .collect();
    parts.push(match shares.iter().max_by(|a, b| a.2.total_cmp(&b.2)) {
        Some((backend, tier, share)) => Part::compare(
            ENERGY_SHARE,
            *share,
            Threshold::at_most(p.max_energy_share),
            format!("largest energy share of the cost: {backend} under {tier}"),
        ),
        None => Part::not_checked(
            ENERGY_SHARE,
            format!(
                "no energy term was measured ({})",
                no_energy.first().cloned().unwrap_or_default()
            ),
        ),
    });
    let no_data = throughputs
        .iter()
        .filter_map(|t| match &t.energy {
            EnergyInput::NoData { reason } => Some(NoDataNote {
                subject: format!("energy term of {}", t.backend),
                reason: reason.clone(),
                count: 1,
            }),
            EnergyInput::Good { .. } => None,
        })
        .collect();
    let speeds = throughputs
        .iter()
        .map(|t| format!("{} {:.1}", t.backend, t.tokens_per_s))
        .collect::<Vec<_>>()
        .join(", ");
    let workers = lines
        .iter()
        .filter(|l| Some(&l.tier) == p.tiers.first().map(|t| &t.name))
        .filter_map(|l| l.workers.map(|w| format!("{} {w:.2}", l.backend)))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = format!(
        "tokens/s (geomean over {} scenarios, {} generated tokens): {speeds}; $/1M tokens: {}; workers for {:.0e} tokens/month: {workers}{}{}",
        prompts.len(),
        p.gen_tokens,
        words.join("; "),
        p.tokens_per_month,
        if no_energy.is_empty() { String::new() } else { format!("; energy term no_data for {}", no_energy.join("; ")) },
        if absent.is_empty() { String::new() } else { format!("; not compared: {}", absent.join("; ")) }
    );
    Evaluation::judged(parts, summary)
        .with_runs(&all_records, stated)
        .with_no_data(no_data)
        .with_details(Details::Cost(CostDetails {
            lines,
            throughput: per_scenario,
            orderings: orderings.orderings,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;
    use crate::energy::{CounterReading, PowerSensor};
    use crate::error::EnergyError;
    use crate::measure::{RunOutcome, RunPhase, RunTimings};

    /// Test double for a sensor this machine lacks: a constant 40 W with a 1 ms energy counter.
    struct ConstantPower {
        start: std::time::Instant,
    }
    impl PowerSensor for ConstantPower {
        fn name(&self) -> &str {
            "test-constant-40w"
        }
        fn describe(&self) -> String {
            "test double: 40 W, counter 40 J/s".into()
        }
        fn has_power(&self) -> bool {
            true
        }
        fn read_power_w(&self) -> Result<f64, EnergyError> {
            Ok(40.0)
        }
        fn averaging_window(&self) -> Option<Duration> {
            None
        }
        fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError> {
            Ok(Some(CounterReading {
                joules: 40.0 * self.start.elapsed().as_secs_f64(),
                update_period: Duration::from_millis(1),
            }))
        }
        fn counter_update_period(&self) -> Option<Duration> {
            Some(Duration::from_millis(1))
        }
        fn counter_wraps_at_j(&self) -> Option<f64> {
            None
        }
    }

    fn ok_record(gen_tokens: usize) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            trial: crate::gate::TrialId::new("g", crate::gate::Unit::backend("b"), None),
            sub_series: None,
            backend: "b".into(),
            scenario: "s".into(),
            index: 0,
            phase: RunPhase::Measured,
            started_unix_ms: 0,
            outcome: RunOutcome::Ok(RunTimings {
                prompt_tokens: 8,
                gen_tokens,
                prefill_ms: 1.0,
                decode_ms: 1.0,
                e2e_ms: 2.0,
                decode_steps: gen_tokens - 1,
                timing_source: TimingSource::Harness,
                cold_start_ms: None,
                cached_prompt_tokens: None,
                memory_traffic: None,
            }),
        }
    }

    #[test]
    fn energy_per_token_is_the_window_energy_over_its_tokens() {
        let sensor: Arc<dyn PowerSensor> = Arc::new(ConstantPower {
            start: std::time::Instant::now(),
        });
        let baseline = IdleBaseline::new(10.0, 0.5, 20).unwrap();
        let mut window = (0.0, 0.0);
        let (records, e) = with_energy(
            &sensor,
            &baseline,
            Duration::from_millis(20),
            "b::s",
            &mut || {
                let start = energy::now_s();
                std::thread::sleep(Duration::from_millis(600));
                window = (start, energy::now_s());
                vec![ok_record(32), ok_record(32)]
            },
        );
        assert_eq!(records.len(), 2);
        // Counter energy at 40 W over the window (slightly longer than the sleep), over 64 tokens.
        let EnergyInput::Good { joules_per_token } = e else {
            panic!("{e:?}")
        };
        let lower = 40.0 * (window.1 - window.0) / 64.0;
        assert!(
            joules_per_token >= lower * 0.999 && joules_per_token < lower * 1.5,
            "{joules_per_token} vs ≥ {lower}"
        );
    }

    #[test]
    fn a_window_with_a_degraded_run_has_no_energy() {
        let sensor: Arc<dyn PowerSensor> = Arc::new(ConstantPower {
            start: std::time::Instant::now(),
        });
        let baseline = IdleBaseline::new(10.0, 0.5, 20).unwrap();
        let mut degraded = ok_record(4);
        degraded.outcome = RunOutcome::Degraded {
            reason: "server died".into(),
        };
        let (_, e) = with_energy(
            &sensor,
            &baseline,
            Duration::from_millis(20),
            "b::s",
            &mut || vec![ok_record(4), degraded.clone()],
        );
        assert!(
            matches!(&e, EnergyInput::NoData { reason } if reason.contains("not ok")),
            "{e:?}"
        );
    }

    #[test]
    fn tier_invariance_without_energy_is_reported_not_passed() {
        use crate::gate::{verdict::derive, Outcome, Verdict};
        // Item 6: without an energy term the ordering cannot change with the tier.
        let compute_only = vec![
            BackendThroughput {
                backend: "a".into(),
                tokens_per_s: 100.0,
                energy: EnergyInput::NoData {
                    reason: "no RAPL".into(),
                },
            },
            BackendThroughput {
                backend: "b".into(),
                tokens_per_s: 150.0,
                energy: EnergyInput::NoData {
                    reason: "no RAPL".into(),
                },
            },
        ];
        let part = tier_invariance_part(&compute_only, true, "spot: b < a");
        let (v, m, _) = derive(&Outcome::Judged { parts: vec![part] }, "", &[]);
        assert_eq!(v, Verdict::Info, "{m}");
        assert!(m.contains("by construction"), "{m}");
        let mut measured = compute_only.clone();
        for t in &mut measured {
            t.energy = EnergyInput::Good {
                joules_per_token: 2.0,
            };
        }
        let held = tier_invariance_part(&measured, true, "");
        assert_eq!(
            derive(&Outcome::Judged { parts: vec![held] }, "", &[]).0,
            Verdict::Pass
        );
        let changed = tier_invariance_part(&measured, false, "");
        assert_eq!(
            derive(
                &Outcome::Judged {
                    parts: vec![changed]
                },
                "",
                &[]
            )
            .0,
            Verdict::Fail
        );
    }

    #[test]
    fn energy_aggregates_only_when_every_scenario_has_it() {
        let good = |j| EnergyInput::Good {
            joules_per_token: j,
        };
        assert_eq!(aggregate_energy(&[good(2.0), good(8.0)]), good(4.0));
        let missing = EnergyInput::NoData {
            reason: "prefill too short".into(),
        };
        assert_eq!(aggregate_energy(&[good(2.0), missing.clone()]), missing);
    }
}
