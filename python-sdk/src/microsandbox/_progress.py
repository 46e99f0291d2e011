"""Typed events of `image.pull.progress` notifications.

proto/openrpc.json, components.schemas.PullProgress: the daemon sends, in
order, resolving; resolved; per layer either layer-cached, or layer-download
(repeated, throttled) then layer-downloaded and layer-converted; fsmeta;
vmdk; complete. An event name this SDK does not know yet arrives as
`PullUnknownEvent` rather than being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Union

__all__ = [
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
    "PullEvent",
    "PULL_EVENT_TYPES",
]


@dataclass(frozen=True, slots=True)
class PullResolving:
    """The daemon is resolving the reference to a manifest."""

    event: ClassVar[str] = "resolving"
    reference: str


@dataclass(frozen=True, slots=True)
class PullResolved:
    """The manifest is known: how many layers and bytes there are to fetch."""

    event: ClassVar[str] = "resolved"
    manifest_digest: str
    layer_count: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class PullLayerCached:
    """A layer is already in the cache; nothing to download."""

    event: ClassVar[str] = "layer-cached"
    position: int
    digest: str
    diff_id: str


@dataclass(frozen=True, slots=True)
class PullLayerDownload:
    """Bytes of a layer downloaded so far (throttled)."""

    event: ClassVar[str] = "layer-download"
    position: int
    digest: str
    downloaded_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class PullLayerDownloaded:
    """A layer blob is downloaded and verified."""

    event: ClassVar[str] = "layer-downloaded"
    position: int
    digest: str


@dataclass(frozen=True, slots=True)
class PullLayerConverted:
    """A layer has become an EROFS image."""

    event: ClassVar[str] = "layer-converted"
    position: int
    digest: str
    diff_id: str
    erofs_size_bytes: int


@dataclass(frozen=True, slots=True)
class PullFsmeta:
    """The merged metadata image (fsmeta) is written."""

    event: ClassVar[str] = "fsmeta"
    size_bytes: int


@dataclass(frozen=True, slots=True)
class PullVmdk:
    """The VMDK descriptor is written."""

    event: ClassVar[str] = "vmdk"


@dataclass(frozen=True, slots=True)
class PullComplete:
    """The image is in the cache."""

    event: ClassVar[str] = "complete"
    manifest_digest: str


@dataclass(frozen=True, slots=True)
class PullUnknownEvent:
    """An event this version of the SDK does not know, with its raw fields."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


PullEvent = Union[
    PullResolving,
    PullResolved,
    PullLayerCached,
    PullLayerDownload,
    PullLayerDownloaded,
    PullLayerConverted,
    PullFsmeta,
    PullVmdk,
    PullComplete,
    PullUnknownEvent,
]

PULL_EVENT_TYPES: dict[str, type] = {
    cls.event: cls  # type: ignore[attr-defined]
    for cls in (
        PullResolving,
        PullResolved,
        PullLayerCached,
        PullLayerDownload,
        PullLayerDownloaded,
        PullLayerConverted,
        PullFsmeta,
        PullVmdk,
        PullComplete,
    )
}


def pull_event_from_wire(params: dict[str, Any]) -> PullEvent:
    """The typed event for the params of one image.pull.progress notification."""
    name = params.get("event")
    data = {k: v for k, v in params.items() if k not in ("id", "event")}
    cls = PULL_EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is not None:
        try:
            return cls(**{f.name: data[f.name] for f in fields(cls)})  # type: ignore[no-any-return]
        except (KeyError, TypeError):
            pass
    return PullUnknownEvent(event=str(name), data=data)
