"""Every exception this package raises; all derive from MicrosandboxError.

The classes for errors the daemon reports (RpcError subclasses) are generated
from proto/openrpc.json into _errors.py, one per `error.data.name`.
"""

from ._errors import *  # noqa: F401,F403
from ._errors import ERRORS_BY_CODE, ERRORS_BY_NAME, __all__ as _generated
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
    *_generated,
]
