//! llama.cpp's own perplexity: `llama-perplexity` run with infergate's protocol, and its log parsed.

use std::path::Path;
use std::process::Command;

use crate::assets::llama_cpp::LlamaCppBuild;
use crate::backend::perplexity::{PerplexityProtocol, PerplexityResult};

/// Run `llama-perplexity` on `text` with infergate's protocol (same chunking and scored span) and
/// parse its final estimate.
pub fn llama_perplexity(
    build: &LlamaCppBuild,
    gguf: &Path,
    text: &str,
    protocol: PerplexityProtocol,
    gpu_layers: Option<u32>,
) -> Result<PerplexityResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let text_path = dir.path().join("text.txt");
    std::fs::write(&text_path, text).map_err(|e| e.to_string())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks = protocol.max_tokens / protocol.context;
    let out = Command::new(&build.llama_perplexity)
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(&text_path)
        .args([
            "-c",
            &protocol.context.to_string(),
            "--chunks",
            &chunks.to_string(),
            "-t",
            &threads.to_string(),
        ])
        .args(["-b", &protocol.context.to_string()])
        .args(
            gpu_layers
                .map(|n| ["-ngl".to_string(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .output()
        .map_err(|e| format!("cannot run llama-perplexity: {e}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_llama_perplexity(&log, protocol).ok_or_else(|| {
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "llama-perplexity ({}) printed no final estimate:\n{}",
            out.status,
            tail.join("\n")
        )
    })
}

/// `Final estimate: PPL = 19.3045 +/- 0.12345` and `calculating perplexity over 8 chunks`.
pub fn parse_llama_perplexity(log: &str, protocol: PerplexityProtocol) -> Option<PerplexityResult> {
    let chunks: usize = log
        .split("perplexity over ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let estimate = log.split("Final estimate: PPL = ").nth(1)?;
    let mut parts = estimate.split_whitespace();
    let ppl: f64 = parts.next()?.parse().ok()?;
    let _ = parts.next()?; // "+/-"
    let ppl_se: f64 = parts.next()?.parse().ok()?;
    let scored_tokens = chunks * (protocol.context - 1 - protocol.first_scored());
    Some(PerplexityResult {
        perplexity: ppl,
        mean_nll: ppl.ln(),
        mean_nll_std_error: ppl_se / ppl,
        perplexity_std_error: ppl_se,
        scored_tokens,
        chunks,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_perplexity_output_is_parsed() {
        let log = "perplexity: calculating perplexity over 8 chunks, n_ctx=512, batch_size=512, n_seq=1\n[1]18.1,[2]19.0,\nFinal estimate: PPL = 19.3045 +/- 0.41000\n";
        let p = PerplexityProtocol {
            context: 512,
            max_tokens: 4096,
        };
        let r = parse_llama_perplexity(log, p).unwrap();
        assert_eq!(
            (r.perplexity, r.chunks, r.scored_tokens),
            (19.3045, 8, 8 * 255)
        );
        assert!(parse_llama_perplexity("error: failed to load model", p).is_none());
    }
}
