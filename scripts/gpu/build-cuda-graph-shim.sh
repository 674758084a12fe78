#!/usr/bin/env bash
# Build infergate's CUDA-graph shim (native/cuda_graph/infergate_cuda_graph.cpp): a small C ABI over
# libtorch's at::cuda::CUDAGraph, which the `tch-cuda-graph-*` backends load at run time (tch 0.24
# has no CUDA-graph binding). Build it on the GPU machine, against the torch 2.11 install whose
# libtorch_cuda.so the backend loads:
#
#   scripts/gpu/build-cuda-graph-shim.sh                      # finds torch through python3
#   TORCH_DIR=/path/to/site-packages/torch scripts/gpu/build-cuda-graph-shim.sh
#
# Output: $INFERGATE_CACHE/cuda-graph-shim/libinfergate_cuda_graph.so (the backend's default; or
# pass OUT=/path/lib.so and point INFERGATE_CUDA_GRAPH_SHIM at it). Needs a C++17 compiler, the
# torch headers (torch/include) and the CUDA runtime headers (CUDA_INCLUDE, else $CUDA_HOME/include,
# /usr/local/cuda/include, or the nvidia/cu13/include of torch's pip-installed CUDA runtime).
#
# Without torch's CUDA libraries at hand (e.g. building on a CPU machine against the CPU libtorch
# tree of scripts/setup-libtorch.sh and pip's CUDA headers), the library is linked with those
# symbols unresolved; they resolve at load time from the libtorch_cuda.so the backend loads first.
set -euo pipefail
SRC="${SRC:-$(dirname "$0")/../../native/cuda_graph/infergate_cuda_graph.cpp}"
CACHE="${INFERGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/infergate}"
OUT="${OUT:-$CACHE/cuda-graph-shim/libinfergate_cuda_graph.so}"
CXX="${CXX:-c++}"
log() { echo "build-cuda-graph-shim: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -z "${TORCH_DIR:-}" ]]; then
  if TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
    log "torch $(python3 -c 'import torch; print(torch.__version__)') at $TORCH_DIR"
  elif [[ -n "${LIBTORCH:-}" ]]; then
    TORCH_DIR=$LIBTORCH
    log "no python torch; headers from LIBTORCH=$LIBTORCH"
  else
    die "no torch found: set TORCH_DIR to a torch 2.11 install (its torch/ folder) or LIBTORCH to a libtorch tree"
  fi
fi
[[ -f "$SRC" ]] || die "source $SRC not found (set SRC)"
[[ -f "$TORCH_DIR/include/ATen/cuda/CUDAGraph.h" ]] || die "$TORCH_DIR/include has no ATen/cuda/CUDAGraph.h (a CUDA build of torch 2.11 is needed)"

if [[ -z "${CUDA_INCLUDE:-}" ]]; then
  for c in "${CUDA_HOME:+$CUDA_HOME/include}" /usr/local/cuda/include "$TORCH_DIR/../nvidia/cu13/include"; do
    if [[ -n "$c" && -f "$c/cuda_runtime_api.h" ]]; then CUDA_INCLUDE=$c; break; fi
  done
fi
[[ -n "${CUDA_INCLUDE:-}" && -f "$CUDA_INCLUDE/cuda_runtime_api.h" ]] || die "no cuda_runtime_api.h: set CUDA_INCLUDE (e.g. /usr/local/cuda/include)"

LINK=()
if [[ -f "$TORCH_DIR/lib/libtorch_cuda.so" && -f "$TORCH_DIR/lib/libc10_cuda.so" ]]; then
  LINK=(-L"$TORCH_DIR/lib" -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -lc10 -ltorch_cpu -Wl,--as-needed)
  CUDART=$(ls "$TORCH_DIR"/../nvidia/cu13/lib/libcudart.so.13 /usr/local/cuda/lib64/libcudart.so 2>/dev/null | head -1 || true)
  [[ -n "$CUDART" ]] && LINK+=("$CUDART")
  log "linking against $TORCH_DIR/lib${CUDART:+ and $CUDART}"
else
  log "no libtorch_cuda.so under $TORCH_DIR/lib: CUDA symbols stay unresolved until load time"
fi

mkdir -p "$(dirname "$OUT")"
start=$(date +%s)
"$CXX" -std=c++17 -O2 -fPIC -shared -D_GLIBCXX_USE_CXX11_ABI=1 -w \
  -I"$TORCH_DIR/include" -I"$TORCH_DIR/include/torch/csrc/api/include" -I"$CUDA_INCLUDE" \
  "$SRC" -o "$OUT.tmp" "${LINK[@]}"
mv "$OUT.tmp" "$OUT"
log "built $OUT in $(( $(date +%s) - start )) s"
echo "$OUT"
