"""Files with holes: GNU tar's sparse members (PAX 1.0 and old GNU forms)
become chunk-based inodes whose all-hole chunks are EROFS_NULL_ADDR, in the
layer images and, carried over, in fsmeta; their apparent sizes count
against the layer_uncompressed_bytes limit.

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/erofs/test_erofs_sparse.py

The independent readers are the kernel (mounts, where the test may mount),
dump.erofs and fsck.erofs. fsck.erofs 1.5 (Debian 12) checks these images
but its --extract drops unmapped chunks instead of writing them as zeros
(a file with holes comes out shorter), so file contents are compared
through mounts and through erofs-tool's `file`, which reads with this
module's own reader; the fsck extraction is compared for the files
without holes only.
"""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import erofs_kit as kit  # noqa: E402
from msbtest.erofs import Mount, mount_reason  # noqa: E402
from msbtest.imagekit import sparse_content  # noqa: E402
from test_erofs_kit import dump, fsck, fsmeta_disk  # noqa: E402

MT_TAR = "application/vnd.oci.image.layer.v1.tar"
CHUNKS_MAX = 4096  # EROFS_WRITER_FILE_CHUNKS_MAX


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    if not kit.erofs_tool().exists():
        pytest.fail(f"{kit.erofs_tool()} is missing: build first and set MSB_BUILD_DIR")
    d = tmp_path_factory.mktemp("erofs-sparse")
    *tars, gnu_tar = kit.write_sparse_layers(d)
    img = kit.build_oci(d / "layout", "sparse", tars)
    images, fsmeta = kit.convert_image(img, d)
    gnu = d / "gnu.erofs"
    kit.run_tool("convert", gnu_tar, MT_TAR, gnu)
    return {"dir": d, "tars": tars, "img": img, "images": images, "fsmeta": fsmeta,
            "rootfs": kit.umoci_unpack(img, d / "bundle"),
            # Every layer image with its tar and the sparse files it holds.
            "layers": [(tars[0], images[0], kit.SPARSE_LOWER), (tars[1], images[1], kit.SPARSE_UPPER),
                       (gnu_tar, gnu, kit.SPARSE_UPPER)]}


def test_tars_really_are_sparse(sparse):
    """GNU tar stored the holes as holes: every file of the lists is a
    sparse member, and each tar is far smaller than its files."""
    for tar, _, files in sparse["layers"]:
        with tarfile.open(tar) as tf:
            members = {m.name.removeprefix("./"): m for m in tf}
        for path, (size, _) in files.items():
            assert members[path].issparse() and members[path].size == size, path
        assert tar.stat().st_size < 200 * 1024 < sum(size for size, _ in files.values())


def test_layer_images_pass_fsck_and_stay_small(sparse):
    for _, image, files in sparse["layers"]:
        p = fsck(image)
        assert p.returncode == 0, p.stderr
        apparent = sum(size for size, _ in files.values())
        # The holes cost nothing: data chunks and metadata only.
        assert image.stat().st_size < 512 * 1024, image.stat().st_size
        assert image.stat().st_blocks * 512 < apparent // 50
        assert "chunked_file" in dump(image, "-s")


@pytest.mark.parametrize("layer", [0, 1, 2], ids=["pax-lower", "pax-upper", "old-gnu"])
def test_layer_files_read_back_through_the_chunk_map(sparse, layer):
    _, image, files = sparse["layers"][layer]
    for path, (size, pieces) in files.items():
        info = kit.run_tool("file", image, path)
        want = sparse_content(size, pieces)
        assert info["size"] == size and info["sha256"] == sha(want), path
        assert info["layout"] == 4, path                   # EROFS_INODE_CHUNK_BASED
        assert 0 < info["chunks"] <= CHUNKS_MAX, path
        chunk = 4096 << info["chunk_bits"]
        # A chunk is written exactly where a piece of data falls (GNU tar
        # rounds data to 4 KiB blocks, which never crosses a chunk's edge).
        touched = {c for off, data in pieces for c in range(off // chunk, (off + len(data) - 1) // chunk + 1)}
        assert info["chunks"] - info["hole_chunks"] == len(touched), (path, info)
        assert (size + chunk - 1) // chunk == info["chunks"]
        if info["chunk_bits"] > 0:                         # the smallest chunk that bounds the map
            assert (size + chunk // 2 - 1) // (chunk // 2) > CHUNKS_MAX
        out = dump(image, f"--path=/{path}")
        assert "Layout: 4 " in out and f"Size: {size} " in out, out


def test_files_without_holes_stay_flat(sparse):
    image = sparse["images"][0]
    dense = kit.run_tool("file", image, "plain/dense")
    assert dense["layout"] == 0 and dense["size"] == 10000
    assert dense["sha256"] == kit.file_digest(str(sparse["dir"] / "sparse-lower" / "plain" / "dense"))
    assert "Layout: 0 " in dump(image, "--path=/plain/dense")


def test_layer_extract_equals_tar_apart_from_holes(sparse):
    """fsck.erofs 1.5 --extract agrees with GNU tar on everything but the
    contents of files with holes (which it cannot extract, see above)."""
    holed = set(kit.SPARSE_LOWER) | set(kit.SPARSE_UPPER) | {"sparse/middle.link"}
    for k, (tar, image, _) in enumerate(sparse["layers"]):
        want = kit.snapshot(kit.tar_extract_layer(tar, sparse["dir"] / f"tar-x{k}"), xattrs=False, hardlinks=False,
                            file_suid=False)
        got_dir = sparse["dir"] / f"fsck-x{k}"
        p = fsck(image, extract=got_dir)
        assert p.returncode == 0, p.stderr
        got = kit.snapshot(got_dir, xattrs=False, hardlinks=False, file_suid=False)
        for s in (got, want):
            for path in holed & set(s):
                if s[path]["type"] == stat.S_IFREG:
                    del s[path]["size"], s[path]["sha256"]
        assert got == want, kit.diff(got, want)


def test_mount_layers_equal_tar(sparse):
    reason = mount_reason()
    if reason:
        pytest.skip(reason)
    for k, (tar, image, _) in enumerate(sparse["layers"]):
        want = kit.snapshot(kit.tar_extract_layer(tar, sparse["dir"] / f"tar-m{k}"), mtime_ns=True)
        with Mount(image, sparse["dir"] / f"mnt{k}") as m:
            got = kit.snapshot(m, mtime_ns=True)
        assert got == want, kit.diff(got, want)


def test_fsmeta_carries_the_chunk_maps(sparse):
    images, fsmeta, rootfs = sparse["images"], sparse["fsmeta"], sparse["rootfs"]
    p = fsck(fsmeta, *images)
    assert p.returncode == 0, p.stderr
    merged = {**kit.SPARSE_LOWER, **kit.SPARSE_UPPER}
    del merged["sparse/all-hole"]                           # whited out by the upper layer
    assert not (rootfs / "sparse" / "all-hole").exists()
    for path, (size, pieces) in merged.items():
        layer = 1 if path in kit.SPARSE_UPPER else 0
        in_layer = kit.run_tool("file", images[layer], path)
        info = kit.run_tool("file", fsmeta, path, *images)
        # The same map: same chunk size, the same chunks are holes.
        assert {k: info[k] for k in ("size", "layout", "chunk_bits", "chunks", "hole_chunks")} == \
            {k: in_layer[k] for k in ("size", "layout", "chunk_bits", "chunks", "hole_chunks")}, path
        assert info["sha256"] == kit.file_digest(str(rootfs / path)) == sha(sparse_content(size, pieces)), path
    assert kit.run_tool("file", fsmeta, "plain/dense", *images)["sha256"] == \
        kit.file_digest(str(rootfs / "plain" / "dense"))
    out = dump(fsmeta, "--path=/sparse/big-chunks", devices=images)
    assert "Layout: 4 " in out and f"Size: {40 * kit.MiB} " in out
    assert fsmeta.stat().st_size < 256 * 1024


def test_mount_fsmeta_disk_equals_umoci_unpack(sparse, tmp_path):
    reason = mount_reason()
    if reason:
        pytest.skip(reason)
    raw = fsmeta_disk(tmp_path, sparse["fsmeta"], sparse["images"])
    with Mount(raw, tmp_path / "m") as m:
        got = kit.snapshot(m, mtime_ns=True)
    want = kit.snapshot(sparse["rootfs"], mtime_ns=True)
    assert got == want, kit.diff(got, want)


def test_apparent_size_counts_against_the_limit(sparse, tmp_path):
    """A limit above the tar's size but below its files' apparent sizes
    refuses the layer, naming the entry, before anything is written."""
    tar = sparse["tars"][0]
    apparent = sum(size for size, _ in kit.SPARSE_LOWER.values()) + 10000
    out = tmp_path / "o.erofs"
    assert tar.stat().st_size < 10 * kit.MiB < apparent
    res = kit.run_tool("convert", tar, MT_TAR, out, "--max-uncompressed", str(10 * kit.MiB), check=False)
    assert res["_rc"] == 1 and res["name"] == "limit-exceeded", res
    assert res["data"]["limit"] == "layer_uncompressed_bytes" and res["data"]["max"] == 10 * kit.MiB
    assert re.fullmatch(r"\./sparse/[a-z-]+", res["data"]["entry"]), res
    assert out.stat().st_size == 0
    # With room for every file, the same layer converts.
    kit.run_tool("convert", tar, MT_TAR, out, "--max-uncompressed", str(apparent))
    assert subprocess.run(["fsck.erofs", str(out)], capture_output=True).returncode == 0
