//! Facts about the machine this process runs on: CPU, cores, OS, NVIDIA GPUs, and the devices a
//! backend computes on ([`ComputeDevice`], what an energy sensor must cover). The ground floor the run
//! manifest ([`crate::manifest`]), the baseline fingerprint ([`crate::baseline::fingerprint`]), the
//! backends and the energy sensors read; it imports nothing else of the crate.

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// One visible NVIDIA GPU, as `nvidia-smi --query-gpu=name,driver_version` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    pub driver_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub available_cores: usize,
    pub os: String,
    pub kernel: String,
    pub hostname: String,
}

fn first_line_of(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once([':', '=']))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

pub fn machine() -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::consts::OS.into());
    Machine {
        cpu_model: first_line_of("/proc/cpuinfo", "model name")
            .unwrap_or_else(|| std::env::consts::ARCH.into()),
        available_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: first_line_of("/etc/os-release", "PRETTY_NAME")
            .unwrap_or_else(|| std::env::consts::OS.into()),
        kernel,
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// GPUs from `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`; none when the
/// tool is absent or fails (a machine without a usable NVIDIA driver has no GPU to fingerprint).
pub fn nvidia_gpus() -> Vec<Gpu> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name,driver_version", "--format=csv,noheader"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// Parse `name, driver_version` lines.
pub fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|l| l.rsplit_once(','))
        .map(|(name, driver)| Gpu {
            name: name.trim().to_string(),
            driver_version: driver.trim().to_string(),
        })
        .filter(|g| !g.name.is_empty())
        .collect()
}

/// Where a backend computes: what an energy sensor must cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ComputeDevice {
    /// The host CPU (every package).
    Cpu,
    /// CUDA device N, in CUDA's order (`cuda:N`).
    Cuda(u32),
}

impl std::fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComputeDevice::Cpu => f.write_str("cpu"),
            ComputeDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for ComputeDevice {
    type Err = String;
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "cpu" => Ok(ComputeDevice::Cpu),
            "cuda" => Ok(ComputeDevice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(ComputeDevice::Cuda)
                .ok_or_else(|| format!("`{s}` is not a device (cpu, cuda or cuda:N)")),
        }
    }
}

impl From<ComputeDevice> for String {
    fn from(d: ComputeDevice) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for ComputeDevice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn devices_parse_from_backend_info_strings() {
        assert_eq!("cpu".parse(), Ok(ComputeDevice::Cpu));
        assert_eq!("cuda".parse(), Ok(ComputeDevice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(ComputeDevice::Cuda(3)));
        assert!("chosen by the Ollama server"
            .parse::<ComputeDevice>()
            .is_err());
        assert!("cuda:x".parse::<ComputeDevice>().is_err());
        assert_eq!(ComputeDevice::Cuda(2).to_string(), "cuda:2");
        assert_eq!(
            serde_json::to_value(ComputeDevice::Cuda(2)).unwrap(),
            serde_json::json!("cuda:2")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_reports_at_least_one_core() {
        let m = machine();
        assert!(m.available_cores >= 1);
        assert!(!m.cpu_model.is_empty());
    }

    #[test]
    fn nvidia_smi_lines() {
        let gpus = parse_nvidia_smi(
            "NVIDIA H100 80GB HBM3, 550.54.15\nNVIDIA H100 80GB HBM3, 550.54.15\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].driver_version, "550.54.15");
        assert!(parse_nvidia_smi("").is_empty());
    }
}
