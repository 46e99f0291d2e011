"""Build REAL OCI images for tests with tar, umoci and skopeo (stdlib only).

Nothing here is a fake: layers are tar streams written by :mod:`tarfile`,
layouts are made and edited by ``umoci``, archives by ``tar``/``skopeo``.
Every builder returns an object that exposes the *truth* read back from the
bytes on disk (digests recomputed with hashlib), so tests compare the
daemon's answers against the image itself, never against constants.

Quick tour::

    kit = ImageKit(tmp_path / "images")
    img = kit.image("example.com/test/app:v1",
                    layers=[{"etc/hello": b"hi\\n", "bin": Dir(), "bin/sh": Symlink("busybox")},
                            {"etc/motd": b"second layer\\n"}],
                    config=Config(env=["A=1"], cmd=["sh"], labels={"k": "v"}))
    img.manifest_digest, img.config_digest, img.diff_ids, img.layers[0].blob_digest
    img.layout.path                        # OCI layout directory to image.load

    lay = kit.layout("shared")            # several images in one layout
    a = lay.add_image("example.com/a:1", layers=[...])
    b = lay.add_image("example.com/b:1", layers=[...], base=a)   # b shares a's layers

    kit.layout_of(a)                       # a new layout with just these images
    kit.platform_index("example.com/multi:1", {"linux/amd64": img_amd, "linux/arm64": img_arm},
                       nested=False)        # -> PlatformIndex (layout with an image index)
    lay.oci_archive(path)                  # tar of the layout
    lay.skopeo_oci_archive(ref, path)      # skopeo copy oci:.. oci-archive:..
    lay.docker_archive(ref, path, ["example.com/d:1"])  # skopeo docker-archive -> DockerArchive

    ImageKit(dir, cache=ImageCache(session_dir))  # image() builds each image once a session,
                                                  # then hands out copies (the imagekit fixture)

Layer entries map a path to ``bytes`` (a regular file) or one of
:class:`File`, :class:`Dir`, :class:`Symlink`, :class:`Hardlink`,
:class:`Fifo`, :class:`CharDev`.  Parent directories are added when missing.
Tar members are deterministic (fixed mtime, owner 0:0) unless told otherwise.

Editing primitives for negative tests: ``Layout.put_blob``,
``Layout.read_blob``, ``Layout.replace_config``, ``Layout.replace_manifest``,
``Layout.corrupt_blob``, ``Layout.remove_blob``, ``Layout.strip_ref_names``,
``Layout.write_index``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .buildonce import build_once

__all__ = [
    "ImageKit", "ImageCache", "Layout", "Image", "Layer", "Config", "PlatformIndex", "DockerArchive",
    "File", "Dir", "Symlink", "Hardlink", "Fifo", "CharDev",
    "make_tar", "write_fast_tar", "sha256_digest", "host_platform", "write_sparse_files", "sparse_content", "sparse_tar",
    "MT_MANIFEST", "MT_INDEX", "MT_CONFIG", "MT_LAYER_TAR", "MT_LAYER_GZIP", "MT_LAYER_ZSTD",
    "MT_DOCKER_MANIFEST", "MT_DOCKER_LIST", "MT_DOCKER_CONFIG", "MT_DOCKER_LAYER",
    "REF_NAME_ANNOTATION",
]

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# Fixed tar mtime (2020-09-13) so the same entries give the same layer bytes.
DEFAULT_MTIME = 1_600_000_000


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def host_platform() -> str:
    """The host platform in OCI spelling, e.g. ``linux/amd64``."""
    m = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}.get(m, m)
    return f"linux/{arch}"


def _run(*argv, cwd=None) -> str:
    r = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


# Layer entries ------------------------------------------------------------


@dataclass
class File:
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME
    xattrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME


@dataclass
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME


@dataclass
class Hardlink:
    target: str


@dataclass
class Fifo:
    mode: int = 0o644


@dataclass
class CharDev:
    major: int = 0
    minor: int = 0
    mode: int = 0o644


def _tarinfo(path: str, entry) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(path)
    ti.uname = ti.gname = ""
    ti.mtime = getattr(entry, "mtime", DEFAULT_MTIME)
    data = None
    if isinstance(entry, (bytes, bytearray)):
        entry = File(bytes(entry))
    if isinstance(entry, File):
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.REGTYPE, entry.mode, entry.uid, entry.gid, entry.mtime
        ti.size = len(entry.data)
        data = entry.data
        if entry.xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
    elif isinstance(entry, Dir):
        ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid
    elif isinstance(entry, Symlink):
        ti.type, ti.linkname, ti.mode, ti.uid, ti.gid = tarfile.SYMTYPE, entry.target, 0o777, entry.uid, entry.gid
    elif isinstance(entry, Hardlink):
        ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, entry.target, 0o644
    elif isinstance(entry, Fifo):
        ti.type, ti.mode = tarfile.FIFOTYPE, entry.mode
    elif isinstance(entry, CharDev):
        ti.type, ti.mode, ti.devmajor, ti.devminor = tarfile.CHRTYPE, entry.mode, entry.major, entry.minor
    else:
        raise TypeError(f"unknown layer entry for {path}: {entry!r}")
    return ti, data


def make_tar(entries, implicit_dirs: bool = True) -> bytes:
    """An uncompressed PAX tar of ``entries`` ({path: entry} or [(path, entry)]), in order."""
    items = list(entries.items()) if isinstance(entries, dict) else list(entries)
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, entry in items:
            path = path.strip("/")
            if implicit_dirs:
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    parent = "/".join(parts[:i])
                    if parent not in seen and parent not in dict(items):
                        seen.add(parent)
                        ti, _ = _tarinfo(parent, Dir())
                        tf.addfile(ti)
            seen.add(path)
            ti, data = _tarinfo(path, entry)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _ustar_template(typeflag: bytes, mode: int) -> tuple[bytes, bytes, int]:
    """The fixed parts of a ustar header around its name and size fields, and
    the byte sum of the header without them (checksum field as spaces)."""
    def octal(v: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, v)
    mid = octal(mode, 8) + octal(0, 8) + octal(0, 8)           # mode uid gid
    tail = octal(DEFAULT_MTIME, 12) + b" " * 8 + typeflag + b"\0" * 100 + b"ustar\x0000" + b"\0" * 32 * 2 \
        + octal(0, 8) * 2 + b"\0" * 155 + b"\0" * 12
    assert 100 + len(mid) + 12 + len(tail) == 512
    return mid, tail, sum(mid) + sum(tail)


def write_fast_tar(dest: Path, entries, compresslevel: int | None = None) -> str:
    """Writes a ustar archive of ``entries`` ([(name, bytes | None)]: a regular
    file with that content, or a directory for None) to dest, gzip-compressed
    at ``compresslevel`` when given, and returns the sha256 digest of the
    uncompressed archive (a layer's diff_id). Header by header with no
    tarfile objects, so that archives of a million members (tests at the
    entry limits) take seconds; names are at most 100 bytes, owner 0:0,
    mtime DEFAULT_MTIME. libarchive and tarfile read them as any ustar
    archive."""
    kinds = {True: _ustar_template(b"5", 0o755), False: _ustar_template(b"0", 0o644)}
    raw = open(dest, "wb")
    out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) if compresslevel else raw
    digest = hashlib.sha256()

    def emit(pieces):
        data = b"".join(pieces)
        digest.update(data)
        out.write(data)

    try:
        chunk = []
        for name, data in entries:
            mid, tail, base = kinds[data is None]
            n = name.encode()
            if len(n) > 100:
                raise ValueError(f"name longer than 100 bytes: {name}")
            size = b"%011o\0" % (len(data) if data else 0)
            check = base + sum(n) + sum(size)
            header = n.ljust(100, b"\0") + mid + size + tail[:12] + b"%06o\0 " % check + tail[20:]
            chunk.append(header)
            if data:
                chunk.append(data + b"\0" * (-len(data) % 512))
            if len(chunk) >= 4096:
                emit(chunk)
                chunk = []
        chunk.append(b"\0" * 1024)
        emit(chunk)
    finally:
        if out is not raw:
            out.close()
        raw.close()
    return "sha256:" + digest.hexdigest()


def write_sparse_files(root: Path, files: dict) -> Path:
    """Writes files with real holes below root: ``files`` maps a path to
    (apparent size, [(offset, data), ...]); the rest of each file is hole."""
    for name, (size, pieces) in files.items():
        p = Path(root) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            for off, data in pieces:
                f.seek(off)
                f.write(data)
            f.truncate(size)
    return Path(root)


def sparse_content(size: int, pieces: list) -> bytes:
    """What a file of :func:`write_sparse_files` reads back as."""
    b = bytearray(size)
    for off, data in pieces:
        b[off:off + len(data)] = data
    return bytes(b)


def sparse_tar(src: Path, dest: Path, fmt: str = "posix") -> Path:
    """GNU ``tar --sparse`` of everything below src (its holes found with
    SEEK_HOLE, so an 11 GiB file of holes takes a few tar blocks), owners
    0:0 and times fixed. ``fmt`` "posix" writes PAX 1.0 sparse members,
    "gnu" the old GNU 'S' headers (which umoci cannot unpack)."""
    for dirpath, dirnames, filenames in os.walk(src):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (DEFAULT_MTIME, DEFAULT_MTIME), follow_symlinks=False)
    os.utime(src, (DEFAULT_MTIME, DEFAULT_MTIME))
    _run("tar", "--sparse", f"--format={fmt}", "--owner=0", "--group=0", "--numeric-owner",
         "-C", src, "-cf", dest, ".")
    return Path(dest)


# Truth objects --------------------------------------------------------------


@dataclass
class Config:
    """What to set in an image config (None: leave umoci's default)."""
    env: list[str] | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    architecture: str | None = None
    os: str | None = None
    variant: str | None = None


@dataclass
class Layer:
    blob_digest: str
    size: int
    media_type: str | None
    diff_id: str


@dataclass
class Image:
    """The truth about one image manifest as written on disk."""
    layout: "Layout | None"
    ref_name: str | None
    manifest_digest: str
    manifest_size: int
    manifest_media_type: str
    manifest: dict
    config_digest: str
    config_size: int
    config: dict
    layers: list[Layer]

    @property
    def diff_ids(self) -> list[str]:
        return [l.diff_id for l in self.layers]

    @property
    def size_bytes(self) -> int:
        """Sum of the compressed layer sizes (README, "The protocol")."""
        return sum(l.size for l in self.layers)

    @property
    def layer_count(self) -> int:
        return len(self.layers)

    @property
    def architecture(self) -> str | None:
        return self.config.get("architecture")

    @property
    def os(self) -> str | None:
        return self.config.get("os")

    @property
    def platform(self) -> str:
        p = f"{self.os}/{self.architecture}"
        return p + (f"/{self.config['variant']}" if self.config.get("variant") else "")

    def _cfg(self) -> dict:
        return self.config.get("config") or {}

    @property
    def env(self) -> list[str]:
        return self._cfg().get("Env") or []

    @property
    def cmd(self):
        return self._cfg().get("Cmd")

    @property
    def entrypoint(self):
        return self._cfg().get("Entrypoint")

    @property
    def working_dir(self):
        return self._cfg().get("WorkingDir") or None

    @property
    def user(self):
        return self._cfg().get("User") or None

    @property
    def labels(self):
        return self._cfg().get("Labels")

    @property
    def stop_signal(self):
        return self._cfg().get("StopSignal") or None

    def expected_config_detail(self) -> dict:
        """ImageConfigDetail as the protocol must report it."""
        return {
            "digest": self.config_digest,
            "env": self.env,
            "cmd": self.cmd,
            "entrypoint": self.entrypoint,
            "working_dir": self.working_dir,
            "user": self.user,
            "labels": self.labels,
            "stop_signal": self.stop_signal,
        }

    def expected_layers(self) -> list[dict]:
        """ImageLayerDetail without erofs_size_bytes (that one depends on the converter)."""
        return [
            {"diff_id": l.diff_id, "blob_digest": l.blob_digest, "media_type": l.media_type,
             "compressed_size_bytes": l.size, "position": i}
            for i, l in enumerate(self.layers)
        ]

    @property
    def blob_digests(self) -> set[str]:
        return {self.manifest_digest, self.config_digest, *(l.blob_digest for l in self.layers)}


@dataclass
class PlatformIndex:
    """A layout whose one reference names an image index of several platforms."""
    layout: "Layout"
    ref_name: str
    index_digest: str
    images: dict[str, Image]
    nested: bool

    def for_platform(self, plat: str) -> Image:
        return self.images[plat]


@dataclass
class DockerArchive:
    """A ``docker save``-format archive written by skopeo, read back."""
    path: Path
    repo_tags: list[str]
    config_digest: str
    config: dict
    layers: list[Layer]
    source: Image

    @property
    def diff_ids(self) -> list[str]:
        return [l.diff_id for l in self.layers]

    @property
    def size_bytes(self) -> int:
        return sum(l.size for l in self.layers)

    @property
    def architecture(self):
        return self.config.get("architecture")

    @property
    def os(self):
        return self.config.get("os")


# Layouts --------------------------------------------------------------------


class Layout:
    """An OCI image layout directory, created with ``umoci init``."""

    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if create:
            _run("umoci", "init", "--layout", self.path)

    def __repr__(self) -> str:
        return f"Layout({str(self.path)!r})"

    # Blobs and index -------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        return self.path / "blobs" / algo / hexpart

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def put_blob(self, data: bytes) -> tuple[str, int]:
        d = sha256_digest(data)
        p = self.blob_path(d)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return d, len(data)

    def put_json(self, obj: Any) -> tuple[str, int]:
        return self.put_blob(json.dumps(obj, separators=(",", ":")).encode())

    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_text())

    def write_index(self, index: dict) -> None:
        (self.path / "index.json").write_text(json.dumps(index, separators=(",", ":")))

    def _entry(self, ref: str) -> dict:
        for m in self.index().get("manifests", []):
            if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) == ref:
                return m
        raise KeyError(f"no entry named {ref!r} in {self.path}/index.json")

    def strip_ref_names(self) -> None:
        """Drop every ref.name annotation: the layout then names no reference."""
        idx = self.index()
        for m in idx.get("manifests", []):
            ann = m.get("annotations") or {}
            ann.pop(REF_NAME_ANNOTATION, None)
            if ann:
                m["annotations"] = ann
            else:
                m.pop("annotations", None)
        self.write_index(idx)

    def corrupt_blob(self, digest: str) -> None:
        """Flip one byte of a blob in place (same size, wrong digest)."""
        p = self.blob_path(digest)
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))

    def remove_blob(self, digest: str) -> None:
        self.blob_path(digest).unlink()

    # Images ------------------------------------------------------------------

    def image(self, ref: str) -> Image:
        """The truth about the manifest named ``ref`` (read back and verified)."""
        return self.image_from_descriptor(self._entry(ref), ref)

    def images(self) -> list[Image]:
        """Every manifest entry of index.json (indexes are skipped)."""
        out = []
        for m in self.index().get("manifests", []):
            if m.get("mediaType") in (MT_MANIFEST, MT_DOCKER_MANIFEST):
                out.append(self.image_from_descriptor(m, (m.get("annotations") or {}).get(REF_NAME_ANNOTATION)))
        return out

    def image_from_descriptor(self, desc: dict, ref: str | None) -> Image:
        mraw = self.read_blob(desc["digest"])
        assert sha256_digest(mraw) == desc["digest"] and len(mraw) == desc["size"], "layout is inconsistent"
        manifest = json.loads(mraw)
        craw = self.read_blob(manifest["config"]["digest"])
        config = json.loads(craw)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = [Layer(l["digest"], l["size"], l.get("mediaType"), diff_ids[i] if i < len(diff_ids) else "")
                  for i, l in enumerate(manifest.get("layers", []))]
        return Image(self, ref, desc["digest"], len(mraw), manifest.get("mediaType") or desc.get("mediaType"),
                     manifest, manifest["config"]["digest"], len(craw), config, layers)

    def add_image(self, ref: str, layers=(), config: Config | None = None, base: "Image | str | None" = None,
                  compression: str = "gzip") -> Image:
        """Create (or extend ``base``'s layers into) the image named ``ref``.

        ``layers`` is a list of entry dicts (see :func:`make_tar`) or raw tar
        bytes.  ``compression`` is ``gzip`` (umoci raw add-layer), ``none`` or
        ``zstd`` (blob written here, manifest and config edited by hand).
        """
        if base is not None:
            base_ref = base.ref_name if isinstance(base, Image) else base
            _run("umoci", "tag", "--image", f"{self.path}:{base_ref}", ref)
        else:
            _run("umoci", "new", "--image", f"{self.path}:{ref}")
        tmp = self.path.parent / f".{self.path.name}-layer.tar"
        try:
            for spec in layers:
                tar = spec if isinstance(spec, (bytes, bytearray)) else make_tar(spec)
                if compression == "gzip":
                    tmp.write_bytes(tar)
                    _run("umoci", "raw", "add-layer", "--no-history", "--image", f"{self.path}:{ref}", tmp)
                else:
                    self._append_raw_layer(ref, bytes(tar), compression)
        finally:
            tmp.unlink(missing_ok=True)
        if config is not None:
            self.configure(ref, config)
        _run("umoci", "gc", "--layout", self.path)
        return self.image(ref)

    def _append_raw_layer(self, ref: str, tar: bytes, compression: str) -> None:
        if compression == "none":
            blob, mt = tar, MT_LAYER_TAR
        elif compression == "zstd":
            blob = subprocess.run(["zstd", "-q", "-c", "-3"], input=tar, capture_output=True, check=True).stdout
            mt = MT_LAYER_ZSTD
        elif compression == "gzip-raw":
            blob, mt = gzip.compress(tar, mtime=0), MT_LAYER_GZIP
        else:
            raise ValueError(f"unknown compression {compression!r}")
        digest, size = self.put_blob(blob)
        img = self.image(ref)
        config = dict(img.config)
        config["rootfs"] = {"type": "layers", "diff_ids": [*img.diff_ids, sha256_digest(tar)]}
        manifest = dict(img.manifest)
        manifest["layers"] = [*manifest.get("layers", []), {"mediaType": mt, "digest": digest, "size": size}]
        self.replace_manifest(ref, manifest, config=config)

    def configure(self, ref: str, cfg: Config) -> Image:
        """Set config fields with ``umoci config`` (lists replace, labels add)."""
        argv = ["umoci", "config", "--no-history", "--image", f"{self.path}:{ref}"]
        if cfg.env is not None:
            argv += ["--clear=config.env"] + [f"--config.env={e}" for e in cfg.env]
        if cfg.cmd is not None:
            argv += ["--clear=config.cmd"] + [f"--config.cmd={c}" for c in cfg.cmd]
        if cfg.entrypoint is not None:
            argv += ["--clear=config.entrypoint"] + [f"--config.entrypoint={c}" for c in cfg.entrypoint]
        if cfg.working_dir is not None:
            argv += [f"--config.workingdir={cfg.working_dir}"]
        if cfg.user is not None:
            argv += [f"--config.user={cfg.user}"]
        if cfg.labels is not None:
            argv += [f"--config.label={k}={v}" for k, v in cfg.labels.items()]
        if cfg.stop_signal is not None:
            argv += [f"--config.stopsignal={cfg.stop_signal}"]
        if cfg.architecture is not None:
            argv += [f"--architecture={cfg.architecture}"]
        if cfg.os is not None:
            argv += [f"--os={cfg.os}"]
        _run(*argv)
        if cfg.variant is not None:
            img = self.image(ref)
            config = dict(img.config, variant=cfg.variant)
            self.replace_manifest(ref, img.manifest, config=config)
        return self.image(ref)

    def replace_manifest(self, ref: str, manifest: dict, config: dict | None = None,
                         raw_manifest: bytes | None = None) -> Image | None:
        """Write a new config (optional) and manifest and point ``ref`` at them.

        ``raw_manifest`` replaces the manifest bytes verbatim (then None is
        returned, since they need not parse).
        """
        manifest = json.loads(json.dumps(manifest))
        if config is not None:
            cdigest, csize = self.put_json(config)
            manifest["config"] = dict(manifest["config"], digest=cdigest, size=csize)
        data = raw_manifest if raw_manifest is not None else json.dumps(manifest, separators=(",", ":")).encode()
        mdigest, msize = self.put_blob(data)
        idx = self.index()
        for m in idx["manifests"]:
            if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) == ref:
                m["digest"], m["size"] = mdigest, msize
                if manifest.get("mediaType"):
                    m["mediaType"] = manifest["mediaType"]
        self.write_index(idx)
        # Raw bytes may be deliberately unparsable: then there is no truth.
        return self.image(ref) if raw_manifest is None else None

    def replace_config(self, ref: str, config: dict) -> Image:
        img = self.image(ref)
        return self.replace_manifest(ref, img.manifest, config=config)

    def copy_blobs_from(self, img: Image) -> None:
        for d in img.blob_digests:
            dst = self.blob_path(d)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(img.layout.blob_path(d), dst)

    # Archives ----------------------------------------------------------------

    def oci_archive(self, dest: Path) -> Path:
        """A plain tar of the layout directory (an OCI archive), made with tar(1)."""
        _run("tar", "-C", self.path, "-cf", dest, "oci-layout", "index.json", "blobs")
        return Path(dest)

    def skopeo_oci_archive(self, ref: str, dest: Path, dest_ref: str | None = None) -> Path:
        """``skopeo copy oci:LAYOUT:ref oci-archive:DEST[:dest_ref]``."""
        target = f"oci-archive:{dest}" + (f":{dest_ref}" if dest_ref else "")
        _run("skopeo", "copy", "--quiet", f"oci:{self.path}:{ref}", target)
        return Path(dest)

    def docker_archive(self, ref: str, dest: Path, repo_tags: list[str] | None = None) -> DockerArchive:
        """``skopeo copy oci:LAYOUT:ref docker-archive:DEST[:tag]`` (+ --additional-tag)."""
        repo_tags = list(repo_tags or [])
        argv = ["skopeo", "copy", "--quiet"]
        for t in repo_tags[1:]:
            argv += ["--additional-tag", t]
        argv += [f"oci:{self.path}:{ref}", f"docker-archive:{dest}" + (f":{repo_tags[0]}" if repo_tags else "")]
        _run(*argv)
        return read_docker_archive(Path(dest), self.image(ref))


def read_docker_archive(path: Path, source: Image) -> DockerArchive:
    with tarfile.open(path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        assert len(manifest) == 1, "expected one image in the archive"
        entry = manifest[0]
        craw = tf.extractfile(entry["Config"]).read()
        config = json.loads(craw)
        diff_ids = config["rootfs"]["diff_ids"]
        layers = []
        for i, name in enumerate(entry["Layers"]):
            member = tf.getmember(name)
            if member.issym() or member.islnk():
                member = tf.getmember(os.path.normpath(os.path.join(os.path.dirname(name), member.linkname)))
            data = tf.extractfile(member).read()
            layers.append(Layer(sha256_digest(data), len(data), None, diff_ids[i]))
    return DockerArchive(path, entry.get("RepoTags") or [], sha256_digest(craw), config, layers, source)


# The kit ---------------------------------------------------------------------


class ImageCache:
    """Images built once per test session (or once per run of several
    sessions, see :meth:`shared`), handed out as copies.

    ``umoci`` takes tens of milliseconds a call and an image takes several;
    many tests need the same image.  The first request for an image builds
    it here, every request (the first too) gets a copy of its own layout, so
    a test that edits its image (a corrupt blob, a new index) edits only its
    copy, and the truth is read back from the copy's bytes as ever.

    Several sessions may share one directory at once: each image is built
    once, by :func:`msbtest.buildonce.build_once`.
    """

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def shared(cls, fallback) -> "ImageCache":
        """The cache in $MSB_TEST_IMAGE_CACHE when that is set (scripts/test.sh
        points it at build/test-image-cache, emptied at each run, so that its
        suites side by side build each image once), else one in fallback."""
        return cls(os.environ.get("MSB_TEST_IMAGE_CACHE") or fallback)

    def layout(self, dest: Path, ref: str, tars: list[bytes], config: Config | None, compression: str) -> Layout:
        """A copy at ``dest`` of the layout holding just ``ref`` built from
        these layer tars, config and compression."""
        key = sha256_digest(json.dumps([ref, [sha256_digest(t) for t in tars], repr(config), compression]).encode())
        built = build_once(self.workdir, key.split(":")[1][:32],
                           lambda path: Layout(path).add_image(ref, tars, config, compression=compression))
        shutil.copytree(built, dest, symlinks=True)
        return Layout(dest, create=False)

    def directory(self, name: str, build) -> Path:
        """The directory ``name`` in the cache, filled by ``build(path)``
        the first time a session asks for it, then handed out as it is: for
        inputs too big to copy at each use (layers of half a million
        entries), which the tests only read. ``name`` must say everything
        the contents depend on. Built and renamed into place like images."""
        def make(path: Path) -> None:
            path.mkdir()
            build(path)

        return build_once(self.workdir, name, make)


class ImageKit:
    """Factory for layouts and archives under one work directory; with a
    ``cache`` (:class:`ImageCache`), ``image()`` builds each distinct image
    once and copies it after."""

    def __init__(self, workdir, cache: ImageCache | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache = cache
        self._n = 0

    def _fresh(self, name: str | None, suffix: str = "") -> Path:
        self._n += 1
        return self.workdir / f"{name or 'img'}-{self._n}{suffix}"

    def layout(self, name: str | None = None) -> Layout:
        return Layout(self._fresh(name))

    def image(self, ref: str, layers=(), config: Config | None = None, compression: str = "gzip",
              name: str | None = None) -> Image:
        """A fresh layout holding one image named ``ref``."""
        if self.cache is None:
            return self.layout(name).add_image(ref, layers, config, compression=compression)
        tars = [bytes(spec) if isinstance(spec, (bytes, bytearray)) else make_tar(spec) for spec in layers]
        return self.cache.layout(self._fresh(name), ref, tars, config, compression).image(ref)

    def path(self, name: str, suffix: str = "") -> Path:
        """A fresh path in the work directory (for archives)."""
        return self._fresh(name, suffix)

    def layout_of(self, *images: Image, name: str | None = None) -> Layout:
        """A new layout holding just ``images`` (blobs copied, index.json
        naming each under its ref_name), e.g. to load images that share
        layers from separate sources."""
        lay = self.layout(name or "subset")
        entries = []
        for img in images:
            lay.copy_blobs_from(img)
            e = {"mediaType": img.manifest_media_type, "digest": img.manifest_digest, "size": img.manifest_size}
            if img.ref_name:
                e["annotations"] = {REF_NAME_ANNOTATION: img.ref_name}
            entries.append(e)
        idx = lay.index()
        idx["manifests"] = entries
        lay.write_index(idx)
        return lay

    def platform_index(self, ref: str, images: dict[str, Image], nested: bool = False,
                       name: str | None = None) -> PlatformIndex:
        """A new layout whose entry ``ref`` is an image index over ``images``.

        ``images`` maps ``os/arch[/variant]`` to images built elsewhere; their
        blobs are copied.  With ``nested`` the index entry points to an index
        whose only entry is the index of the platforms.
        """
        lay = self.layout(name or "index")
        descs = []
        for plat, img in images.items():
            lay.copy_blobs_from(img)
            parts = plat.split("/")
            p = {"os": parts[0], "architecture": parts[1]}
            if len(parts) > 2:
                p["variant"] = parts[2]
            descs.append({"mediaType": MT_MANIFEST, "digest": img.manifest_digest, "size": img.manifest_size,
                          "platform": p})
        digest, size = lay.put_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": descs})
        if nested:
            inner = {"mediaType": MT_INDEX, "digest": digest, "size": size}
            digest, size = lay.put_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [inner]})
        idx = lay.index()
        idx["manifests"] = [{"mediaType": MT_INDEX, "digest": digest, "size": size,
                             "annotations": {REF_NAME_ANNOTATION: ref}}]
        lay.write_index(idx)
        return PlatformIndex(lay, ref, digest, dict(images), nested)

    @staticmethod
    def unique_bytes(n: int) -> bytes:
        """Incompressible bytes, different on every call."""
        return os.urandom(n)
