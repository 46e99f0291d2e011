"""`Image.events()`: the daemon's events.subscribe as an async iterator.

A subscription belongs to a connection, and its notifications carry no
request id, so each stream has a connection of its own: it never mixes
with the calls pipelined on the shared one. The connection closes when the
iteration ends (`break`, an exception, leaving `async with`, `aclose()`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncGenerator, AsyncIterator

from ._client import MAX_RESPONSE_BYTES, rpc_error_from_wire
from ._exceptions import ConnectionLostError, DaemonNotRunningError, ProtocolError
from ._types import ImageEvent

__all__ = ["EventStream"]

_SUBSCRIBE_ID = 1


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(path, limit=MAX_RESPONSE_BYTES)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
        raise DaemonNotRunningError(path, e.strerror or type(e).__name__) from None
    except OSError as e:
        raise DaemonNotRunningError(path, e.strerror or str(e)) from None


async def _messages(path: str, reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise ConnectionLostError(path, "events.subscribe", "daemon closed the connection", retried=False) from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(path, f"reply longer than {MAX_RESPONSE_BYTES} bytes") from None
        except (ConnectionError, OSError) as e:
            raise ConnectionLostError(path, "events.subscribe", str(e) or type(e).__name__, retried=False) from None
        try:
            message = json.loads(line)
        except ValueError:
            raise ProtocolError(path, f"not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise ProtocolError(path, f"not a JSON-RPC 2.0 message: {message!r:.200}")
        yield message


def _event_from(path: str, message: dict[str, Any]) -> ImageEvent | None:
    method, params = message.get("method"), message.get("params")
    if method not in ("event", "events.lost"):
        return None
    if not isinstance(params, dict):
        raise ProtocolError(path, f"{method} notification without params: {message!r:.200}")
    try:
        return ImageEvent._from_wire(params) if method == "event" else ImageEvent._lost_from_wire(params)
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(path, f"malformed {method} notification: {type(e).__name__}: {e}") from None


async def _stream(path: str) -> AsyncGenerator[ImageEvent | None, None]:
    """Subscribes on a new connection to `path`, yields None once the
    daemon has answered, then each event. An async generator, so that the
    event loop closes its connection even when nobody iterates it to the
    end."""
    reader, writer = await _open(path)
    try:
        request = {"jsonrpc": "2.0", "id": _SUBSCRIBE_ID, "method": "events.subscribe", "params": {}}
        writer.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
        async for message in _messages(path, reader):
            if "id" in message:
                # The answer to the subscription: null, or why not.
                if "error" in message:
                    raise rpc_error_from_wire(message["error"], "events.subscribe", None, path)
                yield None
                continue
            event = _event_from(path, message)
            if event is not None:
                yield event
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class EventStream:
    """The events of one subscription, from `Image.events()`.

    Iterate it (`async for event in Image.events()`: it subscribes on the
    first step), or enter it first to be subscribed before doing what you
    want to hear about::

        async with Image.events() as events:
            await Image.pull("alpine")
            async for event in events:
                ...
    """

    def __init__(self, path: str) -> None:
        self.socket_path = path
        self._stream = _stream(path)
        self._subscribed = False

    async def _subscribe(self) -> None:
        if not self._subscribed:
            first = await self._stream.__anext__()
            assert first is None
            self._subscribed = True

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ImageEvent:
        await self._subscribe()
        event = await self._stream.__anext__()
        assert event is not None
        return event

    async def __aenter__(self) -> EventStream:
        await self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribes by closing the stream's connection."""
        await self._stream.aclose()

    def __repr__(self) -> str:
        return f"EventStream(socket={self.socket_path!r})"
