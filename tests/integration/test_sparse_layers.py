"""Layers holding files with holes (GNU tar --sparse) through image.load on
the real daemon: a file whose apparent size exceeds the per-layer limit is
refused at once, whatever its tar costs; one within it is stored as holes,
not as zeros, and reads back as its source.

Contents are read back through a kernel mount where the test may mount and
through erofs-tool's `file` (the module's own reader): Debian 12's
fsck.erofs 1.5 checks these images but its --extract drops holes.
"""

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from msbtest import build_dir
from msbtest.erofs import Mount, mount_reason
from msbtest.imagekit import sparse_content, sparse_tar, write_sparse_files
from msbtest.rpc import RpcError
from msbtest.store import content_files

GiB = 1 << 30
MiB = 1 << 20
LIMIT = 10 * GiB  # PROTO_LIMIT_LAYER_UNCOMPRESSED_BYTES

# 11 GiB of apparent size for 8 bytes of data: the tar is a few KiB.
HUGE = {"data/huge.img": (11 * GiB, [(5 * GiB + 3, b"12345678")])}
# 300 MB with a little data: at the start, unaligned in the middle, at the end.
ROOMY = {"data/roomy.img": (300 * 1000 * 1000, [(0, b"head"), (123 * MiB + 7, b"m" * 9000),
                                                (300 * 1000 * 1000 - 4, b"tail")])}
PLAIN = b"an ordinary file next to it\n"


def sparse_layer(tmp_path: Path, files: dict) -> bytes:
    src = write_sparse_files(tmp_path / "src", files)
    (src / "data" / "plain").write_bytes(PLAIN)
    return sparse_tar(src, tmp_path / "layer.tar").read_bytes()


def tar_extract(tmp_path: Path) -> Path:
    """GNU tar's own extraction of the layer: the truth to compare with."""
    x = tmp_path / "tar-x"
    x.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "layer.tar"), "-C", str(x)], check=True)
    return x


def erofs_tool(*args) -> dict:
    tool = build_dir() / "tests" / "erofs" / "erofs-tool"
    p = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, f"erofs-tool {args}: {p.stdout} {p.stderr}"
    return json.loads(p.stdout)


def test_huge_sparse_file_is_refused_at_once(rpc, daemon, imagekit, tmp_path):
    tar = sparse_layer(tmp_path, HUGE)
    assert len(tar) < 64 * 1024
    img = imagekit.image("example.com/sparse/huge:1", [tar])
    t0 = time.monotonic()
    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {"path": str(img.layout.path)})
    elapsed = time.monotonic() - t0
    assert e.value.name == "limit-exceeded", e.value
    assert e.value.data["limit"] == "layer_uncompressed_bytes" and e.value.data["max"] == LIMIT
    assert e.value.data["entry"] == "./data/huge.img"
    # Refused at the tar header: no 11 GiB of zeros written first (that took 25 s).
    assert elapsed < 5, elapsed
    files = content_files(daemon.store)
    assert files["tmp"] == [] and files["layers"] == [], files
    assert rpc.call("image.list") == []
    assert rpc.call("system.info")["pid"] == daemon.pid


def test_sparse_file_within_the_limit_is_stored_as_holes(rpc, daemon, imagekit, tmp_path):
    (path, (size, pieces)), = ROOMY.items()
    img = imagekit.image("example.com/sparse/roomy:1", [sparse_layer(tmp_path, ROOMY)])
    rpc.call("image.load", {"path": str(img.layout.path)})
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "vm", "reference": "example.com/sparse/roomy:1"})
    layer = Path(rootfs["layers"][0]["path"])
    st = layer.stat()
    # 300 MB of apparent size; on disk the three data chunks and metadata.
    assert st.st_size == rootfs["layers"][0]["erofs_size_bytes"]
    assert st.st_blocks * 512 < 2 * MiB, st.st_blocks * 512
    assert subprocess.run(["fsck.erofs", str(layer)], capture_output=True).returncode == 0
    assert content_files(daemon.store)["tmp"] == []

    want = sparse_content(size, pieces)
    info = erofs_tool("file", layer, path)
    assert info["size"] == size and info["layout"] == 4 and info["chunks"] - info["hole_chunks"] == 3
    assert info["sha256"] == hashlib.sha256(want).hexdigest()
    # fsmeta points at the same chunks of the layer, holes still holes.
    merged = erofs_tool("file", rootfs["fsmeta_path"], path, layer)
    assert merged == info

    reason = mount_reason()
    if reason:
        pytest.skip(reason)
    x = tar_extract(tmp_path)
    with Mount(layer, tmp_path / "m") as m:
        for name in (path, "data/plain"):
            assert (m / name).stat().st_size == (x / name).stat().st_size
            assert (m / name).read_bytes() == (x / name).read_bytes(), name
    assert (x / path).read_bytes() == want
