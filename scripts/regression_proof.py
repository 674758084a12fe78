#!/usr/bin/env python3
"""Tabulate scripts/regression_proof.sh: verdict counts per series and trial, re-measurements, and
the slowdown factors the gate measured (first series). Reads each run directory's results.jsonl.

usage: scripts/regression_proof.py target/infergate/proof-*
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

series = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
factors = defaultdict(list)
for d in sorted(Path(p) for p in sys.argv[1:]):
    f = d / "results.jsonl"
    if not f.is_file():
        continue
    name = d.name.rsplit("-", 1)[0]  # proof-clean-07 -> proof-clean
    for line in f.read_text().splitlines():
        r = json.loads(line)
        trial = r["trial"]
        if trial["gate"] != "regression.baseline":
            continue
        outcome = r["outcome"]
        if outcome["status"] == "skipped" and outcome["cause"] == "backend_absent":
            continue  # a backend this machine does not have (e.g. tch-cuda-bf16 without a GPU)
        verdict = r["verdict"]
        details = r.get("details") or {}
        key = f"{trial['backend']}::{trial.get('scenario', '')}"
        series[name][key][verdict] += 1
        comparisons = details.get("comparisons", [])
        if any(c["attempt"] == 2 for c in comparisons):
            series[name][key]["remeasured"] += 1
        for c in comparisons:
            if c["attempt"] == 1 and c["metric"] == "e2e_ms":
                factors[(name, key)].append(c["slowdown"])

print("| series | trial | runs | pass | fail | skip | re-measured | e2e slowdown min / median / max |")
print("|---|---|---|---|---|---|---|---|")
for name, trials in series.items():
    for key, c in sorted(trials.items()):
        n = c["pass"] + c["fail"] + c["skip"]
        fs = sorted(factors[(name, key)])
        span = f"{fs[0]:.3f} / {fs[len(fs) // 2]:.3f} / {fs[-1]:.3f}" if fs else "-"
        print(f"| {name} | {key} | {n} | {c['pass']} | {c['fail']} | {c['skip']} | {c['remeasured']} | {span} |")
