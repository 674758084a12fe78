#!/usr/bin/env python3
"""Calibrate paired mode: A/A trials and planted slowdowns with `infergate ab`, alternating.

    scripts/paired_calibration.py run OUT.jsonl --trials N [--slowdown 0.03] [--backend ort-cpu]
    scripts/paired_calibration.py summary OUT.jsonl

`run` alternates one A/A trial (both sides the same pinned ONNX Runtime), one trial with a
planted slowdown on the candidate side and (with --bump PIN) one trial of a real runtime bump,
N times each, so every kind shares the machine's state.
Every trial appends one JSON line: its kind, the 1-minute load average before and after, and the
full `infergate ab --json` result (every round's timings). `summary` prints the table of
docs/regression.md: per kind, how often each answer came out, with Wilson 95 % intervals.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def one(exe, backend, runtime, slowdown, seed, candidate=None):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.jsonl")
        cmd = [exe, "ab", "--backend", backend, "--baseline-runtime", runtime,
               "--candidate-runtime", candidate or runtime, "--seed", str(seed), "--json", out]
        if slowdown:
            cmd += ["--candidate-slowdown", str(slowdown)]
        before = load1()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        after = load1()
        result = None
        if os.path.exists(out):
            with open(out) as f:
                result = json.loads(f.readline())
        return {"exit": p.returncode, "load1_before": before, "load1_after": after,
                "stdout": p.stdout, "stderr_tail": p.stderr[-2000:], "result": result}


def run(args):
    for i in range(args.trials):
        kinds = [("a/a", None, None), (f"planted {args.slowdown}", args.slowdown, None)]
        if args.bump:
            kinds.append((f"bump {args.bump}", None, args.bump))
        for j, (kind, slowdown, candidate) in enumerate(kinds):
            seed = args.seed0 + len(kinds) * i + j
            r = one(args.exe, args.backend, args.runtime, slowdown, seed, candidate)
            r.update({"kind": kind, "trial": i, "seed": seed, "backend": args.backend,
                      "runtime": args.runtime})
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            res = r["result"]
            answer = res["answer"] if res else f"error (exit {r['exit']})"
            secs = res["elapsed_s"] if res else 0.0
            print(f"{kind:14} trial {i:3}: {answer:8} {secs:5.0f} s, load {r['load1_before']:.1f}"
                  f"→{r['load1_after']:.1f}", flush=True)


def wilson(k, n, z=1.96):
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def summary(args):
    rows = [json.loads(l) for l in open(args.out) if l.strip()]
    kinds = sorted({r["kind"] for r in rows})
    print("| kind | n | slower | same/faster | unknown | error | slower rate [95 % CI] "
          "| rounds (median) | s per trial (median) | load1 median |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in kinds:
        rs = [r for r in rows if r["kind"] == k]
        ok = [r["result"] for r in rs if r["result"]]
        n = len(rs)
        slower = sum(1 for r in ok if r["answer"] == "slower")
        same = sum(1 for r in ok if r["answer"] in ("same", "faster"))
        unknown = sum(1 for r in ok if r["answer"] == "unknown")
        err = n - len(ok)
        lo, hi = wilson(slower, n)
        med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
        rounds = med([len(r["rounds"]) for r in ok])
        secs = med([r["elapsed_s"] for r in ok])
        load = med([r["load1_before"] for r in rs])
        print(f"| {k} | {n} | {slower} | {same} | {unknown} | {err} | {slower / n:.2f} "
              f"[{lo:.2f}, {hi:.2f}] | {rounds} | {secs:.0f} | {load:.1f} |")
    print()
    print("Per metric (e2e_ms, decode_ms, prefill_ms, ...): answers over the trials")
    for k in kinds:
        ok = [r["result"] for r in rows if r["kind"] == k and r["result"]]
        per = {}
        for r in ok:
            for m in r["metrics"]:
                per.setdefault(m["metric"], []).append((m["answer"], m["estimate"]["ratio"],
                                                         m["estimate"]["sd_log"]))
        for metric, xs in per.items():
            counts = {a: sum(1 for x in xs if x[0] == a) for a in ("slower", "same", "faster",
                                                                  "unknown")}
            ratios = sorted(x[1] for x in xs)
            sds = sorted(x[2] for x in xs)
            print(f"  {k:14} {metric:20} {counts}  ratio min/median/max {ratios[0]:.3f}/"
                  f"{ratios[len(ratios) // 2]:.3f}/{ratios[-1]:.3f}  pair SD median "
                  f"{100 * sds[len(sds) // 2]:.1f} %")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--trials", type=int, required=True)
    r.add_argument("--slowdown", type=float, default=0.03)
    r.add_argument("--backend", default="ort-cpu")
    r.add_argument("--runtime", default="onnxruntime==1.31.1")
    r.add_argument("--exe", default="target/debug/infergate")
    r.add_argument("--seed0", type=int, default=1000)
    r.add_argument("--bump", help="also a trial of this candidate pin per iteration")
    s = sub.add_parser("summary")
    s.add_argument("out")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else summary(args)


if __name__ == "__main__":
    sys.exit(main())
