#!/usr/bin/env python3
"""Harness overhead, the outside half (see scripts/harness_overhead.sh).

  harness_overhead.py ort <rust.json> <repetitions>   Python onnxruntime's decode loop on the ONNX
      file, prompt, generation length and thread count the Rust harness used (rust.json is the
      output of `examples/decode_loop.rs`); prints the same JSON shape.
  harness_overhead.py bench <llama-bench.json>         llama-bench's tg results as that shape.
  harness_overhead.py summarize <out.json> <pairs.json>  One table from the rounds' files.

The ORT loop is the harness's loop in Python: one forward over the prompt (prefill), then one forward
per generated token with the previous step's `present.*` outputs fed back as `past_key_values.*`,
greedy argmax over the last position's logits; time.perf_counter around the phases exactly where the
Rust harness puts std::time::Instant.
"""
import json
import platform
import statistics
import sys
import time


def ort_loop(rust_path, reps):
    import numpy as np
    import onnxruntime as ort

    rust = json.load(open(rust_path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = rust["threads"]
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(rust["model_path"], so, providers=["CPUExecutionProvider"])
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    elem = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    n_kv, hd = pasts[0].shape[1], pasts[0].shape[3]
    n_layers = len(pasts) // 2
    prompt = rust["prompt"]
    gen = rust["gen_tokens"]

    def forward(tokens, past_len, past):
        s = len(tokens)
        total = past_len + s
        feed = {
            "input_ids": np.array([tokens], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.arange(past_len, total, dtype=np.int64)[None, :],
        }
        for i in range(n_layers):
            if past is None:
                empty = np.zeros((1, n_kv, 0, hd), dtype=elem)
                feed[f"past_key_values.{i}.key"] = empty
                feed[f"past_key_values.{i}.value"] = empty
            else:
                feed[f"past_key_values.{i}.key"] = past[2 * i]
                feed[f"past_key_values.{i}.value"] = past[2 * i + 1]
        outs = sess.run(None, feed)
        return outs[0], outs[1:]

    def generate():
        start = time.perf_counter()
        logits, cache = forward(prompt, 0, None)
        nxt = int(np.argmax(logits[0, -1]))
        prefill_done = time.perf_counter()
        tokens = [nxt]
        for step in range(1, gen):
            logits, cache = forward([nxt], len(prompt) + step - 1, cache)
            nxt = int(np.argmax(logits[0, -1]))
            tokens.append(nxt)
        end = time.perf_counter()
        return {
            "prefill_ms": (prefill_done - start) * 1e3,
            "decode_ms": (end - prefill_done) * 1e3,
            "decode_steps": gen - 1,
            "e2e_ms": (end - start) * 1e3,
            "timing_source": "python",
            "tokens": tokens,
        }

    # Outputs must be in graph order: logits, then present.N.key/value.
    names = [o.name for o in sess.get_outputs()]
    assert names[0] == "logits" and names[1] == "present.0.key", names[:3]
    generate()  # warmup, as the Rust side
    runs = [generate() for _ in range(reps)]
    return {
        "backend": rust["backend"] + " (python onnxruntime)",
        "engine": "onnxruntime (python)",
        "engine_version": ort.__version__,
        "threads": rust["threads"],
        "model_path": rust["model_path"],
        "prompt": prompt,
        "gen_tokens": gen,
        "runs": runs,
    }


def bench(path):
    rows = json.load(open(path))
    out = []
    for r in rows:
        if r.get("n_prompt", 0) == 0 and r.get("n_gen", 0) > 0:
            # llama-bench reports every repetition's time in samples_ns (tg: n_gen tokens each).
            for ns in r["samples_ns"]:
                out.append({"decode_ms": ns / 1e6, "decode_steps": r["n_gen"], "timing_source": "llama-bench"})
    return {"engine": "llama-bench", "runs": out, "build_commit": rows[0].get("build_commit"),
            "n_threads": rows[0].get("n_threads"), "model_type": rows[0].get("model_type")}


def tok_s(run):
    return run["decode_steps"] / (run["decode_ms"] / 1e3)


def summarize(out_path, pairs_path):
    """pairs.json: {"meta": {...}, "pairs": [{"name", "harness": [files], "outside": [files]}]}"""
    spec = json.load(open(pairs_path))
    rows = []
    for p in spec["pairs"]:
        h = [json.load(open(f)) for f in p["harness"]]
        o = [json.load(open(f)) for f in p["outside"]]
        h_runs = [r for x in h for r in x["runs"]]
        o_runs = [r for x in o for r in x["runs"]]
        h_ms = statistics.median(r["decode_ms"] / r["decode_steps"] for r in h_runs)
        o_ms = statistics.median(r["decode_ms"] / r["decode_steps"] for r in o_runs)
        same_tokens = None
        if all("tokens" in r for r in o_runs):
            same_tokens = all(r["tokens"] == h_runs[0]["tokens"] for r in h_runs + o_runs)
        rows.append({
            "name": p["name"],
            "harness": p["harness_label"],
            "outside": p["outside_label"],
            "harness_ms_per_token": h_ms,
            "outside_ms_per_token": o_ms,
            "harness_tok_s": 1e3 / h_ms,
            "outside_tok_s": 1e3 / o_ms,
            "overhead": h_ms / o_ms - 1.0,
            "harness_runs": len(h_runs),
            "outside_runs": len(o_runs),
            "harness_tok_s_all": [tok_s(r) for r in h_runs],
            "outside_tok_s_all": [tok_s(r) for r in o_runs],
            "same_tokens": same_tokens,
        })
    # Same run, same threads: each ONNX Runtime variant's decode speed over fp32's, on both sides.
    fp32 = next((r for r in rows if r["name"] == "ort-cpu"), None)
    ratios = []
    if fp32:
        for r in rows:
            if r["name"].startswith("ort-cpu-"):
                ratios.append({
                    "variant": r["name"],
                    "over": "ort-cpu",
                    "harness": r["harness_tok_s"] / fp32["harness_tok_s"],
                    "outside": r["outside_tok_s"] / fp32["outside_tok_s"],
                })
    result = {"meta": spec["meta"], "rows": rows, "speed_over_fp32": ratios}
    json.dump(result, open(out_path, "w"), indent=1)
    print(f"| comparison | harness ms/token | outside ms/token | harness adds | runs (h/o) | same tokens |")
    print(f"| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        same = {True: "yes", False: "NO", None: "n/a"}[r["same_tokens"]]
        print(f"| {r['name']}: {r['harness']} vs {r['outside']} | {r['harness_ms_per_token']:.2f} | "
              f"{r['outside_ms_per_token']:.2f} | {r['overhead'] * 100:+.1f} % | "
              f"{r['harness_runs']}/{r['outside_runs']} | {same} |")
    if ratios:
        print()
        print("| decode tok/s over `ort-cpu` (fp32) | Rust harness | Python onnxruntime |")
        print("| --- | ---: | ---: |")
        for x in ratios:
            print(f"| `{x['variant']}` | ×{x['harness']:.2f} | ×{x['outside']:.2f} |")


def main():
    mode = sys.argv[1]
    if mode == "ort":
        print(json.dumps(ort_loop(sys.argv[2], int(sys.argv[3]))))
    elif mode == "bench":
        print(json.dumps(bench(sys.argv[2])))
    elif mode == "summarize":
        summarize(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}; see the module docstring")


if __name__ == "__main__":
    main()
