"""The SDK against the real msb-imaged on a temporary store.

Images are built in the tests with umoci (msbtest.imagekit) and loaded with
`Image.load`; every answer is compared with the truth read back from the
image's own bytes, never with constants.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fakedaemon import run

import microsandbox
from microsandbox import (
    Image,
    ImageConfigDetail,
    ImageDetail,
    ImageHandle,
    ImageLayerDetail,
    ImagePruneReport,
    Pin,
    PinKind,
    Rootfs,
)
from microsandbox.errors import (
    ConnectionLostError,
    DaemonNotRunningError,
    ImageInUseError,
    ImageNotFoundError,
    InvalidReferenceError,
    PinNotFoundError,
)

try:
    from msbtest.imagekit import REF_NAME_ANNOTATION, Config
except ImportError:  # pragma: no cover - the harness is part of the repository
    pytest.skip("tests/lib/msbtest is missing", allow_module_level=True)

APP = "example.com/test/app:v1"
OTHER = "example.com/test/other:v2"


def build_app(imagekit: Any, ref: str = APP) -> Any:
    return imagekit.image(
        ref,
        layers=[
            {"etc/hello": b"hello\n", "bin/tool": b"#!/bin/sh\necho tool\n"},
            {"etc/motd": b"second layer\n"},
        ],
        config=Config(
            env=["PATH=/usr/bin:/bin", "A=1"],
            cmd=["/bin/tool", "--flag"],
            entrypoint=["/bin/sh", "-c"],
            working_dir="/srv",
            user="1000:1000",
            labels={"org.example.role": "test"},
            stop_signal="SIGINT",
        ),
    )


def assert_handle_matches(handle: ImageHandle, truth: Any, reference: str) -> None:
    assert isinstance(handle, ImageHandle)
    assert handle.reference == reference and type(handle.reference) is str
    assert handle.manifest_digest == truth.manifest_digest
    assert handle.architecture == truth.architecture and handle.os == truth.os
    assert type(handle.layer_count) is int and handle.layer_count == truth.layer_count
    assert type(handle.size_bytes) is int and handle.size_bytes == truth.size_bytes
    assert type(handle.created_at) is float and type(handle.last_used_at) is float


def test_every_seed_call_and_property(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)

    async def main() -> None:
        before_ms = time.time() * 1000
        loaded = await Image.load(truth.layout.path)
        after_ms = time.time() * 1000
        assert [h.reference for h in loaded] == [APP]
        assert_handle_matches(loaded[0], truth, APP)

        handle = await Image.get(APP)
        assert_handle_matches(handle, truth, APP)
        assert handle.created_at is not None and handle.last_used_at is not None
        # Milliseconds since the epoch, taken while the load ran (1 s slack
        # for clock granularity).
        assert before_ms - 1000 <= handle.created_at <= after_ms + 1000
        assert handle.created_at <= handle.last_used_at <= after_ms + 1000

        images = await Image.list()
        assert isinstance(images, list) and images == [handle]

        detail = await Image.inspect(APP)
        assert isinstance(detail, ImageDetail)
        assert detail.handle == handle
        assert isinstance(detail.config, ImageConfigDetail)
        expected_config = truth.expected_config_detail()
        assert {
            name: getattr(detail.config, name) for name in expected_config
        } == expected_config
        assert detail.config.env == ["PATH=/usr/bin:/bin", "A=1"]
        assert detail.config.labels == {"org.example.role": "test"}
        assert all(isinstance(layer, ImageLayerDetail) for layer in detail.layers)
        got_layers = [
            {k: getattr(layer, k) for k in ("diff_id", "blob_digest", "media_type", "compressed_size_bytes", "position")}
            for layer in detail.layers
        ]
        assert got_layers == truth.expected_layers()
        for layer in detail.layers:
            # EROFS images are whole 4 KiB blocks (README, "The store").
            assert type(layer.erofs_size_bytes) is int and layer.erofs_size_bytes > 0
            assert layer.erofs_size_bytes % 4096 == 0

        assert await handle.inspect() == detail
        assert await Image.remove(APP) is None
        with pytest.raises(ImageNotFoundError):
            await Image.get(APP)

    run(main())


def test_any_spelling_finds_the_canonical_reference(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit, "docker.io/library/alpine:latest")

    async def main() -> None:
        await Image.load(truth.layout.path)
        for spelling in ("alpine", "alpine:latest", "library/alpine", "docker.io/library/alpine:latest"):
            assert (await Image.get(spelling)).reference == "docker.io/library/alpine:latest"
        by_digest = await Image.get("alpine@" + truth.manifest_digest)
        assert by_digest.manifest_digest == truth.manifest_digest

    run(main())


def test_load_with_tag(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)
    truth.layout.strip_ref_names()

    async def main() -> None:
        loaded = await Image.load(truth.layout.path, tag="example.com/tagged/app:t1")
        assert [h.reference for h in loaded] == ["example.com/tagged/app:t1"]
        assert loaded[0].manifest_digest == truth.manifest_digest

    run(main())


def test_not_found_errors_name_the_reference(sdk_daemon: Any) -> None:
    async def main() -> None:
        for call in (Image.get, Image.inspect, Image.remove):
            with pytest.raises(ImageNotFoundError) as info:
                await call("nope")  # type: ignore[operator]
            assert info.value.code == 1001 and info.value.error_name == "image-not-found"
            assert "docker.io/library/nope:latest" in str(info.value)

    run(main())


def test_invalid_reference(sdk_daemon: Any) -> None:
    async def main() -> None:
        for bad in ("Alpine", "a b", "alpine:", "", "alpine@sha256:123"):
            with pytest.raises(InvalidReferenceError) as info:
                await Image.get(bad)
            assert isinstance(info.value, microsandbox.InvalidParamsError)
            assert info.value.code == -32602

    run(main())


def test_pinned_image_in_use_then_force(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)

    async def main() -> None:
        await Image.load(truth.layout.path)
        rootfs = await Image.pin(PinKind.SANDBOX, "web", APP)
        assert isinstance(rootfs, Rootfs) and rootfs.manifest_digest == truth.manifest_digest
        assert [layer.diff_id for layer in rootfs.layers] == truth.diff_ids
        for path in [rootfs.fsmeta_path, rootfs.vmdk_path, *(layer.path for layer in rootfs.layers)]:
            assert path is not None and os.path.isabs(path) and os.path.isfile(path)
        await Image.pin("snapshot", "snap1", APP)

        pins = await Image.pins()
        assert all(isinstance(p, Pin) for p in pins)
        assert [(p.kind, p.name, p.reference, p.manifest_digest) for p in pins] == [
            (PinKind.SANDBOX, "web", APP, truth.manifest_digest),
            (PinKind.SNAPSHOT, "snap1", APP, truth.manifest_digest),
        ]
        assert all(type(p.created_at) is float for p in pins)

        with pytest.raises(ImageInUseError) as info:
            await Image.remove(APP)
        assert sorted(info.value.holders) == [("sandbox", "web"), ("snapshot", "snap1")]
        assert APP in str(info.value) and "web" in str(info.value)
        # Nothing changed.
        handle = await Image.get(APP)
        with pytest.raises(ImageInUseError):
            await handle.remove()

        await handle.remove(force=True)
        with pytest.raises(ImageNotFoundError):
            await Image.get(APP)
        # The pinned data stays on disk, and a prune keeps it.
        report = await Image.prune()
        assert report.manifests_removed == 0 and report.layers_removed == 0
        for path in [rootfs.fsmeta_path, rootfs.vmdk_path, *(layer.path for layer in rootfs.layers)]:
            assert path is not None and os.path.isfile(path)

        await Image.unpin("sandbox", "web")
        await Image.unpin(PinKind.SNAPSHOT, "snap1")
        with pytest.raises(PinNotFoundError):
            await Image.unpin("sandbox", "web")
        assert await Image.pins() == []
        report = await Image.prune()
        assert (report.manifests_removed, report.layers_removed, report.fsmeta_removed, report.vmdk_removed) == (
            1,
            truth.layer_count,
            1,
            1,
        )
        for path in [rootfs.fsmeta_path, rootfs.vmdk_path, *(layer.path for layer in rootfs.layers)]:
            assert path is not None and not os.path.exists(path)

    run(main())


def test_prune_report_counts(sdk_daemon: Any, imagekit: Any) -> None:
    layout = imagekit.layout("shared")
    base = layout.add_image(APP, layers=[{"etc/base": b"base\n"}])
    derived = layout.add_image(OTHER, layers=[{"etc/extra": b"extra\n"}], base=base)
    third = imagekit.image("example.com/test/kept:v3", layers=[{"kept": b"kept\n"}])
    shared_layers = set(base.diff_ids) | set(derived.diff_ids)

    async def main() -> None:
        loaded = await Image.load(layout.path)
        assert sorted(h.reference for h in loaded) == sorted([APP, OTHER])
        await Image.load(third.layout.path)
        await Image.pin("sandbox", "keeper", "example.com/test/kept:v3")

        report = await Image.prune()
        assert isinstance(report, ImagePruneReport)
        assert report.image_refs_removed == 2
        assert report.manifests_removed == 2
        assert report.layers_removed == len(shared_layers)
        assert report.fsmeta_removed == 2
        assert report.vmdk_removed == 2
        assert type(report.bytes_reclaimed) is int and report.bytes_reclaimed > 0
        assert [h.reference for h in await Image.list()] == ["example.com/test/kept:v3"]

        again = await Image.prune()
        assert (again.image_refs_removed, again.manifests_removed, again.layers_removed) == (0, 0, 0)
        assert (again.fsmeta_removed, again.vmdk_removed) == (0, 0)
        assert again.bytes_reclaimed in (0, None)

    run(main())


def test_list_is_newest_first(sdk_daemon: Any, imagekit: Any) -> None:
    first = build_app(imagekit, APP)
    second = imagekit.image(OTHER, layers=[{"x": b"x\n"}])

    async def main() -> None:
        await Image.load(first.layout.path)
        await asyncio.sleep(0.01)
        await Image.load(second.layout.path)
        images = await Image.list()
        assert [h.reference for h in images] == [OTHER, APP]
        assert images[0].created_at is not None and images[1].created_at is not None
        assert images[0].created_at >= images[1].created_at

    run(main())


def test_200_concurrent_calls(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)

    async def main() -> None:
        await Image.load(truth.layout.path)
        calls: list[Any] = []
        for i in range(200):
            if i % 4 == 0:
                calls.append(Image.get(APP))
            elif i % 4 == 1:
                calls.append(Image.list())
            elif i % 4 == 2:
                calls.append(Image.inspect(APP))
            else:
                calls.append(Image.get(f"example.com/absent/img{i}:latest"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 4 == 0:
                assert isinstance(result, ImageHandle) and result.manifest_digest == truth.manifest_digest
            elif i % 4 == 1:
                assert isinstance(result, list) and [h.reference for h in result] == [APP]
            elif i % 4 == 2:
                assert isinstance(result, ImageDetail) and result.handle.reference == APP
            else:
                assert isinstance(result, ImageNotFoundError)
                assert f"example.com/absent/img{i}:latest" in str(result)

    run(main())


def test_reads_are_not_held_up_by_a_load_in_flight(sdk_daemon: Any, imagekit: Any) -> None:
    """One connection carries both calls; the daemon answers out of order,
    and the SDK matches the answers by id."""
    big = imagekit.image("example.com/test/big:v1", layers=[{f"blob{i}": os.urandom(4 << 20) for i in range(8)}])

    async def main() -> None:
        load = asyncio.ensure_future(Image.load(big.layout.path))
        await asyncio.sleep(0.02)
        images = await Image.list()
        assert not load.done(), "the list waited for the load"
        assert isinstance(images, list)
        loaded = await load
        assert [h.reference for h in loaded] == ["example.com/test/big:v1"]

    run(main())


def many_tags_layout(imagekit: Any, count: int) -> tuple[Any, list[str]]:
    """One image under `count` references: index.json names the same manifest
    `count` times with different ref.name annotations."""
    truth = build_app(imagekit, "example.com/many/img:t0")
    index = truth.layout.index()
    entry = dict(index["manifests"][0])
    refs = [f"example.com/many/img:t{i}" for i in range(count)]
    index["manifests"] = [dict(entry, annotations={REF_NAME_ANNOTATION: ref}) for ref in refs]
    truth.layout.write_index(index)
    return truth, refs


def test_list_of_10000_images(sdk_daemon: Any, imagekit: Any) -> None:
    truth, refs = many_tags_layout(imagekit, 10_000)

    async def main() -> None:
        loaded = await Image.load(truth.layout.path)
        assert sorted(h.reference for h in loaded) == sorted(refs)
        images = await Image.list()
        assert len(images) == 10_000
        assert sorted(h.reference for h in images) == sorted(refs)
        assert {h.manifest_digest for h in images} == {truth.manifest_digest}
        times = [h.created_at for h in images]
        assert times == sorted(times, reverse=True)  # type: ignore[type-var]

    run(main())


def test_daemon_killed_mid_call_then_restarted(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)
    daemon = sdk_daemon

    async def main() -> None:
        await Image.load(truth.layout.path)
        assert (await Image.get(APP)).reference == APP

        # Freeze the daemon so that the calls are surely in flight, then kill it.
        os.kill(daemon.pid, signal.SIGSTOP)
        get = asyncio.ensure_future(Image.get(APP))
        remove = asyncio.ensure_future(Image.remove(APP))
        await asyncio.sleep(0.2)
        assert not get.done() and not remove.done()
        daemon.kill9()

        # get is idempotent: retried once, and nothing listens any more.
        with pytest.raises(DaemonNotRunningError) as info:
            await get
        assert str(daemon.socket_path) in str(info.value)
        # remove may or may not have happened: the SDK says so.
        with pytest.raises(ConnectionLostError) as lost:
            await remove
        assert lost.value.method == "image.remove"

        with pytest.raises(DaemonNotRunningError):
            await Image.list()

        daemon.start()
        # Same event loop, new connection; the store survived the crash.
        handle = await Image.get(APP)
        assert handle.manifest_digest == truth.manifest_digest

    run(main())


def test_restart_between_calls_is_invisible(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)

    async def main() -> None:
        await Image.load(truth.layout.path)
        await Image.get(APP)
        sdk_daemon.restart()
        # The old connection is dead; an idempotent call reconnects by itself.
        assert (await Image.get(APP)).reference == APP

    run(main())


def test_no_daemon_at_all(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(short_tmp / "nobody" / "imaged.sock")
    monkeypatch.setenv("MSB_IMAGED_SOCKET", path)

    async def main() -> None:
        for call in (Image.list(), Image.get("alpine"), Image.prune()):
            with pytest.raises(DaemonNotRunningError) as info:
                await call
            assert path in str(info.value)

    run(main())


def test_wire_format_is_what_the_daemon_accepts(sdk_daemon: Any) -> None:
    """rpc.discover through the SDK transport: the document the daemon serves
    is the proto the SDK was generated from."""
    from microsandbox import _client

    from fakedaemon import PROTO_PATH

    async def main() -> None:
        document = await _client.call("rpc.discover", {})
        assert document == json.loads(PROTO_PATH.read_text())

    run(main())


# Archives passed to the daemon open ----------------------------------------------


def test_load_archive_from_a_path_a_file_object_and_a_pipe(sdk_daemon: Any, imagekit: Any) -> None:
    truth = build_app(imagekit)
    archive = truth.layout.oci_archive(imagekit.path("app", ".tar"))

    async def main() -> None:
        loaded = await Image.load(archive)
        assert [h.reference for h in loaded] == [APP]
        assert_handle_matches(loaded[0], truth, APP)
        with open(archive, "rb") as f:
            loaded = await Image.load(f, tag="example.com/from/file:1")
        assert sorted(h.reference for h in loaded) == sorted([APP, "example.com/from/file:1"])
        # A pipe a compressor writes, read as it comes.
        r, w = os.pipe()
        proc = subprocess.Popen(["gzip", "-c", str(archive)], stdout=w)
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            loaded = await Image.load(pipe, image=APP, tag="example.com/from/pipe:1")
        assert proc.wait(10) == 0
        assert sorted(h.reference for h in loaded) == sorted([APP, "example.com/from/pipe:1"])
        assert all(h.manifest_digest == truth.manifest_digest for h in loaded)
        # Calls on the same connection go on as before.
        assert len(await Image.list()) == 3

    run(main())


def test_load_picks_one_image_and_reports_what_is_wrong(sdk_daemon: Any, imagekit: Any) -> None:
    app = build_app(imagekit)
    other = imagekit.image(OTHER, layers=[{"etc/other": b"other\n"}])
    layout = imagekit.layout("both")
    layout.copy_blobs_from(app)
    layout.copy_blobs_from(other)
    index = layout.index()
    index["manifests"] = [
        {"mediaType": i.manifest_media_type, "digest": i.manifest_digest, "size": i.manifest_size,
         "annotations": {REF_NAME_ANNOTATION: i.ref_name}}
        for i in (app, other)
    ]
    layout.write_index(index)
    archive = layout.oci_archive(imagekit.path("both", ".tar"))

    async def main() -> None:
        with pytest.raises(microsandbox.InvalidParamsError) as info:
            await Image.load(archive, tag="example.com/x:1")
        assert info.value.data["parameter"] == "tag"
        with pytest.raises(microsandbox.InvalidParamsError) as info:
            await Image.load(archive, image="example.com/none:1")
        assert info.value.data["parameter"] == "image"
        assert sorted(info.value.data["candidates"]) == sorted([APP, OTHER])
        loaded = await Image.load(archive, image=other.manifest_digest)
        assert [h.reference for h in loaded] == [OTHER]
        with pytest.raises(TypeError):
            await Image.load(io.BytesIO(b"not a file"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await Image.load(archive, image=1)  # type: ignore[arg-type]

    run(main())


def test_load_an_archive_the_daemon_cannot_see(hidden_dir_daemon: Any, imagekit: Any, monkeypatch: Any) -> None:
    # The daemon sees the archive's directory as an empty tmpfs (as under
    # PrivateTmp): Image.load passes the file open.
    daemon, hidden = hidden_dir_daemon
    monkeypatch.setenv("MSB_IMAGED_SOCKET", str(daemon.socket_path))
    truth = build_app(imagekit)
    archive = truth.layout.oci_archive(hidden / "app.tar")

    async def main() -> None:
        loaded = await Image.load(archive)
        assert [h.reference for h in loaded] == [APP]

    run(main())
