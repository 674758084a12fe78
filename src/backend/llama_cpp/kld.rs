//! llama.cpp's own verdict on another engine's logits: infergate writes a reference's log-probabilities
//! in the file format `llama-perplexity --kl-divergence-base` reads (tools/perplexity/perplexity.cpp:
//! `_logits_`, n_ctx, n_vocab, n_chunk, the tokens, then per chunk the log-probabilities of positions
//! `n_ctx/2 .. n_ctx-2`, each row a float scale, a float minimum and 16-bit steps), and
//! `llama-perplexity --kl-divergence` evaluates the same tokens with its own forward on a GGUF and
//! reports perplexity of both, mean KL divergence and top-1 agreement.
//!
//! This checks a dequantizer and an exported graph against llama.cpp's reading of the same GGUF,
//! token by token, rather than through one summary number.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use ndarray::Array2;

use crate::assets::llama_cpp::LlamaCppBuild;

/// What `llama-perplexity --kl-divergence` printed (Q = llama.cpp on the GGUF, base = the file).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KldAgreement {
    /// llama.cpp's perplexity on the tokens.
    pub ppl_llama: f64,
    /// The reference's perplexity, as llama.cpp reads it back from the file.
    pub ppl_reference: f64,
    /// Mean KL(reference ‖ llama.cpp) per scored token, nats.
    pub mean_kld: f64,
    /// Fraction of scored positions where both put the same token first.
    pub same_top: f64,
}

impl KldAgreement {
    /// `|ppl_llama / ppl_reference − 1|`, the accuracy gate's measure.
    pub fn ppl_rel_delta(&self) -> f64 {
        (self.ppl_llama / self.ppl_reference - 1.0).abs()
    }
}

fn nearest_int(v: f32) -> u16 {
    v.round().clamp(0.0, 65535.0) as u16
}

/// One row as llama.cpp encodes it (`log_softmax` with a `log_prob` output in perplexity.cpp).
fn encode_row(logits: &[f32], out: &mut Vec<u16>, nv: usize) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let min = logits
        .iter()
        .fold(f32::INFINITY, |a, &b| a.min(b))
        .max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let start = out.len();
    for f in [scale, min_log_prob] {
        let b = f.to_le_bytes();
        out.push(u16::from_le_bytes([b[0], b[1]]));
        out.push(u16::from_le_bytes([b[2], b[3]]));
    }
    if scale != 0.0 {
        let inv = 1.0 / scale;
        out.extend(logits.iter().map(|&l| {
            if l > min {
                nearest_int(inv * (l - min))
            } else {
                0
            }
        }));
    } else {
        out.extend(std::iter::repeat_n(0, logits.len()));
    }
    out.resize(start + nv, 0);
}

/// Write `tokens` (whole chunks of `n_ctx`) and the reference's logits of each chunk (`[n_ctx, vocab]`,
/// from `logits_of`) as a `--kl-divergence-base` file.
pub fn write_base(
    path: &Path,
    n_ctx: usize,
    n_vocab: usize,
    tokens: &[u32],
    mut logits_of: impl FnMut(&[u32]) -> Result<Array2<f32>, String>,
) -> Result<(), String> {
    if n_ctx < 4 || tokens.len() < n_ctx {
        return Err(format!("{} tokens for chunks of {n_ctx}", tokens.len()));
    }
    let n_chunk = tokens.len() / n_ctx;
    let nv = 2 * n_vocab.div_ceil(2) + 4;
    let first = n_ctx / 2;
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut head = Vec::new();
    head.extend(b"_logits_");
    for v in [n_ctx, n_vocab, n_chunk] {
        head.extend((v as i32).to_le_bytes());
    }
    for &t in &tokens[..n_chunk * n_ctx] {
        head.extend((t as i32).to_le_bytes());
    }
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    out.write_all(&head).map_err(err)?;
    let mut row = Vec::with_capacity(nv);
    for chunk in tokens.chunks_exact(n_ctx) {
        let logits = logits_of(chunk)?;
        if logits.dim() != (n_ctx, n_vocab) {
            return Err(format!(
                "reference logits are {:?}, expected ({n_ctx}, {n_vocab})",
                logits.dim()
            ));
        }
        for i in first..n_ctx - 1 {
            row.clear();
            let r = logits.row(i);
            let r = r.as_slice().ok_or("logits are not contiguous")?;
            encode_row(r, &mut row, nv);
            let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.write_all(&bytes).map_err(err)?;
        }
    }
    out.flush().map_err(err)
}

/// Run `llama-perplexity --kl-divergence` on `gguf` against the base file and parse its statistics.
pub fn compare(
    build: &LlamaCppBuild,
    gguf: &Path,
    base: &Path,
    n_ctx: usize,
) -> Result<KldAgreement, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = Command::new(&build.llama_perplexity)
        .arg("-m")
        .arg(gguf)
        .arg("--kl-divergence-base")
        .arg(base)
        .arg("--kl-divergence")
        .args(["-c", &n_ctx.to_string(), "-b", &n_ctx.to_string()])
        .args(["-t", &threads.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", build.llama_perplexity.display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&log).ok_or_else(|| {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "llama-perplexity --kl-divergence ({}) printed no statistics:\n{}",
            out.status,
            tail.join("\n")
        )
    })
}

/// The first number after `label` on the line that starts with it.
fn value_after(log: &str, label: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.trim_start().starts_with(label))?;
    let rest = line.trim_start().strip_prefix(label)?;
    rest.trim_start_matches([' ', ':'])
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The statistics block `kl_divergence` prints after the last chunk.
pub fn parse(log: &str) -> Option<KldAgreement> {
    Some(KldAgreement {
        ppl_llama: value_after(log, "Mean PPL(Q)")?,
        ppl_reference: value_after(log, "Mean PPL(base)")?,
        mean_kld: value_after(log, "Mean    KLD:")?,
        same_top: value_after(log, "Same top p:")? / 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_to_the_log_softmax_within_a_step() {
        let logits: Vec<f32> = (0..7).map(|i| (i as f32 * 1.3).sin() * 4.0).collect();
        let mut row = Vec::new();
        encode_row(&logits, &mut row, 2 * 4 + 4);
        assert_eq!(row.len(), 12);
        let f = |a: u16, b: u16| {
            let [x, y] = a.to_le_bytes();
            let [z, w] = b.to_le_bytes();
            f32::from_le_bytes([x, y, z, w])
        };
        let (scale, min_lp) = (f(row[0], row[1]), f(row[2], row[3]));
        let max = logits.iter().fold(f32::MIN, |a, &b| a.max(b));
        let lse = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
        for (i, &l) in logits.iter().enumerate() {
            let back = scale * row[4 + i] as f32 + min_lp;
            assert!(
                (back - (l - lse)).abs() <= scale,
                "{i}: {back} vs {}",
                l - lse
            );
        }
    }

    #[test]
    fn the_statistics_block_is_parsed() {
        let log = "chunk PPL ln(PPL(Q)/PPL(base)) KL Divergence Δp RMS Same top p\n   1  10.0 ± 1\n====== Perplexity statistics ======\nMean PPL(Q)                   :  19.512345 ±   0.512000\nMean PPL(base)                :  19.400000 ±   0.500000\n====== KL divergence statistics ======\nMean    KLD:   0.012345 ±   0.000400\nMaximum KLD:   1.0\nSame top p:  97.255 ± 0.123 %\n";
        let a = parse(log).unwrap();
        assert_eq!(a.ppl_llama, 19.512345);
        assert_eq!(a.ppl_reference, 19.4);
        assert_eq!(a.mean_kld, 0.012345);
        assert!((a.same_top - 0.97255).abs() < 1e-12);
        assert!(parse("error: failed to load model").is_none());
    }
}
