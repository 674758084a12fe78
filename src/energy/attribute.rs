//! Per-event energy with the TR122 gates: a number only where the sensor could see the event,
//! otherwise `no_data` with the reason. Both methods are evaluated for every event:
//!
//! **Power trace** (needs a power-reading sensor):
//! 1. at least 2 power samples with `start ≤ t ≤ end` (the seed rule, TR122 §8.4);
//! 2. if each reading averages over a window `W` (NVML on H100: 1 s), the event lasts ≥ `W`;
//! 3. the trace has samples at or before `start` and at or after `end`.
//!
//! Energy is the trapezoid rule over the in-window samples **plus the two boundaries**, where the
//! power at `start`/`end` is linearly interpolated between the samples bracketing the boundary.
//! So the integral covers exactly `[start, end]`, matching `duration` in the idle subtraction, and
//! is exact for a power that is linear between samples.
//!
//! **Counter** (needs a cumulative energy counter):
//! 1. readings at or before `start` and at or after `end`;
//! 2. the event lasts ≥ 2 × max(counter update period, largest gap between the readings used):
//!    the counter can only resolve what it was read and refreshed often enough to see;
//! 3. no unexplained decrease (a reset) between those readings; a decrease on a sensor with a known
//!    wrap value is a wrap and is unwrapped (at most one wrap between two readings is assumed);
//! 4. the delta is > 0.
//!
//! Energy is the unwrapped counter linearly interpolated to `start` and `end`, subtracted.
//!
//! Even for an event ≥ `W`, averaged readings near its start still carry pre-event power, which
//! is one more reason the counter is preferred where it is good.
//!
//! Duration comparisons allow 1 ns of slack for f64 rounding of `end − start`.
//!
//! In both, `gross` is the measured energy and `net = gross − idle_mean × duration` (so net ≤ gross
//! for any valid baseline; net can be negative when the event drew less than the idle mean, and
//! is not clamped). [`EnergyResult::preferred`] takes the counter when it is good (it does not lag
//! like an averaged power reading), else the power trace.

use serde::{Deserialize, Serialize};

use super::baseline::IdleBaseline;
use super::poller::{CounterSample, PowerSample, PowerTrace};

/// A timed event on the [`now_s`](super::now_s) clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventWindow {
    pub start_s: f64,
    pub end_s: f64,
    /// E.g. `prefill`, `decode`, `decode#3`.
    pub label: String,
}

impl EventWindow {
    pub fn new(label: impl Into<String>, start_s: f64, end_s: f64) -> Self {
        EventWindow {
            start_s,
            end_s,
            label: label.into(),
        }
    }
    pub fn duration_s(&self) -> f64 {
        self.end_s - self.start_s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyMethod {
    /// Delta of a cumulative energy counter.
    Counter,
    /// Trapezoid integral of power samples.
    PowerTrace,
}

impl std::fmt::Display for EnergyMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EnergyMethod::Counter => "counter",
            EnergyMethod::PowerTrace => "power_trace",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyQuality {
    Good,
    NoData,
}

/// A number, or the reason there is none. Serialized with a `quality` tag (`good` / `no_data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "quality", rename_all = "snake_case")]
pub enum EnergyOutcome {
    Good {
        gross_j: f64,
        /// `gross_j − idle_mean_w × duration_s`.
        net_j: f64,
        /// `gross_j / duration_s`.
        mean_power_w: f64,
    },
    NoData {
        reason: String,
    },
}

impl EnergyOutcome {
    pub fn quality(&self) -> EnergyQuality {
        match self {
            EnergyOutcome::Good { .. } => EnergyQuality::Good,
            EnergyOutcome::NoData { .. } => EnergyQuality::NoData,
        }
    }
    pub fn is_good(&self) -> bool {
        matches!(self, EnergyOutcome::Good { .. })
    }
    /// `(gross_j, net_j)` when good.
    pub fn energy_j(&self) -> Option<(f64, f64)> {
        match self {
            EnergyOutcome::Good { gross_j, net_j, .. } => Some((*gross_j, *net_j)),
            EnergyOutcome::NoData { .. } => None,
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self {
            EnergyOutcome::Good { .. } => None,
            EnergyOutcome::NoData { reason } => Some(reason),
        }
    }
}

/// One method's verdict for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodEnergy {
    pub method: EnergyMethod,
    /// Power samples (power trace) or counter readings (counter) with `start ≤ t ≤ end`.
    pub in_window_samples: usize,
    pub outcome: EnergyOutcome,
}

/// Both methods' verdicts for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyResult {
    pub event: EventWindow,
    pub duration_s: f64,
    pub sensor: String,
    pub idle_mean_w: f64,
    pub counter: MethodEnergy,
    pub power_trace: MethodEnergy,
}

impl EnergyResult {
    /// The counter if good, else the power trace if good, else `None`.
    pub fn preferred(&self) -> Option<&MethodEnergy> {
        [&self.counter, &self.power_trace]
            .into_iter()
            .find(|m| m.outcome.is_good())
    }

    pub fn quality(&self) -> EnergyQuality {
        if self.preferred().is_some() {
            EnergyQuality::Good
        } else {
            EnergyQuality::NoData
        }
    }

    /// Why neither method gave a number (`None` when one did).
    pub fn no_data_reason(&self) -> Option<String> {
        if self.preferred().is_some() {
            return None;
        }
        Some(format!(
            "counter: {}; power trace: {}",
            self.counter.outcome.reason().unwrap_or("-"),
            self.power_trace.outcome.reason().unwrap_or("-")
        ))
    }

    /// A flat record for reports; `tokens` adds energy per token.
    pub fn summary(&self, tokens: Option<u64>) -> EventEnergySummary {
        let preferred = self.preferred();
        let (gross_j, net_j, mean_power_w) = match preferred.map(|m| &m.outcome) {
            Some(EnergyOutcome::Good {
                gross_j,
                net_j,
                mean_power_w,
            }) => (Some(*gross_j), Some(*net_j), Some(*mean_power_w)),
            _ => (None, None, None),
        };
        let per_token = tokens.map(|t| energy_per_token(self, t));
        let (gross_j_per_token, net_j_per_token) = match &per_token {
            Some(EnergyPerToken::Good {
                gross_j_per_token,
                net_j_per_token,
                ..
            }) => (Some(*gross_j_per_token), Some(*net_j_per_token)),
            _ => (None, None),
        };
        EventEnergySummary {
            label: self.event.label.clone(),
            start_s: self.event.start_s,
            end_s: self.event.end_s,
            duration_s: self.duration_s,
            sensor: self.sensor.clone(),
            quality: self.quality(),
            method: preferred.map(|m| m.method),
            in_window_samples: preferred.unwrap_or(&self.power_trace).in_window_samples,
            gross_j,
            net_j,
            mean_power_w,
            idle_mean_w: self.idle_mean_w,
            counter_gross_j: self.counter.outcome.energy_j().map(|e| e.0),
            power_trace_gross_j: self.power_trace.outcome.energy_j().map(|e| e.0),
            tokens,
            gross_j_per_token,
            net_j_per_token,
            reason: self.no_data_reason(),
        }
    }
}

/// Energy per token of an event, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "quality", rename_all = "snake_case")]
pub enum EnergyPerToken {
    Good {
        method: EnergyMethod,
        tokens: u64,
        gross_j_per_token: f64,
        net_j_per_token: f64,
    },
    NoData {
        reason: String,
    },
}

/// The preferred method's energy divided by `tokens`; `NoData` when the event has no energy or
/// `tokens` is 0.
pub fn energy_per_token(result: &EnergyResult, tokens: u64) -> EnergyPerToken {
    if tokens == 0 {
        return EnergyPerToken::NoData {
            reason: "0 tokens in the event".into(),
        };
    }
    match result.preferred() {
        Some(MethodEnergy {
            method,
            outcome: EnergyOutcome::Good { gross_j, net_j, .. },
            ..
        }) => EnergyPerToken::Good {
            method: *method,
            tokens,
            gross_j_per_token: gross_j / tokens as f64,
            net_j_per_token: net_j / tokens as f64,
        },
        _ => EnergyPerToken::NoData {
            reason: result
                .no_data_reason()
                .unwrap_or_else(|| "no energy for the event".into()),
        },
    }
}

/// One printable line per event; `None` fields are absent data, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnergySummary {
    pub label: String,
    pub start_s: f64,
    pub end_s: f64,
    pub duration_s: f64,
    pub sensor: String,
    pub quality: EnergyQuality,
    /// The method behind `gross_j`/`net_j`.
    pub method: Option<EnergyMethod>,
    pub in_window_samples: usize,
    pub gross_j: Option<f64>,
    pub net_j: Option<f64>,
    pub mean_power_w: Option<f64>,
    pub idle_mean_w: f64,
    /// Both methods' gross energy, to compare them where both are good.
    pub counter_gross_j: Option<f64>,
    pub power_trace_gross_j: Option<f64>,
    pub tokens: Option<u64>,
    pub gross_j_per_token: Option<f64>,
    pub net_j_per_token: Option<f64>,
    pub reason: Option<String>,
}

impl std::fmt::Display for EventEnergySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{:.3} s, {:.1} ms]: ",
            self.label,
            self.start_s,
            self.duration_s * 1e3
        )?;
        match (self.method, self.gross_j, self.net_j) {
            (Some(method), Some(gross), Some(net)) => {
                write!(
                    f,
                    "good via {method} ({} in-window samples): gross {gross:.4} J, net {net:.4} J",
                    self.in_window_samples
                )?;
                if let (Some(g), Some(n), Some(t)) =
                    (self.gross_j_per_token, self.net_j_per_token, self.tokens)
                {
                    write!(f, "; {t} tokens: {g:.5} J/token gross, {n:.5} J/token net")?;
                }
                Ok(())
            }
            _ => write!(
                f,
                "no_data ({} in-window samples): {}",
                self.in_window_samples,
                self.reason.as_deref().unwrap_or("no reason recorded")
            ),
        }
    }
}

/// Attributes energy to `event` from `trace`, net of `baseline`. Never returns a number that the
/// gates in the module documentation do not allow.
pub fn attribute(event: &EventWindow, trace: &PowerTrace, baseline: &IdleBaseline) -> EnergyResult {
    let duration_s = event.duration_s();
    let invalid = if !(event.start_s.is_finite() && event.end_s.is_finite()) {
        Some(format!(
            "event window [{}, {}] is not finite",
            event.start_s, event.end_s
        ))
    } else if duration_s <= 0.0 {
        Some(format!(
            "event window [{}, {}] has no positive duration",
            event.start_s, event.end_s
        ))
    } else if !(baseline.mean_w.is_finite() && baseline.mean_w >= 0.0) {
        Some(format!(
            "idle baseline mean {} W is not a finite power ≥ 0",
            baseline.mean_w
        ))
    } else {
        None
    };
    let (counter, power_trace) = match invalid {
        Some(reason) => (
            MethodEnergy {
                method: EnergyMethod::Counter,
                in_window_samples: 0,
                outcome: EnergyOutcome::NoData {
                    reason: reason.clone(),
                },
            },
            MethodEnergy {
                method: EnergyMethod::PowerTrace,
                in_window_samples: 0,
                outcome: EnergyOutcome::NoData { reason },
            },
        ),
        None => (
            counter_energy(event, trace, baseline.mean_w),
            power_trace_energy(event, trace, baseline.mean_w),
        ),
    };
    EnergyResult {
        event: event.clone(),
        duration_s,
        sensor: trace.sensor.name.clone(),
        idle_mean_w: baseline.mean_w,
        counter,
        power_trace,
    }
}

fn good(gross_j: f64, duration_s: f64, idle_mean_w: f64) -> EnergyOutcome {
    if !gross_j.is_finite() {
        return EnergyOutcome::NoData {
            reason: format!("non-finite energy {gross_j} from the readings in the window"),
        };
    }
    EnergyOutcome::Good {
        gross_j,
        net_j: gross_j - idle_mean_w * duration_s,
        mean_power_w: gross_j / duration_s,
    }
}

/// Slack for duration comparisons: timestamps are differences of f64 seconds, so an event exactly
/// `W` long may compute as `W − 1e-16`. 1 ns is below any clock or sensor resolution involved.
const DURATION_SLACK_S: f64 = 1e-9;

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

fn empty_trace_reason(trace: &PowerTrace, what: &str) -> String {
    match (&trace.first_read_error, &trace.poller_error) {
        (Some(e), _) => format!(
            "the trace has no {what} ({} failed reads; first: {e})",
            trace.read_errors
        ),
        (None, Some(e)) => format!("the trace has no {what} ({e})"),
        (None, None) => format!("the trace has no {what}"),
    }
}

/// Linear interpolation of `v` at `t` between the samples bracketing it; `None` if `t` lies
/// outside the samples' span.
fn interpolate(times: &[f64], values: &[f64], t: f64) -> Option<f64> {
    let i = times.partition_point(|&x| x < t);
    if i < times.len() && times[i] == t {
        return Some(values[i]);
    }
    if i == 0 || i >= times.len() {
        return None;
    }
    let (t0, t1, v0, v1) = (times[i - 1], times[i], values[i - 1], values[i]);
    Some(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
}

fn is_sorted(times: &[f64]) -> bool {
    times.windows(2).all(|w| w[0] <= w[1])
}

fn power_trace_energy(event: &EventWindow, trace: &PowerTrace, idle_mean_w: f64) -> MethodEnergy {
    let (start, end, duration) = (event.start_s, event.end_s, event.duration_s());
    let samples: &[PowerSample] = &trace.power;
    let times: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    let watts: Vec<f64> = samples.iter().map(|s| s.watts).collect();
    let in_window: Vec<usize> = (0..samples.len())
        .filter(|&i| times[i] >= start && times[i] <= end)
        .collect();
    let n = in_window.len();
    let no_data = |reason: String| MethodEnergy {
        method: EnergyMethod::PowerTrace,
        in_window_samples: n,
        outcome: EnergyOutcome::NoData { reason },
    };
    if !trace.sensor.has_power {
        return no_data(format!(
            "sensor {} reads no power: {}",
            trace.sensor.name, trace.sensor.description
        ));
    }
    if samples.is_empty() {
        return no_data(empty_trace_reason(trace, "power samples"));
    }
    if !is_sorted(&times) {
        return no_data("power samples are not sorted by time".into());
    }
    let mut reasons = Vec::new();
    if n < 2 {
        reasons.push(format!(
            "{n} in-window power sample(s), need ≥ 2 (event {} vs poll period {})",
            ms(duration),
            ms(trace.period_s)
        ));
    }
    if let Some(w) = trace.sensor.averaging_window_s {
        if duration + DURATION_SLACK_S < w {
            reasons.push(format!(
                "event {} is shorter than the sensor's {} averaging window: its readings mostly show the power before the event",
                ms(duration),
                ms(w)
            ));
        }
    }
    let p_start = interpolate(&times, &watts, start);
    let p_end = interpolate(&times, &watts, end);
    if p_start.is_none() {
        reasons.push(format!(
            "no power sample at or before the event start (trace starts at {:.3} s)",
            times[0]
        ));
    }
    if p_end.is_none() {
        reasons.push(format!(
            "no power sample at or after the event end (trace ends at {:.3} s)",
            times[times.len() - 1]
        ));
    }
    let (Some(p_start), Some(p_end), true) = (p_start, p_end, reasons.is_empty()) else {
        return no_data(reasons.join("; "));
    };
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(n + 2);
    points.push((start, p_start));
    points.extend(
        in_window
            .iter()
            .filter(|&&i| times[i] > start && times[i] < end)
            .map(|&i| (times[i], watts[i])),
    );
    points.push((end, p_end));
    let gross_j: f64 = points
        .windows(2)
        .map(|w| 0.5 * (w[0].1 + w[1].1) * (w[1].0 - w[0].0))
        .sum();
    MethodEnergy {
        method: EnergyMethod::PowerTrace,
        in_window_samples: n,
        outcome: good(gross_j, duration, idle_mean_w),
    }
}

fn counter_energy(event: &EventWindow, trace: &PowerTrace, idle_mean_w: f64) -> MethodEnergy {
    let (start, end, duration) = (event.start_s, event.end_s, event.duration_s());
    let readings: &[CounterSample] = &trace.counter;
    let times: Vec<f64> = readings.iter().map(|s| s.t_s).collect();
    let n = times.iter().filter(|&&t| t >= start && t <= end).count();
    let no_data = |reason: String| MethodEnergy {
        method: EnergyMethod::Counter,
        in_window_samples: n,
        outcome: EnergyOutcome::NoData { reason },
    };
    let Some(update_period) = trace.sensor.counter_update_period_s else {
        return no_data(format!(
            "sensor {} has no energy counter: {}",
            trace.sensor.name, trace.sensor.description
        ));
    };
    if readings.is_empty() {
        return no_data(empty_trace_reason(trace, "counter readings"));
    }
    if !is_sorted(&times) {
        return no_data("counter readings are not sorted by time".into());
    }
    // Unwrap into a cumulative series; remember steps that decreased with no known wrap (resets).
    let wrap = trace.sensor.counter_wraps_at_j;
    let mut cumulative = Vec::with_capacity(readings.len());
    let mut reset_steps = Vec::new();
    let mut total = readings[0].joules;
    cumulative.push(total);
    for (i, w) in readings.windows(2).enumerate() {
        let (a, b) = (w[0].joules, w[1].joules);
        total += if b >= a {
            b - a
        } else if let Some(m) = wrap {
            b + m - a
        } else {
            reset_steps.push(i);
            0.0
        };
        cumulative.push(total);
    }
    // Readings bracketing the window: lo = last at or before start, hi = first at or after end.
    let lo = times.partition_point(|&t| t <= start).checked_sub(1);
    let hi = Some(times.partition_point(|&t| t < end)).filter(|&i| i < times.len());
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return no_data(format!(
            "counter readings ({:.3}–{:.3} s) do not bracket the event [{:.3}, {:.3}] s",
            times[0],
            times[times.len() - 1],
            start,
            end
        ));
    };
    let mut reasons = Vec::new();
    let largest_gap = times[lo..=hi]
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0, f64::max);
    let resolution = update_period.max(largest_gap);
    if duration + DURATION_SLACK_S < 2.0 * resolution {
        let what = if largest_gap > update_period {
            format!(
                "the largest gap between the counter readings used ({})",
                ms(largest_gap)
            )
        } else {
            format!("the counter update period ({})", ms(update_period))
        };
        reasons.push(format!("event {} is shorter than 2 × {what}", ms(duration)));
    }
    if let Some(&i) = reset_steps.iter().find(|&&i| i >= lo && i < hi) {
        reasons.push(format!(
            "the counter decreased between {:.3} s and {:.3} s and the sensor has no wrap value (counter reset, e.g. a driver reload)",
            times[i],
            times[i + 1]
        ));
    }
    if !reasons.is_empty() {
        return no_data(reasons.join("; "));
    }
    let (Some(e_start), Some(e_end)) = (
        interpolate(&times, &cumulative, start),
        interpolate(&times, &cumulative, end),
    ) else {
        return no_data("counter interpolation failed at the event boundaries".into());
    };
    let delta = e_end - e_start;
    if delta.is_nan() || delta <= 0.0 {
        return no_data(format!(
            "counter delta is {delta} J over the event: the counter did not advance"
        ));
    }
    MethodEnergy {
        method: EnergyMethod::Counter,
        in_window_samples: n,
        outcome: good(delta, duration, idle_mean_w),
    }
}
