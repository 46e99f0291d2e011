"""Image.events() and Image.prune(unused_for=...) against the real
msb-imaged, and the wire format of both against a scripted daemon."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from fakedaemon import PROTO_PATH, FakeDaemon, ok

from microsandbox import Client, EventStream, Image, ImageEvent
from microsandbox.errors import ConnectionLostError, DaemonNotRunningError, ProtocolError


def test_events_of_the_real_daemon(sdk_daemon: Any, imagekit: Any) -> None:
    app = imagekit.image("example.com/sdk/events:1", [{"etc/a": b"a\n"}])

    async def main() -> list[ImageEvent]:
        got = []
        async with Image.events() as events:
            assert isinstance(events, EventStream)
            await Image.load(app.layout.path)
            await Image.pin("sandbox", "web", "example.com/sdk/events:1")
            await Image.unpin("sandbox", "web")
            await Image.remove("example.com/sdk/events:1")
            async for event in events:
                got.append(event)
                if len(got) == 4:
                    break
        return got

    got = asyncio.run(main())
    digest = app.manifest_digest
    assert [(e.type, e.reference, e.manifest_digest) for e in got] == [
        ("image.loaded", "example.com/sdk/events:1", digest),
        ("pin.added", "example.com/sdk/events:1", digest),
        ("pin.removed", "example.com/sdk/events:1", digest),
        ("image.removed", "example.com/sdk/events:1", digest),
    ]
    assert (got[1].kind, got[1].name) == ("sandbox", "web")
    assert got[0].kind is None and got[0].count is None
    assert all(isinstance(e.at, float) and abs(e.at / 1000 - time.time()) < 60 for e in got)


def test_break_closes_the_stream(sdk_daemon: Any, imagekit: Any) -> None:
    """A plain `async for` subscribes at its first step; leaving the loop
    closes the connection (no unclosed transport: warnings are errors)."""
    images = [imagekit.image(f"example.com/sdk/brk{i}:1", [{"etc/b": str(i).encode()}]) for i in range(10)]

    async def main() -> ImageEvent:
        stop = asyncio.Event()

        async def feed() -> None:
            # Until the stream hears one: its subscription is not seen here.
            for img in images:
                if stop.is_set():
                    return
                await Image.load(img.layout.path)
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(feed())
        async for event in Image.events():
            first = event
            break
        stop.set()
        await feeder
        return first

    event = asyncio.run(main())
    assert event.type == "image.loaded"
    assert event.reference is not None and event.reference.startswith("example.com/sdk/brk")


def test_client_events_use_its_socket(daemon_factory: Any, imagekit: Any, env_without_socket: Any) -> None:
    d = daemon_factory("other")
    app = imagekit.image("example.com/sdk/other:1", [{"etc/o": b"o\n"}])

    async def main() -> ImageEvent:
        async with Client(socket=d.socket_path) as client:
            async with client.images.events() as events:
                await client.images.load(app.layout.path)
                async for event in events:
                    return event
        raise AssertionError("no event")

    assert asyncio.run(main()).reference == "example.com/sdk/other:1"


def test_prune_unused_for(sdk_daemon: Any, imagekit: Any) -> None:
    old = imagekit.image("example.com/sdk/old:1", [{"etc/old": b"old\n"}])
    new = imagekit.image("example.com/sdk/new:1", [{"etc/new": b"new\n"}])

    async def main() -> None:
        await Image.load(old.layout.path)
        await asyncio.sleep(0.4)
        await Image.load(new.layout.path)
        report = await Image.prune(unused_for=timedelta(hours=1))
        assert report.image_refs_removed == 0
        report = await Image.prune(unused_for=timedelta(milliseconds=200))
        assert (report.image_refs_removed, report.manifests_removed) == (1, 1)
        assert [h.reference for h in await Image.list()] == ["example.com/sdk/new:1"]
        report = await Image.prune()
        assert report.image_refs_removed == 1

    asyncio.run(main())


def test_prune_unused_for_is_checked_here() -> None:
    with pytest.raises(TypeError):
        asyncio.run(Image.prune(unused_for=3600))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        asyncio.run(Image.prune(unused_for=timedelta(seconds=-1)))


# The wire, against a scripted daemon ---------------------------------------


def test_wire_prune_param(socket_path: str) -> None:
    async def handler(d: FakeDaemon, request: dict[str, Any], writer: Any) -> Any:
        return ok(request, {"image_refs_removed": 0, "manifests_removed": 0, "layers_removed": 0,
                            "fsmeta_removed": 0, "vmdk_removed": 0, "bytes_reclaimed": 0})

    async def main() -> FakeDaemon:
        async with FakeDaemon(socket_path, handler) as d:
            await Image.prune(unused_for=timedelta(hours=24, microseconds=999))
            await Image.prune()
            return d

    d = asyncio.run(main())
    assert [r["params"] for r in d.requests] == [{"unused_for_ms": 86_400_000}, {}]
    doc = json.loads(PROTO_PATH.read_text())
    prune = next(m for m in doc["methods"] if m["name"] == "image.prune")
    assert [p["name"] for p in prune["params"]] == ["unused_for_ms"]


def test_wire_events_and_lost(socket_path: str) -> None:
    digest = "sha256:" + "ab" * 32

    async def handler(d: FakeDaemon, request: dict[str, Any], writer: Any) -> Any:
        assert request["method"] == "events.subscribe" and request["params"] == {}
        writer.write(json.dumps(ok(request, None)).encode() + b"\n")
        for line in (
            {"jsonrpc": "2.0", "method": "event", "params": {"type": "image.pulled", "reference": "a:1",
                                                             "manifest_digest": digest, "at": 5}},
            # Not ours: skipped.
            {"jsonrpc": "2.0", "method": "image.pull.progress", "params": {"id": 9, "event": "resolving"}},
            {"jsonrpc": "2.0", "method": "events.lost", "params": {"count": 37, "at": 6}},
            {"jsonrpc": "2.0", "method": "event", "params": {"type": "pin.removed", "reference": "a:1",
                                                             "manifest_digest": digest, "at": 7,
                                                             "kind": "snapshot", "name": "s"}},
        ):
            writer.write(json.dumps(line).encode() + b"\n")
        writer.close()
        return None

    async def main() -> tuple[list[ImageEvent], BaseException]:
        got: list[ImageEvent] = []
        async with FakeDaemon(socket_path, handler):
            try:
                async for event in Image.events():
                    got.append(event)
            except ConnectionLostError as e:
                return got, e
        raise AssertionError("the stream did not end")

    got, error = asyncio.run(main())
    assert got == [
        ImageEvent(type="image.pulled", reference="a:1", manifest_digest=digest, at=5.0),
        ImageEvent(type="events.lost", reference=None, manifest_digest=None, at=6.0, count=37),
        ImageEvent(type="pin.removed", reference="a:1", manifest_digest=digest, at=7.0, kind="snapshot", name="s"),
    ]
    assert "closed the connection" in str(error)


def test_wire_malformed_event(socket_path: str) -> None:
    async def handler(d: FakeDaemon, request: dict[str, Any], writer: Any) -> Any:
        writer.write(json.dumps(ok(request, None)).encode() + b"\n")
        writer.write(b'{"jsonrpc":"2.0","method":"event","params":{"reference":"a:1"}}\n')
        return None

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            async for _ in Image.events():
                pass

    with pytest.raises(ProtocolError):
        asyncio.run(main())


def test_no_daemon(socket_path: str) -> None:
    async def main() -> None:
        async for _ in Image.events():
            pass

    with pytest.raises(DaemonNotRunningError):
        asyncio.run(main())


def test_event_type_has_the_proto_fields() -> None:
    schema = json.loads(PROTO_PATH.read_text())["components"]["schemas"]["Event"]
    fields = [f for f in ImageEvent.__dataclass_fields__ if f != "count"]
    assert fields == list(schema["properties"])
    assert set(schema["properties"]["type"]["enum"]) == {
        "image.loaded", "image.pulled", "image.removed", "image.pruned", "image.evicted", "pin.added", "pin.removed"}
    lost = json.loads(PROTO_PATH.read_text())["components"]["schemas"]["EventsLost"]
    assert "count" in lost["properties"]
