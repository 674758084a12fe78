//! [`RaplSensor`]: the CPU package energy counter from Linux powercap
//! (`/sys/class/powercap/intel-rapl:N/energy_uj`, also used for AMD packages). Counter only: it
//! gives no power reading. The counter wraps at `max_energy_range_uj`. Since Linux 5.10
//! (CVE-2020-8694) `energy_uj` is readable by root only; the permission error is reported as the
//! reason the sensor is unreadable. Hand-written: it is two sysfs files, no crate needed.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::EnergyError;

use super::sensor::{check_reading, CounterReading, PowerSensor};

/// Where Linux exposes powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// RAPL refreshes its energy status about every millisecond (Intel SDM: ~976 µs).
pub const RAPL_UPDATE_PERIOD: Duration = Duration::from_millis(1);

/// One RAPL powercap zone (normally a CPU package).
#[derive(Debug, Clone)]
pub struct RaplSensor {
    zone_dir: PathBuf,
    name: String,
    zone_name: String,
    wraps_at_j: Option<f64>,
    update_period: Duration,
}

fn read_trimmed(path: &Path) -> Result<String, std::io::Error> {
    fs::read_to_string(path).map(|s| s.trim().to_string())
}

fn io_reason(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => format!(
            "{} is not readable (permission denied: root-only since Linux 5.10); run as root or `chmod a+r` it",
            path.display()
        ),
        ErrorKind::NotFound => format!("{} absent", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    }
}

impl RaplSensor {
    /// Opens the zone in `zone_dir` (e.g. `/sys/class/powercap/intel-rapl:0`) and reads its
    /// counter once; fails with the reason (absent, permission denied, unparsable).
    pub fn open(zone_dir: impl Into<PathBuf>) -> Result<Self, EnergyError> {
        let zone_dir = zone_dir.into();
        let dir_name = zone_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("rapl:{dir_name}");
        let zone_name = read_trimmed(&zone_dir.join("name")).unwrap_or_else(|_| dir_name.clone());
        let wraps_at_j = read_trimmed(&zone_dir.join("max_energy_range_uj"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&uj| uj > 0)
            .map(|uj| uj as f64 / 1e6);
        let sensor = RaplSensor {
            zone_dir,
            name,
            zone_name,
            wraps_at_j,
            update_period: RAPL_UPDATE_PERIOD,
        };
        sensor
            .read_counter_raw()
            .map_err(|reason| EnergyError::Unavailable {
                sensor: sensor.name.clone(),
                reason,
            })?;
        Ok(sensor)
    }

    /// The zone's own name (`package-0`, `psys` …), from its `name` file.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// Whether the zone is a CPU package (`package-N`), as opposed to the platform (`psys`).
    pub fn is_package(&self) -> bool {
        self.zone_name.starts_with("package")
    }

    /// Overrides the counter's update period (default [`RAPL_UPDATE_PERIOD`]).
    pub fn with_update_period(mut self, period: Duration) -> Self {
        self.update_period = period;
        self
    }

    /// Opens every package zone `intel-rapl:N` under [`POWERCAP_ROOT`]. `Err(reason)` when there
    /// is none, or none is readable (the first zone's reason is given).
    pub fn detect_packages() -> Result<Vec<RaplSensor>, String> {
        Self::detect_packages_in(Path::new(POWERCAP_ROOT))
    }

    /// As [`detect_packages`](Self::detect_packages), under another root (for tests).
    pub fn detect_packages_in(root: &Path) -> Result<Vec<RaplSensor>, String> {
        let entries = fs::read_dir(root).map_err(|e| io_reason(root, &e))?;
        let mut zones: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("intel-rapl:"))
                    .is_some_and(|rest| {
                        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
                    })
            })
            .collect();
        zones.sort();
        if zones.is_empty() {
            return Err(format!(
                "no intel-rapl:N package zone under {} (no RAPL driver, or a VM)",
                root.display()
            ));
        }
        let mut readable = Vec::new();
        let mut first_reason = None;
        for zone in zones {
            match RaplSensor::open(&zone) {
                Ok(s) => readable.push(s),
                Err(e) => {
                    first_reason.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if readable.is_empty() {
            Err(first_reason.unwrap_or_else(|| "no readable RAPL zone".into()))
        } else {
            Ok(readable)
        }
    }

    fn read_counter_raw(&self) -> Result<f64, String> {
        let path = self.zone_dir.join("energy_uj");
        let text = read_trimmed(&path).map_err(|e| io_reason(&path, &e))?;
        let uj: u64 = text
            .parse()
            .map_err(|e| format!("{}: {text:?} is not a counter: {e}", path.display()))?;
        Ok(uj as f64 / 1e6)
    }
}

/// RAPL zones have no power reading, only energy counters: the error a power read returns.
fn no_power_reading(sensor: &str, reason: &str) -> Result<f64, EnergyError> {
    Err(EnergyError::NotSupported {
        sensor: sensor.into(),
        what: "power reading".into(),
        reason: reason.into(),
    })
}

impl PowerSensor for RaplSensor {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "RAPL zone {} ({}): energy counter {}/energy_uj (µJ, updated every ~{} µs{}); no power reading",
            self.name.trim_start_matches("rapl:"),
            self.zone_name,
            self.zone_dir.display(),
            self.update_period.as_micros(),
            self.wraps_at_j.map(|w| format!(", wraps at {w:.0} J")).unwrap_or_default()
        )
    }

    fn has_power(&self) -> bool {
        false
    }

    fn read_power_w(&self) -> Result<f64, EnergyError> {
        no_power_reading(&self.name, "RAPL exposes only a cumulative energy counter")
    }

    fn averaging_window(&self) -> Option<Duration> {
        None
    }

    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError> {
        let joules = self
            .read_counter_raw()
            .map_err(|detail| EnergyError::Read {
                sensor: self.name.clone(),
                what: "energy_uj".into(),
                detail,
            })?;
        let joules = check_reading(&self.name, "energy counter", joules)?;
        Ok(Some(CounterReading {
            joules,
            update_period: self.update_period,
        }))
    }

    fn counter_update_period(&self) -> Option<Duration> {
        Some(self.update_period)
    }

    fn counter_wraps_at_j(&self) -> Option<f64> {
        self.wraps_at_j
    }
}

/// Several RAPL package zones read as one energy counter: the sum of their counters, each unwrapped on
/// its own (a sum of counters that wrap at different values has no single wrap point). The sum never
/// wraps, provided it is read at least once per wrap period of each zone (minutes at full load; the
/// poller reads every 100 ms).
#[derive(Debug)]
pub struct RaplPackages {
    zones: Vec<RaplSensor>,
    name: String,
    /// Per zone: the last raw reading and the unwrapped total.
    state: Mutex<Vec<(f64, f64)>>,
}

impl RaplPackages {
    /// `zones` must not be empty; each is read once here.
    pub fn new(zones: Vec<RaplSensor>) -> Result<Self, EnergyError> {
        let names: Vec<&str> = zones
            .iter()
            .map(|z| z.name.trim_start_matches("rapl:"))
            .collect();
        let name = format!("rapl:{}", names.join("+"));
        if zones.is_empty() {
            return Err(EnergyError::Unavailable {
                sensor: "rapl".into(),
                reason: "no RAPL package zone to sum".into(),
            });
        }
        let mut state = Vec::with_capacity(zones.len());
        for z in &zones {
            let raw = z
                .read_counter_raw()
                .map_err(|reason| EnergyError::Unavailable {
                    sensor: z.name.clone(),
                    reason,
                })?;
            state.push((raw, raw));
        }
        Ok(RaplPackages {
            zones,
            name,
            state: Mutex::new(state),
        })
    }

    pub fn zones(&self) -> &[RaplSensor] {
        &self.zones
    }
}

impl PowerSensor for RaplPackages {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "sum of {} RAPL package zones ({}), each unwrapped; no power reading",
            self.zones.len(),
            self.zones
                .iter()
                .map(|z| z.zone_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn has_power(&self) -> bool {
        false
    }

    fn read_power_w(&self) -> Result<f64, EnergyError> {
        no_power_reading(&self.name, "RAPL exposes only cumulative energy counters")
    }

    fn averaging_window(&self) -> Option<Duration> {
        None
    }

    fn read_energy_counter_j(&self) -> Result<Option<CounterReading>, EnergyError> {
        let mut state = self.state.lock().map_err(|_| EnergyError::Read {
            sensor: self.name.clone(),
            what: "energy counters".into(),
            detail: "a previous reader panicked".into(),
        })?;
        let mut sum = 0.0;
        for (zone, (last, total)) in self.zones.iter().zip(state.iter_mut()) {
            let raw = zone
                .read_counter_raw()
                .map_err(|detail| EnergyError::Read {
                    sensor: zone.name.clone(),
                    what: "energy_uj".into(),
                    detail,
                })?;
            let raw = check_reading(&zone.name, "energy counter", raw)?;
            let mut delta = raw - *last;
            if delta < 0.0 {
                match zone.wraps_at_j {
                    Some(w) => delta += w,
                    None => {
                        return Err(EnergyError::Read {
                            sensor: zone.name.clone(),
                            what: "energy_uj".into(),
                            detail: format!(
                                "the counter went back ({last} → {raw} J) and the zone states no wrap value"
                            ),
                        })
                    }
                }
            }
            *last = raw;
            *total += delta;
            sum += *total;
        }
        Ok(Some(CounterReading {
            joules: sum,
            update_period: self.counter_update_period().unwrap_or(RAPL_UPDATE_PERIOD),
        }))
    }

    fn counter_update_period(&self) -> Option<Duration> {
        self.zones.iter().map(|z| z.update_period).max()
    }

    fn counter_wraps_at_j(&self) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, dir: &str, energy: &str, max: Option<&str>) -> PathBuf {
        let z = root.join(dir);
        fs::create_dir_all(&z).expect("temp dir is writable");
        fs::write(z.join("name"), "package-0\n").expect("temp dir is writable");
        fs::write(z.join("energy_uj"), energy).expect("temp dir is writable");
        if let Some(m) = max {
            fs::write(z.join("max_energy_range_uj"), m).expect("temp dir is writable");
        }
        z
    }

    #[test]
    fn reads_a_powercap_zone_and_its_wrap() {
        let root = tempfile::tempdir().expect("tempdir");
        let z = zone(
            root.path(),
            "intel-rapl:0",
            "123456789\n",
            Some("262143328850\n"),
        );
        let s = RaplSensor::open(&z).expect("zone is readable");
        let r = s
            .read_energy_counter_j()
            .expect("readable")
            .expect("has a counter");
        assert!((r.joules - 123.456789).abs() < 1e-9);
        assert_eq!(s.counter_wraps_at_j(), Some(262143.32885));
        assert!(!s.has_power());
        assert!(s.read_power_w().is_err());
        fs::write(z.join("energy_uj"), "5\n").expect("writable");
        let r2 = s
            .read_energy_counter_j()
            .expect("readable")
            .expect("has a counter");
        assert!((r2.joules - 5e-6).abs() < 1e-12);
    }

    #[test]
    fn detection_skips_subzones_and_reports_absence() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = RaplSensor::detect_packages_in(root.path()).expect_err("empty root has no zone");
        assert!(err.contains("no intel-rapl:N package zone"), "{err}");
        zone(root.path(), "intel-rapl:0", "1", None);
        zone(root.path(), "intel-rapl:0:0", "1", None);
        let found = RaplSensor::detect_packages_in(root.path()).expect("one package zone");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name(), "rapl:intel-rapl:0");
        let missing =
            RaplSensor::detect_packages_in(&root.path().join("absent")).expect_err("absent root");
        assert!(missing.contains("absent"), "{missing}");
    }

    #[test]
    fn garbage_counter_is_a_reason() {
        let root = tempfile::tempdir().expect("tempdir");
        let z = zone(root.path(), "intel-rapl:1", "not a number", None);
        let err = RaplSensor::open(&z)
            .expect_err("garbage is not a counter")
            .to_string();
        assert!(err.contains("is not a counter"), "{err}");
    }

    #[test]
    fn packages_sum_unwraps_each_zone_on_its_own() {
        let root = tempfile::tempdir().expect("tempdir");
        let z0 = zone(root.path(), "intel-rapl:0", "900\n", Some("1000\n"));
        let z1 = zone(root.path(), "intel-rapl:1", "50\n", Some("5000\n"));
        let zones = vec![
            RaplSensor::open(&z0).unwrap(),
            RaplSensor::open(&z1).unwrap(),
        ];
        let sum = RaplPackages::new(zones).unwrap();
        let read = || sum.read_energy_counter_j().unwrap().unwrap().joules;
        let first = read();
        assert!((first - 950e-6).abs() < 1e-12);
        // Zone 0 wraps (900 → 100 µJ: +200 µJ with a 1000 µJ range), zone 1 grows by 25 µJ.
        fs::write(z0.join("energy_uj"), "100\n").unwrap();
        fs::write(z1.join("energy_uj"), "75\n").unwrap();
        assert!((read() - first - 225e-6).abs() < 1e-12);
        assert_eq!(sum.counter_wraps_at_j(), None);
        assert_eq!(sum.name(), "rapl:intel-rapl:0+intel-rapl:1");
        // A zone that goes back with no stated wrap is an error, not a negative delta.
        let z2 = zone(root.path(), "intel-rapl:2", "10\n", None);
        let no_wrap = RaplPackages::new(vec![RaplSensor::open(&z2).unwrap()]).unwrap();
        fs::write(z2.join("energy_uj"), "5\n").unwrap();
        assert!(no_wrap.read_energy_counter_j().is_err());
    }
}
