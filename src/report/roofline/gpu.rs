//! The card's GPU section: each GPU backend's decode against the tools of the run (transformers
//! eager and compiled, `llama-bench`) and against its device's copy bandwidth.

use std::fmt::Write;

use super::super::tools::{
    HfMode, Tools, DECODE_MODES_FILE, HF_COMPILE_FILE, HF_EAGER_FILE, LLAMA_BENCH_FILE, TOOLS_DIR,
};
use super::model::{Roofline, MIN_FRACTION};
use crate::host::ComputeDevice;

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
