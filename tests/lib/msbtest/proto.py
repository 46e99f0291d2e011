"""The protocol document (proto/openrpc.json) as test data.

``document()``            the parsed OpenRPC document (cached).
``method_names()``        the set of method names it declares.
``error(name)``           ``{"code", "message", "data"}`` of an error by data.name.
``limit(name)``           a value from ``x-limits`` (e.g. ``request_line_bytes``).
``check_error(err, name, parameter=None)``
    assert that an :class:`msbtest.rpc.RpcError` (or a raw error response)
    is the proto's error ``name``: same code, ``data.name``, a string
    message, and ``data.parameter`` when given.  Returns the error's data.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from .rpc import RpcError

__all__ = ["PROTO_PATH", "document", "method_names", "error", "limit", "check_error"]

PROTO_PATH = Path(__file__).resolve().parents[3] / "proto" / "openrpc.json"


@functools.lru_cache(maxsize=None)
def _document_text() -> str:
    return PROTO_PATH.read_text()


def document() -> dict:
    return json.loads(_document_text())


def method_names() -> set[str]:
    return {m["name"] for m in document()["methods"]}


def error(name: str) -> dict:
    for e in document()["components"]["errors"].values():
        if e["data"]["name"] == name:
            return e
    raise KeyError(f"proto/openrpc.json declares no error named {name!r}")


def limit(name: str):
    return document()["x-limits"][name]


def check_error(err, name: str, parameter: str | None = None) -> dict:
    if isinstance(err, dict):
        err = RpcError(err)
    assert isinstance(err, RpcError), f"expected an RpcError, got {err!r}"
    want = error(name)
    assert err.code == want["code"], f"want code {want['code']} ({name}), got {err}"
    assert isinstance(err.message, str) and err.message, f"error without a message: {err}"
    assert isinstance(err.data, dict), f"error without a data object: {err}"
    assert err.data.get("name") == name, f"want data.name {name!r}, got {err}"
    if parameter is not None:
        assert err.data.get("parameter") == parameter, f"want data.parameter {parameter!r}, got {err}"
    return err.data
