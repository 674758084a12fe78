#!/usr/bin/env python3
"""The measurements behind the quantized export forms (docs/performance.md, "Quantized exports").

Run with Python onnxruntime 1.31.1 (the version of the .so the harness loads; scripts/harness_overhead.sh
installs it into target/harness-overhead/venv, with numpy; this script also needs `onnx`):

  quant_choices.py variants <onnx-cache-dir> <out-dir>
      From infergate's cached exports (~/.cache/infergate/onnx: the fp32, q4_1 = bit-exact and int8
      exports), write the alternatives the deploy forms were chosen against:
        q4-round       Q4_1 blocks, zero point −m/d rounded to an integer (packed uint8), no residual
                       columns, accuracy_level 4
        q4-acc0        the deploy q4 export with accuracy_level 0 (fp32 activations)
        int8-acc0      the deploy int8 export with accuracy_level 0
        int8-dqmm      fp32 weights as per-column int8 DynamicQuantizeMatMul (the MatMulInteger path)
  quant_choices.py profile <model.onnx>...
      Decode ms/token (best of 3 × 32 steps, 2 threads) and, with ONNX Runtime's profiler on, the
      decode time per op type.
  quant_choices.py ppl <tokens.json> <reference.onnx> <candidate.onnx>...
      Perplexity over tokens 257..511 of 512-token chunks (the gate's protocol) and KL divergence
      against the reference; tokens.json is a JSON list of token ids (e.g. from
      `cargo run --example tokenize -- "$(head -c 20000 wiki.utf8)"`).
"""
import collections
import glob
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

THREADS = 2


def session(path, profile_prefix=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def forward(sess, tokens, past_len, past):
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    elem = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    n_kv, hd = pasts[0].shape[1], pasts[0].shape[3]
    total = past_len + len(tokens)
    feed = {
        "input_ids": np.array([tokens], np.int64),
        "attention_mask": np.ones((1, total), np.int64),
        "position_ids": np.arange(past_len, total, dtype=np.int64)[None],
    }
    for j, p in enumerate(pasts):
        feed[p.name] = past[j] if past else np.zeros((1, n_kv, 0, hd), elem)
    out = sess.run(None, feed)
    return out[0], out[1:]


def decode_ms(sess, prompt, steps):
    logits, cache = forward(sess, prompt, 0, None)
    nxt = int(logits[0, -1].argmax())
    start = time.perf_counter()
    for s in range(1, steps):
        logits, cache = forward(sess, [nxt], len(prompt) + s - 1, cache)
        nxt = int(logits[0, -1].argmax())
    return (time.perf_counter() - start) / (steps - 1) * 1e3


# The harness's `short` scenario prompt (11 tokens of workload::PROMPT_PASSAGE).
PROMPT = [504, 1463, 282, 260, 33059, 5634, 351, 9935, 1150, 335, 13083]


def profile(paths):
    for path in paths:
        sess = session(path)
        decode_ms(sess, PROMPT, 8)
        best = min(decode_ms(sess, PROMPT, 32) for _ in range(3))
        prefix = "/tmp/quant_choices_profile"
        psess = session(path, prefix)
        decode_ms(psess, PROMPT, 32)
        events = json.load(open(psess.end_profiling()))
        runs = [e for e in events if e.get("name") == "model_run"]
        per_op = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"]
        total = sum(per_op.values())
        name = os.path.basename(os.path.dirname(path))
        print(f"{name}: decode {best:.2f} ms/token ({1e3 / best:.1f} tok/s); profiled run "
              f"{sum(r['dur'] for r in runs) / len(runs) / 1e3:.2f} ms, node time by op:")
        for op, us in per_op.most_common(6):
            print(f"    {op:30s} {us / len(runs) / 1e3:7.2f} ms  {100 * us / total:5.1f} %")


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ppl(tokens_path, ref, candidates):
    ids = json.load(open(tokens_path))
    chunks = [ids[i * 512:(i + 1) * 512] for i in range(len(ids) // 512)]

    def logprobs(path):
        sess = session(path)
        return [log_softmax(forward(sess, c, 0, None)[0][0]) for c in chunks]

    def nll(lps):
        return np.concatenate([-lp[np.arange(256, 511), np.array(c[257:512])] for lp, c in zip(lps, chunks)])

    r = logprobs(ref)
    ref_ppl = float(np.exp(nll(r).mean()))
    print(f"reference {os.path.basename(os.path.dirname(ref))}: ppl {ref_ppl:.4f} over {len(chunks) * 255} tokens")
    for path in candidates:
        c = logprobs(path)
        p = float(np.exp(nll(c).mean()))
        kl = np.mean([(np.exp(a[256:511]) * (a[256:511] - b[256:511])).sum(-1).mean() for a, b in zip(r, c)])
        print(f"  {os.path.basename(os.path.dirname(path)):45s} ppl {p:.4f}  delta {100 * (p / ref_ppl - 1):+.3f} %  KL {kl:.2e}")


def variants(cache, out):
    import onnx
    from onnx import helper, numpy_helper

    def one(fmt):
        """The cached export of weight format `fmt` (export.json's `format`) of the unmodified model."""
        for d in sorted(glob.glob(os.path.join(cache, "*"))):
            meta = os.path.join(d, "export.json")
            if os.path.exists(meta):
                e = json.load(open(meta))
                if e["format"] == fmt and e["source"].get("fault_scale_layer") is None:
                    return onnx.load(os.path.join(d, "model.onnx"))
        sys.exit(f"no cached {fmt} export in {cache}: run the harness once (infergate run) first")

    def save(m, name):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(m, os.path.join(d, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=1024)
        print(os.path.join(d, "model.onnx"))

    def attrs(node):
        return {a.name: a for a in node.attribute}

    def pack4(z):
        n, nb = z.shape
        zp = np.zeros((n, (nb + 1) // 2), np.uint8)
        for i in range(nb):
            zp[:, i // 2] |= z[:, i] << (4 * (i % 2))
        return zp

    m = one("gguf_q4_1")
    inits = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "MatMulNBits":
            a = attrs(node)
            a["accuracy_level"].i = 4
            if a["bits"].i == 4:
                zf = numpy_helper.to_array(inits[node.input[3]])
                z = np.clip(np.round(zf), 0, 15).astype(np.uint8)
                inits[node.input[3]].CopyFrom(numpy_helper.from_array(pack4(z), node.input[3]))
    save(m, "q4-round")
    for pattern, name in (("q4", "q4-acc0"), ("int8", "int8-acc0")):
        m = one(pattern)
        for node in m.graph.node:
            if node.op_type == "MatMulNBits":
                attrs(node)["accuracy_level"].i = 0
        save(m, name)
    m = one("fp32")
    inits = {t.name: t for t in m.graph.initializer}
    nodes, extra = [], []
    for node in m.graph.node:
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            w = w.T if node.op_type == "Gemm" else w  # Gemm(transB=1) holds [N, K]
            scale = (np.abs(w).max(0) / 127).astype(np.float32)
            scale[scale == 0] = 1
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            bn, sn = node.input[1] + "_int8", node.input[1] + "_scale"
            extra += [numpy_helper.from_array(np.ascontiguousarray(q), bn), numpy_helper.from_array(scale, sn)]
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [node.input[0], bn, sn], list(node.output),
                                          domain="com.microsoft", name=node.name + "_dq"))
        else:
            nodes.append(node)
    used = {i for n in nodes for i in n.input}
    keep = [t for t in m.graph.initializer if t.name in used]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep + extra)
    save(m, "int8-dqmm")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "variants":
        variants(sys.argv[2], sys.argv[3])
    elif mode == "profile":
        profile(sys.argv[2:])
    elif mode == "ppl":
        ppl(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
