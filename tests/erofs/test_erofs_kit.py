"""Layer images, fsmeta and VMDK from the test image kit, checked by
independent tools: fsck.erofs (erofs-utils), GNU tar, umoci, qemu-img and
the kernel's erofs driver.

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/erofs

fsck.erofs 1.5 --extract restores paths, types, modes, owners, sizes,
contents, link targets, device numbers and mtimes, but neither xattrs nor
hard links, and it loses setuid/setgid of files (it chowns after chmod);
those are compared through a kernel mount, where the test may mount (root
with loop devices), and the test says so when it skips.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import erofs_kit as kit  # noqa: E402
from msbtest.erofs import Mount, mount_reason  # noqa: E402


def fsck(image: Path, *devices: Path, extract: Path | None = None) -> subprocess.CompletedProcess:
    args = ["fsck.erofs", *(f"--device={d}" for d in devices)]
    if extract is not None:
        args.append(f"--extract={extract}")
    return subprocess.run([*args, str(image)], capture_output=True, text=True)


@functools.cache
def _truth_full(root: Path) -> dict:
    return kit.full_snapshot(root)


def truth(root: Path, **view) -> dict:
    """kit.snapshot(root, **view) of a tree the tests only read (umoci's
    unpack, GNU tar's extractions): read once a session, each view made
    from that (kit.project), as the 100 MB file is hashed in each read."""
    return kit.project(_truth_full(root), **view)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    if not kit.erofs_tool().exists():
        pytest.fail(f"{kit.erofs_tool()} is missing: build first and set MSB_BUILD_DIR")
    d = tmp_path_factory.mktemp("erofs-kit")
    shared = kit.kit_image(d)
    tars, img, rootfs = shared.tars, shared.img, shared.rootfs
    images = []
    for k, (blob, mt, digest, size) in enumerate(img.layers):
        out = d / f"layer{k}.erofs"
        info = kit.run_tool("convert", blob, mt, out, "--diff-id", img.diff_ids[k],
                            "--blob-digest", digest, "--blob-size", str(size))
        assert info["diff_id"] == img.diff_ids[k]
        assert info["erofs_bytes"] == out.stat().st_size
        images.append(out)
    fsmeta = d / "fsmeta.erofs"
    res = kit.run_tool("fsmeta", fsmeta, img.manifest_digest, *images)
    assert res["size"] == fsmeta.stat().st_size
    vmdk = d / "disk.vmdk"
    kit.run_tool("vmdk", vmdk, fsmeta, *images)
    return {"dir": d, "tars": tars, "img": img, "rootfs": rootfs, "images": images,
            "fsmeta": fsmeta, "vmdk": vmdk}


def test_layer_images_pass_fsck(built):
    for image in built["images"]:
        p = fsck(image)
        assert p.returncode == 0, p.stderr


def test_layer_extract_equals_tar(built):
    for k, (tar, image) in enumerate(zip(built["tars"], built["images"])):
        want = truth(kit.tar_extract_layer(tar, built["dir"] / f"tar-x{k}"), xattrs=False, hardlinks=False, file_suid=False)
        got_dir = built["dir"] / f"fsck-x{k}"
        p = fsck(image, extract=got_dir)
        assert p.returncode == 0, p.stderr
        got = kit.snapshot(got_dir, xattrs=False, hardlinks=False, file_suid=False)
        assert got == want, kit.diff(got, want)


def test_kit_has_what_the_issue_lists(built):
    """The kit really contains the cases (so the comparisons above mean something)."""
    s = truth(built["rootfs"], xattrs=True, hardlinks=True)
    assert s["sizes/empty"]["size"] == 0
    assert s["sizes/4096"]["size"] == 4096 and s["sizes/4097"]["size"] == 4097
    assert s["sizes/100MB"]["size"] == kit.BIG_FILE_BYTES
    assert sum(1 for p in s if p.startswith("data/many/")) == kit.SMALL_FILES
    assert s["owned/file"]["uid"] == 100000 and s["owned/file"]["gid"] == 100000
    assert s["long/" + "n" * 255]["size"] > 0
    assert any(len(p) == 4000 for p in s)
    assert s["devs/null"]["rdev"] == (1, 3) and s["devs/big-minor"]["rdev"] == (250, 70000)
    assert s["xattr/file"]["xattrs"]["user.greeting"] == b"hello"
    assert s["links/dangling"]["target"] == "/does/not/exist"
    assert s["etc/passwd"]["mtime"] != s["etc/hostname.link"]["mtime"]
    assert s["usr/bin/su"]["mode"] == 0o4755 and s["tmp"]["mode"] == 0o1777 and s["setgid"]["mode"] == 0o2755
    assert "etc/hostname" not in s and "data/sub" not in s and "opq/old" not in s
    assert ["etc/hostname.link", "links/hostname"] in s["<hardlinks>"]


def test_fsmeta_passes_fsck(built):
    p = fsck(built["fsmeta"], *built["images"])
    assert p.returncode == 0, p.stderr


def test_fsmeta_extract_equals_umoci_unpack(built):
    got_dir = built["dir"] / "fsmeta-x"
    p = fsck(built["fsmeta"], *built["images"], extract=got_dir)
    assert p.returncode == 0, p.stderr
    got = kit.snapshot(got_dir, xattrs=False, hardlinks=False, file_suid=False)
    want = truth(built["rootfs"], xattrs=False, hardlinks=False, file_suid=False)
    assert got == want, kit.diff(got, want)


def test_fsmeta_is_metadata_only(built):
    """fsmeta holds no file data: it is far smaller than the 100 MB file."""
    assert built["fsmeta"].stat().st_size < 8 * 1024 * 1024
    assert built["fsmeta"].stat().st_size % 4096 == 0


def test_vmdk_accepted_by_qemu_img(built):
    p = subprocess.run(["qemu-img", "info", "--output=json", str(built["vmdk"])], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["format"] == "vmdk"
    files = [built["fsmeta"], *built["images"]]
    assert info["virtual-size"] == sum(f.stat().st_size for f in files)
    extents = info["format-specific"]["data"]["extents"]
    assert [e["filename"] for e in extents] == [str(f) for f in files]
    assert info["format-specific"]["data"]["create-type"] == "twoGbMaxExtentFlat"


def test_mount_layers_equal_tar(built):
    reason = mount_reason()
    if reason:
        pytest.skip(reason)
    for k, (tar, image) in enumerate(zip(built["tars"], built["images"])):
        want = truth(built["dir"] / f"tar-x{k}" if (built["dir"] / f"tar-x{k}").exists()
                     else kit.tar_extract_layer(tar, built["dir"] / f"tar-m{k}"), mtime_ns=True)
        with Mount(image, built["dir"] / f"mnt{k}") as m:
            got = kit.snapshot(m, mtime_ns=True)
        assert got == want, kit.diff(got, want)


def test_mount_vmdk_equals_umoci_unpack(built):
    reason = mount_reason()
    if reason:
        pytest.skip(reason)
    raw = built["dir"] / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(built["vmdk"]), str(raw)], check=True)
    with Mount(raw, built["dir"] / "mnt-disk") as m:
        got = kit.snapshot(m, mtime_ns=True)
    want = truth(built["rootfs"], mtime_ns=True)
    assert got == want, kit.diff(got, want)
    raw.unlink()


def test_same_layer_twice_is_byte_identical(built, tmp_path):
    blob, mt, digest, size = built["img"].layers[1]
    a, b = tmp_path / "a.erofs", tmp_path / "b.erofs"
    kit.run_tool("convert", blob, mt, a)
    kit.run_tool("convert", blob, mt, b)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == built["images"][1].read_bytes()
    f1, f2 = tmp_path / "f1", tmp_path / "f2"
    kit.run_tool("fsmeta", f1, built["img"].manifest_digest, *built["images"])
    kit.run_tool("fsmeta", f2, built["img"].manifest_digest, *built["images"])
    assert f1.read_bytes() == f2.read_bytes() == built["fsmeta"].read_bytes()


def test_uuid_follows_the_digest(built, tmp_path):
    """Different content gives a different UUID; the same gives the same."""
    def uuid(p: Path) -> bytes:
        return p.read_bytes()[1024 + 48:1024 + 64]
    assert uuid(built["images"][0]) != uuid(built["images"][1])
    assert len({uuid(p) for p in built["images"]}) == len(built["images"])


def dump(image: Path, *args: str, devices=()) -> str:
    p = subprocess.run(["dump.erofs", *(f"--device={d}" for d in devices), *args, str(image)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_dump_erofs_reads_the_layouts(built):
    """dump.erofs (erofs-utils) sees flat files in the layer image and the
    same file as a chunk-based inode (layout 4) in fsmeta."""
    layer = dump(built["images"][0], "--path=/sizes/100MB")
    assert f"Size: {kit.BIG_FILE_BYTES} " in layer and "Layout: 0 " in layer
    merged = dump(built["fsmeta"], "--path=/sizes/100MB", devices=built["images"])
    assert f"Size: {kit.BIG_FILE_BYTES} " in merged and "Layout: 4 " in merged
    sb = dump(built["fsmeta"], "-s", devices=built["images"])
    assert "chunked_file" in sb and "device_table" in sb, sb
    owned = dump(built["images"][0], "--path=/owned/file")
    assert "Uid: 100000 " in owned and "Gid: 100000" in owned and "Inode size: 64 " in owned


def test_implicit_parent_keeps_lower_metadata(tmp_path):
    """A layer that names keep/new but not keep/ leaves keep/ as the layer
    below made it, as umoci unpack (tar extraction) does; a layer that
    names keep/ again changes it."""
    l1 = kit.Tar(tmp_path / "l1.tar")
    l1.dir("keep", 0o700, uid=7, gid=8, mtime=kit.MTIME + 5)
    l1.file("keep/a", b"a")
    l1.dir("named", 0o700)
    l1.close()
    l2 = kit.Tar(tmp_path / "l2.tar")
    l2.file("keep/new", b"new")
    l2.file("implied/deeper/x", b"x")
    l2.dir("named", 0o755, mtime=kit.MTIME + 9)
    l2.close()
    img = kit.build_oci(tmp_path / "layout", "implicit", [tmp_path / "l1.tar", tmp_path / "l2.tar"])
    images, fsmeta = kit.convert_image(img, tmp_path, prefix="l")
    x = tmp_path / "x"
    p = fsck(fsmeta, *images, extract=x)
    assert p.returncode == 0, p.stderr
    got = kit.snapshot(x, xattrs=False, hardlinks=False, file_suid=False)
    assert got["keep"]["mode"] == 0o700 and got["keep"]["uid"] == 7 and got["keep"]["mtime"] == kit.MTIME + 5
    assert got["named"]["mode"] == 0o755 and got["named"]["mtime"] == kit.MTIME + 9
    want = kit.snapshot(kit.umoci_unpack(img, tmp_path / "bundle"), xattrs=False, hardlinks=False, file_suid=False)
    # Directories only the upper layer implied have no metadata of their own
    # anywhere: umoci gives them its clock, so their times are not compared.
    for s in (got, want):
        for p_ in ("implied", "implied/deeper"):
            s[p_].pop("mtime", None)
    assert got == want, kit.diff(got, want)
    reason = mount_reason()
    if reason is None:
        with Mount(fsmeta_disk(tmp_path, fsmeta, images), tmp_path / "m") as m:
            xattrs = {k for p_ in ("keep", "implied", "") for k in os.listxattr(m / p_)}
        assert not any(k.startswith("trusted.msb-imaged") for k in xattrs)


def fsmeta_disk(tmp_path: Path, fsmeta: Path, images: list[Path]) -> Path:
    vmdk, raw = tmp_path / "disk.vmdk", tmp_path / "disk.raw"
    kit.run_tool("vmdk", vmdk, fsmeta, *images)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(vmdk), str(raw)], check=True)
    return raw
