//! Over 600 lines: 110 of them are this gate's tests.
//!
//! `energy.gating` (TR122; conclusive C6, C10, §3.8, §8.4): energy is attributed to an event only
//! where the sensor can see it. A power poller (default 100 ms) runs alongside a measured series;
//! every prefill and every KV-decode window becomes an event; each event gets energy from the
//! sensor's cumulative counter or from the power trace only when the gating rules hold (≥ 2
//! in-window samples, event at least as long as the sensor's averaging window, counter spanning ≥ 2
//! update periods with a positive delta) — otherwise `no_data` with the reason, never a number.
//! The sensor is the one covering the backend's device ([`energy::sensor_for_device`]: RAPL for
//! `cpu`, NVML device N for `cuda:N`); when it cannot be read the trial is a SKIP with the reason
//! and the fix, never measured with another device's sensor. The idle is measured before the
//! backend is opened where its device is known from the registry (a CUDA context held by this
//! process keeps a GPU at boost clocks), after the device is back at rest ([`energy::settle`]:
//! within a band of a reference idle, for at most `max_settle_seconds`); energy is reported net
//! of that idle only when it is at rest, otherwise gross only, with the reason in the summary.
//!
//! Event windows come from the harness clock around each generation: prefill = [start, start +
//! prefill_ms], decode = [end − decode_ms, end]. For in-process backends these are the measured
//! boundaries; for servers (engine-reported phases) they are placed within the request's wall time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    median, Evaluation, GateKind, Metrics, NoDataNote, Part, PlanContext, Skip, SkipCause,
    Threshold, TrialContext,
};
use crate::backend::registry::requested_device;
use crate::backend::Backend;
use crate::energy::{
    self, attribute, EnergyQuality, EnergyResult, EventWindow, PowerPoller, PowerSensor,
    SensorProbe, SensorUnavailable, SystemProbe,
};
use crate::host::ComputeDevice;
use crate::measure::{RunOutcome, RunPhase, RunRecord};
use crate::workload::prompt_ids;

pub const PREFILL: &str = "prefill_events";
pub const DECODE: &str = "decode_events";
pub const GATING_RULE: &str = "no_number_without_samples";

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

/// The two kinds of event a generation yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    Prefill,
    Decode,
}

impl EventClass {
    fn part(self) -> &'static str {
        match self {
            EventClass::Prefill => PREFILL,
            EventClass::Decode => DECODE,
        }
    }
    fn name(self) -> &'static str {
        match self {
            EventClass::Prefill => "prefill",
            EventClass::Decode => "decode",
        }
    }
}

/// What the trial leaves in `<run-dir>/energy/`.
#[derive(Debug, Serialize)]
struct EnergyArtifact<'a> {
    trial: &'a super::TrialId,
    /// Which idle was subtracted (or why only gross energy is reported), with the device state.
    idle_settle: &'a energy::SettledIdle,
    idle: &'a energy::IdleBaseline,
    idle_cadence: &'a energy::CadenceStats,
    cadence: &'a energy::CadenceStats,
    events: Vec<energy::EventEnergySummary>,
    results: &'a [EnergyResult],
}

/// One class's part: every event of the class has the expected quality. No event at all is
/// `no_data` (0 of 0 is not a pass: every run may have failed).
pub fn class_part(
    class: EventClass,
    qualities: &[EnergyQuality],
    expect: Option<EnergyQuality>,
    example: Option<String>,
) -> Part {
    let total = qualities.len();
    let good = qualities
        .iter()
        .filter(|q| **q == EnergyQuality::Good)
        .count();
    if total == 0 {
        return Part::no_data(
            class.part(),
            format!("no {} event was measured (every run failed?)", class.name()),
        );
    }
    match expect {
        None => Part::reported(
            class.part(),
            Some(good as f64 / total as f64),
            format!(
                "{good}/{total} {} events good (quality not asserted by the gate file)",
                class.name()
            ),
        ),
        Some(q) => {
            let matching = qualities.iter().filter(|x| **x == q).count();
            let mut detail = format!("{matching}/{total} {} events are {q:?}", class.name());
            if matching != total {
                if let Some(e) = example {
                    detail.push_str(&format!(" (e.g. {e})"));
                }
            }
            Part::compare(
                class.part(),
                matching as f64 / total as f64,
                Threshold::equal(1.0),
                detail,
            )
        }
    }
}

impl GateKind for EnergyGatingParams {
    fn parts(&self) -> &'static [&'static str] {
        &[PREFILL, DECODE, GATING_RULE]
    }

    /// The sensor covering the backend's device must be readable (known before running for every
    /// backend whose device the registry knows; a server that picks its own device is asked when
    /// the trial opens it).
    fn precondition(&self, plan: &PlanContext<'_>) -> Option<Skip> {
        sensor_precondition(plan.unit.single_backend()?, &SystemProbe::default())
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

/// The plan-time SKIP of `backend`'s trial when the registry knows its device and `probe` cannot
/// read the sensor covering it.
fn sensor_precondition(backend: &str, probe: &dyn SensorProbe) -> Option<Skip> {
    let device = requested_device(backend)?;
    energy::sensor_for_device_with(device, probe)
        .err()
        .map(|e| sensor_skip(&e))
}

/// The SKIP of a trial whose device's sensor cannot be read: the reason and the fix; never another
/// device's sensor instead (a GPU's power charged to CPU inference).
fn sensor_skip(e: &SensorUnavailable) -> Skip {
    Skip::new(
        SkipCause::Precondition,
        format!(
            "{e}, so every event would be no_data (another device's sensor would measure the wrong \
             device); fix: {}",
            e.fix
        ),
    )
}

/// The device whose energy the trial measures: what the opened backend reports, else what the
/// registry requests for it.
fn device_of(backend: &dyn Backend, id: &str) -> Option<ComputeDevice> {
    backend
        .info()
        .compute_device()
        .or_else(|| requested_device(id))
}

/// Wait until the device is back at rest, then measure the idle (see [`energy::settle`]). The
/// reference idle is `INFERGATE_IDLE_REFERENCE_W`, else the run's recorded one for this sensor;
/// with none yet, this trial's idle becomes the run's reference when it is at rest.
fn settle(
    ctx: &TrialContext<'_>,
    p: &EnergyGatingParams,
    sensor: &std::sync::Arc<dyn PowerSensor>,
    period: Duration,
    run_dir: Option<&std::path::Path>,
) -> Result<energy::SettledIdle, String> {
    let reference = energy::IdleReference::from_env(sensor.name())
        .map_err(|e| format!("idle reference: {e}"))?
        .or_else(|| run_dir.and_then(|d| energy::IdleReference::load(d, sensor.name())));
    let params = energy::SettleParams {
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
    let settled = energy::settle_and_calibrate(sensor.clone(), &params, reference)
        .map_err(|e| format!("idle baseline: {e}"))?;
    if settled.reference.is_none() {
        if let (Some(r), Some(dir)) = (settled.as_reference(&ctx.trial.to_string()), run_dir) {
            // Best effort: without it, the next trial settles against its own plateau.
            let _ = r.store(dir);
        }
    }
    Ok(settled)
}

fn evaluate(ctx: &TrialContext<'_>, p: &EnergyGatingParams) -> Evaluation {
    let Some(scenario) = ctx.scenario else {
        return Evaluation::error("energy.gating needs a scenario");
    };
    let prompt = match prompt_ids(&scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return Evaluation::error(format!("cannot build the prompt: {e}")),
    };
    // Where the registry knows the device, the idle is settled and measured before the backend is
    // opened: this process's own CUDA context would keep the GPU at boost clocks (never at rest).
    let mut opened: Option<Box<dyn Backend>> = None;
    let device = match requested_device(ctx.backend_id()) {
        Some(d) => d,
        None => {
            let backend = match ctx.open() {
                Ok(b) => b,
                Err(e) => return Evaluation::error(format!("backend could not load: {e}")),
            };
            let Some(device) = device_of(backend.as_ref(), ctx.backend_id()) else {
                return Evaluation::skip(Skip::new(
                    SkipCause::Precondition,
                    format!(
                        "`{}` does not say which device it computes on ({}), so no sensor can be \
                         said to cover it; fix: run a backend whose device is known (the Ollama \
                         server picks its own)",
                        ctx.backend_id(),
                        backend.info().device
                    ),
                ));
            };
            opened = Some(backend);
            device
        }
    };
    let sensor = match energy::sensor_for_device(device) {
        Ok(s) => s,
        Err(e) => return Evaluation::skip(sensor_skip(&e)),
    };
    let period = Duration::from_millis(p.poll_period_ms.max(1));
    let run_dir = ctx
        .run_log
        .path()
        .parent()
        .map(std::path::Path::to_path_buf);
    let settled = match settle(ctx, p, &sensor, period, run_dir.as_deref()) {
        Ok(x) => x,
        Err(e) => return Evaluation::error(e),
    };
    let (idle, idle_trace) = (settled.baseline.clone(), &settled.trace);
    let mut backend = match opened {
        Some(b) => b,
        None => match ctx.open() {
            Ok(b) => b,
            Err(e) => return Evaluation::error(format!("backend could not load: {e}")),
        },
    };
    // The sensor was chosen for the device the registry requests: the opened backend must compute
    // there, or its energy would be read from another device.
    if let Some(actual) = backend.info().compute_device() {
        if actual != device {
            return Evaluation::error(format!(
                "`{}` computes on {actual}, but the registry requests {device} for it and the \
                 idle was measured with that device's sensor ({})",
                ctx.backend_id(),
                sensor.name()
            ));
        }
    }
    let plan = ctx.series(None, scenario.name, prompt, p.gen_tokens);
    for _ in 0..plan.warmup {
        let _ = backend.generate(&plan.prompt, plan.gen_tokens);
    }
    let poller = match PowerPoller::start(sensor, period) {
        Ok(x) => x,
        Err(e) => return Evaluation::error(format!("power poller: {e}")),
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
                    EventClass::Prefill,
                    EventWindow::new(
                        format!("prefill#{rep}"),
                        t0,
                        t0 + g.timings.prefill_ms / 1e3,
                    ),
                    g.timings.prompt_tokens as u64,
                ));
                events.push((
                    EventClass::Decode,
                    EventWindow::new(format!("decode#{rep}"), t1 - g.timings.decode_ms / 1e3, t1),
                    g.timings.decode_steps as u64,
                ));
                crate::measure::outcome_of(&g, plan.gen_tokens)
            }
            Err(e) => RunOutcome::from_error(&e),
        };
        records.push(RunRecord {
            run_id: plan.run_id.clone(),
            trial: plan.trial.clone(),
            sub_series: None,
            backend: ctx.backend_id().into(),
            scenario: plan.scenario.clone(),
            index: plan.warmup + rep,
            phase: RunPhase::Measured,
            started_unix_ms: crate::measure::unix_ms(),
            outcome,
        });
    }
    let trace = poller.stop();
    if let Err(e) = ctx.log(&records) {
        return Evaluation::error(e).with_runs(&records, plan.repetitions);
    }
    let results: Vec<(EventClass, EnergyResult)> = events
        .iter()
        .map(|(c, w, _)| (*c, attribute(w, &trace, &idle)))
        .collect();
    let summaries: Vec<(EventClass, energy::EventEnergySummary)> = results
        .iter()
        .zip(&events)
        .map(|((c, r), (_, _, tokens))| {
            let mut s = r.summary(Some(*tokens));
            if !settled.subtracts() {
                // The idle is not at rest: a net figure would measure the clock state.
                s.net_j = None;
                s.net_j_per_token = None;
            }
            (*c, s)
        })
        .collect();
    if let Some(dir) = ctx.run_log.path().parent() {
        let plain: Vec<EnergyResult> = results.iter().map(|(_, r)| r.clone()).collect();
        let artifact = EnergyArtifact {
            trial: ctx.trial,
            idle_settle: &settled,
            idle: &idle,
            idle_cadence: &idle_trace.cadence,
            cadence: &trace.cadence,
            events: summaries.iter().map(|(_, s)| s.clone()).collect(),
            results: &plain,
        };
        let _ = std::fs::create_dir_all(dir.join("energy"));
        let _ = std::fs::write(
            dir.join("energy")
                .join(format!("{}.json", ctx.trial.file_stem())),
            serde_json::to_vec_pretty(&artifact).unwrap_or_default(),
        );
    }

    let of = |class: EventClass| {
        results
            .iter()
            .filter(move |(c, _)| *c == class)
            .map(|(_, r)| r)
    };
    let class_finding = |class: EventClass, expect: Option<EnergyQuality>| {
        let qualities: Vec<EnergyQuality> = of(class).map(|r| r.quality()).collect();
        let example = of(class)
            .find(|r| expect.is_some_and(|q| r.quality() != q))
            .map(|r| {
                r.no_data_reason().unwrap_or_else(|| {
                    format!("{} had data over {:.3} s", r.event.label, r.duration_s)
                })
            });
        class_part(class, &qualities, expect, example)
    };
    // The seed rule, re-checked on what attribute() returned: a power-trace number needs ≥ 2 samples.
    let violations: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.power_trace.outcome.is_good() && r.power_trace.in_window_samples < 2)
        .map(|(_, r)| {
            format!(
                "{}: power-trace energy with {} in-window samples",
                r.event.label, r.power_trace.in_window_samples
            )
        })
        .collect();
    let parts = vec![
        class_finding(EventClass::Prefill, p.expect_prefill),
        class_finding(EventClass::Decode, p.expect_decode),
        Part::compare(
            GATING_RULE,
            violations.len() as f64,
            Threshold::equal(0.0),
            if violations.is_empty() {
                format!(
                    "{} events, none with a number from fewer than 2 samples",
                    results.len()
                )
            } else {
                violations.join("; ")
            },
        ),
    ];
    let good = |class| {
        of(class)
            .filter(|r| r.quality() == EnergyQuality::Good)
            .count()
    };
    let mut metrics = Metrics::default();
    metrics.insert("idle_mean_w", idle.mean_w);
    metrics.insert("idle_std_w", idle.std_w);
    metrics.insert("idle_at_rest", f64::from(u8::from(settled.at_rest)));
    metrics.insert("idle_settle_waited_s", settled.waited_s);
    if let Some(r) = &settled.reference {
        metrics.insert("idle_reference_w", r.mean_w);
    }
    if let Some(v) = trace.cadence.median_period_s {
        metrics.insert("poll_period_median_ms", v * 1e3);
    }
    if let Some(v) = trace.cadence.p99_gap_s {
        metrics.insert("poll_gap_p99_ms", v * 1e3);
    }
    metrics.insert("prefill_events_good", good(EventClass::Prefill) as f64);
    metrics.insert("decode_events_good", good(EventClass::Decode) as f64);
    let per_token: Vec<f64> = summaries
        .iter()
        .filter(|(c, _)| *c == EventClass::Decode)
        .filter_map(|(_, s)| s.net_j_per_token)
        .collect();
    if let Some(m) = median(&per_token) {
        metrics.insert("decode_net_j_per_token_median", m);
    }
    let mut no_data: Vec<NoDataNote> = Vec::new();
    for (class, r) in &results {
        if let Some(reason) = r.no_data_reason() {
            let subject = format!("{} events", class.name());
            match no_data
                .iter_mut()
                .find(|n| n.subject == subject && n.reason == reason)
            {
                Some(n) => n.count += 1,
                None => no_data.push(NoDataNote {
                    subject,
                    reason,
                    count: 1,
                }),
            }
        }
    }
    let summary = format!(
        "{} (idle {:.1} ± {:.1} W, n = {}; poll median {:.0} ms, p99 gap {:.0} ms){}",
        results
            .first()
            .map(|(_, r)| r.sensor.as_str())
            .unwrap_or("sensor"),
        idle.mean_w,
        idle.std_w,
        idle.n,
        trace.cadence.median_period_s.unwrap_or(f64::NAN) * 1e3,
        trace.cadence.p99_gap_s.unwrap_or(f64::NAN) * 1e3,
        metrics
            .get("decode_net_j_per_token_median")
            .map(|j| format!("; decode {j:.4} J/token net"))
            .unwrap_or_default()
    );
    let summary = format!("{summary}; {}", settled.statement);
    Evaluation::judged(parts, summary)
        .with_runs(&records, plan.repetitions)
        .with_metrics(metrics)
        .with_no_data(no_data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{verdict::derive, Outcome, Verdict};

    /// A machine with a readable GPU sensor and no readable CPU sensor (a cloud VM with a GPU).
    struct GpuOnly;

    impl SensorProbe for GpuOnly {
        fn nvml(&self, index: u32) -> Result<std::sync::Arc<dyn energy::PowerSensor>, String> {
            if index == 0 {
                Ok(std::sync::Arc::new(energy::NoSensor::new(
                    "stands for NVML device 0",
                )))
            } else {
                Err(format!("NVML sees 1 device, not {index}"))
            }
        }
        fn rapl_zones(&self) -> Result<Vec<energy::RaplSensor>, String> {
            Err("no /sys/class/powercap (virtual machine)".into())
        }
    }

    #[test]
    fn a_cpu_backend_is_never_measured_with_the_gpu_sensor() {
        // Item 4: the best sensor (NVML first) was read for CPU backends, charging GPU power to CPU
        // inference. Now a CPU backend needs RAPL: without it the trial SKIPs with the fix.
        let skip = sensor_precondition("ort-cpu", &GpuOnly).expect("a CPU backend without RAPL");
        assert_eq!(skip.cause, SkipCause::Precondition);
        assert!(
            skip.reason.contains("RAPL")
                && skip.reason.contains("cpu")
                && skip.reason.contains("fix: RAPL needs"),
            "{}",
            skip.reason
        );
        assert!(sensor_precondition("llama-cpp", &GpuOnly).is_some());
        // The GPU backend's own sensor is readable: it runs.
        assert_eq!(sensor_precondition("tch-cuda-bf16", &GpuOnly), None);
        // A server that picks its own device is decided when it is opened.
        assert_eq!(sensor_precondition("ollama", &GpuOnly), None);
    }

    /// A CPU-only machine (RAPL readable, no NVML).
    struct CpuOnly;

    impl SensorProbe for CpuOnly {
        fn nvml(&self, _index: u32) -> Result<std::sync::Arc<dyn energy::PowerSensor>, String> {
            Err("libnvidia-ml.so.1 not found".into())
        }
        fn rapl_zones(&self) -> Result<Vec<energy::RaplSensor>, String> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn every_gpu_backend_of_the_gate_file_is_measured_with_its_own_gpu_sensor() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gates/energy.gating.toml");
        let spec = crate::gate::GateSpec::load(&path).unwrap();
        let gpu: Vec<&str> = spec
            .backends
            .iter()
            .map(String::as_str)
            .filter(|b| *b != "ort-cpu")
            .collect();
        assert!(gpu.contains(&"tch-cuda-graph-bf16") && gpu.contains(&"llama-cpp-cuda"));
        for id in gpu {
            // The device is known before opening (so the idle is settled outside this process's
            // CUDA context), and it is CUDA device 0: NVML device 0, never RAPL.
            assert_eq!(requested_device(id), Some(ComputeDevice::Cuda(0)), "{id}");
            assert_eq!(sensor_precondition(id, &GpuOnly), None, "{id}");
            let skip = sensor_precondition(id, &CpuOnly).expect("no NVML: SKIP");
            assert!(
                skip.reason.contains("NVML") && skip.reason.contains("fix:"),
                "{id}: {}",
                skip.reason
            );
        }
    }

    #[test]
    fn every_registry_backend_with_a_fixed_device_names_it() {
        use crate::backend::registry::{known_ids, requested_device};
        assert_eq!(requested_device("llama-cpp"), Some(ComputeDevice::Cpu));
        assert_eq!(requested_device("ort-cpu-q4"), Some(ComputeDevice::Cpu));
        assert_eq!(
            requested_device("tch-cuda-bf16"),
            Some(ComputeDevice::Cuda(0))
        );
        assert_eq!(requested_device("ollama"), None);
        assert_eq!(requested_device("tch-auto"), None);
        let undecided: Vec<&str> = known_ids()
            .into_iter()
            .filter(|id| requested_device(id).is_none())
            .collect();
        assert_eq!(undecided, ["ollama", "tch-auto"]);
    }

    #[test]
    fn no_events_of_a_class_is_no_data_not_a_pass() {
        // Item 4: "prefill 0/0 good, decode 0/0 good" was a PASS when every run errored.
        let parts = vec![
            class_part(EventClass::Prefill, &[], Some(EnergyQuality::NoData), None),
            class_part(EventClass::Decode, &[], Some(EnergyQuality::Good), None),
        ];
        let (v, m, _) = derive(&Outcome::Judged { parts }, "", &[]);
        assert_eq!(v, Verdict::Fail, "{m}");
        assert!(m.contains("no prefill event was measured"), "{m}");
        let held = class_part(
            EventClass::Decode,
            &[EnergyQuality::Good, EnergyQuality::Good],
            Some(EnergyQuality::Good),
            None,
        );
        assert_eq!(
            derive(&Outcome::Judged { parts: vec![held] }, "", &[]).0,
            Verdict::Pass
        );
        let mixed = class_part(
            EventClass::Decode,
            &[EnergyQuality::Good, EnergyQuality::NoData],
            Some(EnergyQuality::Good),
            Some("1 in-window sample".into()),
        );
        assert!(mixed.detail.contains("1/2") && mixed.detail.contains("1 in-window sample"));
    }
}
