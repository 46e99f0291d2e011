"""Drive the real msb-imaged the way a service manager does (stdlib only).

- :class:`NotifyListener` -- the manager's side of sd_notify(3), shared with
  every other launcher of the tests (msbtest.ready).
- :class:`SocketActivate` -- ``systemd-socket-activate -l PATH msb-imaged ...``
  (Debian's systemd package): listens, and execs the daemon in its own
  process on the first connection, with LISTEN_FDS=1 and LISTEN_PID.
- :class:`Spawned` -- the daemon started by the test itself with a listening
  socket at fd 3 and chosen LISTEN_PID/LISTEN_FDS values (the cases
  systemd-socket-activate cannot produce: a wrong LISTEN_PID, several fds,
  a socket of the wrong kind, a second activation of the same socket).

Both runners put stdout and stderr into ``<workdir>/daemon.log`` and check it
for sanitizer reports at the end, like msbtest.Daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from msbtest.daemon import SANITIZER_MARKERS, daemon_binary
from msbtest.ready import READY_TIMEOUT_S, NotifyListener, socket_listening

__all__ = ["NotifyListener", "SocketActivate", "Spawned", "listening_socket", "wait_until", "exe_of",
           "daemon_env"]

STOP_TIMEOUT_S = 20.0
START_TIMEOUT_S = READY_TIMEOUT_S

# Variables that must reach the daemon (systemd-socket-activate passes only
# PATH, HOME, TERM and LC_* unless told with -E).
_PASSED_ON = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Polls predicate until it returns a true value (returned) or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def exe_of(pid: int) -> str | None:
    """The executable a process runs now (it changes at exec), None once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except (FileNotFoundError, ProcessLookupError):
        return None


def listening_socket(path: Path, kind: int = socket.SOCK_STREAM, listen: bool = True) -> socket.socket:
    """A Unix socket bound at path (listening when asked), as a .socket unit makes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(str(path))
    if listen:
        s.listen(64)
    return s


def daemon_env(workdir: Path, extra: dict | None = None) -> dict:
    """A clean environment for the daemon: its XDG directories inside workdir,
    so that a daemon which wrongly binds its own default socket is caught
    (``<workdir>/xdg-run/microsandbox/imaged.sock`` must never appear)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir / "home"),
        "XDG_RUNTIME_DIR": str(workdir / "xdg-run"),
        "XDG_DATA_HOME": str(workdir / "xdg-data"),
        "XDG_CONFIG_HOME": str(workdir / "xdg-config"),
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1"),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=0"),
    }
    for d in ("home", "xdg-run", "xdg-data", "xdg-config"):
        (workdir / d).mkdir(mode=0o700, parents=True, exist_ok=True)
    if extra:
        env.update(extra)
    return env


class _Runner:
    """What both ways of starting the daemon share: the log and the end."""

    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def assert_log_clean(self) -> None:
        text = self.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report ({marker!r}) in the daemon log:\n{self.log_tail(120)}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout}s:\n{self.log_tail()}") from None

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SocketActivate(_Runner):
    """``systemd-socket-activate -l <socket> [-E VAR]... msb-imaged <args>``."""

    def __init__(self, workdir: Path, socket_path: Path, args: list[str], env: dict):
        self.workdir = Path(workdir)
        self.socket_path = Path(socket_path)
        self.log_path = self.workdir / "daemon.log"
        activate = shutil.which("systemd-socket-activate")
        assert activate, "systemd-socket-activate is missing: install Debian's systemd package"
        self.activate = os.path.realpath(activate)
        self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [activate, "-l", str(self.socket_path)]
        for key in env:
            argv += ["-E", key]
        argv += [str(daemon_binary()), *args]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         env=env, cwd=self.workdir)
        # Listening, and nothing else yet: the daemon only starts on a
        # connection, so readiness is seen without connecting (the file
        # appears at bind, before listen).
        wait_until(lambda: socket_listening(self.socket_path) or self.proc.poll() is not None, START_TIMEOUT_S,
                   f"{self.socket_path} to listen")
        assert self.proc.poll() is None, f"systemd-socket-activate exited:\n{self.log_tail()}"

    def daemon_started(self) -> bool:
        """True once the activator has exec'd the daemon (same pid)."""
        try:
            argv = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return False
        return exe_of(self.pid) != self.activate and os.fsencode(daemon_binary()) in argv


class Spawned(_Runner):
    """The daemon with `sock` placed at fd 3 and the given LISTEN_* values.

    ``listen_pid``: "self" for the daemon's own pid (set by a shell that then
    execs the daemon, so the pid is the same), an int for another pid, None to
    leave it unset; ``listen_fds``: the LISTEN_FDS text or None.
    """

    EXEC_MARKER = "activation_kit: exec daemon as pid"

    def __init__(self, workdir: Path, sock: socket.socket | None, args: list[str], env: dict,
                 listen_pid: str | int | None = "self", listen_fds: str | None = "1"):
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "daemon.log"
        script = []
        pass_fds: tuple[int, ...] = ()
        if sock is not None:
            # A number above the ones Popen uses, so that moving it to 3 does
            # not clobber anything; the shell then closes the original.
            high = os.dup(sock.fileno())
            pass_fds = (high,)
            script.append(f"exec 3<&{high} {high}<&-")
        if listen_pid == "self":
            script.append("LISTEN_PID=$$; export LISTEN_PID")
        elif listen_pid is not None:
            script.append(f"LISTEN_PID={int(listen_pid)}; export LISTEN_PID")
        if listen_fds is not None:
            script.append(f"LISTEN_FDS='{listen_fds}'; export LISTEN_FDS")
        # The marker tells the test the daemon got control, whatever it did then.
        script.append(f'echo "{self.EXEC_MARKER} $$" >&2')
        script.append('exec "$@"')
        # bash, not sh: dash only redirects fds 0-9.
        argv = ["/bin/bash", "-c", "; ".join(script), "bash", str(daemon_binary()), *args]
        try:
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                             env=env, cwd=self.workdir, pass_fds=pass_fds)
        finally:
            for fd in pass_fds:
                os.close(fd)

    def daemon_reached(self) -> bool:
        """True when the shell got as far as exec'ing the daemon."""
        return f"{self.EXEC_MARKER} {self.pid}" in self.log()
