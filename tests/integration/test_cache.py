"""The cache API over loaded images: get/list/inspect, reference spellings,
remove (pins, force), prune (counts, empty store), pins, system.df."""

import os
import time

import pytest

from msbtest import proto
from msbtest.checks import assert_handle, now_ms
from msbtest.imagekit import Config
from msbtest.rpc import RpcError
from msbtest.store import consistency_problems, content_files, hex_of


def load(rpc, img, tag=None):
    params = {"path": str(img.layout.path)}
    if tag:
        params["tag"] = tag
    return rpc.call("image.load", params)


def blocks(paths):
    return sum(p.stat().st_blocks * 512 for p in paths)


def manifest_file(store, digest):
    return store / "blobs" / "sha256" / hex_of(digest)


def layer_file(store, diff_id):
    return store / "layers" / "sha256" / (hex_of(diff_id) + ".erofs")


@pytest.fixture
def alpine(rpc, imagekit):
    """An image loaded as `alpine` (docker.io/library/alpine:latest)."""
    img = imagekit.image("example.com/src/alpine:1", [{"etc/os-release": b"ID=alpine\n"}, {"bin/x": b"x"}],
                         Config(cmd=["/bin/sh"]))
    img.layout.strip_ref_names()
    load(rpc, img, tag="alpine")
    return img


# Lookups -------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [
    "alpine",
    "alpine:latest",
    "library/alpine",
    "library/alpine:latest",
    "docker.io/alpine",
    "docker.io/library/alpine",
    "docker.io/library/alpine:latest",
])
def test_reference_spellings(rpc, alpine, spelling):
    h = rpc.call("image.get", {"reference": spelling})
    assert_handle(h, alpine, "docker.io/library/alpine:latest")
    d = rpc.call("image.inspect", {"reference": spelling})
    assert d["handle"] == h


def test_digest_reference(rpc, alpine):
    ref = f"alpine@{alpine.manifest_digest}"
    h = rpc.call("image.get", {"reference": ref})
    # Which reference a digest lookup reports is not fixed by the contract;
    # the manifest is.
    assert h["manifest_digest"] == alpine.manifest_digest
    assert h["layer_count"] == 2
    d = rpc.call("image.inspect", {"reference": f"docker.io/library/alpine@{alpine.manifest_digest}"})
    assert d["handle"]["manifest_digest"] == alpine.manifest_digest


def test_digest_reference_of_an_unknown_manifest(rpc, alpine):
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": "alpine@sha256:" + "0" * 64})
    proto.check_error(e.value, "image-not-found")


@pytest.mark.parametrize("spelling, canonical", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("alpine:3.19", "docker.io/library/alpine:3.19"),
    ("example.com/a/b", "example.com/a/b:latest"),
    ("localhost:5000/x:y", "localhost:5000/x:y"),
    ("user/repo:tag", "docker.io/user/repo:tag"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
    ("index.docker.io/alpine:edge", "docker.io/library/alpine:edge"),
    ("localhost/x", "localhost/x:latest"),
    ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
    ("[::1]:5000/x", "[::1]:5000/x:latest"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
    ("a__b/c-d.e", "docker.io/a__b/c-d.e:latest"),
    ("x.y/z:" + "t" * 128, "x.y/z:" + "t" * 128),
])
def test_not_found_names_the_canonical_reference(rpc, spelling, canonical):
    for method in ("image.get", "image.inspect", "image.remove"):
        with pytest.raises(RpcError) as e:
            rpc.call(method, {"reference": spelling})
        data = proto.check_error(e.value, "image-not-found")
        assert data.get("reference") == canonical, (method, data)


def test_tag_is_canonicalised_on_load(rpc, imagekit):
    img = imagekit.image("example.com/src/x:1", [{"a": b"a"}])
    out = load(rpc, img, tag="user/repo")
    refs = sorted(h["reference"] for h in out)
    assert "docker.io/user/repo:latest" in refs, refs
    assert rpc.call("image.get", {"reference": "user/repo:latest"})["manifest_digest"] == img.manifest_digest


def test_list_newest_first(rpc, imagekit):
    names = [f"example.com/order/i{i}:1" for i in range(4)]
    for n in names:
        load(rpc, imagekit.image(n, [{"f": n.encode()}]))
        time.sleep(0.01)
    listed = rpc.call("image.list")
    assert [h["reference"] for h in listed] == list(reversed(names))
    created = [h["created_at"] for h in listed]
    assert created == sorted(created, reverse=True)


def test_list_rows_hold_the_same_handles(rpc, imagekit):
    """image.list {rows: true}: the same images, in the same order, each an
    array of its handle's members in the order columns names them."""
    empty = rpc.call("image.list", {"rows": True})
    assert empty["rows"] == [] and "reference" in empty["columns"]
    load(rpc, imagekit.image("example.com/rows/a:1", [{"a": b"a"}]))
    load(rpc, imagekit.image("example.com/rows/b:1", [{"b": b"b"}]))
    objects = rpc.call("image.list")
    compact = rpc.call("image.list", {"rows": True})
    assert set(compact) == {"columns", "rows"}
    assert compact["columns"] == list(objects[0])
    assert [dict(zip(compact["columns"], row, strict=True)) for row in compact["rows"]] == objects
    assert rpc.call("image.list", {"rows": False}) == objects


def test_list_follows_every_change(rpc, imagekit):
    """The daemon answers a repeated image.list from the text of the last
    one while nothing commits; every kind of change must show at once, in
    both forms."""

    def both():
        objects = rpc.call("image.list")
        rows = rpc.call("image.list", {"rows": True})
        assert [dict(zip(rows["columns"], row, strict=True)) for row in rows["rows"]] == objects
        assert rpc.call("image.list") == objects  # the kept text, once more
        return {h["reference"]: h for h in objects}

    assert both() == {}
    a = imagekit.image("example.com/follow/a:1", [{"a": b"a"}])
    load(rpc, a)
    assert set(both()) == {"example.com/follow/a:1"}
    load(rpc, imagekit.image("example.com/follow/b:1", [{"b": b"b"}]))
    before = both()
    assert set(before) == {"example.com/follow/a:1", "example.com/follow/b:1"}
    time.sleep(0.01)
    rpc.call("pin.add", {"kind": "sandbox", "name": "follow", "reference": "example.com/follow/a:1"})
    after = both()
    assert after["example.com/follow/a:1"]["last_used_at"] > before["example.com/follow/a:1"]["last_used_at"]
    assert after["example.com/follow/b:1"] == before["example.com/follow/b:1"]
    rpc.call("image.remove", {"reference": "example.com/follow/b:1"})
    assert set(both()) == {"example.com/follow/a:1"}
    rpc.call("image.remove", {"reference": "example.com/follow/a:1", "force": True})
    assert both() == {}


def test_list_order_is_by_first_store_not_last_use(rpc, imagekit):
    a = imagekit.image("example.com/order/a:1", [{"a": b"a"}])
    b = imagekit.image("example.com/order/b:1", [{"b": b"b"}])
    load(rpc, a)
    time.sleep(0.01)
    load(rpc, b)
    time.sleep(0.01)
    load(rpc, a)  # a is used again but was stored first
    assert [h["reference"] for h in rpc.call("image.list")] == ["example.com/order/b:1", "example.com/order/a:1"]


# Remove ----------------------------------------------------------------------


def test_remove_deletes_unshared_data(daemon, rpc, imagekit):
    lay = imagekit.layout("rm")
    a = lay.add_image("example.com/rm/a:1", [{"base": b"base"}])
    b = lay.add_image("example.com/rm/b:1", [{"top": b"top"}], base=a)
    load(rpc, a)  # the layout holds both a and b
    assert len(rpc.call("image.list")) == 2
    assert rpc.call("image.remove", {"reference": "example.com/rm/b:1"}) is None
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": "example.com/rm/b:1"})
    proto.check_error(e.value, "image-not-found")
    s = daemon.store
    assert not manifest_file(s, b.manifest_digest).exists()
    assert not manifest_file(s, b.config_digest).exists()
    assert not layer_file(s, b.diff_ids[1]).exists()
    assert not (s / "fsmeta" / "sha256" / (hex_of(b.manifest_digest) + ".erofs")).exists()
    assert not (s / "vmdk" / "sha256" / (hex_of(b.manifest_digest) + ".vmdk")).exists()
    assert layer_file(s, a.diff_ids[0]).exists(), "a shared layer was deleted"
    assert manifest_file(s, a.manifest_digest).exists()
    assert_handle(rpc.call("image.get", {"reference": "example.com/rm/a:1"}), a, "example.com/rm/a:1")
    rpc.call("image.remove", {"reference": "example.com/rm/a:1"})
    assert rpc.call("image.list") == []
    files = content_files(s)
    assert files["blobs"] == [] and files["layers"] == [] and files["fsmeta"] == [] and files["vmdk"] == [], files
    assert consistency_problems(s, rpc) == []


def test_remove_one_of_two_references_keeps_the_manifest(daemon, rpc, imagekit):
    img = imagekit.image("example.com/rm/two:1", [{"x": b"x"}])
    load(rpc, img, tag="example.com/rm/two:2")
    rpc.call("image.remove", {"reference": "example.com/rm/two:1"})
    assert manifest_file(daemon.store, img.manifest_digest).exists()
    assert_handle(rpc.call("image.get", {"reference": "example.com/rm/two:2"}), img, "example.com/rm/two:2")


def test_remove_by_other_spelling(rpc, alpine):
    rpc.call("image.remove", {"reference": "library/alpine"})
    assert rpc.call("image.list") == []


def test_remove_unknown(rpc):
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "nothing:here"})
    data = proto.check_error(e.value, "image-not-found")
    assert data.get("reference") == "docker.io/library/nothing:here"


def test_remove_twice(rpc, alpine):
    rpc.call("image.remove", {"reference": "alpine"})
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "alpine"})
    proto.check_error(e.value, "image-not-found")


@pytest.mark.parametrize("kind", ["sandbox", "snapshot"])
def test_remove_pinned_without_force_changes_nothing(daemon, rpc, alpine, kind):
    rpc.call("pin.add", {"kind": kind, "name": "box-1", "reference": "alpine"})
    before_list = rpc.call("image.list")
    before_files = content_files(daemon.store)
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "alpine"})
    data = proto.check_error(e.value, "image-in-use")
    assert data.get("holders") == [{"kind": kind, "name": "box-1"}], data
    assert data.get("reference") == "docker.io/library/alpine:latest", data
    assert rpc.call("image.list") == before_list
    assert content_files(daemon.store) == before_files
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "alpine", "force": False})
    proto.check_error(e.value, "image-in-use")


def test_image_in_use_lists_every_holder(rpc, alpine):
    rpc.call("pin.add", {"kind": "sandbox", "name": "s1", "reference": "alpine"})
    rpc.call("pin.add", {"kind": "snapshot", "name": "snap", "reference": "alpine:latest"})
    rpc.call("pin.add", {"kind": "sandbox", "name": "s2", "reference": "docker.io/library/alpine"})
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "alpine"})
    data = proto.check_error(e.value, "image-in-use")
    holders = sorted((h["kind"], h["name"]) for h in data["holders"])
    assert holders == [("sandbox", "s1"), ("sandbox", "s2"), ("snapshot", "snap")]


def test_remove_pinned_with_force_keeps_the_data(daemon, rpc, alpine):
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "box", "reference": "alpine"})
    assert rpc.call("image.remove", {"reference": "alpine", "force": True}) is None
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": "alpine"})
    proto.check_error(e.value, "image-not-found")
    s = daemon.store
    assert manifest_file(s, alpine.manifest_digest).exists()
    for d in alpine.diff_ids:
        assert layer_file(s, d).exists()
    for layer in rootfs["layers"]:
        assert os.path.exists(layer["path"])
    pins = rpc.call("pin.list")
    assert [(p["kind"], p["name"], p["manifest_digest"]) for p in pins] == [("sandbox", "box", alpine.manifest_digest)]
    # A prune keeps what the pin holds.
    rpc.call("image.prune")
    assert manifest_file(s, alpine.manifest_digest).exists()
    for d in alpine.diff_ids:
        assert layer_file(s, d).exists()
    for p in (rootfs["fsmeta_path"], rootfs["vmdk_path"]):
        assert p is None or os.path.exists(p)
    # Once the pin goes, a prune removes it all.
    rpc.call("pin.remove", {"kind": "sandbox", "name": "box"})
    report = rpc.call("image.prune")
    assert report["manifests_removed"] == 1 and report["layers_removed"] == 2, report
    files = content_files(s)
    assert files["blobs"] == [] and files["layers"] == [] and files["fsmeta"] == [] and files["vmdk"] == [], files


def test_force_remove_of_unpinned(rpc, alpine):
    assert rpc.call("image.remove", {"reference": "alpine", "force": True}) is None
    assert rpc.call("image.list") == []


# Prune -------------------------------------------------------------------------


def _fill(rpc, imagekit):
    lay = imagekit.layout("prune")
    a = lay.add_image("example.com/pr/a:1", [{"base": os.urandom(30000)}, {"mid": b"m"}])
    b = lay.add_image("example.com/pr/b:1", [{"top": b"t"}], base=a)
    c = imagekit.image("example.com/pr/c:1", [{"c": os.urandom(10000)}])
    load(rpc, a)
    load(rpc, c, tag="example.com/pr/c:2")
    return a, b, c


def test_prune_removes_everything_unpinned(daemon, rpc, imagekit):
    a, b, c = _fill(rpc, imagekit)
    s = daemon.store
    before = content_files(s)
    assert len(before["layers"]) == 4
    df = rpc.call("system.df")
    assert df["reclaimable_bytes"] > 0
    freed = blocks(before["blobs"] + before["layers"] + before["fsmeta"] + before["vmdk"])
    report = rpc.call("image.prune")
    assert set(report) == {"image_refs_removed", "manifests_removed", "layers_removed", "fsmeta_removed",
                           "vmdk_removed", "bytes_reclaimed"}
    assert report["image_refs_removed"] == 4, report
    assert report["manifests_removed"] == 3, report
    assert report["layers_removed"] == 4, report
    assert report["fsmeta_removed"] == len(before["fsmeta"]), report
    assert report["vmdk_removed"] == len(before["vmdk"]), report
    # Per-manifest outputs, when the daemon builds them, exist once per manifest.
    assert len(before["fsmeta"]) in (0, 3) and len(before["vmdk"]) in (0, 3), before
    assert report["bytes_reclaimed"] is not None and report["bytes_reclaimed"] >= freed, (report, freed)
    after = content_files(s)
    for kind in ("blobs", "layers", "fsmeta", "vmdk", "tmp"):
        assert after[kind] == [], (kind, after[kind])
    assert rpc.call("image.list") == []
    df = rpc.call("system.df")
    assert df["image_refs"] == 0 and df["reclaimable_bytes"] == 0
    for kind in ("manifests", "configs", "layers", "fsmeta", "vmdk"):
        assert df[kind] == {"count": 0, "bytes": 0}, (kind, df)
    again = rpc.call("image.prune")
    assert {k: v for k, v in again.items() if k != "bytes_reclaimed"} == {
        "image_refs_removed": 0, "manifests_removed": 0, "layers_removed": 0, "fsmeta_removed": 0,
        "vmdk_removed": 0}
    assert again["bytes_reclaimed"] in (0, None)


def test_prune_on_empty_store(rpc):
    report = rpc.call("image.prune")
    assert {k: v for k, v in report.items() if k != "bytes_reclaimed"} == {
        "image_refs_removed": 0, "manifests_removed": 0, "layers_removed": 0, "fsmeta_removed": 0,
        "vmdk_removed": 0}


def test_prune_keeps_pinned(daemon, rpc, imagekit):
    a, b, c = _fill(rpc, imagekit)
    rpc.call("pin.add", {"kind": "snapshot", "name": "snap-b", "reference": "example.com/pr/b:1"})
    report = rpc.call("image.prune")
    # a and c go (c under two references); b's manifest and its three layers
    # (two shared with a) stay.
    assert report["manifests_removed"] == 2, report
    assert report["layers_removed"] == 1, report
    s = daemon.store
    assert manifest_file(s, b.manifest_digest).exists()
    for d in b.diff_ids:
        assert layer_file(s, d).exists()
    assert not manifest_file(s, a.manifest_digest).exists()
    assert not manifest_file(s, c.manifest_digest).exists()
    assert not layer_file(s, c.diff_ids[0]).exists()
    assert consistency_problems(s, rpc) == []
    # The pin still resolves to a bootable rootfs.
    pins = rpc.call("pin.list")
    assert [p["manifest_digest"] for p in pins] == [b.manifest_digest]


def test_df_reclaimable_is_zero_when_everything_is_pinned(rpc, alpine):
    rpc.call("pin.add", {"kind": "sandbox", "name": "s", "reference": "alpine"})
    assert rpc.call("system.df")["reclaimable_bytes"] == 0


def test_prune_sweeps_leftovers(daemon, rpc, alpine):
    stray_tmp = daemon.store / "tmp" / "stray"
    stray_tmp.write_bytes(b"x" * 8192)
    stray_blob = daemon.store / "blobs" / "sha256" / ("ef" * 32)
    stray_blob.write_bytes(b"orphan")
    rpc.call("pin.add", {"kind": "sandbox", "name": "keep", "reference": "alpine"})
    rpc.call("image.prune")
    assert not stray_tmp.exists()
    assert not stray_blob.exists()
    assert manifest_file(daemon.store, alpine.manifest_digest).exists()


# Pins --------------------------------------------------------------------------


def test_pin_add_returns_rootfs(daemon, rpc, alpine):
    t0 = now_ms()
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "sb", "reference": "alpine:latest"})
    assert set(rootfs) == {"manifest_digest", "fsmeta_path", "vmdk_path", "layers"}, rootfs
    assert rootfs["manifest_digest"] == alpine.manifest_digest
    assert [l["diff_id"] for l in rootfs["layers"]] == alpine.diff_ids
    for layer in rootfs["layers"]:
        assert set(layer) == {"diff_id", "path", "erofs_size_bytes"}
        assert os.path.isabs(layer["path"]) and os.path.isfile(layer["path"]), layer
        assert os.path.realpath(layer["path"]) == os.path.realpath(layer_file(daemon.store, layer["diff_id"]))
        if layer["erofs_size_bytes"] is not None:
            assert os.path.getsize(layer["path"]) == layer["erofs_size_bytes"]
    hexd = hex_of(alpine.manifest_digest)
    for key, want in (("fsmeta_path", daemon.store / "fsmeta" / "sha256" / (hexd + ".erofs")),
                      ("vmdk_path", daemon.store / "vmdk" / "sha256" / (hexd + ".vmdk"))):
        if rootfs[key] is not None:
            assert os.path.isabs(rootfs[key]) and os.path.isfile(rootfs[key]), rootfs
            assert os.path.realpath(rootfs[key]) == os.path.realpath(want), rootfs
    pins = rpc.call("pin.list")
    assert len(pins) == 1
    p = pins[0]
    assert set(p) == {"kind", "name", "reference", "manifest_digest", "created_at"}
    assert (p["kind"], p["name"], p["reference"], p["manifest_digest"]) == (
        "sandbox", "sb", "docker.io/library/alpine:latest", alpine.manifest_digest)
    assert t0 - 1000 <= p["created_at"] <= now_ms() + 1000
    h = rpc.call("image.get", {"reference": "alpine"})
    assert h["last_used_at"] >= t0 - 1000, "pin.add must touch last_used_at"


def test_pin_replaces_same_name(rpc, imagekit, alpine):
    other = imagekit.image("example.com/pin/other:1", [{"o": b"o"}])
    load(rpc, other)
    rpc.call("pin.add", {"kind": "sandbox", "name": "n", "reference": "alpine"})
    rpc.call("pin.add", {"kind": "snapshot", "name": "n", "reference": "alpine"})
    rpc.call("pin.add", {"kind": "sandbox", "name": "n", "reference": "example.com/pin/other:1"})
    pins = sorted((p["kind"], p["name"], p["manifest_digest"]) for p in rpc.call("pin.list"))
    assert pins == [("sandbox", "n", other.manifest_digest), ("snapshot", "n", alpine.manifest_digest)]
    # alpine is now held only by the snapshot pin.
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "alpine"})
    assert proto.check_error(e.value, "image-in-use")["holders"] == [{"kind": "snapshot", "name": "n"}]


def test_pin_list_oldest_first(rpc, alpine):
    for i in range(4):
        rpc.call("pin.add", {"kind": "sandbox", "name": f"p{i}", "reference": "alpine"})
        time.sleep(0.005)
    assert [p["name"] for p in rpc.call("pin.list")] == ["p0", "p1", "p2", "p3"]


def test_pin_add_unknown_image(rpc):
    with pytest.raises(RpcError) as e:
        rpc.call("pin.add", {"kind": "sandbox", "name": "x", "reference": "ghost"})
    proto.check_error(e.value, "image-not-found")
    assert rpc.call("pin.list") == []


def test_pin_remove(rpc, alpine):
    rpc.call("pin.add", {"kind": "sandbox", "name": "x", "reference": "alpine"})
    with pytest.raises(RpcError) as e:
        rpc.call("pin.remove", {"kind": "snapshot", "name": "x"})
    proto.check_error(e.value, "pin-not-found")
    assert rpc.call("pin.remove", {"kind": "sandbox", "name": "x"}) is None
    assert rpc.call("pin.list") == []
    with pytest.raises(RpcError) as e:
        rpc.call("pin.remove", {"kind": "sandbox", "name": "x"})
    proto.check_error(e.value, "pin-not-found")
    rpc.call("image.remove", {"reference": "alpine"})


def test_pins_survive_restart(daemon, alpine, rpc):
    rpc.call("pin.add", {"kind": "snapshot", "name": "persist", "reference": "alpine"})
    daemon.restart()
    with daemon.client() as c:
        pins = c.call("pin.list")
        assert [(p["kind"], p["name"]) for p in pins] == [("snapshot", "persist")]
        h = c.call("image.get", {"reference": "alpine"})
        assert_handle(h, alpine, "docker.io/library/alpine:latest")
        with pytest.raises(RpcError) as e:
            c.call("image.remove", {"reference": "alpine"})
        proto.check_error(e.value, "image-in-use")


# system.df -----------------------------------------------------------------


def test_df_matches_the_files(daemon, rpc, imagekit):
    a, b, c = _fill(rpc, imagekit)
    df = rpc.call("system.df")
    files = content_files(daemon.store)
    assert df["image_refs"] == 4
    assert df["manifests"]["count"] == 3 and df["configs"]["count"] == 3
    assert df["layers"] == {"count": 4, "bytes": blocks(files["layers"])}
    assert df["fsmeta"] == {"count": len(files["fsmeta"]), "bytes": blocks(files["fsmeta"])}
    assert df["vmdk"] == {"count": len(files["vmdk"]), "bytes": blocks(files["vmdk"])}
    content = sum(df[k]["bytes"] for k in ("manifests", "configs", "layers", "fsmeta", "vmdk"))
    assert content == blocks(files["blobs"] + files["layers"] + files["fsmeta"] + files["vmdk"])
    assert df["total_bytes"] >= content + df["index_bytes"]
    assert df["reclaimable_bytes"] >= content


def test_store_error_when_the_store_cannot_be_written(daemon, rpc, imagekit):
    # Replace the layers directory by a plain file: every write below it
    # fails (ENOTDIR) whatever our privileges, which must surface as
    # store-error while the daemon keeps serving.
    img = imagekit.image("example.com/store/err:1", [{"a": os.urandom(5000)}])
    layers = daemon.store / "layers"
    saved = daemon.store / "layers.saved"
    layers.rename(saved)
    layers.write_bytes(b"not a directory")
    try:
        with pytest.raises(RpcError) as e:
            load(rpc, img)
        proto.check_error(e.value, "store-error")
        assert rpc.call("image.list") == []
    finally:
        layers.unlink()
        saved.rename(layers)
    out = load(rpc, img)
    assert out[0]["manifest_digest"] == img.manifest_digest
    assert consistency_problems(daemon.store, rpc) == []


def test_lookups_do_not_touch_last_used(rpc, alpine):
    h0 = rpc.call("image.get", {"reference": "alpine"})
    time.sleep(0.02)
    rpc.call("image.inspect", {"reference": "alpine"})
    rpc.call("image.list")
    h1 = rpc.call("image.get", {"reference": "alpine"})
    assert h1["last_used_at"] == h0["last_used_at"], (h0, h1)
    time.sleep(0.02)
    t = now_ms()
    rpc.call("pin.add", {"kind": "sandbox", "name": "touch", "reference": "alpine"})
    h2 = rpc.call("image.get", {"reference": "alpine"})
    assert h2["last_used_at"] >= t - 5 and h2["last_used_at"] > h1["last_used_at"], (h1, h2)
    assert h2["created_at"] == h0["created_at"]


def test_remove_other_reference_of_a_pinned_manifest(rpc, imagekit):
    # Pins hold manifests (README, "The protocol"): any reference to a pinned
    # manifest is in use.
    img = imagekit.image("example.com/pm/one:1", [{"x": b"x"}])
    load(rpc, img, tag="example.com/pm/two:1")
    rpc.call("pin.add", {"kind": "sandbox", "name": "p", "reference": "example.com/pm/one:1"})
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "example.com/pm/two:1"})
    data = proto.check_error(e.value, "image-in-use")
    assert data["holders"] == [{"kind": "sandbox", "name": "p"}]
    assert len(rpc.call("image.list")) == 2


def test_prune_during_a_load_spares_it(daemon, rpc, big_image):
    loader = daemon.client(timeout=120)
    i = loader.send_request("image.load", {"path": str(big_image.layout.path)})
    pruned = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pruned.append(rpc.call("image.prune"))
        try:
            resp = loader.wait(i, timeout=0)
            break
        except TimeoutError:
            time.sleep(0.005)
    else:
        resp = loader.wait(i)
    assert len(pruned) >= 2, "no prune overlapped the load"
    assert "result" in resp, resp
    assert consistency_problems(daemon.store, rpc) == []
    # A prune that ran after the load committed may legitimately have
    # removed the (unpinned) image, but then whole: one manifest and its
    # three layers in one report.  Otherwise it is there and whole.
    removed = [p for p in pruned if p["manifests_removed"]]
    if removed:
        assert [(p["manifests_removed"], p["layers_removed"]) for p in removed] == [(1, 3)], pruned
        assert rpc.call("image.list") == []
        rpc.call("image.load", {"path": str(big_image.layout.path)}, timeout=120)
    d = rpc.call("image.inspect", {"reference": big_image.ref_name})
    assert d["handle"]["manifest_digest"] == big_image.manifest_digest
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "b", "reference": big_image.ref_name})
    for layer in rootfs["layers"]:
        assert os.path.getsize(layer["path"]) == layer["erofs_size_bytes"]
    assert consistency_problems(daemon.store, rpc) == []


def test_concurrent_loads_of_the_same_image(daemon, imagekit):
    img = imagekit.image("example.com/same/x:1", [{"a": os.urandom(200_000)}, {"b": os.urandom(100_000)}])
    clients = [daemon.client(timeout=120) for _ in range(4)]
    ids = [c.send_request("image.load", {"path": str(img.layout.path)}) for c in clients]
    for c, i in zip(clients, ids):
        resp = c.wait(i)
        assert "result" in resp, resp
        assert resp["result"][0]["manifest_digest"] == img.manifest_digest
    with daemon.client() as c:
        assert len(c.call("image.list")) == 1
        df = c.call("system.df")
        assert df["manifests"]["count"] == 1 and df["layers"]["count"] == 2
        assert consistency_problems(daemon.store, c) == []


@pytest.mark.parametrize("policy", ["never", "if-missing"])
def test_pull_cache_hit_needs_no_registry_and_touches_last_used(rpc, alpine, policy):
    # example.com is not reachable from the tests (no network): a cache hit
    # must be served from the store.  The README: last_used_at is the last
    # pull, cache hits too.
    h0 = rpc.call("image.get", {"reference": "alpine"})
    time.sleep(0.02)
    t = now_ms()
    h = rpc.call("image.pull", {"reference": "alpine", "policy": policy})
    assert h["manifest_digest"] == alpine.manifest_digest
    assert h["reference"] == "docker.io/library/alpine:latest"
    assert h["created_at"] == h0["created_at"]
    assert h["last_used_at"] >= t - 5 and h["last_used_at"] > h0["last_used_at"], (h0, h)
    assert rpc.call("image.get", {"reference": "alpine"}) == h
    events = [n["params"]["event"] for n in rpc.notifications if n["method"] == "image.pull.progress"]
    assert events and events[-1] == "complete", events


def test_pull_never_of_a_missing_image(rpc):
    with pytest.raises(RpcError) as e:
        rpc.call("image.pull", {"reference": "example.com/none/x:1", "policy": "never"})
    data = proto.check_error(e.value, "image-not-found")
    assert data.get("reference") == "example.com/none/x:1"


@pytest.mark.parametrize("rival", ["image.remove", "image.prune"])
def test_pin_add_racing_remove_or_prune(daemon, imagekit, rival):
    # pin.add and a remove/prune of the same image on two connections: the
    # pin and the deletion must never both win, and a pin that won holds
    # every file its Rootfs names.
    img = imagekit.image("example.com/race/x:1", [{"a": os.urandom(100_000)}, {"b": b"b"}])
    a, b = daemon.client(), daemon.client()
    for round in range(15):
        a.call("image.load", {"path": str(img.layout.path)})
        ia = a.send_request("pin.add", {"kind": "sandbox", "name": "racer", "reference": "example.com/race/x:1"})
        params = {"reference": "example.com/race/x:1"} if rival == "image.remove" else {}
        ib = b.send_request(rival, params)
        ra, rb = a.wait(ia), b.wait(ib)
        if "result" in ra:
            for layer in ra["result"]["layers"]:
                assert os.path.isfile(layer["path"]), (round, ra, rb)
            for key in ("fsmeta_path", "vmdk_path"):
                assert ra["result"][key] is None or os.path.isfile(ra["result"][key]), (round, ra, rb)
            if rival == "image.remove":
                assert "error" in rb, f"round {round}: pin.add and remove both succeeded: {rb}"
                proto.check_error(rb, "image-in-use")
        else:
            proto.check_error(ra, "image-not-found")
            assert "result" in rb, (round, ra, rb)
        assert consistency_problems(daemon.store, a) == []
        if "result" in ra:
            a.call("pin.remove", {"kind": "sandbox", "name": "racer"})


def test_reclaimable_and_reclaimed_bytes_are_exact(daemon, rpc, imagekit):
    # a is pinned; b shares a's layer and adds one: what a prune can free
    # is exactly b's own files (manifest, config, top layer, fsmeta, VMDK),
    # counted in allocated blocks.
    lay = imagekit.layout("exact")
    a = lay.add_image("example.com/exact/a:1", [{"base": os.urandom(50_000)}])
    b = lay.add_image("example.com/exact/b:1", [{"top": os.urandom(30_000)}], base=a)
    load(rpc, a)
    rpc.call("pin.add", {"kind": "sandbox", "name": "a", "reference": "example.com/exact/a:1"})
    s = daemon.store
    own = [manifest_file(s, b.manifest_digest), manifest_file(s, b.config_digest), layer_file(s, b.diff_ids[1]),
           s / "fsmeta" / "sha256" / (hex_of(b.manifest_digest) + ".erofs"),
           s / "vmdk" / "sha256" / (hex_of(b.manifest_digest) + ".vmdk")]
    own = [p for p in own if p.exists()]
    freeable = blocks(own)
    assert rpc.call("system.df")["reclaimable_bytes"] == freeable
    report = rpc.call("image.prune")
    assert report["bytes_reclaimed"] == freeable, report
    assert (report["manifests_removed"], report["layers_removed"]) == (1, 1), report
    assert all(not p.exists() for p in own)
    assert rpc.call("system.df")["reclaimable_bytes"] == 0


@pytest.mark.parametrize("rival", ["image.remove", "image.prune"])
def test_load_racing_removal_of_a_shared_layer(daemon, imagekit, rival):
    # b shares a's bottom layer.  Removing a (or pruning) while b loads must
    # not delete the layer b is about to reference: after every round, all
    # files of every listed image exist.
    lay = imagekit.layout("shared-race")
    a = lay.add_image("example.com/race/a:1", [{"base": os.urandom(2_000_000)}])
    b = lay.add_image("example.com/race/b:1", [{"top": os.urandom(500_000)}], base=a)
    a_lay, b_lay = imagekit.layout_of(a), imagekit.layout_of(b)
    assert b.diff_ids[0] == a.diff_ids[0]
    c1, c2 = daemon.client(timeout=60), daemon.client(timeout=60)
    for round in range(8):
        c1.call("image.load", {"path": str(a_lay.path)})
        i2 = c2.send_request("image.load", {"path": str(b_lay.path)})
        params = {"reference": "example.com/race/a:1"} if rival == "image.remove" else {}
        time.sleep(0.002 * round)
        i1 = c1.send_request(rival, params)
        r1, r2 = c1.wait(i1), c2.wait(i2)
        assert "result" in r1, (round, r1)
        assert "result" in r2, (round, r2)
        assert consistency_problems(daemon.store, c1) == [], round
        for h in c1.call("image.list"):
            rootfs = c1.call("pin.add", {"kind": "sandbox", "name": "check", "reference": h["reference"]})
            for layer in rootfs["layers"]:
                assert os.path.isfile(layer["path"]), (round, h, layer)
            c1.call("pin.remove", {"kind": "sandbox", "name": "check"})
        c1.call("image.prune")
