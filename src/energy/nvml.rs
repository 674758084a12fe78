//! [`NvmlSensor`]: NVIDIA GPU power and energy through NVML (`nvml-wrapper`, which loads
//! `libnvidia-ml.so.1` at run time, so this builds and runs on machines without a driver).
//!
//! Two readings:
//! - power: `nvmlDeviceGetPowerUsage` (mW). On Ampere-and-newer GPUs except A100 it is a
//!   **1-second average** (BACKENDS.md "Energy"), so it is recorded as the sensor's
//!   [`averaging_window`](PowerSensor::averaging_window). Alternatively, the field value
//!   `NVML_FI_DEV_POWER_INSTANT` ([`NvmlPowerSource::InstantField`], newer drivers) is an
//!   instantaneous reading.
//! - energy: `nvmlDeviceGetTotalEnergyConsumption` (mJ since driver load, Volta+), refreshed about
//!   every 100 ms; a u64 in mJ does not wrap in practice, a decrease means a driver reload.
//!
//! Every NVML call returns a `Result` that is turned into an [`EnergyError`]; nothing here panics.
//! NVML device indices are NVML's own order, which ignores `CUDA_VISIBLE_DEVICES`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nvml_wrapper::enums::device::{DeviceArchitecture, SampleValue};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::NVML_FI_DEV_POWER_INSTANT;
use nvml_wrapper::{Device, Nvml};

use crate::error::EnergyError;

use super::sensor::{check_reading, CounterReading, PowerSensor};

/// Which NVML reading [`PowerSensor::read_power_w`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NvmlPowerSource {
    /// `nvmlDeviceGetPowerUsage`: averaged over 1 s on Ampere-and-newer except A100.
    #[default]
    PowerUsage,
    /// Field `NVML_FI_DEV_POWER_INSTANT` via `nvmlDeviceGetFieldValues`: instantaneous power,
    /// where the driver supports it (checked when the sensor is opened).
    InstantField,
}

/// How the averaging window of the power reading is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AveragingWindowSetting {
    /// From the device: see [`default_averaging_window`].
    #[default]
    Auto,
    /// As given (`None` = instantaneous), for devices the automatic rule gets wrong.
    Fixed(Option<Duration>),
}

/// How to open an [`NvmlSensor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlConfig {
    /// NVML device index (NVML order, not `CUDA_VISIBLE_DEVICES` order).
    pub device_index: u32,
    /// Library to load; `None` = `libnvidia-ml.so.1` from the dynamic loader's search path.
    pub lib_path: Option<PathBuf>,
    pub power_source: NvmlPowerSource,
    pub averaging_window: AveragingWindowSetting,
    /// Refresh period of the total-energy counter (about 100 ms on current drivers).
    pub counter_update_period: Duration,
}

impl Default for NvmlConfig {
    fn default() -> Self {
        NvmlConfig {
            device_index: 0,
            lib_path: None,
            power_source: NvmlPowerSource::PowerUsage,
            averaging_window: AveragingWindowSetting::Auto,
            counter_update_period: Duration::from_millis(100),
        }
    }
}

impl NvmlConfig {
    pub fn device(index: u32) -> Self {
        NvmlConfig {
            device_index: index,
            ..NvmlConfig::default()
        }
    }
}

/// The averaging window of `nvmlDeviceGetPowerUsage` for a device: 1 s on Ampere and newer,
/// except A100 (instantaneous); `None` on older architectures. When the architecture is
/// unknown (query failed, or an architecture newer than this crate knows), the device name
/// decides; a name that matches no known family gets 1 s, because assuming averaging only turns
/// short events into `no_data`, while wrongly assuming instant readings gives wrong numbers.
pub fn default_averaging_window(
    device_name: &str,
    arch: Option<&DeviceArchitecture>,
) -> Option<Duration> {
    const ONE_SECOND: Option<Duration> = Some(Duration::from_secs(1));
    let name = device_name.to_ascii_uppercase();
    if name.contains("A100") {
        return None;
    }
    match arch {
        Some(DeviceArchitecture::Ampere | DeviceArchitecture::Ada | DeviceArchitecture::Hopper)
        | Some(DeviceArchitecture::Blackwell) => ONE_SECOND,
        Some(
            DeviceArchitecture::Kepler
            | DeviceArchitecture::Maxwell
            | DeviceArchitecture::Pascal
            | DeviceArchitecture::Volta
            | DeviceArchitecture::Turing,
        ) => None,
        _ => {
            const OLDER: [&str; 12] = [
                "K80", "K40", "M40", "M60", "P100", "P40", "P4 ", "V100", "T4", "GTX 10", "RTX 20",
                "TITAN V",
            ];
            if OLDER
                .iter()
                .any(|p| name.contains(p) || name.ends_with(p.trim_end()))
            {
                None
            } else {
                ONE_SECOND
            }
        }
    }
}

/// NVML power and energy for one GPU.
pub struct NvmlSensor {
    nvml: Nvml,
    config: NvmlConfig,
    name: String,
    device_name: String,
    arch: Option<DeviceArchitecture>,
    averaging_window: Option<Duration>,
    /// `Err(reason)` when the device has no usable total-energy counter.
    counter: Result<(), String>,
}

impl std::fmt::Debug for NvmlSensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSensor")
            .field("name", &self.name)
            .field("device_name", &self.device_name)
            .field("arch", &self.arch)
            .field("averaging_window", &self.averaging_window)
            .field("counter", &self.counter)
            .field("config", &self.config)
            .finish()
    }
}

fn init_reason(e: &NvmlError, lib: &str) -> String {
    match e {
        NvmlError::LibloadingError(inner) => {
            format!("{lib} not found or not loadable ({inner}) — no NVIDIA driver on this machine; install the driver or set NvmlConfig::lib_path")
        }
        NvmlError::DriverNotLoaded => {
            "the NVIDIA kernel driver is not loaded (nvidia-smi should fail too)".into()
        }
        NvmlError::NoPermission => {
            "no permission to talk to the NVIDIA driver (check /dev/nvidia* permissions)".into()
        }
        NvmlError::FailedToLoadSymbol(s) => {
            format!("{lib} is too old: missing symbol ({s}); update the driver")
        }
        other => format!("nvmlInit failed: {other}"),
    }
}

impl NvmlSensor {
    /// Loads NVML, finds the device and probes its readings. Fails with the reason when the
    /// library, the driver or the device is missing, or when the device reads no power at all.
    pub fn open(config: NvmlConfig) -> Result<Self, EnergyError> {
        let name = format!("nvml:{}", config.device_index);
        let lib = config
            .lib_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "libnvidia-ml.so.1".into());
        let index = config.device_index;
        let unavailable = |reason: String| EnergyError::Unavailable {
            sensor: format!("nvml:{index}"),
            reason,
        };
        let nvml = match &config.lib_path {
            Some(p) => {
                let os: OsString = p.clone().into_os_string();
                Nvml::builder().lib_path(&os).init()
            }
            None => Nvml::init(),
        }
        .map_err(|e| unavailable(init_reason(&e, &lib)))?;

        let count = nvml
            .device_count()
            .map_err(|e| unavailable(format!("nvmlDeviceGetCount failed: {e}")))?;
        if config.device_index >= count {
            return Err(unavailable(format!(
                "device index {} not present: NVML sees {count} device(s)",
                config.device_index
            )));
        }
        let (device_name, arch, counter) = {
            let device = nvml
                .device_by_index(config.device_index)
                .map_err(|e| unavailable(format!("nvmlDeviceGetHandleByIndex failed: {e}")))?;
            let device_name = device
                .name()
                .unwrap_or_else(|e| format!("<name unavailable: {e}>"));
            let arch = device.architecture().ok();
            let counter = match device.total_energy_consumption() {
                Ok(_) => Ok(()),
                Err(NvmlError::NotSupported) => Err(
                    "nvmlDeviceGetTotalEnergyConsumption not supported (needs Volta or newer)"
                        .to_string(),
                ),
                Err(e) => Err(format!("nvmlDeviceGetTotalEnergyConsumption failed: {e}")),
            };
            (device_name, arch, counter)
        };
        let averaging_window = match (config.averaging_window, config.power_source) {
            (AveragingWindowSetting::Fixed(w), _) => w,
            (AveragingWindowSetting::Auto, NvmlPowerSource::InstantField) => None,
            (AveragingWindowSetting::Auto, NvmlPowerSource::PowerUsage) => {
                default_averaging_window(&device_name, arch.as_ref())
            }
        };
        let sensor = NvmlSensor {
            nvml,
            config,
            name,
            device_name,
            arch,
            averaging_window,
            counter,
        };
        if let Err(power_err) = sensor.read_power_w() {
            if sensor.counter.is_err() {
                return Err(unavailable(format!(
                    "device {:?} reads neither power ({power_err}) nor energy",
                    sensor.device_name
                )));
            }
            if sensor.config.power_source == NvmlPowerSource::InstantField {
                return Err(unavailable(format!(
                    "NVML_FI_DEV_POWER_INSTANT unreadable on {:?} ({power_err}); use NvmlPowerSource::PowerUsage",
                    sensor.device_name
                )));
            }
        }
        Ok(sensor)
    }

    /// The GPU's name as NVML reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    pub fn architecture(&self) -> Option<&DeviceArchitecture> {
        self.arch.as_ref()
    }

    pub fn config(&self) -> &NvmlConfig {
        &self.config
    }

    fn device(&self) -> Result<Device<'_>, EnergyError> {
        self.nvml
            .device_by_index(self.config.device_index)
            .map_err(|e| EnergyError::Read {
                sensor: self.name.clone(),
                what: "device handle".into(),
                detail: e.to_string(),
            })
    }

    fn read_err(&self, what: &str, e: impl std::fmt::Display) -> EnergyError {
        EnergyError::Read {
            sensor: self.name.clone(),
            what: what.into(),
            detail: e.to_string(),
        }
    }
}

fn state_error(what: &str, e: NvmlError) -> String {
    format!("{what}: {e}")
}

/// `P0` … `P15` from NVML's enum.
fn pstate_label(p: &nvml_wrapper::enum_wrappers::device::PerformanceState) -> String {
    use nvml_wrapper::enum_wrappers::device::PerformanceState as P;
    let n = match p {
        P::Zero => 0,
        P::One => 1,
        P::Two => 2,
        P::Three => 3,
        P::Four => 4,
        P::Five => 5,
        P::Six => 6,
        P::Seven => 7,
        P::Eight => 8,
        P::Nine => 9,
        P::Ten => 10,
        P::Eleven => 11,
        P::Twelve => 12,
        P::Thirteen => 13,
        P::Fourteen => 14,
        P::Fifteen => 15,
        P::Unknown => return "P?".into(),
    };
    format!("P{n}")
}

impl PowerSensor for NvmlSensor {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let power = match (self.config.power_source, self.averaging_window) {
            (NvmlPowerSource::PowerUsage, Some(w)) => {
                format!(
                    "power nvmlDeviceGetPowerUsage (averaged over {} ms)",
                    w.as_millis()
                )
            }
            (NvmlPowerSource::PowerUsage, None) => {
                "power nvmlDeviceGetPowerUsage (instantaneous)".to_string()
            }
            (NvmlPowerSource::InstantField, w) => format!(
                "power NVML_FI_DEV_POWER_INSTANT ({})",
                w.map(|w| format!("averaged over {} ms", w.as_millis()))
                    .unwrap_or_else(|| "instantaneous".into())
            ),
        };
        let energy = match &self.counter {
            Ok(()) => format!(
                "energy nvmlDeviceGetTotalEnergyConsumption (mJ, updated every ~{} ms)",
                self.config.counter_update_period.as_millis()
            ),
            Err(reason) => format!("no energy counter: {reason}"),
        };
        let arch = self
            .arch
            .as_ref()
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|| "architecture unknown".into());
        format!(
            "NVML device {} {:?} ({arch}): {power}; {energy}",
            self.config.device_index, self.device_name
        )
    }

    fn has_power(&self) -> bool {
        true
    }

    fn device_state(&self) -> Option<super::sensor::DeviceState> {
        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
        let device = self.device().ok()?;
        let mut state = super::sensor::DeviceState::default();
        let note = state_error;
        let mut errors = Vec::new();
        match device.performance_state() {
            Ok(p) => state.pstate = Some(pstate_label(&p)),
            Err(e) => errors.push(note("performance state", e)),
        }
        match device.clock_info(Clock::Graphics) {
            Ok(v) => state.sm_clock_mhz = Some(v),
            Err(e) => errors.push(note("graphics clock", e)),
        }
        match device.clock_info(Clock::Memory) {
            Ok(v) => state.memory_clock_mhz = Some(v),
            Err(e) => errors.push(note("memory clock", e)),
        }
        match device.temperature(TemperatureSensor::Gpu) {
            Ok(v) => state.temperature_c = Some(v),
            Err(e) => errors.push(note("temperature", e)),
        }
        match device.running_compute_processes() {
            Ok(p) => state.compute_pids = Some(p.iter().map(|p| p.pid).collect()),
            Err(e) => errors.push(note("compute processes", e)),
        }
        state.errors = errors;
        Some(state)
    }

    fn read_power_w(&self) -> Result<f64, EnergyError> {
        let device = self.device()?;
        let milliwatts = match self.config.power_source {
            NvmlPowerSource::PowerUsage => f64::from(
                device
                    .power_usage()
                    .map_err(|e| self.read_err("nvmlDeviceGetPowerUsage", e))?,
            ),
            NvmlPowerSource::InstantField => {
                let what = "NVML_FI_DEV_POWER_INSTANT";
                let samples = device
                    .field_values_for(&[FieldId(NVML_FI_DEV_POWER_INSTANT)])
                    .map_err(|e| self.read_err(what, e))?;
                let sample = samples
                    .into_iter()
                    .next()
                    .ok_or_else(|| self.read_err(what, "no value returned"))?
                    .map_err(|e| self.read_err(what, e))?;
                match sample.value.map_err(|e| self.read_err(what, e))? {
                    SampleValue::F64(v) => v,
                    SampleValue::U32(v) => f64::from(v),
                    SampleValue::U64(v) => v as f64,
                    SampleValue::I64(v) => v as f64,
                }
            }
        };
        check_reading(&self.name, "power", milliwatts / 1000.0)
    }

    fn averaging_window(&self) -> Option<Duration> {
        self.averaging_window
    }

    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError> {
        if self.counter.is_err() {
            return Ok(None);
        }
        let millijoules = self
            .device()?
            .total_energy_consumption()
            .map_err(|e| self.read_err("nvmlDeviceGetTotalEnergyConsumption", e))?;
        let joules = check_reading(&self.name, "energy counter", millijoules as f64 / 1000.0)?;
        Ok(Some(CounterReading {
            joules,
            update_period: self.config.counter_update_period,
        }))
    }

    fn counter_update_period(&self) -> Option<Duration> {
        self.counter
            .as_ref()
            .ok()
            .map(|_| self.config.counter_update_period)
    }

    fn counter_wraps_at_j(&self) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averaging_window_follows_architecture_and_name() {
        let one_s = Some(Duration::from_secs(1));
        assert_eq!(
            default_averaging_window("NVIDIA H100 80GB HBM3", Some(&DeviceArchitecture::Hopper)),
            one_s
        );
        assert_eq!(
            default_averaging_window("NVIDIA H100 80GB HBM3", None),
            one_s
        );
        assert_eq!(
            default_averaging_window("NVIDIA A100-SXM4-80GB", Some(&DeviceArchitecture::Ampere)),
            None
        );
        assert_eq!(
            default_averaging_window("NVIDIA A100-PCIE-40GB", None),
            None
        );
        assert_eq!(
            default_averaging_window("NVIDIA A10G", Some(&DeviceArchitecture::Ampere)),
            one_s
        );
        assert_eq!(
            default_averaging_window("NVIDIA L4", Some(&DeviceArchitecture::Ada)),
            one_s
        );
        assert_eq!(
            default_averaging_window("Tesla V100-SXM2-16GB", Some(&DeviceArchitecture::Volta)),
            None
        );
        assert_eq!(default_averaging_window("Tesla T4", None), None);
        assert_eq!(
            default_averaging_window("Some Future GPU", Some(&DeviceArchitecture::Unknown)),
            one_s
        );
    }

    #[test]
    fn missing_library_is_a_reason_not_a_panic() {
        let config = NvmlConfig {
            lib_path: Some(PathBuf::from("/nonexistent/libnvidia-ml.so.1")),
            ..NvmlConfig::default()
        };
        let err = NvmlSensor::open(config).expect_err("a nonexistent library cannot load");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/libnvidia-ml.so.1"), "{msg}");
        assert!(msg.contains("not found or not loadable"), "{msg}");
    }
}
