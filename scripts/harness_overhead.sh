#!/usr/bin/env bash
# Harness overhead, measured: the harness's decode loop against the runtime's own tool, side by side
# in one run, same file, same threads, same prompt, interleaved round by round.
#
#   - ONNX Runtime: the Rust harness (examples/decode_loop.rs, the backend the gates use) against
#     Python onnxruntime's loop (scripts/harness_overhead.py) on the same cached export, for every
#     ONNX Runtime CPU backend given;
#   - llama.cpp: llama-server through the harness (decode time = the server's own `predicted_ms`)
#     against `llama-bench`'s tg on the same build, GGUF and thread count.
#
# Usage: scripts/harness_overhead.sh [out.json]   (default docs/data/harness-overhead-<date>.json)
# Env: ROUNDS (default 5), REPS per round (default 3), GEN (default 64), SCENARIO (default short),
#      BACKENDS (default "ort-cpu ort-cpu-int8 ort-cpu-q4"), LLAMA=0 to leave llama.cpp out,
#      QUIET_LOAD (e.g. 1.0: before every round, wait until the 1-minute load average is below it;
#      on a shared machine the timings mean little otherwise). The load at every round is recorded.
# Python onnxruntime is pinned (the version of the .so the harness loads) and installed into a venv
# this script owns: target/harness-overhead/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs/data/harness-overhead-$(date -u +%F).json}"
ROUNDS="${ROUNDS:-5}"; REPS="${REPS:-3}"; GEN="${GEN:-64}"; SCENARIO="${SCENARIO:-short}"
BACKENDS="${BACKENDS:-ort-cpu ort-cpu-int8 ort-cpu-q4}"; LLAMA="${LLAMA:-1}"
ORT_PIN="onnxruntime==1.31.1"; NUMPY_PIN="numpy==2.4.6"
WORK=target/harness-overhead; VENV="$WORK/venv"; RAW="$WORK/raw"
mkdir -p "$RAW"; rm -f "$RAW"/*.json
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnxruntime as o; assert o.__version__ == '1.31.1'" 2>/dev/null; then
  echo "== installing $ORT_PIN $NUMPY_PIN into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "$ORT_PIN" "$NUMPY_PIN"
fi
echo "== building the harness side (cargo build --release --example decode_loop)" >&2
cargo build --release --quiet --example decode_loop
LOOP=${CARGO_TARGET_DIR:-target}/release/examples/decode_loop
PY="$VENV/bin/python"
QUIET_LOAD="${QUIET_LOAD:-}"
# Wait (at most 30 min) for a quiet machine when QUIET_LOAD is set; print the load either way.
wait_quiet() {
  if [ -n "$QUIET_LOAD" ]; then
    for _ in $(seq 1 180); do
      awk -v q="$QUIET_LOAD" '{exit !($1 < q)}' /proc/loadavg && break
      sleep 10
    done
  fi
  cut -d' ' -f1 /proc/loadavg
}
: > "$RAW/loads.txt"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
pairs=()
# Round-robin over the backends, Rust then Python within a round, so drift in the machine's state
# hits every side alike (and the rounds double as a same-run comparison of the backends).
for r in $(seq 1 "$ROUNDS"); do
  for b in $BACKENDS; do
    load=$(wait_quiet); echo "$b $r $load" >> "$RAW/loads.txt"
    echo "== round $r/$ROUNDS $b: Rust harness, then Python onnxruntime (load $load)" >&2
    "$LOOP" "$b" "$SCENARIO" "$GEN" "$REPS" > "$RAW/$b-rust-$r.json"
    "$PY" scripts/harness_overhead.py ort "$RAW/$b-rust-$r.json" "$REPS" > "$RAW/$b-python-$r.json"
  done
done
for b in $BACKENDS; do
  h=$(ls "$RAW/$b"-rust-*.json | sed 's/.*/"&"/' | paste -sd,); o=$(ls "$RAW/$b"-python-*.json | sed 's/.*/"&"/' | paste -sd,)
  pairs+=("{\"name\":\"$b\",\"harness_label\":\"Rust ORT loop (harness)\",\"outside_label\":\"Python onnxruntime loop\",\"harness\":[$h],\"outside\":[$o]}")
done
if [ "$LLAMA" = 1 ]; then
  for r in $(seq 1 "$ROUNDS"); do
    load=$(wait_quiet); echo "llama-cpp $r $load" >> "$RAW/loads.txt"
    echo "== llama-cpp round $r/$ROUNDS: llama-server through the harness, then llama-bench tg$GEN (load $load)" >&2
    "$LOOP" llama-cpp "$SCENARIO" "$GEN" "$REPS" > "$RAW/llama-rust-$r.json"
    bin=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['location'])" "$RAW/llama-rust-$r.json")
    gguf=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['model_path'])" "$RAW/llama-rust-$r.json")
    threads=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['threads'])" "$RAW/llama-rust-$r.json")
    "$bin/llama-bench" -m "$gguf" -p 0 -n "$GEN" -t "$threads" -r "$REPS" -o json > "$RAW/llama-bench-raw-$r.json" 2>/dev/null
    "$PY" scripts/harness_overhead.py bench "$RAW/llama-bench-raw-$r.json" > "$RAW/llama-bench-$r.json"
  done
  h=$(ls "$RAW"/llama-rust-*.json | sed 's/.*/"&"/' | paste -sd,); o=$(ls "$RAW"/llama-bench-[0-9]*.json | sed 's/.*/"&"/' | paste -sd,)
  pairs+=("{\"name\":\"llama-cpp\",\"harness_label\":\"llama-server via the harness\",\"outside_label\":\"llama-bench tg$GEN\",\"harness\":[$h],\"outside\":[$o]}")
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
meta="{\"date_utc\":\"$(date -u +%FT%TZ)\",\"cpu\":\"$cpu\",\"cores\":$(nproc),\"kernel\":\"$(uname -r)\",\"load_before\":\"$load_before\",\"load_after\":\"$load_after\",\"commit\":\"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\",\"scenario\":\"$SCENARIO\",\"gen_tokens\":$GEN,\"rounds\":$ROUNDS,\"reps_per_round\":$REPS,\"python_onnxruntime\":\"$ORT_PIN\",\"quiet_load\":\"$QUIET_LOAD\",\"load_per_round\":\"$(paste -sd';' "$RAW/loads.txt")\"}"
(IFS=,; echo "{\"meta\":$meta,\"pairs\":[${pairs[*]}]}") > "$WORK/pairs.json"
mkdir -p "$(dirname "$OUT")"
"$PY" scripts/harness_overhead.py summarize "$OUT" "$WORK/pairs.json"
echo "== load average before: $load_before; after: $load_after; results → $OUT" >&2
