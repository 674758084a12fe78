#!/usr/bin/env python3
"""Where llama.cpp's KV-cached greedy loop and a full recompute part, and why.

Starts `llama-server` once per configuration, generates 64 greedy tokens after the `micro` prompt (the
first 8 tokens of infergate's prompt passage) with the KV cache, then recomputes the token at one
position (`--position`, default 63) from the whole sequence in one request with the prompt cache off,
and prints both paths' top-5 log-probabilities there (same context on both paths). With `--all` it
also recomputes every position and reports, per position, the largest |difference| of log-probability
of a token in both top-5 lists. One JSON line per configuration.

Configurations: default (batched prefill, flash attention auto), ub1 (`-ub 1`: the prompt is evaluated
one token at a time), fa_off (`-fa off`), f32_kv (`-ctk f32 -ctv f32 -fa off`).

Usage: scripts/llama_cpp_kv_probe.py BIN_DIR GGUF [--all] [--position N] CONFIG...
  BIN_DIR: the llama.cpp build's bin directory (`infergate doctor` prints it)
  GGUF:    the SmolLM2 Q4_1 GGUF (under the infergate cache's assets/)

The request fields are those of infergate's llama-cpp backend (src/backend/llama_cpp/server.rs,
`completion_body`). Standard library only.
"""

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PROMPT_TEXT = "The history of the lighthouse begins with fires lit on hilltops to guide ships safely into harbour"
CONFIGS = {
    "default": [],
    "ub1": ["-ub", "1"],
    "fa_off": ["-fa", "off"],
    "f32_kv": ["-ctk", "f32", "-ctv", "f32", "-fa", "off"],
}
GEN = 64


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(port, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(req, timeout=1800).read())


def body(prompt, n_predict, n_probs):
    return {
        "prompt": prompt, "n_predict": n_predict, "temperature": 0.0, "top_k": 1, "seed": 42,
        "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0,
        "cache_prompt": False, "ignore_eos": True, "return_tokens": True, "n_probs": n_probs,
        "post_sampling_probs": False, "stream": False,
    }


def top(probs):
    return [[c["id"], c["logprob"]] for c in probs["top_logprobs"]]


def probe(bin_dir, gguf, label, position, every):
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix=f"llama-server-{label}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [f"{bin_dir}/llama-server", "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", "2",
         "-c", "2048", "--parallel", "1", "--no-webui", *CONFIGS[label]],
        stdout=log, stderr=log,
    )
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                sys.exit(f"llama-server ({label}) exited; log: {log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        prompt = post(port, "/tokenize", {"content": PROMPT_TEXT})["tokens"][:8]
        kv = post(port, "/completion", body(prompt, GEN, 5))
        tokens = kv["tokens"]

        def recompute(i):
            r = post(port, "/completion", body(prompt + tokens[:i], 1, 5))
            if r["timings"]["prompt_n"] != len(prompt) + i:
                sys.exit(f"{label}: prompt_n {r['timings']['prompt_n']} != {len(prompt) + i}: cache not off")
            return r

        r = recompute(position)
        out = {
            "config": label, "server_args": CONFIGS[label], "prompt": prompt, "kv_tokens": tokens,
            "position": position, "sequence_length": len(prompt) + position,
            "kv_top5": top(kv["completion_probabilities"][position]),
            "recompute_token": r["tokens"][0],
            "recompute_top5": top(r["completion_probabilities"][0]),
        }
        if every:
            per_position = []
            for i in range(GEN):
                re = {c["id"]: c["logprob"] for c in recompute(i)["completion_probabilities"][0]["top_logprobs"]}
                k = {c["id"]: c["logprob"] for c in kv["completion_probabilities"][i]["top_logprobs"]}
                per_position.append(max(abs(re[t] - k[t]) for t in set(re) & set(k)))
            out["max_abs_dlogprob_per_position"] = per_position
        print(json.dumps(out), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    every = "--all" in argv
    position = 63
    if "--position" in argv:
        position = int(argv[argv.index("--position") + 1])
        args.remove(str(position))
    if len(args) < 3 or any(c not in CONFIGS for c in args[2:]):
        sys.exit(__doc__)
    for label in args[2:]:
        probe(args[0], args[1], label, position, every)


if __name__ == "__main__":
    main(sys.argv[1:])
