//! The decode roofline on the decision card: per backend × scenario, median decode tokens/s against
//! the limit `bandwidth ÷ bytes read per token` (the bytes from what the backend loaded,
//! [`MemoryTraffic`]). The bandwidth is that of the device the backend computes on
//! ([`registry::requested_device`]), measured in the run: a CPU backend's is the CPU probe's
//! ([`crate::roofline`]), a `cuda:N` backend's is the copy bandwidth of `cuda:N` that the tools
//! measured ([`super::tools`]). A GPU backend without its device's bandwidth has no limit — never
//! the CPU's.
//!
//! Two findings say "check its configuration", and keep a backend out of the routing
//! recommendation — a ranking that a configuration choice explains is not a finding about engines:
//!
//! - **below the roofline**: decode runs under [`MIN_FRACTION`] of its limit;
//! - **slower than its fp32 parent**: a lower-precision variant of the same engine reads fewer bytes
//!   per token, so in decode (memory-bound at batch 1) it must not be slower than the fp32 model it
//!   was made from, on the same workload.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::analysis::{variant_of, LatencyRow};
use super::input::RunData;
use super::tools::{
    HfMode, Tools, DECODE_MODES_FILE, HF_COMPILE_FILE, HF_EAGER_FILE, LLAMA_BENCH_FILE, TOOLS_DIR,
};
use crate::backend::registry;
use crate::backend::{ComputeDevice, MemoryTraffic};
use crate::measure::{RunOutcome, RunPhase};
use crate::roofline::{BandwidthSample, CopyBandwidth, BANDWIDTH_FILE};

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

fn fmt_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or("n/a".into(), f)
}

/// The card's roofline section.
pub fn section(md: &mut String, r: &Roofline) {
    let _ = writeln!(md, "## Decode roofline (memory bandwidth, this run)\n");
    match r.best_bandwidth() {
        Some(b) => {
            let load = b
                .load_average_1m
                .map_or(String::new(), |l| format!(", load average {l:.2}"));
            let _ = writeln!(
                md,
                "CPU bandwidth **{:.1} GB/s**: the best of {} sample(s) of the probe's streaming fp32 matrix-vector kernel ({} MiB streamed per timing, {} thread(s){load}); CPU backends' limits divide by it. \
Limit = bandwidth of the backend's device ÷ bytes one decode step reads (the weights in their stored type, an embedding read by row gather counted as one row, plus the KV cache at the loop's mean context). \
A backend below {:.0} % of its limit, or a lower-precision variant slower than its fp32 parent in decode (it reads fewer bytes, and decode is memory-bound), is flagged **check its configuration** and left out of routing.\n",
                b.gb_per_s,
                r.bandwidth.len(),
                b.bytes_per_timing >> 20,
                b.threads,
                MIN_FRACTION * 100.0,
            );
            if !quiet_enough(b) {
                let _ = writeln!(
                    md,
                    "**The machine was busy when the bandwidth was measured** (load average {} on {} thread(s)): the fractions below are shown but not judged; run on a quiet machine to judge them. Variants are still compared with their fp32 parents (same run).\n",
                    b.load_average_1m.map_or("unknown".into(), |l| format!("{l:.2}")),
                    b.threads
                );
            }
        }
        None => {
            let _ = writeln!(md, "No CPU bandwidth was measured in this run (`{BANDWIDTH_FILE}` is absent), so no CPU backend has a limit; variants are still compared with their fp32 parents.\n");
        }
    }
    for c in &r.device_copy {
        let _ = writeln!(
            md,
            "`{}` bandwidth **{:.1} GB/s**: the median of {} device-to-device copies of {} MiB (max {:.1} GB/s; read + write counted, libtorch, `tools/{}` of this run); the limits of the backends on `{}` divide by it.\n",
            c.device,
            c.gb_per_s_median,
            c.reps,
            c.bytes >> 20,
            c.gb_per_s_max,
            super::tools::DECODE_MODES_FILE,
            c.device,
        );
    }
    let mut no_device_bw: Vec<String> = Vec::new();
    for row in r
        .rows
        .iter()
        .filter(|x| x.bandwidth.is_none() && x.traffic.is_some())
    {
        let what = match row.device {
            Some(ComputeDevice::Cuda(_)) => format!(
                "`{}` (no copy bandwidth of `{}` in this run's `tools/`)",
                row.backend,
                row.device.map_or(String::new(), |d| d.to_string())
            ),
            Some(ComputeDevice::Cpu) => continue,
            None => format!("`{}` (its device is decided when it opens)", row.backend),
        };
        if !no_device_bw.contains(&what) {
            no_device_bw.push(what);
        }
    }
    if !no_device_bw.is_empty() {
        let _ = writeln!(
            md,
            "No bandwidth of their device for {}: no limit (another device's bandwidth is never used).\n",
            no_device_bw.join(", ")
        );
    }
    if r.rows.is_empty() {
        let _ = writeln!(md, "No decode timings in this run.\n");
        return;
    }
    let _ = writeln!(md, "| backend | scenario | gen | runs | decode tok/s (median) | bytes/token | bandwidth | limit tok/s | of limit | vs fp32 parent | |");
    let _ = writeln!(
        md,
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"
    );
    for row in &r.rows {
        let parent = row.parent.as_ref().map_or("—".to_string(), |p| {
            let ci =
                p.ci.map_or(String::new(), |(lo, hi)| format!(" [{lo:.2}, {hi:.2}]"));
            format!("×{:.2}{ci} vs `{}`", p.ratio, p.parent)
        });
        let flag = if row.findings().is_empty() {
            ""
        } else {
            "**check its configuration**"
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            row.backend,
            row.scenario,
            row.gen_tokens,
            row.runs,
            row.decode_tokens_per_s,
            opt(row.bytes_per_token, fmt_bytes),
            row.bandwidth.map_or("n/a".into(), |b| b.to_string()),
            opt(row.limit_tokens_per_s, |v| format!("{v:.1}")),
            opt(row.fraction, |v| format!("{:.0} %", v * 100.0)),
            parent,
            flag
        );
    }
    md.push('\n');
    let unknown: Vec<&str> = {
        let mut v: Vec<&str> = r
            .rows
            .iter()
            .filter(|x| x.traffic.is_none())
            .map(|x| x.backend.as_str())
            .collect();
        v.dedup();
        v
    };
    if !unknown.is_empty() {
        let _ = writeln!(
            md,
            "No bytes-per-token for {}: the backend does not report what it loaded, so it has no limit here.\n",
            unknown
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let flagged = r.flagged();
    if flagged.is_empty() {
        let judged = r.rows.iter().any(|x| x.fraction_judged);
        let _ = writeln!(
            md,
            "No backend is flagged: {}no variant is slower than its fp32 parent.\n",
            if judged {
                format!(
                    "each runs at ≥ {:.0} % of its limit where one is known, and ",
                    MIN_FRACTION * 100.0
                )
            } else {
                String::new()
            }
        );
    } else {
        for (backend, reasons) in &flagged {
            let _ = writeln!(
                md,
                "- **`{backend}`: check its configuration** (not a routing candidate in this run): {}",
                reasons.join("; ")
            );
        }
        md.push('\n');
    }
}

/// llama.cpp's CUDA backend, as the harness drives it, must decode within this fraction of
/// `llama-bench`'s `tg` on the same build (issue 12): the harness adds no cost of its own.
pub const LLAMA_BENCH_TOLERANCE: f64 = 0.05;

/// The harness's llama.cpp CUDA backend, compared with `llama-bench` on the same build.
pub const LLAMA_CPP_CUDA: &str = "llama-cpp-cuda";

/// libtorch's CUDA-graph decode, compared with transformers compiled (static cache, CUDA graphs).
pub const TCH_GRAPH: &str = "tch-cuda-graph-bf16";

/// A GPU backend's decode tokens/s against one tool's.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolComparison {
    pub tool_tokens_per_s: f64,
    /// Tokens the tool generated per run (its decode loop is one fewer step).
    pub tool_gen_tokens: usize,
    /// The backend's median decode tokens/s ÷ the tool's.
    pub ratio: f64,
}

/// `llama-cpp-cuda` against `llama-bench`'s text-generation test on the same build.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaBenchCheck {
    pub comparison: ToolComparison,
    pub stddev_tokens_per_s: f64,
    pub n_gpu_layers: Option<i64>,
    /// |ratio − 1| ≤ [`LLAMA_BENCH_TOLERANCE`].
    pub holds: bool,
}

/// One GPU backend × scenario of the card's GPU table. Each `Err` says which file (or which part
/// of it) the comparison lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuRow {
    pub backend: String,
    pub scenario: String,
    pub device: ComputeDevice,
    pub gen_tokens: usize,
    pub runs: usize,
    pub decode_tokens_per_s: f64,
    /// Decode tokens/s ÷ (device copy bandwidth ÷ bytes one step reads).
    pub fraction: Result<f64, String>,
    pub vs_hf_eager: Result<ToolComparison, String>,
    pub vs_hf_compile: Result<ToolComparison, String>,
    /// Only for [`LLAMA_CPP_CUDA`].
    pub vs_llama_bench: Option<Result<LlamaBenchCheck, String>>,
}

fn compare(
    decode_tokens_per_s: f64,
    tool_tokens_per_s: f64,
    tool_gen_tokens: usize,
) -> Result<ToolComparison, String> {
    if tool_tokens_per_s.is_finite() && tool_tokens_per_s > 0.0 {
        Ok(ToolComparison {
            tool_tokens_per_s,
            tool_gen_tokens,
            ratio: decode_tokens_per_s / tool_tokens_per_s,
        })
    } else {
        Err(format!("the tool reported {tool_tokens_per_s} tok/s"))
    }
}

/// The GPU table: every roofline row of a backend on a CUDA device, against the tools of the run.
pub fn gpu_rows(r: &Roofline, tools: &Tools) -> Vec<GpuRow> {
    r.rows
        .iter()
        .filter_map(|row| {
            let device = match row.device {
                Some(d @ ComputeDevice::Cuda(_)) => d,
                _ => return None,
            };
            let fraction = match (row.fraction, row.bandwidth, row.traffic) {
                (Some(f), Some(_), _) if f.is_finite() => Ok(f),
                (_, _, None) => {
                    Err("the backend does not report the bytes it reads per token".to_string())
                }
                (_, None, _) => Err(tools.copy_bandwidth_missing(device)),
                _ => Err("no bytes per token".to_string()),
            };
            let hf = |mode: HfMode| {
                let file = mode.file();
                let base = tools
                    .hf_baseline(mode)
                    .ok_or_else(|| tools.missing(file, "transformers result"))?;
                let sc = base
                    .scenarios
                    .get(&row.scenario)
                    .ok_or_else(|| tools.missing(file, &format!("scenario `{}`", row.scenario)))?;
                compare(
                    row.decode_tokens_per_s,
                    sc.decode_tokens_per_s,
                    base.gen_tokens,
                )
            };
            let vs_llama_bench = (row.backend == LLAMA_CPP_CUDA).then(|| {
                let tg = tools
                    .llama_bench_tg()
                    .ok_or_else(|| tools.missing(LLAMA_BENCH_FILE, "text-generation (tg) test"))?;
                let comparison = compare(row.decode_tokens_per_s, tg.avg_ts, tg.n_gen as usize)?;
                Ok(LlamaBenchCheck {
                    holds: (comparison.ratio - 1.0).abs() <= LLAMA_BENCH_TOLERANCE,
                    comparison,
                    stddev_tokens_per_s: tg.stddev_ts,
                    n_gpu_layers: tg.n_gpu_layers,
                })
            });
            Some(GpuRow {
                backend: row.backend.clone(),
                scenario: row.scenario.clone(),
                device,
                gen_tokens: row.gen_tokens,
                runs: row.runs,
                decode_tokens_per_s: row.decode_tokens_per_s,
                fraction,
                vs_hf_eager: hf(HfMode::Eager),
                vs_hf_compile: hf(HfMode::Compile),
                vs_llama_bench,
            })
        })
        .collect()
}

fn comparison_cell(c: &Result<ToolComparison, String>, gen_tokens: usize) -> String {
    match c {
        Ok(c) => {
            let gen = if c.tool_gen_tokens == gen_tokens {
                String::new()
            } else {
                format!(", tool gen {}", c.tool_gen_tokens)
            };
            format!("×{:.2} ({:.1} tok/s{gen})", c.ratio, c.tool_tokens_per_s)
        }
        Err(why) => format!("missing: {why}"),
    }
}

/// The card's GPU section (nothing when the run has no GPU backend).
pub fn gpu_section(md: &mut String, r: &Roofline, tools: &Tools) {
    let rows = gpu_rows(r, tools);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## GPU backends against the engines' own tools (this run)\n"
    );
    let _ = writeln!(
        md,
        "Decode tok/s: the median of this run's measured runs. Of roofline: decode ÷ (device copy bandwidth from `{TOOLS_DIR}/{DECODE_MODES_FILE}` ÷ bytes one decode step reads), shown but not judged against the CPU floor of {:.0} %: at batch 1 a small model on a GPU is launch-bound (kernels per token × launch cost), not bandwidth-bound, so every engine sits far below this limit and the engines' own tools are the yardstick. \
vs transformers: decode ÷ transformers' decode tok/s on the same scenario and weights (`{TOOLS_DIR}/{HF_EAGER_FILE}`, `{TOOLS_DIR}/{HF_COMPILE_FILE}`: `scripts/gpu/hf_decode_baseline.py`). \
vs llama-bench: `{LLAMA_CPP_CUDA}` ÷ `llama-bench`'s tg test on the same build (`{TOOLS_DIR}/{LLAMA_BENCH_FILE}`); the check is that they agree within {:.0} %.\n",
        MIN_FRACTION * 100.0,
        LLAMA_BENCH_TOLERANCE * 100.0
    );
    let _ = writeln!(md, "| backend | scenario | device | gen | runs | decode tok/s | of roofline | vs transformers eager | vs transformers compiled | vs llama-bench tg |");
    let _ = writeln!(
        md,
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |"
    );
    for g in &rows {
        let bench = match &g.vs_llama_bench {
            None => "—".to_string(),
            Some(Ok(b)) => format!(
                "×{:.3} ({:.1} ± {:.1} tok/s, tg{})",
                b.comparison.ratio,
                b.comparison.tool_tokens_per_s,
                b.stddev_tokens_per_s,
                b.comparison.tool_gen_tokens
            ),
            Some(Err(why)) => format!("missing: {why}"),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            g.backend,
            g.scenario,
            g.device,
            g.gen_tokens,
            g.runs,
            g.decode_tokens_per_s,
            match &g.fraction {
                Ok(f) => format!("{:.0} %", f * 100.0),
                Err(why) => format!("missing: {why}"),
            },
            comparison_cell(&g.vs_hf_eager, g.gen_tokens),
            comparison_cell(&g.vs_hf_compile, g.gen_tokens),
            bench,
        );
    }
    md.push('\n');
    for g in rows.iter().filter(|g| g.vs_llama_bench.is_some()) {
        let line = match &g.vs_llama_bench {
            Some(Ok(b)) => format!(
                "**{}**: `{}` · {} decodes at {:.1} tok/s, llama-bench tg{} {:.1} tok/s (n_gpu_layers {}): ×{:.3}, {} {:.0} %",
                if b.holds { "holds" } else { "does not hold" },
                g.backend,
                g.scenario,
                g.decode_tokens_per_s,
                b.comparison.tool_gen_tokens,
                b.comparison.tool_tokens_per_s,
                b.n_gpu_layers.map_or("unknown".into(), |n| n.to_string()),
                b.comparison.ratio,
                if b.holds { "within" } else { "outside" },
                LLAMA_BENCH_TOLERANCE * 100.0
            ),
            Some(Err(why)) => format!("**not checked**: `{}` · {}: {why}", g.backend, g.scenario),
            None => continue,
        };
        let _ = writeln!(md, "- llama-bench agreement {line}");
    }
    for g in rows.iter().filter(|g| g.backend == TCH_GRAPH) {
        let line = match &g.vs_hf_compile {
            Ok(c) => format!(
                "**{}**: `{}` · {} at {:.1} tok/s against transformers compiled {:.1} tok/s (×{:.2})",
                if c.ratio >= 1.0 { "holds" } else { "does not hold" },
                g.backend,
                g.scenario,
                g.decode_tokens_per_s,
                c.tool_tokens_per_s,
                c.ratio
            ),
            Err(why) => format!("**not checked**: `{}` · {}: {why}", g.backend, g.scenario),
        };
        let _ = writeln!(md, "- CUDA graph at or above transformers compiled {line}");
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;
    use crate::measure::{RunRecord, RunTimings};

    fn run(backend: &str, scenario: &str, decode_ms: f64, traffic: MemoryTraffic) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            trial: crate::gate::TrialId::new(
                "phase.decode_fraction",
                crate::gate::Unit::backend(backend),
                Some(scenario),
            ),
            sub_series: None,
            backend: backend.into(),
            scenario: scenario.into(),
            index: 0,
            phase: RunPhase::Measured,
            started_unix_ms: 0,
            outcome: RunOutcome::Ok(RunTimings {
                prompt_tokens: 10,
                gen_tokens: 64,
                prefill_ms: 5.0,
                decode_ms,
                e2e_ms: decode_ms + 5.0,
                decode_steps: 63,
                timing_source: TimingSource::Harness,
                cold_start_ms: None,
                cached_prompt_tokens: None,
                memory_traffic: Some(traffic),
            }),
        }
    }

    fn data(runs: Vec<RunRecord>, gb_per_s: Option<f64>) -> RunData {
        let mut d = RunData {
            runs,
            ..Default::default()
        };
        if let Some(g) = gb_per_s {
            let s = BandwidthSample {
                run_id: "r".into(),
                measured_unix_ms: 0,
                gb_per_s: g,
                timings_gb_per_s: vec![g],
                threads: 2,
                bytes_per_timing: 24 << 26,
                load_average_1m: Some(0.1),
            };
            d.bandwidth.push(s);
        }
        d
    }

    const FP32: MemoryTraffic = MemoryTraffic {
        weight_bytes_per_token: 500_000_000,
        kv_bytes_per_position: 0,
    };
    const Q4: MemoryTraffic = MemoryTraffic {
        weight_bytes_per_token: 100_000_000,
        kv_bytes_per_position: 0,
    };

    #[test]
    fn a_slow_quantized_variant_is_flagged_and_left_out_of_routing() {
        // fp32: 63 steps in 1.5 s = 42 tok/s; limit 20 GB/s / 0.5 GB = 40 tok/s.
        // q4: 63 steps in 9 s = 7 tok/s; limit 200 tok/s → 3.5 %, and slower than fp32.
        let runs = vec![
            run("ort-cpu", "short", 1500.0, FP32),
            run("ort-cpu", "short", 1510.0, FP32),
            run("ort-cpu-q4", "short", 9000.0, Q4),
            run("ort-cpu-q4", "short", 9100.0, Q4),
        ];
        let d = data(runs, Some(20.0));
        let rows = super::super::analysis::latency_rows(&d.runs);
        let r = Roofline::from_run(&d, &rows);
        assert_eq!(r.rows.len(), 2);
        let fp32 = &r.rows[0];
        assert!((fp32.limit_tokens_per_s.unwrap() - 40.0).abs() < 1e-9);
        assert!(fp32.findings().is_empty(), "{:?}", fp32.findings());
        let q4 = &r.rows[1];
        assert!(q4.fraction.unwrap() < MIN_FRACTION);
        assert!(q4.parent.as_ref().unwrap().ratio < 1.0);
        assert_eq!(q4.findings().len(), 2, "{:?}", q4.findings());
        let flagged = r.flagged();
        assert_eq!(flagged.keys().collect::<Vec<_>>(), ["ort-cpu-q4"]);
        let routable = r.routable(&rows);
        assert!(routable.iter().all(|x| x.backend == "ort-cpu"));
        let mut md = String::new();
        section(&mut md, &r);
        assert!(
            md.contains("**`ort-cpu-q4`: check its configuration**"),
            "{md}"
        );
    }

    #[test]
    fn on_a_busy_machine_fractions_are_not_judged_but_parents_still_are() {
        let runs = vec![
            run("ort-cpu", "short", 1500.0, FP32),
            run("ort-cpu-q4", "short", 9000.0, Q4),
        ];
        let mut d = data(runs, Some(20.0));
        d.bandwidth[0].load_average_1m = Some(16.2);
        let rows = super::super::analysis::latency_rows(&d.runs);
        let r = Roofline::from_run(&d, &rows);
        assert!(r
            .rows
            .iter()
            .all(|x| !x.fraction_judged && x.fraction.is_some()));
        assert_eq!(r.rows[1].findings().len(), 1, "{:?}", r.rows[1].findings());
        let mut md = String::new();
        section(&mut md, &r);
        assert!(md.contains("not judged"), "{md}");
    }

    #[test]
    fn a_fast_variant_is_not_flagged_and_without_bandwidth_there_is_no_limit() {
        let runs = vec![
            run("ort-cpu", "short", 1500.0, FP32),
            run("ort-cpu-q4", "short", 700.0, Q4),
        ];
        let d = data(runs, None);
        let rows = super::super::analysis::latency_rows(&d.runs);
        let r = Roofline::from_run(&d, &rows);
        assert!(r.rows.iter().all(|x| x.limit_tokens_per_s.is_none()));
        assert!(r.flagged().is_empty());
        let mut md = String::new();
        section(&mut md, &r);
        assert!(md.contains("No CPU bandwidth was measured"), "{md}");
    }

    // GPU table fixtures: the tools' outputs with their real field names (trimmed).
    const MODES: &str = r#"{"copy_bandwidth":{"bytes":1073741824,"device":"cuda:0","gb_per_s_max":4146.2,"gb_per_s_median":4000.0,"reps":20}}
{"mode":"static","error":"out of memory"}
"#;
    const BENCH: &str = r#"[{"build_commit":"abc","build_number":11434,"backends":"CUDA","gpu_info":"NVIDIA H200","n_gpu_layers":99,"flash_attn":false,"n_prompt":27,"n_gen":0,"avg_ts":30000.0,"stddev_ts":100.0},
 {"build_commit":"abc","build_number":11434,"backends":"CUDA","gpu_info":"NVIDIA H200","n_gpu_layers":99,"flash_attn":false,"n_prompt":0,"n_gen":64,"avg_ts":920.0,"stddev_ts":7.0}]"#;
    const HF_EAGER: &str = r#"{"transformers":"4.57","torch":"2.11.0","device":"NVIDIA H200","dtype":"bfloat16","mode":"eager","attn_implementation":"eager","gen_tokens":64,
 "scenarios":{"short":{"prompt_tokens":10,"prefill_ms_median":9.0,"e2e_ms_median":900.0,"decode_tokens_per_s":70.0}}}"#;
    const HF_COMPILE: &str = r#"{"transformers":"4.57","torch":"2.11.0","device":"NVIDIA H200","dtype":"bfloat16","mode":"compile","attn_implementation":"sdpa","gen_tokens":64,
 "scenarios":{"short":{"prompt_tokens":10,"prefill_ms_median":3.0,"e2e_ms_median":204.3,"decode_tokens_per_s":315.0,"tokens":[1,2]}}}"#;

    const BF16: MemoryTraffic = MemoryTraffic {
        weight_bytes_per_token: 200_000_000,
        kv_bytes_per_position: 0,
    };

    fn tools_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Tools, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let t = dir.path().join(super::super::tools::TOOLS_DIR);
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join(name), text).unwrap();
        }
        let mut notes = Vec::new();
        let tools = Tools::load(dir.path(), &mut notes);
        (dir, tools, notes)
    }

    /// 63 decode steps in `ms` → 63 000 / ms tok/s.
    fn gpu_runs() -> Vec<RunRecord> {
        vec![
            // 63 / 0.070 s = 900 tok/s: ×0.978 of llama-bench's 920.
            run("llama-cpp-cuda", "short", 70.0, Q4),
            // 63 / 0.100 s = 630 tok/s: ×0.685.
            run("llama-cpp-cuda", "long", 100.0, Q4),
            // 63 / 0.090 s = 700 tok/s; limit 4000 GB/s ÷ 0.2 GB = 20 000 tok/s → 3.5 %.
            run("tch-cuda-graph-bf16", "short", 90.0, BF16),
            run("ort-cpu", "short", 1500.0, FP32),
        ]
    }

    fn gpu_table(tools: Tools) -> (Roofline, Vec<GpuRow>, String) {
        let mut d = data(gpu_runs(), Some(20.0));
        d.tools = tools;
        let rows = super::super::analysis::latency_rows(&d.runs);
        let r = Roofline::from_run(&d, &rows);
        let g = gpu_rows(&r, &d.tools);
        let mut md = String::new();
        gpu_section(&mut md, &r, &d.tools);
        (r, g, md)
    }

    fn row<'a>(g: &'a [GpuRow], backend: &str, scenario: &str) -> &'a GpuRow {
        g.iter()
            .find(|x| x.backend == backend && x.scenario == scenario)
            .unwrap_or_else(|| panic!("no row {backend} · {scenario} in {g:?}"))
    }

    #[test]
    fn the_gpu_table_compares_each_gpu_backend_with_the_tools_of_its_run() {
        let (_dir, tools, notes) = tools_dir(&[
            (super::super::tools::DECODE_MODES_FILE, MODES),
            (super::super::tools::LLAMA_BENCH_FILE, BENCH),
            (super::super::tools::HF_EAGER_FILE, HF_EAGER),
            (super::super::tools::HF_COMPILE_FILE, HF_COMPILE),
        ]);
        assert!(notes.is_empty(), "{notes:?}");
        let (r, g, md) = gpu_table(tools);
        assert_eq!(g.len(), 3, "the CPU backend is not in the GPU table: {g:?}");
        assert!(g.iter().all(|x| x.backend != "ort-cpu"));
        // The CPU row still divides by the CPU probe, never the device copy bandwidth.
        let cpu = r.rows.iter().find(|x| x.backend == "ort-cpu").unwrap();
        assert_eq!(cpu.bandwidth.unwrap().source, BandwidthSource::CpuProbe);

        let graph = row(&g, "tch-cuda-graph-bf16", "short");
        assert!((graph.decode_tokens_per_s - 700.0).abs() < 1e-6);
        assert!((graph.fraction.clone().unwrap() - 0.035).abs() < 1e-9);
        let eager = graph.vs_hf_eager.clone().unwrap();
        assert!((eager.ratio - 10.0).abs() < 1e-9, "{eager:?}");
        let compiled = graph.vs_hf_compile.clone().unwrap();
        assert!((compiled.ratio - 700.0 / 315.0).abs() < 1e-9);
        assert!(
            graph.vs_llama_bench.is_none(),
            "only llama-cpp-cuda is checked"
        );

        let short = row(&g, "llama-cpp-cuda", "short");
        let b = short.vs_llama_bench.clone().unwrap().unwrap();
        assert!(b.holds, "{b:?}");
        assert!((b.comparison.ratio - 900.0 / 920.0).abs() < 1e-9);
        assert_eq!(b.n_gpu_layers, Some(99));
        let long = row(&g, "llama-cpp-cuda", "long");
        assert!(!long.vs_llama_bench.clone().unwrap().unwrap().holds);
        // transformers has no `long` scenario in this fixture: said, not blank.
        assert_eq!(
            long.vs_hf_eager.clone().unwrap_err(),
            "`tools/hf-eager.json` has no scenario `long`"
        );

        assert!(
            md.contains("## GPU backends against the engines' own tools"),
            "{md}"
        );
        assert!(
            md.contains("- llama-bench agreement **holds**: `llama-cpp-cuda` · short"),
            "{md}"
        );
        assert!(
            md.contains("- llama-bench agreement **does not hold**: `llama-cpp-cuda` · long"),
            "{md}"
        );
        assert!(md.contains("- CUDA graph at or above transformers compiled **holds**: `tch-cuda-graph-bf16` · short"), "{md}");
    }

    #[test]
    fn a_missing_tool_file_is_named_in_the_row() {
        let (_dir, tools, _) = tools_dir(&[]);
        let (r, g, md) = gpu_table(tools);
        let graph = row(&g, "tch-cuda-graph-bf16", "short");
        assert_eq!(
            graph.fraction.clone().unwrap_err(),
            "no `tools/tch-decode-modes.jsonl` in this run"
        );
        assert_eq!(
            graph.vs_hf_compile.clone().unwrap_err(),
            "no `tools/hf-compile.json` in this run"
        );
        let gpu_row = r
            .rows
            .iter()
            .find(|x| x.backend == "tch-cuda-graph-bf16")
            .unwrap();
        assert!(gpu_row.bandwidth.is_none(), "never the CPU's bandwidth");
        let bench = row(&g, "llama-cpp-cuda", "short")
            .vs_llama_bench
            .clone()
            .unwrap();
        assert_eq!(
            bench.unwrap_err(),
            "no `tools/llama-bench.json` in this run"
        );
        assert!(
            md.contains("missing: no `tools/hf-eager.json` in this run"),
            "{md}"
        );
        assert!(md.contains("- llama-bench agreement **not checked**: `llama-cpp-cuda` · short: no `tools/llama-bench.json` in this run"), "{md}");
        assert!(
            md.contains("- CUDA graph at or above transformers compiled **not checked**"),
            "{md}"
        );
    }

    #[test]
    fn an_unreadable_tool_file_or_a_failed_probe_says_so_in_the_row() {
        let (_dir, tools, notes) = tools_dir(&[
            (
                super::super::tools::DECODE_MODES_FILE,
                r#"{"copy_bandwidth_error":"CUDA unavailable"}"#,
            ),
            (
                super::super::tools::LLAMA_BENCH_FILE,
                "llama-bench: error: model not found",
            ),
            (super::super::tools::HF_EAGER_FILE, HF_EAGER),
        ]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        let (_, g, _) = gpu_table(tools);
        let graph = row(&g, "tch-cuda-graph-bf16", "short");
        let why = graph.fraction.clone().unwrap_err();
        assert!(
            why.contains("could not measure") && why.contains("CUDA unavailable"),
            "{why}"
        );
        let bench = row(&g, "llama-cpp-cuda", "short")
            .vs_llama_bench
            .clone()
            .unwrap();
        assert!(bench
            .unwrap_err()
            .starts_with("`tools/llama-bench.json` unreadable"));

        // A prompt-processing test only: no tg.
        let pp_only = BENCH.replace("\"n_gen\":64", "\"n_gen\":0");
        let (_dir, tools, _) = tools_dir(&[(super::super::tools::LLAMA_BENCH_FILE, &pp_only)]);
        let (_, g, _) = gpu_table(tools);
        let bench = row(&g, "llama-cpp-cuda", "short")
            .vs_llama_bench
            .clone()
            .unwrap();
        assert_eq!(
            bench.unwrap_err(),
            "`tools/llama-bench.json` has no text-generation (tg) test"
        );
    }

    #[test]
    fn a_run_without_gpu_backends_has_no_gpu_section() {
        let runs = vec![run("ort-cpu", "short", 1500.0, FP32)];
        let d = data(runs, Some(20.0));
        let rows = super::super::analysis::latency_rows(&d.runs);
        let r = Roofline::from_run(&d, &rows);
        assert!(gpu_rows(&r, &d.tools).is_empty());
        let mut md = String::new();
        gpu_section(&mut md, &r, &d.tools);
        assert!(md.is_empty(), "{md}");
    }
}
