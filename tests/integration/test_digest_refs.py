"""Images named by manifest digest or by a unique prefix of its hex digits,
as `msb-image ls` shows them (issue: `inspect 72e27cbf4238` was read as a
repository), and repository paths of 255 characters after any domain."""

from __future__ import annotations

import pytest

from msbtest import proto
from msbtest.rpc import RpcError


def load(rpc, img, tag):
    return rpc.call("image.load", {"path": str(img.layout.path), "tag": tag})


@pytest.fixture
def two(rpc, imagekit):
    a = imagekit.image("example.com/d/a:1", [{"a": b"a" * 100}])
    b = imagekit.image("example.com/d/b:1", [{"b": b"b" * 100}])
    load(rpc, a, "example.com/d/a:1")
    load(rpc, a, "example.com/d/a:2")
    load(rpc, b, "example.com/d/b:1")
    return a, b


def _spellings(digest):
    hexd = digest.split(":", 1)[1]
    return [digest, hexd, hexd[:12], "sha256:" + hexd[:12], hexd[:40]]


def test_get_and_inspect_by_digest_and_prefix(rpc, two):
    a, b = two
    for spelling in _spellings(a.manifest_digest):
        h = rpc.call("image.get", {"reference": spelling})
        assert h["manifest_digest"] == a.manifest_digest, spelling
        # The newest reference of that image is the one shown.
        assert h["reference"] == "example.com/d/a:2", spelling
        d = rpc.call("image.inspect", {"reference": spelling})
        assert d["handle"]["manifest_digest"] == a.manifest_digest
        assert [l["diff_id"] for l in d["layers"]] == a.diff_ids


def test_pin_add_by_prefix_then_remove_needs_force(rpc, two):
    a, _ = two
    prefix = a.manifest_digest.split(":", 1)[1][:12]
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "sb", "reference": prefix})
    assert rootfs["manifest_digest"] == a.manifest_digest
    pins = rpc.call("pin.list")
    assert [(p["name"], p["manifest_digest"]) for p in pins] == [("sb", a.manifest_digest)]
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": prefix})
    proto.check_error(e.value, "image-in-use")
    assert e.value.data["holders"] == [{"kind": "sandbox", "name": "sb"}]


def test_remove_by_digest_removes_every_reference(rpc, two):
    a, b = two
    rpc.call("image.remove", {"reference": "sha256:" + a.manifest_digest.split(":", 1)[1][:16]})
    refs = sorted(h["reference"] for h in rpc.call("image.list"))
    assert refs == ["example.com/d/b:1"]
    assert rpc.call("image.get", {"reference": b.manifest_digest})["reference"] == "example.com/d/b:1"
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": a.manifest_digest})
    proto.check_error(e.value, "image-not-found")


def test_hex_name_is_a_name_first(rpc, imagekit, two):
    a, _ = two
    hex12 = a.manifest_digest.split(":", 1)[1][:12]
    c = imagekit.image("example.com/d/c:1", [{"c": b"c"}])
    # A repository whose name is those 12 digits wins over the prefix.
    load(rpc, c, hex12)
    assert rpc.call("image.get", {"reference": hex12})["manifest_digest"] == c.manifest_digest
    assert rpc.call("image.get", {"reference": "sha256:" + hex12})["manifest_digest"] == a.manifest_digest


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "A" * 12, "sha256:" + "0" * 65, "sha256:"])
def test_malformed_digest_is_invalid_reference(rpc, bad):
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": bad})
    proto.check_error(e.value, "invalid-reference")


def test_unknown_prefix_is_not_found(rpc, two):
    with pytest.raises(RpcError) as e:
        rpc.call("image.inspect", {"reference": "sha256:" + "f" * 12})
    proto.check_error(e.value, "image-not-found")
    # Eleven digits are only a name.
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": two[0].manifest_digest.split(":", 1)[1][:11]})
    proto.check_error(e.value, "image-not-found")


def test_ambiguous_reference_is_in_the_protocol(rpc):
    doc = rpc.call("rpc.discover")
    err = doc["components"]["errors"]["AmbiguousReference"]
    assert err["code"] == 1017 and err["data"]["name"] == "ambiguous-reference"
    for name in ("image.get", "image.inspect", "image.remove", "pin.add"):
        m = next(m for m in doc["methods"] if m["name"] == name)
        assert {"$ref": "#/components/errors/AmbiguousReference"} in m["errors"], name


def test_path_of_255_after_a_long_domain(rpc, imagekit):
    # distribution/reference v0.6: the 255 limit is the path's, not the domain's.
    path = "p" * 255
    ref = f"registry.example.com:5000/{path}:1"
    img = imagekit.image("example.com/d/long:1", [{"l": b"l"}])
    out = load(rpc, img, ref)
    assert out[0]["reference"] == ref
    with pytest.raises(RpcError) as e:
        load(rpc, img, f"example.com/{path}p:1")
    proto.check_error(e.value, "invalid-reference")
