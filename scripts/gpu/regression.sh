#!/usr/bin/env bash
# The regression gate on a GPU machine (docs/gpu.md): record this machine's baseline for
# `regression.baseline` with the full profile, run the gate N times as CI would (ci profile) against
# it, then once with a planted 25 % slowdown (ONNX Runtime only: the test knob slows in-process ORT),
# and pack baselines/ for committing. Build as `.github/workflows/gpu.yml` does (release, --features
# torch): a baseline records the build profile in its fingerprint and only compares with that profile.
#
# usage: scripts/gpu/regression.sh [OUT_DIR] [N]     (environment as for scripts/gpu/run.sh)
set -u
OUT=${1:-target/infergate-gpu-out}; N=${2:-5}; mkdir -p "$OUT"
IG=${IG:-target/release/infergate}
if [[ -z "${LD_LIBRARY_PATH:-}" ]]; then
  TORCH_DIR=${TORCH_DIR:-$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)}
  [[ -n "$TORCH_DIR" ]] && export LD_LIBRARY_PATH="$TORCH_DIR/lib:$TORCH_DIR/../nvidia/cu13/lib"
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
"$IG" baseline show --repo . 2>&1 | tee "$OUT/baseline-show-before.txt"
echo "== infergate baseline update --gate regression --profile full" | tee "$OUT/regression.log"
INFERGATE_RUN_ID=gpu-baseline timeout 600 "$IG" baseline update --repo . --gate regression --profile full --force 2>&1 | tee -a "$OUT/regression.log"
for i in $(seq 1 "$N"); do
  echo "== clean run $i: infergate run --gate regression --profile ci" | tee -a "$OUT/regression.log"
  INFERGATE_RUN_ID=gpu-regression-$i timeout 300 "$IG" run --repo . --gate regression --profile ci 2>&1 | grep -E "^(PASS|FAIL|SKIP|XFAIL|XPASS|INFO) " | tee -a "$OUT/regression.log"
done
echo "== planted 25 % slowdown (ort-cpu only)" | tee -a "$OUT/regression.log"
INFERGATE_TEST_SLOWDOWN=0.25 INFERGATE_RUN_ID=gpu-regression-s25 timeout 300 "$IG" run --repo . --gate regression --backend ort-cpu --profile ci 2>&1 | grep -E "^(PASS|FAIL|SKIP|XFAIL|XPASS|INFO) " | tee -a "$OUT/regression.log"
"$IG" baseline show --repo . 2>&1 | tee "$OUT/baseline-show-after.txt"
tar czf "$OUT/baselines.tgz" baselines
