"""The SDK follows proto/openrpc.json: these tests fail when the two drift."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from fakedaemon import PROTO_PATH

import microsandbox
from microsandbox import _client, _errors
from microsandbox._progress import PULL_EVENT_TYPES
from microsandbox.errors import ERRORS_BY_CODE, ERRORS_BY_NAME, MicrosandboxError, RpcError

GENERATOR = Path(__file__).resolve().parent.parent / "tools" / "gen_errors.py"


def proto() -> dict[str, Any]:
    return json.loads(PROTO_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_errors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_error_module_is_up_to_date() -> None:
    generated = load_generator().render(PROTO_PATH)
    committed = Path(_errors.__file__).read_text(encoding="utf-8")
    assert committed == generated, (
        "python-sdk/src/microsandbox/_errors.py is stale: run "
        "python3 python-sdk/tools/gen_errors.py proto/openrpc.json python-sdk/src/microsandbox/_errors.py"
    )


def test_one_class_per_error_name_with_its_code() -> None:
    errors = proto()["components"]["errors"]
    names = {e["data"]["name"]: e["code"] for e in errors.values()}
    assert set(ERRORS_BY_NAME) == set(names)
    for name, code in names.items():
        cls = ERRORS_BY_NAME[name]
        assert issubclass(cls, RpcError) and issubclass(cls, MicrosandboxError)
        assert cls.error_name == name and cls.code == code
        assert getattr(microsandbox, cls.__name__) is cls
    for code, cls in ERRORS_BY_CODE.items():
        assert cls.code == code


def test_seed_error_names_are_fixed() -> None:
    # The README fixes these two; the rest is proto's to choose.
    assert microsandbox.ImageNotFoundError.code == 1001
    assert microsandbox.ImageNotFoundError.error_name == "image-not-found"
    assert microsandbox.ImageInUseError.code == 1002
    assert microsandbox.ImageInUseError.error_name == "image-in-use"
    assert issubclass(microsandbox.InvalidReferenceError, microsandbox.InvalidParamsError)
    assert issubclass(microsandbox.DaemonNotRunningError, MicrosandboxError)


def test_pull_event_names_match_the_proto() -> None:
    schema = proto()["components"]["schemas"]["PullProgress"]
    assert set(PULL_EVENT_TYPES) == set(schema["properties"]["event"]["enum"])
    for cls in PULL_EVENT_TYPES.values():
        for field in cls.__dataclass_fields__.values():
            if field.name != "event":
                assert field.name in schema["properties"], (cls, field.name)


def test_result_types_have_the_proto_fields() -> None:
    schemas = proto()["components"]["schemas"]
    pairs = {
        "ImageHandle": microsandbox.ImageHandle,
        "ImageDetail": microsandbox.ImageDetail,
        "ImageConfigDetail": microsandbox.ImageConfigDetail,
        "ImageLayerDetail": microsandbox.ImageLayerDetail,
        "ImagePruneReport": microsandbox.ImagePruneReport,
        "Rootfs": microsandbox.Rootfs,
        "RootfsLayer": microsandbox.RootfsLayer,
        "Pin": microsandbox.Pin,
    }
    for schema_name, cls in pairs.items():
        schema = schemas[schema_name]
        fields = [f for f in cls.__dataclass_fields__ if not f.startswith("_")]
        assert fields == list(schema["properties"]), schema_name
        assert set(schema["required"]) == set(fields), schema_name


def test_idempotent_methods_exist_in_the_proto() -> None:
    methods = {m["name"] for m in proto()["methods"]}
    assert _client.IDEMPOTENT_METHODS <= methods


def test_pull_policies_and_pin_kinds_match_the_proto() -> None:
    from microsandbox import _image

    methods = {m["name"]: {p["name"]: p for p in m["params"]} for m in proto()["methods"]}
    assert list(_image._PULL_POLICIES) == methods["image.pull"]["policy"]["schema"]["enum"]
    assert [kind.value for kind in microsandbox.PinKind] == methods["pin.add"]["kind"]["schema"]["enum"]
