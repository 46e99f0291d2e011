"""Every exception this package raises; all derive from MicrosandboxError.

The classes for errors the daemon reports (RpcError subclasses) are generated
from proto/openrpc.json into _errors.py, one per `error.data.name`. They are
imported here by name, not with `*`, so that type checkers see each one
(mypy --strict re-exports only what `__all__` lists literally); a test fails
when the proto gains an error that is not listed here.
"""

from ._errors import (
    ERRORS_BY_CODE,
    ERRORS_BY_NAME,
    ParseError,
    InvalidRequestError,
    MethodNotFoundError,
    InvalidParamsError,
    InvalidReferenceError,
    InternalError,
    ImageNotFoundError,
    ImageInUseError,
    PinNotFoundError,
    InvalidImageError,
    DigestMismatchError,
    LayerRejectedError,
    LimitExceededError,
    StoreError,
    PlatformNotFoundError,
    UnsupportedMediaTypeError,
    PathNotFoundError,
    UnauthorizedError,
    RemoteNotFoundError,
    NetworkError,
    RegistryError,
    ShuttingDownError,
    AmbiguousReferenceError,
)
from ._exceptions import (
    ConnectionLostError,
    DaemonNotRunningError,
    MicrosandboxError,
    PinHolder,
    ProtocolError,
    RpcError,
)

__all__ = [
    "MicrosandboxError",
    "DaemonNotRunningError",
    "ConnectionLostError",
    "ProtocolError",
    "RpcError",
    "PinHolder",
    "ERRORS_BY_NAME",
    "ERRORS_BY_CODE",
    "ParseError",
    "InvalidRequestError",
    "MethodNotFoundError",
    "InvalidParamsError",
    "InvalidReferenceError",
    "InternalError",
    "ImageNotFoundError",
    "ImageInUseError",
    "PinNotFoundError",
    "InvalidImageError",
    "DigestMismatchError",
    "LayerRejectedError",
    "LimitExceededError",
    "StoreError",
    "PlatformNotFoundError",
    "UnsupportedMediaTypeError",
    "PathNotFoundError",
    "UnauthorizedError",
    "RemoteNotFoundError",
    "NetworkError",
    "RegistryError",
    "ShuttingDownError",
    "AmbiguousReferenceError",
]
