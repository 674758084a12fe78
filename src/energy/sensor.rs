//! The [`PowerSensor`] trait, the sensor description carried in every trace, and [`NoSensor`].
//! Detection (which sensors are readable here) lives in [`super::detect`], so the sensor kinds
//! ([`super::nvml`], [`super::rapl`]) depend on this module and not the other way round.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EnergyError;

/// One reading of a cumulative energy counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CounterReading {
    /// Counter value in joules (raw: it may wrap, see [`PowerSensor::counter_wraps_at_j`]).
    pub joules: f64,
    /// How often the hardware/driver refreshes the counter. A delta over a window shorter than
    /// this is 0 or one stale step.
    pub update_period: Duration,
}

/// A source of power and/or energy readings. Implementations must not panic: every failure is an
/// [`EnergyError`] whose message says why.
pub trait PowerSensor: Send + Sync {
    /// Short stable name, e.g. `nvml:0`, `rapl:intel-rapl:0`, `none`.
    fn name(&self) -> &str;
    /// Which device it reads and what it reads (API, units, averaging), for reports.
    fn describe(&self) -> String;
    /// Whether [`read_power_w`](Self::read_power_w) can give a number at all (false for
    /// counter-only sensors such as RAPL).
    fn has_power(&self) -> bool;
    /// Power in watts, as the sensor reports it: instantaneous, or averaged over
    /// [`averaging_window`](Self::averaging_window).
    fn read_power_w(&self) -> Result<f64, EnergyError>;
    /// `Some(W)` when each power reading is an average over the trailing window `W` (NVML on
    /// Ampere-and-newer except A100: 1 s). Events shorter than `W` get no power-trace energy.
    fn averaging_window(&self) -> Option<Duration>;
    /// Cumulative energy counter, `Ok(None)` when this sensor has none.
    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError>;
    /// Update period of the energy counter, `None` when there is no counter.
    fn counter_update_period(&self) -> Option<Duration>;
    /// Value (joules) at which the raw counter wraps back to 0, if it does.
    fn counter_wraps_at_j(&self) -> Option<f64>;

    /// The sensor's properties as recorded in a [`PowerTrace`](super::PowerTrace).
    fn info(&self) -> SensorInfo {
        SensorInfo {
            name: self.name().to_string(),
            description: self.describe(),
            has_power: self.has_power(),
            averaging_window_s: self.averaging_window().map(|d| d.as_secs_f64()),
            counter_update_period_s: self.counter_update_period().map(|d| d.as_secs_f64()),
            counter_wraps_at_j: self.counter_wraps_at_j(),
        }
    }
}

/// What the gating rules need to know about the sensor that produced a trace (serializable, so
/// a stored trace can be re-attributed without the sensor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorInfo {
    pub name: String,
    pub description: String,
    pub has_power: bool,
    /// Averaging window of each power reading, seconds; `None` = instantaneous.
    pub averaging_window_s: Option<f64>,
    /// Counter update period, seconds; `None` = no counter.
    pub counter_update_period_s: Option<f64>,
    pub counter_wraps_at_j: Option<f64>,
}

/// A sensor that reads nothing; every reading is an error carrying `reason`. Used where no real
/// sensor is readable, so the run still produces a trace whose events are all `no_data`.
#[derive(Debug, Clone)]
pub struct NoSensor {
    reason: String,
}

impl NoSensor {
    pub fn new(reason: impl Into<String>) -> Self {
        NoSensor {
            reason: reason.into(),
        }
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl PowerSensor for NoSensor {
    fn name(&self) -> &str {
        "none"
    }
    fn describe(&self) -> String {
        format!("no power sensor ({})", self.reason)
    }
    fn has_power(&self) -> bool {
        false
    }
    fn read_power_w(&self) -> Result<f64, EnergyError> {
        Err(EnergyError::Unavailable {
            sensor: "none".into(),
            reason: self.reason.clone(),
        })
    }
    fn averaging_window(&self) -> Option<Duration> {
        None
    }
    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError> {
        Err(EnergyError::Unavailable {
            sensor: "none".into(),
            reason: self.reason.clone(),
        })
    }
    fn counter_update_period(&self) -> Option<Duration> {
        None
    }
    fn counter_wraps_at_j(&self) -> Option<f64> {
        None
    }
}

/// Rejects NaN, infinities and negative values from a sensor.
pub(crate) fn check_reading(sensor: &str, what: &str, value: f64) -> Result<f64, EnergyError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(EnergyError::InvalidReading {
            sensor: sensor.into(),
            what: what.into(),
            value,
        })
    }
}
