"""The hand-written roots of the exception hierarchy.

Errors the daemon reports are `RpcError` subclasses generated from
proto/openrpc.json into `_errors.py`; the classes here cover what happens on
this side of the socket.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "MicrosandboxError",
    "DaemonNotRunningError",
    "ConnectionLostError",
    "ProtocolError",
    "RpcError",
    "PinHolder",
]


class MicrosandboxError(Exception):
    """Root of every error this package raises."""


class DaemonNotRunningError(MicrosandboxError):
    """Nothing listens on the daemon's socket."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(socket_path, reason)
        self.socket_path = socket_path
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"msb-imaged is not running: cannot connect to {self.socket_path} "
            f"({self.reason}); start msb-imaged or set MSB_IMAGED_SOCKET"
        )


class ConnectionLostError(MicrosandboxError):
    """The connection broke while a call was in flight.

    A call that is safe to repeat (a read) has then been sent once more on a
    fresh connection, and `retried` is true: that one broke too. Any other
    call (remove, prune, pull, load, unpin) is not repeated: the daemon may
    or may not have carried it out; ask it again (for example with
    `Image.get`) to find out.
    """

    def __init__(self, socket_path: str, method: str, reason: str, *, retried: bool = False) -> None:
        super().__init__(socket_path, method, reason)
        self.socket_path = socket_path
        self.method = method
        self.reason = reason
        self.retried = retried

    def __str__(self) -> str:
        text = f"connection to msb-imaged at {self.socket_path} lost during {self.method} ({self.reason})"
        if self.retried:
            return text + ", again after one retry on a new connection; is msb-imaged what listens there?"
        return text + "; the call may or may not have taken effect"


class ProtocolError(MicrosandboxError):
    """The peer did not speak the daemon's protocol (or broke it)."""

    def __init__(self, socket_path: str, detail: str) -> None:
        super().__init__(socket_path, detail)
        self.socket_path = socket_path
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.socket_path} does not answer like msb-imaged: {self.detail}"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return repr(value)


class RpcError(MicrosandboxError):
    """An error the daemon answered with (a JSON-RPC error object).

    `code` and `error_name` identify the kind (see proto/openrpc.json,
    components.errors), `message` is the daemon's text, `data` the whole
    `error.data` object, `method` the call that failed and `reference` the
    reference it was about, when there is one.
    """

    code: int = 0
    error_name: str = ""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        data: dict[str, Any] | None = None,
        method: str | None = None,
        subject: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.data: dict[str, Any] = dict(data or {})
        name = self.data.get("name")
        if isinstance(name, str):
            self.error_name = name
        self.method = method
        reference = self.data.get("reference")
        if isinstance(reference, str):
            self.reference: str | None = reference
        elif self.data.get("parameter") in (None, "reference"):
            self.reference = subject
        else:
            # The error is about another parameter; the call's reference
            # would only mislead.
            self.reference = None

    def __str__(self) -> str:
        text = self.message or self.error_name or f"error {self.code}"
        if self.reference and self.reference not in text:
            text = f"{text}: {self.reference}"
        # Scalar data fields the message does not already say, e.g.
        # digest-mismatch's expected and actual digests.
        details = [
            f"{key}={_scalar(value)}"
            for key, value in self.data.items()
            if key not in ("name", "reference", "holders")
            and isinstance(value, (str, int, float, bool))
            and _scalar(value) not in text
        ]
        if details:
            text = f"{text} ({', '.join(details)})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, name={self.error_name!r}, "
            f"message={self.message!r}, reference={self.reference!r})"
        )


class PinHolder(NamedTuple):
    """A pin that holds an image: `kind` is "sandbox" or "snapshot"."""

    kind: str
    name: str


class _HoldersMixin:
    """Adds `holders` to image-in-use: the pins that keep the image."""

    data: dict[str, Any]
    message: str
    reference: str | None

    @property
    def holders(self) -> list[PinHolder]:
        """The pins holding the image (from `error.data.holders`)."""
        return [
            PinHolder(str(holder.get("kind")), str(holder.get("name")))
            for holder in self.data.get("holders") or ()
            if isinstance(holder, dict)
        ]

    def __str__(self) -> str:
        text = RpcError.__str__(self)  # type: ignore[arg-type]
        holders = self.holders
        if holders:
            text += "; held by " + ", ".join(f"{kind} {name!r}" for kind, name in holders)
        return text
