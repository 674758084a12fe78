#!/usr/bin/env bash
# infergate's GPU trials on the borrowed H100 (the `device` tool): libtorch CUDA (fp32/bf16/fp16)
# decode fraction, perplexity delta against the ONNX Runtime fp32 reference, compile-is-real with
# positive evidence and the libtorch_cuda negative control, NVML energy gating, and the Hugging Face
# transformers (eager) decode baseline on the same weights. See docs/gpu.md for how the inputs get there.
#
# usage: scripts/gpu/h100-run.sh CARRY_DIR_1 CARRY_DIR_2   (results under $OUT)
set -u
D1=${1:-.device}; D2=${2:-.device2}; OUT=${OUT:-/tmp/infergate-out}; mkdir -p "$OUT"
W=/tmp/infergate-h100; mkdir -p "$W"
GGUF=$W/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$D1"/gguf.part00 "$D2"/gguf.part01 > "$GGUF"
for f in infergate libonnxruntime.so.1.31.1 wiki.utf8 moby-dick.txt; do xz -dc "$D1/$f.xz" > "$W/$f"; done
chmod +x "$W/infergate"
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
export INFERGATE_CACHE=$W/cache ORT_DYLIB_PATH=$W/libonnxruntime.so.1.31.1 INFERGATE_SMOLLM2_GGUF=$GGUF
export INFERGATE_WIKI_TEXT=$W/wiki.utf8 INFERGATE_MOBY_DICK_TEXT=$W/moby-dick.txt
export INFERGATE_RUN_ID=h100-$(date -u +%Y%m%dT%H%M%SZ) CARGO_TARGET_DIR=$W/target OMP_WAIT_POLICY=passive
IG=$W/infergate
sha256sum "$GGUF" | tee "$OUT/inputs.sha256"
nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit --format=csv | tee "$OUT/nvidia-smi.csv"
"$IG" doctor 2>&1 | tee "$OUT/doctor.txt"
run() { echo "== infergate run $*" | tee -a "$OUT/run.log"; timeout 240 "$IG" run --repo . "$@" 2>&1 | tee -a "$OUT/run.log"; }
run --profile full --gate phase.decode_fraction --backend tch-cuda-bf16
run --profile ci --gate phase.decode_fraction --backend tch-cuda,tch-cpu
run --profile ci --gate accuracy --backend tch-cuda,tch-cuda-bf16,tch-cuda-fp16,tch-cpu
run --profile ci --gate integrity.model_identity --backend tch-cuda-bf16
run --profile ci --gate attribution.compile_real
INFERGATE_LIBTORCH_CUDA=/nonexistent/libtorch_cuda.so run --profile ci --gate attribution.compile_real --backend tch-auto
run --profile ci --gate energy.gating --backend tch-cuda-bf16
"$IG" prompts > "$W/prompts.json"
python3 -m pip install -q --no-index --no-deps --target /tmp/site "$D1"/gguf-*.whl \
  && PYTHONPATH=/tmp/site timeout 300 python3 scripts/gpu/hf_decode_baseline.py "$GGUF" "$W/prompts.json" "$OUT/hf_baseline.json" 2>&1 | tail -20 | tee "$OUT/hf.log"
tar czf "$OUT/run.tgz" -C "$W/target/infergate" .
ls -la "$OUT"
