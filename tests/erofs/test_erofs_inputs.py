"""Layer inputs: every compression, digests, and corrupt or hostile tars.

Each case writes a real tar (Python tarfile, gzip, the zstd CLI) and runs the
converter through erofs-tool; accepted images are checked by fsck.erofs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import erofs_kit as kit  # noqa: E402

MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def small_tar(path: Path, entries=None) -> Path:
    t = kit.Tar(path)
    t.dir("etc")
    t.file("etc/a", b"hello\n" * 1000)
    t.file("etc/b", b"x" * 5000, mode=0o600)
    t.symlink("etc/l", "a")
    for name, data in (entries or []):
        t.file(name, data)
    return t.close()


def raw_tar(path: Path, name: str, data: bytes = b"x", *, typeflag: bytes = tarfile.REGTYPE,
            linkname: str = "") -> Path:
    """A tar whose one member keeps its name exactly as given (tarfile would
    not write some hostile names itself)."""
    ti = tarfile.TarInfo("placeholder")
    ti.size = len(data) if typeflag == tarfile.REGTYPE else 0
    ti.type = typeflag
    ti.linkname = linkname
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti.name = name
        tf.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def gz(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(src.read_bytes(), mtime=0))
    return dst


def zst(src: Path, dst: Path) -> Path:
    subprocess.run(["zstd", "-q", "-f", "-o", str(dst), str(src)], check=True)
    return dst


def sha(p: Path) -> str:
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def fsck_ok(image: Path) -> None:
    p = subprocess.run(["fsck.erofs", str(image)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_tar_gzip_zstd_give_the_same_image(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    out = {}
    for mt, blob in ((MT_TAR, tar), (MT_GZIP, gz(tar, tmp_path / "l.tgz")), (MT_ZSTD, zst(tar, tmp_path / "l.zst")),
                     (MT_DOCKER, tmp_path / "l.tgz")):
        img = tmp_path / f"{blob.name}.{len(out)}.erofs"
        info = kit.run_tool("convert", blob, mt, img, "--blob-digest", sha(blob), "--diff-id", sha(tar))
        assert info["diff_id"] == sha(tar)
        assert info["uncompressed_bytes"] == tar.stat().st_size
        assert info["entries"] == 4
        fsck_ok(img)
        out[mt] = img.read_bytes()
    assert len(set(out.values())) == 1


def test_multi_member_gzip(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    data = tar.read_bytes()
    blob = tmp_path / "l.tgz"
    blob.write_bytes(gzip.compress(data[:7000]) + gzip.compress(data[7000:]))
    info = kit.run_tool("convert", blob, MT_GZIP, tmp_path / "o.erofs", "--diff-id", sha(tar))
    assert info["diff_id"] == sha(tar)


def test_plain_tar_media_type_accepts_compressed_blob(tmp_path):
    """docker save archives declare tar but may hold gzip: the magic decides."""
    tar = small_tar(tmp_path / "l.tar")
    info = kit.run_tool("convert", gz(tar, tmp_path / "l.tgz"), MT_TAR, tmp_path / "o.erofs")
    assert info["diff_id"] == sha(tar)


def test_declared_gzip_but_plain_is_rejected(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    res = kit.run_tool("convert", tar, MT_GZIP, tmp_path / "o.erofs", check=False)
    assert res["_rc"] == 1 and res["name"] == "layer-rejected"


def test_unknown_media_type(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    res = kit.run_tool("convert", tar, "application/x-rar", tmp_path / "o.erofs", check=False)
    assert res["name"] == "unsupported-media-type"


def test_truncated_gzip_is_rejected(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    blob = gz(tar, tmp_path / "l.tgz")
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    res = kit.run_tool("convert", cut, MT_GZIP, tmp_path / "o.erofs", check=False)
    assert res["_rc"] == 1 and res["name"] == "layer-rejected", res
    # With the expected digest known, the cause is named: a corrupt blob.
    res = kit.run_tool("convert", cut, MT_GZIP, tmp_path / "o.erofs", "--blob-digest", sha(blob), check=False)
    assert res["name"] == "digest-mismatch"
    assert res["data"] == {"expected": sha(blob), "actual": sha(cut)}


def test_truncated_zstd_is_rejected(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    blob = zst(tar, tmp_path / "l.zst")
    cut = tmp_path / "cut.zst"
    cut.write_bytes(blob.read_bytes()[:-20])
    res = kit.run_tool("convert", cut, MT_ZSTD, tmp_path / "o.erofs", check=False)
    assert res["_rc"] == 1 and res["name"] == "layer-rejected", res


def test_truncated_tar_is_rejected(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[:1500])
    res = kit.run_tool("convert", cut, MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["_rc"] == 1 and res["name"] == "layer-rejected", res


def test_diff_id_mismatch(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    wrong = "sha256:" + "0" * 64
    res = kit.run_tool("convert", gz(tar, tmp_path / "l.tgz"), MT_GZIP, tmp_path / "o.erofs", "--diff-id", wrong,
                       check=False)
    assert res["name"] == "digest-mismatch"
    assert res["data"] == {"expected": wrong, "actual": sha(tar)}


def test_blob_digest_and_size_mismatch(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    blob = gz(tar, tmp_path / "l.tgz")
    wrong = "sha256:" + "1" * 64
    res = kit.run_tool("convert", blob, MT_GZIP, tmp_path / "o.erofs", "--blob-digest", wrong, check=False)
    assert res["name"] == "digest-mismatch" and res["data"] == {"expected": wrong, "actual": sha(blob)}
    size = blob.stat().st_size
    for claimed in (size - 1, size + 1):
        res = kit.run_tool("convert", blob, MT_GZIP, tmp_path / "o.erofs", "--blob-size", str(claimed), check=False)
        assert res["name"] == "digest-mismatch" and res["data"]["expected"] == claimed, res


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "./a/../b", "/../x", "a/.."])
def test_dotdot_is_rejected_naming_the_entry(tmp_path, name):
    tar = raw_tar(tmp_path / "l.tar", name)
    res = kit.run_tool("convert", tar, MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["name"] == "layer-rejected" and res["data"]["entry"] == name, res


def test_hardlink_escaping_or_missing_is_rejected(tmp_path):
    tar = raw_tar(tmp_path / "l.tar", "a", typeflag=tarfile.LNKTYPE, linkname="../etc/passwd")
    res = kit.run_tool("convert", tar, MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["name"] == "layer-rejected" and res["data"]["entry"] == "a"
    tar = raw_tar(tmp_path / "l.tar", "a", typeflag=tarfile.LNKTYPE, linkname="missing")
    res = kit.run_tool("convert", tar, MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["name"] == "layer-rejected" and res["data"]["entry"] == "a"


def test_path_limit(tmp_path):
    """4096 bytes is the most a normalised path may have (PROTO_LIMIT_PATH_BYTES)."""
    ok = kit.deep_path(4096)
    t = kit.Tar(tmp_path / "ok.tar")
    t.file(ok, b"fits")
    t.close()
    kit.run_tool("convert", tmp_path / "ok.tar", MT_TAR, tmp_path / "ok.erofs")
    fsck_ok(tmp_path / "ok.erofs")
    bad = kit.deep_path(4097)
    t = kit.Tar(tmp_path / "bad.tar")
    t.file(bad, b"too long")
    t.close()
    res = kit.run_tool("convert", tmp_path / "bad.tar", MT_TAR, tmp_path / "bad.erofs", check=False)
    assert res["name"] == "limit-exceeded" and res["data"]["limit"] == "path_bytes" and res["data"]["max"] == 4096
    assert res["data"]["entry"] == bad


def test_symlink_target_limit(tmp_path):
    t = kit.Tar(tmp_path / "l.tar")
    t.symlink("l", "x" * 4097)
    t.close()
    res = kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["name"] == "limit-exceeded" and res["data"]["limit"] == "path_bytes"
    # Linux itself cannot hold a 4096-byte target (PATH_MAX counts the NUL).
    t = kit.Tar(tmp_path / "l.tar")
    t.symlink("l", "x" * 4096)
    t.close()
    res = kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["name"] == "layer-rejected" and res["data"]["entry"] == "l"
    t = kit.Tar(tmp_path / "l.tar")
    t.symlink("l", "x" * 4095)
    t.close()
    kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs")
    fsck_ok(tmp_path / "o.erofs")


def test_depth_limit(tmp_path):
    """128 components are allowed (PROTO_LIMIT_PATH_DEPTH), 129 are not."""
    t = kit.Tar(tmp_path / "ok.tar")
    t.file("/".join(["d"] * 128), b"deep")
    t.close()
    kit.run_tool("convert", tmp_path / "ok.tar", MT_TAR, tmp_path / "ok.erofs")
    fsck_ok(tmp_path / "ok.erofs")
    t = kit.Tar(tmp_path / "bad.tar")
    t.file("/".join(["d"] * 129), b"deeper")
    t.close()
    res = kit.run_tool("convert", tmp_path / "bad.tar", MT_TAR, tmp_path / "bad.erofs", check=False)
    assert res["name"] == "limit-exceeded" and res["data"]["limit"] == "path_depth" and res["data"]["max"] == 128


def test_name_over_255_bytes_is_rejected(tmp_path):
    tar = raw_tar(tmp_path / "l.tar", "n" * 256)
    res = kit.run_tool("convert", tar, MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["name"] == "layer-rejected" and res["data"]["entry"] == "n" * 256


def test_entries_limit(tmp_path):
    """The entry count limit, exercised at a small value through the same code
    path (1,000,000 real entries would take minutes)."""
    t = kit.Tar(tmp_path / "l.tar")
    for i in range(11):
        t.file(f"f{i}", b"")
    t.close()
    kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs", "--max-entries", "11")
    res = kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs", "--max-entries", "10",
                       check=False)
    assert res["name"] == "limit-exceeded" and res["data"] == {"limit": "layer_entries", "max": 10, "entry": "f10"}


def test_uncompressed_limit(tmp_path):
    tar = small_tar(tmp_path / "l.tar")
    size = tar.stat().st_size
    blob = gz(tar, tmp_path / "l.tgz")
    kit.run_tool("convert", blob, MT_GZIP, tmp_path / "o.erofs", "--max-uncompressed", str(size))
    res = kit.run_tool("convert", blob, MT_GZIP, tmp_path / "o.erofs", "--max-uncompressed", str(size - 1),
                       check=False)
    assert res["name"] == "limit-exceeded" and res["data"] == {"limit": "layer_uncompressed_bytes", "max": size - 1}


def test_duplicate_entries_later_wins(tmp_path):
    t = kit.Tar(tmp_path / "l.tar")
    t.file("a", b"first")
    t.dir("d")
    t.file("d/inner", b"kept")
    t.dir("d", mode=0o700)          # a directory again: metadata changes, content stays
    t.file("a", b"second")
    t.dir("f")
    t.file("f/gone", b"goes with the directory")
    t.file("f", b"a file replaces the directory")
    t.close()
    kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs")
    x = tmp_path / "x"
    subprocess.run(["fsck.erofs", f"--extract={x}", str(tmp_path / "o.erofs")], check=True, capture_output=True)
    assert (x / "a").read_bytes() == b"second"
    assert (x / "d" / "inner").read_bytes() == b"kept"
    assert (x / "d").stat().st_mode & 0o777 == 0o700
    assert (x / "f").read_bytes() == b"a file replaces the directory"


def test_paths_are_normalised(tmp_path):
    t = kit.Tar(tmp_path / "l.tar")
    t.dir("./a/")
    t.file("a//b", b"1")
    t.file("/a/./c", b"2")
    t.dir("a/d/")
    t.close()
    kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, tmp_path / "o.erofs")
    x = tmp_path / "x"
    subprocess.run(["fsck.erofs", f"--extract={x}", str(tmp_path / "o.erofs")], check=True, capture_output=True)
    assert sorted(p.name for p in (x / "a").iterdir()) == ["b", "c", "d"]


def test_empty_layer(tmp_path):
    tar = tmp_path / "empty.tar"
    tar.write_bytes(b"\0" * 1024)
    info = kit.run_tool("convert", tar, MT_TAR, tmp_path / "o.erofs")
    assert info["entries"] == 0
    fsck_ok(tmp_path / "o.erofs")
    zero = tmp_path / "zero.tar"
    zero.write_bytes(b"")
    kit.run_tool("convert", zero, MT_TAR, tmp_path / "z.erofs")
    fsck_ok(tmp_path / "z.erofs")


def test_garbage_is_rejected(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a tar archive at all" * 100)
    res = kit.run_tool("convert", junk, MT_TAR, tmp_path / "o.erofs", check=False)
    assert res["_rc"] == 1 and res["name"] == "layer-rejected"


def test_shared_xattrs(tmp_path):
    """An xattr on several inodes is stored once in the shared area; each
    inode still reads it (checked by fsck.erofs and, where possible, a mount)."""
    t = kit.Tar(tmp_path / "l.tar")
    for k in range(4):
        t.file(f"f{k}", b"x", xattrs={"user.common": "one value for all", "user.k": str(k)})
    t.close()
    img = tmp_path / "o.erofs"
    kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, img)
    fsck_ok(img)
    sb = img.read_bytes()[1024:1024 + 128]
    xattr_blkaddr = int.from_bytes(sb[44:48], "little")
    assert xattr_blkaddr != 0
    area = img.read_bytes()[xattr_blkaddr * 4096:(xattr_blkaddr + 1) * 4096]
    assert area.count(b"one value for all") == 1
    assert img.read_bytes().count(b"one value for all") == 1


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_files(tmp_path, fmt):
    """GNU tar's sparse members (old GNU and PAX 1.0 forms): holes read back
    as zeros (through this module's reader: fsck.erofs 1.5 --extract drops
    holes; test_erofs_sparse.py has the rest)."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(3 * 1024 * 1024)
        f.write(b"middle")
        f.seek(9 * 1024 * 1024 + 5)
        f.write(b"tail")
    tar = tmp_path / "l.tar"
    subprocess.run(["tar", "-S", f"--format={fmt}", "-C", str(src), "-cf", str(tar), "sparse"], check=True)
    assert tar.stat().st_size < 1024 * 1024  # really stored sparse
    kit.run_tool("convert", tar, MT_TAR, tmp_path / "o.erofs")
    fsck_ok(tmp_path / "o.erofs")
    info = kit.run_tool("file", tmp_path / "o.erofs", "sparse")
    assert info["sha256"] == hashlib.sha256((src / "sparse").read_bytes()).hexdigest()
    assert info["layout"] == 4 and info["hole_chunks"] > 0
    assert (tmp_path / "o.erofs").stat().st_size < 1024 * 1024


def test_libarchive_and_schily_xattrs(tmp_path):
    """PAX xattrs in both spellings: SCHILY.xattr.NAME (raw value) and
    LIBARCHIVE.xattr.URLENCODED-NAME (base64 value), read back by the kernel."""
    import base64
    import os
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("f")
        ti.size = 1
        ti.pax_headers = {
            "SCHILY.xattr.user.schily": "plain",
            "LIBARCHIVE.xattr.user.lib%20name": base64.b64encode(b"bin\x00ary").decode().rstrip("="),
        }
        tf.addfile(ti, io.BytesIO(b"x"))
    (tmp_path / "l.tar").write_bytes(buf.getvalue())
    img = tmp_path / "o.erofs"
    kit.run_tool("convert", tmp_path / "l.tar", MT_TAR, img)
    fsck_ok(img)
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("the xattr values are read through a kernel mount, which needs root and loop devices")
    m = tmp_path / "m"
    m.mkdir()
    p = subprocess.run(["mount", "-t", "erofs", "-o", "loop,ro", str(img), str(m)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"mount refused: {p.stderr.strip()}")
    try:
        assert os.getxattr(m / "f", "user.schily") == b"plain"
        assert os.getxattr(m / "f", "user.lib name") == b"bin\x00ary"
    finally:
        subprocess.run(["umount", str(m)], check=True)
