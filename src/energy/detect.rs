//! Which sensors are readable here, and which one covers a given compute device.
//!
//! - [`detect_sensors`]: every sensor kind, readable or with the reason it is not (for `infergate
//!   doctor` and reports).
//! - [`sensor_for_device`]: the sensor that measures the device a backend computes on — `cpu` → the
//!   RAPL package zones (summed when there are several; the platform zone `psys` when no package zone
//!   is readable), `cuda:N` → NVML device N — or a [`SensorUnavailable`] with the reason and the fix.
//!   A GPU's power is never charged to CPU inference, nor the CPU's to a GPU backend.
//!
//! Probing goes through [`SensorProbe`], so tests hand in sensors that this machine lacks.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::nvml::{NvmlConfig, NvmlSensor};
use super::rapl::{RaplPackages, RaplSensor, POWERCAP_ROOT};
use super::sensor::{NoSensor, PowerSensor};
use crate::host::ComputeDevice;

/// A sensor kind that is not readable here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableSensor {
    /// `NVML`, `RAPL`.
    pub kind: String,
    pub reason: String,
}

/// Result of [`detect_sensors`].
#[derive(Clone, Default)]
pub struct DetectedSensors {
    /// Sensors that gave a power or counter reading when probed.
    pub readable: Vec<Arc<dyn PowerSensor>>,
    /// Sensor kinds that are not readable, each with the reason.
    pub unreadable: Vec<UnreadableSensor>,
}

impl DetectedSensors {
    /// The first readable sensor (NVML before RAPL), or a [`NoSensor`] whose reason lists why
    /// each kind is unreadable. Blind to which device does the work: a gate measuring a backend
    /// uses [`sensor_for_device`] instead.
    pub fn best(&self) -> Arc<dyn PowerSensor> {
        match self.readable.first() {
            Some(s) => Arc::clone(s),
            None => Arc::new(NoSensor::new(self.unreadable_summary())),
        }
    }

    /// `"NVML: …; RAPL: …"`.
    pub fn unreadable_summary(&self) -> String {
        if self.unreadable.is_empty() {
            return "no sensor kinds probed".into();
        }
        self.unreadable
            .iter()
            .map(|u| format!("{}: {}", u.kind, u.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl std::fmt::Debug for DetectedSensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectedSensors")
            .field(
                "readable",
                &self
                    .readable
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("unreadable", &self.unreadable)
            .finish()
    }
}

/// Probes NVML (device 0, default settings) and every RAPL package zone under
/// `/sys/class/powercap`. See [`detect_sensors_with`] to pick the NVML device.
pub fn detect_sensors() -> DetectedSensors {
    detect_sensors_with(&NvmlConfig::default())
}

/// Like [`detect_sensors`], with an explicit NVML configuration (device index, library path,
/// power source, averaging window override).
pub fn detect_sensors_with(nvml: &NvmlConfig) -> DetectedSensors {
    let mut found = DetectedSensors::default();
    match NvmlSensor::open(nvml.clone()) {
        Ok(s) => found.readable.push(Arc::new(s)),
        Err(e) => found.unreadable.push(UnreadableSensor {
            kind: "NVML".into(),
            reason: e.to_string(),
        }),
    }
    match RaplSensor::detect_packages() {
        Ok(zones) => found.readable.extend(
            zones
                .into_iter()
                .map(|z| Arc::new(z) as Arc<dyn PowerSensor>),
        ),
        Err(reason) => found.unreadable.push(UnreadableSensor {
            kind: "RAPL".into(),
            reason,
        }),
    }
    found
}

/// The sensor kind that covers a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SensorKind {
    /// Linux powercap RAPL zones: the CPU packages (or the platform, `psys`).
    Rapl,
    /// NVIDIA Management Library: one GPU.
    Nvml,
}

impl SensorKind {
    /// The sensor kind that measures `device`.
    pub fn covering(device: ComputeDevice) -> SensorKind {
        match device {
            ComputeDevice::Cpu => SensorKind::Rapl,
            ComputeDevice::Cuda(_) => SensorKind::Nvml,
        }
    }

    /// What makes this kind readable, for a SKIP's fix.
    pub fn fix(self) -> &'static str {
        match self {
            SensorKind::Rapl => {
                "RAPL needs Linux powercap zones readable by this user: on bare metal load the driver \
                 (`modprobe intel_rapl_msr`) and run as root or `chmod a+r \
                 /sys/class/powercap/intel-rapl:*/energy_uj` (root-only since Linux 5.10); virtual \
                 machines expose none"
            }
            SensorKind::Nvml => {
                "NVML needs the NVIDIA driver's libnvidia-ml.so.1 on the loader path and the device \
                 present (`nvidia-smi -L` lists NVML's indices)"
            }
        }
    }
}

impl std::fmt::Display for SensorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SensorKind::Rapl => "RAPL",
            SensorKind::Nvml => "NVML",
        })
    }
}

/// Why no sensor covering a device can be read here: a gate that needs one SKIPs with the reason and
/// the fix, and never reads another device's sensor instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("no readable {kind} sensor for {device}: {reason}")]
pub struct SensorUnavailable {
    pub device: ComputeDevice,
    pub kind: SensorKind,
    pub reason: String,
    /// What to do to make the sensor readable.
    pub fix: String,
}

/// How sensors are found: the system's NVML and powercap, or a test double.
pub trait SensorProbe {
    /// NVML device `index` (NVML's order), or why it cannot be read.
    fn nvml(&self, index: u32) -> Result<Arc<dyn PowerSensor>, String>;
    /// Every readable top-level RAPL zone (packages and `psys`), or why there is none.
    fn rapl_zones(&self) -> Result<Vec<RaplSensor>, String>;
}

/// The real probe: NVML through `nvml` (its `device_index` replaced by the one asked for) and the
/// RAPL zones under `powercap_root`.
#[derive(Debug, Clone)]
pub struct SystemProbe {
    pub nvml: NvmlConfig,
    pub powercap_root: PathBuf,
}

impl Default for SystemProbe {
    fn default() -> Self {
        SystemProbe {
            nvml: NvmlConfig::default(),
            powercap_root: PathBuf::from(POWERCAP_ROOT),
        }
    }
}

impl SensorProbe for SystemProbe {
    fn nvml(&self, index: u32) -> Result<Arc<dyn PowerSensor>, String> {
        let config = NvmlConfig {
            device_index: index,
            ..self.nvml.clone()
        };
        NvmlSensor::open(config)
            .map(|s| Arc::new(s) as Arc<dyn PowerSensor>)
            .map_err(|e| e.to_string())
    }

    fn rapl_zones(&self) -> Result<Vec<RaplSensor>, String> {
        RaplSensor::detect_packages_in(&self.powercap_root)
    }
}

/// The sensor covering `device` on this machine ([`SystemProbe`]), or why it is unreadable.
pub fn sensor_for_device(device: ComputeDevice) -> Result<Arc<dyn PowerSensor>, SensorUnavailable> {
    sensor_for_device_with(device, &SystemProbe::default())
}

/// As [`sensor_for_device`], probing through `probe`.
///
/// `cpu`: the RAPL package zones — one zone as is, several summed ([`RaplPackages`]), since the
/// backend's threads may run on any package; the platform zone `psys` when no package zone is
/// readable. `cuda:N`: NVML device N. NVML's order can differ from CUDA's where
/// `CUDA_VISIBLE_DEVICES` reorders devices; the sensor's description names the GPU it reads.
pub fn sensor_for_device_with(
    device: ComputeDevice,
    probe: &dyn SensorProbe,
) -> Result<Arc<dyn PowerSensor>, SensorUnavailable> {
    let kind = SensorKind::covering(device);
    let unavailable = |reason: String| SensorUnavailable {
        device,
        kind,
        reason,
        fix: kind.fix().to_string(),
    };
    match device {
        ComputeDevice::Cuda(index) => probe.nvml(index).map_err(unavailable),
        ComputeDevice::Cpu => {
            let zones = probe.rapl_zones().map_err(unavailable)?;
            let (packages, platform): (Vec<RaplSensor>, Vec<RaplSensor>) =
                zones.into_iter().partition(RaplSensor::is_package);
            match (packages.len(), platform.into_iter().find(|z| z.zone_name() == "psys")) {
                (1, _) => Ok(Arc::new(packages.into_iter().next().expect("one zone"))),
                (n, _) if n > 1 => RaplPackages::new(packages)
                    .map(|s| Arc::new(s) as Arc<dyn PowerSensor>)
                    .map_err(|e| unavailable(e.to_string())),
                (_, Some(psys)) => Ok(Arc::new(psys)),
                (_, None) => Err(unavailable(
                    "RAPL zones are readable, but none is a CPU package (`package-N`) or the platform (`psys`)"
                        .into(),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::energy::test_sensor::PowerFn;

    /// NVML devices `0..gpus` readable; RAPL zones from a fake powercap tree.
    struct Probe {
        gpus: u32,
        powercap: PathBuf,
    }

    impl SensorProbe for Probe {
        fn nvml(&self, index: u32) -> Result<Arc<dyn PowerSensor>, String> {
            if index < self.gpus {
                // A GPU sensor this machine lacks: named after the NVML index it stands for.
                Ok(Arc::new(PowerFn::new(
                    format!("nvml:{index}"),
                    "test double for an NVML device",
                    || 300.0,
                )))
            } else {
                Err(format!(
                    "device index {index} not present: NVML sees {} device(s)",
                    self.gpus
                ))
            }
        }
        fn rapl_zones(&self) -> Result<Vec<RaplSensor>, String> {
            RaplSensor::detect_packages_in(&self.powercap)
        }
    }

    fn zone(root: &Path, dir: &str, name: &str) {
        let z = root.join(dir);
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(z.join("energy_uj"), "1000\n").unwrap();
        std::fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
    }

    fn probe(gpus: u32, zones: &[(&str, &str)]) -> (Probe, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        for (dir, name) in zones {
            zone(root.path(), dir, name);
        }
        (
            Probe {
                gpus,
                powercap: root.path().to_path_buf(),
            },
            root,
        )
    }

    #[test]
    fn a_cpu_backend_gets_the_cpu_package_even_with_a_gpu_present() {
        let (p, _root) = probe(1, &[("intel-rapl:0", "package-0")]);
        let s = sensor_for_device_with(ComputeDevice::Cpu, &p).unwrap();
        assert_eq!(s.name(), "rapl:intel-rapl:0");
        // What "the best sensor" would have charged to CPU inference:
        assert_eq!(p.nvml(0).unwrap().name(), "nvml:0");
    }

    #[test]
    fn a_cpu_backend_without_rapl_is_unavailable_with_the_fix_not_the_gpu() {
        let (p, _root) = probe(1, &[]);
        let e = sensor_for_device_with(ComputeDevice::Cpu, &p)
            .err()
            .expect("no RAPL zone: unavailable");
        assert_eq!((e.device, e.kind), (ComputeDevice::Cpu, SensorKind::Rapl));
        assert!(e.reason.contains("no intel-rapl:N package zone"), "{e}");
        assert!(e.fix.contains("modprobe"), "{}", e.fix);
        assert!(
            e.to_string().starts_with("no readable RAPL sensor for cpu"),
            "{e}"
        );
    }

    #[test]
    fn a_gpu_backend_gets_its_own_nvml_device() {
        let (p, _root) = probe(2, &[("intel-rapl:0", "package-0")]);
        let s = sensor_for_device_with(ComputeDevice::Cuda(1), &p).unwrap();
        assert_eq!(s.name(), "nvml:1");
        let e = sensor_for_device_with(ComputeDevice::Cuda(2), &p)
            .err()
            .expect("device 2 absent");
        assert_eq!(e.kind, SensorKind::Nvml);
        assert!(e.reason.contains("not present"), "{e}");
        assert!(e.fix.contains("libnvidia-ml"), "{}", e.fix);
    }

    #[test]
    fn several_packages_are_summed_and_psys_is_the_fallback() {
        let (p, _root) = probe(
            0,
            &[
                ("intel-rapl:0", "package-0"),
                ("intel-rapl:1", "package-1"),
                ("intel-rapl:2", "psys"),
            ],
        );
        let s = sensor_for_device_with(ComputeDevice::Cpu, &p).unwrap();
        assert_eq!(s.name(), "rapl:intel-rapl:0+intel-rapl:1");
        let c = s.read_energy_counter_j().unwrap().unwrap();
        assert!((c.joules - 2000e-6).abs() < 1e-12, "{c:?}");

        let (p, _root) = probe(0, &[("intel-rapl:1", "psys")]);
        let s = sensor_for_device_with(ComputeDevice::Cpu, &p).unwrap();
        assert_eq!(s.name(), "rapl:intel-rapl:1");

        let (p, _root) = probe(0, &[("intel-rapl:0", "dram")]);
        let e = sensor_for_device_with(ComputeDevice::Cpu, &p)
            .err()
            .expect("no package, no psys");
        assert!(e.reason.contains("none is a CPU package"), "{e}");
    }
}
