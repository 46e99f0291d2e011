"""Fairness and back-pressure through the real daemon (issue: a line of
300,000 image.prune notifications delayed another client's system.df by
70 s, and SIGTERM then took 159 s because every queued call still ran;
1,100 connections left the store without file descriptors)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import threading
import time

from msbtest import proto
from msbtest.rpc import RpcClient

PRUNES = 20000


def _flood_prunes(path, n, stop):
    """Pipelines n image.prune notifications (no answers) without reading."""
    line = b'{"jsonrpc":"2.0","method":"image.prune"}\n'
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.settimeout(0.5)
        sent = 0
        while sent < n and not stop.is_set():
            try:
                s.sendall(line * 500)
                sent += 500
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
        stop.wait(30)


def test_flood_of_worker_calls_does_not_delay_another_client(daemon):
    stop = threading.Event()
    flooders = [threading.Thread(target=_flood_prunes, args=(daemon.socket_path, PRUNES, stop), daemon=True)
                for _ in range(2)]
    for t in flooders:
        t.start()
    try:
        time.sleep(1.0)
        with daemon.client() as c:
            worst = 0.0
            for _ in range(5):
                t0 = time.monotonic()
                df = c.call("system.df", timeout=30)
                worst = max(worst, time.monotonic() - t0)
                assert "total_bytes" in df
            # A prune of an empty store takes milliseconds; waiting for a
            # backlog of 40,000 would take far longer.
            assert worst < 2.0, f"system.df took {worst:.2f}s behind the flood"
        # SIGTERM: calls not started are dropped, the daemon exits promptly.
        t0 = time.monotonic()
        daemon.stop()
        assert time.monotonic() - t0 < 15
    finally:
        stop.set()
        for t in flooders:
            t.join(5)


def test_connection_counts_in_system_info(daemon):
    with daemon.client() as c:
        info = c.call("system.info")
        assert info["connections_max"] == proto.limit("connections") or \
            info["connections_max"] < proto.limit("connections")
        assert info["connections"] >= 1
        with daemon.client() as c2:
            deadline = time.monotonic() + 5
            while c.call("system.info")["connections"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c2.call("system.info")["connections"] >= 2


def _preexec_nofile(limit):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return set_limit


def test_low_open_file_limit_sizes_the_connection_limit(daemon_factory):
    # With a hard limit of 512 open files, 1024 connections cannot all reach
    # the store: the daemon serves fewer, says so, and every one it accepts
    # is served by the store.
    d = daemon_factory("nofile", start=False)
    d.preexec_fn = _preexec_nofile(512)
    d.start()
    with d.client() as c:
        info = c.call("system.info")
    cap = info["connections_max"]
    assert 16 <= cap < 512, info
    assert "RLIMIT_NOFILE" in d.log_since_start()
    clients = []
    try:
        for _ in range(cap):
            clients.append(RpcClient(d.socket_path, timeout=30))
        for i, cl in enumerate(clients):
            cl.send_request("system.df", id=i)
        for i, cl in enumerate(clients):
            assert "total_bytes" in cl.wait(i)["result"], i
        extra = RpcClient(d.socket_path, timeout=10)
        try:
            extra.send_request("image.list", id="x")
            msg = extra.recv(timeout=10)
            proto.check_error(msg, "limit-exceeded")
            assert msg["error"]["data"]["max"] == cap
        except (ConnectionError, OSError):
            pass
        finally:
            extra.close()
    finally:
        for cl in clients:
            cl.close()
