#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz/ under ASan and UBSan.
#
#   scripts/fuzz.sh DURATION [TARGET...]
#
# Builds build-fuzz with clang (-fsanitize=fuzzer,address,undefined), then
# runs each target (all of them unless named) for DURATION seconds, two at
# a time, each starting from its seed corpus tests/fuzz/corpus/<name>/ and
# from what earlier runs kept. What a run finds lands in $FUZZ_OUT (default
# build-fuzz/fuzz-out): corpus/<name>/ the inputs it kept, crashes/<name>/
# each crashing input (replay one with build-fuzz/tests/fuzz/fuzz_<name>
# FILE), <name>.log the fuzzer's output. Prints each target's executions,
# coverage and crashes, and exits non-zero when any target crashed, leaked,
# hung or failed a check.
#
# The largest seed of a target bounds the inputs libFuzzer makes for it.
# FUZZ_JOBS (default 2) targets run at once: the machine has 2 cores.
# FUZZ_BUILD_DIR (default build-fuzz) is the clang build to use or make.
set -uo pipefail

# A single input that runs longer than this is reported as a hang.
FUZZ_INPUT_TIMEOUT_S=10
# Memory one target may use before libFuzzer reports it.
FUZZ_RSS_LIMIT_MB=2048

usage() {
  echo "usage: $0 DURATION_SECONDS [TARGET...]" >&2
  exit 2
}

build_fuzzers() { # build
  local build=$1
  command -v clang >/dev/null || { echo "clang is missing: run scripts/install-deps.sh" >&2; return 1; }
  if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false \
      -Dbuildtype=debugoptimized >"$build.setup.log" 2>&1 || { cat "$build.setup.log" >&2; return 1; }
    rm -f "$build.setup.log"
  fi
  meson compile -C "$build" >/dev/null || meson compile -C "$build"
}

run_target() { # build out duration name
  local build=$1 out=$2 duration=$3 name=$4 dict=()
  case $name in
    rpc | request | oci) dict=("-dict=tests/fuzz/json.dict") ;;
  esac
  # Crashes of an earlier run are in its log; this run's stand alone.
  rm -rf "$out/crashes/$name" "$out/$name.rc"
  mkdir -p "$out/corpus/$name" "$out/crashes/$name"
  # New inputs go to the first corpus directory, never to the seeds.
  "$build/tests/fuzz/fuzz_$name" "${dict[@]}" \
    -max_total_time="$duration" -timeout="$FUZZ_INPUT_TIMEOUT_S" -rss_limit_mb="$FUZZ_RSS_LIMIT_MB" \
    -print_final_stats=1 -artifact_prefix="$out/crashes/$name/" \
    "$out/corpus/$name" "tests/fuzz/corpus/$name" >"$out/$name.log" 2>&1
  echo $? >"$out/$name.rc"
}

# One line per target; non-zero when any failed.
report() { # out names...
  local out=$1 status=0 name log rc execs speed cov ft crashes
  shift
  printf '%-10s %12s %8s %8s %8s %8s\n' target execs exec/s cov ft crashes
  for name in "$@"; do
    log=$out/$name.log
    rc=$(cat "$out/$name.rc" 2>/dev/null || echo 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -oE ' cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
    ft=$(grep -oE ' ft: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
    crashes=$(find "$out/crashes/$name" -type f | wc -l)
    printf '%-10s %12s %8s %8s %8s %8s\n' "$name" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$crashes"
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
      echo "$name: the fuzzer exited $rc; see $log and $out/crashes/$name/" >&2
      status=1
    fi
  done
  return $status
}

main() {
  local duration build out jobs running=0 name src targets=()
  [ $# -ge 1 ] || usage
  duration=$1; shift
  [[ "$duration" =~ ^[0-9]+$ ]] && [ "$duration" -gt 0 ] || usage
  cd "$(dirname "$0")/.." || return 1
  build=${FUZZ_BUILD_DIR:-build-fuzz}
  out=${FUZZ_OUT:-$build/fuzz-out}
  jobs=${FUZZ_JOBS:-2}

  build_fuzzers "$build" || return 1
  targets=("$@")
  if [ ${#targets[@]} -eq 0 ]; then
    for src in tests/fuzz/fuzz_*.c; do
      name=$(basename "$src" .c)
      name=${name#fuzz_}
      [ "$name" = driver ] || targets+=("$name")
    done
  fi
  for name in "${targets[@]}"; do
    [ -x "$build/tests/fuzz/fuzz_$name" ] ||
      { echo "no libFuzzer binary $build/tests/fuzz/fuzz_$name (is $build built with clang?)" >&2; return 1; }
  done

  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  mkdir -p "$out"
  for name in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
      wait -n
      running=$((running - 1))
    fi
    echo "fuzzing $name for ${duration}s" >&2
    run_target "$build" "$out" "$duration" "$name" &
    running=$((running + 1))
  done
  wait
  report "$out" "${targets[@]}"
}

# The whole script is read before it runs: editing it during a run is safe.
main "$@"
exit
