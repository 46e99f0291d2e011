"""The EROFS test image kit and the tree comparison (stdlib and msbtest only).

Layers are tar streams written here with :mod:`tarfile` (PAX and GNU
formats), packaged into an OCI image by ``umoci``; the truth each image is
compared with comes from independent tools: GNU ``tar`` extracting a layer,
``umoci unpack`` applying the layers.  :func:`snapshot` reads a directory
tree into a plain dict, so two trees compare with ``==`` and a difference
is printed as a list of paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from msbtest.buildonce import build_once
from msbtest.imagekit import sparse_tar, write_sparse_files

MTIME = 1_600_000_000
BIG_FILE_BYTES = 100 * 1000 * 1000
SMALL_FILES = 20_000


def build_dir() -> Path:
    return Path(os.environ.get("MSB_BUILD_DIR", "/work/main/build"))


def erofs_tool() -> Path:
    return build_dir() / "tests" / "erofs" / "erofs-tool"


def run_tool(*args: str | os.PathLike, check: bool = True) -> dict:
    """Runs erofs-tool; returns its JSON line (result or error)."""
    p = subprocess.run([str(erofs_tool()), *map(str, args)], capture_output=True, text=True)
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    if check and p.returncode != 0:
        raise AssertionError(f"erofs-tool {args} failed ({p.returncode}): {p.stdout} {p.stderr}")
    out["_rc"] = p.returncode
    return out


class PseudoRandom(io.RawIOBase):
    """size bytes of deterministic, incompressible data, produced as read."""

    def __init__(self, size: int, seed: int):
        self.left = size
        self.block = random.Random(seed).randbytes(1 << 20)
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left == 0:
            return 0
        chunk = self.n.to_bytes(8, "little") + self.block[8:]
        self.n += 1
        k = min(len(b), len(chunk), self.left)
        b[:k] = chunk[:k]
        self.left -= k
        return k


class Tar:
    """Writes one layer tar with full control over every header."""

    def __init__(self, path: Path, fmt: int = tarfile.PAX_FORMAT, prefix: str = ""):
        self.path = path
        self.prefix = prefix
        self.tf = tarfile.open(path, "w", format=fmt, encoding="utf-8")

    def _info(self, name: str, type_: bytes, mode: int, uid: int = 0, gid: int = 0,
              mtime: float = MTIME, xattrs: dict[str, str] | None = None) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(self.prefix + name)
        ti.type = type_
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = mtime
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return ti

    def dir(self, name: str, mode: int = 0o755, **kw) -> None:
        self.tf.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **kw) -> None:
        ti = self._info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = len(data)
        self.tf.addfile(ti, io.BytesIO(data))

    def big(self, name: str, size: int, seed: int) -> None:
        ti = self._info(name, tarfile.REGTYPE, 0o644)
        ti.size = size
        self.tf.addfile(ti, io.BufferedReader(PseudoRandom(size, seed), 1 << 20))

    def symlink(self, name: str, target: str, **kw) -> None:
        ti = self._info(name, tarfile.SYMTYPE, 0o777, **kw)
        ti.linkname = target
        self.tf.addfile(ti)

    def hardlink(self, name: str, target: str) -> None:
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = self.prefix + target
        self.tf.addfile(ti)

    def device(self, name: str, type_: bytes, major: int, minor: int, mode: int = 0o644) -> None:
        ti = self._info(name, type_, mode)
        ti.devmajor, ti.devminor = major, minor
        self.tf.addfile(ti)

    def fifo(self, name: str, mode: int = 0o644) -> None:
        self.tf.addfile(self._info(name, tarfile.FIFOTYPE, mode))

    def close(self) -> Path:
        self.tf.close()
        return self.path


def deep_path(total: int) -> str:
    """A relative path of exactly `total` bytes made of 200-byte components."""
    parts, left = [], total
    while left > 0:
        n = min(200, left)
        if left - n == 1:  # avoid a 0-byte last component after the slash
            n -= 1
        parts.append(("d%03d" % len(parts) + "x" * 200)[:n])
        left -= n + 1
    p = "/".join(parts)
    assert len(p) == total, len(p)
    return p


def write_base_layer(path: Path, big: bool = True, many: int = SMALL_FILES) -> Path:
    """Layer 1: every kind of entry the converter must keep."""
    t = Tar(path, prefix="./")
    t.dir("", 0o755)
    for d in ("etc", "usr", "usr/bin", "data", "data/many", "data/sub", "data/sub/inner", "links",
              "devs", "xattr", "owned", "sizes", "opq", "replace", "replace/dir-to-file", "long"):
        t.dir(d)
    t.dir("tmp", 0o1777)
    t.dir("setgid", 0o2755)
    t.file("etc/hostname", b"kit\n", mtime=MTIME + 0.5)
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    t.file("usr/bin/su", b"#!/bin/sh\n", mode=0o4755)
    t.file("usr/bin/sg", b"#!/bin/sh\n", mode=0o2755)
    t.file("data/sub/inner/f", b"in a directory that layer 2 whites out\n")
    t.file("opq/old", b"hidden by the opaque directory above\n")
    t.file("replace/file-to-dir", b"becomes a directory\n")
    t.file("replace/dir-to-file/x", b"goes with its directory\n")
    t.file("sizes/empty", b"")
    t.file("sizes/4096", bytes(range(256)) * 16)
    t.file("sizes/4097", bytes(range(256)) * 16 + b"!")
    if big:
        t.big("sizes/100MB", BIG_FILE_BYTES, seed=1)
    # Hard links within a directory, across directories, and one whose
    # target is replaced later in the same layer (the link keeps the old data).
    t.hardlink("etc/hostname.link", "etc/hostname")
    t.hardlink("links/hostname", "etc/hostname")
    t.file("links/target", b"old target\n")
    t.hardlink("links/keeps-old", "links/target")
    t.file("links/target", b"new target, written after the link\n")
    t.symlink("links/relative", "../etc/hostname")
    t.symlink("links/absolute", "/etc/hostname")
    t.symlink("links/dangling", "/does/not/exist")
    t.device("devs/null", tarfile.CHRTYPE, 1, 3, 0o666)
    t.device("devs/loop0", tarfile.BLKTYPE, 7, 0, 0o660)
    t.device("devs/big-minor", tarfile.CHRTYPE, 250, 70000, 0o600)
    t.fifo("devs/fifo")
    t.file("xattr/file", b"with xattrs\n", xattrs={"user.greeting": "hello", "trusted.kit": "t" * 300})
    t.dir("xattr/dir", xattrs={"user.dir": "yes"})
    # The same entry on several inodes goes to the shared xattr area.
    for k in range(3):
        t.file(f"xattr/shared{k}", b"shared xattrs\n", xattrs={"user.shared": "same value", "user.own": str(k)})
    t.file("owned/file", b"uid and gid beyond 65535\n", uid=100000, gid=100000)
    t.dir("owned/dir", uid=100001, gid=100002)
    t.file("long/" + "n" * 255, b"a 255-byte name\n")
    t.file("ünïcödé-名前", b"utf-8 name\n")
    dp = deep_path(4000)
    for k in range(1, dp.count("/") + 1):
        t.dir(dp.rsplit("/", k)[0])
    t.file(dp, b"at the end of a 4000-byte path\n")
    for i in range(many):
        t.file(f"data/many/f{i:05d}", b"small file %d\n" % i, mtime=MTIME + i % 7)
    return t.close()


def write_upper_layer(path: Path) -> Path:
    """Layer 2: whiteouts, an opaque directory, replacements."""
    t = Tar(path)
    t.dir("etc", 0o755)
    t.file("etc/.wh.hostname")                # the file goes; its hard links in other dirs stay
    t.dir("data", 0o755)
    t.file("data/.wh.sub")                    # a whole directory goes
    t.dir("opq", 0o750)
    t.file("opq/.wh..wh..opq")
    t.file("opq/new", b"only this remains in opq\n")
    t.dir("replace", 0o755)
    t.dir("replace/file-to-dir", 0o700)
    t.file("replace/file-to-dir/y", b"a file in the new directory\n")
    t.file("replace/dir-to-file", b"was a directory\n")
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n", mtime=MTIME + 100)
    t.dir("fresh", 0o755)
    t.file("fresh/a", b"a\n")
    t.hardlink("fresh/b", "fresh/a")
    return t.close()


def write_gnu_layer(path: Path) -> Path:
    """Layer 3, GNU format: long names and link targets via ././@LongLink."""
    t = Tar(path, fmt=tarfile.GNU_FORMAT)
    t.dir("gnu")
    long_dir = "gnu/" + "l" * 150
    t.dir(long_dir)
    t.file(long_dir + "/" + "f" * 120, b"gnu long name\n")
    t.symlink("gnu/longlink", "/" + "t" * 200)
    t.hardlink("gnu/hl", long_dir + "/" + "f" * 120)
    t.file("gnu/owned", b"gnu base-256 ids\n", uid=100000, gid=100000)
    return t.close()


MiB = 1024 * 1024

# Files with holes: path -> (apparent size, [(offset, data)]). Data is
# placed at offsets that are not multiples of 4 KiB on purpose.
SPARSE_LOWER = {
    "sparse/middle": (9 * MiB + 9, [(0, b"head"), (3 * MiB + 5, b"middle!"), (9 * MiB + 5, b"tail")]),
    "sparse/leading": (8 * MiB, [(5 * MiB + 123, bytes(range(256)) * 20)]),
    "sparse/all-hole": (7 * MiB + 1, []),
    "sparse/big-chunks": (40 * MiB, [(17 * MiB + 3, b"0123456789" * 1000), (40 * MiB - 1, b"$")]),
    "sparse/replaced": (6 * MiB, [(2 * MiB, b"lower")]),
}
SPARSE_UPPER = {
    "sparse/replaced": (12 * MiB + 3, [(11 * MiB, b"upper")]),
    "sparse2/gnu": (12 * MiB, [(MiB + 1, b"x" * 6000), (12 * MiB - 2, b"zz")]),
}


def write_sparse_layers(d: Path) -> list[Path]:
    """Two layers of files with holes, as PAX 1.0 sparse members: the upper
    one replaces a lower file and whites out another; a few ordinary files
    and a hard link must stay as they were. A third tar holds the upper
    tree as old GNU sparse members ('S' headers), which umoci cannot unpack,
    so it is checked as a layer on its own."""
    lower = write_sparse_files(d / "sparse-lower", SPARSE_LOWER)
    (lower / "plain").mkdir()
    (lower / "plain" / "dense").write_bytes(random.Random(7).randbytes(10000))
    (lower / "plain" / "empty").write_bytes(b"")
    os.link(lower / "sparse" / "middle", lower / "sparse" / "middle.link")
    upper = write_sparse_files(d / "sparse-upper", SPARSE_UPPER)
    (upper / "sparse" / ".wh.all-hole").write_bytes(b"")
    return [sparse_tar(lower, d / "sparse-lower.tar", "posix"),
            sparse_tar(upper, d / "sparse-upper.tar", "posix"),
            sparse_tar(upper, d / "sparse-upper-gnu.tar", "gnu")]


@dataclass
class OciImage:
    layout: Path
    tag: str
    manifest_digest: str
    layers: list[tuple[Path, str, str, int]]   # blob path, media type, blob digest, size
    diff_ids: list[str]


def umoci(*args: str | os.PathLike) -> None:
    subprocess.run(["umoci", *map(str, args)], check=True, capture_output=True)


def build_oci(layout: Path, tag: str, tars: list[Path]) -> OciImage:
    """Packages the tars into an OCI image with umoci (which gzips them)."""
    if not (layout / "index.json").exists():
        umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:{tag}")
    for t in tars:
        umoci("raw", "add-layer", "--no-history", "--image", f"{layout}:{tag}", t)
    return read_oci(layout, tag)


def read_oci(layout: Path, tag: str) -> OciImage:
    """The image tagged tag in the layout, as its files say."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    blob = lambda d: layout / "blobs" / "sha256" / d.split(":", 1)[1]  # noqa: E731
    manifest = json.loads(blob(desc["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    layers = [(blob(l["digest"]), l["mediaType"], l["digest"], l["size"]) for l in manifest["layers"]]
    return OciImage(layout, tag, desc["digest"], layers, config["rootfs"]["diff_ids"])


@dataclass
class KitImage:
    tars: list[Path]     # the base, upper and GNU layers (write_*_layer)
    img: OciImage        # their OCI image, tagged "kit"
    rootfs: Path         # what umoci unpack makes of it


def kit_image(work: Path) -> KitImage:
    """The full kit (the base layer with its 100 MB file and 20,000 small
    files, the upper and the GNU layer), its OCI image and its umoci unpack:
    the input and the truth of the converter's tests, which no build of the
    daemon changes. Built once in the run's cache ($MSB_TEST_IMAGE_CACHE,
    which scripts/test.sh empties at each run) for the suites of every
    build, else once below work (a session's directory).

    The suites only read it: they write their images and extractions in
    directories of their own. It is built in a temporary directory renamed
    into place whole, under a lock, so that a suite alongside waits for it
    rather than building it too.

    The tree holds a 4000-byte path and the cache may be deep, so the kit
    is reached (and built) through symlinks in work, which must be short:
    the kernel limits the path it is given to PATH_MAX, not the path a
    symlink leads to."""
    cache = os.environ.get("MSB_TEST_IMAGE_CACHE")
    base = Path(cache) if cache else work / "cache"
    # A kit changed since (this file) is another kit.
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    names = ["l1.tar", "l2.tar", "l3.tar"]

    def build(path: Path) -> None:
        path.mkdir()
        b = work / "building"
        b.symlink_to(path)
        write_base_layer(b / names[0])
        write_upper_layer(b / names[1])
        write_gnu_layer(b / names[2])
        umoci_unpack(build_oci(b / "layout", "kit", [b / n for n in names]), b / "bundle")
        b.unlink()

    d = build_once(base, f"erofs-kit-{key}", build)
    k = work / "kit"
    k.symlink_to(d)
    return KitImage([k / n for n in names], read_oci(k / "layout", "kit"), k / "bundle" / "rootfs")


def convert_image(img: OciImage, d: Path, prefix: str = "layer") -> tuple[list[Path], Path]:
    """Each layer through erofs-tool convert (its diff_id checked), then the
    fsmeta of the manifest: (layer images, fsmeta) below d."""
    images = []
    for k, (blob, mt, digest, size) in enumerate(img.layers):
        out = d / f"{prefix}{k}.erofs"
        run_tool("convert", blob, mt, out, "--diff-id", img.diff_ids[k])
        images.append(out)
    fsmeta = d / "fsmeta.erofs"
    run_tool("fsmeta", fsmeta, img.manifest_digest, *images)
    return images, fsmeta


def umoci_unpack(img: OciImage, bundle: Path) -> Path:
    umoci("unpack", "--image", f"{img.layout}:{img.tag}", bundle)
    return bundle / "rootfs"


def tar_extract_layer(tar_path: Path, dest: Path) -> Path:
    """The layer's own tree, by GNU tar, with OCI whiteouts turned into the
    overlay form the layer image stores (0/0 char devices, opaque xattr)."""
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xpf", str(tar_path), "-C", str(dest), "--same-owner", "--numeric-owner",
                    "--xattrs", "--xattrs-include=*"], check=True)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if name == ".wh..wh..opq":
                os.unlink(p)
                os.setxattr(dirpath, "trusted.overlay.opaque", b"y")
            elif name.startswith(".wh."):
                st = os.lstat(p)
                os.unlink(p)
                q = os.path.join(dirpath, name[4:])
                os.mknod(q, stat.S_IFCHR, os.makedev(0, 0))
                os.chmod(q, 0)
                os.chown(q, st.st_uid, st.st_gid)
                os.utime(q, ns=(st.st_mtime_ns, st.st_mtime_ns))
    # Put back the directory times that the edits above changed.
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.isdir():
                name = "/".join(c for c in m.name.split("/") if c not in ("", "."))
                os.utime(dest / name if name else dest, (m.mtime, m.mtime), follow_symlinks=False)
    return dest


def file_digest(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path, *, xattrs: bool = True, hardlinks: bool = True, dir_mtimes: bool = True,
             file_suid: bool = True, mtime_ns: bool = False) -> dict:
    """Everything observable about a tree below root (root itself excluded):
    paths, types, modes, owners, sizes, contents, link targets, device
    numbers, mtimes, xattrs and which paths are hard links of each other.

    file_suid=False drops setuid/setgid of regular files: fsck.erofs 1.5
    --extract chowns after chmod, which makes the kernel clear them, so only
    a mount shows them (and the mount tests compare them)."""
    entries: dict[str, dict] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            e: dict = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                       "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                if not file_suid:
                    e["mode"] &= ~(stat.S_ISUID | stat.S_ISGID)
                e["size"] = st.st_size
                e["sha256"] = file_digest(p)
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISLNK(st.st_mode) and (dir_mtimes or not stat.S_ISDIR(st.st_mode)):
                e["mtime"] = st.st_mtime_ns if mtime_ns else st.st_mtime_ns // 1_000_000_000
            if xattrs and not stat.S_ISLNK(st.st_mode):
                e["xattrs"] = {k: os.getxattr(p, k, follow_symlinks=False)
                               for k in sorted(os.listxattr(p, follow_symlinks=False))}
            entries[rel] = e
    if hardlinks:
        entries["<hardlinks>"] = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return entries


def full_snapshot(root: Path) -> dict:
    """snapshot() with everything: xattrs, hard links, every mtime in ns.
    A tree that does not change (the kit's truth) need be read once:
    project() gives each of the views snapshot() has options for."""
    return snapshot(root, mtime_ns=True)


def project(full: dict, *, xattrs: bool = True, hardlinks: bool = True, dir_mtimes: bool = True,
            file_suid: bool = True, mtime_ns: bool = False) -> dict:
    """The view of a full_snapshot() that snapshot() gives with these options."""
    out: dict = {}
    for rel, e in full.items():
        if rel == "<hardlinks>":
            if hardlinks:
                out[rel] = e
            continue
        e = dict(e)
        if not file_suid and stat.S_ISREG(e["type"]):
            e["mode"] &= ~(stat.S_ISUID | stat.S_ISGID)
        if "mtime" in e:
            if not dir_mtimes and stat.S_ISDIR(e["type"]):
                del e["mtime"]
            elif not mtime_ns:
                e["mtime"] //= 1_000_000_000
        if not xattrs:
            e.pop("xattrs", None)
        out[rel] = e
    return out


def diff(a: dict, b: dict, limit: int = 20) -> list[str]:
    """Human-readable differences between two snapshots."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: {a.get(k)!r} != {b.get(k)!r}")
            if len(out) >= limit:
                break
    return out


def replace_config(img: OciImage, edit) -> OciImage:
    """Rewrites the image's config with edit(config) and re-links manifest and
    index, so the layout is consistent except for what edit changed."""
    blobs = img.layout / "blobs" / "sha256"
    index = json.loads((img.layout / "index.json").read_text())
    desc = next(m for m in index["manifests"] if m["digest"] == img.manifest_digest)
    manifest = json.loads((blobs / img.manifest_digest.split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    edit(config)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return "sha256:" + h

    cdata = json.dumps(config).encode()
    manifest["config"]["digest"], manifest["config"]["size"] = put(cdata), len(cdata)
    mdata = json.dumps(manifest).encode()
    desc["digest"], desc["size"] = put(mdata), len(mdata)
    (img.layout / "index.json").write_text(json.dumps(index))
    return OciImage(img.layout, img.tag, desc["digest"], img.layers, config["rootfs"]["diff_ids"])
