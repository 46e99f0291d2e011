"""A scriptable stand-in for msb-imaged, to pin down the SDK's wire format."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable

PROTO_PATH = Path(__file__).resolve().parent.parent.parent / "proto" / "openrpc.json"


Handler = Callable[["FakeDaemon", dict[str, Any], asyncio.StreamWriter], Awaitable[Any]]


class FakeDaemon:
    """A Unix socket server that records every request line the SDK sends and
    answers through `handler(daemon, request, writer)`.

    The handler returns the reply object to send (a dict), or None to send
    nothing (it may write to `writer` itself, e.g. notifications, or close it).
    Requests are handled concurrently, so a handler can hold one back to
    answer out of order.
    """

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.lines: list[bytes] = []
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeDaemon:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self.lines.append(line)
                request = json.loads(line)
                self.requests.append(request)
                task = asyncio.get_running_loop().create_task(self._answer(request, writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        reply = await self.handler(self, request, writer)
        if reply is not None and not writer.is_closing():
            writer.write(json.dumps(reply).encode() + b"\n")


def ok(request: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def err(request: dict[str, Any], code: int, message: str, **data: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": code, "message": message, "data": data}}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
