#!/usr/bin/env python3
"""Tabulate regression.baseline trials from infergate run directories (docs/regression.md).

Usage: scripts/regression_proof.py RUN_DIR [RUN_DIR ...]

Prints one line per regression.baseline trial (verdict, re-measured or not, planted slowdown, the
machine's speed against the baseline's by the probe, and the slowdown CIs of e2e_ms,
decode_tokens_per_s and e2e_cpu_ms in the first series), then counts per backend × planted slowdown.
"""
import json
import sys
from collections import defaultdict

METRICS = ("e2e_ms", "decode_ms", "prefill_ms", "decode_tokens_per_s", "e2e_cpu_ms")


def ci(m, name, suffix=""):
    k = f"{name}_slowdown{suffix}"
    if k not in m:
        return "-"
    return f"{m[k]:.3f} [{m[f'{name}_slowdown_lo{suffix}']:.3f}, {m[f'{name}_slowdown_hi{suffix}']:.3f}]"


def main(dirs):
    counts = defaultdict(lambda: defaultdict(int))
    print(f"{'run':<22} {'trial':<38} {'verdict':<7} {'re':<2} {'plant':<5} {'machine':<7} {'e2e_ms':<22} {'decode_tok/s':<22} {'e2e_cpu_ms':<22} regressed (1st/2nd)")
    for d in dirs:
        try:
            lines = open(f"{d}/results.jsonl").read().splitlines()
        except OSError as e:
            print(f"{d}: {e}", file=sys.stderr)
            continue
        for line in lines:
            r = json.loads(line)
            if r["gate"] != "regression.baseline":
                continue
            m = r["metrics"]
            if "machine_slowdown" not in m and r["verdict"]["verdict"] == "pass":
                continue  # a recording run
            v = r["verdict"]["verdict"].upper()
            c = counts[(r["backend"], m.get("test_slowdown", 0.0))]
            c["trials"] += 1
            c[v] += 1
            c["re-measured"] += m.get("remeasured", 0) == 1
            first = [n for n in METRICS if m.get(f"{n}_regressed") == 1]
            second = [n for n in METRICS if m.get(f"{n}_regressed_2") == 1]
            machine = f"{m['machine_slowdown']:.3f}" if "machine_slowdown" in m else "-"
            print(
                f"{d.rstrip('/').split('/')[-1]:<22} {r['trial']:<38} {v:<7} {int(m.get('remeasured', 0)):<2} "
                f"{m.get('test_slowdown', 0):<5} {machine:<7} {ci(m, 'e2e_ms'):<22} {ci(m, 'decode_tokens_per_s'):<22} {ci(m, 'e2e_cpu_ms'):<22} "
                f"{','.join(first) or '-'} / {','.join(second) or '-'}"
            )
    print()
    print(f"{'backend':<10} {'planted':<8} {'trials':<7} {'PASS':<5} {'FAIL':<5} {'SKIP':<5} {'re-measured':<11}")
    for (backend, planted), c in sorted(counts.items()):
        print(f"{backend:<10} {planted:<8} {c['trials']:<7} {c['PASS']:<5} {c['FAIL']:<5} {c['SKIP']:<5} {c['re-measured']:<11}")


if __name__ == "__main__":
    main(sys.argv[1:])
