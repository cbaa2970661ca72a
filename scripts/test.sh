#!/usr/bin/env bash
# The project's test command (CI's entry): set-up (idempotent), configure, build, run every test
# with ctest; then the fuzz step: an ASan + UBSan + libFuzzer build of the readers (clang, about
# half of the library) and every reader's fuzz target for a bounded time (scripts/fuzz.sh); any
# crash, sanitizer report or leak fails. The readers' and converters' test suites under the
# sanitizers need the whole library built that way: `--sanitize`, or in CI with
# RMNET_CI_SANITIZE_SUITES=1 (off by default: see docs/BENCHMARKS.md, "Sanitizers and fuzzing in CI", for what it costs).
#   scripts/test.sh              everything (CI)
#   scripts/test.sh --sanitize   only the sanitizer build: library + unit tests, the fast suites
# Environment:
#   RMNET_BUILD_DIR           build folder (default ./build)
#   RMNET_SANITIZE_BUILD_DIR  sanitizer/fuzz build folder (default ./build-sanitize)
#   RMNET_JOBS                parallel jobs (default 2)
#   RMNET_FUZZ_SECONDS        seconds per fuzz target (default 20; 0 skips the fuzz step)
#   RMNET_SANITIZE_FILTER     gtest filter of the suites run under the sanitizers
#   RMNET_CI_SANITIZE_SUITES  1: the full run also builds the tests with the sanitizers and runs them
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/env.sh"
mode=all
for a in "$@"; do
  case "$a" in
    --sanitize) mode=sanitize ;;
    *) echo "usage: scripts/test.sh [--sanitize]" >&2; exit 2 ;;
  esac
done
bash "$here/setup.sh"
jobs=${RMNET_JOBS:-2}
sbuild=${RMNET_SANITIZE_BUILD_DIR:-$RMNET_ROOT/build-sanitize}
fuzz_seconds=${RMNET_FUZZ_SECONDS:-20}
# The readers' and converters' suites (the fast ones; the float64 MobileNet conversions are left to
# the ordinary build: under ASan they are several times slower).
filter=${RMNET_SANITIZE_FILTER:-Pickle.*:ModelFile.*:Data.*:Export.*:TorchvisionWeights.*:PlainNet.*:Fuse.*:Convert.*:Version.*:Quantize.*:Equalize.*:BufferCache.*:OneDnn.BufferCache*}

timed() {  # timed LABEL COMMAND...: runs it and prints how long it took
  local label=$1 start=$SECONDS
  shift
  "$@"
  echo "[test.sh] $label: $((SECONDS - start)) s"
}

sanitizer_build() {
  # clang for libFuzzer; a static library (one instrumented image); -O1 with line tables: quick to
  # build, readable reports. Leak checks are off while gtest lists the tests at build time.
  timed "configure (sanitizers)" cmake -S "$RMNET_ROOT" -B "$sbuild" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS_RELEASE="-O1 -gline-tables-only -DNDEBUG" -DCMAKE_CXX_COMPILER=clang++-14 \
    -DRMNET_FUZZ=ON -DBUILD_SHARED_LIBS=OFF -DRMNET_BUILD_TOOLS=OFF -DRMNET_BUILD_BENCHMARKS=OFF \
    -DRMNET_PYTHON="$RMNET_PYTHON" -DRMNET_REQUIRE_PYTHON_TESTS=ON
  ASAN_OPTIONS=detect_leaks=0 timed "build (sanitizers)" cmake --build "$sbuild" -j "$jobs" --target "$@"
}

sanitized_suites() {
  export ASAN_OPTIONS="detect_leaks=1:detect_container_overflow=0:${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
  export LSAN_OPTIONS="suppressions=$RMNET_ROOT/fuzz/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
  OMP_NUM_THREADS=1 RMNET_REQUIRE_PYTHON_TESTS=1 timed "suites under ASan+UBSan" \
    "$sbuild/tests/rmnet_tests" --gtest_filter="$filter" --gtest_brief=1
}

if [ "$mode" = sanitize ]; then
  sanitizer_build rmnet_tests
  sanitized_suites
  exit 0
fi

cmake -S "$RMNET_ROOT" -B "$RMNET_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRMNET_PYTHON="$RMNET_PYTHON" \
  -DRMNET_REQUIRE_PYTHON_TESTS=ON
timed "build" cmake --build "$RMNET_BUILD_DIR" -j "$jobs"
timed "ctest" ctest --test-dir "$RMNET_BUILD_DIR" --output-on-failure -j "$jobs"

if [ "$fuzz_seconds" != 0 ]; then
  sanitizer_build fuzz_all
  timed "fuzz step" bash "$here/fuzz.sh" "$sbuild" "$fuzz_seconds"
fi
if [ "${RMNET_CI_SANITIZE_SUITES:-0}" = 1 ]; then
  sanitizer_build rmnet_tests
  sanitized_suites
fi
