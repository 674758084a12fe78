#!/usr/bin/env bash
# Stage ONNX Runtime's CUDA build (PyPI onnxruntime-gpu==1.31.1, CUDA 13) for the `ort-cuda`
# backends: its libonnxruntime.so.1.31.1 and the provider libraries ONNX Runtime loads from the same
# directory, each checked against the sha256 pinned below (and in src/backend/ort/gpu.rs).
#
#   scripts/gpu/stage-onnxruntime-gpu.sh DEST
#       pip-download the wheel (pinned sha256; ORT_GPU_WHEEL=FILE uses a copy you already have),
#       extract and verify the four libraries into DEST.
#       Then: ORT_DYLIB_PATH=DEST/libonnxruntime.so.1.31.1, and LD_LIBRARY_PATH must reach CUDA 13's
#       libcudart/libcublas/libcublasLt/libcurand (a pip torch 2.11 has them in site-packages/nvidia/cu13/lib).
#
#   scripts/gpu/stage-onnxruntime-gpu.sh --pack DEST PARTS_DIR [PART_MB]
#       as above, then also pack the libraries as one xz -9 tarball split into parts of at most
#       PART_MB MiB (default 55) under PARTS_DIR, for carrying to a GPU machine that is reached
#       through a per-transfer size limit (the CUDA provider alone is 284 MB; all four pack to
#       193.9 MB). xz -9 is slow: minutes per core.
#
#   scripts/gpu/stage-onnxruntime-gpu.sh --unpack DEST DIR...
#       on the GPU machine: join the parts found in the DIRs (in name order), unpack into DEST and
#       verify every library. Needs only bash, cat, xz, tar and sha256sum.
set -euo pipefail

WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
WHEEL_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7
# file | sha256 (members of onnxruntime/capi/ in the wheel)
LIBS=(
  "libonnxruntime.so.1.31.1|5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303"
  "libonnxruntime_providers_shared.so|086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"
  "libonnxruntime_providers_cuda.so|8387867e857499e045caff5d13ac6a5de29571c801562fa2dde0e45f1f31de52"
  "libonnxruntime_providers_tensorrt.so|1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e"
)
PART_PREFIX=onnxruntime-gpu-1.31.1.tar.xz.part

log() { echo "stage-onnxruntime-gpu: $*" >&2; }
die() { log "error: $*"; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# 0 when every library is in DEST with its pinned hash; otherwise says which one is not.
check_dest() {
  local dest=$1 entry file want
  for entry in "${LIBS[@]}"; do
    IFS='|' read -r file want <<<"$entry"
    if [[ ! -f "$dest/$file" ]]; then log "$dest/$file is missing"; return 1; fi
    if [[ "$(sha "$dest/$file")" != "$want" ]]; then log "$dest/$file: sha256 is not $want"; return 1; fi
  done
}

verify_dest() {
  check_dest "$1" || die "$1 does not hold onnxruntime-gpu 1.31.1's libraries"
  log "verified ${#LIBS[@]} libraries in $1"
  echo "export ORT_DYLIB_PATH=$(cd "$1" && pwd)/libonnxruntime.so.1.31.1"
}

stage() {
  local dest=$1
  mkdir -p "$dest"
  if check_dest "$dest" 2>/dev/null; then verify_dest "$dest"; return; fi
  local dl
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' RETURN
  if [[ -n "${ORT_GPU_WHEEL:-}" ]]; then
    cp "$ORT_GPU_WHEEL" "$dl/$WHEEL"
  else
    log "downloading onnxruntime-gpu==1.31.1 (≈ 256 MB) from PyPI"
    python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.12 --implementation cp -d "$dl" onnxruntime-gpu==1.31.1 >&2 \
      || die "pip could not download onnxruntime-gpu==1.31.1 (PyPI unreachable?)"
  fi
  [[ -f "$dl/$WHEEL" ]] || die "pip did not produce $WHEEL"
  [[ "$(sha "$dl/$WHEEL")" == "$WHEEL_SHA256" ]] || die "$WHEEL: sha256 mismatch (expected $WHEEL_SHA256)"
  python3 - "$dl/$WHEEL" "$dest" <<'EOF'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(wheel)
for name in ["libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so",
             "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_tensorrt.so"]:
    with z.open("onnxruntime/capi/" + name) as src, open(os.path.join(dest, name), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(os.path.join(dest, name), 0o755)
EOF
  verify_dest "$dest"
}

case "${1:-}" in
  --pack)
    [[ $# -ge 3 ]] || die "usage: $0 --pack DEST PARTS_DIR [PART_MB]"
    dest=$2; parts=$3; mb=${4:-55}
    stage "$dest" >/dev/null
    mkdir -p "$parts"
    rm -f "$parts/$PART_PREFIX"*
    start=$(date +%s)
    tar -C "$dest" -cf - $(for e in "${LIBS[@]}"; do echo "${e%%|*}"; done) \
      | xz -9 -T0 | split -b "${mb}M" -d -a 2 - "$parts/$PART_PREFIX"
    log "packed into $(ls "$parts/$PART_PREFIX"* | wc -l) parts in $(( $(date +%s) - start )) s:"
    ls -l "$parts/$PART_PREFIX"* >&2
    ;;
  --unpack)
    [[ $# -ge 3 ]] || die "usage: $0 --unpack DEST DIR..."
    dest=$2; shift 2
    mkdir -p "$dest"
    files=()
    for d in "$@"; do for f in "$d"/"$PART_PREFIX"*; do [[ -f "$f" ]] && files+=("$f"); done; done
    [[ ${#files[@]} -gt 0 ]] || die "no $PART_PREFIX* files in $*"
    mapfile -t files < <(printf '%s\n' "${files[@]}" | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2)
    log "joining ${#files[@]} parts: ${files[*]}"
    cat "${files[@]}" | xz -dc | tar -C "$dest" -xf -
    verify_dest "$dest"
    ;;
  -h|--help|"")
    sed -n '2,23p' "$0"; exit 2 ;;
  *)
    stage "$1" ;;
esac
