"""`Image`: the image cache API (reference page "Images") and rootfs sources."""

from __future__ import annotations

import asyncio
import builtins
import datetime
import os
from types import TracebackType
from typing import Any, Callable, Literal, Protocol, Sequence, TypeVar

from . import _client
from ._events import EventStream
from ._exceptions import ProtocolError
from ._progress import PullEvent, pull_event_from_wire
from ._types import (
    BindRootfs,
    DiskRootfs,
    ImageDetail,
    ImageHandle,
    ImagePruneReport,
    OciRootfs,
    Pin,
    PinKind,
    Rootfs,
    _image_handle_from_wire,
    _image_handles_from_rows,
)

__all__ = ["Image", "Images", "Client", "PullPolicy", "PullOperation", "EventStream"]

PullPolicy = Literal["if-missing", "always", "never"]


class LoadableFile(Protocol):
    """What `Image.load` reads an archive from: anything with a file
    descriptor, such as an open file or a pipe."""

    def fileno(self) -> int: ...

_PULL_POLICIES = ("if-missing", "always", "never")


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


_T = TypeVar("_T")


def _prune_params(unused_for: datetime.timedelta | None) -> dict[str, Any]:
    if unused_for is None:
        return {}
    if not isinstance(unused_for, datetime.timedelta):
        raise TypeError(f"unused_for must be a datetime.timedelta, not {type(unused_for).__name__}")
    if unused_for < datetime.timedelta(0):
        raise ValueError("unused_for must not be negative")
    # Whole milliseconds: the daemon's unit for times.
    return {"unused_for_ms": unused_for // datetime.timedelta(milliseconds=1)}


def _pull_params(reference: str, policy: str, platform: str | None) -> dict[str, Any]:
    _check_str("reference", reference)
    if policy not in _PULL_POLICIES:
        raise ValueError(f"policy must be one of {', '.join(_PULL_POLICIES)}, not {policy!r}")
    params: dict[str, Any] = {"reference": reference, "policy": policy}
    if platform is not None:
        params["platform"] = _check_str("platform", platform)
    return params


class Images:
    """The image cache of one daemon: what `Image`'s static methods do, as
    methods. `Client(...).images` is one on the client's own connection;
    `Image.get(...)` and the others use the default one, on the default
    socket (`$MSB_IMAGED_SOCKET`, ...) looked up at each call, and on a
    connection shared by everything on the event loop.
    """

    def __init__(self, socket: str | None = None, connection: _client._Client | None = None) -> None:
        self._socket = socket
        self._connection = connection

    async def _call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        subject: str | None = None,
        notify: _client.Notify | None = None,
        fds: Sequence[int] = (),
    ) -> Any:
        if self._connection is not None:
            return await self._connection.call(method, params, subject=subject, notify=notify, fds=fds)
        return await _client.call(method, params, subject=subject, notify=notify, socket=self._socket, fds=fds)

    def _parse(self, method: str, parse: Callable[[Any], _T], result: Any) -> _T:
        """Turns a result into typed values; a malformed one is the peer's fault."""
        try:
            return parse(result)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            path = self._socket or _client.default_socket_path()
            raise ProtocolError(path, f"malformed {method} result: {type(e).__name__}: {e}") from None

    def _handle(self, result: Any) -> ImageHandle:
        return ImageHandle._from_wire(result, self._socket)

    def _handles(self, result: Any) -> builtins.list[ImageHandle]:
        from_wire, socket = _image_handle_from_wire, self._socket
        return [from_wire(item, socket) for item in result]

    async def get(self, reference: str) -> ImageHandle:
        """See `Image.get`."""
        result = await self._call("image.get", {"reference": _check_str("reference", reference)}, subject=reference)
        return self._parse("image.get", self._handle, result)

    async def list(self) -> builtins.list[ImageHandle]:
        """See `Image.list`."""
        result = await self._call("image.list", {"rows": True})
        return self._parse("image.list", lambda r: _image_handles_from_rows(r, self._socket), result)

    async def inspect(self, reference: str) -> ImageDetail:
        """See `Image.inspect`."""
        params = {"reference": _check_str("reference", reference)}
        result = await self._call("image.inspect", params, subject=reference)
        return self._parse("image.inspect", lambda r: ImageDetail._from_wire(r, self._socket), result)

    async def remove(self, reference: str, *, force: bool = False) -> None:
        """See `Image.remove`."""
        params = {"reference": _check_str("reference", reference), "force": bool(force)}
        await self._call("image.remove", params, subject=reference)

    async def prune(self, *, unused_for: datetime.timedelta | None = None) -> ImagePruneReport:
        """See `Image.prune`."""
        result = await self._call("image.prune", _prune_params(unused_for))
        return self._parse("image.prune", ImagePruneReport._from_wire, result)

    def events(self) -> EventStream:
        """See `Image.events`; on a connection of its own to this socket."""
        return EventStream(self._socket or _client.default_socket_path())

    async def pull(self, reference: str, *, policy: PullPolicy = "if-missing", platform: str | None = None) -> ImageHandle:
        """See `Image.pull`."""
        result = await self._call("image.pull", _pull_params(reference, policy, platform), subject=reference)
        return self._parse("image.pull", self._handle, result)

    def pull_with_progress(
        self, reference: str, *, policy: PullPolicy = "if-missing", platform: str | None = None
    ) -> PullOperation:
        """See `Image.pull_with_progress`."""
        return PullOperation(_pull_params(reference, policy, platform), self)

    async def load(
        self, source: str | os.PathLike[str] | LoadableFile, *, image: str | None = None, tag: str | None = None
    ) -> builtins.list[ImageHandle]:
        """See `Image.load`."""
        params: dict[str, Any] = {}
        if image is not None:
            params["image"] = _check_str("image", image)
        if tag is not None:
            params["tag"] = _check_str("tag", tag)
        if isinstance(source, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(source))
            if os.path.isfile(path):
                # An archive goes to the daemon open: it need not see the file.
                with open(path, "rb") as f:
                    return await self._load_fd(f.fileno(), params, tag)
            # A layout directory is read by the daemon (so is a path that is
            # not there: the daemon says so, as path-not-found).
            result = await self._call("image.load", {**params, "path": path}, subject=tag)
            return self._parse("image.load", self._handles, result)
        try:
            fd = source.fileno()
        except (AttributeError, OSError, ValueError) as e:
            raise TypeError(
                "source must be a path or a file object with a descriptor (a file or a pipe), "
                f"not {type(source).__name__}"
            ) from e
        return await self._load_fd(fd, params, tag)

    async def _load_fd(self, fd: int, params: dict[str, Any], tag: str | None) -> builtins.list[ImageHandle]:
        result = await self._call("image.load", {**params, "fd": 0}, subject=tag, fds=[fd])
        return self._parse("image.load", self._handles, result)

    async def pin(self, kind: PinKind | str, name: str, reference: str) -> Rootfs:
        """See `Image.pin`."""
        params = {"kind": PinKind(kind).value, "name": _check_str("name", name), "reference": _check_str("reference", reference)}
        result = await self._call("pin.add", params, subject=reference)
        return self._parse("pin.add", Rootfs._from_wire, result)

    async def unpin(self, kind: PinKind | str, name: str) -> None:
        """See `Image.unpin`."""
        await self._call("pin.remove", {"kind": PinKind(kind).value, "name": _check_str("name", name)})

    async def pins(self) -> builtins.list[Pin]:
        """See `Image.pins`."""
        result = await self._call("pin.list", {})
        return self._parse("pin.list", lambda items: [Pin._from_wire(item) for item in items], result)


# What the static methods of Image call: the default socket, looked up at
# each call, on the event loop's shared connection.
_default = Images()


class Image:
    """Namespace of the local OCI image cache operations and rootfs sources.

    Every coroutine talks to msb-imaged over its Unix socket
    (`$MSB_IMAGED_SOCKET` or the default path); calls made concurrently on one
    event loop share a single connection. `Client` offers the same calls on
    a connection of its own, to a socket of your choice.
    """

    def __init__(self) -> None:
        raise TypeError("Image is a namespace; call Image.get(), Image.list(), Image.oci(), ...")

    # -- the cache (reference page) ----------------------------------------

    @staticmethod
    async def get(reference: str) -> ImageHandle:
        """Fetch one cached image by reference; `ImageNotFoundError` when absent."""
        return await _default.get(reference)

    @staticmethod
    async def list() -> builtins.list[ImageHandle]:
        """Every cached image, newest first."""
        return await _default.list()

    @staticmethod
    async def inspect(reference: str) -> ImageDetail:
        """Handle metadata plus the parsed OCI config and the layers, bottom to top."""
        return await _default.inspect(reference)

    @staticmethod
    async def remove(reference: str, *, force: bool = False) -> None:
        """Delete a cached image reference.

        Without `force`, an image that a sandbox or snapshot pin holds raises
        `ImageInUseError` and nothing changes. With `force` the reference goes
        and the pinned data stays until its pins are removed and a prune runs.
        """
        await _default.remove(reference, force=force)

    @staticmethod
    async def prune(*, unused_for: datetime.timedelta | None = None) -> ImagePruneReport:
        """Remove everything no pin holds; report what was actually removed.

        With `unused_for`, only the images not used (pulled, loaded or
        pinned through) for that long are candidates::

            await Image.prune(unused_for=timedelta(hours=24))
        """
        return await _default.prune(unused_for=unused_for)

    @staticmethod
    def events() -> EventStream:
        """The cache's changes as they happen, in order::

            async for event in Image.events():
                print(event.type, event.reference, event.manifest_digest)

        `async with Image.events() as events:` subscribes on entering, so
        that what the block does next is heard.

        Types: image.loaded, image.pulled (cache hits too), image.removed,
        image.pruned, image.evicted (the disk budget), pin.added,
        pin.removed. A stream that reads too slowly gets an "events.lost"
        event with `count` instead of the events it missed. It has a
        connection of its own, closed when the iteration ends; it raises
        ConnectionLostError when the daemon goes away."""
        return _default.events()

    # -- beyond the page: pull, load, pins -----------------------------------

    @staticmethod
    async def pull(reference: str, *, policy: PullPolicy = "if-missing", platform: str | None = None) -> ImageHandle:
        """Fetch an image from its registry into the cache.

        `policy`: "if-missing" (default) uses the cached image when there is
        one, "always" asks the registry, "never" only looks in the cache.
        `platform` is "os/architecture[/variant]", by default linux and the
        host's architecture. Cancelling the task that awaits this cancels the
        pull in the daemon (rpc.cancel): it stops, dropping its downloads,
        unless another caller waits for the same pull.
        """
        return await _default.pull(reference, policy=policy, platform=platform)

    @staticmethod
    def pull_with_progress(
        reference: str, *, policy: PullPolicy = "if-missing", platform: str | None = None
    ) -> PullOperation:
        """Like `pull`, as an async context manager reporting progress::

            async with Image.pull_with_progress("alpine") as pull:
                async for event in pull.progress:
                    print(event)
                handle = await pull.result()
        """
        return _default.pull_with_progress(reference, policy=policy, platform=platform)

    @staticmethod
    async def load(
        source: str | os.PathLike[str] | LoadableFile, *, image: str | None = None, tag: str | None = None
    ) -> builtins.list[ImageHandle]:
        """Import the images of an OCI archive or docker-save archive (tar,
        maybe gzip or zstd compressed), or of an OCI layout directory.

        `source` is a path or a file object with a descriptor (an open
        file, a pipe's read end, `sys.stdin.buffer`). An archive is passed
        to the daemon open, with the request, so the daemon needs no access
        to it; a file object is read from where it stands. A directory is
        read by the daemon, by its absolute path. `image` loads one image of
        a source holding several (a name the source gives it, or its
        manifest digest); `tag` names it, and is needed when the source
        names none. A failed load leaves the cache as it was."""
        return await _default.load(source, image=image, tag=tag)

    @staticmethod
    async def pin(kind: PinKind | str, name: str, reference: str) -> Rootfs:
        """Hold the image `reference` resolves to under `{kind, name}`
        (replacing an earlier pin of that name) and return what a sandbox
        needs to boot it."""
        return await _default.pin(kind, name, reference)

    @staticmethod
    async def unpin(kind: PinKind | str, name: str) -> None:
        """Remove the pin `{kind, name}`; `PinNotFoundError` when there is none."""
        await _default.unpin(kind, name)

    @staticmethod
    async def pins() -> builtins.list[Pin]:
        """Every pin, oldest first."""
        return await _default.pins()

    # -- rootfs sources --------------------------------------------------------

    @staticmethod
    def oci(reference: str) -> OciRootfs:
        """A root filesystem from an OCI image reference."""
        return OciRootfs(_check_str("reference", reference))

    @staticmethod
    def bind(path: str | os.PathLike[str]) -> BindRootfs:
        """A root filesystem bound from a host directory."""
        return BindRootfs(os.path.abspath(os.fspath(path)))

    @staticmethod
    def disk(path: str | os.PathLike[str], fstype: str | None = None) -> DiskRootfs:
        """A root filesystem from a disk image file; `fstype` (e.g. "ext4")
        names its filesystem when it cannot be detected."""
        if fstype is not None:
            _check_str("fstype", fstype)
        return DiskRootfs(os.path.abspath(os.fspath(path)), fstype)


class Client:
    """A connection of its own to one daemon, with the calls of `Image` as
    `client.images.get(...)`, `client.images.list()`, ...::

        async with Client(socket="/run/user/1000/microsandbox/imaged.sock") as client:
            image = await client.images.get("alpine")
            await image.remove()        # asks the same daemon

    `socket` defaults to the default socket, looked up once, here. Entering
    the block connects (raising `DaemonNotRunningError` at once when nothing
    listens); leaving it closes the connection, after which the client
    refuses calls. Without `async with`, the first call connects and
    `aclose()` closes. Calls made concurrently share the connection; a
    client serves the event loop it was first used on.
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None) -> None:
        self.socket_path: str = os.fspath(socket) if socket is not None else _client.default_socket_path()
        self._connection = _client._Client(self.socket_path, owned=True)
        self.images = Images(self.socket_path, self._connection)

    async def __aenter__(self) -> Client:
        await self._connection.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection; later calls raise RuntimeError."""
        await self._connection.aclose()

    def __repr__(self) -> str:
        return f"Client(socket={self.socket_path!r})"


class _ProgressIterator:
    """Async iterator over the events of one pull; ends when the pull does."""

    def __init__(self, queue: asyncio.Queue[PullEvent | None]) -> None:
        self._queue = queue
        self._done = False

    def __aiter__(self) -> _ProgressIterator:
        return self

    async def __anext__(self) -> PullEvent:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._done = True
            raise StopAsyncIteration
        return event


class PullOperation:
    """A pull in flight, from `Image.pull_with_progress`.

    `progress` yields the typed events (PullResolving, PullResolved, ...)
    until the pull ends, however it ends; `await result()` then returns the
    ImageHandle or raises the pull's error. Leaving the `async with` block
    normally waits for the pull and raises its error if it failed and
    `result()` was not awaited; leaving it by an exception cancels the pull
    (rpc.cancel): the daemon stops it unless another caller waits for it.
    """

    def __init__(self, params: dict[str, Any], images: Images) -> None:
        self._params = params
        self._images = images
        self._queue: asyncio.Queue[PullEvent | None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._progress: _ProgressIterator | None = None
        self._retrieved = False

    def _notify(self, params: dict[str, Any]) -> None:
        assert self._queue is not None
        # Unbounded on purpose: events are never dropped (README, "The protocol").
        self._queue.put_nowait(pull_event_from_wire(params))

    async def __aenter__(self) -> PullOperation:
        if self._task is not None:
            raise RuntimeError("a PullOperation can be entered only once")
        queue: asyncio.Queue[PullEvent | None] = asyncio.Queue()
        self._queue = queue
        self._progress = _ProgressIterator(queue)
        self._task = asyncio.get_running_loop().create_task(
            self._images._call("image.pull", self._params, subject=self._params["reference"], notify=self._notify)
        )
        self._task.add_done_callback(lambda _task: queue.put_nowait(None))
        return self

    @property
    def progress(self) -> _ProgressIterator:
        """The events of this pull, as an async iterator."""
        if self._progress is None:
            raise RuntimeError("use `async with Image.pull_with_progress(...)` first")
        return self._progress

    async def result(self) -> ImageHandle:
        """Wait for the pull; the cached image's handle, or the pull's error."""
        if self._task is None:
            raise RuntimeError("use `async with Image.pull_with_progress(...)` first")
        self._retrieved = True
        result = await asyncio.shield(self._task)
        return self._images._parse("image.pull", self._images._handle, result)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        if exc_type is None and not self._retrieved:
            await task
            return
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        elif not task.cancelled():
            task.exception()
