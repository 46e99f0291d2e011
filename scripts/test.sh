#!/usr/bin/env bash
# Runs every test of msb-imaged: the check unit tests and the pytest suites
# (integration, SDK, CLI, EROFS, pull, systemd) against a -Werror build, then
# the unit tests and the integration and EROFS suites under ASan/UBSan, and
# the unit tests and the concurrency and pull suites under ThreadSanitizer.
#
# The builds come first; then the suites run side by side, at most
# MSB_TEST_JOBS at a time (default 4). Most of a suite's time is spent
# waiting (on fsync, on the daemon's timers, on sleeps that prove something
# does not happen), not computing, so on two cores they overlap well. Each
# suite writes its own log (BUILDDIR/test-logs/), printed whole when it ends.
#
#   scripts/test.sh                     everything
#   SKIP_SANITIZERS=1 scripts/test.sh   only the plain build
#   MSB_TEST_JOBS=1 scripts/test.sh     one suite at a time
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$SECONDS

scripts/install-deps.sh || exit 1

max_jobs=${MSB_TEST_JOBS:-4}
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
  echo "== build $dir =="
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null || return 1
  else
    meson setup "$dir" "$@" >/dev/null || return 1
  fi
  meson compile -C "$dir" >"$dir/compile.log" 2>&1 || { cat "$dir/compile.log"; return 1; }
}

# The environment of each build's tests.
env_plain=()
env_asan=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
# The worker threads, the layer reader's producer and the store's writer
# lock are what TSan checks here (ARCHITECTURE.md "Threads").
env_tsan=(TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1)

meson_suite() { # builddir, env...
  local dir=$1; shift
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS -u TSAN_OPTIONS "$@" \
    meson test -C "$dir" --print-errorlogs --num-processes 2
}

pytest_suite() { # builddir, env..., --, pytest paths...
  local dir=$1 envs=(); shift
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS -u TSAN_OPTIONS "${envs[@]}" MSB_BUILD_DIR="$root/$dir" \
    /usr/bin/python3 -m pytest -W error -q -p no:cacheprovider --import-mode=importlib "$@"
}

labels=() kinds=() dirs=() logs=() reported=()

report_finished() { # prints each finished suite's log once, as it ends
  local i rc secs
  for i in "${!labels[@]}"; do
    [ -z "${reported[$i]:-}" ] && [ -f "${logs[$i]}.done" ] || continue
    reported[$i]=1
    read -r rc secs <"${logs[$i]}.done"
    echo "== ${labels[$i]}: exit $rc after ${secs}s =="
    cat "${logs[$i]}"
    [ "$rc" -eq 0 ] || status=1
    if [ "${kinds[$i]}" = meson ]; then count_meson "${dirs[$i]}"; else count_pytest "${logs[$i]}"; fi
  done
}

running() { jobs -rp | wc -l; }

launch() { # label, kind (meson|pytest), builddir, command...
  local label=$1 kind=$2 dir=$3 log i
  shift 3
  while [ "$(running)" -ge "$max_jobs" ]; do sleep 1; report_finished; done
  mkdir -p "$dir/test-logs"
  log="$dir/test-logs/${label//[^a-z0-9]/-}.log"
  rm -f "$log.done"
  i=${#labels[@]}
  labels[$i]=$label kinds[$i]=$kind dirs[$i]=$dir logs[$i]=$log
  echo "== started: $label =="
  ( t=$SECONDS; "$@" >"$log" 2>&1; rc=$?; echo "$rc $((SECONDS - t))" >"$log.done" ) &
}

# Suites of about equal length: the integration suite alone, the others in
# pairs. tests/client runs through meson test (its "cli" test).
pairs=("python-sdk/tests tests/erofs" "tests/pull tests/systemd")

sanitizers=
[ -z "${SKIP_SANITIZERS:-}" ] && sanitizers=1

build build -Dwerror=true || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
asan_ok= tsan_ok=
if [ -n "$sanitizers" ]; then
  if build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    asan_ok=1
  else
    status=1; failed=$((failed + 1))
  fi
  if build build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug; then
    tsan_ok=1
  else
    status=1; failed=$((failed + 1))
  fi
fi
echo "== built after $((SECONDS - start))s; suites run $max_jobs at a time =="

# The longest suites first, so that the short ones fill the gaps at the end.
if [ -n "$asan_ok" ]; then
  launch "asan: pytest tests/integration" pytest build-asan pytest_suite build-asan "${env_asan[@]}" -- tests/integration
fi
launch "plain: pytest tests/integration" pytest build pytest_suite build "${env_plain[@]}" -- tests/integration
for pair in "${pairs[@]}"; do
  # shellcheck disable=SC2086 # a pair is two paths without spaces
  launch "plain: pytest $pair" pytest build pytest_suite build "${env_plain[@]}" -- $pair
done
if [ -n "$asan_ok" ]; then
  launch "asan: unit tests (meson test)" meson build-asan meson_suite build-asan "${env_asan[@]}"
fi
launch "plain: unit tests (meson test)" meson build meson_suite build "${env_plain[@]}"
if [ -n "$tsan_ok" ]; then
  launch "tsan: pytest tests/integration/test_crash.py tests/pull" pytest build-tsan \
    pytest_suite build-tsan "${env_tsan[@]}" -- tests/integration/test_crash.py tests/pull
  launch "tsan: unit tests (meson test)" meson build-tsan meson_suite build-tsan "${env_tsan[@]}"
fi
if [ -n "$asan_ok" ]; then
  launch "asan: pytest tests/erofs" pytest build-asan pytest_suite build-asan "${env_asan[@]}" -- tests/erofs
fi

while [ "$(running)" -gt 0 ]; do sleep 1; report_finished; done
wait
report_finished

echo
echo "$passed passed, $failed failed in $((SECONDS - start))s"
[ "$failed" -eq 0 ] && exit $status || exit 1
