#!/usr/bin/env python3
"""Decode throughput of Hugging Face transformers on the same SmolLM2 weights.

The independent baseline for infergate's GPU backends: transformers loads the very GGUF infergate
uses (dequantized by gguf-py, Q/K un-permuted by transformers' GGUF loader), runs greedy generation
of exactly 64 new tokens (EOS ignored) on the same prompt ids, and times prefill (one forward over
the prompt) and the whole generation with CUDA synchronisation. Two modes:

  eager    eager attention, dynamic KV cache (transformers' default loop)
  compile  static KV cache (`cache_implementation="static"`) with the forward compiled by
           torch.compile(mode="reduce-overhead"), i.e. captured as CUDA graphs: how transformers'
           own documentation makes decoding fast

usage: hf_decode_baseline.py GGUF PROMPTS_JSON OUT_JSON [--mode eager|compile] [--dtype bfloat16] [--reps 10]
PROMPTS_JSON: {"scenario": [token ids], ...} as printed by `infergate prompts`.
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("prompts")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    args = ap.parse_args()

    dtype = getattr(torch, args.dtype)
    attn = "eager" if args.mode == "eager" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(args.gguf)),
        gguf_file=os.path.basename(args.gguf),
        torch_dtype=dtype,
        attn_implementation=attn,
    ).to("cuda").eval()
    extra = {}
    if args.mode == "compile":
        # transformers' own compiled decoding: a static cache makes generate() compile the decode
        # step with this config (CUDA graphs under "reduce-overhead") and mark each graph step
        # itself; wrapping model.forward in torch.compile by hand instead breaks on the cache's
        # in-place updates (overwritten graph outputs).
        model.generation_config.cache_implementation = "static"
        model.generation_config.compile_config = transformers.CompileConfig(fullgraph=True, mode="reduce-overhead")
        extra = dict(cache_implementation="static")
    def step_begin():
        if args.mode == "compile":
            torch.compiler.cudagraph_mark_step_begin()

    prompts = json.load(open(args.prompts))
    results = {"transformers": transformers.__version__, "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
               "dtype": args.dtype, "mode": args.mode, "attn_implementation": attn, "gen_tokens": args.gen_tokens,
               "scenarios": {}}
    n = args.gen_tokens
    for name, ids in prompts.items():
        input_ids = torch.tensor([ids], device="cuda")
        mask = torch.ones_like(input_ids)
        kwargs = dict(attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                      eos_token_id=None, pad_token_id=0, **extra)
        with torch.no_grad():
            for _ in range(3):  # warmup (compile mode: compiles and captures here)
                model.generate(input_ids, **kwargs)
            prefill, e2e, tokens = [], [], None
            first = dict(kwargs, max_new_tokens=1, min_new_tokens=1)
            if args.mode == "compile":
                model.generate(input_ids, **first)  # capture the 1-token shape too
            for _ in range(args.reps):
                step_begin()
                torch.cuda.synchronize(); t0 = time.perf_counter()
                if args.mode == "compile":
                    # The compiled forward replays CUDA graphs over a static cache: a bare forward
                    # outside generate() would overwrite their outputs, so the prefill is timed as
                    # a 1-token generate (prefill + the first token) on the same path.
                    model.generate(input_ids, **first)
                else:
                    model(input_ids, attention_mask=mask)
                torch.cuda.synchronize(); t1 = time.perf_counter()
                step_begin()
                out = model.generate(input_ids, **kwargs)
                torch.cuda.synchronize(); t2 = time.perf_counter()
                prefill.append((t1 - t0) * 1e3)
                e2e.append((t2 - t1) * 1e3)
                tokens = out[0, len(ids):].tolist()
        p, e = statistics.median(prefill), statistics.median(e2e)
        results["scenarios"][name] = {
            "prompt_tokens": len(ids),
            "prefill_ms_median": p,
            "e2e_ms_median": e,
            # The decode loop: n - 1 cached steps after the prefill that yields the first token.
            "decode_tokens_per_s": (n - 1) / ((e - p) / 1e3),
            "tokens": tokens,
        }
        print(name, json.dumps({k: v for k, v in results["scenarios"][name].items() if k != "tokens"}))
    json.dump(results, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
