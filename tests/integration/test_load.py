"""image.load from OCI layouts, OCI archives, docker-save archives and
platform indexes built in the test, every field checked against the image."""

import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from msbtest import proto
from msbtest.checks import assert_detail, assert_handle, now_ms
from msbtest.daemon import daemon_env
from msbtest.imagekit import (MT_DOCKER_CONFIG, MT_DOCKER_LAYER, MT_DOCKER_MANIFEST, MT_LAYER_GZIP,
                              REF_NAME_ANNOTATION, CharDev, Config, Dir, File, Hardlink, Symlink, host_platform,
                              make_tar, sha256_digest, write_fast_tar)
from msbtest.rpc import RpcClient, RpcError
from msbtest.store import consistency_problems, content_files

REF = "example.com/test/app:v1"

FULL_CONFIG = Config(env=["PATH=/usr/bin:/bin", "GREETING=hello world"], cmd=["sh", "-c", "echo $GREETING"],
                     entrypoint=["/bin/entry", "--flag"], working_dir="/srv/app", user="1000:1000",
                     labels={"org.example.team": "sandbox", "empty": ""}, stop_signal="SIGQUIT",
                     architecture="arm64", os="linux")

LAYERS = [
    {"bin": Dir(), "bin/busybox": File(b"\x7fELF" + b"\0" * 1000, mode=0o755), "bin/sh": Symlink("busybox"),
     "etc/hostname": b"sandbox\n", "dev/null": CharDev(1, 3)},
    {"etc/motd": b"layer two\n", "etc/motd.bak": Hardlink("etc/motd")},
    {"srv/app/data.bin": os.urandom(50_000), "etc/.wh.motd": b""},
]


def load(rpc, path, tag=None, **kw):
    params = {"path": str(path)}
    if tag is not None:
        params["tag"] = tag
    return rpc.call("image.load", params, **kw)


def assert_everywhere(rpc, img, reference, before=None, after=None):
    """get, list and inspect all agree with the image's truth."""
    h = rpc.call("image.get", {"reference": reference})
    assert_handle(h, img, reference, before, after)
    listed = [x for x in rpc.call("image.list") if x["reference"] == reference]
    assert listed == [h], listed
    d = rpc.call("image.inspect", {"reference": reference})
    assert_detail(d, img, reference)
    assert d["handle"] == h
    return h


def test_load_layout_multi_layer_full_config(rpc, imagekit, daemon):
    img = imagekit.image(REF, LAYERS, FULL_CONFIG)
    assert img.architecture == "arm64" and img.layer_count == 3
    t0 = now_ms()
    out = load(rpc, img.layout.path)
    t1 = now_ms()
    assert len(out) == 1
    assert_handle(out[0], img, REF, t0, t1)
    h = assert_everywhere(rpc, img, REF, t0, t1)
    assert h["created_at"] == out[0]["created_at"]
    assert consistency_problems(daemon.store, rpc) == []


def test_load_minimal_config_reports_nulls(rpc, imagekit):
    img = imagekit.image("example.com/test/min:1", [{"a": b"a"}])
    load(rpc, img.layout.path)
    d = rpc.call("image.inspect", {"reference": "example.com/test/min:1"})
    assert_detail(d, img, "example.com/test/min:1")
    cfg = d["config"]
    assert cfg["env"] == [] and cfg["cmd"] is None and cfg["entrypoint"] is None
    assert cfg["working_dir"] is None and cfg["user"] is None and cfg["stop_signal"] is None


def test_load_image_without_layers(rpc, imagekit):
    # OCI image-spec 1.1 only says layers SHOULD have an entry, and a VM needs
    # a root filesystem; whether a daemon accepts a layerless image is not
    # fixed by the contract.  Either it loads correctly or it is refused
    # with nothing recorded.
    img = imagekit.image("example.com/test/empty:1", [])
    try:
        out = load(rpc, img.layout.path)
    except RpcError as e:
        assert e.name in ("invalid-image", "limit-exceeded"), e
        assert rpc.call("image.list") == []
        return
    assert_handle(out[0], img, "example.com/test/empty:1")
    assert out[0]["size_bytes"] == 0 and out[0]["layer_count"] == 0


def test_two_images_sharing_layers(rpc, imagekit, daemon):
    lay = imagekit.layout("shared")
    a = lay.add_image("example.com/shared/a:1", LAYERS[:2], Config(cmd=["a"]))
    b = lay.add_image("example.com/shared/b:1", [{"only-b": b"b"}], Config(cmd=["b"]), base=a)
    assert b.diff_ids[:2] == a.diff_ids and len(b.layers) == 3
    out = load(rpc, lay.path)
    assert sorted(h["reference"] for h in out) == ["example.com/shared/a:1", "example.com/shared/b:1"]
    assert_everywhere(rpc, a, "example.com/shared/a:1")
    assert_everywhere(rpc, b, "example.com/shared/b:1")
    files = content_files(daemon.store)
    # Layers are stored once per diff_id.
    assert len(files["layers"]) == 3, files["layers"]
    df = rpc.call("system.df")
    assert df["image_refs"] == 2
    assert df["manifests"]["count"] == 2 and df["configs"]["count"] == 2
    assert df["layers"]["count"] == 3
    assert df["layers"]["bytes"] == sum(p.stat().st_blocks * 512 for p in files["layers"])
    assert df["manifests"]["bytes"] + df["configs"]["bytes"] == sum(p.stat().st_blocks * 512 for p in files["blobs"])
    assert df["reclaimable_bytes"] > 0
    assert consistency_problems(daemon.store, rpc) == []


def test_two_tags_same_manifest(rpc, imagekit):
    lay = imagekit.layout("twotags")
    a = lay.add_image("example.com/t/a:1", [{"x": b"x"}])
    lay.add_image("example.com/t/a:2", [], base=a)
    out = load(rpc, lay.path)
    assert sorted(h["reference"] for h in out) == ["example.com/t/a:1", "example.com/t/a:2"]
    for h in out:
        assert h["manifest_digest"] == a.manifest_digest
    assert rpc.call("system.df")["manifests"]["count"] == 1


def test_layer_media_types(rpc, imagekit):
    lay = imagekit.layout("mt")
    plain = lay.add_image("example.com/mt/plain:1", [{"p": b"plain"}], compression="none")
    zst = lay.add_image("example.com/mt/zstd:1", [{"z": b"zstd" * 100}, {"y": b"y"}], compression="zstd")
    load(rpc, lay.path)
    assert_everywhere(rpc, plain, "example.com/mt/plain:1")
    assert_everywhere(rpc, zst, "example.com/mt/zstd:1")


def test_docker_schema2_media_types_in_a_layout(rpc, imagekit):
    img = imagekit.image("example.com/docker/media:1", LAYERS[:2], Config(cmd=["x"]))
    m = json.loads(json.dumps(img.manifest))
    m["mediaType"] = MT_DOCKER_MANIFEST
    m["config"]["mediaType"] = MT_DOCKER_CONFIG
    for layer in m["layers"]:
        assert layer["mediaType"] == MT_LAYER_GZIP
        layer["mediaType"] = MT_DOCKER_LAYER
    img = img.layout.replace_manifest("example.com/docker/media:1", m)
    assert img.manifest_media_type == MT_DOCKER_MANIFEST
    load(rpc, img.layout.path)
    assert_everywhere(rpc, img, "example.com/docker/media:1")


def test_oci_archive_tar_of_layout(rpc, imagekit):
    img = imagekit.image("example.com/arch/tar:1", LAYERS, FULL_CONFIG)
    path = img.layout.oci_archive(imagekit.path("oci", ".tar"))
    out = load(rpc, path)
    assert [h["reference"] for h in out] == ["example.com/arch/tar:1"]
    assert_everywhere(rpc, img, "example.com/arch/tar:1")


def test_oci_archive_from_skopeo(rpc, imagekit):
    img = imagekit.image("example.com/arch/src:1", LAYERS[:2], FULL_CONFIG)
    path = img.layout.skopeo_oci_archive("example.com/arch/src:1", imagekit.path("skopeo", ".tar"),
                                         "example.com/arch/skopeo:2")
    out = load(rpc, path)
    assert [h["reference"] for h in out] == ["example.com/arch/skopeo:2"]
    # skopeo copies the manifest unchanged for an OCI to OCI copy.
    assert_everywhere(rpc, img, "example.com/arch/skopeo:2")


def test_docker_save_archive(rpc, imagekit, daemon):
    img = imagekit.image("example.com/d/src:1", LAYERS, FULL_CONFIG)
    arch = img.layout.docker_archive("example.com/d/src:1", imagekit.path("docker", ".tar"),
                                     ["example.com/d/saved:1", "alpine:3"])
    assert arch.diff_ids == img.diff_ids and arch.config_digest == img.config_digest
    out = load(rpc, arch.path)
    refs = sorted(h["reference"] for h in out)
    assert refs == ["docker.io/library/alpine:3", "example.com/d/saved:1"], refs
    assert out[0]["manifest_digest"] == out[1]["manifest_digest"]
    for ref in refs:
        h = rpc.call("image.get", {"reference": ref})
        assert_handle(h, arch, ref)
        d = rpc.call("image.inspect", {"reference": ref})
        # The layer blobs of a docker-save archive are the uncompressed tars.
        assert_detail(d, arch, ref)
    assert consistency_problems(daemon.store, rpc) == []


def test_docker_save_archive_without_tags_needs_tag(rpc, imagekit):
    img = imagekit.image("example.com/d/untagged:1", LAYERS[:1])
    arch = img.layout.docker_archive("example.com/d/untagged:1", imagekit.path("docker", ".tar"), [])
    assert arch.repo_tags == []
    with pytest.raises(RpcError) as e:
        load(rpc, arch.path)
    proto.check_error(e.value, "invalid-params", "tag")
    out = load(rpc, arch.path, tag="example.com/d/tagged:7")
    assert [h["reference"] for h in out] == ["example.com/d/tagged:7"]
    assert_handle(out[0], arch, "example.com/d/tagged:7")


def _platform_images(imagekit):
    amd = imagekit.image("example.com/p/x:amd", [{"arch": b"amd64"}, {"f": b"1"}],
                         Config(architecture="amd64", cmd=["amd"]))
    arm = imagekit.image("example.com/p/x:arm", [{"arch": b"arm64"}], Config(architecture="arm64", cmd=["arm"]))
    return amd, arm


@pytest.mark.parametrize("nested", [False, True])
def test_two_platform_index_picks_host(rpc, imagekit, daemon, nested):
    assert host_platform() == "linux/amd64", "these tests expect an amd64 host"
    amd, arm = _platform_images(imagekit)
    idx = imagekit.platform_index("example.com/p/multi:1", {"linux/arm64": arm, "linux/amd64": amd}, nested=nested)
    out = load(rpc, idx.layout.path)
    assert len(out) == 1
    assert_handle(out[0], amd, "example.com/p/multi:1")
    assert_everywhere(rpc, amd, "example.com/p/multi:1")
    # Only the host's image is stored.
    assert rpc.call("system.df")["manifests"]["count"] == 1
    assert consistency_problems(daemon.store, rpc) == []


def test_index_as_oci_archive(rpc, imagekit):
    amd, arm = _platform_images(imagekit)
    idx = imagekit.platform_index("example.com/p/multi:2", {"linux/arm64": arm, "linux/amd64": amd})
    path = idx.layout.oci_archive(imagekit.path("idx", ".tar"))
    out = load(rpc, path)
    assert [h["manifest_digest"] for h in out] == [amd.manifest_digest]


def test_index_without_host_platform(rpc, imagekit):
    _, arm = _platform_images(imagekit)
    idx = imagekit.platform_index("example.com/p/armonly:1", {"linux/arm64": arm})
    with pytest.raises(RpcError) as e:
        load(rpc, idx.layout.path)
    data = proto.check_error(e.value, "platform-not-found")
    assert "amd64" in json.dumps(data), data
    assert rpc.call("image.list") == []


def test_untagged_layout_needs_tag(rpc, imagekit):
    img = imagekit.image("example.com/u/x:1", LAYERS[:1])
    img.layout.strip_ref_names()
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    proto.check_error(e.value, "invalid-params", "tag")
    assert rpc.call("image.list") == []
    out = load(rpc, img.layout.path, tag="alpine")
    assert [h["reference"] for h in out] == ["docker.io/library/alpine:latest"]
    assert_everywhere(rpc, img, "docker.io/library/alpine:latest")


def test_tag_adds_to_the_source_names(rpc, imagekit):
    img = imagekit.image("example.com/u/named:1", LAYERS[:1])
    out = load(rpc, img.layout.path, tag="example.com/u/extra:2")
    refs = sorted(h["reference"] for h in out)
    assert refs == ["example.com/u/extra:2", "example.com/u/named:1"], refs
    for r in refs:
        assert_everywhere(rpc, img, r)


def test_tag_with_several_images_is_invalid(rpc, imagekit):
    lay = imagekit.layout("several")
    lay.add_image("example.com/s/a:1", [{"a": b"a"}])
    lay.add_image("example.com/s/b:1", [{"b": b"b"}])
    with pytest.raises(RpcError) as e:
        load(rpc, lay.path, tag="example.com/s/c:1")
    proto.check_error(e.value, "invalid-params", "tag")
    assert rpc.call("image.list") == []


def test_reload_is_idempotent_and_touches_last_used(rpc, imagekit, daemon):
    img = imagekit.image(REF, LAYERS[:2])
    first = load(rpc, img.layout.path)[0]
    time.sleep(0.02)
    second = load(rpc, img.layout.path)[0]
    assert second["created_at"] == first["created_at"]
    assert second["last_used_at"] >= first["last_used_at"]
    assert second["last_used_at"] > first["last_used_at"] or second["last_used_at"] >= first["created_at"]
    assert len(rpc.call("image.list")) == 1
    assert rpc.call("system.df")["layers"]["count"] == 2
    assert consistency_problems(daemon.store, rpc) == []


def test_reference_moves_to_a_new_manifest(rpc, imagekit):
    old = imagekit.image(REF, [{"v": b"1"}])
    new = imagekit.image(REF, [{"v": b"2"}])
    load(rpc, old.layout.path)
    load(rpc, new.layout.path)
    assert_everywhere(rpc, new, REF)
    assert len(rpc.call("image.list")) == 1


# Errors ----------------------------------------------------------------------


def test_missing_path(rpc, short_tmp):
    p = short_tmp / "does-not-exist"
    with pytest.raises(RpcError) as e:
        load(rpc, p)
    data = proto.check_error(e.value, "path-not-found")
    assert data.get("path") == str(p), data


@pytest.mark.parametrize("what", ["empty-dir", "random-file", "empty-file", "json-file", "tar-of-junk"])
def test_not_an_image(rpc, short_tmp, what):
    p = short_tmp / what
    if what == "empty-dir":
        p.mkdir()
    elif what == "random-file":
        p.write_bytes(os.urandom(4096))
    elif what == "empty-file":
        p.write_bytes(b"")
    elif what == "json-file":
        p.write_text('{"schemaVersion": 2}')
    else:
        p.write_bytes(make_tar({"hello.txt": b"not an image"}))
    with pytest.raises(RpcError) as e:
        load(rpc, p)
    proto.check_error(e.value, "invalid-image")
    assert rpc.call("image.list") == []


@pytest.mark.parametrize("which", ["layer", "config", "manifest"])
def test_corrupt_blob_is_digest_mismatch(rpc, imagekit, daemon, which):
    img = imagekit.image(REF, LAYERS[:2], Config(cmd=["x"]))
    digest = {"layer": img.layers[1].blob_digest, "config": img.config_digest,
              "manifest": img.manifest_digest}[which]
    img.layout.corrupt_blob(digest)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    data = proto.check_error(e.value, "digest-mismatch")
    assert data.get("expected") == digest, data
    actual = data.get("actual")
    assert isinstance(actual, str) and actual.startswith("sha256:") and actual != digest, data
    assert rpc.call("image.list") == []


@pytest.mark.parametrize("which", ["layer", "config"])
@pytest.mark.parametrize("delta", [+1, -1, 1 << 40, 1 << 62])
def test_blob_of_wrong_size(rpc, imagekit, which, delta):
    # Issue 2: every blob is verified against its descriptor's size too.
    img = imagekit.image(REF, LAYERS[:1])
    m = json.loads(json.dumps(img.manifest))
    desc = m["layers"][0] if which == "layer" else m["config"]
    desc["size"] = desc["size"] + delta if abs(delta) == 1 else delta
    img.layout.replace_manifest(REF, m, raw_manifest=json.dumps(m).encode())
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    # A size that disagrees with the descriptor is caught as such (invalid
    # image, or a limit for absurd sizes) or by the digest check.
    assert e.value.name in ("digest-mismatch", "invalid-image", "limit-exceeded"), e.value
    assert rpc.call("image.list") == []


def test_wrong_size_of_an_already_stored_layer(rpc, imagekit):
    # The layer is in the store already (same blob, same diff_id), so a
    # daemon may skip reading it again; it must still not accept a
    # descriptor whose size disagrees with the blob's, nor report that size.
    good = imagekit.image("example.com/test/good:1", LAYERS[:1])
    load(rpc, good.layout.path)
    img = imagekit.image(REF, LAYERS[:1])
    assert img.layers[0].blob_digest == good.layers[0].blob_digest
    m = json.loads(json.dumps(img.manifest))
    m["layers"][0]["size"] = 1 << 62
    img.layout.replace_manifest(REF, m, raw_manifest=json.dumps(m).encode())
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    assert e.value.name in ("digest-mismatch", "invalid-image", "limit-exceeded"), e.value
    assert [h["reference"] for h in rpc.call("image.list")] == ["example.com/test/good:1"]


def test_missing_blob(rpc, imagekit):
    img = imagekit.image(REF, LAYERS[:2])
    img.layout.remove_blob(img.layers[0].blob_digest)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    assert e.value.name in ("invalid-image", "path-not-found"), e.value
    assert rpc.call("image.list") == []


def test_diff_ids_do_not_match_layer_count(rpc, imagekit):
    img = imagekit.image(REF, LAYERS[:2])
    cfg = json.loads(json.dumps(img.config))
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:1]
    img.layout.replace_config(REF, cfg)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    proto.check_error(e.value, "invalid-image")
    assert rpc.call("image.list") == []


def test_unsupported_layer_media_type(rpc, imagekit):
    img = imagekit.image(REF, LAYERS[:1])
    m = json.loads(json.dumps(img.manifest))
    m["layers"][0]["mediaType"] = "application/x-made-up+tar"
    img.layout.replace_manifest(REF, m)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    data = proto.check_error(e.value, "unsupported-media-type")
    assert data.get("media_type") == "application/x-made-up+tar", data
    assert rpc.call("image.list") == []


def test_manifest_that_is_not_json(rpc, imagekit):
    img = imagekit.image(REF, LAYERS[:1])
    img.layout.replace_manifest(REF, img.manifest, raw_manifest=b"{not json")
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    proto.check_error(e.value, "invalid-image")


def test_manifest_over_the_limit(rpc, imagekit):
    limit = proto.limit("manifest_bytes")
    img = imagekit.image(REF, LAYERS[:1])
    m = json.loads(json.dumps(img.manifest))
    m["annotations"] = {"pad": "x" * (limit + 1)}
    img.layout.replace_manifest(REF, m)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    data = proto.check_error(e.value, "limit-exceeded")
    assert data == {"name": "limit-exceeded", "limit": "manifest_bytes", "max": limit}, data
    assert rpc.call("image.list") == []


def test_archive_members_limit(rpc, imagekit, tmp_path):
    """An archive of archive_members members loads; one more member is
    refused by name, before anything is unpacked. The padding members are
    directories, which count but are never unpacked."""
    limit = proto.limit("archive_members")
    img = imagekit.image(REF, LAYERS[:1])
    files = [(str(p.relative_to(img.layout.path)), p.read_bytes())
             for p in sorted(img.layout.path.rglob("*")) if p.is_file()]

    def archive(n_members):
        pad = ((f"pad/{i}", None) for i in range(n_members - len(files)))
        path = tmp_path / f"{n_members}.tar"
        write_fast_tar(path, [*files, *pad])
        return path

    with pytest.raises(RpcError) as e:
        load(rpc, archive(limit + 1))
    data = proto.check_error(e.value, "limit-exceeded")
    assert data == {"name": "limit-exceeded", "limit": "archive_members", "max": limit}, data
    assert rpc.call("image.list") == []
    out = load(rpc, archive(limit), tag=REF)
    assert out[0]["manifest_digest"] == img.manifest_digest


def test_manifest_just_under_the_limit(rpc, imagekit):
    limit = proto.limit("manifest_bytes")
    img = imagekit.image(REF, LAYERS[:1])
    m = json.loads(json.dumps(img.manifest))
    m["annotations"] = {"pad": ""}
    base = len(json.dumps(m, separators=(",", ":")).encode())
    m["annotations"]["pad"] = "x" * (limit - base)
    img = img.layout.replace_manifest(REF, m)
    assert img.manifest_size == limit
    out = load(rpc, img.layout.path)
    assert out[0]["manifest_digest"] == img.manifest_digest


def _image_with_n_layers(imagekit, n):
    img = imagekit.image(REF, [{"one": b"1"}])
    layer = img.manifest["layers"][0]
    m = json.loads(json.dumps(img.manifest))
    m["layers"] = [layer] * n
    cfg = json.loads(json.dumps(img.config))
    cfg["rootfs"]["diff_ids"] = [img.diff_ids[0]] * n
    return img.layout.replace_manifest(REF, m, config=cfg)


def test_too_many_layers(rpc, imagekit):
    limit = proto.limit("layers_per_image")
    img = _image_with_n_layers(imagekit, limit + 1)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    data = proto.check_error(e.value, "limit-exceeded")
    assert data.get("max") in (limit, str(limit)), data
    assert rpc.call("image.list") == []


def test_layer_count_at_the_limit(rpc, imagekit):
    limit = proto.limit("layers_per_image")
    img = _image_with_n_layers(imagekit, limit)
    out = load(rpc, img.layout.path, timeout=120)
    assert out[0]["layer_count"] == limit


def test_failed_load_leaves_the_daemon_serving(daemon, rpc, imagekit):
    bad = imagekit.image(REF, LAYERS[:1])
    bad.layout.corrupt_blob(bad.layers[0].blob_digest)
    with pytest.raises(RpcError):
        load(rpc, bad.layout.path)
    good = imagekit.image("example.com/test/good:1", LAYERS[:1])
    load(rpc, good.layout.path)
    assert_everywhere(rpc, good, "example.com/test/good:1")
    assert consistency_problems(daemon.store, rpc) == []


def test_concurrent_loads_on_several_connections(daemon, imagekit):
    imgs = [imagekit.image(f"example.com/conc/i{i}:1", [{"f": os.urandom(20000)}, {"g": b"shared"}])
            for i in range(6)]
    clients = [daemon.client() for _ in imgs]
    ids = [c.send_request("image.load", {"path": str(img.layout.path)}) for c, img in zip(clients, imgs)]
    with daemon.client() as probe:
        assert isinstance(probe.call("image.list"), list)
    for c, i, img in zip(clients, ids, imgs):
        resp = c.wait(i, timeout=120)
        assert "result" in resp, resp
        assert resp["result"][0]["manifest_digest"] == img.manifest_digest
    with daemon.client() as c:
        assert len(c.call("image.list")) == 6
        assert c.call("system.df")["layers"]["count"] == 7
        assert consistency_problems(daemon.store, c) == []


# Layer contents (checked while converting each layer) -------------------------


def _load_layer_tar(rpc, imagekit, tar: bytes):
    img = imagekit.image(REF, [tar])
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    assert rpc.call("image.list") == []
    return e.value


@pytest.mark.erofs
@pytest.mark.parametrize("entries, bad", [
    ([("../escape", File(b"x"))], "../escape"),
    ([("a/../../escape", File(b"x"))], "a/../../escape"),
    ([("ok", File(b"x")), ("link", Hardlink("missing"))], "link"),
])
def test_layer_rejected(rpc, imagekit, entries, bad):
    err = _load_layer_tar(rpc, imagekit, make_tar(entries, implicit_dirs=False))
    data = proto.check_error(err, "layer-rejected")
    assert data.get("entry") in (bad, bad.lstrip("./")), data


@pytest.mark.erofs
def test_layer_that_is_not_a_tar(rpc, imagekit):
    err = _load_layer_tar(rpc, imagekit, os.urandom(3000))
    assert err.name in ("layer-rejected", "invalid-image"), err


@pytest.mark.erofs
def test_path_longer_than_the_limit(rpc, imagekit):
    limit = proto.limit("path_bytes")
    long_path = "/".join(["d" * 200] * (limit // 201 + 1))
    assert len(long_path) > limit
    err = _load_layer_tar(rpc, imagekit, make_tar([(long_path, File(b"x"))], implicit_dirs=False))
    data = proto.check_error(err, "limit-exceeded")
    assert data.get("max") in (limit, str(limit)), data


@pytest.mark.erofs
def test_path_deeper_than_the_limit(rpc, imagekit):
    limit = proto.limit("path_depth")
    deep = "/".join(["d"] * (limit + 1))
    err = _load_layer_tar(rpc, imagekit, make_tar([(deep, File(b"x"))], implicit_dirs=False))
    data = proto.check_error(err, "limit-exceeded")
    assert data.get("max") in (limit, str(limit)), data


@pytest.mark.erofs
def test_path_at_the_depth_limit(rpc, imagekit):
    limit = proto.limit("path_depth")
    deep = "/".join(["d"] * limit)
    img = imagekit.image(REF, [make_tar([(deep, File(b"x"))], implicit_dirs=False)])
    out = load(rpc, img.layout.path)
    assert out[0]["manifest_digest"] == img.manifest_digest


def test_slow_load_never_delays_other_connections(daemon, big_image):
    loader = daemon.client(timeout=120)
    t0 = time.monotonic()
    i = loader.send_request("image.load", {"path": str(big_image.layout.path)})
    time.sleep(0.02)
    latencies = []
    overlapped = 0
    with daemon.client() as c:
        for _ in range(5):
            t = time.monotonic()
            c.call("image.list")
            c.call("system.info")
            latencies.append(time.monotonic() - t)
            try:
                resp = loader.wait(i, timeout=0)
                break
            except TimeoutError:
                overlapped += 1
        else:
            resp = loader.wait(i)
    load_time = time.monotonic() - t0
    assert "result" in resp, resp
    # The load (48 MiB to hash and convert) takes far longer than a list;
    # requests on another connection overlapped it and were answered
    # promptly: no blocking work on the loop thread.
    assert overlapped >= 1, "the load finished before any other request overlapped it"
    # Relative to the load's own duration, so a busy CI machine does not flake.
    assert max(latencies) < load_time / 2, (latencies, load_time)


def test_path_with_trailing_slash(rpc, imagekit):
    img = imagekit.image("example.com/slash/x:1", [{"a": b"a"}])
    out = load(rpc, str(img.layout.path) + "/")
    assert out[0]["manifest_digest"] == img.manifest_digest


def test_index_with_attestation_manifest(rpc, imagekit):
    # buildx-style: the platform images plus an attestation manifest whose
    # platform is unknown/unknown; the host image is picked.
    amd, arm = _platform_images(imagekit)
    att = imagekit.image("example.com/p/att:1", [{"att.json": b"{}"}], Config(architecture="unknown", os="unknown"))
    idx = imagekit.platform_index("example.com/p/attested:1",
                                  {"unknown/unknown": att, "linux/arm64": arm, "linux/amd64": amd})
    out = load(rpc, idx.layout.path)
    assert [h["manifest_digest"] for h in out] == [amd.manifest_digest]


def _docker_archive_of_two(imagekit):
    """A docker-save archive holding two images (skopeo writes one per
    archive, so two are merged with tar the way `docker save a b` does)."""
    a = imagekit.image("example.com/two/a:1", [{"a": b"a"}], Config(cmd=["a"]))
    b = imagekit.image("example.com/two/b:1", [{"b": b"b"}, {"c": b"c"}], Config(cmd=["b"]))
    arch_a = a.layout.docker_archive("example.com/two/a:1", imagekit.path("da", ".tar"), ["example.com/two/a:1"])
    arch_b = b.layout.docker_archive("example.com/two/b:1", imagekit.path("db", ".tar"), ["example.com/two/b:1"])
    out = imagekit.path("dboth", ".tar")
    manifests = []
    seen = set()
    with tarfile.open(out, "w") as dst:
        for arch in (arch_a, arch_b):
            with tarfile.open(arch.path) as src:
                for m in src.getmembers():
                    if m.name == "manifest.json":
                        manifests += json.load(src.extractfile(m))
                    elif m.name not in seen and m.name != "repositories":
                        seen.add(m.name)
                        dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        data = json.dumps(manifests).encode()
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(data)
        dst.addfile(ti, io.BytesIO(data))
    return arch_a, arch_b, out


def test_docker_save_archive_with_two_images(rpc, imagekit):
    arch_a, arch_b, path = _docker_archive_of_two(imagekit)
    out = load(rpc, path)
    assert sorted(h["reference"] for h in out) == ["example.com/two/a:1", "example.com/two/b:1"]
    assert_handle(rpc.call("image.get", {"reference": "example.com/two/a:1"}), arch_a, "example.com/two/a:1")
    assert_handle(rpc.call("image.get", {"reference": "example.com/two/b:1"}), arch_b, "example.com/two/b:1")
    assert_detail(rpc.call("image.inspect", {"reference": "example.com/two/b:1"}), arch_b, "example.com/two/b:1")


def test_tag_with_a_docker_archive_of_two_images_is_invalid(rpc, imagekit):
    _, _, path = _docker_archive_of_two(imagekit)
    with pytest.raises(RpcError) as e:
        load(rpc, path, tag="example.com/two/c:1")
    proto.check_error(e.value, "invalid-params", "tag")
    assert rpc.call("image.list") == []


def test_oci_archive_with_dot_prefixed_names(rpc, imagekit):
    # `tar -C layout -cf x.tar .` names members ./index.json, ./blobs/...
    img = imagekit.image("example.com/dot/x:1", LAYERS[:2], FULL_CONFIG)
    path = imagekit.path("dot", ".tar")
    subprocess.run(["tar", "-C", str(img.layout.path), "-cf", str(path), "."], check=True)
    load(rpc, path)
    assert_everywhere(rpc, img, "example.com/dot/x:1")


def _unpacked_docker_archive(imagekit):
    img = imagekit.image("example.com/dk/x:1", LAYERS[:2])
    arch = img.layout.docker_archive("example.com/dk/x:1", imagekit.path("dk", ".tar"), ["example.com/dk/x:1"])
    root = imagekit.path("dkx")
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(arch.path)], check=True)
    return arch, root, json.loads((root / "manifest.json").read_text())


def _repack(imagekit, root):
    path = imagekit.path("dkre", ".tar")
    subprocess.run(["tar", "-C", str(root), "-cf", str(path), "."], check=True)
    return path


def test_docker_archive_diff_id_mismatch(rpc, imagekit):
    arch, root, manifest = _unpacked_docker_archive(imagekit)
    cfg_path = root / manifest[0]["Config"]
    cfg = json.loads(cfg_path.read_text())
    cfg["rootfs"]["diff_ids"][1] = "sha256:" + "1" * 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(RpcError) as e:
        load(rpc, _repack(imagekit, root))
    data = proto.check_error(e.value, "digest-mismatch")
    assert data.get("expected") == "sha256:" + "1" * 64 and data.get("actual") == arch.diff_ids[1], data
    assert rpc.call("image.list") == []


def test_docker_archive_missing_layer(rpc, imagekit):
    arch, root, manifest = _unpacked_docker_archive(imagekit)
    layer = root / manifest[0]["Layers"][1]
    layer.resolve().unlink()  # skopeo writes <id>/layer.tar as a symlink
    if layer.is_symlink():
        layer.unlink()
    with pytest.raises(RpcError) as e:
        load(rpc, _repack(imagekit, root))
    proto.check_error(e.value, "invalid-image")
    assert rpc.call("image.list") == []


def test_digest_tag_must_match_the_image(rpc, imagekit):
    # A digest reference names its manifest: recording
    # repo@sha256:<other> for this image would make a lookup by that digest
    # return a different manifest.
    img = imagekit.image("example.com/dg/x:1", [{"a": b"a"}])
    img.layout.strip_ref_names()
    wrong = "example.com/dg/z@sha256:" + "2" * 64
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path, tag=wrong)
    assert e.value.code in (-32602, 1005), e.value
    assert rpc.call("image.list") == []
    right = f"example.com/dg/z@{img.manifest_digest}"
    out = load(rpc, img.layout.path, tag=right)
    assert out[0]["manifest_digest"] == img.manifest_digest
    h = rpc.call("image.get", {"reference": right})
    assert h["manifest_digest"] == img.manifest_digest


def test_no_descriptor_leak_over_failed_and_good_loads(daemon, rpc, imagekit, short_tmp):
    good = imagekit.image("example.com/fd/good:1", LAYERS[:2])
    corrupt = imagekit.image("example.com/fd/bad:1", [{"own": os.urandom(10_000)}])
    corrupt.layout.corrupt_blob(corrupt.layers[0].blob_digest)
    junk = short_tmp / "junk.tar"
    junk.write_bytes(make_tar({"x": b"not an image"}))
    archive = good.layout.oci_archive(imagekit.path("fd", ".tar"))
    docker = good.layout.docker_archive("example.com/fd/good:1", imagekit.path("fdd", ".tar"), ["example.com/fd/d:1"])
    load(rpc, good.layout.path)
    fds = lambda: len(os.listdir(f"/proc/{daemon.pid}/fd"))  # noqa: E731
    base = fds()
    for _ in range(10):
        for path in (corrupt.layout.path, junk, short_tmp / "missing", archive, docker.path, good.layout.path):
            try:
                load(rpc, path)
            except RpcError:
                pass
    assert fds() <= base + 1, (base, fds())
    assert sorted(h["reference"] for h in rpc.call("image.list")) == ["example.com/fd/d:1", "example.com/fd/good:1"]


# Sources that are not regular files, or lead outside themselves (issue 14) ----

# A FIFO is refused from its type, without waiting for a writer: well within
# this, however loaded the machine.
FIFO_ANSWER_S = 1.0
# More concurrent FIFO loads than the daemon has worker threads (16).
FIFO_LOADS = 20


def _replace_with_fifo(path):
    path = Path(path)
    path.unlink()
    os.mkfifo(path)


def _fifo_source(imagekit, short_tmp, where):
    """A source with a FIFO where a file should be; returns (path to load, the
    path the error must name: relative inside the source, or the source)."""
    if where == "archive":
        p = short_tmp / "fifo.tar"
        os.mkfifo(p)
        return p, str(p)
    if where == "docker-layer":
        arch, root, manifest = _unpacked_docker_archive(imagekit)
        rel = manifest[0]["Layers"][0]
        _replace_with_fifo((root / rel).resolve())
        return root, rel
    img = imagekit.image(REF, LAYERS[:1])
    digest = {"index.json": None, "manifest": img.manifest_digest, "config": img.config_digest,
              "layer": img.layers[0].blob_digest}[where]
    rel = "index.json" if digest is None else "blobs/sha256/" + digest.split(":")[1]
    _replace_with_fifo(img.layout.path / rel)
    return img.layout.path, rel


@pytest.mark.parametrize("where", ["index.json", "manifest", "config", "layer", "docker-layer", "archive"])
def test_fifo_in_a_source_is_refused_at_once(rpc, imagekit, short_tmp, where):
    path, named = _fifo_source(imagekit, short_tmp, where)
    t = time.monotonic()
    with pytest.raises(RpcError) as e:
        load(rpc, path, timeout=10)
    took = time.monotonic() - t
    data = proto.check_error(e.value, "invalid-image")
    assert data.get("path") == named, data
    assert "FIFO" in e.value.message, e.value
    assert took < FIFO_ANSWER_S, took
    assert rpc.call("image.list") == []


def test_fifo_loads_never_starve_the_workers(daemon, imagekit, short_tmp):
    path, _ = _fifo_source(imagekit, short_tmp, "index.json")
    archive, _ = _fifo_source(imagekit, short_tmp, "archive")
    clients = [daemon.client(timeout=10) for _ in range(FIFO_LOADS)]
    ids = [c.send_request("image.load", {"path": str(path if i % 2 else archive)}) for i, c in enumerate(clients)]
    with daemon.client(timeout=10) as probe:
        t = time.monotonic()
        df = probe.call("system.df")
        took = time.monotonic() - t
    assert df["image_refs"] == 0
    assert took < FIFO_ANSWER_S, took
    for c, i in zip(clients, ids):
        resp = c.wait(i, timeout=10)
        proto.check_error(resp, "invalid-image")


def test_sigterm_with_fifo_loads_in_flight_exits_promptly(daemon, imagekit, short_tmp):
    path, _ = _fifo_source(imagekit, short_tmp, "layer")
    clients = [daemon.client(timeout=10) for _ in range(FIFO_LOADS)]
    for c in clients:
        c.send_request("image.load", {"path": str(path)})
    t = time.monotonic()
    daemon.stop(timeout=10)  # exit status 0 and a clean log
    assert time.monotonic() - t < 5, time.monotonic() - t


# A file outside every layout, of a size and content nothing else has.
OUTSIDE_BYTES = 1_234_577


def _outside_file(short_tmp):
    p = short_tmp / "outside-secret.bin"
    p.write_bytes(os.urandom(OUTSIDE_BYTES))
    return p


def _assert_reveals_nothing_of(err, target):
    """Neither the message nor the data of err say anything about target:
    its path, name, size or digest."""
    data = proto.check_error(err, "invalid-image")
    blob = target.read_bytes()
    said = err.message + "\n" + json.dumps(data)
    # The relative path inside the source is named; a digest in it could
    # hold the size's digits by chance, so it is left out of the check.
    said = said.replace(data.get("path", ""), "")
    for secret in (str(target), target.name, str(len(blob)), f"{len(blob):,}", sha256_digest(blob)[7:]):
        assert secret not in said, (secret, said)
    return data


@pytest.mark.parametrize("which", ["index.json", "manifest", "config", "layer"])
@pytest.mark.parametrize("how", ["absolute", "relative", "chained"])
def test_symlink_out_of_the_layout_is_refused(rpc, imagekit, short_tmp, which, how):
    # The target lies outside the layout; whether it is the blob or not, the
    # error must not say its size or digest (the digest and size checks
    # would, if the daemon read it).
    target = _outside_file(short_tmp)
    img = imagekit.image(REF, LAYERS[:1])
    digest = {"index.json": None, "manifest": img.manifest_digest, "config": img.config_digest,
              "layer": img.layers[0].blob_digest}[which]
    rel = "index.json" if digest is None else "blobs/sha256/" + digest.split(":")[1]
    link = img.layout.path / rel
    link.unlink()
    if how == "absolute":
        link.symlink_to(target)
    elif how == "relative":
        link.symlink_to(os.path.relpath(target, link.parent))
    else:
        # A link inside the layout leading to another that leaves it.
        (img.layout.path / "hop").symlink_to(target)
        link.symlink_to(os.path.relpath(img.layout.path / "hop", link.parent))
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    data = _assert_reveals_nothing_of(e.value, target)
    assert data.get("path") == rel, data
    assert rpc.call("image.list") == []


def test_docker_save_layer_symlinked_out_is_refused(rpc, imagekit, short_tmp):
    target = _outside_file(short_tmp)
    arch, root, manifest = _unpacked_docker_archive(imagekit)
    layer = root / manifest[0]["Layers"][0]
    layer.resolve().unlink()
    if layer.is_symlink():
        layer.unlink()
    layer.symlink_to(target)
    with pytest.raises(RpcError) as e:
        load(rpc, root)
    data = _assert_reveals_nothing_of(e.value, target)
    assert data.get("path") == manifest[0]["Layers"][0], data
    assert rpc.call("image.list") == []


def _layout_with_linked_blobs(imagekit):
    """An image whose layer, config and manifest blobs are relative symlinks
    into store/ inside the layout, the manifest's through a directory link."""
    img = imagekit.image(REF, LAYERS, FULL_CONFIG)
    root = img.layout.path
    (root / "store").mkdir()
    (root / "dirlink").symlink_to("store")
    for digest, via in ((img.layers[0].blob_digest, "store"), (img.config_digest, "store"),
                        (img.manifest_digest, "dirlink")):
        blob = img.layout.blob_path(digest)
        blob.rename(root / "store" / blob.name)
        blob.symlink_to(os.path.relpath(root / via / blob.name, blob.parent))
    return img


def test_symlinks_within_the_layout_load(rpc, imagekit, short_tmp):
    # Some tools link blobs to each other inside a layout, and users name a
    # layout through a symlink: both are fine.
    img = _layout_with_linked_blobs(imagekit)
    named = short_tmp / "named-through-a-link"
    named.symlink_to(img.layout.path)
    out = load(rpc, named)
    assert [h["manifest_digest"] for h in out] == [img.manifest_digest]
    assert_everywhere(rpc, img, REF)


def test_absolute_symlink_is_refused_even_inside(rpc, imagekit):
    # Resolution never leaves the source's root, and an absolute link starts
    # at /, outside it: refused whatever it names (a layout that is moved or
    # archived keeps only relative links working anyway).
    img = _layout_with_linked_blobs(imagekit)
    blob = img.layout.blob_path(img.manifest_digest)
    blob.unlink()
    blob.symlink_to(img.layout.path / "store" / blob.name)
    with pytest.raises(RpcError) as e:
        load(rpc, img.layout.path)
    data = proto.check_error(e.value, "invalid-image")
    assert data.get("path") == "blobs/sha256/" + img.manifest_digest.split(":")[1], data
    assert "absolute" in e.value.message, e.value
    assert rpc.call("image.list") == []


# What the daemon may hold at its peak while it refuses (or builds) an image
# at the image_entries limit: it peaks near 165 MiB (250 MiB under ASan),
# one merged tree of the limit's entries and what it holds anyway. Before
# the limit, loading one 500,000-entry layer 8 times took it to 748 MiB,
# and 256 layers of a million entries each would take tens of GB.
IMAGE_ENTRIES_PEAK_RSS_BOUND_KIB = 320 * 1024


def _entries_layer(image_cache, prefix, n):
    """A gzip layer of exactly n entries, none implied: a directory, then
    999 empty files in it, and again. Returns (blob path, diff_id). Made
    once a run (seconds of Python and gzip each) in the image cache, for
    the plain and the ASan suites: the blob is only read."""
    def build(d):
        entries = ((f"{prefix}{i // 1000:04d}", None) if i % 1000 == 0 else (f"{prefix}{i // 1000:04d}/{i:07d}", b"")
                   for i in range(n))
        (d / "diff_id").write_text(write_fast_tar(d / "layer.tgz", entries, compresslevel=1))

    d = image_cache.directory(f"entries-layer-{prefix}-{n}-gzip1", build)
    return d / "layer.tgz", (d / "diff_id").read_text()


def _image_of_layers(imagekit, ref, layers):
    """An image whose layers are the given (gzip blob, diff_id) pairs, in order."""
    img = imagekit.image(ref, [])
    manifest, config = json.loads(json.dumps(img.manifest)), json.loads(json.dumps(img.config))
    manifest["layers"] = []
    for blob, _ in layers:
        digest, size = img.layout.put_blob(blob.read_bytes())
        manifest["layers"].append({"mediaType": MT_LAYER_GZIP, "digest": digest, "size": size})
    config["rootfs"] = {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]}
    return img.layout.replace_manifest(ref, manifest, config=config)


@pytest.mark.erofs
def test_image_entries_limit(imagekit, image_cache, measured_daemon):
    """The layers of one image hold at most image_entries entries together,
    counted while the layers convert and again while fsmeta merges them
    (layers already in the store are counted there only); the daemon's peak
    stays bounded whatever the layers hold."""
    rpc = measured_daemon.client(timeout=120)
    limit = proto.limit("image_entries")
    half = limit // 2
    a = _entries_layer(image_cache, "a", half)
    b = _entries_layer(image_cache, "b", half + 1)
    c = _entries_layer(image_cache, "c", half)

    # Converting: b counts half + 1, so c's last entry is one too many.
    z = _image_of_layers(imagekit, "example.com/entries/z:1", [b, c])
    with pytest.raises(RpcError) as e:
        load(rpc, z.layout.path, timeout=120)
    data = proto.check_error(e.value, "limit-exceeded")
    last = half - 1
    assert (data["limit"], data["max"], data["entry"]) == ("image_entries", limit, f"c{last // 1000:04d}/{last:07d}")

    # At the limit: a twice is exactly image_entries entries, and loads.
    x = _image_of_layers(imagekit, "example.com/entries/x:1", [a, a])
    out = load(rpc, x.layout.path, timeout=120)
    assert [h["manifest_digest"] for h in out] == [x.manifest_digest]
    assert [h["reference"] for h in rpc.call("image.list")] == ["example.com/entries/x:1"]

    # Merging: a is in the store now, so only b converts here (half + 1,
    # under the limit); the merge counts both and refuses. (The image of a
    # twice puts a there with the load it is tested with anyway, rather than
    # a third image converting 500,000 more entries: this test is among the
    # longest, under ASan most of all.)
    y = _image_of_layers(imagekit, "example.com/entries/y:1", [a, b])
    with pytest.raises(RpcError) as e:
        load(rpc, y.layout.path, timeout=120)
    data = proto.check_error(e.value, "limit-exceeded")
    assert data == {"name": "limit-exceeded", "limit": "image_entries", "max": limit}, data
    assert [h["reference"] for h in rpc.call("image.list")] == ["example.com/entries/x:1"]

    peak = measured_daemon.status_kib("VmHWM")
    assert peak < IMAGE_ENTRIES_PEAK_RSS_BOUND_KIB, f"the daemon peaked at {peak // 1024} MiB"


# Picking one image; names; attestations (issue 11) ----------------------------


def _layout_of_three(imagekit):
    """One layout, three images: named fully, by a bare ref.name, and by name:tag."""
    lay = imagekit.layout("three")
    full = lay.add_image("example.com/three/full:1", [{"full": b"full"}], Config(cmd=["full"]))
    bare = lay.add_image("v1", [{"bare": b"bare"}], Config(cmd=["bare"]))
    tagged = lay.add_image("app:2.0", [{"tagged": b"tagged"}], Config(cmd=["tagged"]))
    return lay, full, bare, tagged


@pytest.mark.parametrize("pick,which,recorded", [
    ("example.com/three/full:1", "full", "example.com/three/full:1"),
    ("v1", "bare", "localhost/v1:latest"),
    ("localhost/v1", "bare", "localhost/v1:latest"),
    ("app:2.0", "tagged", "localhost/app:2.0"),
    ("digest", "tagged", "localhost/app:2.0"),
])
def test_image_picks_one_image_of_several(rpc, imagekit, daemon, pick, which, recorded):
    lay, full, bare, tagged = _layout_of_three(imagekit)
    img = {"full": full, "bare": bare, "tagged": tagged}[which]
    if pick == "digest":
        pick = img.manifest_digest
    out = rpc.call("image.load", {"path": str(lay.path), "image": pick})
    assert [h["reference"] for h in out] == [recorded]
    assert_handle(out[0], img, recorded)
    assert [h["reference"] for h in rpc.call("image.list")] == [recorded]
    assert rpc.call("system.df")["layers"]["count"] == 1
    assert consistency_problems(daemon.store, rpc) == []


def test_image_and_tag_name_the_picked_image(rpc, imagekit):
    lay, full, bare, tagged = _layout_of_three(imagekit)
    out = rpc.call("image.load", {"path": str(lay.path), "image": "v1", "tag": "example.com/picked/x:9"})
    # A bare ref.name adds nothing to a tag given (as without image).
    assert [h["reference"] for h in out] == ["example.com/picked/x:9"]
    assert_everywhere(rpc, bare, "example.com/picked/x:9")
    out = rpc.call("image.load", {"path": str(lay.path), "image": full.manifest_digest, "tag": "example.com/y:1"})
    assert sorted(h["reference"] for h in out) == ["example.com/three/full:1", "example.com/y:1"]


def test_tag_with_several_images_still_needs_image(rpc, imagekit):
    lay, *_ = _layout_of_three(imagekit)
    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {"path": str(lay.path), "tag": "example.com/y:1"})
    proto.check_error(e.value, "invalid-params", "tag")
    assert "image" in e.value.message
    assert rpc.call("image.list") == []


def test_image_that_names_none_lists_what_the_source_holds(rpc, imagekit):
    lay, full, bare, tagged = _layout_of_three(imagekit)
    for pick in ("example.com/three/other:1", "v2", "sha256:" + "0" * 64, "docker.io/library/v1:latest"):
        with pytest.raises(RpcError) as e:
            rpc.call("image.load", {"path": str(lay.path), "image": pick})
        data = proto.check_error(e.value, "invalid-params", "image")
        assert sorted(data["candidates"]) == sorted(["example.com/three/full:1", "v1", "app:2.0"]), data
        assert pick in e.value.message
    assert rpc.call("image.list") == []
    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {"path": str(lay.path), "image": ""})
    proto.check_error(e.value, "invalid-params", "image")


def test_image_naming_two_images_is_invalid(rpc, imagekit):
    # Both images are recorded as localhost/v1:latest: one's ref.name is
    # "v1", the other's the name in full.
    lay = imagekit.layout("clash")
    lay.add_image("v1", [{"a": b"a"}])
    lay.add_image("localhost/v1:latest", [{"b": b"b"}])
    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {"path": str(lay.path), "image": "localhost/v1"})
    proto.check_error(e.value, "invalid-params", "image")
    assert "several" in e.value.message
    assert rpc.call("image.list") == []


@pytest.mark.parametrize("name,recorded", [("v1", "localhost/v1:latest"), ("app:1.0", "localhost/app:1.0"),
                                           ("latest", "localhost/latest:latest")])
def test_bare_ref_name_is_recorded_under_localhost(rpc, imagekit, name, recorded):
    img = imagekit.image(name, LAYERS[:1])
    archive = img.layout.oci_archive(imagekit.path("bare", ".tar"))
    out = load(rpc, archive)
    assert [h["reference"] for h in out] == [recorded]
    assert_everywhere(rpc, img, recorded)
    assert not any(h["reference"].startswith("docker.io/") for h in rpc.call("image.list"))
    with pytest.raises(RpcError) as e:
        rpc.call("image.get", {"reference": "docker.io/library/" + name})
    proto.check_error(e.value, "image-not-found")


def test_docker_save_repo_tags_stay_docker_names(rpc, imagekit):
    # RepoTags are Docker's own spelling: "alpine:3" is Docker Hub's alpine.
    img = imagekit.image("example.com/d/saved:1", LAYERS[:1])
    arch = img.layout.docker_archive("example.com/d/saved:1", imagekit.path("dk", ".tar"), ["alpine:3"])
    out = load(rpc, arch.path)
    assert [h["reference"] for h in out] == ["docker.io/library/alpine:3"]


def _with_top_level_attestation(imagekit, marked):
    """A layout whose index.json lists an image and, beside it, an
    attestation manifest (platform unknown/unknown; marked as buildkit does,
    or by its platform alone)."""
    lay = imagekit.layout("attested")
    img = lay.add_image("example.com/att/app:1", LAYERS[:2], Config(cmd=["app"]))
    lay.add_image("attestation", [{"sbom.spdx.json": b"{}"}], Config(architecture="unknown", os="unknown"))
    idx = lay.index()
    for m in idx["manifests"]:
        if m["annotations"][REF_NAME_ANNOTATION] == "attestation":
            m["platform"] = {"os": "unknown", "architecture": "unknown"}
            m["annotations"] = ({"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": img.manifest_digest} if marked else {})
    lay.write_index(idx)
    return lay, img


@pytest.mark.parametrize("marked", [True, False], ids=["annotated", "platform-only"])
def test_top_level_attestation_is_skipped(rpc, imagekit, daemon, marked):
    lay, img = _with_top_level_attestation(imagekit, marked)
    out = load(rpc, lay.path)
    assert [h["reference"] for h in out] == ["example.com/att/app:1"]
    assert_everywhere(rpc, img, "example.com/att/app:1")
    # As an archive, with tag: one image, so tag applies.
    archive = lay.oci_archive(imagekit.path("att", ".tar"))
    out = load(rpc, archive, tag="example.com/att/other:2")
    assert sorted(h["reference"] for h in out) == ["example.com/att/app:1", "example.com/att/other:2"]
    assert len({h["manifest_digest"] for h in rpc.call("image.list")}) == 1
    assert consistency_problems(daemon.store, rpc) == []


def test_attestations_only_is_invalid_image(rpc, imagekit):
    lay, img = _with_top_level_attestation(imagekit, True)
    idx = lay.index()
    idx["manifests"] = [m for m in idx["manifests"] if m.get("platform")]
    lay.write_index(idx)
    with pytest.raises(RpcError) as e:
        load(rpc, lay.path)
    proto.check_error(e.value, "invalid-image")
    assert "attestation" in e.value.message
    assert rpc.call("image.list") == []


# Archives passed as file descriptors (issue 11) --------------------------------


def _progress(rpc, request_id):
    return [n["params"] for n in rpc.notifications
            if n["method"] == "image.load.progress" and n["params"]["id"] == request_id]


def _load_fd(rpc, fd, **params):
    """image.load of the archive behind fd, passed with the request line;
    returns (result, the progress events of this request)."""
    rid = rpc.send_request_fds("image.load", {"fd": 0, **params}, [fd])
    resp = rpc.wait(rid)
    if "error" in resp:
        raise RpcError(resp)
    return resp["result"], _progress(rpc, rid)


def _cat_pipe(path, gzip_it=False):
    """A pipe another process writes the file into, as a shell pipeline does;
    returns (read end, process)."""
    r, w = os.pipe()
    argv = ["gzip", "-c", str(path)] if gzip_it else ["cat", str(path)]
    proc = subprocess.Popen(argv, stdout=w)
    os.close(w)
    return r, proc


def _daemon_fds(daemon):
    return sorted(os.listdir(f"/proc/{daemon.pid}/fd"), key=int)


def test_load_from_a_passed_regular_file(rpc, imagekit, daemon):
    img = imagekit.image(REF, LAYERS)
    archive = img.layout.oci_archive(imagekit.path("passed", ".tar"))
    with open(archive, "rb") as f:
        out, events = _load_fd(rpc, f.fileno())
    assert [h["reference"] for h in out] == [REF]
    assert_everywhere(rpc, img, REF)
    reading = [e for e in events if e["event"] == "reading"]
    assert reading and reading[-1]["read_bytes"] == archive.stat().st_size
    assert all(e["total_bytes"] == archive.stat().st_size for e in reading)
    assert consistency_problems(daemon.store, rpc) == []
    assert list((daemon.store / "tmp").iterdir()) == []


@pytest.mark.parametrize("kind", ["oci", "oci-gzip", "docker"])
def test_load_from_a_pipe(rpc, imagekit, daemon, kind):
    img = imagekit.image(REF, LAYERS)
    if kind == "docker":
        archive = img.layout.docker_archive(REF, imagekit.path("dpipe", ".tar"), [REF]).path
    else:
        archive = img.layout.oci_archive(imagekit.path("pipe", ".tar"))
    r, proc = _cat_pipe(archive, gzip_it=kind == "oci-gzip")
    try:
        out, events = _load_fd(rpc, r)
    finally:
        os.close(r)
        assert proc.wait(10) == 0
    assert [h["reference"] for h in out] == [REF]
    h = rpc.call("image.get", {"reference": REF})
    assert h["layer_count"] == 3 and h["manifest_digest"] == out[0]["manifest_digest"]
    reading = [e for e in events if e["event"] == "reading"]
    # A pipe's size is not known ahead: bytes read only.
    assert reading and all("total_bytes" not in e for e in reading)
    if kind != "oci-gzip":
        assert reading[-1]["read_bytes"] == archive.stat().st_size
    assert consistency_problems(daemon.store, rpc) == []
    assert list((daemon.store / "tmp").iterdir()) == []


def test_load_from_a_passed_fifo_picks_one_image(rpc, imagekit, short_tmp):
    lay, full, bare, tagged = _layout_of_three(imagekit)
    archive = lay.oci_archive(imagekit.path("three", ".tar"))
    fifo = short_tmp / "load.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f'cat "{archive}" > "{fifo}"'])
    fd = os.open(fifo, os.O_RDONLY)
    try:
        out, _ = _load_fd(rpc, fd, image="app:2.0", tag="example.com/fifo/app:2")
    finally:
        os.close(fd)
        assert writer.wait(10) == 0
    # The tag, and the image's own name (a name:tag ref.name, unlike a bare tag, is one).
    assert sorted(h["reference"] for h in out) == ["example.com/fifo/app:2", "localhost/app:2.0"]
    assert_everywhere(rpc, tagged, "example.com/fifo/app:2")
    assert len(rpc.call("image.list")) == 2


def test_progress_of_a_load(rpc, imagekit):
    img = imagekit.image(REF, LAYERS)
    archive = img.layout.oci_archive(imagekit.path("prog", ".tar"))
    rid = rpc.send_request("image.load", {"path": str(archive)})
    out = rpc.wait(rid)["result"]
    events = _progress(rpc, rid)
    names = [e["event"] for e in events]
    assert names[0] == "reading" and names[-1] == "complete", names
    first = names.index("resolved")
    assert set(names[:first]) == {"reading"}
    resolved = events[first]
    assert resolved["manifest_digest"] == img.manifest_digest
    assert resolved["layer_count"] == 3 and resolved["total_bytes"] == img.size_bytes
    layers = events[first + 1:-1]
    assert [e["event"] for e in layers] == ["layer-converted"] * 3
    assert [e["position"] for e in layers] == [0, 1, 2]
    assert [e["digest"] for e in layers] == [l.blob_digest for l in img.layers]
    assert [e["diff_id"] for e in layers] == img.diff_ids
    assert all(e["erofs_size_bytes"] > 0 and e["erofs_size_bytes"] % 4096 == 0 for e in layers)
    assert events[-1]["images"] == 1
    # The answer comes after every event.
    assert out[0]["manifest_digest"] == img.manifest_digest

    rid = rpc.send_request("image.load", {"path": str(img.layout.path)})
    rpc.wait(rid)
    again = [e["event"] for e in _progress(rpc, rid)]
    assert again == ["resolved", "layer-cached", "layer-cached", "layer-cached", "complete"], again
    # A notification, which no one waits on, hears nothing.
    rpc.notify("image.load", {"path": str(img.layout.path)})
    assert rpc.call("system.info")["pid"] > 0
    assert len(_progress(rpc, None)) == 0


@pytest.mark.parametrize("what", ["directory", "socket", "char-device", "write-only"])
def test_passed_fd_that_is_no_archive_is_refused(rpc, imagekit, short_tmp, what):
    import socket as socketlib
    closers = []
    if what == "directory":
        fd = os.open(short_tmp, os.O_RDONLY | os.O_DIRECTORY)
    elif what == "socket":
        a, b = socketlib.socketpair()
        closers += [a.close, b.close]
        fd = a.fileno()
    elif what == "char-device":
        fd = os.open("/dev/null", os.O_RDONLY)
    else:
        img = imagekit.image(REF, LAYERS[:1])
        fd = os.open(img.layout.oci_archive(imagekit.path("wo", ".tar")), os.O_WRONLY)
    try:
        with pytest.raises(RpcError) as e:
            _load_fd(rpc, fd)
    finally:
        if not closers:
            os.close(fd)
        for c in closers:
            c()
    proto.check_error(e.value, "invalid-params", "fd")
    word = {"directory": "directory", "socket": "socket", "char-device": "character device",
            "write-only": "writing"}[what]
    assert word in e.value.message, e.value
    assert rpc.call("image.list") == []


def test_fd_and_path_rules(rpc, imagekit, short_tmp):
    img = imagekit.image(REF, LAYERS[:1])
    archive = img.layout.oci_archive(imagekit.path("both", ".tar"))
    with open(archive, "rb") as f:
        with pytest.raises(RpcError) as e:
            rpc.call_fds("image.load", {"fd": 0, "path": str(archive)}, [f.fileno()])
        proto.check_error(e.value, "invalid-params", "path")
        # An index past the descriptors that came with the line.
        with pytest.raises(RpcError) as e:
            rpc.call_fds("image.load", {"fd": 1}, [f.fileno()])
        proto.check_error(e.value, "invalid-params", "fd")
    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {"fd": 0})
    proto.check_error(e.value, "invalid-params", "fd")
    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {})
    proto.check_error(e.value, "invalid-params", "path")
    assert rpc.call("image.list") == []


def test_descriptors_no_request_takes_are_closed(rpc, daemon, imagekit, short_tmp):
    img = imagekit.image(REF, LAYERS[:1])
    archive = img.layout.oci_archive(imagekit.path("unclaimed", ".tar"))
    rpc.call("system.info")
    base = _daemon_fds(daemon)
    with open(archive, "rb") as f:
        for _ in range(20):
            # Brought by requests that take none, or fewer than came.
            rpc.call_fds("system.info", {}, [f.fileno()])
            rpc.call_fds("image.load", {"fd": 1}, [f.fileno(), f.fileno(), f.fileno()])
            with pytest.raises(RpcError):
                rpc.call_fds("image.load", {"fd": 0, "tag": "::bad"}, [f.fileno()])
            f.seek(0)
            # A batch: the second load's index was taken by the first.
            rid = rpc.next_id()
            line = json.dumps([rpc.make_request("image.load", {"fd": 0, "tag": REF}, rid),
                               rpc.make_request("image.load", {"fd": 0}, rid + 1)]).encode() + b"\n"
            rpc.send_fds(line, [f.fileno()])
            replies = {r["id"]: r for r in rpc.recv_batch()}
            assert "result" in replies[rid], replies
            proto.check_error(replies[rid + 1], "invalid-params", "fd")
            rpc.next_id()
            f.seek(0)
    # A descriptor's close may come a loop iteration after the answer that
    # went out before it (its handle closes in a close callback).
    deadline = time.monotonic() + 10
    while _daemon_fds(daemon) != base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _daemon_fds(daemon) == base
    assert [h["reference"] for h in rpc.call("image.list")] == [REF]


def test_more_descriptors_than_a_line_may_bring(daemon, rpc):
    c = daemon.client(timeout=10)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(proto.limit("request_fds") + 1)]
    try:
        c.send_fds(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n', fds)
        data = proto.check_error(c.recv(), "limit-exceeded")
        assert data["limit"] == "request_fds" and data["max"] == proto.limit("request_fds")
        assert c.expect_eof()
        # Exactly at the limit is fine.
        ok = daemon.client(timeout=10)
        ok.send_fds(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n', fds[:proto.limit("request_fds")])
        assert ok.recv()["result"]["pid"] == daemon.pid
    finally:
        for fd in fds:
            os.close(fd)
    assert rpc.call("system.info")["pid"] == daemon.pid


def test_more_descriptors_pending_than_a_connection_may_hold(daemon, rpc):
    base = None
    rpc.call("system.info")
    base = _daemon_fds(daemon)
    c = daemon.client(timeout=10)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(proto.limit("connection_pending_fds") + 1)]
    try:
        # The start of a line that never ends, with more descriptors than
        # may wait for it.
        c.send_fds(b'{"jsonrpc":"2.0",', fds)
        data = proto.check_error(c.recv(), "limit-exceeded")
        assert data["limit"] == "connection_pending_fds"
        assert data["max"] == proto.limit("connection_pending_fds")
        assert c.expect_eof()
    finally:
        for fd in fds:
            os.close(fd)
    assert rpc.call("system.info")["pid"] == daemon.pid
    assert _daemon_fds(daemon) == base


def test_a_silent_pipe_does_not_hold_up_shutdown(daemon, imagekit):
    # A client passes a pipe and never writes it: the load waits, the
    # daemon still serves, and SIGTERM ends the wait promptly, answering
    # the load shutting-down.
    r, w = os.pipe()
    c = RpcClient(daemon.socket_path, timeout=10)
    try:
        rid = c.send_request_fds("image.load", {"fd": 0}, [r])
        # The load waits for bytes that never come...
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.5)
        # ...while the daemon serves others.
        with daemon.client(timeout=10) as probe:
            t = time.monotonic()
            assert probe.call("system.df")["image_refs"] == 0
            assert time.monotonic() - t < FIFO_ANSWER_S
        t = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        proto.check_error(c.wait(rid), "shutting-down")
        daemon.stop(timeout=10)
        assert time.monotonic() - t < 5, time.monotonic() - t
    finally:
        c.close()
        os.close(r)
        os.close(w)


# libfaketime (Debian's faketime) runs the daemon's clocks this many times
# faster, so that its 5-minute limit on a silent pipe passes in seconds:
# what is tested is the daemon's own constant, not one lowered for tests.
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
FAKETIME_SPEED = 100


@pytest.fixture
def fast_clock_daemon(daemon_factory):
    # ASan wants to be the first library; libfaketime only wraps clocks.
    env = daemon_env("verify_asan_link_order=0", LD_PRELOAD=str(FAKETIME_LIB), FAKETIME=f"+0 x{FAKETIME_SPEED}",
                     FAKETIME_DONT_RESET="1")
    return daemon_factory("fast-clock", env=env)


def test_a_pipe_silent_past_its_limit_ends_the_load(fast_clock_daemon, imagekit):
    # The limit is on silence, not on the whole load: a pipe that pauses
    # 3 (fast) minutes twice, 6 in all, loads; one that then stays silent
    # for 5 minutes ends its load, limit-exceeded naming load_pipe_idle_ms,
    # with nothing left in tmp/, and the daemon serves on.
    d = fast_clock_daemon
    idle_s = proto.limit("load_pipe_idle_ms") / 1000 / FAKETIME_SPEED
    pause_s = 0.6 * idle_s
    img = imagekit.image(REF, LAYERS)
    data = img.layout.oci_archive(imagekit.path("slow", ".tar")).read_bytes()
    c = d.client(timeout=30)
    r, w = os.pipe()
    try:
        rid = c.send_request_fds("image.load", {"fd": 0}, [r])
        third = len(data) // 3
        for k, piece in enumerate((data[:third], data[third:2 * third], data[2 * third:])):
            if k:
                time.sleep(pause_s)
            os.write(w, piece)
        os.close(w)
        w = -1
        resp = c.wait(rid, timeout=30)
        assert "result" in resp, resp
        assert [h["reference"] for h in resp["result"]] == [REF]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)

    c.call("image.remove", {"reference": REF})
    r, w = os.pipe()
    try:
        rid = c.send_request_fds("image.load", {"fd": 0}, [r])
        os.write(w, data[:third])
        t = time.monotonic()
        resp = c.wait(rid, timeout=30)
        took = time.monotonic() - t
    finally:
        os.close(r)
        os.close(w)
    assert "error" in resp, resp
    err = RpcError(resp)
    proto.check_error(err, "limit-exceeded")
    assert err.data["limit"] == "load_pipe_idle_ms"
    assert err.data["max"] == proto.limit("load_pipe_idle_ms")
    # Not before the limit, nor long after it (the wait looks every 250 ms).
    assert idle_s * 0.95 <= took <= idle_s + 3, took
    assert list((d.store / "tmp").iterdir()) == []
    assert c.call("image.list") == []
    assert consistency_problems(d.store, c) == []


def test_writer_gone_mid_archive_is_invalid_image(rpc, imagekit, daemon):
    img = imagekit.image(REF, LAYERS)
    data = img.layout.oci_archive(imagekit.path("cut", ".tar")).read_bytes()
    r, w = os.pipe()
    os.write(w, data[: len(data) // 2])
    os.close(w)
    try:
        with pytest.raises(RpcError) as e:
            _load_fd(rpc, r)
    finally:
        os.close(r)
    proto.check_error(e.value, "invalid-image")
    assert rpc.call("image.list") == []
    assert list((daemon.store / "tmp").iterdir()) == []


def test_an_archive_the_daemon_cannot_see_loads_when_passed(hidden_dir_daemon, imagekit):
    # The daemon runs where a tmpfs hides the archive's directory (as
    # systemd's PrivateTmp hides the caller's /tmp): by path it finds
    # nothing, passed as a descriptor it loads.
    d, hidden = hidden_dir_daemon
    img = imagekit.image(REF, LAYERS[:2])
    archive = img.layout.oci_archive(hidden / "app.tar")
    rpc = d.client()
    with pytest.raises(RpcError) as e:
        load(rpc, archive)
    proto.check_error(e.value, "path-not-found")
    with open(archive, "rb") as f:
        out, _ = _load_fd(rpc, f.fileno())
    assert [h["reference"] for h in out] == [REF]
    assert_everywhere(rpc, img, REF)
