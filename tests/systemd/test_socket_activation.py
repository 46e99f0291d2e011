"""The real msb-imaged under socket activation (sd_listen_fds(3)), readiness
notification (sd_notify(3)) and --exit-idle, driven for real: by
systemd-socket-activate, and by this test acting as the service manager
where it needs to produce what systemd-socket-activate cannot."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from activation_kit import NotifyListener, SocketActivate, Spawned, daemon_env, exe_of, listening_socket
from msbtest import RpcClient
from msbtest.daemon import daemon_binary

# How long a daemon that was told to exit when idle may take beyond its idle
# period (ASan builds and loaded CI machines are slow to exit).
IDLE_EXIT_SLACK_S = 10.0
# How long the tests watch a daemon that must NOT exit when idle.
IDLE_WATCH_S = 3.0


@pytest.fixture
def work(tmp_path) -> Path:
    assert daemon_binary().is_file(), f"{daemon_binary()} does not exist: build it or set MSB_BUILD_DIR"
    return tmp_path


@pytest.fixture
def notify(work):
    listener = NotifyListener(work / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def runners():
    """Every daemon a test starts; killed at the end if still running."""
    made = []
    yield made
    for r in made:
        r.close()


def own_socket_path(work: Path) -> Path:
    """Where the daemon would bind a socket of its own in these tests."""
    return work / "xdg-run" / "microsandbox" / "imaged.sock"


def info(path: Path) -> dict:
    with RpcClient(path, timeout=30) as c:
        return c.call("system.info")


def assert_is_socket(path: Path) -> None:
    assert path.exists(), f"{path} was removed"
    assert stat.S_ISSOCK(path.stat().st_mode), f"{path} is no longer a socket"


def test_first_connection_starts_daemon_which_is_reused(work, notify, runners):
    sock = work / "run" / "imaged.sock"
    env = daemon_env(work, {"NOTIFY_SOCKET": str(notify.path)})
    act = SocketActivate(work, sock, ["--store", str(work / "store"), "--log-level", "debug"], env)
    runners.append(act)

    # Listening, but no daemon until somebody connects.
    time.sleep(0.3)
    assert exe_of(act.pid) == act.activate
    assert not (work / "store").exists()
    notify.drain(0.1)
    assert notify.messages == []

    first = RpcClient(sock, timeout=30)
    try:
        got = first.call("system.info")
        assert got["pid"] == act.pid
        assert act.daemon_started()
        assert got["socket_path"] == str(sock)
        assert got["store_path"] == str(work / "store")

        # Readiness comes from the daemon's own pid, once.
        pid, _ = notify.wait_for("READY", "1")
        assert pid == act.pid

        # A second connection, while the first is open, reaches the same
        # process; so does the first one again.
        assert info(sock)["pid"] == act.pid
        assert first.call("system.info")["pid"] == act.pid
    finally:
        first.close()
    # After every client left, a new one still reaches the same daemon.
    assert info(sock)["pid"] == act.pid

    # It served the passed socket only and never bound one of its own.
    assert not own_socket_path(work).exists()

    assert act.terminate() == 0
    pid, _ = notify.wait_for("STOPPING", "1")
    assert pid == act.pid
    readies = [t for t in notify.texts() if "READY=1" in t.split("\n")]
    assert len(readies) == 1, notify.texts()
    assert notify.texts().index(readies[0]) < len(notify.texts()) - 1
    # The socket belongs to the manager: the daemon leaves it in place.
    assert_is_socket(sock)
    act.assert_log_clean()


def test_ready_only_when_serving(work, notify, runners):
    """READY=1 means the socket is served: a request sent right after it is
    answered. Without NOTIFY_SOCKET the daemon runs the same."""
    sock = work / "run" / "imaged.sock"
    env = daemon_env(work, {"NOTIFY_SOCKET": str(notify.path)})
    act = SocketActivate(work, sock, ["--store", str(work / "store")], env)
    runners.append(act)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock))  # starts the daemon; nothing sent yet
        notify.wait_for("READY", "1")
        with RpcClient(sock, timeout=10) as c:
            assert c.call("system.info")["pid"] == act.pid
    finally:
        s.close()
    assert act.terminate() == 0
    act.assert_log_clean()

    work2 = work / "no-notify"
    work2.mkdir()
    act2 = SocketActivate(work2, work2 / "run" / "imaged.sock", ["--store", str(work2 / "store")], daemon_env(work2))
    runners.append(act2)
    assert info(work2 / "run" / "imaged.sock")["pid"] == act2.pid
    assert act2.terminate() == 0
    act2.assert_log_clean()


def test_exit_idle_when_activated(work, notify, runners):
    idle_s = 2
    sock = work / "run" / "imaged.sock"
    env = daemon_env(work, {"NOTIFY_SOCKET": str(notify.path)})
    act = SocketActivate(work, sock, ["--store", str(work / "store"), "--exit-idle", str(idle_s)], env)
    runners.append(act)

    c = RpcClient(sock, timeout=30)
    try:
        assert c.call("system.info")["pid"] == act.pid
        # An open connection is not idleness, however quiet.
        time.sleep(idle_s + 1.5)
        assert act.running(), f"exited with a client connected:\n{act.log_tail()}"
        assert c.call("system.info")["pid"] == act.pid
    finally:
        c.close()
        closed_at = time.monotonic()

    assert act.wait_exit(idle_s + IDLE_EXIT_SLACK_S) == 0, act.log_tail()
    waited = time.monotonic() - closed_at
    assert waited >= idle_s - 0.25, f"exited after {waited:.2f}s idle, before --exit-idle {idle_s}"
    pid, _ = notify.wait_for("STOPPING", "1", timeout=1)
    assert pid == act.pid
    # The next connection must be able to start a new instance, so the
    # socket stays where the manager put it.
    assert_is_socket(sock)
    act.assert_log_clean()


def test_exit_idle_ignored_without_activation(daemon_factory):
    """Started by hand, the daemon has nobody to start it again: it keeps
    serving whatever --exit-idle says."""
    d = daemon_factory("plain", extra_args=["--exit-idle", "1"])
    pid = d.pid
    time.sleep(IDLE_WATCH_S)
    assert d.running(), f"exited while not socket-activated:\n{d.log_tail()}"
    with d.client() as c:
        assert c.call("system.info")["pid"] == pid
    # The fixture's teardown stops it and asserts exit 0.


def test_wrong_listen_pid_ignored(work, notify, runners):
    """Variables meant for another process (here: for our test process) do not
    make the daemon take fd 3: it binds its own socket, and counts as not
    activated (--exit-idle is ignored)."""
    passed = work / "passed" / "imaged.sock"
    own = work / "own" / "imaged.sock"
    lsock = listening_socket(passed)
    try:
        env = daemon_env(work, {"NOTIFY_SOCKET": str(notify.path)})
        d = Spawned(work, lsock, ["--store", str(work / "store"), "--socket", str(own), "--exit-idle", "1"], env,
                    listen_pid=os.getpid())
        runners.append(d)
        notify.wait_ready(d.proc)
        got = info(own)
        assert got["pid"] == d.pid
        assert got["socket_path"] == str(own)

        # Nobody serves the passed socket: the kernel queues the connection,
        # no answer ever comes.
        with RpcClient(passed, timeout=1.0) as c:
            c.send({"jsonrpc": "2.0", "id": 1, "method": "system.info"})
            with pytest.raises((TimeoutError, socket.timeout)):
                c.recv_line(timeout=1.0)

        time.sleep(IDLE_WATCH_S)
        assert d.running(), f"--exit-idle applied although not activated:\n{d.log_tail()}"
        assert d.terminate() == 0
        d.assert_log_clean()
    finally:
        lsock.close()


def test_reactivation_after_idle_exit(work, notify, runners):
    """What systemd does with the .socket unit: after an idle exit the socket
    stays open in the manager, a client connecting meanwhile waits in the
    backlog, and the next instance answers it."""
    sock = work / "run" / "imaged.sock"
    lsock = listening_socket(sock)
    env = daemon_env(work, {"NOTIFY_SOCKET": str(notify.path)})
    args = ["--store", str(work / "store"), "--exit-idle", "1"]
    try:
        first = Spawned(work, lsock, args, env)
        runners.append(first)
        got = info(sock)
        assert got["pid"] == first.pid
        assert got["socket_path"] == str(sock)
        assert first.wait_exit(1 + IDLE_EXIT_SLACK_S) == 0, first.log_tail()
        first.assert_log_clean()

        waiting = RpcClient(sock, timeout=30)
        try:
            waiting.send({"jsonrpc": "2.0", "id": 7, "method": "system.info"})
            second = Spawned(work, lsock, args, env)
            runners.append(second)
            reply = waiting.wait(7)
            assert reply["result"]["pid"] == second.pid != first.pid
            assert reply["result"]["store_path"] == str(work / "store")
        finally:
            waiting.close()
        assert second.terminate() == 0
        second.assert_log_clean()
        notify.drain()
        readies = [pid for pid, fields, _ in notify.messages if fields.get("READY") == "1"]
        assert readies == [first.pid, second.pid]
    finally:
        lsock.close()


@pytest.mark.parametrize("case", ["two-fds", "datagram", "not-listening", "not-a-socket", "fd-closed", "bad-number"])
def test_bad_activation_is_fatal(work, runners, case):
    """A passed socket the daemon cannot serve is a broken unit, not a reason
    to serve somewhere else: it exits non-zero (not by a signal) at once."""
    own = work / "own" / "imaged.sock"
    listen_fds = {"two-fds": "2", "bad-number": "one"}.get(case, "1")
    if case == "datagram":
        sock = listening_socket(work / "passed.sock", socket.SOCK_DGRAM, listen=False)
    elif case == "not-listening":
        sock = listening_socket(work / "passed.sock", listen=False)
    elif case == "not-a-socket":
        sock = open(work / "file", "w+b")
    elif case == "fd-closed":
        sock = None
    else:
        sock = listening_socket(work / "passed.sock")
    try:
        d = Spawned(work, sock, ["--store", str(work / "store"), "--socket", str(own)], daemon_env(work),
                    listen_fds=listen_fds)
        runners.append(d)
        rc = d.wait_exit(20)
        assert d.daemon_reached(), d.log_tail()
        assert rc > 0, f"exit status {rc}:\n{d.log_tail()}"
        assert not own.exists(), "served a socket of its own instead"
        assert d.log().strip(), "exited without saying why"
        d.assert_log_clean()
    finally:
        if sock is not None:
            sock.close()
