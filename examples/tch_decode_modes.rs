//! Decode speed of the libtorch backend's three decode loops side by side: eager (dynamic shapes,
//! host-launched), static (the fixed-shape step, host-launched) and CUDA graph (that step captured
//! once and replayed per token), on the same weights and prompt, with kernels per step from the
//! captured graph and whether the tokens agree.
//!
//! cargo run --release --features torch --example tch_decode_modes -- [--gguf FILE | --random]
//!     [--device cuda|cpu] [--dtype bf16|fp16|fp32] [--prompt 27 | --ids 504,1463,…] [--tokens 64]
//!     [--reps 10]
//!
//! `--random` uses SmolLM2-135M-shaped random weights (same shapes, hence the same kernels and
//! speed, without the model file). Prints one JSON line per mode
//! ([`infergate::report::tools::DecodeModesLine`], which the card reads back from a run directory's
//! `tools/tch-decode-modes.jsonl`).
use std::time::Instant;

use infergate::backend::tch::{
    copy_bandwidth, DecodeMode, TchBackend, TchDevice, TchDtype, TchOptions,
};
use infergate::backend::Backend;
use infergate::model::{LlamaConfig, LlamaWeights};
use infergate::report::tools::{DecodeModeResult, DecodeModesLine};

fn emit(line: &DecodeModesLine) -> Result<(), Box<dyn std::error::Error>> {
    println!("{}", serde_json::to_string(line)?);
    Ok(())
}

fn smollm2_shape() -> LlamaConfig {
    LlamaConfig {
        n_layers: 30,
        d_model: 576,
        n_heads: 9,
        n_kv_heads: 3,
        ffn_dim: 1536,
        vocab_size: 49_152,
        rope_theta: 100_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
        context_length: 8192,
        bos_token_id: None,
        eos_token_id: None,
        arch: Default::default(),
        attention_bias: false,
        rope_scaling: Default::default(),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(arg(&args, name).map_or(Ok(default), |v| v.parse())?)
    };
    let (prompt_len, gen, reps) = (
        num("--prompt", 27)?,
        num("--tokens", 64)?,
        num("--reps", 10)?,
    );
    let device = match arg(&args, "--device").as_deref() {
        Some("cpu") => TchDevice::Cpu,
        _ => TchDevice::Cuda(0),
    };
    let dtype = match arg(&args, "--dtype").as_deref() {
        Some("fp32") => TchDtype::Fp32,
        Some("fp16") => TchDtype::Fp16,
        _ => TchDtype::Bf16,
    };
    let started = Instant::now();
    let weights = match arg(&args, "--gguf") {
        Some(path) => LlamaWeights::from_gguf(&infergate::model::GgufFile::open(
            std::path::Path::new(&path),
        )?)?,
        None => LlamaWeights::random(&smollm2_shape(), 7)?,
    };
    eprintln!(
        "weights ready in {:.1} s ({} parameters)",
        started.elapsed().as_secs_f64(),
        weights.parameter_count()
    );
    if device != TchDevice::Cpu {
        emit(&match copy_bandwidth(device, 1 << 30, 20) {
            Ok(copy_bandwidth) => DecodeModesLine::CopyBandwidth { copy_bandwidth },
            Err(copy_bandwidth_error) => DecodeModesLine::CopyBandwidthError {
                copy_bandwidth_error,
            },
        })?;
    }
    // `--ids 504,1463,…` (e.g. from `infergate prompts`), else a synthetic prompt of `--prompt` ids.
    let prompt: Vec<u32> = match arg(&args, "--ids") {
        Some(ids) => ids
            .split(',')
            .map(|t| t.trim().parse())
            .collect::<Result<_, _>>()?,
        None => (0..prompt_len as u32)
            .map(|i| (i * 7919 + 13) % weights.config.vocab_size as u32)
            .collect(),
    };
    let modes = [DecodeMode::Eager, DecodeMode::Static, DecodeMode::CudaGraph];
    let mut reference: Option<Vec<u32>> = None;
    let mut static_tokens: Option<Vec<u32>> = None;
    for mode in modes {
        if mode == DecodeMode::CudaGraph && device == TchDevice::Cpu {
            continue;
        }
        let id = format!("tch-{}-{}", mode.label(), dtype.label());
        let opened = Instant::now();
        let mut b = match TchBackend::open(
            TchOptions::new(&id, device, dtype).with_decode(mode),
            &weights,
        ) {
            Ok(b) => b,
            Err(e) => {
                emit(&DecodeModesLine::ModeError {
                    mode,
                    error: e.to_string(),
                })?;
                continue;
            }
        };
        let open_s = opened.elapsed().as_secs_f64();
        let first = Instant::now();
        let warm = (0..2).map(|_| b.generate(&prompt, gen)).last();
        let first_s = first.elapsed().as_secs_f64();
        if let Some(Err(e)) = warm {
            emit(&DecodeModesLine::ModeError {
                mode,
                error: e.to_string(),
            })?;
            continue;
        }
        let (mut decode, mut prefill, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let g = b.generate(&prompt, gen)?;
            decode.push(g.timings.decode_ms);
            prefill.push(g.timings.prefill_ms);
            tokens = g.tokens;
        }
        decode.sort_by(f64::total_cmp);
        prefill.sort_by(f64::total_cmp);
        let med = |v: &[f64]| v[v.len() / 2];
        let agree = reference.as_ref().map(|r| {
            r.iter()
                .zip(&tokens)
                .position(|(a, b)| a != b)
                .unwrap_or(r.len())
        });
        let equal_to_static = match (mode, &static_tokens) {
            (DecodeMode::CudaGraph, Some(st)) => Some(st == &tokens),
            _ => None,
        };
        let ev = b.tch_evidence();
        emit(&DecodeModesLine::Mode(DecodeModeResult {
            mode,
            dtype: dtype.label().into(),
            device: device.into(),
            open_s,
            two_warmups_s: first_s,
            prefill_ms_median: med(&prefill),
            decode_ms_median: med(&decode),
            decode_ms_min: decode[0],
            decode_tok_s_median: (gen - 1) as f64 / (med(&decode) / 1e3),
            tokens_equal_to_eager_up_to: agree,
            tokens_equal_to_static: equal_to_static,
            graph: ev.graph,
            first_tokens: tokens[..tokens.len().min(8)].to_vec(),
        }))?;
        if mode == DecodeMode::Static {
            static_tokens = Some(tokens.clone());
        }
        if reference.is_none() {
            reference = Some(tokens);
        }
    }
    Ok(())
}
