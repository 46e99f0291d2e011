#!/usr/bin/env bash
# Runs every test of msb-imaged: the check unit tests and the pytest suites
# (integration, SDK, CLI, EROFS, pull, systemd, VM boot) against a -Werror
# build, then the unit tests and the integration and EROFS suites under
# ASan/UBSan, and the unit tests and the concurrency and pull suites under
# ThreadSanitizer.
#
# The suites run side by side, at most MSB_TEST_JOBS at a time (default 4),
# the plain ones while the sanitizer builds compile: much of a suite's time
# is spent waiting (on fsync, on the daemon's timers, on sleeps that prove
# something does not happen), so on two cores they overlap instead of
# adding up, until the CPUs are busy all along (as they are on a 2-CPU CI
# machine: there, what the jobs compute sets the run's length, and their
# order what is left running alone at the end). Each suite writes its own
# log (build/test-logs/), printed whole when it ends.
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

count_meson() { # builddir, log base name
  local log="$1/meson-logs/$2.json" ok fail
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

# meson test runs its tests in the order they are defined, and the client
# suite's "cli" test (tests/client through pytest) is the longest and the
# last: alone in one job, the suite overlaps the others instead of ending
# after them. Each job writes its own log (meson-logs/testlog-SUITE.json).
meson_suite() { # builddir, --suite client | --no-suite client, env...
  local dir=$1 base=testlog-client; shift
  [ "$1" = --suite ] || base=testlog-other
  local select=("$1" "$2"); shift 2
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS -u TSAN_OPTIONS "$@" \
    meson test -C "$dir" --print-errorlogs --num-processes 2 --logbase "$base" "${select[@]}"
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
      meson:*) cat "${logs[$i]}"; count_meson "${dirs[$i]}" "${kinds[$i]#meson:}" ;;
      pytest) cat "${logs[$i]}"; count_pytest "${logs[$i]}" ;;
    esac
    [ "$rc" -eq 0 ] || status=1
  done
}

# The jobs running, but for the guest kernels' download (prefetch_pid).
prefetch_pid=
running() { jobs -rp | grep -cvx "${prefetch_pid:--}"; }

built() { # builddir: 0 built, 1 failed, 2 not yet
  [ -f "$logdir/$1.built" ] || return 2
  [ "$(cat "$logdir/$1.built")" = 0 ]
}

# The jobs not started yet, in the order they should start: each as its
# label, kind, build directory and command (quoted for eval).
queued_labels=() queued_kinds=() queued_dirs=() queued_cmds=()

queue() { # label, kind, builddir, command...
  queued_labels+=("$1") queued_kinds+=("$2") queued_dirs+=("$3")
  shift 3
  queued_cmds+=("$(printf '%q ' "$@")")
}

start_job() { # label, kind, builddir, quoted command
  local label=$1 kind=$2 dir=$3 cmd=$4 log i
  log="$logdir/${label//[^a-z0-9]/-}.log"
  rm -f "$log.done"
  i=${#labels[@]}
  labels[$i]=$label kinds[$i]=$kind dirs[$i]=$dir logs[$i]=$log
  echo "== started after $((SECONDS - start))s: $label =="
  ( t=$SECONDS; eval "$cmd" >"$log" 2>&1; rc=$?; echo "$rc $((SECONDS - t))" >"$log.done" ) &
}

run_queue() { # starts the queued jobs in order as their builds end and slots free up, at most max_jobs at once
  local i b l k d c free
  while [ ${#queued_labels[@]} -gt 0 ]; do
    report_finished
    # Counted once a round: a job that ends during the round frees its slot
    # for the next round, not for a job further down the queue than one
    # still waiting for a slot.
    free=$((max_jobs - $(running)))
    l=() k=() d=() c=()
    for i in "${!queued_labels[@]}"; do
      built "${queued_dirs[$i]}"; b=$?
      if [ "$b" -eq 1 ]; then
        continue # the failed build is counted already
      elif [ "$b" -eq 0 ] && [ "$free" -gt 0 ]; then
        start_job "${queued_labels[$i]}" "${queued_kinds[$i]}" "${queued_dirs[$i]}" "${queued_cmds[$i]}"
        free=$((free - 1))
      else
        l+=("${queued_labels[$i]}") k+=("${queued_kinds[$i]}") d+=("${queued_dirs[$i]}") c+=("${queued_cmds[$i]}")
      fi
    done
    queued_labels=("${l[@]}") queued_kinds=("${k[@]}") queued_dirs=("${d[@]}") queued_cmds=("${c[@]}")
    [ ${#queued_labels[@]} -eq 0 ] || sleep 1
  done
}

sanitizer_builds() { # one after the other, so that they take turns instead of fighting; exits with how many failed
  local n=0 b
  build build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
  echo $? >"$logdir/build-tsan.built"
  build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
  echo $? >"$logdir/build-asan.built"
  for b in build-tsan build-asan; do built $b || n=$((n + 1)); done
  return $n
}

mkdir -p "$logdir"
rm -f "$logdir"/*.done "$logdir"/*.built
# The test images that the pytest suites build (msbtest.imagekit), built
# once for all of them rather than once in each; emptied at each run, so
# that no image of an older checkout is handed out. The suites of every
# build read from it what no build changes: the EROFS kit's image and its
# umoci unpack (erofs_kit.kit_image), the layers at the entries limit, and
# the test registries' RSA keys (registry_harness).
export MSB_TEST_IMAGE_CACHE=$root/build/test-image-cache
rm -rf "$MSB_TEST_IMAGE_CACHE"

echo "== build (warnings are errors) =="
build build -Dwerror=true || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
echo 0 >"$logdir/build.built"

# tests/vm boots Debian kernels that it downloads into build/vm-guest once
# (tests/vm/vmkit.py): fetched here in the background, outside the jobs'
# slots, the download's wait does not hold up a job. (Not during the
# build: unpacking them took CPU from the compiler, on which everything
# waits.) The suite fetches again and reports what failed here, so the
# outcome is ignored.
( /usr/bin/python3 tests/vm/prefetch_kernels.py >"$logdir/vm-guest.log" 2>&1; echo 0 >"$logdir/vm-guest.built" ) &
prefetch_pid=$!

# The integration and pull suites each in two halves of about equal length
# (a new file goes to the second half); the SDK and EROFS suites as a pair.
# tests/client runs through meson test (its "cli" test).
integration_a=(tests/integration/test_load.py tests/integration/test_cache.py)
integration_b=(tests/integration "${integration_a[@]/#/--ignore=}")
pull_a=(tests/pull/test_pull.py)
pull_b=(tests/pull "${pull_a[@]/#/--ignore=}")

# The order in which the jobs start, each once its build is done and a slot
# is free: the longest first, so that the short ones fill the gaps at the
# end, and the sanitizer builds' suites before the plain ones of about the
# same length, since they can start only after those builds. The pull
# suites are long but mostly wait (on throttled transfers, retry backoffs,
# a credential helper's timeout), so they leave the CPU to the others;
# TSan's are among the longest, so build-tsan is built first.
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  queue "build-tsan, then build-asan" build build sanitizer_builds
  queue "asan: pytest ${integration_a[*]}" pytest build-asan \
    pytest_suite build-asan "${env_asan[@]}" -- "${integration_a[@]}"
  # TSan checks the threads of the pull path and of the concurrency test.
  queue "tsan: pytest tests/integration/test_crash.py tests/pull (the rest)" pytest build-tsan \
    pytest_suite build-tsan "${env_tsan[@]}" -- tests/integration/test_crash.py "${pull_b[@]}"
  queue "asan: pytest tests/integration (the rest)" pytest build-asan \
    pytest_suite build-asan "${env_asan[@]}" -- "${integration_b[@]}"
fi
queue "plain: pytest python-sdk/tests tests/erofs" pytest build \
  pytest_suite build "${env_plain[@]}" -- python-sdk/tests tests/erofs
queue "plain: pytest tests/pull (the rest) tests/systemd" pytest build \
  pytest_suite build "${env_plain[@]}" -- "${pull_b[@]}" tests/systemd
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  queue "tsan: meson test --suite client" meson:testlog-client build-tsan \
    meson_suite build-tsan --suite client "${env_tsan[@]}"
fi
queue "plain: pytest ${integration_a[*]}" pytest build pytest_suite build "${env_plain[@]}" -- "${integration_a[@]}"
# tests/vm (a VM boots the VMDK) runs in the plain build only: the
# sanitizers would check nothing there that the other suites do not. It
# starts once its guest kernels are fetched.
queue "plain: pytest tests/vm" pytest vm-guest pytest_suite build "${env_plain[@]}" -- tests/vm
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  queue "tsan: pytest ${pull_a[*]}" pytest build-tsan pytest_suite build-tsan "${env_tsan[@]}" -- "${pull_a[@]}"
fi
queue "plain: pytest tests/integration (the rest)" pytest build pytest_suite build "${env_plain[@]}" -- "${integration_b[@]}"
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  queue "asan: pytest tests/erofs" pytest build-asan pytest_suite build-asan "${env_asan[@]}" -- tests/erofs
fi
queue "plain: pytest ${pull_a[*]}" pytest build pytest_suite build "${env_plain[@]}" -- "${pull_a[@]}"
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  queue "tsan: meson test (the other suites)" meson:testlog-other build-tsan \
    meson_suite build-tsan --no-suite client "${env_tsan[@]}"
fi
if [ -z "${SKIP_SANITIZERS:-}" ]; then
  queue "asan: meson test (the other suites)" meson:testlog-other build-asan \
    meson_suite build-asan --no-suite client "${env_asan[@]}"
  queue "asan: meson test --suite client" meson:testlog-client build-asan \
    meson_suite build-asan --suite client "${env_asan[@]}"
fi
queue "plain: meson test --suite client" meson:testlog-client build meson_suite build --suite client "${env_plain[@]}"
queue "plain: meson test (the other suites)" meson:testlog-other build \
  meson_suite build --no-suite client "${env_plain[@]}"
run_queue

while [ "$(running)" -gt 0 ]; do sleep 1; report_finished; done
wait
report_finished

echo
echo "$passed passed, $failed failed in $((SECONDS - start))s"
[ "$failed" -eq 0 ] && exit $status || exit 1
