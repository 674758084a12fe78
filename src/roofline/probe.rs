//! A machine-speed probe: a fixed amount of decode-like work — matrix-vector products over 64 MiB
//! of fp32 (more than the last-level cache, so they stream from memory as a decode step streams the
//! weights), split across the available cores with a barrier after every 1 MiB chunk (as a
//! thread-pool's parallel-for synchronizes) — timed on the wall clock (about 0.1 s idle here).
//!
//! The probe is compiled with the crate, so its speed depends on the build profile: the
//! fingerprint records the profile, and baselines are compared only within one.
//!
//! Why: on a shared machine the wall time of every run swings with other processes' load (measured
//! here: a clean series 45 % slower than its baseline minutes apart, with a 10 % band). Timed
//! between runs, the probe tells whether the machine is in the state it was in when the baseline
//! was recorded; the regression gate stores the probe times beside the metrics (`probe_ms`) and
//! draws only the conclusions a different machine state cannot explain. The probe is *not* used to
//! rescale the metrics: measured here, its slowdown under load (×2.5) was far from ONNX Runtime's
//! (×4–5), so a rescaled metric would have been wrong by a factor of two.
//! Hand-written because it must be exactly this fixed work, in-process, with no dependencies.
//!
//! The same kernel measures the machine's read bandwidth for the decode roofline
//! ([`crate::roofline`]): its bytes ([`Probe::bytes_per_timing`]) over its best time.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

/// The probe's name as a stored metric.
pub const PROBE_METRIC: &str = "probe_ms";

/// Row length (floats) of the probe matrix.
const COLS: usize = 4096;
/// Rows per thread-chunk between barriers: 64 × 4096 × 4 B = 1 MiB.
const CHUNK_ROWS: usize = 64;
/// Rows in all: 4096 × 4096 × 4 B = 64 MiB.
const ROWS: usize = 4096;
/// Passes per timing: about 0.1 s on an idle 2-core machine (≈ 13 GB/s), long enough to average
/// over many scheduler time slices.
const PASSES: usize = 24;

/// The probe's buffers (64 MiB), allocated once and reused for every timing.
pub struct Probe {
    matrix: Vec<f32>,
    x: Vec<f32>,
    threads: usize,
}

impl Probe {
    /// Buffers filled with fixed values; `threads` = cores the workload uses (at least 1).
    pub fn new(threads: usize) -> Self {
        let matrix = (0..ROWS * COLS).map(|i| ((i % 97) as f32) * 1e-3).collect();
        let x = (0..COLS).map(|i| ((i % 89) as f32) * 1e-3).collect();
        Probe {
            matrix,
            x,
            threads: threads.max(1),
        }
    }

    /// As many threads as the process may use.
    pub fn for_this_machine() -> Self {
        Probe::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Bytes one timing ([`Probe::time_ms`]) streams from memory: the 64 MiB matrix, `PASSES` times.
    pub fn bytes_per_timing(&self) -> u64 {
        (ROWS * COLS * std::mem::size_of::<f32>() * PASSES) as u64
    }

    /// Threads the probe splits its rows over.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Wall time of one timing (`PASSES` passes), in ms.
    pub fn time_ms(&self) -> f64 {
        let start = Instant::now();
        for _ in 0..PASSES {
            black_box(self.pass());
        }
        start.elapsed().as_secs_f64() * 1e3
    }

    /// One matrix-vector product, rows split into contiguous blocks per thread; returns a checksum.
    fn pass(&self) -> f32 {
        let per_thread = ROWS.div_ceil(self.threads);
        let chunks = per_thread.div_ceil(CHUNK_ROWS);
        let barrier = Barrier::new(self.threads);
        let work = |t: usize| -> f32 {
            let mut sum = 0.0f32;
            for c in 0..chunks {
                let lo = (t * per_thread + c * CHUNK_ROWS)
                    .min(ROWS)
                    .min((t + 1) * per_thread);
                let hi = (lo + CHUNK_ROWS).min(ROWS).min((t + 1) * per_thread);
                for row in self.matrix[lo * COLS..hi * COLS].chunks_exact(COLS) {
                    sum += dot(row, &self.x);
                }
                barrier.wait();
            }
            sum
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..self.threads)
                .map(|t| s.spawn(move || work(t)))
                .collect();
            let mine = work(0);
            mine + handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0.0))
                .sum::<f32>()
        })
    }
}

/// Dot product with 8 independent accumulators, so the compiler vectorizes it and the pass is
/// bound by memory bandwidth (like a decode step), not by the latency of one dependent add chain.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test --lib probe_timing -- --ignored --nocapture`: how long a pass takes here.
    #[test]
    #[ignore]
    fn probe_timing() {
        let p = Probe::for_this_machine();
        let t: Vec<f64> = (0..10).map(|_| p.time_ms()).collect();
        println!("probe passes (ms): {t:?}");
    }

    #[test]
    fn every_row_is_visited_once_whatever_the_thread_count() {
        // Same checksum for 1, 2 and 3 threads (3 does not divide the rows evenly).
        let sums: Vec<f32> = [1, 2, 3].iter().map(|&t| Probe::new(t).pass()).collect();
        for s in &sums[1..] {
            assert!((s - sums[0]).abs() <= 1e-3 * sums[0].abs(), "{sums:?}");
        }
        assert!(sums[0] > 0.0);
    }
}
