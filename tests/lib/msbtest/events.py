"""events.subscribe from the tests' side, and the disk budget's config (stdlib only).

``subscribe(daemon) -> RpcClient``
    a new connection that has subscribed (the answer, null, checked).
``read_events(client, n=None, quiet=0.5, timeout=30) -> list[dict]``
    the params of the notifications that arrive: each ``event``, and each
    ``events.lost`` as ``{"type": "events.lost", "count", "at"}``.  Stops
    after ``n`` of them, or (``n=None``) once nothing came for ``quiet``
    seconds; fails when ``n`` are not there within ``timeout``.
``summary(events) -> list[tuple]``
    ``(type, reference)`` of each, to compare sequences.
``budget_config(path, max_bytes, low_bytes=None, **extra) -> Path``
    writes an imaged.json with that ``"store"`` section (and ``extra``
    top-level members) and returns the path, for ``--config``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .rpc import RpcClient

__all__ = ["subscribe", "read_events", "summary", "budget_config"]


def subscribe(daemon, timeout: float = 30.0) -> RpcClient:
    c = daemon.client(timeout=timeout)
    assert c.call("events.subscribe") is None
    return c


def _as_event(msg) -> dict | None:
    if not isinstance(msg, dict) or "id" in msg:
        return None
    if msg.get("method") == "event":
        return msg["params"]
    if msg.get("method") == "events.lost":
        return {"type": "events.lost", **msg["params"]}
    return None


def read_events(client: RpcClient, n: int | None = None, quiet: float = 0.5, timeout: float = 30.0) -> list[dict]:
    out: list[dict] = []
    # Those that came while a call on this connection waited for its answer.
    while client.notifications and (n is None or len(out) < n):
        ev = _as_event(client.notifications.pop(0))
        if ev is not None:
            out.append(ev)
    deadline = time.monotonic() + timeout
    while n is None or len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{len(out)} events within {timeout}s, wanted {n}: {summary(out)[-10:]}")
        try:
            msg = client.recv(timeout=min(left, quiet) if n is None else left)
        except TimeoutError:
            if n is None:
                return out
            continue
        ev = _as_event(msg)
        if ev is not None:
            out.append(ev)
    return out


def summary(events: list[dict]) -> list[tuple]:
    return [(e["type"], e.get("reference")) for e in events]


def budget_config(path, max_bytes: int, low_bytes: int | None = None, **extra) -> Path:
    store = {"max_bytes": max_bytes}
    if low_bytes is not None:
        store["low_bytes"] = low_bytes
    path = Path(path)
    path.write_text(json.dumps({"store": store, **extra}))
    return path
