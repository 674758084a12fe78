//! [`ComputeDevice`]: where a backend computes, which is what an energy sensor must cover. It lives
//! here, below the backends, so energy never imports a backend type; `crate::backend` re-exports it.

use serde::{Deserialize, Serialize};

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
mod tests {
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
