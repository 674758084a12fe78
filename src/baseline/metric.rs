//! The per-run metrics a regression comparison reads (stored and paired mode alike).

use serde::{Deserialize, Serialize};

use super::store::Direction;
use crate::measure::RunTimings;

/// A per-run metric the gate can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Whole generation, ms.
    E2eMs,
    /// The KV-cached decode loop, ms.
    DecodeMs,
    /// One forward over the prompt, ms.
    PrefillMs,
    /// Decode steps per second of decode time.
    DecodeTokensPerS,
    /// Generated tokens per second end to end.
    E2eTokensPerS,
    /// CPU time of this process and its child processes over the run, ms ([`crate::baseline::cpu`]):
    /// the work done, nearly independent of other processes' load.
    E2eCpuMs,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::E2eMs => "e2e_ms",
            Metric::DecodeMs => "decode_ms",
            Metric::PrefillMs => "prefill_ms",
            Metric::DecodeTokensPerS => "decode_tokens_per_s",
            Metric::E2eTokensPerS => "e2e_tokens_per_s",
            Metric::E2eCpuMs => "e2e_cpu_ms",
        }
    }
    pub fn unit(self) -> &'static str {
        match self {
            Metric::E2eMs | Metric::DecodeMs | Metric::PrefillMs | Metric::E2eCpuMs => "ms",
            Metric::DecodeTokensPerS | Metric::E2eTokensPerS => "tokens/s",
        }
    }
    pub fn direction(self) -> Direction {
        match self {
            Metric::E2eMs | Metric::DecodeMs | Metric::PrefillMs | Metric::E2eCpuMs => {
                Direction::LowerIsBetter
            }
            Metric::DecodeTokensPerS | Metric::E2eTokensPerS => Direction::HigherIsBetter,
        }
    }
    /// The metric of one run from its timings and the CPU time it took (`None` = not measured).
    pub fn value(self, t: &RunTimings, cpu_ms: Option<f64>) -> Option<f64> {
        Some(match self {
            Metric::E2eMs => t.e2e_ms,
            Metric::DecodeMs => t.decode_ms,
            Metric::PrefillMs => t.prefill_ms,
            Metric::DecodeTokensPerS => t.decode_tokens_per_s(),
            Metric::E2eTokensPerS => t.e2e_tokens_per_s(),
            Metric::E2eCpuMs => return cpu_ms,
        })
    }
}
