//! One backend's decode loop through the harness, as JSON on stdout — the Rust side of
//! `scripts/harness_overhead.sh`, which runs Python onnxruntime's loop and `llama-bench` beside it.
//!
//! `cargo run --release --example decode_loop -- <backend> <scenario> <gen_tokens> <repetitions>`
//!
//! Prints `{backend, engine_version, threads, model_path, prompt, runs: [{prefill_ms, decode_ms,
//! decode_steps, e2e_ms, tokens}]}` after one warmup generation. `model_path` is the ONNX file an
//! ONNX Runtime backend runs (the Python side loads the same file) or the GGUF for llama.cpp.
use infergate::backend::registry;
use infergate::model::catalog;
use infergate::workload::{prompt_ids, scenario};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend_id, scenario_name, gen, reps] = args.as_slice() else {
        return Err("usage: decode_loop <backend> <scenario> <gen_tokens> <repetitions>".into());
    };
    let (gen, reps): (usize, usize) = (gen.parse()?, reps.parse()?);
    let model = catalog::default_model()?;
    let s = scenario(scenario_name).ok_or("unknown scenario")?;
    let encode = infergate::runner::load_encoder()?;
    let prompt = prompt_ids(&s, &encode)?;
    let model_path = match registry::ort_export(backend_id, &model)? {
        Some(p) => p.model_path,
        None => model.gguf_path()?,
    };
    let mut backend = registry::open(backend_id, &model)?;
    backend.generate(&prompt, gen)?; // warmup
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let g = backend.generate(&prompt, gen)?;
        runs.push(serde_json::json!({
            "prefill_ms": g.timings.prefill_ms,
            "decode_ms": g.timings.decode_ms,
            "decode_steps": g.timings.decode_steps,
            "e2e_ms": g.timings.e2e_ms,
            "timing_source": g.timings.timing_source,
            "tokens": g.tokens,
        }));
    }
    let info = backend.info();
    println!(
        "{}",
        serde_json::json!({
            "backend": info.id,
            "engine": info.engine,
            "engine_version": info.engine_version,
            "location": info.location,
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "model_path": model_path,
            "prompt": prompt,
            "gen_tokens": gen,
            "runs": runs,
        })
    );
    Ok(())
}
