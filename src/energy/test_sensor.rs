//! A power-only sensor for tests (no counter, no averaging), shared by the test modules that need
//! a device this machine lacks.

use std::time::Duration;

use super::sensor::{CounterReading, PowerSensor};
use crate::error::EnergyError;

/// Reads power from `power` on every call; has no energy counter and no averaging window.
pub(crate) struct PowerFn<F> {
    name: String,
    describe: &'static str,
    power: F,
}

impl<F: Fn() -> f64 + Send + Sync> PowerFn<F> {
    pub(crate) fn new(name: impl Into<String>, describe: &'static str, power: F) -> Self {
        PowerFn {
            name: name.into(),
            describe,
            power,
        }
    }
}

impl<F: Fn() -> f64 + Send + Sync> PowerSensor for PowerFn<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn describe(&self) -> String {
        self.describe.into()
    }
    fn has_power(&self) -> bool {
        true
    }
    fn read_power_w(&self) -> Result<f64, EnergyError> {
        Ok((self.power)())
    }
    fn averaging_window(&self) -> Option<Duration> {
        None
    }
    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError> {
        Ok(None)
    }
    fn counter_update_period(&self) -> Option<Duration> {
        None
    }
    fn counter_wraps_at_j(&self) -> Option<f64> {
        None
    }
}
