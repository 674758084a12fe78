//! The engines' own tools, run beside the gates on the same machine and kept in `<run dir>/tools/`
//! (`scripts/gpu/run.sh` puts them there): the card compares each GPU backend with them.
//!
//! - `tch-decode-modes.jsonl`: the `tch_decode_modes` example — the device's copy bandwidth (the
//!   GPU roofline's denominator) and libtorch's three decode loops with kernels per step;
//! - `llama-bench.json`: `llama-bench -o json` on the same llama.cpp build (its `tg` test is the
//!   engine's own decode speed);
//! - `hf-eager.json`, `hf-compile.json`: `scripts/gpu/hf_decode_baseline.py`, Hugging Face
//!   transformers eager and compiled (static cache, CUDA graphs) on the same weights and prompts.
//!
//! Every file is optional: an absent `tools/` or file is nothing here (the GPU table says which file
//! a comparison lacks, [`Tools::missing`]); one that cannot be read is a note.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::evidence::{DecodeMode, GraphEvidence};
use crate::host::ComputeDevice;
use crate::roofline::CopyBandwidth;

/// The folder of a run directory that holds the tools' outputs.
pub const TOOLS_DIR: &str = "tools";
pub const DECODE_MODES_FILE: &str = "tch-decode-modes.jsonl";
pub const LLAMA_BENCH_FILE: &str = "llama-bench.json";
pub const HF_EAGER_FILE: &str = "hf-eager.json";
pub const HF_COMPILE_FILE: &str = "hf-compile.json";

/// One decode loop of the libtorch probe: medians over its repetitions, same prompt and weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeModeResult {
    pub mode: DecodeMode,
    /// Precision label (`bf16`, `fp16`, `fp32`).
    pub dtype: String,
    pub device: ComputeDevice,
    pub open_s: f64,
    pub two_warmups_s: f64,
    pub prefill_ms_median: f64,
    pub decode_ms_median: f64,
    pub decode_ms_min: f64,
    /// (generated − 1) decode steps ÷ the median decode time.
    pub decode_tok_s_median: f64,
    /// Tokens equal to the first mode's (eager) up to this position.
    pub tokens_equal_to_eager_up_to: Option<usize>,
    /// CUDA-graph mode: whether its tokens equal the static mode's.
    pub tokens_equal_to_static: Option<bool>,
    /// The captured step (CUDA-graph mode).
    pub graph: Option<GraphEvidence>,
    pub first_tokens: Vec<u32>,
}

/// One line of `tch-decode-modes.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DecodeModesLine {
    CopyBandwidth { copy_bandwidth: CopyBandwidth },
    CopyBandwidthError { copy_bandwidth_error: String },
    ModeError { mode: DecodeMode, error: String },
    Mode(DecodeModeResult),
}

/// llama-bench's `flash_attn` column: a flag in older builds, a mode number (−1 auto) in newer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlashAttn {
    Flag(bool),
    Mode(i64),
}

impl fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashAttn::Flag(b) => write!(f, "{}", if *b { "on" } else { "off" }),
            FlashAttn::Mode(-1) => f.write_str("auto"),
            FlashAttn::Mode(0) => f.write_str("off"),
            FlashAttn::Mode(1) => f.write_str("on"),
            FlashAttn::Mode(n) => write!(f, "{n}"),
        }
    }
}

/// One test of `llama-bench -o json` (the fields the card uses; the others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaBenchResult {
    #[serde(default)]
    pub build_commit: Option<String>,
    #[serde(default)]
    pub build_number: Option<i64>,
    #[serde(default)]
    pub backends: Option<String>,
    #[serde(default)]
    pub gpu_info: Option<String>,
    #[serde(default)]
    pub n_gpu_layers: Option<i64>,
    #[serde(default)]
    pub flash_attn: Option<FlashAttn>,
    pub n_prompt: u64,
    pub n_gen: u64,
    /// Mean tokens/s over the repetitions.
    pub avg_ts: f64,
    pub stddev_ts: f64,
}

impl LlamaBenchResult {
    /// A text-generation test (`tg`): tokens generated from an empty prompt.
    pub fn is_tg(&self) -> bool {
        self.n_prompt == 0 && self.n_gen > 0
    }
}

/// transformers' generation mode in `hf_decode_baseline.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HfMode {
    /// Eager attention, dynamic KV cache.
    Eager,
    /// Static KV cache, forward compiled with `torch.compile(mode="reduce-overhead")`.
    Compile,
}

impl HfMode {
    /// The file `hf_decode_baseline.py --mode <mode>` writes in `tools/`.
    pub fn file(self) -> &'static str {
        match self {
            HfMode::Eager => HF_EAGER_FILE,
            HfMode::Compile => HF_COMPILE_FILE,
        }
    }
}

/// One scenario of the transformers baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfScenario {
    pub prompt_tokens: usize,
    pub prefill_ms_median: f64,
    pub e2e_ms_median: f64,
    /// (gen − 1) ÷ (e2e − prefill).
    pub decode_tokens_per_s: f64,
    #[serde(default)]
    pub tokens: Vec<u32>,
}

/// `hf-<mode>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfBaseline {
    pub transformers: String,
    pub torch: String,
    /// The GPU's name, as torch reports it.
    pub device: String,
    pub dtype: String,
    pub mode: HfMode,
    pub attn_implementation: String,
    pub gen_tokens: usize,
    /// Scenario name (as `infergate prompts` printed them) → result.
    pub scenarios: BTreeMap<String, HfScenario>,
}

/// What became of one tool file when the run directory was read.
#[derive(Debug, Clone, PartialEq)]
pub enum FileState {
    /// Not in `tools/` (or no `tools/` at all).
    Absent,
    /// There, but not readable as the tool's output (the reason).
    Unreadable(String),
    Read,
}

/// The tools' outputs of one run directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tools {
    pub decode_modes: Vec<DecodeModesLine>,
    pub llama_bench: Vec<LlamaBenchResult>,
    pub hf: Vec<HfBaseline>,
    /// File name → what became of it (a name not here is [`FileState::Absent`]).
    pub files: BTreeMap<&'static str, FileState>,
}

impl Tools {
    /// Read `<run dir>/tools/`: absent folder or file is nothing; an unreadable file is a note.
    pub fn load(run_dir: &Path, notes: &mut Vec<String>) -> Tools {
        let dir = run_dir.join(TOOLS_DIR);
        let mut out = Tools::default();
        if !dir.is_dir() {
            return out;
        }
        let read = |name: &'static str,
                    notes: &mut Vec<String>,
                    files: &mut BTreeMap<&'static str, FileState>|
         -> Option<String> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(t) => {
                    files.insert(name, FileState::Read);
                    Some(t)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    notes.push(format!("{} unreadable ({e}): not compared", path.display()));
                    files.insert(name, FileState::Unreadable(e.to_string()));
                    None
                }
            }
        };
        let bad = |name: &str, e: &dyn fmt::Display| {
            format!(
                "{} is not the tool's output ({e}): not compared",
                dir.join(name).display()
            )
        };
        if let Some(text) = read(DECODE_MODES_FILE, notes, &mut out.files) {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str(line) {
                    Ok(l) => out.decode_modes.push(l),
                    // The probe's stdout is teed: a stray line is noted, the others still count.
                    Err(e) => notes.push(bad(&format!("{DECODE_MODES_FILE}:{}", i + 1), &e)),
                }
            }
        }
        if let Some(text) = read(LLAMA_BENCH_FILE, notes, &mut out.files) {
            match serde_json::from_str(&text) {
                Ok(v) => out.llama_bench = v,
                Err(e) => {
                    notes.push(bad(LLAMA_BENCH_FILE, &e));
                    out.files
                        .insert(LLAMA_BENCH_FILE, FileState::Unreadable(e.to_string()));
                }
            }
        }
        for name in [HF_EAGER_FILE, HF_COMPILE_FILE] {
            if let Some(text) = read(name, notes, &mut out.files) {
                match serde_json::from_str(&text) {
                    Ok(v) => out.hf.push(v),
                    Err(e) => {
                        notes.push(bad(name, &e));
                        out.files.insert(name, FileState::Unreadable(e.to_string()));
                    }
                }
            }
        }
        out
    }

    /// What became of `name` (one of the `*_FILE`s).
    pub fn state(&self, name: &str) -> FileState {
        self.files.get(name).cloned().unwrap_or(FileState::Absent)
    }

    /// Why a comparison with `name` has no value: the file is absent or unreadable, or (when it was
    /// read) it lacks `what`.
    pub fn missing(&self, name: &str, what: &str) -> String {
        match self.state(name) {
            FileState::Absent => format!("no `{TOOLS_DIR}/{name}` in this run"),
            FileState::Unreadable(e) => format!("`{TOOLS_DIR}/{name}` unreadable ({e})"),
            FileState::Read => format!("`{TOOLS_DIR}/{name}` has no {what}"),
        }
    }

    /// Why there is no copy bandwidth of `device` ([`Self::copy_bandwidth`] is `None`).
    pub fn copy_bandwidth_missing(&self, device: ComputeDevice) -> String {
        let error = self.decode_modes.iter().rev().find_map(|l| match l {
            DecodeModesLine::CopyBandwidthError {
                copy_bandwidth_error,
            } => Some(copy_bandwidth_error),
            _ => None,
        });
        match (self.state(DECODE_MODES_FILE), error) {
            (FileState::Read, Some(e)) => format!(
                "the probe could not measure the copy bandwidth (`{TOOLS_DIR}/{DECODE_MODES_FILE}`: {e})"
            ),
            _ => self.missing(
                DECODE_MODES_FILE,
                &format!("copy bandwidth of `{device}`"),
            ),
        }
    }

    /// The copy bandwidth the probe measured on `device` (the last, if it ran more than once).
    pub fn copy_bandwidth(&self, device: ComputeDevice) -> Option<&CopyBandwidth> {
        self.decode_modes
            .iter()
            .rev()
            .filter_map(|l| match l {
                DecodeModesLine::CopyBandwidth { copy_bandwidth } => Some(copy_bandwidth),
                _ => None,
            })
            .find(|b| {
                b.device == device && b.gb_per_s_median.is_finite() && b.gb_per_s_median > 0.0
            })
    }

    /// The probe's decode loops that ran.
    pub fn modes(&self) -> impl Iterator<Item = &DecodeModeResult> {
        self.decode_modes.iter().filter_map(|l| match l {
            DecodeModesLine::Mode(m) => Some(m),
            _ => None,
        })
    }

    /// The probe's loop in `mode`, if it ran.
    pub fn mode(&self, mode: DecodeMode) -> Option<&DecodeModeResult> {
        self.modes().find(|m| m.mode == mode)
    }

    /// llama-bench's text-generation test (the longest, if several).
    pub fn llama_bench_tg(&self) -> Option<&LlamaBenchResult> {
        self.llama_bench
            .iter()
            .filter(|r| r.is_tg())
            .max_by_key(|r| r.n_gen)
    }

    /// transformers' output in `mode` (the last read, if several).
    pub fn hf_baseline(&self, mode: HfMode) -> Option<&HfBaseline> {
        self.hf.iter().rev().find(|h| h.mode == mode)
    }

    /// transformers in `mode` on `scenario`.
    pub fn hf(&self, mode: HfMode, scenario: &str) -> Option<&HfScenario> {
        self.hf
            .iter()
            .rev()
            .find(|h| h.mode == mode)
            .and_then(|h| h.scenarios.get(scenario))
    }

    pub fn is_empty(&self) -> bool {
        self.decode_modes.is_empty() && self.llama_bench.is_empty() && self.hf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the probe writes them (the H200 run of 2026-12-02, trimmed).
    const MODES: &str = r#"{"copy_bandwidth":{"bytes":1073741824,"device":"cuda:0","gb_per_s_max":4146.2,"gb_per_s_median":4131.3,"reps":20}}
{"decode_ms_median":916.37,"decode_ms_min":735.27,"decode_tok_s_median":68.75,"device":"cuda:0","dtype":"bf16","first_tokens":[33001],"graph":null,"mode":"eager","open_s":0.23,"prefill_ms_median":14.8,"tokens_equal_to_eager_up_to":null,"tokens_equal_to_static":null,"two_warmups_s":6.2}
{"mode":"static","error":"out of memory"}
{"decode_ms_median":87.99,"decode_ms_min":87.95,"decode_tok_s_median":716.0,"device":"cuda:0","dtype":"bf16","first_tokens":[33001],"graph":{"kernels_per_step":459,"nodes_per_step":520,"prefill_graph_lengths":[27],"replays":441,"shim":"/x/libinfergate_cuda_graph.so","static_len":128},"mode":"cuda_graph","open_s":0.22,"prefill_ms_median":1.79,"tokens_equal_to_eager_up_to":28,"tokens_equal_to_static":true,"two_warmups_s":0.2}
"#;

    const BENCH: &str = r#"[
  {"build_commit":"abc","build_number":11434,"backends":"CUDA","gpu_info":"NVIDIA H200","n_gpu_layers":99,"flash_attn":false,"n_prompt":27,"n_gen":0,"avg_ts":30000.0,"stddev_ts":100.0,"samples_ts":[1]},
  {"build_commit":"abc","build_number":11434,"backends":"CUDA","gpu_info":"NVIDIA H200","n_gpu_layers":99,"flash_attn":-1,"n_prompt":0,"n_gen":64,"avg_ts":919.0,"stddev_ts":7.0}
]"#;

    const HF: &str = r#"{"transformers":"4.57","torch":"2.11.0","device":"NVIDIA H200","dtype":"bfloat16","mode":"compile","attn_implementation":"sdpa","gen_tokens":64,
 "scenarios":{"short":{"prompt_tokens":27,"prefill_ms_median":3.0,"e2e_ms_median":204.3,"decode_tokens_per_s":313.0,"tokens":[1,2]}}}"#;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(TOOLS_DIR)).unwrap();
        std::fs::write(dir.join(TOOLS_DIR).join(name), text).unwrap();
    }

    #[test]
    fn the_three_tools_read_back_typed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), DECODE_MODES_FILE, MODES);
        write(dir.path(), LLAMA_BENCH_FILE, BENCH);
        write(dir.path(), HF_COMPILE_FILE, HF);
        let mut notes = Vec::new();
        let t = Tools::load(dir.path(), &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(t.decode_modes.len(), 4);
        assert!(matches!(
            &t.decode_modes[2],
            DecodeModesLine::ModeError {
                mode: DecodeMode::Static,
                ..
            }
        ));
        let bw = t.copy_bandwidth(ComputeDevice::Cuda(0)).unwrap();
        assert_eq!(bw.gb_per_s_median, 4131.3);
        assert!(t.copy_bandwidth(ComputeDevice::Cuda(1)).is_none());
        assert!(t.copy_bandwidth(ComputeDevice::Cpu).is_none());
        assert_eq!(t.modes().count(), 2);
        let g = t.mode(DecodeMode::CudaGraph).unwrap();
        assert_eq!(g.graph.as_ref().unwrap().kernels_per_step, 459);
        assert!(t.mode(DecodeMode::Static).is_none());
        let tg = t.llama_bench_tg().unwrap();
        assert_eq!((tg.n_gen, tg.avg_ts), (64, 919.0));
        assert_eq!(tg.flash_attn.unwrap().to_string(), "auto");
        assert_eq!(t.llama_bench[0].flash_attn, Some(FlashAttn::Flag(false)));
        assert_eq!(
            t.hf(HfMode::Compile, "short").unwrap().decode_tokens_per_s,
            313.0
        );
        assert!(t.hf(HfMode::Eager, "short").is_none());
        assert!(t.hf(HfMode::Compile, "long").is_none());
    }

    #[test]
    fn a_probe_line_written_from_the_types_reads_back_equal() {
        let line = DecodeModesLine::CopyBandwidth {
            copy_bandwidth: CopyBandwidth {
                device: ComputeDevice::Cuda(1),
                bytes: 1 << 30,
                reps: 3,
                gb_per_s_median: 10.0,
                gb_per_s_max: 11.0,
            },
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains("\"device\":\"cuda:1\""), "{text}");
        assert_eq!(
            serde_json::from_str::<DecodeModesLine>(&text).unwrap(),
            line
        );
        let err = DecodeModesLine::ModeError {
            mode: DecodeMode::CudaGraph,
            error: "no shim".into(),
        };
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<DecodeModesLine>(&text).unwrap(), err);
    }

    #[test]
    fn absent_tools_are_nothing_and_a_bad_file_is_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let mut notes = Vec::new();
        assert!(Tools::load(dir.path(), &mut notes).is_empty());
        assert!(notes.is_empty());
        write(dir.path(), LLAMA_BENCH_FILE, "{\"n_prompt\": 0}");
        write(
            dir.path(),
            DECODE_MODES_FILE,
            &format!("weights ready\n{MODES}"),
        );
        let t = Tools::load(dir.path(), &mut notes);
        assert!(t.llama_bench.is_empty());
        assert_eq!(t.decode_modes.len(), 4, "the good lines still count");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("tch-decode-modes.jsonl:1"), "{notes:?}");
        assert!(notes[1].contains(LLAMA_BENCH_FILE), "{notes:?}");
    }

    #[test]
    fn a_committed_probe_output_without_newer_fields_reads_back() {
        // docs/data/h200-tch-decode-modes-random-2026-12-02.jsonl: no `tokens_equal_to_static`,
        // no `prefill_graph_lengths`.
        let line = r#"{"decode_ms_median":88.032316,"decode_ms_min":88.005586,"decode_tok_s_median":715.6462860752181,"device":"cuda:0","dtype":"bf16","first_tokens":[33001,33001],"graph":{"kernels_per_step":459,"nodes_per_step":520,"replays":756,"shim":"/tmp/shim-box/libinfergate_cuda_graph.so","static_len":128},"mode":"cuda_graph","open_s":0.863437152,"prefill_ms_median":22.213064000000003,"tokens_equal_to_eager_up_to":28,"two_warmups_s":0.264735774}"#;
        let DecodeModesLine::Mode(m) = serde_json::from_str::<DecodeModesLine>(line).unwrap()
        else {
            panic!("not read as a mode line");
        };
        assert_eq!(m.mode, DecodeMode::CudaGraph);
        assert_eq!(m.device, ComputeDevice::Cuda(0));
        assert_eq!(m.tokens_equal_to_static, None);
        assert!(m.graph.unwrap().prefill_graph_lengths.is_empty());
    }

    #[test]
    fn file_states_say_absent_unreadable_or_what_is_lacking() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), HF_EAGER_FILE, "not json");
        write(dir.path(), HF_COMPILE_FILE, HF);
        let mut notes = Vec::new();
        let t = Tools::load(dir.path(), &mut notes);
        assert_eq!(t.state(LLAMA_BENCH_FILE), FileState::Absent);
        assert!(matches!(t.state(HF_EAGER_FILE), FileState::Unreadable(_)));
        assert_eq!(t.state(HF_COMPILE_FILE), FileState::Read);
        assert_eq!(
            t.missing(LLAMA_BENCH_FILE, "tg test"),
            "no `tools/llama-bench.json` in this run"
        );
        assert!(t
            .missing(HF_EAGER_FILE, "x")
            .starts_with("`tools/hf-eager.json` unreadable ("));
        assert_eq!(
            t.missing(HF_COMPILE_FILE, "scenario `long`"),
            "`tools/hf-compile.json` has no scenario `long`"
        );
        assert_eq!(
            t.copy_bandwidth_missing(ComputeDevice::Cuda(0)),
            "no `tools/tch-decode-modes.jsonl` in this run"
        );
        assert_eq!(t.hf_baseline(HfMode::Compile).unwrap().gen_tokens, 64);
        assert!(t.hf_baseline(HfMode::Eager).is_none());
    }
}
