//! The roofline's numbers: per backend × scenario the decode throughput, the bytes a step reads,
//! the bandwidth of the device it computes on and the fraction of the limit reached, and each
//! lower-precision variant against its fp32 parent.

use std::collections::BTreeMap;

use super::super::analysis::{variant_of, LatencyRow};
use super::super::input::RunData;
use crate::backend::registry;
use crate::backend::MemoryTraffic;
use crate::host::ComputeDevice;
use crate::measure::{RunOutcome, RunPhase};
use crate::roofline::{BandwidthSample, CopyBandwidth};

/// A backend decoding below this fraction of its roofline is flagged. Measured here (2-core EPYC,
/// docs/performance.md): the deploy-form ONNX Runtime variants and llama.cpp run at 0.5–1.1 of
/// their limit; the fp32-zero-point 4-bit export that this flag exists for ran at 0.04.
pub const MIN_FRACTION: f64 = 0.25;

/// The bandwidth sample is trusted for the fraction check only on a machine no busier than this
/// many runnable threads per core it measured with (load average / threads). Measured here: under
/// a load of 16 on 2 cores the probe read 5.9 GB/s and every backend decoded at 1–30 % of its
/// limit, because decode suffers more from load than the probe does (docs/regression.md); the
/// fractions are then shown but not judged.
pub const MAX_LOAD_PER_THREAD: f64 = 1.0;

/// Bootstrap settings for the variant/parent ratio.
const LEVEL: f64 = 0.95;
const RESAMPLES: usize = 2000;
const SEED: u64 = 0x20f1;

/// A lower-precision variant's decode throughput against its fp32 parent's, same workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentComparison {
    pub parent: String,
    pub parent_tokens_per_s: f64,
    /// Median variant / median parent.
    pub ratio: f64,
    /// 95 % bootstrap CI of the ratio of medians, where both have enough runs.
    pub ci: Option<(f64, f64)>,
}

/// Which measurement a row's bandwidth is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthSource {
    /// The CPU probe's best sample in this run (`bandwidth.jsonl`).
    CpuProbe,
    /// The median device copy bandwidth the tools measured in this run (`tools/`).
    DeviceCopy,
}

/// The bandwidth a row's limit divides by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsedBandwidth {
    pub device: ComputeDevice,
    pub gb_per_s: f64,
    pub source: BandwidthSource,
}

impl std::fmt::Display for UsedBandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.source {
            BandwidthSource::CpuProbe => "probe",
            BandwidthSource::DeviceCopy => "copy",
        };
        write!(f, "{} {what} {:.1} GB/s", self.device, self.gb_per_s)
    }
}

/// One backend × scenario: the longest generation measured (the most decode steps).
#[derive(Debug, Clone, PartialEq)]
pub struct RooflineRow {
    pub backend: String,
    pub scenario: String,
    /// The device the backend computes on (`None`: not known without opening it, e.g. Ollama).
    pub device: Option<ComputeDevice>,
    /// The bandwidth of that device the limit divides by.
    pub bandwidth: Option<UsedBandwidth>,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub runs: usize,
    pub decode_tokens_per_s: f64,
    pub traffic: Option<MemoryTraffic>,
    /// Weights + KV cache at the decode loop's mean context (prompt + gen/2 positions).
    pub bytes_per_token: Option<f64>,
    /// `bandwidth ÷ bytes_per_token`.
    pub limit_tokens_per_s: Option<f64>,
    pub fraction: Option<f64>,
    /// Whether the fraction is judged against [`MIN_FRACTION`]: the CPU probe's, when taken on a
    /// machine no busier than [`MAX_LOAD_PER_THREAD`]; never a device copy bandwidth (see `from_run`).
    pub fraction_judged: bool,
    pub parent: Option<ParentComparison>,
}

impl RooflineRow {
    /// Why this row says "check its configuration" (empty: it does not).
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = self
            .fraction
            .filter(|f| self.fraction_judged && *f < MIN_FRACTION)
        {
            out.push(format!(
                "{} · {}: decode at {:.0} % of its roofline (below {:.0} %)",
                self.backend,
                self.scenario,
                f * 100.0,
                MIN_FRACTION * 100.0
            ));
        }
        if let Some(p) = self.parent.as_ref().filter(|p| p.ratio < 1.0) {
            out.push(format!(
                "{} · {}: decode {:.1} tok/s, slower than its fp32 parent `{}` ({:.1} tok/s, ×{:.2}) while reading fewer bytes per token",
                self.backend, self.scenario, self.decode_tokens_per_s, p.parent, p.parent_tokens_per_s, p.ratio
            ));
        }
        out
    }
}

/// The roofline of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Roofline {
    /// Every CPU bandwidth sample of the run (several when shards were merged).
    pub bandwidth: Vec<BandwidthSample>,
    /// The device copy bandwidths the rows used, one per device.
    pub device_copy: Vec<CopyBandwidth>,
    pub rows: Vec<RooflineRow>,
}

impl Roofline {
    /// From the run's bandwidth samples, its ok measured runs' memory traffic and the latency rows
    /// of the gate's own model (variants such as the scaling gate's synthetic shapes are left out).
    pub fn from_run(data: &RunData, rows: &[LatencyRow]) -> Self {
        let bandwidth: Vec<BandwidthSample> = data
            .bandwidth
            .iter()
            .filter(|s| s.gb_per_s.is_finite() && s.gb_per_s > 0.0)
            .cloned()
            .collect();
        let mut traffic: BTreeMap<&str, MemoryTraffic> = BTreeMap::new();
        for r in data
            .runs
            .iter()
            .filter(|r| r.phase == RunPhase::Measured && variant_of(r).is_empty())
        {
            if let RunOutcome::Ok(t) = &r.outcome {
                if let Some(m) = t.memory_traffic {
                    traffic.entry(r.backend.as_str()).or_insert(m);
                }
            }
        }
        let best = bandwidth
            .iter()
            .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s));
        let cpu = best.map(|s| {
            (
                UsedBandwidth {
                    device: ComputeDevice::Cpu,
                    gb_per_s: s.gb_per_s,
                    source: BandwidthSource::CpuProbe,
                },
                quiet_enough(s),
            )
        });
        let mut device_copy: Vec<CopyBandwidth> = Vec::new();
        let mut bandwidth_of = |device: Option<ComputeDevice>| match device? {
            ComputeDevice::Cpu => cpu,
            d @ ComputeDevice::Cuda(_) => {
                let c = data.tools.copy_bandwidth(d)?;
                if !device_copy.iter().any(|x| x.device == d) {
                    device_copy.push(c.clone());
                }
                Some((
                    UsedBandwidth {
                        device: d,
                        gb_per_s: c.gb_per_s_median,
                        source: BandwidthSource::DeviceCopy,
                    },
                    // Shown, not judged: MIN_FRACTION is calibrated on CPU decode, which is
                    // memory-bound. At batch 1 a small model on a GPU is launch-bound (hundreds of
                    // kernels of a few kilobytes each per token), so every engine sits at a few
                    // per cent of the copy roofline; GPU backends are held against the engines'
                    // own tools instead (`gpu_section`).
                    false,
                ))
            }
        };
        let own: Vec<&LatencyRow> = rows
            .iter()
            .filter(|r| r.variant.is_empty() && !r.decode_tokens_per_s.is_empty())
            .collect();
        // The longest generation per backend × scenario, in the latency rows' order.
        let mut chosen: Vec<&LatencyRow> = Vec::new();
        for r in &own {
            match chosen
                .iter_mut()
                .find(|c| c.backend == r.backend && c.scenario == r.scenario)
            {
                Some(c) if r.gen_tokens > c.gen_tokens => *c = r,
                Some(_) => {}
                None => chosen.push(r),
            }
        }
        let out = chosen
            .into_iter()
            .map(|r| {
                let traffic = traffic.get(r.backend.as_str()).copied();
                let positions = r.prompt_tokens as f64 + r.gen_tokens as f64 / 2.0;
                let bytes_per_token = traffic.map(|t| t.bytes_per_token(positions));
                let device = registry::requested_device(&r.backend);
                let used = bandwidth_of(device);
                let limit = match (used, bytes_per_token) {
                    (Some((bw, _)), Some(b)) if b > 0.0 => Some(bw.gb_per_s * 1e9 / b),
                    _ => None,
                };
                let parent = registry::fp32_parent(&r.backend).and_then(|p| {
                    let pr = own.iter().find(|x| {
                        x.backend == p && x.scenario == r.scenario && x.gen_tokens == r.gen_tokens
                    })?;
                    let ci = crate::stats::ratio_of_medians_ci(
                        &r.decode_tokens_per_s,
                        &pr.decode_tokens_per_s,
                        LEVEL,
                        RESAMPLES,
                        SEED,
                    )
                    .ok()
                    .map(|ci| (ci.lo, ci.hi));
                    Some(ParentComparison {
                        parent: p.to_string(),
                        parent_tokens_per_s: pr.decode_tokens_per_s_median,
                        ratio: r.decode_tokens_per_s_median / pr.decode_tokens_per_s_median,
                        ci,
                    })
                });
                RooflineRow {
                    backend: r.backend.clone(),
                    scenario: r.scenario.clone(),
                    device,
                    bandwidth: used.map(|(bw, _)| bw),
                    prompt_tokens: r.prompt_tokens,
                    gen_tokens: r.gen_tokens,
                    runs: r.decode_tokens_per_s.len(),
                    decode_tokens_per_s: r.decode_tokens_per_s_median,
                    traffic,
                    bytes_per_token,
                    limit_tokens_per_s: limit,
                    fraction: limit.map(|l| r.decode_tokens_per_s_median / l),
                    fraction_judged: used.is_some_and(|(_, judged)| judged),
                    parent,
                }
            })
            .collect();
        Roofline {
            bandwidth,
            device_copy,
            rows: out,
        }
    }

    /// Whether any row is of a backend on a CUDA device.
    pub fn has_gpu(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.device, Some(ComputeDevice::Cuda(_))))
    }

    /// The best CPU bandwidth sample (GB/s): the limit is what the machine can do.
    pub fn best_bandwidth(&self) -> Option<&BandwidthSample> {
        self.bandwidth
            .iter()
            .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s))
    }

    /// Backend → every reason it says "check its configuration".
    pub fn flagged(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.rows {
            let f = r.findings();
            if !f.is_empty() {
                out.entry(r.backend.clone()).or_default().extend(f);
            }
        }
        out
    }

    /// The latency rows routing may use: those of backends without a finding.
    pub fn routable(&self, rows: &[LatencyRow]) -> Vec<LatencyRow> {
        let flagged = self.flagged();
        rows.iter()
            .filter(|r| !flagged.contains_key(&r.backend))
            .cloned()
            .collect()
    }
}

/// Whether a bandwidth sample was taken on a machine quiet enough to judge fractions by.
pub fn quiet_enough(s: &BandwidthSample) -> bool {
    s.load_average_1m
        .is_none_or(|l| l <= MAX_LOAD_PER_THREAD * s.threads.max(1) as f64)
}
