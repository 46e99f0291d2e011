"""Running msb-image in tests: plainly (captured output) or on a
pseudo-terminal, and the CLI's formatting rules the tests check against."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import queue
import select
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from msbtest import build_dir

CLI_TIMEOUT_S = 60


def cli_binary() -> Path:
    return build_dir() / "client" / "msb-image"


def run(*args, socket=None, stdin=subprocess.DEVNULL, env=None, cwd=None, input=None):
    """Runs msb-image; --socket first when given. Returns CompletedProcess (text)."""
    argv = [str(cli_binary())]
    if socket is not None:
        argv += ["--socket", str(socket)]
    argv += [str(a) for a in args]
    if input is not None:
        stdin = None
    e = dict(os.environ if env is None else env)
    return subprocess.run(argv, stdin=stdin, input=input, capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=CLI_TIMEOUT_S)


def run_pty(*args, socket=None, answer: bytes | None = None, env=None, timeout=CLI_TIMEOUT_S, size=None):
    """Runs msb-image with stdin, stdout and stderr on a pseudo-terminal
    (of size (rows, columns) when given), typing `answer` when the program
    has printed something. Returns (exit status, everything the terminal
    showed)."""
    argv = [str(cli_binary())]
    if socket is not None:
        argv += ["--socket", str(socket)]
    argv += [str(a) for a in args]
    master, slave = pty.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env=dict(os.environ if env is None else env))
    os.close(slave)
    out = b""
    typed = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError as e:
                    if e.errno == errno.EIO:  # the child closed the terminal
                        break
                    raise
                if not chunk:
                    break
                out += chunk
                if not typed and out:
                    os.write(master, answer)
                    typed = True
            elif proc.poll() is not None and not r:
                # Drain what is left, then stop.
                continue
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, out.decode(errors="replace")


def human(n: int) -> str:
    """The CLI's sizes: 1024-based, one decimal below 10 units."""
    if n < 1024:
        return f"{n} B"
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    v, u = float(n), 0
    while v >= 1024 and u + 1 < len(units):
        v /= 1024
        u += 1
    return f"{v:.1f} {units[u]}" if v < 10 else f"{v:.0f} {units[u]}"


def short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


class Events:
    """`msb-image events` running in the background, its lines read by a
    thread into a queue; stop() ends it."""

    def __init__(self, socket, *args):
        self.proc = subprocess.Popen([str(cli_binary()), "--socket", str(socket), "events", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read(self, n, timeout=20):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"msb-image events ended: {out}"
            out.append(line)
        return out

    def wait_subscribed(self, make_event):
        """Calls make_event(i) (something the daemon reports, an image
        loaded say) until the command prints a line: then it has
        subscribed. Returns that line."""
        for i in range(100):
            make_event(i)
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            assert line is not None
            return line
        raise AssertionError("msb-image events printed nothing")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
