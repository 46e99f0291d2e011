"""A raw JSON-RPC 2.0 client over msb-imaged's Unix socket (stdlib only).

The framing is the daemon's: one JSON text per line, each terminated by
``\\n`` (a batch array is one text).  The client is deliberately thin so that
tests can also speak *wrong* protocol to the daemon:

``RpcClient(path)``
    connect (blocking socket with a timeout).
``call(method, params=None) -> result``
    send one request and wait for its response; raises :class:`RpcError`.
    ``params=None`` sends ``{}``; pass ``NO_PARAMS`` to omit the member.
``request(method, params) -> dict``
    like ``call`` but returns the whole response object (result or error).
``send_request(method, params, id=None) -> id`` and ``wait(id) -> dict``
    pipelining: several requests in flight, answers matched by id.
``notify(method, params)``
    a JSON-RPC notification (no id, no answer expected).
``batch([(method, params, id_or_None), ...]) -> list | None``
    one batch text; returns the response array (``None`` when every entry
    was a notification and so nothing must come back).
``send_fds(bytes, fds)``, ``send_request_fds(method, params, fds)``, ``call_fds(...)``
    a request line with file descriptors (SCM_RIGHTS) on its first bytes.
``send_raw(bytes)``, ``recv_line() -> bytes``, ``recv() -> object``
    the bytes on the wire, for malformed-input tests.
``expect_eof(timeout)``
    True when the daemon closed the connection.

Notifications from the daemon (``image.pull.progress``) that arrive while a
call waits are kept in ``notifications``; responses for other ids are kept
until their ``wait``.  Every read has a timeout (``timeout`` seconds,
default 30) so a hung daemon fails a test instead of hanging it.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from typing import Any

__all__ = ["RpcClient", "RpcError", "ConnectionClosed", "NO_PARAMS", "error_of"]

# Marker: leave the "params" member out of the request entirely.
NO_PARAMS = object()

_RECV_CHUNK = 1 << 16


class ConnectionClosed(EOFError):
    """The daemon closed the connection (EOF or reset) while we waited."""


class RpcError(Exception):
    """A JSON-RPC error response: ``code``, ``message``, ``data`` (dict or None).

    ``name`` is ``data["name"]`` when present; ``response`` is the whole object.
    """

    def __init__(self, response: dict):
        err = response.get("error") or {}
        self.response = response
        self.code = err.get("code")
        self.message = err.get("message")
        self.data = err.get("data")
        super().__init__(f"{self.code} {self.message} data={json.dumps(self.data)}")

    @property
    def name(self) -> str | None:
        return self.data.get("name") if isinstance(self.data, dict) else None


def error_of(response: dict) -> RpcError | None:
    """The RpcError carried by a response object, or None if it is a result."""
    if isinstance(response, dict) and "error" in response:
        return RpcError(response)
    return None


class RpcClient:
    """One connection to the daemon.  Use as a context manager or close()."""

    def __init__(self, path, timeout: float = 30.0, connect: bool = True):
        self.path = str(path)
        self.timeout = timeout
        self.notifications: list[dict] = []
        self._pending: dict[Any, dict] = {}
        self._buf = b""
        self._ids = itertools.count(1)
        self.sock: socket.socket | None = None
        if connect:
            self.connect()

    # Connection handling -------------------------------------------------

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # Tests run with -W error; never leave a socket to the GC.
        self.close()

    # Raw bytes -------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (no newline added)."""
        assert self.sock is not None, "client is closed"
        self.sock.sendall(data)

    def send(self, obj: Any) -> None:
        """Write one JSON text followed by a newline."""
        self.send_raw(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def send_fds(self, data: bytes, fds) -> None:
        """Write bytes with file descriptors (SCM_RIGHTS) riding on the first
        of them, as a request line that names them must be sent."""
        assert self.sock is not None, "client is closed"
        sent = socket.send_fds(self.sock, [data], list(fds))
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def send_request_fds(self, method: str, params: Any, fds, id: Any = None) -> Any:
        """Send a request with descriptors; returns its id."""
        if id is None:
            id = self.next_id()
        self.send_fds(json.dumps(self.make_request(method, params, id), separators=(",", ":")).encode() + b"\n", fds)
        return id

    def call_fds(self, method: str, params: Any, fds, timeout: float | None = None) -> Any:
        """Send a request with descriptors and return its result; raises RpcError."""
        resp = self.wait(self.send_request_fds(method, params, fds), timeout)
        if "error" in resp:
            raise RpcError(resp)
        return resp["result"]

    def recv_line(self, timeout: float | None = None) -> bytes:
        """Read one line (without its newline); raises ConnectionClosed on EOF."""
        assert self.sock is not None, "client is closed"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        polled = False
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                if polled:
                    raise TimeoutError(f"no complete line from the daemon within the timeout; have {self._buf[:200]!r}")
                left = 0.001  # timeout=0 still looks once at what already arrived
            polled = True
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(_RECV_CHUNK)
            except (ConnectionResetError, BrokenPipeError) as e:
                raise ConnectionClosed(str(e)) from e
            except socket.timeout as e:
                raise TimeoutError(f"no complete line from the daemon within the timeout; have {self._buf[:200]!r}") from e
            if not chunk:
                raise ConnectionClosed(f"daemon closed the connection; partial data {self._buf[:200]!r}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def recv(self, timeout: float | None = None) -> Any:
        """Read and parse one JSON text (a response, a batch array or a notification)."""
        line = self.recv_line(timeout)
        try:
            return json.loads(line)
        except ValueError as e:
            raise AssertionError(f"daemon sent a line that is not JSON: {line[:300]!r}") from e

    def expect_eof(self, timeout: float = 5.0) -> bool:
        """True when the daemon closes the connection within timeout.

        Any data still arriving is discarded; False on timeout.
        """
        assert self.sock is not None, "client is closed"
        self._buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(_RECV_CHUNK)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
            if not chunk:
                return True

    # JSON-RPC ----------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    @staticmethod
    def make_request(method: str, params: Any = None, id: Any = NO_PARAMS) -> dict:
        """Build a request object; ``id=NO_PARAMS`` makes it a notification."""
        req: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not NO_PARAMS:
            req["params"] = {} if params is None else params
        if id is not NO_PARAMS:
            req["id"] = id
        return req

    def send_request(self, method: str, params: Any = None, id: Any = None) -> Any:
        """Send a request without waiting; returns its id (a fresh int by default)."""
        if id is None:
            id = self.next_id()
        self.send(self.make_request(method, params, id))
        return id

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification: no id, and the daemon must not answer it."""
        self.send(self.make_request(method, params))

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, dict) and "id" not in msg and "method" in msg:
            self.notifications.append(msg)
        elif isinstance(msg, dict) and "id" in msg:
            key = json.dumps(msg["id"])
            self._pending[key] = msg
        else:
            raise AssertionError(f"unexpected message from the daemon: {json.dumps(msg)[:300]}")

    def wait(self, id: Any, timeout: float | None = None) -> dict:
        """Wait for the response carrying ``id``; keeps others for later."""
        key = json.dumps(id)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while key not in self._pending:
            self._dispatch(self.recv(max(0.0, deadline - time.monotonic())))
        msg = self._pending.pop(key)
        assert msg.get("jsonrpc") == "2.0", f"response without jsonrpc 2.0: {msg}"
        return msg

    def request(self, method: str, params: Any = None, timeout: float | None = None) -> dict:
        """Send a request and return the whole response object."""
        return self.wait(self.send_request(method, params), timeout)

    def call(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """Send a request and return its result; raises RpcError on an error response."""
        resp = self.request(method, params, timeout)
        if "error" in resp:
            raise RpcError(resp)
        assert "result" in resp, f"response has neither result nor error: {resp}"
        return resp["result"]

    def batch(self, entries, timeout: float | None = None) -> list | None:
        """Send a batch of ``(method, params, id)`` tuples (id None = notification).

        Returns the response array, or None when every entry was a
        notification (then nothing is read: callers check silence themselves).
        """
        reqs = []
        for method, params, id in entries:
            reqs.append(self.make_request(method, params, NO_PARAMS if id is None else id))
        self.send(reqs)
        if all(id is None for _, _, id in entries):
            return None
        return self.recv_batch(timeout)

    def recv_batch(self, timeout: float | None = None) -> list:
        """Read messages until an array arrives; notifications are kept aside."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(msg, list):
                return msg
            self._dispatch(msg)
