"""The values the daemon returns, as frozen dataclasses.

Field names and types are those of the SDK reference page (Images) and of
proto/openrpc.json, components.schemas. Times are milliseconds since the
epoch as floats. Each class has a `_from_wire` that turns the JSON object of
a result into an instance and raises KeyError/TypeError/ValueError on a
malformed one (the transport turns those into ProtocolError).
"""

from __future__ import annotations

import contextlib
import enum
import gc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Union

__all__ = [
    "ImageHandle",
    "ImageDetail",
    "ImageConfigDetail",
    "ImageLayerDetail",
    "ImagePruneReport",
    "ImageEvent",
    "PinKind",
    "Pin",
    "Rootfs",
    "RootfsLayer",
    "OciRootfs",
    "BindRootfs",
    "DiskRootfs",
    "RootfsSource",
]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_str_list(value: Any) -> list[str] | None:
    return None if value is None else [str(item) for item in value]


@dataclass(frozen=True, slots=True)
class ImageHandle:
    """One cached image reference, as `Image.get()` and `Image.list()` return it."""

    reference: str
    manifest_digest: str | None
    architecture: str | None
    os: str | None
    layer_count: int
    size_bytes: int | None
    created_at: float | None
    last_used_at: float | None
    # The socket of the daemon this handle came from (a Client's), so that
    # remove() and inspect() ask the same daemon; None: the default socket.
    # Not part of the value: equal handles from two clients compare equal.
    _socket: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def _from_wire(cls, obj: dict[str, Any], socket: str | None = None) -> ImageHandle:
        return _image_handle_from_wire(obj, socket)

    async def remove(self, force: bool = False) -> None:
        """Delete this image reference (see `Image.remove`)."""
        from ._image import Images

        await Images(self._socket).remove(self.reference, force=force)

    async def inspect(self) -> ImageDetail:
        """Fetch the full detail of this image (see `Image.inspect`)."""
        from ._image import Images

        return await Images(self._socket).inspect(self.reference)


class _ImageHandleSlots:
    """Builds ImageHandles fast: `image.list` returns thousands of them.

    A frozen dataclass's __init__ stores each field through
    object.__setattr__, several times slower than a plain slot store. This
    class has exactly ImageHandle's slots, so an instance filled with plain
    stores can then be given ImageHandle as its class: CPython allows
    __class__ assignment between classes of identical layout, and the result
    is an ordinary, frozen ImageHandle.
    """

    __slots__ = ImageHandle.__slots__  # type: ignore[attr-defined]


def _image_handle_fast(obj: dict[str, Any], socket: str | None = None) -> ImageHandle:
    handle: Any = _ImageHandleSlots.__new__(_ImageHandleSlots)
    handle.reference = obj["reference"]
    handle.manifest_digest = obj["manifest_digest"]
    handle.architecture = obj["architecture"]
    handle.os = obj["os"]
    handle.layer_count = obj["layer_count"]
    handle.size_bytes = obj["size_bytes"]
    created_at = obj["created_at"]
    handle.created_at = None if created_at is None else float(created_at)
    last_used_at = obj["last_used_at"]
    handle.last_used_at = None if last_used_at is None else float(last_used_at)
    handle._socket = socket
    handle.__class__ = ImageHandle
    return handle  # type: ignore[no-any-return]


def _image_handle_plain(obj: dict[str, Any], socket: str | None = None) -> ImageHandle:
    created_at = obj["created_at"]
    last_used_at = obj["last_used_at"]
    return ImageHandle(
        obj["reference"],
        obj["manifest_digest"],
        obj["architecture"],
        obj["os"],
        obj["layer_count"],
        obj["size_bytes"],
        None if created_at is None else float(created_at),
        None if last_used_at is None else float(last_used_at),
        socket,
    )


def _pick_image_handle_builder() -> Callable[[dict[str, Any], str | None], ImageHandle]:
    # Another interpreter (or a later dataclasses) may lay ImageHandle out
    # differently; then the plain constructor it is.
    probe: dict[str, Any] = {name: None for name in ImageHandle.__slots__}  # type: ignore[attr-defined]
    probe["layer_count"] = 0
    try:
        if _image_handle_fast(probe, None) == _image_handle_plain(probe, None):
            return _image_handle_fast
    except TypeError:
        pass
    return _image_handle_plain


_image_handle_from_wire = _pick_image_handle_builder()

# A list or an answer at least this large is built with the cyclic garbage
# collector paused (see _gc_paused).
GC_PAUSE_MIN_ITEMS = 1000
GC_PAUSE_MIN_BYTES = 256 * 1024


@contextlib.contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Pauses the cyclic garbage collector for a bulk decode.

    Decoding a 10,000-image list creates some 30,000 containers; each 700
    allocations start a collection, and the older generations' collections
    scan every live object of the whole program, so in a process holding
    much they cost more than the decoding (bench/list: 35-90 ms with the
    collector, 27-44 ms without, for the same 10,000 rows). None of these
    objects can be part of a cycle. A collector the program disabled stays
    disabled. With pause false (a small decode), nothing changes.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# ImageHandle's members as image.list {rows: true} names its columns.
_HANDLE_COLUMNS = ["reference", "manifest_digest", "architecture", "os", "layer_count", "size_bytes", "created_at", "last_used_at"]


def _image_handles_from_rows(result: dict[str, Any], socket: str | None = None) -> list[ImageHandle]:
    """ImageHandles of image.list's rows form ({columns, rows}).

    Decoding arrays is about twice as fast as decoding objects with the
    same values, and the rows need no key lookups: for 10,000 images this
    halves what the SDK spends after the bytes arrive (bench/list).
    Columns are mapped by name, so a daemon may add or reorder them.
    """
    columns, rows = result["columns"], result["rows"]
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise TypeError("columns and rows must be arrays")
    if columns != _HANDLE_COLUMNS:
        positions = [columns.index(name) for name in _HANDLE_COLUMNS]
        rows = [[row[i] for i in positions] for row in rows]
    with _gc_paused(len(rows) >= GC_PAUSE_MIN_ITEMS):
        return _handles_from_rows(rows, socket)


def _handles_from_rows(rows: list[Any], socket: str | None) -> list[ImageHandle]:
    if _image_handle_from_wire is not _image_handle_fast:
        return [
            _image_handle_plain(dict(zip(_HANDLE_COLUMNS, row, strict=True)), socket)
            for row in rows
        ]
    # _image_handle_fast()'s stores, inlined in the loop rather than called
    # per row: a Python call costs about what the stores do.
    handles: list[ImageHandle] = []
    append, new, cls = handles.append, _ImageHandleSlots.__new__, ImageHandle
    for reference, manifest_digest, architecture, os, layer_count, size_bytes, created_at, last_used_at in rows:
        handle: Any = new(_ImageHandleSlots)
        handle.reference = reference
        handle.manifest_digest = manifest_digest
        handle.architecture = architecture
        handle.os = os
        handle.layer_count = layer_count
        handle.size_bytes = size_bytes
        handle.created_at = None if created_at is None else float(created_at)
        handle.last_used_at = None if last_used_at is None else float(last_used_at)
        handle._socket = socket
        handle.__class__ = cls
        append(handle)
    return handles


@dataclass(frozen=True, slots=True)
class ImageConfigDetail:
    """The parsed OCI image config (image-spec config.md, `config` object)."""

    digest: str
    env: list[str]
    cmd: list[str] | None
    entrypoint: list[str] | None
    working_dir: str | None
    user: str | None
    labels: dict[str, Any] | None
    stop_signal: str | None

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> ImageConfigDetail:
        labels = obj["labels"]
        if labels is not None and not isinstance(labels, dict):
            raise TypeError("labels is not an object")
        return cls(
            digest=str(obj["digest"]),
            env=[str(item) for item in obj["env"] or ()],
            cmd=_opt_str_list(obj["cmd"]),
            entrypoint=_opt_str_list(obj["entrypoint"]),
            working_dir=obj["working_dir"],
            user=obj["user"],
            labels=labels,
            stop_signal=obj["stop_signal"],
        )


@dataclass(frozen=True, slots=True)
class ImageLayerDetail:
    """One layer of an image; `position` 0 is the bottom layer."""

    diff_id: str
    blob_digest: str
    media_type: str | None
    compressed_size_bytes: int | None
    erofs_size_bytes: int | None
    position: int

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> ImageLayerDetail:
        return cls(
            diff_id=str(obj["diff_id"]),
            blob_digest=str(obj["blob_digest"]),
            media_type=obj["media_type"],
            compressed_size_bytes=_opt_int(obj["compressed_size_bytes"]),
            erofs_size_bytes=_opt_int(obj["erofs_size_bytes"]),
            position=int(obj["position"]),
        )


@dataclass(frozen=True, slots=True)
class ImageDetail:
    """Handle metadata plus the parsed OCI config and the layers, bottom to top."""

    handle: ImageHandle
    config: ImageConfigDetail | None
    layers: list[ImageLayerDetail]

    @classmethod
    def _from_wire(cls, obj: dict[str, Any], socket: str | None = None) -> ImageDetail:
        config = obj["config"]
        return cls(
            handle=ImageHandle._from_wire(obj["handle"], socket),
            config=None if config is None else ImageConfigDetail._from_wire(config),
            layers=[ImageLayerDetail._from_wire(layer) for layer in obj["layers"]],
        )


@dataclass(frozen=True, slots=True)
class ImagePruneReport:
    """What `Image.prune()` actually removed."""

    image_refs_removed: int
    manifests_removed: int
    layers_removed: int
    fsmeta_removed: int
    vmdk_removed: int
    bytes_reclaimed: int | None

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> ImagePruneReport:
        return cls(
            image_refs_removed=int(obj["image_refs_removed"]),
            manifests_removed=int(obj["manifests_removed"]),
            layers_removed=int(obj["layers_removed"]),
            fsmeta_removed=int(obj["fsmeta_removed"]),
            vmdk_removed=int(obj["vmdk_removed"]),
            bytes_reclaimed=_opt_int(obj["bytes_reclaimed"]),
        )


@dataclass(frozen=True, slots=True)
class ImageEvent:
    """One change of the cache, as `Image.events()` yields it.

    `type` is "image.loaded", "image.pulled", "image.removed",
    "image.pruned", "image.evicted", "pin.added" or "pin.removed";
    `reference` the canonical reference, `at` the time in milliseconds
    since the epoch; pin events carry the pin's `kind` and `name`. A stream
    that fell behind gets type "events.lost" with `count`, the number of
    events it did not receive, in their place.
    """

    type: str
    reference: str | None
    manifest_digest: str | None
    at: float | None
    kind: str | None = None
    name: str | None = None
    count: int | None = None

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> ImageEvent:
        return cls(
            type=str(obj["type"]),
            reference=_opt_str(obj["reference"]),
            manifest_digest=_opt_str(obj["manifest_digest"]),
            at=_opt_float(obj["at"]),
            kind=_opt_str(obj.get("kind")),
            name=_opt_str(obj.get("name")),
        )

    @classmethod
    def _lost_from_wire(cls, obj: dict[str, Any]) -> ImageEvent:
        return cls(type="events.lost", reference=None, manifest_digest=None, at=_opt_float(obj.get("at")),
                   count=int(obj["count"]))


class PinKind(enum.StrEnum):
    """What holds an image: a sandbox or an indexed snapshot."""

    SANDBOX = "sandbox"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True, slots=True)
class Pin:
    """A pin: `{kind, name}` holding the manifest a reference resolved to."""

    kind: PinKind
    name: str
    reference: str
    manifest_digest: str
    created_at: float

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> Pin:
        return cls(
            kind=PinKind(obj["kind"]),
            name=str(obj["name"]),
            reference=str(obj["reference"]),
            manifest_digest=str(obj["manifest_digest"]),
            created_at=float(obj["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class RootfsLayer:
    """One layer's EROFS image, by absolute path."""

    diff_id: str
    path: str
    erofs_size_bytes: int | None

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> RootfsLayer:
        return cls(
            diff_id=str(obj["diff_id"]),
            path=str(obj["path"]),
            erofs_size_bytes=_opt_int(obj["erofs_size_bytes"]),
        )


@dataclass(frozen=True, slots=True)
class Rootfs:
    """What a sandbox needs to boot a pinned image: the merged fsmeta EROFS
    image, the VMDK descriptor (fsmeta then the layers) and the layers."""

    manifest_digest: str
    fsmeta_path: str | None
    vmdk_path: str | None
    layers: list[RootfsLayer]

    @classmethod
    def _from_wire(cls, obj: dict[str, Any]) -> Rootfs:
        return cls(
            manifest_digest=str(obj["manifest_digest"]),
            fsmeta_path=obj["fsmeta_path"],
            vmdk_path=obj["vmdk_path"],
            layers=[RootfsLayer._from_wire(layer) for layer in obj["layers"]],
        )


@dataclass(frozen=True, slots=True)
class OciRootfs:
    """Root filesystem from an OCI image reference (`Image.oci`)."""

    kind: ClassVar[str] = "oci"
    reference: str


@dataclass(frozen=True, slots=True)
class BindRootfs:
    """Root filesystem bound from a host directory (`Image.bind`)."""

    kind: ClassVar[str] = "bind"
    path: str


@dataclass(frozen=True, slots=True)
class DiskRootfs:
    """Root filesystem from a disk image file (`Image.disk`)."""

    kind: ClassVar[str] = "disk"
    path: str
    fstype: str | None = None


RootfsSource = Union[OciRootfs, BindRootfs, DiskRootfs]
