#!/usr/bin/env bash
# Runs every fuzz target of a fuzz build (RMNET_FUZZ=ON, see fuzz/README.md) for a bounded time on
# its seed corpus (written by the build) plus the regression inputs in fuzz/regressions/<target>/,
# and fails on any crash, sanitizer report, leak, timeout or out-of-memory.
#   scripts/fuzz.sh BUILD_DIR [SECONDS_PER_TARGET=20] [TARGET...]
# New inputs libFuzzer finds go to BUILD_DIR/fuzz/corpus/<target> (kept between runs); a crashing
# input is written to BUILD_DIR/fuzz/artifacts/<target>/ and its path printed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:?usage: fuzz.sh BUILD_DIR [SECONDS] [TARGET...]}
secs=${2:-20}
shift $(( $# >= 2 ? 2 : 1 ))
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(pickle state_dict model_file checkpoint idx cifar image config chain_json)
fi
export OMP_NUM_THREADS=1
# allocator_may_return_null: a huge allocation a forged header asks for is an exception the reader
# reports (c10::Error), not an abort. Container-overflow checks need an instrumented C++ library
# throughout; LibTorch is not, so they stay off (they are off by default with libstdc++ anyway).
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:detect_container_overflow=0:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$root/fuzz/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
failed=()
for t in "${targets[@]}"; do
  bin="$build/fuzz/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "[fuzz] $t: $bin not built" >&2
    failed+=("$t")
    continue
  fi
  corpus="$build/fuzz/corpus/$t"
  artifacts="$build/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus" "$build/fuzz/seeds/$t")
  [ -d "$root/fuzz/regressions/$t" ] && dirs+=("$root/fuzz/regressions/$t")
  log="$build/fuzz/$t.log"
  start=$(date +%s)
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=3072 -malloc_limit_mb=3072 -print_final_stats=1 \
         -artifact_prefix="$artifacts/" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  echo "[fuzz] $t: exit $rc, ${runs:-?} inputs in $(( $(date +%s) - start )) s"
  if [ $rc -ne 0 ]; then
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written|deadly|uncaught' "$log" | head -20 >&2
    echo "[fuzz] $t: full log $log" >&2
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "[fuzz] FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "[fuzz] all ${#targets[@]} targets clean"
