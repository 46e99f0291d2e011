#!/usr/bin/env bash
# Runs every test of msb-imaged: the check unit tests and the pytest suites
# (integration, SDK, CLI, EROFS, pull, systemd, VM boot) against a -Werror
# build, then the unit tests and the integration and EROFS suites under
# ASan/UBSan, and the unit tests and the concurrency and pull suites under
# ThreadSanitizer.
#
# The suites run side by side, at most MSB_TEST_JOBS at a time (default 4),
# the plain ones while the sanitizer builds compile: most of a suite's time
# is spent waiting (on fsync, on the daemon's timers, on sleeps that prove
# something does not happen), not computing, so on two cores they overlap
# instead of adding up. Each suite writes its own log (build/test-logs/),
# printed whole when it ends.
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
logdir=$root/build/test-logs
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

pytest_suite() { # builddir, env..., --, pytest arguments...
  local dir=$1 envs=(); shift
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS -u TSAN_OPTIONS "${envs[@]}" MSB_BUILD_DIR="$root/$dir" \
    /usr/bin/python3 -m pytest -W error -q -p no:cacheprovider --import-mode=importlib "$@"
}

# Every job started: its label, what it is (build, meson, pytest), its
# build directory and its log; "$log.done" holds its exit status and time.
labels=() kinds=() dirs=() logs=() reported=()

report_finished() { # prints each finished job's log once, as it ends
  local i rc secs
  for i in "${!labels[@]}"; do
    [ -z "${reported[$i]:-}" ] && [ -f "${logs[$i]}.done" ] || continue
    reported[$i]=1
    read -r rc secs <"${logs[$i]}.done"
    echo "== ${labels[$i]}: exit $rc after ${secs}s =="
    case ${kinds[$i]} in
      # A build's output is long: shown when it failed; its status counts the failed builds.
      build) [ "$rc" -eq 0 ] || cat "${logs[$i]}"; failed=$((failed + rc)) ;;
      meson) cat "${logs[$i]}"; count_meson "${dirs[$i]}" ;;
      pytest) cat "${logs[$i]}"; count_pytest "${logs[$i]}" ;;
    esac
    [ "$rc" -eq 0 ] || status=1
  done
}

running() { jobs -rp | wc -l; }

built() { # builddir: 0 built, 1 failed, 2 not yet
  [ -f "$logdir/$1.built" ] || return 2
  [ "$(cat "$logdir/$1.built")" = 0 ]
}

launch() { # label, kind, builddir, command...: once a slot is free and builddir is built
  local label=$1 kind=$2 dir=$3 log i b
  shift 3
  while :; do
    report_finished
    built "$dir"; b=$?
    [ "$b" -eq 1 ] && return 0 # the failed build is counted already
    [ "$b" -eq 0 ] && [ "$(running)" -lt "$max_jobs" ] && break
    sleep 1
  done
  log="$logdir/${label//[^a-z0-9]/-}.log"
  rm -f "$log.done"
  i=${#labels[@]}
  labels[$i]=$label kinds[$i]=$kind dirs[$i]=$dir logs[$i]=$log
  echo "== started after $((SECONDS - start))s: $label =="
  ( t=$SECONDS; "$@" >"$log" 2>&1; rc=$?; echo "$rc $((SECONDS - t))" >"$log.done" ) &
}

sanitizer_builds() { # one after the other, so that they take turns instead of fighting; exits with how many failed
  local n=0 b
  build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
  echo $? >"$logdir/build-asan.built"
  build build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
  echo $? >"$logdir/build-tsan.built"
  for b in build-asan build-tsan; do built $b || n=$((n + 1)); done
  return $n
}

echo "== build (warnings are errors) =="
build build -Dwerror=true || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
mkdir -p "$logdir"
rm -f "$logdir"/*.done "$logdir"/*.built
echo 0 >"$logdir/build.built"

# The integration suite in two halves of about equal length (a new file
# goes to the second); the other suites in pairs. tests/client runs through
# meson test (its "cli" test).
integration_a=(tests/integration/test_load.py tests/integration/test_cache.py)
integration_b=(tests/integration "${integration_a[@]/#/--ignore=}")
pairs=("python-sdk/tests tests/erofs" "tests/pull tests/systemd")

if [ -z "${SKIP_SANITIZERS:-}" ]; then
  launch "build-asan, then build-tsan" build build sanitizer_builds
fi

# The longest suites first, so that the short ones fill the gaps at the end.
launch "plain: pytest ${integration_a[*]}" pytest build pytest_suite build "${env_plain[@]}" -- "${integration_a[@]}"
launch "plain: pytest tests/integration (the rest)" pytest build pytest_suite build "${env_plain[@]}" -- "${integration_b[@]}"
for pair in "${pairs[@]}"; do
  # shellcheck disable=SC2086 # a pair is two paths without spaces
  launch "plain: pytest $pair" pytest build pytest_suite build "${env_plain[@]}" -- $pair
done
# tests/vm (a VM boots the VMDK) runs in the plain build only: the
# sanitizers would check nothing there that the other suites do not.
launch "plain: pytest tests/vm" pytest build pytest_suite build "${env_plain[@]}" -- tests/vm
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  launch "asan: pytest ${integration_a[*]}" pytest build-asan \
    pytest_suite build-asan "${env_asan[@]}" -- "${integration_a[@]}"
  launch "asan: pytest tests/integration (the rest)" pytest build-asan \
    pytest_suite build-asan "${env_asan[@]}" -- "${integration_b[@]}"
fi
launch "plain: unit tests (meson test)" meson build meson_suite build "${env_plain[@]}"
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  launch "asan: unit tests (meson test)" meson build-asan meson_suite build-asan "${env_asan[@]}"
  launch "asan: pytest tests/erofs" pytest build-asan pytest_suite build-asan "${env_asan[@]}" -- tests/erofs
  launch "tsan: pytest tests/integration/test_crash.py tests/pull" pytest build-tsan \
    pytest_suite build-tsan "${env_tsan[@]}" -- tests/integration/test_crash.py tests/pull
  launch "tsan: unit tests (meson test)" meson build-tsan meson_suite build-tsan "${env_tsan[@]}"
fi

while [ "$(running)" -gt 0 ]; do sleep 1; report_finished; done
wait
report_finished

echo
echo "$passed passed, $failed failed in $((SECONDS - start))s"
[ "$failed" -eq 0 ] && exit $status || exit 1
