//! The shared monotonic clock, [`PowerPoller`] (a sampling thread) and the [`PowerTrace`] it
//! produces, with [`CadenceStats`] describing how regularly it sampled.
//!
//! All timestamps are seconds (f64) since one process-wide epoch ([`epoch`], a `std::time::Instant`
//! taken on first use), so the integrator's event windows ([`now_s`]) and the poller's samples are
//! on the same monotonic clock. A sample's timestamp is the midpoint of the call that read it.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics};

use crate::error::EnergyError;

use super::sensor::{PowerSensor, SensorInfo};

/// Default polling period (TR122's 100 ms).
pub const DEFAULT_POLL_PERIOD: Duration = Duration::from_millis(100);

/// A gap longer than this many nominal periods counts as missed samples.
pub const MISSED_GAP_FACTOR: f64 = 1.5;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide epoch of all energy timestamps.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Seconds from [`epoch`] to `t` (negative if `t` is earlier).
pub fn seconds_since_epoch(t: Instant) -> f64 {
    let e = epoch();
    match t.checked_duration_since(e) {
        Some(d) => d.as_secs_f64(),
        None => -(e.duration_since(t).as_secs_f64()),
    }
}

/// Now, in seconds since [`epoch`]. Use it for event window boundaries.
pub fn now_s() -> f64 {
    seconds_since_epoch(Instant::now())
}

/// One power reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerSample {
    pub t_s: f64,
    pub watts: f64,
}

/// One raw reading of a cumulative energy counter (may wrap; see [`SensorInfo::counter_wraps_at_j`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CounterSample {
    pub t_s: f64,
    pub joules: f64,
}

/// How regularly the poller produced usable samples (of power, or of the counter for a
/// counter-only sensor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CadenceStats {
    pub nominal_period_s: f64,
    /// Number of usable samples.
    pub samples: usize,
    /// Median gap between consecutive samples; `None` with fewer than 2 samples.
    pub median_period_s: Option<f64>,
    /// 99th percentile of the gaps (statrs' quantile estimator).
    pub p99_gap_s: Option<f64>,
    pub max_gap_s: Option<f64>,
    /// Gaps longer than [`MISSED_GAP_FACTOR`] × nominal period.
    pub late_gaps: usize,
    /// Samples those gaps lost: Σ (round(gap / period) − 1), at least 1 per late gap.
    pub missed_samples: u64,
    /// Median wall time of one poll (all reads of one tick); `None` for synthetic traces.
    pub median_read_latency_s: Option<f64>,
}

impl CadenceStats {
    /// Statistics of sorted sample times `times_s` against a nominal period.
    pub fn from_times(times_s: &[f64], nominal_period_s: f64) -> CadenceStats {
        let gaps: Vec<f64> = times_s.windows(2).map(|w| w[1] - w[0]).collect();
        let (median, p99, max) = if gaps.is_empty() {
            (None, None, None)
        } else {
            let mut data = Data::new(gaps.clone());
            let max = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (Some(data.median()), Some(data.percentile(99)), Some(max))
        };
        let mut late_gaps = 0;
        let mut missed_samples = 0u64;
        if nominal_period_s > 0.0 {
            for &g in &gaps {
                if g > MISSED_GAP_FACTOR * nominal_period_s {
                    late_gaps += 1;
                    let lost = (g / nominal_period_s).round() - 1.0;
                    missed_samples += if lost >= 1.0 { lost as u64 } else { 1 };
                }
            }
        }
        CadenceStats {
            nominal_period_s,
            samples: times_s.len(),
            median_period_s: median,
            p99_gap_s: p99,
            max_gap_s: max,
            late_gaps,
            missed_samples,
            median_read_latency_s: None,
        }
    }
}

/// Everything a poller recorded; serializable into the run's artifacts. Samples are sorted by
/// time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerTrace {
    pub sensor: SensorInfo,
    pub period_s: f64,
    pub started_s: f64,
    pub stopped_s: f64,
    pub power: Vec<PowerSample>,
    pub counter: Vec<CounterSample>,
    pub read_errors: u64,
    /// The first failed read, verbatim: the reason an empty trace is empty.
    pub first_read_error: Option<String>,
    pub cadence: CadenceStats,
    /// Set when the poller thread itself failed (a sensor panicked); samples up to then are kept.
    pub poller_error: Option<String>,
}

fn sort_finite<T: Copy>(mut v: Vec<T>, t: impl Fn(&T) -> f64) -> Vec<T> {
    v.retain(|s| t(s).is_finite());
    v.sort_by(|a, b| t(a).total_cmp(&t(b)));
    v
}

impl PowerTrace {
    /// A trace from given samples (a stored trace, or a synthetic one in tests). Samples with a
    /// non-finite time are dropped, the rest sorted; cadence is computed from the power samples
    /// if the sensor reads power, else from the counter samples.
    pub fn from_samples(
        sensor: SensorInfo,
        period_s: f64,
        power: Vec<PowerSample>,
        counter: Vec<CounterSample>,
    ) -> PowerTrace {
        let power = sort_finite(power, |s| s.t_s);
        let counter = sort_finite(counter, |s| s.t_s);
        let primary: Vec<f64> = if sensor.has_power {
            power.iter().map(|s| s.t_s).collect()
        } else {
            counter.iter().map(|s| s.t_s).collect()
        };
        let all = power
            .iter()
            .map(|s| s.t_s)
            .chain(counter.iter().map(|s| s.t_s));
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
        let (started_s, stopped_s) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        PowerTrace {
            cadence: CadenceStats::from_times(&primary, period_s),
            sensor,
            period_s,
            started_s,
            stopped_s,
            power,
            counter,
            read_errors: 0,
            first_read_error: None,
            poller_error: None,
        }
    }
}

#[derive(Default)]
struct Collected {
    power: Vec<PowerSample>,
    counter: Vec<CounterSample>,
    read_errors: u64,
    first_read_error: Option<String>,
    latencies: Vec<f64>,
}

impl Collected {
    fn error(&mut self, e: EnergyError) {
        self.read_errors += 1;
        if self.first_read_error.is_none() {
            self.first_read_error = Some(e.to_string());
        }
    }
}

fn poll_once(sensor: &dyn PowerSensor, out: &Mutex<Collected>) {
    let tick = Instant::now();
    let power = sensor.has_power().then(|| {
        let before = Instant::now();
        let r = sensor.read_power_w();
        let after = Instant::now();
        (midpoint(before, after), r)
    });
    let before = Instant::now();
    let counter = sensor.read_energy_counter_j();
    let after = Instant::now();
    let counter_t = midpoint(before, after);
    let latency = after.duration_since(tick).as_secs_f64();

    let mut c = match out.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    match power {
        Some((t_s, Ok(watts))) => c.power.push(PowerSample { t_s, watts }),
        Some((_, Err(e))) => c.error(e),
        None => {}
    }
    match counter {
        Ok(Some(r)) => c.counter.push(CounterSample {
            t_s: counter_t,
            joules: r.joules,
        }),
        Ok(None) => {}
        Err(e) => c.error(e),
    }
    c.latencies.push(latency);
}

fn midpoint(a: Instant, b: Instant) -> f64 {
    let ta = seconds_since_epoch(a);
    ta + (seconds_since_epoch(b) - ta) / 2.0
}

/// A thread that reads a sensor every `period` until [`stop`](PowerPoller::stop)ped. Ticks are
/// scheduled on absolute deadlines (start + k × period), so slow reads do not accumulate drift; a
/// tick that is already past is skipped (and shows up as a missed sample). It reads once on start
/// and once more on stop, so a trace always covers the whole time the poller ran.
pub struct PowerPoller {
    sensor: Arc<dyn PowerSensor>,
    period: Duration,
    started_s: f64,
    collected: Arc<Mutex<Collected>>,
    stop_tx: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl PowerPoller {
    /// Starts polling `sensor` every `period` (> 0).
    pub fn start(
        sensor: Arc<dyn PowerSensor>,
        period: Duration,
    ) -> Result<PowerPoller, EnergyError> {
        if period.is_zero() {
            return Err(EnergyError::InvalidArgument(
                "poll period must be > 0".into(),
            ));
        }
        let collected = Arc::new(Mutex::new(Collected::default()));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let started_s = now_s();
        let thread_sensor = Arc::clone(&sensor);
        let thread_out = Arc::clone(&collected);
        let handle = std::thread::Builder::new()
            .name(format!("power-poller {}", sensor.name()))
            .spawn(move || {
                let start = Instant::now();
                let mut k: u32 = 0;
                loop {
                    poll_once(&*thread_sensor, &thread_out);
                    let now = Instant::now();
                    let elapsed = now.duration_since(start);
                    // Next deadline strictly in the future.
                    let next_k = (elapsed.as_nanos() / period.as_nanos()) as u32 + 1;
                    k = next_k.max(k + 1);
                    let deadline = start + period * k;
                    match stop_rx.recv_timeout(deadline.saturating_duration_since(now)) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            poll_once(&*thread_sensor, &thread_out);
                            break;
                        }
                    }
                }
            })
            .map_err(|e| EnergyError::Poller(format!("cannot spawn the polling thread: {e}")))?;
        Ok(PowerPoller {
            sensor,
            period,
            started_s,
            collected,
            stop_tx: Some(stop_tx),
            handle: Some(handle),
        })
    }

    /// Starts polling at [`DEFAULT_POLL_PERIOD`].
    pub fn start_default(sensor: Arc<dyn PowerSensor>) -> Result<PowerPoller, EnergyError> {
        PowerPoller::start(sensor, DEFAULT_POLL_PERIOD)
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Stops the thread (after one final reading) and returns the trace.
    pub fn stop(mut self) -> PowerTrace {
        let poller_error = self.join();
        let taken = {
            let mut guard = match self.collected.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut *guard)
        };
        let mut trace = PowerTrace::from_samples(
            self.sensor.info(),
            self.period.as_secs_f64(),
            taken.power,
            taken.counter,
        );
        trace.started_s = self.started_s.min(trace.started_s);
        trace.stopped_s = now_s().max(trace.stopped_s);
        trace.read_errors = taken.read_errors;
        trace.first_read_error = taken.first_read_error;
        trace.poller_error = poller_error;
        if !taken.latencies.is_empty() {
            trace.cadence.median_read_latency_s = Some(Data::new(taken.latencies).median());
        }
        trace
    }

    /// Signals the thread and waits for it; `Some(message)` if it panicked.
    fn join(&mut self) -> Option<String> {
        if let Some(tx) = self.stop_tx.take() {
            // A send error means the thread already ended; join tells how.
            let _ = tx.send(());
        }
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(()) => None,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Some(format!("polling thread panicked: {msg}"))
            }
        }
    }
}

impl Drop for PowerPoller {
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_counts_missed_samples_from_gaps() {
        // 0.1 s ticks, then a 0.3 s gap (2 lost), a 0.16 s gap (late, 1 lost by the floor of 1).
        let times = [0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.86, 0.96];
        let c = CadenceStats::from_times(&times, 0.1);
        assert_eq!(c.samples, 8);
        assert_eq!(c.late_gaps, 2);
        assert_eq!(c.missed_samples, 3);
        let median = c.median_period_s.expect("7 gaps");
        assert!((median - 0.1).abs() < 1e-9, "{median}");
        let max = c.max_gap_s.expect("7 gaps");
        assert!((max - 0.3).abs() < 1e-9);
        let p99 = c.p99_gap_s.expect("7 gaps");
        assert!(p99 <= max + 1e-12 && p99 >= median);
    }

    #[test]
    fn cadence_of_a_single_sample_has_no_periods() {
        let c = CadenceStats::from_times(&[1.0], 0.1);
        assert_eq!(c.samples, 1);
        assert_eq!(c.median_period_s, None);
        assert_eq!(c.missed_samples, 0);
    }

    #[test]
    fn zero_period_is_rejected() {
        let s: Arc<dyn PowerSensor> = Arc::new(super::super::NoSensor::new("test"));
        assert!(PowerPoller::start(s, Duration::ZERO).is_err());
    }

    #[test]
    fn epoch_clock_is_monotonic_and_signed() {
        let before = Instant::now();
        let a = now_s();
        let b = now_s();
        assert!(b >= a);
        let earlier = epoch().checked_sub(Duration::from_millis(5));
        if let Some(t) = earlier {
            assert!(seconds_since_epoch(t) < 0.0);
        }
        assert!(seconds_since_epoch(before) <= a);
    }
}
