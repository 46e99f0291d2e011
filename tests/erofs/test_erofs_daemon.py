"""The daemon's load path makes the rootfs a sandbox boots: image.load
converts each layer to EROFS, writes fsmeta and the VMDK, fills
erofs_size_bytes, and pin.add returns real paths; bad layers are rejected
with the converter's error, the daemon keeps serving and the store keeps
nothing of them.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

import erofs_kit as kit
from msbtest import store as msbstore


def small_image(d: Path, tag: str = "kit") -> kit.OciImage:
    d.mkdir(parents=True, exist_ok=True)
    tars = [kit.write_base_layer(d / "l1.tar", big=False, many=300), kit.write_upper_layer(d / "l2.tar"),
            kit.write_gnu_layer(d / "l3.tar")]
    return kit.build_oci(d / "layout", tag, tars)


def assert_store_clean(daemon) -> None:
    files = msbstore.content_files(daemon.store)
    assert files["layers"] == [] and files["fsmeta"] == [] and files["vmdk"] == [], files
    assert files["tmp"] == [], files["tmp"]


def test_load_builds_the_rootfs(daemon, rpc, tmp_path):
    img = small_image(tmp_path)
    handles = rpc.call("image.load", {"path": str(img.layout)}, timeout=300)
    assert len(handles) == 1
    ref = handles[0]["reference"]
    detail = rpc.call("image.inspect", {"reference": ref})
    assert [l["diff_id"] for l in detail["layers"]] == img.diff_ids
    for layer in detail["layers"]:
        path = Path(daemon.store) / "layers" / "sha256" / (layer["diff_id"].split(":")[1] + ".erofs")
        assert layer["erofs_size_bytes"] == path.stat().st_size
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "erofs-test", "reference": ref})
    assert rootfs["manifest_digest"] == img.manifest_digest
    layers = [Path(l["path"]) for l in rootfs["layers"]]
    assert all(p.is_absolute() and p.exists() for p in layers)
    fsmeta, vmdk = Path(rootfs["fsmeta_path"]), Path(rootfs["vmdk_path"])
    assert fsmeta.is_absolute() and vmdk.is_absolute()

    got_dir = tmp_path / "x"
    p = subprocess.run(["fsck.erofs", *(f"--device={l}" for l in layers), f"--extract={got_dir}", str(fsmeta)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    want = kit.snapshot(kit.umoci_unpack(img, tmp_path / "bundle"), xattrs=False, hardlinks=False,
                        file_suid=False)
    got = kit.snapshot(got_dir, xattrs=False, hardlinks=False, file_suid=False)
    assert got == want, kit.diff(got, want)

    info = subprocess.run(["qemu-img", "info", str(vmdk)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert msbstore.consistency_problems(daemon.store, rpc) == []


def test_shared_layer_converted_once(daemon, rpc, tmp_path):
    a = small_image(tmp_path / "a", "a")
    rpc.call("image.load", {"path": str(a.layout)}, timeout=300)
    before = {p.name: p.stat().st_mtime_ns for p in (Path(daemon.store) / "layers" / "sha256").iterdir()}
    b = kit.build_oci(a.layout, "b", [tmp_path / "a" / "l1.tar", tmp_path / "a" / "l2.tar"])
    rpc.call("image.load", {"path": str(b.layout)}, timeout=300)
    after = {p.name: p.stat().st_mtime_ns for p in (Path(daemon.store) / "layers" / "sha256").iterdir()}
    assert {k: after[k] for k in before} == before


def test_diff_id_mismatch_leaves_nothing(daemon, rpc, tmp_path):
    img = small_image(tmp_path)
    wrong = "sha256:" + "0" * 64
    real = img.diff_ids[1]
    kit.replace_config(img, lambda c: c["rootfs"]["diff_ids"].__setitem__(1, wrong))
    resp = rpc.request("image.load", {"path": str(img.layout)}, timeout=300)
    assert resp["error"]["data"]["name"] == "digest-mismatch", resp
    assert resp["error"]["data"]["expected"] == wrong and resp["error"]["data"]["actual"] == real
    assert rpc.call("image.list") == []
    # Nothing of the bad layer stays; a good layer converted before it may
    # stay as long as the index knows it (prune takes it).
    files = msbstore.content_files(daemon.store)
    names = {p.name for p in files["layers"]}
    assert real.split(":")[1] + ".erofs" not in names and wrong.split(":")[1] + ".erofs" not in names
    assert files["fsmeta"] == [] and files["vmdk"] == [] and files["tmp"] == []
    assert msbstore.consistency_problems(daemon.store, rpc) == []


@pytest.mark.parametrize("case", ["dotdot", "path-limit", "truncated"])
def test_bad_layer_is_rejected_and_the_daemon_keeps_serving(daemon, rpc, tmp_path, case):
    tar = tmp_path / "bad.tar"
    if case == "dotdot":
        t = kit.Tar(tar)
        t.file("ok", b"fine")
        t.tf.close()
        # tarfile refuses nothing here, but umoci would not write "..": the
        # hostile name is patched into the archive's first header.
        data = bytearray(tar.read_bytes())
        data[0:2] = b".."
        data[2:100] = b"/evil".ljust(98, b"\0")
        chksum = sum(data[0:148]) + 8 * 32 + sum(data[156:512])
        data[148:156] = b"%06o\0 " % chksum
        tar.write_bytes(bytes(data))
    elif case == "path-limit":
        t = kit.Tar(tar)
        t.file(kit.deep_path(4097), b"too deep")
        t.close()
    else:
        t = kit.Tar(tar)
        t.file("big", bytes(range(256)) * 4000)
        t.close()
    img = kit.build_oci(tmp_path / "layout", "bad", [tar])
    if case == "truncated":
        blob = img.layers[0][0]
        data = blob.read_bytes()
        blob.chmod(0o644)
        blob.write_bytes(data[: len(data) // 2])
    resp = rpc.request("image.load", {"path": str(img.layout)}, timeout=300)
    err = resp.get("error")
    assert err, resp
    want = {"dotdot": "layer-rejected", "path-limit": "limit-exceeded", "truncated": "digest-mismatch"}[case]
    assert err["data"]["name"] == want, err
    if case == "dotdot":
        assert err["data"]["entry"] == "../evil"
    if case == "path-limit":
        assert err["data"]["limit"] == "path_bytes" and err["data"]["max"] == 4096
    # The daemon still serves, and nothing of the layer stayed.
    assert rpc.call("image.list") == []
    assert_store_clean(daemon)
