"""JSON-RPC 2.0 transport to msb-imaged over its Unix socket.

Framing (README, "The protocol"): each request and each response is one JSON
text followed by a newline. The daemon may answer requests of one connection
out of order, so calls are pipelined on a single connection per event loop
and socket path, and answers are matched to waiting futures by `id`.
Notifications (no `id`) carry `params.id`, the request they report on.

Nothing here blocks or starts a thread: the connection is an asyncio stream
and a reader task per connection dispatches the lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket as socketlib
import weakref
from typing import Any, Callable, Sequence

from ._errors import ERRORS_BY_CODE, ERRORS_BY_NAME
from ._exceptions import ConnectionLostError, DaemonNotRunningError, ProtocolError, RpcError
from ._types import GC_PAUSE_MIN_BYTES, _gc_paused

__all__ = ["default_socket_path", "call", "aclose", "MAX_RESPONSE_BYTES", "IDEMPOTENT_METHODS"]

# The largest response line accepted, in bytes. asyncio's default stream limit
# (64 KiB) is far below a 10,000-image `image.list` (about 4 MiB); this leaves
# room for a few hundred thousand images.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

# Methods that read, or that set state to the same value when repeated: after
# a broken connection they are sent once more on a fresh one. The others
# (remove, prune, pull, load, pin.remove) may have taken effect already, so a
# lost connection is reported instead.
IDEMPOTENT_METHODS = frozenset(
    {
        "image.get",
        "image.list",
        "image.inspect",
        "pin.add",
        "pin.list",
        "system.info",
        "system.df",
        "rpc.discover",
    }
)

# How long a request line with descriptors waits before trying again when
# the socket's buffer is full.
_FDS_RETRY_S = 0.005

_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

Notify = Callable[[dict[str, Any]], None]


def default_socket_path() -> str:
    """The daemon's socket: `$MSB_IMAGED_SOCKET`, else
    `$XDG_RUNTIME_DIR/microsandbox/imaged.sock`, else
    `/tmp/microsandbox-$UID/imaged.sock` (README, "Running the daemon")."""
    path = os.environ.get("MSB_IMAGED_SOCKET")
    if path:
        return path
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "microsandbox", "imaged.sock")
    return f"/tmp/microsandbox-{os.getuid()}/imaged.sock"


class _Broken(Exception):
    """Internal: the connection went away before the answer came."""


def rpc_error_from_wire(error: Any, method: str, subject: str | None, socket_path: str) -> RpcError:
    """The exception for a JSON-RPC error object, typed by `error.data.name`."""
    if not isinstance(error, dict):
        raise ProtocolError(socket_path, f"error member is not an object: {error!r:.200}")
    code = error.get("code")
    message = error.get("message")
    data = error.get("data")
    if not isinstance(data, dict):
        data = {}
    name = data.get("name")
    cls = ERRORS_BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(code, int):
        cls = ERRORS_BY_CODE.get(code)
    return (cls or RpcError)(
        message if isinstance(message, str) else "",
        code=code if isinstance(code, int) else None,
        data=data,
        method=method,
        subject=subject,
    )


class _Connection:
    """One socket; pipelined calls keyed by id; a reader task dispatches lines."""

    def __init__(
        self,
        path: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_close: Callable[[_Connection], None],
    ) -> None:
        self.path = path
        self.closed = False
        self._reader = reader
        self._writer = writer
        self._on_close: Callable[[_Connection], None] | None = on_close
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: dict[int, Notify] = {}
        self._reader_task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"microsandbox reader {path}"
        )

    @classmethod
    async def open(cls, path: str, on_close: Callable[[_Connection], None]) -> _Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_RESPONSE_BYTES)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            raise DaemonNotRunningError(path, e.strerror or type(e).__name__) from None
        except OSError as e:
            raise DaemonNotRunningError(path, e.strerror or str(e)) from None
        return cls(path, reader, writer, on_close)

    async def call(self, method: str, params: dict[str, Any], notify: Notify | None, fds: Sequence[int] = ()) -> Any:
        if self.closed:
            raise _Broken("connection closed")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if notify is not None:
            self._listeners[request_id] = notify
        try:
            line = _encode_json({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            if fds:
                await self._write_with_fds(line.encode() + b"\n", fds)
            else:
                self._writer.write(line.encode() + b"\n")
            await self._writer.drain()
            return await future
        except asyncio.CancelledError:
            self._cancel(request_id)
            raise
        except (ConnectionError, OSError) as e:
            self._shutdown(_Broken(str(e) or type(e).__name__))
            raise _Broken(str(e) or type(e).__name__) from None
        finally:
            self._pending.pop(request_id, None)
            self._listeners.pop(request_id, None)

    def _cancel(self, request_id: int) -> None:
        """The caller gave up on a request still in flight: tell the daemon
        (rpc.cancel, a notification), which then stops a pull nobody else
        waits for. Its answer, when it comes, has nobody to go to."""
        if self.closed or request_id not in self._pending:
            return
        line = _encode_json({"jsonrpc": "2.0", "method": "rpc.cancel", "params": {"id": request_id}})
        try:
            # Buffered at once; the connection sends it with what follows.
            self._writer.write(line.encode() + b"\n")
        except (ConnectionError, OSError, RuntimeError):
            pass

    async def _write_with_fds(self, data: bytes, fds: Sequence[int]) -> None:
        """Writes a request line with file descriptors (SCM_RIGHTS) on its
        first bytes, which the daemon hands to the line those bytes begin.

        An asyncio stream cannot send descriptors, so the first bytes go
        through the socket itself, once the transport has sent all it
        holds (a write buffer limit of 0 makes drain() wait for that); the
        rest follows through the transport, in order. Nothing else writes
        between the two: no await separates them.
        """
        transport = self._writer.transport
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)
        sock = socketlib.socket(fileno=self._writer.get_extra_info("socket").fileno())
        try:
            while True:
                await self._writer.drain()
                if transport.get_write_buffer_size() > 0:
                    continue
                try:
                    sent = socketlib.send_fds(sock, [data], list(fds))
                    break
                except BlockingIOError:
                    # The kernel's buffer is full: the transport owns the
                    # descriptor's writability, so try again shortly.
                    await asyncio.sleep(_FDS_RETRY_S)
        finally:
            sock.detach()
            transport.set_write_buffer_limits(high=high, low=low)
        if sent < len(data):
            self._writer.write(data[sent:])

    async def _read_loop(self) -> None:
        failure: BaseException
        try:
            while True:
                line = await self._reader.readuntil(b"\n")
                self._dispatch(line)
        except asyncio.IncompleteReadError as e:
            failure = _Broken("daemon closed the connection" if not e.partial else "daemon closed the connection mid-reply")
        except asyncio.LimitOverrunError:
            failure = ProtocolError(self.path, f"reply longer than {MAX_RESPONSE_BYTES} bytes")
        except (ConnectionError, OSError) as e:
            failure = _Broken(str(e) or type(e).__name__)
        except ProtocolError as e:
            failure = e
        except asyncio.CancelledError:
            self._shutdown(_Broken("event loop is shutting down"))
            raise
        except Exception as e:  # noqa: BLE001 - no waiter may be left hanging
            failure = ProtocolError(self.path, f"cannot handle a reply: {type(e).__name__}: {e}")
        self._shutdown(failure)

    def _dispatch(self, line: bytes) -> None:
        try:
            with _gc_paused(len(line) >= GC_PAUSE_MIN_BYTES):
                message = json.loads(line)
        except ValueError:
            raise ProtocolError(self.path, f"not JSON: {line[:200]!r}") from None
        if isinstance(message, list):
            # We never send batches, but a batch reply is still well-formed.
            for item in message:
                self._dispatch_one(item)
        else:
            self._dispatch_one(message)

    def _dispatch_one(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise ProtocolError(self.path, f"not a JSON-RPC 2.0 message: {message!r:.200}")
        if "id" not in message:
            params = message.get("params")
            if isinstance(params, dict):
                request_id = params.get("id")
                listener = self._listeners.get(request_id) if isinstance(request_id, int) else None
                if listener is not None:
                    try:
                        listener(params)
                    except Exception as e:  # noqa: BLE001 - a listener must not break the connection
                        asyncio.get_running_loop().call_exception_handler(
                            {"message": "microsandbox: notification listener failed", "exception": e}
                        )
            return
        request_id = message["id"]
        if request_id is None:
            # The daemon could not tell which request this answers (for
            # example a parse error): a bug on one side or the other, and
            # every call waiting here may be affected.
            raise ProtocolError(self.path, f"error without a request id: {message.get('error')!r:.200}")
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is None or future.done():
            # The caller was cancelled; the answer has nobody to go to.
            return
        self._listeners.pop(request_id, None)
        if "error" in message:
            future.set_exception(_WireError(message["error"]))
        elif "result" in message:
            future.set_result(message["result"])
        else:
            future.set_exception(ProtocolError(self.path, f"reply without result or error: {message!r:.200}"))

    def _shutdown(self, failure: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        self._listeners.clear()
        self._writer.close()
        self._reader_task = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    async def aclose(self) -> None:
        task = self._reader_task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._shutdown(_Broken("closed"))
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Every waiter sees the outcome; if none is left, nobody should be warned
    # that the exception went unretrieved.
    if not task.cancelled():
        task.exception()


class _WireError(Exception):
    """Internal: carries the JSON-RPC error object from the reader to the caller."""

    def __init__(self, error: Any) -> None:
        super().__init__(error)
        self.error = error


class _Client:
    """The connection of one event loop to one socket path, made on first use.

    A shared one (the module-level calls') reopens after `aclose`. An owned
    one (a `Client`'s) is bound to the event loop it first connects on and
    refuses calls once closed: its owner said it is done.
    """

    def __init__(self, path: str, *, owned: bool = False) -> None:
        self.path = path
        self._owned = owned
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    def _forget(self, conn: _Connection) -> None:
        # Dropping the connection also drops every reference to the event
        # loop, so the per-loop registry below can let the loop go.
        if self._conn is conn:
            self._conn = None

    async def _connection(self) -> _Connection:
        if self._owned:
            if self._closed:
                raise RuntimeError("this microsandbox.Client is closed")
            loop = asyncio.get_running_loop()
            if self._loop is None:
                self._loop = loop
            elif self._loop is not loop:
                raise RuntimeError("a microsandbox.Client is used on the event loop it was first used on only")
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting
        if task is None:
            # Calls started together (asyncio.gather) share one connect. It
            # runs as its own task so that a caller cancelled meanwhile does
            # not cancel it for the others.
            task = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(_retrieve)
            self._connecting = task
        return await asyncio.shield(task)

    async def _open(self) -> _Connection:
        try:
            self._conn = await _Connection.open(self.path, self._forget)
            return self._conn
        finally:
            self._connecting = None

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        subject: str | None,
        notify: Notify | None,
        fds: Sequence[int] = (),
    ) -> Any:
        retry = method in IDEMPOTENT_METHODS
        while True:
            conn = await self._connection()
            try:
                return await conn.call(method, params, notify, fds)
            except _WireError as e:
                raise rpc_error_from_wire(e.error, method, subject, self.path) from None
            except _Broken as e:
                if retry:
                    retry = False
                    continue
                raise ConnectionLostError(self.path, method, str(e), retried=method in IDEMPOTENT_METHODS) from None

    async def connect(self) -> None:
        """Opens the connection now rather than on the first call."""
        await self._connection()

    async def aclose(self) -> None:
        self._closed = self._owned
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Client]] = weakref.WeakKeyDictionary()


def _client(socket: str | None) -> _Client:
    loop = asyncio.get_running_loop()
    path = socket if socket is not None else default_socket_path()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = _clients[loop] = {}
    client = per_loop.get(path)
    if client is None:
        client = per_loop[path] = _Client(path)
    return client


async def call(
    method: str,
    params: dict[str, Any],
    *,
    subject: str | None = None,
    notify: Notify | None = None,
    socket: str | None = None,
    fds: Sequence[int] = (),
) -> Any:
    """Sends one request on this loop's connection to `socket` (by default
    the daemon's default socket, looked up at each call) and returns its
    `result`. `fds` go with the request line (its `fd` params name them by
    index); they stay the caller's.

    Raises the RpcError subclass named by `error.data.name`, or
    DaemonNotRunningError, ConnectionLostError, ProtocolError. `subject` is
    the reference the call is about, for error messages.
    """
    return await _client(socket).call(method, params, subject=subject, notify=notify, fds=fds)


async def aclose() -> None:
    """Closes this event loop's connections to the daemon (they reopen on the next call)."""
    per_loop = _clients.pop(asyncio.get_running_loop(), None)
    for client in (per_loop or {}).values():
        await client.aclose()
