//! Over 600 lines because it is all tests (attribution properties, edge cases, poller, sensors).
//! Property tests over synthetic traces (no GPU here, so the traces are test doubles), plus the
//! real path: sensor detection and polling on this machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn info(
    has_power: bool,
    averaging_window_s: Option<f64>,
    counter_update_period_s: Option<f64>,
    wrap: Option<f64>,
) -> SensorInfo {
    SensorInfo {
        name: "synthetic".into(),
        description: "synthetic trace (test double)".into(),
        has_power,
        averaging_window_s,
        counter_update_period_s,
        counter_wraps_at_j: wrap,
    }
}

fn baseline(mean_w: f64) -> IdleBaseline {
    IdleBaseline::new(mean_w, 1.0, 10).expect("valid baseline")
}

/// Sample times from a start and positive gaps.
fn times_from(t0: f64, gaps: &[f64]) -> Vec<f64> {
    let mut t = vec![t0];
    for g in gaps {
        let last = t[t.len() - 1];
        t.push(last + g);
    }
    t
}

fn power_trace(times: &[f64], watts: &[f64], averaging_window_s: Option<f64>) -> PowerTrace {
    let power = times
        .iter()
        .zip(watts)
        .map(|(&t_s, &w)| PowerSample { t_s, watts: w })
        .collect();
    PowerTrace::from_samples(
        info(true, averaging_window_s, None, None),
        0.1,
        power,
        vec![],
    )
}

fn count_in(times: &[f64], s: f64, e: f64) -> usize {
    times.iter().filter(|&&t| t >= s && t <= e).count()
}

/// Piecewise-linear power through the sample points, evaluated independently of the
/// implementation: midpoint rule with `n` steps, walking the segments once.
fn midpoint_integral(times: &[f64], watts: &[f64], s: f64, e: f64, n: usize) -> f64 {
    let h = (e - s) / n as f64;
    let mut seg = 0;
    let mut sum = 0.0;
    for k in 0..n {
        let t = s + (k as f64 + 0.5) * h;
        while seg + 2 < times.len() && times[seg + 1] < t {
            seg += 1;
        }
        let (t0, t1) = (times[seg], times[seg + 1]);
        let p = watts[seg] + (watts[seg + 1] - watts[seg]) * (t - t0) / (t1 - t0);
        sum += p * h;
    }
    sum
}

prop_compose! {
    fn arb_power_trace()(gaps in prop::collection::vec(0.01f64..0.3, 2..60), t0 in 0.0f64..10.0)
        (watts in prop::collection::vec(0.0f64..500.0, gaps.len() + 1), gaps in Just(gaps), t0 in Just(t0))
        -> (Vec<f64>, Vec<f64>) {
        (times_from(t0, &gaps), watts)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Seed rule: no power-trace number with fewer than 2 in-window samples, for any window.
    #[test]
    fn no_number_with_fewer_than_two_in_window_samples(
        (times, watts) in arb_power_trace(),
        start_frac in -0.1f64..1.1,
        dur in 0.0005f64..2.0,
        window in prop::option::of(0.05f64..1.5),
    ) {
        let span = times[times.len() - 1] - times[0];
        let s = times[0] + start_frac * span;
        let e = s + dur;
        let trace = power_trace(&times, &watts, window);
        let r = attribute(&EventWindow::new("e", s, e), &trace, &baseline(10.0));
        let n = count_in(&times, s, e);
        prop_assert_eq!(r.power_trace.in_window_samples, n);
        if n < 2 {
            prop_assert!(!r.power_trace.outcome.is_good(), "{:?}", r.power_trace);
            prop_assert!(r.power_trace.outcome.reason().is_some_and(|m| m.contains("need ≥ 2")));
        }
        if let Some(w) = window {
            if dur < w {
                prop_assert!(!r.power_trace.outcome.is_good());
            }
        }
        // No counter in this trace: never a counter number.
        prop_assert!(!r.counter.outcome.is_good());
        prop_assert!(r.summary(Some(10)).gross_j.is_none() || n >= 2);
    }

    /// A window strictly between two samples, or around exactly one, is no_data.
    #[test]
    fn windows_with_zero_or_one_sample_are_no_data(
        (times, watts) in arb_power_trace(),
        pick in any::<prop::sample::Index>(),
        a in 0.01f64..0.99,
        b in 0.01f64..0.99,
    ) {
        let i = pick.index(times.len() - 1);
        let (t0, t1) = (times[i], times[i + 1]);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let trace = power_trace(&times, &watts, None);
        if hi > lo {
            let zero = EventWindow::new("between", t0 + lo * (t1 - t0), t0 + hi * (t1 - t0));
            let r = attribute(&zero, &trace, &baseline(0.0));
            prop_assert_eq!(r.power_trace.in_window_samples, 0);
            prop_assert_eq!(r.quality(), EnergyQuality::NoData);
            prop_assert!(r.no_data_reason().is_some());
            prop_assert_eq!(energy_per_token(&r, 5), EnergyPerToken::NoData { reason: r.no_data_reason().unwrap_or_default() });
        }
        // Around sample i+1 only: from inside gap i to inside gap i+1 (if there is one).
        if i + 2 < times.len() {
            let t2 = times[i + 2];
            let one = EventWindow::new("one", t0 + a * (t1 - t0), t1 + b * (t2 - t1));
            let r = attribute(&one, &trace, &baseline(0.0));
            prop_assert_eq!(r.power_trace.in_window_samples, 1);
            prop_assert!(!r.power_trace.outcome.is_good());
        }
    }

    /// net = gross − idle × duration ≤ gross, for both methods, whenever there is a number.
    #[test]
    fn net_never_exceeds_gross(
        (times, watts) in arb_power_trace(),
        start_frac in 0.0f64..0.5,
        dur_frac in 0.05f64..0.5,
        idle in 0.0f64..400.0,
        power in 1.0f64..500.0,
    ) {
        let span = times[times.len() - 1] - times[0];
        let s = times[0] + start_frac * span;
        let e = s + dur_frac * span;
        let power_samples = times.iter().zip(&watts).map(|(&t_s, &w)| PowerSample { t_s, watts: w }).collect();
        let counter = times.iter().map(|&t| CounterSample { t_s: t, joules: 1000.0 + power * t }).collect();
        let trace = PowerTrace::from_samples(info(true, None, Some(0.01), None), 0.1, power_samples, counter);
        let r = attribute(&EventWindow::new("e", s, e), &trace, &baseline(idle));
        for m in [&r.counter, &r.power_trace] {
            if let EnergyOutcome::Good { gross_j, net_j, mean_power_w } = m.outcome {
                prop_assert!(net_j <= gross_j);
                prop_assert!((net_j - (gross_j - idle * (e - s))).abs() <= 1e-9 * (1.0 + gross_j.abs()));
                prop_assert!((mean_power_w * (e - s) - gross_j).abs() <= 1e-9 * (1.0 + gross_j.abs()));
            }
        }
    }

    /// The power-trace integral equals the integral of the piecewise-linear power through the
    /// samples (interpolated to the window edges), computed independently by a fine midpoint rule.
    #[test]
    fn integral_matches_piecewise_linear_truth(
        (times, watts) in arb_power_trace(),
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
        pick in any::<prop::sample::Index>(),
    ) {
        prop_assume!(times.len() >= 5);
        // start in gap i, end in gap j ≥ i + 2: at least 2 samples inside.
        let i = pick.index(times.len() - 4);
        let j = i + 2 + pick.index(times.len() - 3 - i);
        let s = times[i] + a * (times[i + 1] - times[i]);
        let e = times[j] + b * (times[j + 1] - times[j]);
        let trace = power_trace(&times, &watts, None);
        let r = attribute(&EventWindow::new("e", s, e), &trace, &baseline(0.0));
        let EnergyOutcome::Good { gross_j, .. } = r.power_trace.outcome else {
            return Err(TestCaseError::fail(format!("expected a number: {:?}", r.power_trace)));
        };
        let truth = midpoint_integral(&times, &watts, s, e, 100_000);
        prop_assert!((gross_j - truth).abs() <= 1e-5 * truth.abs() + 1e-3, "{} vs {}", gross_j, truth);
    }

    /// Linear power p(t) = c + k t: the trapezoid result equals the closed form.
    #[test]
    fn integral_of_linear_power_is_exact(
        gaps in prop::collection::vec(0.01f64..0.2, 4..40),
        c in 0.0f64..300.0,
        k in 0.0f64..50.0,
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
    ) {
        let times = times_from(1.0, &gaps);
        let watts: Vec<f64> = times.iter().map(|t| c + k * t).collect();
        let s = times[0] + a * (times[1] - times[0]);
        let last = times.len() - 1;
        let e = times[last - 1] + b * (times[last] - times[last - 1]);
        let r = attribute(&EventWindow::new("e", s, e), &power_trace(&times, &watts, None), &baseline(0.0));
        let truth = c * (e - s) + k * (e * e - s * s) / 2.0;
        let got = r.power_trace.outcome.energy_j().map(|x| x.0);
        prop_assert!(got.is_some_and(|g| (g - truth).abs() <= 1e-9 * truth.abs() + 1e-9), "{:?} vs {}", got, truth);
    }

    /// A counter that wraps (at a known value) gives the true delta; without a wrap value the same
    /// decrease is a reset and no number.
    #[test]
    fn counter_wrap_is_unwrapped(
        gaps in prop::collection::vec(0.05f64..0.1, 10..80),
        power in 1.0f64..500.0,
        wrap in 60.0f64..2000.0,
        offset_frac in 0.0f64..1.0,
        a in 0.0f64..1.0,
    ) {
        let times = times_from(0.0, &gaps);
        let e0 = offset_frac * wrap;
        let raw: Vec<CounterSample> = times.iter().map(|&t| CounterSample { t_s: t, joules: (e0 + power * t) % wrap }).collect();
        let wraps_inside = raw.windows(2).any(|w| w[1].joules < w[0].joules);
        let s = times[0] + a * (times[1] - times[0]);
        let e = times[times.len() - 1];
        let event = EventWindow::new("decode", s, e);
        let wrapped = PowerTrace::from_samples(info(false, None, Some(0.001), Some(wrap)), 0.1, vec![], raw.clone());
        let r = attribute(&event, &wrapped, &baseline(0.0));
        let got = r.counter.outcome.energy_j().map(|x| x.0);
        let truth = power * (e - s);
        prop_assert!(got.is_some_and(|g| (g - truth).abs() <= 1e-6 * truth), "{:?} vs {}", r.counter, truth);
        prop_assert_eq!(r.preferred().map(|m| m.method), Some(EnergyMethod::Counter));

        let no_wrap_value = PowerTrace::from_samples(info(false, None, Some(0.001), None), 0.1, vec![], raw);
        let r2 = attribute(&event, &no_wrap_value, &baseline(0.0));
        if wraps_inside {
            prop_assert!(r2.counter.outcome.reason().is_some_and(|m| m.contains("counter reset")), "{:?}", r2.counter);
        } else {
            prop_assert!(r2.counter.outcome.is_good());
        }
    }

    /// A counter that does not advance is no_data, never 0 J.
    #[test]
    fn zero_counter_delta_is_no_data(
        gaps in prop::collection::vec(0.05f64..0.1, 10..40),
        value in 0.0f64..1e6,
    ) {
        let times = times_from(0.0, &gaps);
        let raw = times.iter().map(|&t| CounterSample { t_s: t, joules: value }).collect();
        let trace = PowerTrace::from_samples(info(false, None, Some(0.001), None), 0.1, vec![], raw);
        let r = attribute(&EventWindow::new("idle", times[0], times[times.len() - 1]), &trace, &baseline(0.0));
        prop_assert!(r.counter.outcome.reason().is_some_and(|m| m.contains("did not advance")), "{:?}", r.counter);
        prop_assert_eq!(r.quality(), EnergyQuality::NoData);
    }

    /// Events shorter than the sensor's averaging window are no_data however many samples they
    /// hold; at or above it, with ≥ 2 samples, they get a number.
    #[test]
    fn event_shorter_than_averaging_window_is_no_data(
        window in 0.2f64..2.0,
        frac in 0.05f64..0.99,
        watts in 10.0f64..400.0,
    ) {
        let period = 0.01;
        let times: Vec<f64> = (0..=500).map(|i| i as f64 * period).collect();
        let ws = vec![watts; times.len()];
        let trace = power_trace(&times, &ws, Some(window));
        let short = EventWindow::new("prefill", 0.5, 0.5 + frac * window);
        let r = attribute(&short, &trace, &baseline(0.0));
        prop_assert!(r.power_trace.in_window_samples >= 2);
        prop_assert!(r.power_trace.outcome.reason().is_some_and(|m| m.contains("averaging window")), "{:?}", r.power_trace);
        let long = EventWindow::new("decode", 0.5, 0.5 + window);
        let r = attribute(&long, &trace, &baseline(0.0));
        let got = r.power_trace.outcome.energy_j().map(|x| x.0);
        prop_assert!(got.is_some_and(|g| (g - watts * window).abs() <= 1e-9 * watts * window), "{:?}", r.power_trace);
    }
}

#[test]
fn counter_window_shorter_than_two_update_periods_is_no_data() {
    // NVML-like: counter refreshed every 100 ms, read every 10 ms.
    let times: Vec<f64> = (0..=200).map(|i| i as f64 * 0.01).collect();
    let raw = times
        .iter()
        .map(|&t| CounterSample {
            t_s: t,
            joules: 50.0 * t,
        })
        .collect();
    let trace = PowerTrace::from_samples(info(false, None, Some(0.1), None), 0.01, vec![], raw);
    let short = attribute(
        &EventWindow::new("prefill", 0.5, 0.65),
        &trace,
        &baseline(0.0),
    );
    let reason = short.counter.outcome.reason().expect("150 ms < 2 × 100 ms");
    assert!(reason.contains("update period"), "{reason}");
    let long = attribute(
        &EventWindow::new("decode", 0.5, 0.75),
        &trace,
        &baseline(0.0),
    );
    let (gross, net) = long.counter.outcome.energy_j().expect("250 ms ≥ 200 ms");
    assert!((gross - 12.5).abs() < 1e-9, "{gross}");
    assert_eq!(gross, net);
}

#[test]
fn counter_read_too_rarely_is_no_data() {
    // Counter updates every 1 ms but is read only every 0.5 s: a 0.6 s event is under 2 gaps.
    let times: Vec<f64> = (0..=10).map(|i| i as f64 * 0.5).collect();
    let raw = times
        .iter()
        .map(|&t| CounterSample {
            t_s: t,
            joules: 20.0 * t,
        })
        .collect();
    let trace = PowerTrace::from_samples(info(false, None, Some(0.001), None), 0.5, vec![], raw);
    let r = attribute(&EventWindow::new("e", 1.1, 1.7), &trace, &baseline(0.0));
    let reason = r.counter.outcome.reason().expect("0.6 s < 2 × 0.5 s");
    assert!(reason.contains("largest gap"), "{reason}");
}

#[test]
fn events_outside_the_trace_are_no_data() {
    let times: Vec<f64> = (0..=20).map(|i| 1.0 + i as f64 * 0.1).collect();
    let trace = power_trace(&times, &vec![100.0; times.len()], None);
    let before = attribute(
        &EventWindow::new("early", 0.5, 1.35),
        &trace,
        &baseline(0.0),
    );
    assert!(before
        .power_trace
        .outcome
        .reason()
        .is_some_and(|m| m.contains("at or before the event start")));
    let after = attribute(&EventWindow::new("late", 2.75, 3.5), &trace, &baseline(0.0));
    assert!(after
        .power_trace
        .outcome
        .reason()
        .is_some_and(|m| m.contains("at or after the event end")));
    let backwards = attribute(&EventWindow::new("bad", 1.5, 1.2), &trace, &baseline(0.0));
    assert!(backwards
        .no_data_reason()
        .is_some_and(|m| m.contains("no positive duration")));
    let nan = attribute(
        &EventWindow::new("nan", f64::NAN, 1.2),
        &trace,
        &baseline(0.0),
    );
    assert_eq!(nan.quality(), EnergyQuality::NoData);
}

#[test]
fn summary_and_per_token_carry_numbers_only_when_good() {
    let times: Vec<f64> = (0..=30).map(|i| i as f64 * 0.1).collect();
    let trace = power_trace(&times, &vec![100.0; times.len()], None);
    let b = baseline(40.0);
    let r = attribute(&EventWindow::new("decode", 0.5, 2.5), &trace, &b);
    let s = r.summary(Some(64));
    assert_eq!(s.quality, EnergyQuality::Good);
    assert_eq!(s.method, Some(EnergyMethod::PowerTrace));
    let gross = s.gross_j.expect("good");
    assert!((gross - 200.0).abs() < 1e-9);
    assert!((s.net_j.expect("good") - 120.0).abs() < 1e-9);
    assert!((s.gross_j_per_token.expect("tokens given") - 200.0 / 64.0).abs() < 1e-12);
    assert!(s.to_string().contains("good via power_trace"), "{s}");
    assert_eq!(
        energy_per_token(&r, 0),
        EnergyPerToken::NoData {
            reason: "0 tokens in the event".into()
        }
    );

    let short = attribute(&EventWindow::new("prefill", 0.51, 0.55), &trace, &b).summary(Some(12));
    assert_eq!(short.quality, EnergyQuality::NoData);
    assert!(short.gross_j.is_none() && short.net_j.is_none() && short.gross_j_per_token.is_none());
    assert!(short.to_string().contains("no_data"), "{short}");
    let json = serde_json::to_value(&short).expect("serializable");
    assert!(json["gross_j"].is_null());

    let full = serde_json::to_value(&r).expect("serializable");
    assert_eq!(full["power_trace"]["outcome"]["quality"], "good");
    assert_eq!(full["counter"]["outcome"]["quality"], "no_data");
    let back: EnergyResult = serde_json::from_value(full.clone()).expect("round trip");
    assert_json_close(&serde_json::to_value(&back).expect("serializable"), &full);
}

/// JSON trees equal up to the last bit of f64 parsing (serde_json's default float parser is not
/// exactly round-trip).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            assert!((x - y).abs() <= 1e-12 * (1.0 + x.abs()), "{x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(x, y)| assert_json_close(x, y));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            x.iter()
                .zip(y.values())
                .for_each(|((_, x), y)| assert_json_close(x, y));
        }
        _ => assert_eq!(a, b),
    }
}

/// A power sensor test double whose power ramps with each read and whose counter integrates it.
struct RampSensor {
    reads: AtomicU64,
}

impl PowerSensor for RampSensor {
    fn name(&self) -> &str {
        "ramp"
    }
    fn describe(&self) -> String {
        "test double: power = 100 + reads W".into()
    }
    fn has_power(&self) -> bool {
        true
    }
    fn read_power_w(&self) -> Result<f64, crate::error::EnergyError> {
        Ok(100.0 + self.reads.fetch_add(1, Ordering::SeqCst) as f64)
    }
    fn averaging_window(&self) -> Option<Duration> {
        None
    }
    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, crate::error::EnergyError> {
        Ok(Some(CounterReading {
            joules: self.reads.load(Ordering::SeqCst) as f64,
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

#[test]
fn poller_records_sorted_samples_with_start_and_stop_readings() {
    let sensor: Arc<dyn PowerSensor> = Arc::new(RampSensor {
        reads: AtomicU64::new(0),
    });
    let poller = PowerPoller::start(sensor, Duration::from_millis(5)).expect("thread starts");
    std::thread::sleep(Duration::from_millis(30));
    let trace = poller.stop();
    assert!(
        trace.power.len() >= 2,
        "one reading at start and one at stop"
    );
    assert_eq!(trace.power.len(), trace.counter.len());
    assert!(trace.power.windows(2).all(|w| w[0].t_s < w[1].t_s));
    assert!(
        trace.started_s <= trace.power[0].t_s
            && trace.power[trace.power.len() - 1].t_s <= trace.stopped_s
    );
    assert_eq!(trace.read_errors, 0);
    assert_eq!(trace.cadence.samples, trace.power.len());
    assert!(
        trace.cadence.median_period_s.is_some() && trace.cadence.median_read_latency_s.is_some()
    );
    assert_eq!(trace.sensor.name, "ramp");
    // The whole trace as one event: the samples bracket it exactly.
    let event = EventWindow::new(
        "all",
        trace.power[0].t_s,
        trace.power[trace.power.len() - 1].t_s,
    );
    let r = attribute(&event, &trace, &baseline(0.0));
    assert!(r.power_trace.outcome.is_good(), "{:?}", r.power_trace);
    let json = serde_json::to_string(&trace).expect("trace serializes");
    let back: PowerTrace = serde_json::from_str(&json).expect("trace deserializes");
    assert_json_close(
        &serde_json::to_value(&back).expect("serializable"),
        &serde_json::to_value(&trace).expect("serializable"),
    );
}

#[test]
fn no_sensor_gives_no_data_with_its_reason() {
    let sensor: Arc<dyn PowerSensor> = Arc::new(NoSensor::new("no GPU and no RAPL on this box"));
    let poller = PowerPoller::start(sensor, Duration::from_millis(5)).expect("thread starts");
    let trace = poller.stop();
    assert!(trace.power.is_empty() && trace.counter.is_empty());
    assert!(trace.read_errors >= 2);
    let event = EventWindow::new(
        "decode",
        trace.started_s,
        trace.stopped_s.max(trace.started_s + 1.0),
    );
    let r = attribute(&event, &trace, &baseline(20.0));
    assert_eq!(r.quality(), EnergyQuality::NoData);
    let reason = r.no_data_reason().expect("no data");
    assert!(reason.contains("reads no power"), "{reason}");
    assert!(reason.contains("has no energy counter"), "{reason}");
    assert!(reason.contains("no GPU and no RAPL"), "{reason}");
    let baseline_err = IdleBaseline::from_trace(&trace)
        .expect_err("no idle values")
        .to_string();
    assert!(
        baseline_err.contains("no GPU and no RAPL"),
        "{baseline_err}"
    );
}

/// Real path: detection on this machine. Every sensor kind that is not readable gives a reason;
/// where RAPL is readable it is polled for real; with no readable sensor, events are no_data
/// with the detection reasons.
#[test]
fn detect_sensors_on_this_machine() {
    let d = detect_sensors();
    for u in &d.unreadable {
        assert!(
            !u.reason.trim().is_empty(),
            "{} has an empty reason",
            u.kind
        );
    }
    for kind in ["NVML", "RAPL"] {
        let readable = d
            .readable
            .iter()
            .any(|s| s.name().to_ascii_uppercase().starts_with(kind));
        let reasoned = d.unreadable.iter().any(|u| u.kind == kind);
        assert!(
            readable || reasoned,
            "{kind} is neither readable nor explained: {d:?}"
        );
    }
    let lines = doctor_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("NVML") || l.contains("nvml")),
        "{lines:?}"
    );
    eprintln!("detected: {d:?}");
    for l in &lines {
        eprintln!("{l}");
    }

    // Every readable sensor (RAPL here if permitted; NVML on a GPU machine) is polled for real.
    for s in &d.readable {
        let poller =
            PowerPoller::start(Arc::clone(s), Duration::from_millis(50)).expect("thread starts");
        std::thread::sleep(Duration::from_millis(500));
        let trace = poller.stop();
        eprintln!(
            "{}: {} power samples, {} counter readings, cadence {:?}",
            s.name(),
            trace.power.len(),
            trace.counter.len(),
            trace.cadence
        );
        assert_eq!(trace.read_errors, 0, "{:?}", trace.first_read_error);
        if s.has_power() {
            assert!(
                trace.power.len() >= 2,
                "one reading at start and one at stop"
            );
            assert!(trace
                .power
                .iter()
                .all(|p| p.watts.is_finite() && p.watts >= 0.0));
        }
        if s.counter_update_period().is_some() {
            assert!(
                trace.counter.len() >= 2,
                "one reading at start and one at stop"
            );
            let wrap = trace.sensor.counter_wraps_at_j;
            for w in trace.counter.windows(2) {
                assert!(
                    w[1].joules >= w[0].joules || wrap.is_some(),
                    "{}: counter went backwards without a wrap value",
                    s.name()
                );
            }
        }
        match IdleBaseline::from_trace(&trace) {
            Ok(b) => eprintln!("{}: idle over the test: {b:?}", s.name()),
            Err(e) => eprintln!("{}: no idle baseline: {e}", s.name()),
        }
        let whole = EventWindow::new("whole trace", trace.started_s, trace.stopped_s);
        eprintln!(
            "{}",
            attribute(&whole, &trace, &baseline(0.0)).summary(None)
        );
    }

    if d.readable.is_empty() {
        let sensor = d.best();
        let poller = PowerPoller::start(Arc::clone(&sensor), Duration::from_millis(5))
            .expect("thread starts");
        let trace = poller.stop();
        let r = attribute(
            &EventWindow::new("decode", trace.started_s, trace.started_s + 1.0),
            &trace,
            &baseline(0.0),
        );
        assert_eq!(r.quality(), EnergyQuality::NoData);
        assert!(
            r.no_data_reason().is_some_and(|m| m.contains("NVML")),
            "{:?}",
            r.no_data_reason()
        );
        assert!(
            trace
                .first_read_error
                .as_deref()
                .is_some_and(|e| e.contains("NVML")),
            "{:?}",
            trace.first_read_error
        );
    }
}
