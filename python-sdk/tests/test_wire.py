"""The SDK against a scripted server: the exact bytes it sends, how it reads
answers, errors, notifications, pipelining and broken connections.

The real daemon is exercised by test_images.py; here the server is a
FakeDaemon so that each request line can be compared field for field with
proto/openrpc.json, and so that failures the daemon should never produce
(garbage, hang-ups mid-call) can be staged.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import os
import pickle
import socket
from typing import Any

import pytest
from fakedaemon import PROTO_PATH, FakeDaemon, err, ok, run

import microsandbox
from microsandbox import (
    BindRootfs,
    DiskRootfs,
    Image,
    ImageConfigDetail,
    ImageDetail,
    ImageHandle,
    ImageLayerDetail,
    ImagePruneReport,
    OciRootfs,
    Pin,
    PinKind,
    Rootfs,
    RootfsLayer,
)
from microsandbox import _client
from microsandbox.errors import (
    ERRORS_BY_NAME,
    ConnectionLostError,
    DaemonNotRunningError,
    ImageInUseError,
    ImageNotFoundError,
    InvalidParamsError,
    InvalidReferenceError,
    MicrosandboxError,
    PinHolder,
    ProtocolError,
    RpcError,
)

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


def handle_json(reference: str = "docker.io/library/alpine:latest", **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "reference": reference,
        "manifest_digest": DIGEST_A,
        "architecture": "amd64",
        "os": "linux",
        "layer_count": 2,
        "size_bytes": 3_000_000,
        "created_at": 1_700_000_000_000,
        "last_used_at": 1_700_000_500_000.5,
    }
    obj.update(over)
    return obj


def detail_json(config: bool = True) -> dict[str, Any]:
    return {
        "handle": handle_json(),
        "config": {
            "digest": DIGEST_B,
            "env": ["PATH=/usr/bin:/bin"],
            "cmd": ["/bin/sh"],
            "entrypoint": None,
            "working_dir": "/",
            "user": None,
            "labels": {"org.opencontainers.image.title": "t"},
            "stop_signal": "SIGTERM",
        }
        if config
        else None,
        "layers": [
            {
                "diff_id": DIGEST_C,
                "blob_digest": DIGEST_B,
                "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
                "compressed_size_bytes": 100,
                "erofs_size_bytes": 8192,
                "position": 0,
            },
            {
                "diff_id": DIGEST_A,
                "blob_digest": DIGEST_C,
                "media_type": None,
                "compressed_size_bytes": None,
                "erofs_size_bytes": None,
                "position": 1,
            },
        ],
    }


def prune_json() -> dict[str, Any]:
    return {
        "image_refs_removed": 3,
        "manifests_removed": 2,
        "layers_removed": 5,
        "fsmeta_removed": 2,
        "vmdk_removed": 2,
        "bytes_reclaimed": 123456,
    }


def rootfs_json() -> dict[str, Any]:
    return {
        "manifest_digest": DIGEST_A,
        "fsmeta_path": "/store/fsmeta/sha256/" + "a" * 64 + ".erofs",
        "vmdk_path": "/store/vmdk/sha256/" + "a" * 64 + ".vmdk",
        "layers": [{"diff_id": DIGEST_C, "path": "/store/layers/sha256/" + "c" * 64 + ".erofs", "erofs_size_bytes": 4096}],
    }


HANDLE_COLUMNS = ["reference", "manifest_digest", "architecture", "os", "layer_count", "size_bytes", "created_at", "last_used_at"]


def list_json(request: dict[str, Any], handles: list[dict[str, Any]], columns: list[str] = HANDLE_COLUMNS) -> Any:
    """image.list's result: objects, or {columns, rows} when the request asks for rows (as the SDK does)."""
    if request.get("params", {}).get("rows"):
        return {"columns": columns, "rows": [[h.get(c, c.upper()) for c in columns] for h in handles]}
    return handles


async def answer_by_method(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    method = request["method"]
    results: dict[str, Any] = {
        "image.get": handle_json(request.get("params", {}).get("reference", "")),
        "image.list": list_json(
            request, [handle_json("docker.io/library/b:1"), handle_json("docker.io/library/a:1", size_bytes=None, created_at=None)]
        ),
        "image.inspect": detail_json(),
        "image.remove": None,
        "image.prune": prune_json(),
        "image.pull": handle_json(),
        "image.load": [handle_json("docker.io/library/loaded:1")],
        "pin.add": rootfs_json(),
        "pin.remove": None,
        "pin.list": [{"kind": "sandbox", "name": "web", "reference": "docker.io/library/alpine:latest", "manifest_digest": DIGEST_A, "created_at": 1_700_000_000_000}],
    }
    return ok(request, results[method])


def sent(daemon: FakeDaemon) -> list[tuple[str, Any]]:
    return [(r["method"], r.get("params")) for r in daemon.requests]


# -- request format --------------------------------------------------------


def test_request_line_is_one_compact_jsonrpc_object(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            await Image.get("alpine")
            line = daemon.lines[0]
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            request = json.loads(line)
            assert request == {"jsonrpc": "2.0", "id": request["id"], "method": "image.get", "params": {"reference": "alpine"}}
            assert isinstance(request["id"], int)

    run(main())


def test_seed_calls_send_the_proto_params(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            await Image.get("alpine:3.19")
            await Image.list()
            await Image.inspect("docker.io/library/alpine@" + DIGEST_A)
            await Image.remove("alpine")
            await Image.remove("busybox", force=True)
            await Image.prune()
            assert sent(daemon) == [
                ("image.get", {"reference": "alpine:3.19"}),
                ("image.list", {"rows": True}),
                ("image.inspect", {"reference": "docker.io/library/alpine@" + DIGEST_A}),
                ("image.remove", {"reference": "alpine", "force": False}),
                ("image.remove", {"reference": "busybox", "force": True}),
                ("image.prune", {}),
            ]
            ids = [r["id"] for r in daemon.requests]
            assert len(set(ids)) == len(ids)

    run(main())


def test_params_match_the_proto_method_table(socket_path: str) -> None:
    """Every params object the SDK sends names only params the proto declares
    for that method, and every required one."""
    document = json.loads(PROTO_PATH.read_text())
    declared = {m["name"]: {p["name"]: p.get("required", False) for p in m["params"]} for m in document["methods"]}

    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            await Image.get("a")
            await Image.list()
            await Image.inspect("a")
            await Image.remove("a", force=True)
            await Image.prune()
            await Image.pull("a", policy="always", platform="linux/arm64")
            await Image.load("/tmp/x.tar", tag="x:1")
            await Image.pin("sandbox", "web", "a")
            await Image.unpin(PinKind.SNAPSHOT, "s1")
            await Image.pins()
            for request in daemon.requests:
                params = declared[request["method"]]
                assert set(request["params"]) <= set(params), request
                assert {p for p, required in params.items() if required} <= set(request["params"]), request

    run(main())


def test_handle_methods_use_the_handle_reference(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            handle = await Image.get("docker.io/library/alpine:latest")
            await handle.inspect()
            await handle.remove()
            await handle.remove(force=True)
            assert sent(daemon)[1:] == [
                ("image.inspect", {"reference": handle.reference}),
                ("image.remove", {"reference": handle.reference, "force": False}),
                ("image.remove", {"reference": handle.reference, "force": True}),
            ]

    run(main())


def test_pull_load_and_pin_requests(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            await Image.pull("alpine")
            await Image.pull("alpine", policy="never", platform="linux/amd64")
            os.chdir("/tmp")
            await Image.load("archive.tar")
            await Image.load("/abs/layout", tag="mine:1")
            await Image.pin(PinKind.SANDBOX, "web", "alpine")
            await Image.unpin("snapshot", "s1")
            await Image.pins()
            assert sent(daemon) == [
                ("image.pull", {"reference": "alpine", "policy": "if-missing"}),
                ("image.pull", {"reference": "alpine", "policy": "never", "platform": "linux/amd64"}),
                ("image.load", {"path": "/tmp/archive.tar"}),
                ("image.load", {"path": "/abs/layout", "tag": "mine:1"}),
                ("pin.add", {"kind": "sandbox", "name": "web", "reference": "alpine"}),
                ("pin.remove", {"kind": "snapshot", "name": "s1"}),
                ("pin.list", {}),
            ]

    run(main())


def test_arguments_are_checked_before_anything_is_sent(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            with pytest.raises(TypeError):
                await Image.get(123)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await Image.pull("alpine", policy="sometimes")  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await Image.pin("vm", "x", "alpine")
            assert daemon.requests == []

    run(main())


# -- result types ----------------------------------------------------------


def test_results_are_typed_like_the_reference(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method):
            handle = await Image.get("docker.io/library/alpine:latest")
            assert isinstance(handle, ImageHandle)
            assert handle.reference == "docker.io/library/alpine:latest"
            assert handle.manifest_digest == DIGEST_A
            assert (handle.architecture, handle.os) == ("amd64", "linux")
            assert type(handle.layer_count) is int and handle.layer_count == 2
            assert type(handle.size_bytes) is int
            # Integer milliseconds on the wire become floats.
            assert type(handle.created_at) is float and handle.created_at == 1_700_000_000_000.0
            assert type(handle.last_used_at) is float and handle.last_used_at == 1_700_000_500_000.5

            images = await Image.list()
            assert [i.reference for i in images] == ["docker.io/library/b:1", "docker.io/library/a:1"]
            assert images[1].size_bytes is None and images[1].created_at is None

            detail = await Image.inspect("alpine")
            assert isinstance(detail, ImageDetail) and isinstance(detail.handle, ImageHandle)
            assert isinstance(detail.config, ImageConfigDetail)
            assert detail.config.env == ["PATH=/usr/bin:/bin"] and detail.config.cmd == ["/bin/sh"]
            assert detail.config.entrypoint is None and detail.config.labels == {"org.opencontainers.image.title": "t"}
            assert all(isinstance(layer, ImageLayerDetail) for layer in detail.layers)
            assert [layer.position for layer in detail.layers] == [0, 1]
            assert detail.layers[1].media_type is None and detail.layers[1].erofs_size_bytes is None

            assert await Image.remove("alpine") is None
            report = await Image.prune()
            assert report == ImagePruneReport(3, 2, 5, 2, 2, 123456)

            rootfs = await Image.pin("sandbox", "web", "alpine")
            assert isinstance(rootfs, Rootfs) and rootfs.layers == [RootfsLayer(DIGEST_C, rootfs.layers[0].path, 4096)]
            pins = await Image.pins()
            assert pins == [Pin(PinKind.SANDBOX, "web", "docker.io/library/alpine:latest", DIGEST_A, 1_700_000_000_000.0)]
            loaded = await Image.load("/x.tar")
            assert [h.reference for h in loaded] == ["docker.io/library/loaded:1"]

    run(main())


def test_config_may_be_null(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return ok(request, detail_json(config=False))

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            assert (await Image.inspect("alpine")).config is None

    run(main())


def test_values_are_frozen_with_a_readable_repr() -> None:
    handle = ImageHandle._from_wire(handle_json())
    with pytest.raises(AttributeError):
        handle.reference = "x"  # type: ignore[misc]
    text = repr(handle)
    assert text.startswith("ImageHandle(reference='docker.io/library/alpine:latest', manifest_digest='sha256:")
    assert "layer_count=2" in text


def test_list_rows_are_mapped_by_column_name(socket_path: str) -> None:
    """A daemon may reorder image.list's columns or add some: the SDK maps them by name."""
    columns = ["future", *reversed(HANDLE_COLUMNS)]
    handles = [handle_json("docker.io/library/b:1"), handle_json("docker.io/library/a:1", size_bytes=None, last_used_at=7)]

    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return ok(request, list_json(request, handles, columns))

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            images = await Image.list()
            assert [ImageHandle._from_wire(h) for h in handles] == images
            assert images[1].size_bytes is None and images[1].last_used_at == 7.0
            assert type(images[1].last_used_at) is float

    run(main())


@pytest.mark.parametrize(
    "result",
    [
        [handle_json()],  # objects, though rows were asked for
        {"columns": HANDLE_COLUMNS[1:], "rows": [[None] * 7]},  # no reference column
        {"columns": HANDLE_COLUMNS, "rows": [[None] * 7]},  # a row too short
        {"columns": HANDLE_COLUMNS, "rows": [None]},  # a row that is not an array
        {"columns": HANDLE_COLUMNS, "rows": {}},
        {"columns": HANDLE_COLUMNS, "rows": [["r", None, None, None, 1, None, "soon", None]]},  # a time that is not a number
    ],
)
def test_malformed_list_rows_are_a_protocol_error(socket_path: str, result: Any) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return ok(request, result)

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ProtocolError, match="malformed image.list result"):
                await Image.list()

    run(main())


def test_malformed_result_is_a_protocol_error(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return ok(request, {"reference": "x"})

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ProtocolError, match="malformed image.get result"):
                await Image.get("x")

    run(main())


def test_rootfs_sources_are_plain_values() -> None:
    assert Image.oci("python:3.12") == OciRootfs("python:3.12")
    assert Image.bind("/srv/root") == BindRootfs("/srv/root")
    assert Image.disk("/img/root.qcow2", fstype="ext4") == DiskRootfs("/img/root.qcow2", "ext4")
    assert Image.disk("/img/root.raw").fstype is None
    assert Image.bind("relative").path == os.path.abspath("relative")
    assert {Image.oci("a").kind, Image.bind("/b").kind, Image.disk("/c").kind} == {"oci", "bind", "disk"}
    with pytest.raises(TypeError):
        Image()


# -- errors ----------------------------------------------------------------


def test_every_proto_error_name_raises_its_class(socket_path: str) -> None:
    document = json.loads(PROTO_PATH.read_text())
    kinds = list(document["components"]["errors"].values())

    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        kind = kinds[len(daemon.requests) - 1]
        return err(request, kind["code"], kind["message"], name=kind["data"]["name"])

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            for kind in kinds:
                with pytest.raises(RpcError) as info:
                    await Image.get("docker.io/library/alpine:latest")
                assert type(info.value) is ERRORS_BY_NAME[kind["data"]["name"]]
                assert info.value.code == kind["code"]
                assert info.value.error_name == kind["data"]["name"]
                assert isinstance(info.value, MicrosandboxError)

    run(main())


def test_image_not_found_names_the_reference(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return err(request, 1001, "image not found", name="image-not-found", reference="docker.io/library/nope:latest")

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ImageNotFoundError) as info:
                await Image.get("nope")
            assert str(info.value) == "image not found: docker.io/library/nope:latest"
            assert info.value.reference == "docker.io/library/nope:latest"
            assert info.value.method == "image.get"

    run(main())


def test_error_without_reference_in_data_uses_the_call_subject(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return err(request, 1001, "image not found", name="image-not-found")

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ImageNotFoundError, match=r"^image not found: nope:1$"):
                await Image.inspect("nope:1")

    run(main())


def test_image_in_use_carries_holders(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return err(
            request,
            1002,
            "image in use",
            name="image-in-use",
            reference="docker.io/library/alpine:latest",
            holders=[{"kind": "sandbox", "name": "web"}, {"kind": "snapshot", "name": "s1"}],
        )

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ImageInUseError) as info:
                await Image.remove("alpine")
            assert info.value.holders == [PinHolder("sandbox", "web"), PinHolder("snapshot", "s1")]
            assert str(info.value) == "image in use: docker.io/library/alpine:latest; held by sandbox 'web', snapshot 's1'"

    run(main())


def test_invalid_reference_is_invalid_params(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return err(request, -32602, "invalid reference", name="invalid-reference", parameter="reference")

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(InvalidReferenceError) as info:
                await Image.get("UPPER/Case::")
            assert isinstance(info.value, InvalidParamsError)
            assert str(info.value) == "invalid reference: UPPER/Case::"

    run(main())


def test_error_text_adds_only_what_the_message_lacks(socket_path: str) -> None:
    replies = [
        ("invalid-params", -32602, "parameter 'name' has a length out of range", {"parameter": "name"}),
        ("digest-mismatch", 1005, "digest mismatch", {"expected": DIGEST_A, "actual": DIGEST_B}),
        ("path-not-found", 1011, "cannot load /x: No such file or directory", {"path": "/x"}),
    ]

    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        name, code, message, data = replies[len(daemon.requests) - 1]
        return err(request, code, message, name=name, **data)

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(InvalidParamsError) as params:
                await Image.pin("sandbox", "", "alpine")
            # The error is about `name`: the call's reference would mislead.
            assert str(params.value) == "parameter 'name' has a length out of range"
            assert params.value.reference is None
            with pytest.raises(microsandbox.DigestMismatchError) as mismatch:
                await Image.pull("alpine")
            assert str(mismatch.value) == f"digest mismatch: alpine (expected={DIGEST_A}, actual={DIGEST_B})"
            with pytest.raises(microsandbox.PathNotFoundError) as missing:
                await Image.load("/x")
            assert str(missing.value) == "cannot load /x: No such file or directory"

    run(main())


def test_unknown_error_name_falls_back_to_the_code(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        if len(daemon.requests) == 1:
            return err(request, 1001, "gone", name="from-the-future")
        return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": 1999, "message": "new kind"}}

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ImageNotFoundError):
                await Image.get("a")
            with pytest.raises(RpcError) as info:
                await Image.get("a")
            assert type(info.value) is RpcError and info.value.code == 1999

    run(main())


# -- pull progress -----------------------------------------------------------


PROGRESS = [
    {"event": "resolving", "reference": "docker.io/library/alpine:latest"},
    {"event": "resolved", "manifest_digest": DIGEST_A, "layer_count": 2, "total_bytes": 300},
    {"event": "layer-cached", "position": 0, "digest": DIGEST_B, "diff_id": DIGEST_C},
    {"event": "layer-download", "position": 1, "digest": DIGEST_C, "downloaded_bytes": 100, "total_bytes": 200},
    {"event": "layer-downloaded", "position": 1, "digest": DIGEST_C},
    {"event": "layer-converted", "position": 1, "digest": DIGEST_C, "diff_id": DIGEST_B, "erofs_size_bytes": 4096},
    {"event": "fsmeta", "size_bytes": 8192},
    {"event": "vmdk"},
    {"event": "complete", "manifest_digest": DIGEST_A},
    {"event": "teleported", "where": "mars"},
]


async def pull_with_notifications(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    if request["method"] != "image.pull":
        return await answer_by_method(daemon, request, writer)
    # A notification for another request must not leak into this pull.
    stray = {"jsonrpc": "2.0", "method": "image.pull.progress", "params": {"id": 999999, "event": "vmdk"}}
    writer.write(json.dumps(stray).encode() + b"\n")
    for event in PROGRESS:
        note = {"jsonrpc": "2.0", "method": "image.pull.progress", "params": {"id": request["id"], **event}}
        writer.write(json.dumps(note).encode() + b"\n")
    if request["params"]["reference"] == "fail":
        return err(request, 1013, "not found in the registry", name="remote-not-found", reference="docker.io/library/fail:latest")
    return ok(request, handle_json())


def test_pull_with_progress_yields_typed_events(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, pull_with_notifications):
            async with Image.pull_with_progress("alpine") as pull:
                events = [event async for event in pull.progress]
                handle = await pull.result()
            assert [type(e).__name__ for e in events] == [
                "PullResolving",
                "PullResolved",
                "PullLayerCached",
                "PullLayerDownload",
                "PullLayerDownloaded",
                "PullLayerConverted",
                "PullFsmeta",
                "PullVmdk",
                "PullComplete",
                "PullUnknownEvent",
            ]
            assert events[1] == microsandbox.PullResolved(DIGEST_A, 2, 300)
            assert events[3] == microsandbox.PullLayerDownload(1, DIGEST_C, 100, 200)
            assert events[-1] == microsandbox.PullUnknownEvent("teleported", {"where": "mars"})
            assert handle.reference == "docker.io/library/alpine:latest"

    run(main())


def test_pull_with_progress_failure(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, pull_with_notifications):
            async with Image.pull_with_progress("fail") as pull:
                events = [event async for event in pull.progress]
                assert len(events) == len(PROGRESS)
                with pytest.raises(microsandbox.RemoteNotFoundError, match="docker.io/library/fail:latest"):
                    await pull.result()
            # Leaving the block without awaiting result() raises the error too.
            with pytest.raises(microsandbox.RemoteNotFoundError):
                async with Image.pull_with_progress("fail"):
                    pass

    run(main())


def test_plain_pull_ignores_notifications(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, pull_with_notifications):
            handle = await Image.pull("alpine")
            assert isinstance(handle, ImageHandle)
            assert isinstance(await Image.get("alpine"), ImageHandle)

    run(main())


# -- pipelining --------------------------------------------------------------


def test_answers_out_of_order_reach_their_callers(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        # Hold every answer until three requests are in, then answer newest first.
        while len(daemon.requests) < 3:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01 * (3 - daemon.requests.index(request)))
        return ok(request, handle_json(request["params"]["reference"]))

    async def main() -> None:
        async with FakeDaemon(socket_path, handler) as daemon:
            refs = ["docker.io/library/a:1", "docker.io/library/b:1", "docker.io/library/c:1"]
            handles = await asyncio.gather(*(Image.get(r) for r in refs))
            assert [h.reference for h in handles] == refs
            assert daemon.connections == 1

    run(main())


def test_200_concurrent_calls_share_one_connection(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            refs = [f"docker.io/library/img{i}:latest" for i in range(200)]
            handles = await asyncio.gather(*(Image.get(r) for r in refs))
            assert [h.reference for h in handles] == refs
            assert daemon.connections == 1
            assert len({r["id"] for r in daemon.requests}) == 200

    run(main())


def test_a_10000_image_list_exceeds_the_default_stream_limit(socket_path: str) -> None:
    many = [handle_json(f"docker.io/library/img{i}:latest") for i in range(10_000)]

    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return ok(request, list_json(request, many))

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            images = await Image.list()
            assert len(images) == 10_000
            assert images[9_999].reference == "docker.io/library/img9999:latest"

    assert len(json.dumps(list_json({"params": {"rows": True}}, many))) > 64 * 1024 * 10
    run(main())


def test_cancelled_call_does_not_disturb_the_next(socket_path: str) -> None:
    release = asyncio.Event

    async def main() -> None:
        gate = release()

        async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
            if "id" not in request:
                return None  # rpc.cancel: a notification
            if request["params"].get("reference") == "slow":
                await gate.wait()
            return ok(request, handle_json(request["params"].get("reference", "")))

        async with FakeDaemon(socket_path, handler) as daemon:
            slow = asyncio.ensure_future(Image.get("slow"))
            await asyncio.sleep(0.05)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            gate.set()
            assert (await Image.get("fast")).reference == "fast"
            assert daemon.connections == 1
            # The daemon heard that the caller gave up, before the next call.
            slow_id = daemon.requests[0]["id"]
            assert sent(daemon)[1] == ("rpc.cancel", {"id": slow_id})
            assert "id" not in daemon.requests[1]

    run(main())


def test_cancelled_pull_sends_rpc_cancel(socket_path: str) -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
            if request["method"] == "rpc.cancel":
                cancelled.set()
                return None
            await asyncio.sleep(3600)  # a pull that never ends by itself

        async with FakeDaemon(socket_path, handler) as daemon:
            task = asyncio.ensure_future(Image.pull("alpine"))
            while not daemon.requests:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(cancelled.wait(), 5)
            assert sent(daemon) == [("image.pull", {"reference": "alpine", "policy": "if-missing"}),
                                    ("rpc.cancel", {"id": daemon.requests[0]["id"]})]

            # Leaving pull_with_progress by an exception cancels the same way.
            cancelled.clear()
            with pytest.raises(LookupError):
                async with Image.pull_with_progress("busybox"):
                    while len(daemon.requests) < 3:
                        await asyncio.sleep(0.001)
                    raise LookupError("the caller's own failure")
            await asyncio.wait_for(cancelled.wait(), 5)
            assert sent(daemon)[3] == ("rpc.cancel", {"id": daemon.requests[2]["id"]})

    run(main())


# -- failures --------------------------------------------------------------


def test_no_daemon_names_the_socket(socket_path: str) -> None:
    async def main() -> None:
        with pytest.raises(DaemonNotRunningError) as info:
            await Image.list()
        assert info.value.socket_path == socket_path
        assert socket_path in str(info.value)

    run(main())


def test_stale_socket_file_is_daemon_not_running(socket_path: str) -> None:
    # A socket file nobody listens on, as a killed daemon leaves behind.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path)
    sock.close()

    async def main() -> None:
        with pytest.raises(DaemonNotRunningError, match="refused"):
            await Image.get("alpine")

    run(main())


def test_a_peer_that_is_not_the_daemon(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        return None

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ProtocolError, match="not JSON"):
                await Image.list()

    run(main())


def test_a_peer_that_answers_json_but_not_jsonrpc(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return {"hello": "world"}

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ProtocolError, match="not a JSON-RPC 2.0 message"):
                await Image.list()

    run(main())


async def hang_up_first(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
    if daemon.connections == 1:
        writer.close()
        return None
    return await answer_by_method(daemon, request, writer)


def test_idempotent_call_is_retried_once_on_a_broken_connection(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, hang_up_first) as daemon:
            handle = await Image.get("alpine")
            assert handle.reference == "alpine"
            assert daemon.connections == 2
            assert [r["method"] for r in daemon.requests] == ["image.get", "image.get"]

    run(main())


def test_non_idempotent_call_reports_the_lost_connection(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, hang_up_first) as daemon:
            with pytest.raises(ConnectionLostError) as info:
                await Image.remove("alpine")
            assert info.value.method == "image.remove" and socket_path in str(info.value)
            assert not info.value.retried and "may or may not have taken effect" in str(info.value)
            assert [r["method"] for r in daemon.requests] == ["image.remove"]
            # The next call opens a new connection.
            await Image.remove("alpine")
            assert daemon.connections == 2

    run(main())


def test_retry_happens_only_once(socket_path: str) -> None:
    async def always_hang_up(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        writer.close()
        return None

    async def main() -> None:
        async with FakeDaemon(socket_path, always_hang_up) as daemon:
            with pytest.raises(ConnectionLostError) as info:
                await Image.list()
            assert daemon.connections == 2
            assert info.value.retried and "again after one retry" in str(info.value)

    run(main())


def test_error_with_null_id_fails_the_waiting_calls(socket_path: str) -> None:
    async def handler(daemon: FakeDaemon, request: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error", "data": {"name": "parse-error"}}}

    async def main() -> None:
        async with FakeDaemon(socket_path, handler):
            with pytest.raises(ProtocolError, match="without a request id"):
                await Image.list()

    run(main())


# -- socket path and lifetime ------------------------------------------------


def test_socket_path_defaults(env_without_socket: pytest.MonkeyPatch) -> None:
    assert microsandbox.default_socket_path() == f"/tmp/microsandbox-{os.getuid()}/imaged.sock"
    env_without_socket.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    assert microsandbox.default_socket_path() == "/run/user/4242/microsandbox/imaged.sock"
    env_without_socket.setenv("MSB_IMAGED_SOCKET", "/somewhere/else.sock")
    assert microsandbox.default_socket_path() == "/somewhere/else.sock"


def test_connection_follows_the_event_loop(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            await Image.list()
            await Image.list()
            assert daemon.connections == 1
            await microsandbox.aclose()
            await Image.list()
            assert daemon.connections == 2

    run(main())
    run(main())
    gc.collect()
    # Nothing keeps a finished event loop (or its connection) alive.
    assert len(_client._clients) == 0


def test_list_handles_are_ordinary_frozen_handles() -> None:
    """Handles of a list are built by slot stores and a class switch (see
    _types._ImageHandleSlots); they must be indistinguishable from handles
    made by the dataclass constructor."""
    import dataclasses

    from microsandbox import _types

    assert _types._image_handle_from_wire is _types._image_handle_fast
    for obj in (handle_json(), handle_json(size_bytes=None, created_at=None, last_used_at=None, manifest_digest=None)):
        fast = _types._image_handle_fast(obj)
        plain = _types._image_handle_plain(obj)
        assert type(fast) is ImageHandle
        assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
        assert dataclasses.asdict(fast) == dataclasses.asdict(plain)
        assert pickle.loads(pickle.dumps(fast)) == plain and copy.deepcopy(fast) == plain
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.reference = "other"  # type: ignore[misc]
    with pytest.raises(KeyError):
        _types._image_handle_fast({"reference": "x"})


def test_list_rows_build_the_same_handles_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """image.list's rows go through the slot-store builder, or the plain
    constructor where the fast one is not available: the same handles."""
    from microsandbox import _types

    objs = [handle_json(), handle_json("b", size_bytes=None, created_at=None, last_used_at=3, manifest_digest=None)]
    result = list_json({"params": {"rows": True}}, objs)
    fast = _types._image_handles_from_rows(result, "/s")
    monkeypatch.setattr(_types, "_image_handle_from_wire", _types._image_handle_plain)
    plain = _types._image_handles_from_rows(result, "/s")
    assert fast == plain == [_types._image_handle_plain(o, "/s") for o in objs]
    assert [h._socket for h in fast] == [h._socket for h in plain] == ["/s", "/s"]
    assert all(type(h) is ImageHandle for h in fast + plain)


def test_cancelling_the_first_caller_does_not_cancel_the_shared_connect(socket_path: str) -> None:
    async def main() -> None:
        async with FakeDaemon(socket_path, answer_by_method) as daemon:
            tasks = [asyncio.ensure_future(Image.get(f"docker.io/library/r{i}:latest")) for i in range(10)]
            await asyncio.sleep(0)  # every call is now waiting for the one connect
            tasks[0].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            assert [r.reference for r in results[1:]] == [f"docker.io/library/r{i}:latest" for i in range(1, 10)]  # type: ignore[union-attr]
            assert daemon.connections == 1

    run(main())


def test_failed_connect_reaches_every_waiter(socket_path: str) -> None:
    async def main() -> None:
        results = await asyncio.gather(*(Image.get("a") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, DaemonNotRunningError) for r in results)

    run(main())


def test_no_thread_is_started(socket_path: str) -> None:
    import threading

    async def main() -> None:
        async with FakeDaemon(socket_path, pull_with_notifications):
            before = threading.active_count()
            await asyncio.gather(*(Image.get(f"r{i}") for i in range(50)), Image.list(), Image.pull("alpine"))
            async with Image.pull_with_progress("alpine") as pull:
                [event async for event in pull.progress]
            await Image.load("/x.tar")
            assert threading.active_count() == before

    run(main())
