#!/usr/bin/env bash
# The project's test command: set-up (idempotent), configure, build, run every test with ctest.
#   RMNET_BUILD_DIR  build folder (default: ./build)      RMNET_JOBS  parallel jobs (default: 2)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/env.sh"
bash "$here/setup.sh"
jobs=${RMNET_JOBS:-2}
cmake -S "$RMNET_ROOT" -B "$RMNET_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRMNET_PYTHON="$RMNET_PYTHON"
cmake --build "$RMNET_BUILD_DIR" -j "$jobs"
ctest --test-dir "$RMNET_BUILD_DIR" --output-on-failure -j "$jobs"
