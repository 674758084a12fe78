#!/usr/bin/env bash
# The detection proof of docs/regression.md: N consecutive clean runs of the regression gate, then N
# runs with a planted 25 % and N with a planted 10 % slowdown (ONNX Runtime trials only: the knob
# cannot slow engine-timed backends). Each run is `cargo test --test gates -- regression.baseline…`,
# the command CI runs, with its own run id; the load average before each run goes to
# $OUT/load.txt. Tabulate with: scripts/regression_proof.py "$TARGET"/infergate/<prefix>-*
#
# Usage: scripts/regression_proof.sh PREFIX [N]   (the baseline must already be recorded)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:?usage: scripts/regression_proof.sh PREFIX [N]}
n=${2:-20}
target=${CARGO_TARGET_DIR:-target}
out="$target/infergate/$prefix-log"
mkdir -p "$out"
cargo test --test gates --no-run >/dev/null 2>&1
run() { # name, filter, extra env...
  local name=$1 filter=$2
  shift 2
  echo "$name $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
  env "$@" INFERGATE_RUN_ID="$prefix-$name" cargo test --test gates -- "$filter" >"$out/$name.log" 2>&1 || true
  grep -E "^(PASS|FAIL|SKIP) " "$out/$name.log" | cut -c1-100 || true
}
for i in $(seq -w 1 "$n"); do run "clean-$i" regression.baseline; done
for i in $(seq -w 1 "$n"); do run "s25-$i" regression.baseline::ort-cpu INFERGATE_TEST_SLOWDOWN=0.25; done
for i in $(seq -w 1 "$n"); do run "s10-$i" regression.baseline::ort-cpu INFERGATE_TEST_SLOWDOWN=0.10; done
echo "$(date -u +%FT%TZ) done $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
