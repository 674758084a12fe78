#!/usr/bin/env bash
# The regression gate on the borrowed H100 (the `device` tool): record this machine's baseline for
# `regression.baseline` (tch-cuda-bf16 and ort-cpu, full profile), then run the gate N times as CI
# would (ci profile) against it, and return the new baselines/<fingerprint>/ directory under $OUT
# for committing. Inputs are staged as for scripts/gpu/h100-run.sh (docs/gpu.md).
#
# usage: scripts/gpu/h100-regression.sh CARRY_DIR_1 CARRY_DIR_2 [N]   (results under $OUT)
set -u
D1=${1:-.device}; D2=${2:-.device2}; N=${3:-5}; OUT=${OUT:-/tmp/infergate-out}; mkdir -p "$OUT"
W=/tmp/infergate-h100; mkdir -p "$W"
GGUF=$W/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || cat "$D1"/gguf.part00 "$D2"/gguf.part01 > "$GGUF"
for f in infergate libonnxruntime.so.1.31.1 wiki.utf8 moby-dick.txt; do xz -dc "$D1/$f.xz" > "$W/$f"; done
chmod +x "$W/infergate"
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
export INFERGATE_CACHE=$W/cache ORT_DYLIB_PATH=$W/libonnxruntime.so.1.31.1 INFERGATE_SMOLLM2_GGUF=$GGUF
export INFERGATE_WIKI_TEXT=$W/wiki.utf8 INFERGATE_MOBY_DICK_TEXT=$W/moby-dick.txt
export CARGO_TARGET_DIR=$W/target OMP_WAIT_POLICY=passive
IG=$W/infergate
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
"$IG" baseline show --repo . 2>&1 | tee "$OUT/baseline-show-before.txt"
echo "== infergate baseline update --gate regression --profile full" | tee "$OUT/regression.log"
INFERGATE_RUN_ID=h100-baseline timeout 300 "$IG" baseline update --repo . --gate regression --profile full --force 2>&1 | tee -a "$OUT/regression.log"
for i in $(seq 1 "$N"); do
  echo "== clean run $i: infergate run --gate regression --profile ci" | tee -a "$OUT/regression.log"
  INFERGATE_RUN_ID=h100-regression-$i timeout 120 "$IG" run --repo . --gate regression --profile ci 2>&1 | grep -E "^(PASS|FAIL|SKIP) " | tee -a "$OUT/regression.log"
done
echo "== planted 25 % slowdown (ort-cpu only; the knob slows in-process ONNX Runtime)" | tee -a "$OUT/regression.log"
INFERGATE_TEST_SLOWDOWN=0.25 INFERGATE_RUN_ID=h100-regression-s25 timeout 120 "$IG" run --repo . --gate regression --backend ort-cpu --profile ci 2>&1 | grep -E "^(PASS|FAIL|SKIP) " | tee -a "$OUT/regression.log"
"$IG" baseline show --repo . 2>&1 | tee "$OUT/baseline-show-after.txt"
tar czf "$OUT/baselines.tgz" baselines
tar czf "$OUT/runs.tgz" -C "$W/target/infergate" .
ls -la "$OUT"
