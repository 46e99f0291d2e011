"""How every test knows a daemon it started is serving: the service
manager's way, sd_notify(3) readiness (stdlib only).

A launcher gives the daemon a ``NOTIFY_SOCKET`` of its own
(:class:`NotifyListener`) and waits for ``READY=1`` from the daemon's pid
(:meth:`NotifyListener.wait_ready`); msb-imaged sends it once its socket
listens (daemon/main.c).  ``msbtest.Daemon``, the runners of tests/systemd,
the journal tests, the C harness of tests/client (harness.c, the same
protocol in C) and the benches all wait this way.

Why not something simpler:

- A socket file that exists is not yet a socket that listens: the daemon
  binds, sets the file's mode, then listens, and a connect in between is
  refused.
- A probe (connect, one call, close) is a connection the daemon still
  counts until it sees the close; a test that fills the daemon up to its
  connection limit right after the start would race it.

:func:`socket_listening` tells, without connecting, that a socket bound at
a path listens: the readiness of ``systemd-socket-activate``, which must not
be connected to before the test means to start the daemon.
"""

from __future__ import annotations

import array
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

__all__ = ["NotifyListener", "NotReady", "socket_listening", "READY_TIMEOUT_S"]

# An ASan or TSan build starts slowly on a loaded machine; a daemon that is
# not serving after this long is broken.
READY_TIMEOUT_S = 20.0

# How often a wait looks whether the process it waits for has exited.
_EXIT_POLL_S = 0.05

# Flag of a listening socket in /proc/net/unix (__SO_ACCEPTCON in the kernel).
_SO_ACCEPTCON = 0x10000

# struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")


class NotReady(AssertionError):
    """The process exited, or said nothing, before it was ready."""


class NotifyListener:
    """The service manager's end of sd_notify(3): an AF_UNIX datagram socket
    at ``path`` with SO_PASSCRED, so each message comes with its sender's
    pid, as systemd sees it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(str(self.path))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except BaseException:
            self.sock.close()
            raise
        # Every message received so far: (pid, {key: value}, raw text).
        self.messages: list[tuple[int, dict, str]] = []

    def env(self) -> dict:
        """What to add to the daemon's environment."""
        return {"NOTIFY_SOCKET": str(self.path)}

    def close(self) -> None:
        """Closes the socket and removes its file (a later message from the
        daemon, STOPPING=1, then goes nowhere, as without a manager)."""
        self.sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "NotifyListener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        except (socket.timeout, BlockingIOError):
            return False
        pid = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[: _UCRED.size])[0]
        text = data.decode()
        fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
        self.messages.append((pid, fields, text))
        return True

    def _find(self, key: str, value: str | None, pid: int | None, start: int) -> tuple[int, dict] | None:
        for sender, fields, _ in self.messages[start:]:
            if key in fields and (value is None or fields[key] == value) and (pid is None or sender == pid):
                return sender, fields
        return None

    def wait_for(self, key: str, value: str | None = None, timeout: float = READY_TIMEOUT_S,
                 proc: subprocess.Popen | None = None) -> tuple[int, dict]:
        """The first message (already received or arriving within timeout)
        that assigns key (=value), from proc's pid when proc is given;
        returns (sender pid, fields). Raises NotReady at once when proc
        exits first."""
        deadline = time.monotonic() + timeout
        pid = proc.pid if proc is not None else None
        seen = 0
        while True:
            found = self._find(key, value, pid, seen)
            if found:
                return found
            seen = len(self.messages)
            if proc is not None and proc.poll() is not None:
                # Whatever it sent just before it exited is read too.
                while self._receive(0):
                    pass
                found = self._find(key, value, pid, seen)
                if found:
                    return found
                raise NotReady(f"exited with status {proc.returncode} before {key}={value or '*'}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotReady(f"no {key}={value or '*'} notification within {timeout}s; got {self.texts()}")
            self._receive(min(left, _EXIT_POLL_S) if proc is not None else left)

    def wait_ready(self, proc: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> dict:
        """Waits for READY=1 from proc; its fields (STATUS=...)."""
        return self.wait_for("READY", "1", timeout, proc)[1]

    def drain(self, timeout: float = 0.2) -> None:
        while self._receive(timeout):
            pass

    def texts(self) -> list[str]:
        return [text for _, _, text in self.messages]


def socket_listening(path) -> bool:
    """True when a Unix socket bound at ``path`` listens, seen in
    /proc/net/unix without connecting to it."""
    want = os.path.abspath(os.fsdecode(path))
    with open("/proc/net/unix", encoding="utf-8", errors="surrogateescape") as f:
        next(f)  # Num RefCount Protocol Flags Type St Inode Path
        for line in f:
            fields = line.rstrip("\n").split(None, 7)
            if len(fields) == 8 and fields[7] == want and int(fields[3], 16) & _SO_ACCEPTCON:
                return True
    return False
