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

    /// The device's operating state (performance state, clocks), read-only, where the sensor's
    /// API reports one (NVML). Recorded beside every idle calibration: a GPU still at its boost
    /// clock after a trial draws far more than at rest.
    fn device_state(&self) -> Option<DeviceState> {
        None
    }

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

/// A device's operating state as the driver reports it (nothing here is ever changed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Performance state, `P0` (maximum performance) … `P15`.
    pub pstate: Option<String>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    /// Processes holding a compute context on the device (NVML's list; `None` if unreadable).
    #[serde(default)]
    pub compute_pids: Option<Vec<u32>>,
    /// Readings that failed, with the reason.
    pub errors: Vec<String>,
}

impl DeviceState {
    /// This process holds a compute context on the device. Observed on an H200 (driver 580):
    /// while any process holds one the SM clock stays at its boost (1980 MHz) and idle power at
    /// ≈ 125 W instead of 78 W, and it drops within seconds of that process exiting — so an idle
    /// measured after this process's own GPU work cannot be at rest, however long it waits.
    pub fn held_by_this_process(&self) -> bool {
        self.compute_pids
            .as_ref()
            .is_some_and(|p| p.contains(&std::process::id()))
    }
}

impl std::fmt::Display for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt =
            |v: Option<u32>, unit: &str| v.map_or_else(|| "?".into(), |v| format!("{v} {unit}"));
        write!(
            f,
            "{} SM {} mem {} {}",
            self.pstate.as_deref().unwrap_or("P?"),
            opt(self.sm_clock_mhz, "MHz"),
            opt(self.memory_clock_mhz, "MHz"),
            opt(self.temperature_c, "°C")
        )?;
        if let Some(p) = &self.compute_pids {
            write!(f, ", {} compute context(s)", p.len())?;
            if self.held_by_this_process() {
                write!(f, " incl. this process")?;
            }
        }
        Ok(())
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
