//! Comparable net energy: wait until the device is back at rest before measuring the idle power
//! that a trial subtracts, and say per trial which idle that was.
//!
//! A GPU keeps its boost clocks for a while after work: on an H100 the idle measured 5 s after a
//! trial read 121 W against 72 W at rest, and on an H200 130 W against 82 W even after a 15 s pause,
//! so "net of idle" differed 10× between trials for the clock state, not the workload. Here:
//!
//! 1. a **reference idle** is the power at rest: `INFERGATE_IDLE_REFERENCE_W` when set (a value the
//!    user measured on a cold device), else the first settled idle recorded in the run directory
//!    (`energy/idle-reference.json`), else this trial's own settled idle, which then becomes the
//!    run's reference;
//! 2. [`settle_and_calibrate`] waits at least `settle_seconds`, then until the mean power over the
//!    last `window` is within the band (`±max(band_fraction × reference, band_min_w)`) of the
//!    reference — or, with no reference yet, until the power is flat (its range over the window
//!    within `band_min_w`) — for at most `max_settle_seconds`, then calibrates the idle as before;
//! 3. the idle is **at rest** when its mean is inside the band (no reference: when the plateau was
//!    reached). Only then is energy reported net of it; otherwise the trial reports gross energy
//!    only, with the reason ([`SettledIdle::statement`]).
//!
//! Nothing here changes device settings (no clock locking): the device's own state (performance
//! state, clocks, temperature) is only read and recorded before and after settling.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::baseline::{calibrate_idle, IdleBaseline};
use super::poller::PowerTrace;
use super::sensor::{DeviceState, PowerSensor};
use crate::error::EnergyError;

/// Environment variable with the reference idle power in watts (a rest value measured by the user).
pub const REFERENCE_ENV: &str = "INFERGATE_IDLE_REFERENCE_W";

/// The power a device draws at rest, and where that number came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleReference {
    pub mean_w: f64,
    pub sensor: String,
    /// `INFERGATE_IDLE_REFERENCE_W`, or the trial whose settled idle it is.
    pub source: String,
    #[serde(default)]
    pub device_state: Option<DeviceState>,
}

impl IdleReference {
    /// From `INFERGATE_IDLE_REFERENCE_W`; an unparsable value is an error, not ignored.
    pub fn from_env(sensor: &str) -> Result<Option<IdleReference>, EnergyError> {
        let Ok(raw) = std::env::var(REFERENCE_ENV) else {
            return Ok(None);
        };
        let mean_w: f64 = raw.trim().parse().map_err(|_| {
            EnergyError::Baseline(format!("{REFERENCE_ENV}={raw:?} is not a power in watts"))
        })?;
        if !(mean_w.is_finite() && mean_w > 0.0) {
            return Err(EnergyError::Baseline(format!(
                "{REFERENCE_ENV}={raw:?} is not a positive power in watts"
            )));
        }
        Ok(Some(IdleReference {
            mean_w,
            sensor: sensor.into(),
            source: REFERENCE_ENV.into(),
            device_state: None,
        }))
    }

    /// The run's recorded reference for `sensor` (`<run-dir>/energy/idle-reference.json`).
    pub fn load(run_dir: &Path, sensor: &str) -> Option<IdleReference> {
        let r: IdleReference =
            serde_json::from_slice(&std::fs::read(Self::path(run_dir)).ok()?).ok()?;
        (r.sensor == sensor).then_some(r)
    }

    pub fn store(&self, run_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(run_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            path,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )
    }

    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("energy").join("idle-reference.json")
    }
}

/// How long and how closely to settle.
#[derive(Debug, Clone, PartialEq)]
pub struct SettleParams {
    /// Always wait this long first.
    pub settle_seconds: f64,
    /// Give up waiting after this long (the trial then reports gross energy only).
    pub max_settle_seconds: f64,
    /// Band around the reference, as a fraction of it…
    pub band_fraction: f64,
    /// …but never narrower than this (W); also the flatness limit without a reference.
    pub band_min_w: f64,
    /// Readings that must all be settled: at least twice the sensor's averaging window.
    pub window: Duration,
    /// Idle calibration after settling.
    pub idle: Duration,
    pub period: Duration,
}

impl SettleParams {
    pub fn band_w(&self, reference_w: f64) -> f64 {
        (self.band_fraction * reference_w).max(self.band_min_w)
    }
}

/// The idle a trial measured, whether it may be subtracted, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SettledIdle {
    pub baseline: IdleBaseline,
    #[serde(skip)]
    pub trace: PowerTrace,
    /// The reference compared against (`None`: this run had none; this idle became it if at rest).
    pub reference: Option<IdleReference>,
    pub band_w: f64,
    /// Seconds waited before calibrating.
    pub waited_s: f64,
    /// Mean power over the last settle window before calibrating.
    pub settled_window_w: Option<f64>,
    pub state_before: Option<DeviceState>,
    pub state_after: Option<DeviceState>,
    pub at_rest: bool,
    /// Per-trial statement: which idle was subtracted, or why only gross energy is reported.
    pub statement: String,
}

impl SettledIdle {
    /// Whether energy may be reported net of this idle.
    pub fn subtracts(&self) -> bool {
        self.at_rest
    }

    /// This idle as a reference for later trials of the run (only when at rest).
    pub fn as_reference(&self, trial: &str) -> Option<IdleReference> {
        self.at_rest.then(|| IdleReference {
            mean_w: self.baseline.mean_w,
            sensor: self.baseline.sensor.clone(),
            source: format!("settled idle of {trial}"),
            device_state: self.state_after.clone(),
        })
    }
}

/// One power value: the reading, or for counter-only sensors the counter's rate since `last`.
fn read_power(
    sensor: &dyn PowerSensor,
    last: &mut Option<(Instant, f64)>,
) -> Result<Option<f64>, EnergyError> {
    if sensor.has_power() {
        return sensor.read_power_w().map(Some);
    }
    let Some(c) = sensor.read_energy_counter_j()? else {
        return Ok(None);
    };
    let now = Instant::now();
    let rate = last.and_then(|(t, j)| {
        let dt = now.duration_since(t).as_secs_f64();
        (dt > 0.0 && c.joules >= j).then(|| (c.joules - j) / dt)
    });
    *last = Some((now, c.joules));
    Ok(rate)
}

/// Wait for rest (see the module doc), then calibrate the idle and judge it against `reference`.
pub fn settle_and_calibrate(
    sensor: Arc<dyn PowerSensor>,
    params: &SettleParams,
    reference: Option<IdleReference>,
) -> Result<SettledIdle, EnergyError> {
    let state_before = sensor.device_state();
    let start = Instant::now();
    let min_wait = Duration::from_secs_f64(params.settle_seconds.max(0.0));
    let max_wait = Duration::from_secs_f64(params.max_settle_seconds.max(params.settle_seconds));
    let keep = ((params.window.as_secs_f64() / params.period.as_secs_f64().max(1e-3)).ceil()
        as usize)
        .max(2);
    let mut window: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut last_counter = None;
    let mut settled_window_w = None;
    let mut settled = false;
    let mut held_by_us: Option<DeviceState> = None;
    loop {
        if let Some(w) = read_power(sensor.as_ref(), &mut last_counter)? {
            window.push_back(w);
            if window.len() > keep {
                window.pop_front();
            }
        }
        let elapsed = start.elapsed();
        if window.len() == keep && elapsed >= min_wait {
            let mean = window.iter().sum::<f64>() / keep as f64;
            settled_window_w = Some(mean);
            settled = match &reference {
                Some(r) => (mean - r.mean_w).abs() <= params.band_w(r.mean_w),
                None => {
                    let (lo, hi) = window
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &w| {
                            (lo.min(w), hi.max(w))
                        });
                    hi - lo <= params.band_min_w
                }
            };
            if settled {
                break;
            }
        }
        if elapsed >= max_wait {
            break;
        }
        // Waiting cannot help while this process itself keeps the GPU at boost clocks.
        if elapsed >= min_wait && reference.is_some() {
            if let Some(state) = sensor.device_state() {
                if state.held_by_this_process() {
                    held_by_us = Some(state);
                    break;
                }
            }
        }
        std::thread::sleep(params.period);
    }
    let waited_s = start.elapsed().as_secs_f64();
    let (baseline, trace) = calibrate_idle(sensor.clone(), params.idle, params.period)?;
    let state_after = sensor.device_state();
    let state = |s: &Option<DeviceState>| {
        s.as_ref()
            .map(|s| format!(" (device {s})"))
            .unwrap_or_default()
    };
    let (at_rest, band_w, statement) = match &reference {
        Some(r) => {
            let band = params.band_w(r.mean_w);
            let inside = (baseline.mean_w - r.mean_w).abs() <= band;
            let text = if inside {
                format!(
                    "net of idle {:.1} ± {:.1} W{}: at rest, within ±{band:.1} W of the reference {:.1} W ({}); settled after {waited_s:.1} s",
                    baseline.mean_w, baseline.std_w, state(&state_after), r.mean_w, r.source
                )
            } else {
                format!(
                    "gross energy only: the idle {:.1} ± {:.1} W{} is not at rest, outside ±{band:.1} W of the reference {:.1} W ({}) after waiting {waited_s:.1} s{}",
                    baseline.mean_w,
                    baseline.std_w,
                    state(&state_after),
                    r.mean_w,
                    r.source,
                    if held_by_us.is_some() {
                        " (this process holds a CUDA context, which keeps the GPU at boost clocks until the process exits: run one energy trial per process for a net figure)"
                    } else if settled {
                        ""
                    } else {
                        " (the settle limit)"
                    }
                )
            };
            (inside, band, text)
        }
        None => {
            let text = if settled {
                format!(
                    "net of idle {:.1} ± {:.1} W{}: no reference idle in this run yet; the power was flat (within {:.1} W over {:.1} s) after {waited_s:.1} s, and this idle becomes the run's reference",
                    baseline.mean_w,
                    baseline.std_w,
                    state(&state_after),
                    params.band_min_w,
                    params.window.as_secs_f64()
                )
            } else {
                format!(
                    "gross energy only: no reference idle, and the power did not settle (range over {:.1} s above {:.1} W) within {waited_s:.1} s; idle {:.1} ± {:.1} W{}",
                    params.window.as_secs_f64(),
                    params.band_min_w,
                    baseline.mean_w,
                    baseline.std_w,
                    state(&state_after)
                )
            };
            (settled, params.band_min_w, text)
        }
    };
    Ok(SettledIdle {
        baseline,
        trace,
        reference,
        band_w,
        waited_s,
        settled_window_w,
        state_before,
        state_after,
        at_rest,
        statement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::test_sensor::PowerFn;

    /// Power that decays from `hot` to `rest` with time constant `tau` seconds after creation.
    fn cooling(hot: f64, rest: f64, tau: f64) -> Arc<dyn PowerSensor> {
        let start = Instant::now();
        Arc::new(PowerFn::new(
            "cooling",
            "synthetic cooling GPU",
            move || {
                let t = start.elapsed().as_secs_f64();
                rest + (hot - rest) * (-t / tau).exp()
            },
        ))
    }

    fn params(max: f64) -> SettleParams {
        SettleParams {
            settle_seconds: 0.0,
            max_settle_seconds: max,
            band_fraction: 0.1,
            band_min_w: 2.0,
            window: Duration::from_millis(100),
            idle: Duration::from_millis(100),
            period: Duration::from_millis(10),
        }
    }

    fn reference(w: f64) -> Option<IdleReference> {
        Some(IdleReference {
            mean_w: w,
            sensor: "cooling".into(),
            source: "test".into(),
            device_state: None,
        })
    }

    #[test]
    fn a_cooling_device_is_waited_for_until_it_is_back_at_rest() {
        // 130 W decaying to 80 W with τ = 0.15 s: within ±8 W of 80 W after ≈ 0.3 s.
        let s = settle_and_calibrate(cooling(130.0, 80.0, 0.15), &params(5.0), reference(80.0))
            .unwrap();
        assert!(s.at_rest && s.subtracts(), "{}", s.statement);
        assert!(
            s.waited_s >= 0.2 && s.waited_s < 4.0,
            "waited {}",
            s.waited_s
        );
        assert!((s.baseline.mean_w - 80.0).abs() < 8.0);
        assert!(s.statement.starts_with("net of idle"), "{}", s.statement);
        assert!(
            s.statement.contains("reference 80.0 W (test)"),
            "{}",
            s.statement
        );
    }

    #[test]
    fn a_device_that_stays_hot_reports_gross_energy_only_with_the_reason() {
        // τ = 100 s: still ≈ 130 W when the 0.3 s limit is reached.
        let s = settle_and_calibrate(cooling(130.0, 80.0, 100.0), &params(0.3), reference(80.0))
            .unwrap();
        assert!(!s.at_rest && !s.subtracts());
        assert!(
            s.statement.starts_with("gross energy only"),
            "{}",
            s.statement
        );
        assert!(s.statement.contains("the settle limit"), "{}", s.statement);
        assert!(
            s.as_reference("t").is_none(),
            "a hot idle never becomes a reference"
        );
    }

    #[test]
    fn without_a_reference_a_flat_idle_becomes_the_reference() {
        let s = settle_and_calibrate(cooling(80.0, 80.0, 1.0), &params(2.0), None).unwrap();
        assert!(s.at_rest, "{}", s.statement);
        let r = s.as_reference("energy.gating::x").unwrap();
        assert_eq!(r.source, "settled idle of energy.gating::x");
        let dir = tempfile::tempdir().unwrap();
        r.store(dir.path()).unwrap();
        assert_eq!(IdleReference::load(dir.path(), "cooling"), Some(r));
        assert_eq!(
            IdleReference::load(dir.path(), "nvml:1"),
            None,
            "another sensor's reference"
        );
    }

    #[test]
    fn the_band_has_a_floor() {
        let p = params(1.0);
        assert_eq!(p.band_w(80.0), 8.0);
        assert_eq!(p.band_w(10.0), 2.0);
    }
}
