#!/usr/bin/env python3
"""Compare two infergate run directories, timings aside: the same trials planned (with the same
plan-time skips), the same trials run, and for each the same verdict, the same parts of its claim
with the same findings, the same known-failure declaration matched, the same run counts, and the
same metric names. The decision card (report.md) is compared by its shape: its section headings and
the verdict column of its claim table.

Used to check that a change which must not change behaviour (a refactor) did not: run the same
command before and after, then

    scripts/compare_runs.py BEFORE_DIR AFTER_DIR

Exits 0 when nothing differs, 1 when something does (each difference on its own line), 2 on bad
input. Numbers (latencies, perplexities, measured values) are not compared: they differ between
any two runs.
"""
import json
import re
import sys
from pathlib import Path


def jsonl(path: Path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def key(trial) -> str:
    return json.dumps(trial, sort_keys=True)


def shape(result) -> dict:
    outcome = result.get("outcome", {})
    parts = outcome.get("parts", []) if isinstance(outcome, dict) else []
    runs = dict(result.get("runs") or {})
    return {
        "verdict": result.get("verdict"),
        "outcome": outcome.get("status") if isinstance(outcome, dict) else outcome,
        "parts": [(p.get("name"), p.get("finding")) for p in parts],
        # The declaration a failure matched: which part, for which backends and scenarios.
        "known_failure": {
            k: v
            for k, v in (result.get("known_failure") or {}).items()
            if k in ("backends", "scenarios", "models", "part")
        },
        "runs": runs,
        "metrics": sorted((result.get("metrics") or {}).keys()),
        "skip": (result.get("skip") or {}).get("cause") if isinstance(result.get("skip"), dict) else None,
    }


def plan(run: Path) -> dict:
    out = {}
    for p in jsonl(run / "plan.jsonl"):
        skip = p.get("skip")
        out[key(p["trial"])] = skip.get("cause") if isinstance(skip, dict) else None
    return out


def card_shape(run: Path):
    path = run / "report.md"
    if not path.exists():
        return None
    text = path.read_text()
    lines = text.splitlines()
    # The title names the run id; every other heading is the card's shape.
    headings = [line for line in lines if line.startswith("#") and not line.startswith("# ")]
    # The claim table: its id column and its last (verdict) column.
    claims = [
        (cells[1].strip(), cells[-2].strip())
        for cells in (line.split("|") for line in lines if re.match(r"\| C\d+ \|", line))
    ]
    return headings, claims


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = Path(argv[1]), Path(argv[2])
    for d in (before, after):
        if not (d / "results.jsonl").exists() and not (d / "plan.jsonl").exists():
            print(f"{d}: not a run directory (no results.jsonl or plan.jsonl)", file=sys.stderr)
            return 2
    diffs = []
    pb, pa = plan(before), plan(after)
    for k in sorted(pb.keys() | pa.keys()):
        if k not in pa:
            diffs.append(f"planned before only: {k}")
        elif k not in pb:
            diffs.append(f"planned after only: {k}")
        elif pb[k] != pa[k]:
            diffs.append(f"plan-time skip {k}: {pb[k]} → {pa[k]}")
    rb = {key(r["trial"]): shape(r) for r in jsonl(before / "results.jsonl")}
    ra = {key(r["trial"]): shape(r) for r in jsonl(after / "results.jsonl")}
    for k in sorted(rb.keys() | ra.keys()):
        if k not in ra:
            diffs.append(f"ran before only: {k}")
        elif k not in rb:
            diffs.append(f"ran after only: {k}")
        else:
            for field, vb in rb[k].items():
                if vb != ra[k][field]:
                    diffs.append(f"{k} {field}: {vb} → {ra[k][field]}")
    cb, ca = card_shape(before), card_shape(after)
    if cb != ca:
        if cb is None or ca is None:
            diffs.append(f"report.md present before: {cb is not None}, after: {ca is not None}")
        else:
            if cb[0] != ca[0]:
                diffs.append(f"report.md headings: {sorted(set(cb[0]) ^ set(ca[0]))}")
            if cb[1] != ca[1]:
                diffs.append(f"report.md claim table (id, verdict): {cb[1]} → {ca[1]}")
    print(f"{len(rb)} / {len(ra)} trials ran, {len(pb)} / {len(pa)} planned (before / after)")
    for d in diffs:
        print(d)
    print("same trials, verdicts, findings and card shape" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
