#!/usr/bin/env bash
# Installs everything rmnet needs on a fresh Debian 12 machine; idempotent (a second run is quick).
#   Debian packages: compilers/tools, OpenCV 4.6, fmt, CLI11, GoogleTest, nlohmann-json, ccache,
#                    the Fashion-MNIST data set, and clang 14 with its sanitizer/libFuzzer runtimes
#                    (libclang-rt-14-dev) for the fuzz and sanitizer builds, oneDNN (libdnnl-dev)
#                    for the onednn runtime's direct path, and the OpenCL development files its
#                    CMake package requires (Debian's libdnnl is built with the OpenCL GPU runtime;
#                    only recommended by libdnnl-dev, so not installed with --no-install-recommends).
#   Python virtual environment ($RMNET_VENV, default ~/.cache/rmnet/venv): the pinned torch wheel
#                    (LibTorch for the C++ build) plus torchvision/onnx/onnxruntime for interop tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libopencv-dev zlib1g-dev libcli11-dev libgtest-dev libgmock-dev nlohmann-json3-dev
  dataset-fashion-mnist python3-venv
  clang-14 libclang-rt-14-dev
  libdnnl-dev ocl-icd-opencl-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${RMNET_BASE_PYTHON:-python3}
if [ ! -x "$RMNET_PYTHON" ]; then
  echo "[setup] creating virtual environment $RMNET_VENV"
  mkdir -p "$(dirname "$RMNET_VENV")"
  "$PY" -m venv "$RMNET_VENV"
fi
REQ="$RMNET_ROOT/scripts/requirements.txt"
STAMP="$RMNET_VENV/.rmnet-requirements"
if ! cmp -s "$REQ" "$STAMP"; then
  echo "[setup] pip install -r $REQ (the torch wheel is several GB the first time)"
  "$RMNET_PYTHON" -m pip install --progress-bar off -r "$REQ"
  cp "$REQ" "$STAMP"
fi
"$RMNET_PYTHON" - <<'PY'
import torch, torchvision
print(f"[setup] torch {torch.__version__} (cuda {torch.version.cuda}), torchvision {torchvision.__version__}")
PY
