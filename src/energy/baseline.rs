//! Idle baseline calibration (TR122): sample the sensor while no work runs, and keep the mean,
//! standard deviation and count of the idle power, so event energy can be reported net of idle.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statrs::statistics::Statistics;

use crate::error::EnergyError;

use super::poller::{PowerPoller, PowerTrace};
use super::sensor::PowerSensor;

/// Where the idle power values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// The sensor's power readings.
    PowerSamples,
    /// Counter deltas between consecutive readings divided by their time gap (counter-only
    /// sensors such as RAPL).
    CounterDeltas,
}

/// Idle power: mean, sample standard deviation (n − 1) and count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleBaseline {
    pub mean_w: f64,
    pub std_w: f64,
    pub n: usize,
    pub duration_s: f64,
    pub source: BaselineSource,
    pub sensor: String,
}

impl IdleBaseline {
    /// A baseline from known values (e.g. loaded from a stored run). The mean must be finite and
    /// ≥ 0 (it is what makes net ≤ gross), the std finite and ≥ 0, and n ≥ 2.
    pub fn new(mean_w: f64, std_w: f64, n: usize) -> Result<IdleBaseline, EnergyError> {
        if !(mean_w.is_finite() && mean_w >= 0.0) {
            return Err(EnergyError::Baseline(format!(
                "mean {mean_w} W is not a finite power ≥ 0"
            )));
        }
        if !(std_w.is_finite() && std_w >= 0.0) {
            return Err(EnergyError::Baseline(format!(
                "std {std_w} W is not finite and ≥ 0"
            )));
        }
        if n < 2 {
            return Err(EnergyError::Baseline(format!(
                "n = {n}: need at least 2 idle values"
            )));
        }
        Ok(IdleBaseline {
            mean_w,
            std_w,
            n,
            duration_s: 0.0,
            source: BaselineSource::PowerSamples,
            sensor: String::new(),
        })
    }

    /// The baseline of a trace recorded with no work running: power samples if the sensor reads
    /// power, else counter deltas (wraps are unwrapped; a decrease with no known wrap value is
    /// skipped as a counter reset).
    pub fn from_trace(trace: &PowerTrace) -> Result<IdleBaseline, EnergyError> {
        let (values, source) = if trace.sensor.has_power {
            (
                trace.power.iter().map(|s| s.watts).collect::<Vec<_>>(),
                BaselineSource::PowerSamples,
            )
        } else {
            let wrap = trace.sensor.counter_wraps_at_j;
            let values = trace
                .counter
                .windows(2)
                .filter_map(|w| {
                    let dt = w[1].t_s - w[0].t_s;
                    let dj = if w[1].joules >= w[0].joules {
                        w[1].joules - w[0].joules
                    } else {
                        w[1].joules + wrap? - w[0].joules
                    };
                    (dt > 0.0).then_some(dj / dt)
                })
                .collect();
            (values, BaselineSource::CounterDeltas)
        };
        if values.len() < 2 {
            let why = trace
                .first_read_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(EnergyError::Baseline(format!(
                "{} gave {} idle value(s), need ≥ 2{why}",
                trace.sensor.name,
                values.len()
            )));
        }
        let n = values.len();
        let mean = values.iter().mean();
        let std = values.iter().std_dev();
        let mut b = IdleBaseline::new(mean, std, n)?;
        b.duration_s = trace.stopped_s - trace.started_s;
        b.source = source;
        b.sensor = trace.sensor.name.clone();
        Ok(b)
    }

    /// Standard error of the mean idle power.
    pub fn std_error_w(&self) -> f64 {
        self.std_w / (self.n as f64).sqrt()
    }
}

/// Polls `sensor` every `period` for `duration` while the caller runs nothing, and returns the
/// baseline with the trace it came from (store both in the run's artifacts).
pub fn calibrate_idle(
    sensor: Arc<dyn PowerSensor>,
    duration: Duration,
    period: Duration,
) -> Result<(IdleBaseline, PowerTrace), EnergyError> {
    let poller = PowerPoller::start(sensor, period)?;
    std::thread::sleep(duration);
    let trace = poller.stop();
    let baseline = IdleBaseline::from_trace(&trace)?;
    Ok((baseline, trace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::poller::{CounterSample, PowerSample};
    use crate::energy::sensor::SensorInfo;

    fn info(has_power: bool, wrap: Option<f64>) -> SensorInfo {
        SensorInfo {
            name: "synthetic".into(),
            description: "test double".into(),
            has_power,
            averaging_window_s: None,
            counter_update_period_s: Some(0.001),
            counter_wraps_at_j: wrap,
        }
    }

    #[test]
    fn power_baseline_is_mean_and_sample_std() {
        let power = [20.0, 22.0, 18.0, 20.0]
            .iter()
            .enumerate()
            .map(|(i, &w)| PowerSample {
                t_s: i as f64 * 0.1,
                watts: w,
            })
            .collect();
        let t = PowerTrace::from_samples(info(true, None), 0.1, power, vec![]);
        let b = IdleBaseline::from_trace(&t).expect("4 samples");
        assert_eq!(b.n, 4);
        assert!((b.mean_w - 20.0).abs() < 1e-12);
        // deviations 0, 2, -2, 0 → variance 8 / 3
        assert!((b.std_w - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(b.source, BaselineSource::PowerSamples);
    }

    #[test]
    fn counter_baseline_unwraps() {
        // 10 W steady, counter wraps at 100 J.
        let counter = (0..6)
            .map(|i| CounterSample {
                t_s: i as f64,
                joules: (95.0 + 10.0 * i as f64) % 100.0,
            })
            .collect();
        let t = PowerTrace::from_samples(info(false, Some(100.0)), 1.0, vec![], counter);
        let b = IdleBaseline::from_trace(&t).expect("5 deltas");
        assert_eq!(b.n, 5);
        assert!((b.mean_w - 10.0).abs() < 1e-9, "{}", b.mean_w);
        assert!(b.std_w < 1e-9);
        assert_eq!(b.source, BaselineSource::CounterDeltas);
    }

    #[test]
    fn too_few_values_is_an_error_with_the_read_error() {
        let mut t = PowerTrace::from_samples(info(true, None), 0.1, vec![], vec![]);
        t.first_read_error = Some("none: unavailable: no GPU".into());
        let e = IdleBaseline::from_trace(&t)
            .expect_err("no samples")
            .to_string();
        assert!(e.contains("no GPU"), "{e}");
    }

    #[test]
    fn invalid_baselines_are_rejected() {
        assert!(IdleBaseline::new(-1.0, 0.0, 10).is_err());
        assert!(IdleBaseline::new(f64::NAN, 0.0, 10).is_err());
        assert!(IdleBaseline::new(10.0, 1.0, 1).is_err());
        assert!(IdleBaseline::new(10.0, 1.0, 2).is_ok());
    }
}
