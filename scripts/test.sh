#!/usr/bin/env bash
# Runs every test of msb-imaged: the check unit tests and the pytest suites
# (integration, SDK, CLI, EROFS, pull, systemd, VM boot) against a -Werror
# build, then the unit tests and the integration suite again under
# ASan/UBSan, and the unit tests and the concurrency and pull suites under
# ThreadSanitizer.
#
#   scripts/test.sh            everything
#   SKIP_SANITIZERS=1 scripts/test.sh   only the plain build
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-deps.sh || exit 1

passed=0
failed=0
status=0

count_meson() { # builddir
  local log="$1/meson-logs/testlog.json" ok fail
  [ -f "$log" ] || return 0
  ok=$(grep -c '"result": "OK"' "$log" || true)
  fail=$(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)
  passed=$((passed + ok)); failed=$((failed + fail))
}

count_pytest() { # logfile
  local line p f e
  # pytest -q ends with "N failed, M passed, K skipped in T s" (decorated with = without -q).
  line=$(grep -E '(passed|failed|errors?).* in [0-9.]+s' "$1" | tail -n 1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
}

build() { # dir, meson args...
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null || return 1
  else
    meson setup "$dir" "$@" >/dev/null || return 1
  fi
  meson compile -C "$dir"
}

run_suite() { # builddir, label, pytest paths...
  local dir=$1 label=$2; shift 2
  echo "== $label: unit tests (meson test) =="
  meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
  count_meson "$dir"
  echo "== $label: pytest $* =="
  MSB_BUILD_DIR="$root/$dir" /usr/bin/python3 -m pytest -W error -q -p no:cacheprovider \
    --import-mode=importlib "$@" 2>&1 | tee "$dir/pytest.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  count_pytest "$dir/pytest.log"
}

pytest_paths=()
# tests/client runs through meson test (its "cli" test), in both builds.
# tests/vm (a VM boots the VMDK) runs in the plain build only: the
# sanitizers would check nothing there that the other suites do not.
for d in tests/integration python-sdk/tests tests/erofs tests/pull tests/systemd tests/vm; do
  compgen -G "$d/test_*.py" >/dev/null && pytest_paths+=("$d")
done

echo "== build (warnings are errors) =="
build build -Dwerror=true || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
run_suite build "plain" "${pytest_paths[@]}"

if [ -z "${SKIP_SANITIZERS:-}" ]; then
  echo "== build with ASan/UBSan =="
  if build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    asan_paths=()
    for d in tests/integration tests/erofs; do
      compgen -G "$d/test_*.py" >/dev/null && asan_paths+=("$d")
    done
    run_suite build-asan "asan" "${asan_paths[@]}"
  else
    status=1; failed=$((failed + 1))
  fi
fi

if [ -z "${SKIP_SANITIZERS:-}" ]; then
  echo "== build with ThreadSanitizer =="
  if build build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug; then
    # The worker threads, the layer reader's producer and the store's
    # writer lock are what TSan checks here (ARCHITECTURE.md "Threads").
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    unset ASAN_OPTIONS UBSAN_OPTIONS
    run_suite build-tsan "tsan" tests/integration/test_crash.py tests/pull
  else
    status=1; failed=$((failed + 1))
  fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && exit $status || exit 1
