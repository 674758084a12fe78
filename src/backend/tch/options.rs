//! How a libtorch backend is opened: device, dtype and decode mode, and their labels.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::backend::evidence::DecodeMode;
use crate::host::ComputeDevice;

/// Precision of weights and activations (RMSNorm statistics are always taken in fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TchDtype {
    Fp32,
    Bf16,
    Fp16,
}

impl TchDtype {
    pub fn label(self) -> &'static str {
        match self {
            TchDtype::Fp32 => "fp32",
            TchDtype::Bf16 => "bf16",
            TchDtype::Fp16 => "fp16",
        }
    }
    pub fn kind(self) -> Kind {
        match self {
            TchDtype::Fp32 => Kind::Float,
            TchDtype::Bf16 => Kind::BFloat16,
            TchDtype::Fp16 => Kind::Half,
        }
    }
}

/// Where the computation is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TchDevice {
    Cpu,
    Cuda(usize),
}

impl From<TchDevice> for ComputeDevice {
    fn from(d: TchDevice) -> Self {
        match d {
            TchDevice::Cpu => ComputeDevice::Cpu,
            TchDevice::Cuda(i) => ComputeDevice::Cuda(i as u32),
        }
    }
}

impl TchDevice {
    pub fn label(self) -> String {
        device_label(self.to_tch())
    }
    pub(super) fn to_tch(self) -> Device {
        match self {
            TchDevice::Cpu => Device::Cpu,
            TchDevice::Cuda(i) => Device::Cuda(i),
        }
    }
}

/// A tch device as evidence names it (`cpu`, `cuda:0`).
pub(super) fn device_label(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A tch dtype as evidence names it (`fp32`, `bf16`, `fp16`).
pub(super) fn kind_label(k: Kind) -> String {
    match k {
        Kind::Float => "fp32".into(),
        Kind::BFloat16 => "bf16".into(),
        Kind::Half => "fp16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// How to open a libtorch backend.
#[derive(Debug, Clone, PartialEq)]
pub struct TchOptions {
    /// Backend id in trial names (`tch-cpu`, `tch-cuda-bf16` …).
    pub id: String,
    pub device: TchDevice,
    pub dtype: TchDtype,
    /// How the decode loop runs (eager unless a `*-static`/`*-graph` id asks otherwise).
    pub decode: DecodeMode,
}

impl TchOptions {
    pub fn new(id: &str, device: TchDevice, dtype: TchDtype) -> Self {
        TchOptions {
            id: id.into(),
            device,
            dtype,
            decode: DecodeMode::Eager,
        }
    }

    pub fn with_decode(mut self, decode: DecodeMode) -> Self {
        self.decode = decode;
        self
    }
}
