"""Start and stop the real ``msb-imaged`` for tests (stdlib only).

``Daemon(workdir)`` runs ``$MSB_BUILD_DIR/daemon/msb-imaged`` (MSB_BUILD_DIR
defaults to ``<repo>/build``) as::

    msb-imaged --store <workdir>/store --socket <workdir>/run/imaged.sock --log-level debug

with stdout and stderr appended to ``<workdir>/daemon.log``.  Keyword
options: ``log_level``, ``extra_args`` (appended to the command line),
``env`` (the environment; default ``os.environ`` without MSB_IMAGED_*,
LISTEN_* and NOTIFY_SOCKET; ``start()`` always sets NOTIFY_SOCKET to its
own), ``store`` and ``socket_path`` (other paths).

``start(argv=None, env=None)``
    spawn it with a NOTIFY_SOCKET of its own and wait for its READY=1
    (:mod:`msbtest.ready`), so no probe connection is left for the daemon to
    count; raises :class:`DaemonError` (with the log tail) when it exits or
    times out.
``stop()``
    SIGTERM, wait, and assert exit status 0 and a clean log (no
    AddressSanitizer / LeakSanitizer report, no UBSan "runtime error:").
``kill9()``
    SIGKILL and reap; no assertion on the exit.
``send_signal(sig)``
    any signal; the exit that follows is expected (``stop()`` then checks
    its status and the log).
``restart()``
    ``stop()`` (if running) then ``start()``.
``client()``
    a connected :class:`msbtest.rpc.RpcClient`; closed by ``close()``.
``log()`` / ``log_since_start()``
    the captured output (all runs / the current run).
``argv(**overrides)``
    the command line, e.g. for a second daemon on the same store.

``NamespaceDaemon(workdir, tmpfs={path: size})`` runs the daemon in a user
and mount namespace of its own (``unshare -rm``; no privilege needed where
unprivileged user namespaces are allowed; ``namespaces_available()`` says)
with an empty tmpfs of that size mounted at each path: a small store that
runs full, or a directory the daemon must not see (as systemd's
PrivateTmp hides /tmp). ``inside(path)`` reaches a path as the daemon sees
it, through /proc/PID/root.
``close()``
    stop if still running (asserting a clean exit) and close clients.

``daemon_env(asan_options="", **extra)`` is the environment to pass as
``env`` when a test needs to add to it: ``os.environ`` without MSB_IMAGED_*,
LISTEN_* and NOTIFY_SOCKET, ``asan_options`` appended to ASan's, then
``extra``.

Paths: ``store``, ``socket_path``, ``log_path``, ``binary``; ``pid``.
The daemon is never left running: fixtures call ``close()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .ready import READY_TIMEOUT_S, NotifyListener, NotReady
from .rpc import RpcClient

__all__ = ["Daemon", "DaemonError", "NamespaceDaemon", "build_dir", "daemon_binary", "daemon_env",
           "namespaces_available", "SANITIZER_MARKERS"]

REPO_ROOT = Path(__file__).resolve().parents[3]

# Text a sanitizer writes when it finds a bug, and the daemon's own report of
# a libuv handle some module left open at exit; any of these in the log fails
# the test that owns the daemon.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "runtime error:",
    "the event loop did not close clean",
)

START_TIMEOUT_S = READY_TIMEOUT_S
STOP_TIMEOUT_S = 20.0


class DaemonError(AssertionError):
    """The daemon failed to start, crashed, or exited uncleanly."""


def build_dir() -> Path:
    """The meson build directory: $MSB_BUILD_DIR, else <repo>/build."""
    return Path(os.environ.get("MSB_BUILD_DIR") or REPO_ROOT / "build").resolve()


def daemon_binary() -> Path:
    return build_dir() / "daemon" / "msb-imaged"


_ASAN_OPTIONS = "detect_leaks=1:abort_on_error=0:halt_on_error=1"
# What would point a daemon at another store, socket or service manager.
_OWN_ENV_PREFIXES = ("MSB_IMAGED_", "LISTEN_")


def _sanitizer_env(env: dict) -> dict:
    env = dict(env)
    # Keep sanitizer reports in the log and make UBSan findings visible with
    # a stack; callers may override through their own environment.
    env.setdefault("ASAN_OPTIONS", _ASAN_OPTIONS)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=0")
    return env


def daemon_env(asan_options: str = "", **extra: str) -> dict:
    """os.environ without MSB_IMAGED_*, LISTEN_* and NOTIFY_SOCKET, with
    asan_options appended to ASan's options, then extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV_PREFIXES) and k != "NOTIFY_SOCKET"}
    if asan_options:
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", _ASAN_OPTIONS) + ":" + asan_options
    env.update(extra)
    return env


class Daemon:
    def __init__(self, workdir, *, log_level: str = "debug", extra_args=(), env: dict | None = None,
                 store=None, socket_path=None, binary: Path | None = None):
        """``binary``: another msb-imaged than MSB_BUILD_DIR's (a benchmark's
        baseline build)."""
        self._binary = Path(binary) if binary else None
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = Path(store) if store else self.workdir / "store"
        self.socket_path = Path(socket_path) if socket_path else self.workdir / "run" / "imaged.sock"
        self.log_path = self.workdir / "daemon.log"
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.env = _sanitizer_env(dict(os.environ if env is None else env))
        # Do not let the test environment's XDG settings or a stray config leak in.
        for k in ("MSB_IMAGED_STORE", "MSB_IMAGED_SOCKET", "MSB_IMAGED_CONFIG", "LISTEN_FDS", "LISTEN_PID",
                  "NOTIFY_SOCKET"):
            if env is None or k not in env:
                self.env.pop(k, None)
        self.proc: subprocess.Popen | None = None
        # Run in the child before exec (e.g. to lower a resource limit).
        self.preexec_fn = None
        # True once the current process was told to go (stop or kill9); an
        # exit without that is a crash and fails close().
        self._exit_expected = False
        self._log_offset = 0
        self._clients: list[RpcClient] = []

    # Paths and command line ----------------------------------------------

    @property
    def binary(self) -> Path:
        return self._binary or daemon_binary()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def status_kib(self, key: str) -> int:
        """A size from the daemon's /proc status, in KiB (``VmHWM``: its peak RSS)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {key} in /proc/{self.pid}/status")

    def argv(self, *, store=None, socket_path=None, log_level=None, extra_args=None) -> list[str]:
        return [
            str(self.binary),
            "--store", str(store or self.store),
            "--socket", str(socket_path or self.socket_path),
            "--log-level", log_level or self.log_level,
            *(self.extra_args if extra_args is None else extra_args),
        ]

    # Log ---------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        return self.log()[self._log_offset:]

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def assert_log_clean(self) -> None:
        text = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                raise DaemonError(f"sanitizer report ({marker!r}) in the daemon log:\n{self.log_tail(120)}")

    # Life cycle --------------------------------------------------------------

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S, *, argv: list | None = None,
              env: dict | None = None) -> "Daemon":
        """Spawns the daemon and waits for its READY=1 (msbtest.ready).

        ``argv`` and ``env`` replace the command line and the environment
        of this run only (e.g. a daemon told its paths by the environment).
        """
        if not self.binary.exists():
            raise DaemonError(f"{self.binary} does not exist: build it or set MSB_BUILD_DIR")
        assert not self.running(), "daemon already running"
        argv = self.argv() if argv is None else [str(a) for a in argv]
        self._log_offset = len(self.log())
        self._exit_expected = False
        with NotifyListener(self.workdir / "notify.sock") as ready:
            with open(self.log_path, "ab") as logf:
                logf.write(f"===== start: {' '.join(argv)}\n".encode())
                logf.flush()
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                             env=dict(self.env if env is None else env, **ready.env()),
                                             cwd=self.workdir, preexec_fn=self.preexec_fn)
            try:
                ready.wait_ready(self.proc, timeout)
            except NotReady as e:
                self.kill9()
                raise DaemonError(f"daemon not ready: {e}:\n{self.log_tail()}") from None
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S, check: bool = True) -> int:
        """SIGTERM and wait; with check, assert exit 0 and a clean log."""
        self.close_clients()
        assert self.proc is not None, "daemon was never started"
        if self.proc.poll() is not None and not self._exit_expected and check:
            raise DaemonError(f"daemon died on its own with status {self.proc.returncode}:\n{self.log_tail()}")
        self._exit_expected = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise DaemonError(f"daemon did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        rc = self.proc.returncode
        if check:
            if rc != 0:
                raise DaemonError(f"daemon exited with {rc} after SIGTERM (want 0):\n{self.log_tail()}")
            self.assert_log_clean()
        return rc

    def send_signal(self, sig: int) -> None:
        """Send ``sig``; an exit after it counts as expected (check with ``stop()``)."""
        assert self.proc is not None, "daemon was never started"
        self._exit_expected = True
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL the daemon and reap it (a crash as the store sees it)."""
        if self.proc is not None:
            self._exit_expected = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout: float = START_TIMEOUT_S) -> "Daemon":
        if self.running():
            self.stop()
        return self.start(timeout)

    # Clients ---------------------------------------------------------------

    def client(self, timeout: float = 30.0) -> RpcClient:
        c = RpcClient(self.socket_path, timeout=timeout)
        self._clients.append(c)
        return c

    def close_clients(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()

    def close(self, check: bool = True) -> None:
        """Stop the daemon if it runs (asserting a clean exit) and release everything."""
        self.close_clients()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.stop(check=check)
        elif check:
            if not self._exit_expected:
                raise DaemonError(f"daemon died on its own with status {self.proc.returncode}:\n{self.log_tail()}")
            self.assert_log_clean()

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, exc_type, *rest) -> None:
        self.close(check=exc_type is None)


def namespaces_available() -> bool:
    """Whether this user may mount a tmpfs in a user and mount namespace."""
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory(prefix="msb-ns-") as where:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                f'mount -t tmpfs -o size=1m tmpfs "{where}"'], capture_output=True)
    return probe.returncode == 0


class NamespaceDaemon(Daemon):
    """A daemon in namespaces of its own, with tmpfs mounts only it sees."""

    def __init__(self, workdir, *, tmpfs: dict, **kw):
        super().__init__(workdir, **kw)
        self.tmpfs = {Path(p): str(size) for p, size in tmpfs.items()}
        for p in self.tmpfs:
            p.mkdir(parents=True, exist_ok=True)

    def argv(self, **kw) -> list[str]:
        # sh mounts each tmpfs ("size" "path" pairs), then becomes the daemon.
        script = ('while [ "$1" != -- ]; do mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" || exit 1; '
                  'shift 2; done; shift; exec "$@"')
        pairs = [x for p, size in self.tmpfs.items() for x in (size, str(p))]
        return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *pairs, "--",
                *super().argv(**kw)]

    def inside(self, path) -> Path:
        return Path(f"/proc/{self.pid}/root") / Path(path).relative_to("/")
