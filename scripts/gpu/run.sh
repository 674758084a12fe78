#!/usr/bin/env bash
# infergate's GPU trials, all into one run directory, on a machine with an NVIDIA GPU (docs/gpu.md):
# libtorch on CUDA (eager fp32/bf16/fp16, the static-shape step, and that step as a CUDA graph),
# ONNX Runtime's CUDA provider, and llama.cpp's CUDA build, through decode fraction, perplexity delta,
# model identity, compile-is-real (with its negative controls) and energy; then the engines' own
# tools beside them (llama-bench on the same llama.cpp build, Hugging Face transformers eager and
# compiled on the same weights) and the device's copy bandwidth for the roofline.
#
# usage: scripts/gpu/run.sh [OUT_DIR]        (default target/infergate-gpu-out)
#
# Environment (each optional except where the backend needs it; `infergate doctor` says what is missing):
#   IG                        infergate binary built with --features torch (default target/release/infergate)
#   PROBE                     the tch_decode_modes example binary (default target/release/examples/tch_decode_modes)
#   LD_LIBRARY_PATH           must reach a CUDA libtorch 2.11 (a pip torch's torch/lib) and CUDA 13's
#                             libraries (its nvidia/cu13/lib) — set here from TORCH_DIR when unset
#   TORCH_DIR                 that torch/ folder (default: found through python3)
#   ORT_DYLIB_PATH            onnxruntime-gpu's libonnxruntime.so.1.31.1 (scripts/gpu/stage-onnxruntime-gpu.sh)
#   ORT_CPU_DYLIB_PATH        an ONNX Runtime whose CUDA provider cannot load, for the silent-fallback
#                             control (default: a copy of ORT_DYLIB_PATH without the CUDA provider beside it)
#   INFERGATE_CUDA_GRAPH_SHIM the CUDA-graph shim (default: the cache, scripts/gpu/build-cuda-graph-shim.sh)
#   INFERGATE_LLAMA_CPP_CUDA_BIN  an existing CUDA llama.cpp build (default: the cache, `infergate build-llama-cpp --cuda`)
#   INFERGATE_IDLE_REFERENCE_W    the GPU's idle power at rest, if known (else the run's first settled idle)
#   GGUF                      the model file (default: infergate's cached, sha256-checked copy)
#   PROFILE                   gate profile for the decode-fraction trials (default full)
#   SKIP_HF=1                 skip the transformers baselines
#   STEPS                     which parts to run, in order (default all: "energy decode accuracy
#                             identity compile tools report"); a run split over several invocations
#                             keeps one INFERGATE_RUN_ID, so every part lands in the same run directory
set -u
OUT=${1:-target/infergate-gpu-out}; mkdir -p "$OUT"
IG=${IG:-target/release/infergate}
PROBE=${PROBE:-target/release/examples/tch_decode_modes}
PROFILE=${PROFILE:-full}
if [[ -z "${TORCH_DIR:-}" ]]; then
  TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
fi
if [[ -z "${LD_LIBRARY_PATH:-}" && -n "$TORCH_DIR" ]]; then
  export LD_LIBRARY_PATH="$TORCH_DIR/lib:$TORCH_DIR/../nvidia/cu13/lib"
fi
export INFERGATE_RUN_ID=${INFERGATE_RUN_ID:-gpu-$(date -u +%Y%m%dT%H%M%SZ)} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
GGUF=${GGUF:-$("$IG" fetch 2>/dev/null | grep -o '/[^ ]*SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)}
log() { echo "== $*" | tee -a "$OUT/run.log"; }
run() { log "infergate run $*"; timeout 900 "$IG" run --repo . "$@" 2>&1 | tee -a "$OUT/run.log"; }
start=$(date +%s)
STEPS=${STEPS:-energy decode accuracy identity compile tools report}
step() { [[ " $STEPS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,pstate,power.draw,power.limit,clocks.sm,clocks.mem --format=csv | tee "$OUT/nvidia-smi.csv"
"$IG" doctor 2>&1 | tee "$OUT/doctor.txt"

GPU_TCH=tch-cuda-bf16,tch-cuda-static-bf16,tch-cuda-graph-bf16
# Energy first, while the GPU is cold: the first settled idle becomes the run's reference idle. One
# trial per process: while a process holds a CUDA context the GPU stays at its boost clock (H200:
# SM 1980 MHz, ≈ 125 W idle against 78 W at rest) until the process exits, so only an idle measured
# before the process's own GPU work is at rest (energy::settle explains and reports it per trial).
if step energy; then
  for b in tch-cuda-bf16 tch-cuda-graph-bf16 ort-cuda llama-cpp-cuda; do
    for sc in short long; do
      run --profile ci --gate energy.gating --backend "$b" --scenario "$sc"
    done
  done
fi
step decode && run --profile "$PROFILE" --gate phase.decode_fraction --backend "$GPU_TCH,tch-cuda,ort-cuda,llama-cpp-cuda"
step accuracy && run --profile ci --gate accuracy --backend tch-cuda,tch-cuda-bf16,tch-cuda-fp16,tch-cuda-graph-bf16,ort-cuda,llama-cpp-cuda
step identity && run --profile ci --gate integrity.model_identity --backend tch-cuda-bf16,tch-cuda-graph-bf16,ort-cuda,llama-cpp-cuda
if step compile; then
run --profile ci --gate attribution.compile_real
# The silent-fallback controls need the real thing hidden, each in its own process: the CPU build of
# ONNX Runtime (the CUDA provider cannot register: ORT falls back to the CPU on its own), and
# libtorch without libtorch_cuda ("cuda if available" code then runs on the CPU).
# Without ORT_CPU_DYLIB_PATH: the GPU build's libonnxruntime copied into a directory that lacks
# libonnxruntime_providers_cuda.so, so the CUDA provider cannot load (ONNX Runtime loads providers
# from its own directory) — the same silent fallback, without fetching the CPU build.
CPU_ORT=${ORT_CPU_DYLIB_PATH:-}
if [[ -z "$CPU_ORT" && -n "${ORT_DYLIB_PATH:-}" ]]; then
  mkdir -p "$OUT/ort-without-cuda-provider"
  cp "$ORT_DYLIB_PATH" "$(dirname "$ORT_DYLIB_PATH")/libonnxruntime_providers_shared.so" "$OUT/ort-without-cuda-provider/"
  CPU_ORT=$OUT/ort-without-cuda-provider/$(basename "$ORT_DYLIB_PATH")
fi
if [[ -n "$CPU_ORT" ]]; then
  ORT_DYLIB_PATH=$CPU_ORT run --profile ci --gate attribution.compile_real --backend ort-cpu
else
  log "no ONNX Runtime for the ort-cuda fallback control (set ORT_DYLIB_PATH or ORT_CPU_DYLIB_PATH)"
fi
INFERGATE_LIBTORCH_CUDA=/nonexistent/libtorch_cuda.so run --profile ci --gate attribution.compile_real --backend tch-auto
fi

# The engines' own tools and the ceilings, same machine, same run.
if step tools; then
LLAMA_BIN=${INFERGATE_LLAMA_CPP_CUDA_BIN:-$(ls -d "${INFERGATE_CACHE:-$HOME/.cache/infergate}"/llama.cpp/*-cuda-*/bin 2>/dev/null | head -1)}
if [[ -n "$LLAMA_BIN" && -n "$GGUF" ]]; then
  log "llama-bench tg64 pp27 (the llama-cpp-cuda build, all layers on the GPU)"
  "$LLAMA_BIN/llama-bench" -m "$GGUF" -ngl 99 -p 27 -n 64 -r 10 -o json > "$OUT/llama-bench.json" 2> "$OUT/llama-bench.log"
  grep -E '"(n_prompt|n_gen|avg_ts|stddev_ts|flash_attn|n_gpu_layers)"' "$OUT/llama-bench.json" | tee -a "$OUT/run.log"
fi
if [[ -x "$PROBE" ]]; then
  log "libtorch decode modes and device copy bandwidth"
  "$PROBE" ${GGUF:+--gguf "$GGUF"} --reps 10 2>&1 | tee "$OUT/tch-decode-modes.jsonl" | tee -a "$OUT/run.log"
fi
if [[ "${SKIP_HF:-0}" != 1 && -n "$GGUF" ]]; then
  "$IG" prompts > "$OUT/prompts.json"
  for mode in eager compile; do
    log "transformers $mode"
    PYTHONUNBUFFERED=1 timeout 600 python3 scripts/gpu/hf_decode_baseline.py "$GGUF" "$OUT/prompts.json" \
      "$OUT/hf-$mode.json" --mode "$mode" 2>&1 | grep -vE "Warning|warn" | tail -8 | tee -a "$OUT/run.log"
  done
fi
fi
# The tools' own outputs travel with the run directory: the card reads them beside the gates'
# results (llama-bench's tg, transformers' decode tok/s, the device copy bandwidth for the roofline).
mkdir -p "target/infergate/$INFERGATE_RUN_ID/tools"
for f in llama-bench.json tch-decode-modes.jsonl hf-eager.json hf-compile.json nvidia-smi.csv; do
  [[ -s "$OUT/$f" ]] && cp "$OUT/$f" "target/infergate/$INFERGATE_RUN_ID/tools/"
done
step report || exit 0
"$IG" report "target/infergate/$INFERGATE_RUN_ID" > /dev/null 2>&1
tar czf "$OUT/run.tgz" -C target/infergate "$INFERGATE_RUN_ID"
log "done in $(( $(date +%s) - start )) s; run directory target/infergate/$INFERGATE_RUN_ID"
grep -E "^(PASS|FAIL|SKIP|XFAIL|XPASS|INFO) " "$OUT/run.log" | cut -c1-220
