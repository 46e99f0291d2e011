"""The files a sandbox boots from, as pin.add hands them out, checked with
erofs-utils (fsck.erofs, dump.erofs) as the independent reader.

Tests needing the per-manifest outputs (fsmeta, VMDK) are skipped with a
reason while the daemon reports them as null."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from msbtest.imagekit import CharDev, Config, Dir, File, Hardlink, Symlink

pytestmark = pytest.mark.erofs

LAYERS = [
    {"etc/hostname": b"box\n", "etc/passwd": b"root:x:0:0::/root:/bin/sh\n", "bin": Dir(),
     "bin/busybox": File(os.urandom(9000), mode=0o755), "bin/sh": Symlink("busybox"),
     "var/lib/data": File(b"d" * 4097, uid=1000, gid=1000), "opt/app/keep": b"keep",
     "bin/ls": Hardlink("bin/busybox")},
    {"etc/hostname": b"box-two\n", "etc/.wh.passwd": b"",
     "opt/app/.wh..wh..opq": b"", "opt/app/new": b"new"},
]


def _run(*argv):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, argv))}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture
def pinned(rpc, imagekit):
    img = imagekit.image("example.com/erofs/app:1", LAYERS, Config(cmd=["/bin/sh"]))
    rpc.call("image.load", {"path": str(img.layout.path)})
    rootfs = rpc.call("pin.add", {"kind": "sandbox", "name": "vm", "reference": "example.com/erofs/app:1"})
    return img, rootfs


def _tree(root: Path) -> dict:
    """path -> ("dir"|"file"|"link"|"chr", payload) of an extracted tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", p.read_bytes())
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = ("chr", (os.major(st.st_rdev), os.minor(st.st_rdev)))
            else:
                out[rel] = ("other", None)
    return out


def _layer_expectation(layer: dict) -> dict:
    """What one layer image must hold: whiteouts become 0/0 char devices."""
    want = {}
    for path, entry in layer.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            want.setdefault("/".join(parts[:i]), ("dir", None))
        name = parts[-1]
        if name == ".wh..wh..opq":
            continue  # An xattr on the parent directory, not an entry.
        if name.startswith(".wh."):
            want["/".join(parts[:-1] + [name[4:]])] = ("chr", (0, 0))
        elif isinstance(entry, (bytes, File)):
            want[path] = ("file", entry if isinstance(entry, bytes) else entry.data)
        elif isinstance(entry, Dir):
            want[path] = ("dir", None)
        elif isinstance(entry, Symlink):
            want[path] = ("link", entry.target)
        elif isinstance(entry, Hardlink):
            want[path] = ("file", None)  # content checked via its target
        elif isinstance(entry, CharDev):
            want[path] = ("chr", (entry.major, entry.minor))
    return want


def _compare(got: dict, want: dict, layer: dict):
    assert set(got) == set(want), f"entries differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
    for path, (kind, payload) in want.items():
        assert got[path][0] == kind, (path, got[path][0], kind)
        if payload is not None:
            assert got[path][1] == payload, path
    for path, entry in layer.items():
        if isinstance(entry, Hardlink):
            assert got[path][1] == got[entry.target][1], path


def test_layer_images_pass_fsck_and_hold_the_layer(pinned, tmp_path):
    img, rootfs = pinned
    assert [l["diff_id"] for l in rootfs["layers"]] == img.diff_ids
    for i, layer in enumerate(rootfs["layers"]):
        if layer["erofs_size_bytes"] is None:
            pytest.skip("the daemon stores no EROFS layer images yet (erofs_size_bytes is null)")
        path = Path(layer["path"])
        assert path.stat().st_size == layer["erofs_size_bytes"]
        assert layer["erofs_size_bytes"] % 4096 == 0, "EROFS images use 4 KiB blocks"
        _run("fsck.erofs", path)
        out = tmp_path / f"layer{i}"
        _run("fsck.erofs", f"--extract={out}", "--preserve", path)
        _compare(_tree(out), _layer_expectation(LAYERS[i]), LAYERS[i])
        sb = _run("dump.erofs", "-s", path)
        m = re.search(r"Filesystem blocks:\s*(\d+)", sb)
        assert m and int(m.group(1)) * 4096 == layer["erofs_size_bytes"], sb


def test_layer_ownership_and_modes_kept(pinned, tmp_path):
    img, rootfs = pinned
    layer = rootfs["layers"][0]
    if layer["erofs_size_bytes"] is None:
        pytest.skip("the daemon stores no EROFS layer images yet")
    out = tmp_path / "own"
    _run("fsck.erofs", f"--extract={out}", "--preserve", layer["path"])
    st = (out / "var/lib/data").lstat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert stat.S_IMODE((out / "bin/busybox").lstat().st_mode) == 0o755


def test_erofs_sizes_agree_between_inspect_and_pin(rpc, pinned):
    img, rootfs = pinned
    d = rpc.call("image.inspect", {"reference": "example.com/erofs/app:1"})
    assert [l["erofs_size_bytes"] for l in d["layers"]] == [l["erofs_size_bytes"] for l in rootfs["layers"]]


def test_fsmeta_merges_the_layers(pinned, tmp_path):
    img, rootfs = pinned
    if rootfs["fsmeta_path"] is None:
        pytest.skip("the daemon builds no fsmeta yet (pin.add fsmeta_path is null)")
    fsmeta = Path(rootfs["fsmeta_path"])
    devices = [f"--device={l['path']}" for l in rootfs["layers"]]
    _run("fsck.erofs", *devices, fsmeta)
    out = tmp_path / "merged"
    _run("fsck.erofs", *devices, f"--extract={out}", "--preserve", fsmeta)
    got = _tree(out)
    assert got["etc/hostname"] == ("file", b"box-two\n")
    assert "etc/passwd" not in got, "whiteout not applied"
    assert "opt/app/keep" not in got, "opaque directory not applied"
    assert got["opt/app/new"] == ("file", b"new")
    assert got["bin/sh"] == ("link", "busybox")
    assert got["bin/busybox"][1] == LAYERS[0]["bin/busybox"].data
    assert got["bin/ls"][1] == LAYERS[0]["bin/busybox"].data
    assert got["var/lib/data"] == ("file", b"d" * 4097)


def test_vmdk_concatenates_fsmeta_and_layers(pinned):
    img, rootfs = pinned
    if rootfs["vmdk_path"] is None:
        pytest.skip("the daemon writes no VMDK yet (pin.add vmdk_path is null)")
    text = Path(rootfs["vmdk_path"]).read_text()
    assert re.search(r'createType\s*=\s*"twoGbMaxExtentFlat"', text), text
    extents = re.findall(r'^\s*RW|^\s*RDONLY', text, re.M)
    files = re.findall(r'^(?:RW|RDONLY)\s+(\d+)\s+FLAT\s+"([^"]+)"\s+(\d+)', text, re.M)
    assert extents and files, text
    want = [rootfs["fsmeta_path"]] + [l["path"] for l in rootfs["layers"]]
    base = Path(rootfs["vmdk_path"]).parent
    got_paths = [os.path.realpath(base / f) for _, f, _ in files]
    assert got_paths == [os.path.realpath(p) for p in want], text
    for sectors, f, offset in files:
        size = (base / f).stat().st_size
        assert int(sectors) * 512 >= size, (f, sectors, size)
        assert offset == "0"


def test_pinned_files_survive_remove_force_and_prune(rpc, pinned):
    img, rootfs = pinned
    rpc.call("image.remove", {"reference": "example.com/erofs/app:1", "force": True})
    rpc.call("image.prune")
    for p in [rootfs["fsmeta_path"], rootfs["vmdk_path"]] + [l["path"] for l in rootfs["layers"]]:
        assert p is None or os.path.isfile(p), p
