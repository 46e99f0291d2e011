"""Logging the way journald reads it: when the service manager connects
stderr to the journal it sets JOURNAL_STREAM to that stream's "device:inode";
the daemon then starts each line with a "<N>" syslog priority and leaves the
timestamp to the journal. Any other stderr gets plain timestamped lines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from activation_kit import daemon_env
from msbtest import RpcClient
from msbtest.daemon import SANITIZER_MARKERS, daemon_binary
from msbtest.ready import NotifyListener, NotReady

PRIORITY = re.compile(r"^<([0-7])>")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def run_daemon(work: Path, log_path: Path, env_extra: dict, store: Path | None = None,
               journal_of: Path | None = None) -> tuple[int, str]:
    """Runs the daemon with stdout and stderr on log_path, answers one
    request once it is ready, stops it with SIGTERM; (exit status, log
    text). With journal_of, JOURNAL_STREAM names that file's device and
    inode."""
    assert daemon_binary().is_file(), f"{daemon_binary()} does not exist: build it or set MSB_BUILD_DIR"
    sock = work / "run" / "imaged.sock"
    env = daemon_env(work, env_extra)
    with NotifyListener(work / "notify.sock") as ready:
        env.update(ready.env())
        with open(log_path, "wb") as logf:
            st = os.fstat(logf.fileno()) if journal_of is None else os.stat(journal_of)
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            proc = subprocess.Popen([str(daemon_binary()), "--store", str(store or work / "store"), "--socket",
                                     str(sock), "--log-level", "debug"], stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=logf, env=env, cwd=work)
        try:
            try:
                ready.wait_ready(proc)
            except NotReady:
                # A refused start exits: its status and log are the result.
                if proc.poll() is None:
                    raise
            if proc.poll() is None:
                with RpcClient(sock, timeout=30) as c:
                    c.call("system.info")
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in text, text
    return rc, text


@pytest.fixture
def work(short_tmp) -> Path:
    return short_tmp


def test_priority_prefixes_when_stderr_is_the_journal(work):
    rc, text = run_daemon(work, work / "journal.log", {})
    assert rc == 0, text
    lines = [line for line in text.splitlines() if line]
    assert lines, "the daemon logged nothing at debug level"
    for line in lines:
        assert PRIORITY.match(line), f"line without a <N> priority: {line!r}"
        assert not TIMESTAMP.search(line[:40]), f"the journal adds the time itself: {line!r}"
    # Debug and info lines at least: starting, serving, stopping.
    assert {PRIORITY.match(line).group(1) for line in lines} & {"6", "7"}


def test_plain_lines_when_journal_stream_is_another_file(work):
    other = work / "other"
    other.write_bytes(b"")
    rc, text = run_daemon(work, work / "plain.log", {}, journal_of=other)
    assert rc == 0, text
    lines = [line for line in text.splitlines() if line]
    assert lines
    for line in lines:
        assert not PRIORITY.match(line), f"priority prefix although stderr is not the journal: {line!r}"
        assert TIMESTAMP.search(line), f"line without a timestamp: {line!r}"


def test_error_priority_for_a_refused_start(work, daemon_factory):
    """A second daemon on a store already held fails at once; its error line
    carries priority 3 (err), so `journalctl -p err` shows it."""
    first = daemon_factory("first")
    second = work / "second"
    second.mkdir()
    rc, text = run_daemon(second, second / "journal.log", {}, store=first.store)
    assert rc > 0, text
    errors = [line for line in text.splitlines() if line.startswith("<3>")]
    assert errors and any(str(first.store) in line for line in errors), text
