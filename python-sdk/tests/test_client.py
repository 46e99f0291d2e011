"""`Client`: the calls of `Image` on a connection of its own, to a socket of
the caller's choice, against real daemons on temporary stores."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

import microsandbox
from microsandbox import Client, DaemonNotRunningError, Image, ImageHandle, Images, ImageNotFoundError, PinKind

try:
    from msbtest.imagekit import Config
except ImportError:  # pragma: no cover - the harness is part of the repository
    pytest.skip("tests/lib/msbtest is missing", allow_module_level=True)

APP = "example.com/test/app:v1"
CACHE_CALLS = ["get", "list", "inspect", "remove", "prune", "pull", "pull_with_progress", "load", "pin", "unpin", "pins",
               "events"]


@pytest.fixture
def nowhere(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default socket pointed at a path where nothing listens, so that a
    call that does not go to the client's own socket fails."""
    path = str(short_tmp / "nobody.sock")
    monkeypatch.setenv("MSB_IMAGED_SOCKET", path)
    return path


def app_image(imagekit: Any, ref: str = APP) -> Any:
    return imagekit.image(ref, layers=[{"etc/hello": b"hello\n"}, {"etc/motd": b"motd\n"}],
                          config=Config(env=["A=1"], cmd=["/bin/sh"]))


def test_same_calls_as_image() -> None:
    """client.images has every cache call of Image, with the same parameters."""
    for name in CACHE_CALLS:
        static = getattr(Image, name)
        method = getattr(Images, name)
        assert list(inspect.signature(method).parameters)[1:] == list(inspect.signature(static).parameters), name
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(static), name
    public = {n for n in vars(Images) if not n.startswith("_")}
    assert public == set(CACHE_CALLS)


def test_client_uses_its_own_socket(daemon: Any, imagekit: Any, nowhere: str) -> None:
    img = app_image(imagekit)

    async def main() -> None:
        async with Client(socket=daemon.socket_path) as client:
            assert client.socket_path == str(daemon.socket_path)
            loaded = await client.images.load(img.layout.path)
            assert [h.reference for h in loaded] == [APP]
            handle = await client.images.get("example.com/test/app:v1")
            assert handle.manifest_digest == img.manifest_digest
            assert [h.reference for h in await client.images.list()] == [APP]
            detail = await client.images.inspect(APP)
            assert [layer.diff_id for layer in detail.layers] == img.diff_ids
            # A handle asks the daemon it came from, not the default one.
            assert (await handle.inspect()) == detail
            assert (await detail.handle.inspect()) == detail
            rootfs = await client.images.pin(PinKind.SANDBOX, "web", APP)
            assert rootfs.manifest_digest == img.manifest_digest
            assert [(p.kind, p.name) for p in await client.images.pins()] == [(PinKind.SANDBOX, "web")]
            await client.images.unpin("sandbox", "web")
            async with client.images.pull_with_progress(APP, policy="never") as pull:
                events = [event async for event in pull.progress]
                pulled = await pull.result()
            # A cache hit counts as a use: last_used_at moves, nothing else.
            assert events and pulled.manifest_digest == handle.manifest_digest
            assert (await client.images.pull(APP, policy="never")).reference == APP
            assert (await pulled.inspect()).handle.reference == APP
            await handle.remove()
            with pytest.raises(ImageNotFoundError):
                await client.images.get(APP)
            await client.images.load(img.layout.path)
            report = await client.images.prune()
            assert report.manifests_removed == 1 and report.layers_removed == img.layer_count
        # The module-level calls still go to the default socket.
        with pytest.raises(DaemonNotRunningError) as e:
            await Image.list()
        assert e.value.socket_path == nowhere
        await microsandbox.aclose()

    asyncio.run(main())


def test_two_clients_two_daemons(daemon_factory: Any, imagekit: Any, nowhere: str) -> None:
    first, second = daemon_factory("one"), daemon_factory("two")
    img = app_image(imagekit)

    async def main() -> None:
        async with Client(first.socket_path) as a, Client(second.socket_path) as b:
            await a.images.load(img.layout.path)
            await b.images.load(img.layout.path, tag="example.com/other:1")
            assert [h.reference for h in await a.images.list()] == [APP]
            assert "example.com/other:1" in [h.reference for h in await b.images.list()]
            with pytest.raises(ImageNotFoundError):
                await a.images.get("example.com/other:1")
            # Equal values, whatever client they came from.
            ha, hb = await a.images.get(APP), await a.images.get(APP)
            assert ha == hb and hash(ha) == hash(hb) and "socket" not in repr(ha)
            # b's handle removes from b only.
            await (await b.images.get(APP)).remove()
            assert [h.reference for h in await b.images.list()] == ["example.com/other:1"]
            assert [h.reference for h in await a.images.list()] == [APP]

    asyncio.run(main())


def test_client_default_socket(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without socket, the default is looked up once, when the client is made."""
    monkeypatch.setenv("MSB_IMAGED_SOCKET", str(daemon.socket_path))
    client = Client()
    assert client.socket_path == str(daemon.socket_path)
    monkeypatch.setenv("MSB_IMAGED_SOCKET", "/nonexistent/imaged.sock")

    async def main() -> None:
        async with client:
            assert await client.images.list() == []

    asyncio.run(main())
    assert repr(client) == f"Client(socket={str(daemon.socket_path)!r})"


def test_client_without_daemon_fails_on_entry(short_tmp: Path) -> None:
    path = str(short_tmp / "none.sock")

    async def main() -> None:
        with pytest.raises(DaemonNotRunningError) as e:
            async with Client(socket=path):
                pytest.fail("entered without a daemon")
        assert e.value.socket_path == path

    asyncio.run(main())


def test_closed_client_refuses_calls(daemon: Any) -> None:
    async def main() -> None:
        async with Client(socket=daemon.socket_path) as client:
            handle_list = await client.images.list()
        assert handle_list == []
        with pytest.raises(RuntimeError, match="closed"):
            await client.images.list()
        # Closing twice is fine.
        await client.aclose()

    asyncio.run(main())


def test_client_without_async_with(daemon: Any) -> None:
    """The first call connects; aclose() closes (no transport is left open:
    warnings are errors in these tests)."""
    client = Client(socket=daemon.socket_path)

    async def main() -> None:
        assert await asyncio.gather(client.images.list(), client.images.pins()) == [[], []]
        await client.aclose()

    asyncio.run(main())


def test_client_is_bound_to_its_event_loop(daemon: Any) -> None:
    client = Client(socket=daemon.socket_path)

    async def use() -> None:
        await client.images.list()

    async def use_and_close() -> None:
        await client.images.list()
        await client.aclose()

    asyncio.run(use())
    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(use_and_close())


def test_handles_of_the_default_socket_use_it(sdk_daemon: Any, imagekit: Any) -> None:
    """Image's handles keep following $MSB_IMAGED_SOCKET, as before."""
    img = app_image(imagekit)

    async def main() -> None:
        [handle] = await Image.load(img.layout.path)
        assert isinstance(handle, ImageHandle)
        assert (await handle.inspect()).handle == handle
        await handle.remove()
        assert await Image.list() == []
        await microsandbox.aclose()

    asyncio.run(main())
