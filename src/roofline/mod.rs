//! The machine's memory bandwidth, measured in the run, for the decode roofline.
//!
//! Decoding one token of a small model at batch 1 reads every weight once and does two flops per
//! weight: it is bound by memory bandwidth, so `bandwidth ÷ bytes read per token` is an upper limit
//! on decode tokens/s. A backend far below its limit, or a quantized variant (fewer bytes) slower
//! than its fp32 parent, is running a configuration artifact, not its engine's speed
//! ([`crate::report::roofline`] draws those conclusions on the card).
//!
//! The bandwidth is the regression probe's kernel ([`probe`]: fp32 matrix-vector
//! products streaming 64 MiB, twice the last-level cache here, on every core, as a decode step
//! streams the weights), timed a few times when a run directory is created; the best timing counts
//! (the limit is what the machine can do, and load only ever lowers it). Each sample is one line of
//! `bandwidth.jsonl` in the run directory, so shards merged into one directory keep all of theirs.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::backend::CopyBandwidth;
use probe::Probe;

pub mod probe;

/// The file in a run directory that holds the bandwidth samples.
pub const BANDWIDTH_FILE: &str = "bandwidth.jsonl";

/// Timings per sample; the fastest counts.
const TIMINGS: usize = 3;

/// One bandwidth measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthSample {
    pub run_id: String,
    pub measured_unix_ms: u64,
    /// Read bandwidth of the fastest timing, in GB/s (10⁹ bytes per second).
    pub gb_per_s: f64,
    /// GB/s of every timing, in order.
    pub timings_gb_per_s: Vec<f64>,
    pub threads: usize,
    /// Bytes one timing streams.
    pub bytes_per_timing: u64,
    /// Load average (1 min) when measured, where the OS tells: a loaded machine measures low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average_1m: Option<f64>,
}

impl BandwidthSample {
    /// Time the probe `TIMINGS` times on every core the process may use (about 0.5 s idle).
    pub fn measure(run_id: &str) -> Self {
        let probe = Probe::for_this_machine();
        let bytes = probe.bytes_per_timing();
        let timings_gb_per_s: Vec<f64> = (0..TIMINGS)
            .map(|_| bytes as f64 / (probe.time_ms() / 1e3) / 1e9)
            .collect();
        BandwidthSample {
            run_id: run_id.into(),
            measured_unix_ms: crate::measure::unix_ms(),
            gb_per_s: timings_gb_per_s.iter().copied().fold(0.0, f64::max),
            timings_gb_per_s,
            threads: probe.threads(),
            bytes_per_timing: bytes,
            load_average_1m: load_average(),
        }
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Measure and append one sample to `<dir>/bandwidth.jsonl` (one locked write).
pub fn record(dir: &Path, run_id: &str) -> std::io::Result<BandwidthSample> {
    let sample = BandwidthSample::measure(run_id);
    let mut line = serde_json::to_vec(&sample).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::create_dir_all(dir)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(BANDWIDTH_FILE))?;
    f.lock()?;
    f.write_all(&line)?;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_sample_reads_back_with_its_best_timing() {
        let dir = tempfile::tempdir().unwrap();
        let s = record(dir.path(), "r1").unwrap();
        assert!(s.gb_per_s > 0.0 && s.gb_per_s.is_finite());
        assert_eq!(s.timings_gb_per_s.len(), TIMINGS);
        assert!(s.timings_gb_per_s.iter().all(|&g| g <= s.gb_per_s));
        let text = std::fs::read_to_string(dir.path().join(BANDWIDTH_FILE)).unwrap();
        let back: BandwidthSample = serde_json::from_str(text.trim()).unwrap();
        // serde_json's default float parser may land one ulp off the written value, so the
        // floats are compared to 1e-12 relative and everything else exactly.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        assert!(close(back.gb_per_s, s.gb_per_s), "{back:?} vs {s:?}");
        assert_eq!(back.timings_gb_per_s.len(), s.timings_gb_per_s.len());
        assert!(
            back.timings_gb_per_s
                .iter()
                .zip(&s.timings_gb_per_s)
                .all(|(&a, &b)| close(a, b)),
            "{back:?} vs {s:?}"
        );
        let exact = |x: &BandwidthSample| BandwidthSample {
            gb_per_s: 0.0,
            timings_gb_per_s: Vec::new(),
            load_average_1m: x.load_average_1m.map(|_| 0.0),
            ..x.clone()
        };
        assert_eq!(exact(&back), exact(&s));
        assert!(match (back.load_average_1m, s.load_average_1m) {
            (Some(a), Some(b)) => close(a, b),
            (a, b) => a == b,
        });
    }
}
