//! Energy measurement that refuses to guess (TR122, issue 6, gate `energy.gating`).
//!
//! - [`PowerSensor`]: [`NvmlSensor`] (GPU power and total-energy counter), [`RaplSensor`] (CPU
//!   package energy counter; [`RaplPackages`] sums several), [`NoSensor`]; [`detect_sensors`] says
//!   what is readable here and why the rest is not; [`sensor_for_device`] picks the sensor that
//!   covers a backend's device (`cpu` → RAPL, `cuda:N` → NVML device N) or says why it cannot
//!   ([`SensorUnavailable`], with the fix).
//! - [`PowerPoller`]: a thread sampling a sensor (default every 100 ms) on the shared monotonic
//!   clock ([`now_s`]); [`PowerTrace`] with [`CadenceStats`] (median period, p99 gap, missed
//!   samples) for the run's artifacts.
//! - [`calibrate_idle`] / [`IdleBaseline`]: idle power mean, std, n.
//! - [`settle_and_calibrate`]: wait until the device is back at rest (within a band of a reference
//!   idle) before calibrating, and say whether the idle may be subtracted ([`SettledIdle`]).
//! - [`attribute()`]: per-event energy by counter and by power trace, each gated, gross and net of
//!   idle, or `no_data` with the reason (gating and edge handling: see [`attribute`](mod@attribute)).
//! - [`energy_per_token`], [`EventEnergySummary`] for reports; [`doctor_lines`] for `infergate doctor`.
//!
//! Typical use: `let sensor = sensor_for_device(backend.info().compute_device()?)?;` → `calibrate_idle(sensor.clone(), 10 s,
//! 100 ms)` → `PowerPoller::start(sensor, 100 ms)` → run work, recording `EventWindow`s with
//! `now_s()` → `poller.stop()` → `attribute(&event, &trace, &baseline)` per event.
//!
//! Hand-written parts: gating and trapezoid integration are a few lines of domain logic that no
//! crate provides; NVML goes through `nvml-wrapper`, statistics through `statrs`.

pub mod attribute;
pub mod baseline;
pub mod detect;
pub mod nvml;
pub mod poller;
pub mod rapl;
pub mod sensor;
pub mod settle;

#[cfg(test)]
mod test_sensor;
#[cfg(test)]
mod tests;

use crate::host::ComputeDevice;

pub use attribute::{
    attribute, energy_per_token, EnergyMethod, EnergyOutcome, EnergyPerToken, EnergyQuality,
    EnergyResult, EventEnergySummary, EventWindow, MethodEnergy,
};
pub use baseline::{calibrate_idle, BaselineSource, IdleBaseline};
pub use detect::{
    detect_sensors, detect_sensors_with, sensor_for_device, sensor_for_device_with,
    DetectedSensors, SensorKind, SensorProbe, SensorUnavailable, SystemProbe, UnreadableSensor,
};
pub use nvml::{
    default_averaging_window, AveragingWindowSetting, NvmlConfig, NvmlPowerSource, NvmlSensor,
};
pub use poller::{
    epoch, now_s, seconds_since_epoch, CadenceStats, CounterSample, PowerPoller, PowerSample,
    PowerTrace, DEFAULT_POLL_PERIOD, MISSED_GAP_FACTOR,
};
pub use rapl::{RaplPackages, RaplSensor};
pub use sensor::{CounterReading, DeviceState, NoSensor, PowerSensor, SensorInfo};
pub use settle::{settle_and_calibrate, IdleReference, SettleParams, SettledIdle};

/// Lines for `infergate doctor`: each readable sensor with what it reads and one live reading,
/// each unreadable sensor kind with the reason, and what the gates imply for the best sensor.
pub fn doctor_lines() -> Vec<String> {
    let detected = detect_sensors();
    let mut lines = Vec::new();
    for s in &detected.readable {
        lines.push(format!("energy: {}: {}", s.name(), s.describe()));
        let power = if s.has_power() {
            match s.read_power_w() {
                Ok(w) => format!("power now {w:.1} W"),
                Err(e) => format!("power read failed: {e}"),
            }
        } else {
            "no power reading".to_string()
        };
        let counter = match s.read_energy_counter_j() {
            Ok(Some(r)) => format!("energy counter {:.3} J", r.joules),
            Ok(None) => "no energy counter".to_string(),
            Err(e) => format!("energy counter read failed: {e}"),
        };
        lines.push(format!("energy: {}: {power}; {counter}", s.name()));
    }
    for u in &detected.unreadable {
        lines.push(format!("energy: {} not readable: {}", u.kind, u.reason));
    }
    for device in [ComputeDevice::Cpu, ComputeDevice::Cuda(0)] {
        lines.push(match sensor_for_device(device) {
            Ok(s) => format!("energy: {device} backends are measured with {}", s.name()),
            Err(e) => format!(
                "energy: {device} backends get no energy here: {e}; fix: {}",
                e.fix
            ),
        });
    }
    match detected.readable.first() {
        None => lines
            .push("energy: no readable sensor: every event's energy will be no_data".to_string()),
        Some(s) => {
            let period_ms = DEFAULT_POLL_PERIOD.as_secs_f64() * 1e3;
            let mut rules = Vec::new();
            if s.has_power() {
                let w = s
                    .averaging_window()
                    .map(|w| format!(" and events ≥ {} ms (averaging window)", w.as_millis()))
                    .unwrap_or_default();
                rules.push(format!(
                    "power trace needs ≥ 2 samples in the event (≥ ~{:.0} ms at {period_ms:.0} ms polling){w}",
                    2.0 * period_ms
                ));
            }
            if let Some(p) = s.counter_update_period() {
                let resolution_ms = (p.as_secs_f64() * 1e3).max(period_ms);
                rules.push(format!(
                    "counter needs events ≥ {:.0} ms (2 × max(update period, poll period))",
                    2.0 * resolution_ms
                ));
            }
            lines.push(format!(
                "energy: gating with {} at {period_ms:.0} ms polling: {}",
                s.name(),
                rules.join("; ")
            ));
        }
    }
    lines
}
