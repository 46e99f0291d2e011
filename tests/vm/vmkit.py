"""Boot a disk in a real VM and read back what the guest kernel sees.

The guest kernel is a Debian kernel package, fetched with ``apt-get
download`` and unpacked with ``dpkg-deb`` into a cache under the build
directory (never installed on the host). The initramfs holds busybox-static
as the shell, ``guest-init.sh`` as /init, the kernel modules the mount needs
(resolved by kmod's ``modprobe --show-depends`` on the unpacked tree) and
the host's ``getfattr`` with the libraries it links, since busybox cannot
read xattrs. QEMU boots it with the disks given; the guest mounts them as
erofs and writes a manifest to its second serial port: :func:`mounts`
splits it by mount and :func:`snapshot` turns one into the same dict as
``erofs_kit.snapshot`` makes of a host directory.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The modules the guest loads (with their dependencies) unless built in:
# the PCI transport of virtio (a module in Debian's 6.1, built into 6.12),
# the disk driver and the filesystem.
GUEST_MODULES = ("virtio_pci", "virtio_blk", "erofs")
# A TCG boot of a Debian kernel, with the listing, took 5-30 s on this
# machine kind; past this the guest hung (no poweroff) and the test fails
# with the console log.
BOOT_TIMEOUT_S = 300
GUEST_MEMORY_MIB = 384
HERE = Path(__file__).resolve().parent
# Debian 12's backports kernel: the first Debian kernel for bookworm that
# reads a multi-device erofs from one flat disk (Linux 6.3 or later).
NEW_KERNEL = "linux-image-amd64/bookworm-backports"
# Debian 12's own kernel (6.1): it needs the devices as separate disks.
OLD_KERNEL = "linux-image-amd64/bookworm"
APT_ROOT_SANDBOX = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


class KernelUnavailable(Exception):
    """The kernel package cannot be had (no mirror, no such release)."""


@dataclass
class GuestKernel:
    package: str
    version: str
    release: str            # uname -r
    vmlinuz: Path
    modules: list[Path]     # uncompressed .ko files, in load order


def _run(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)


# A metapackage's stanza names the kernel package and version it depends on.
_DEPENDS = re.compile(r"^Depends:\s*(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)", re.M)
# The metapackages resolved so far in this process (_kernel_package).
_resolved: dict[str, tuple[str, str]] = {}


def _kernel_package(meta: str) -> tuple[str, str]:
    """The linux-image-<release> package and version that the metapackage
    ``meta`` (e.g. ``linux-image-amd64/bookworm-backports``) depends on.

    Both kernels' metapackages are looked up in one apt-cache (each run of
    it reads the package lists whole, about a second of CPU here, where
    apt keeps no cache file), the first time either is asked for."""
    if meta not in _resolved:
        metas = [meta, *(m for m in (NEW_KERNEL, OLD_KERNEL) if m != meta)]
        p = _run("apt-cache", "show", "--no-all-versions", *metas)
        found = [_DEPENDS.search(stanza) for stanza in p.stdout.strip().split("\n\n")]
        if p.returncode == 0 and len(found) == len(metas) and all(found):
            _resolved.update((m, (f.group(1), f.group(2))) for m, f in zip(metas, found))
        else:
            # A metapackage apt does not know prints nothing: which stanza is
            # whose is then unknown, so this one is looked up alone.
            p = _run("apt-cache", "show", "--no-all-versions", meta)
            m = _DEPENDS.search(p.stdout)
            if p.returncode != 0 or not m:
                raise KernelUnavailable(f"apt-cache show {meta} names no kernel package "
                                        f"(is its suite in the apt sources? scripts/install-deps.sh adds it): "
                                        f"{p.stderr.strip()}")
            _resolved[meta] = (m.group(1), m.group(2))
    return _resolved[meta]


def fetch_kernel(meta: str, cache: Path) -> GuestKernel:
    """The kernel that ``meta`` points at, unpacked under ``cache`` once."""
    package, version = _kernel_package(meta)
    root = cache / f"{package}_{version}"
    done = root / "ready"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        (root / "deb").mkdir(parents=True)
        p = _run("apt-get", *APT_ROOT_SANDBOX, "download", f"{package}={version}", cwd=root / "deb")
        if p.returncode != 0:
            raise KernelUnavailable(f"apt-get download {package}={version} failed: {p.stderr.strip()}")
        deb = next((root / "deb").glob("*.deb"))
        _check(_run("dpkg-deb", "-x", deb, root / "tree"))
        deb.unlink()
        release = next((root / "tree" / "lib" / "modules").iterdir()).name
        _check(_run("depmod", "-b", root / "tree", release))
        done.write_text(release + "\n")
    release = done.read_text().strip()
    tree = root / "tree"
    return GuestKernel(package, version, release, tree / "boot" / f"vmlinuz-{release}",
                       _modules(tree, release, root / "ko"))


def _check(p: subprocess.CompletedProcess) -> None:
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, p.args))} failed ({p.returncode}): {p.stdout}{p.stderr}")


def _modules(tree: Path, release: str, out: Path) -> list[Path]:
    """The .ko files to load for GUEST_MODULES, dependencies and soft
    dependencies first, decompressed (busybox insmod reads plain files).
    A soft dependency names every module that provides it (crc32c-intel
    and crc32c_generic); the one the guest CPU cannot run fails to load,
    which guest-init.sh reports and goes on.

    A module built into the kernel prints ``builtin NAME`` and needs nothing."""
    out.mkdir(exist_ok=True)
    order: list[Path] = []
    for name in GUEST_MODULES:
        p = _run("modprobe", "-d", tree, "-S", release, "--show-depends", name)
        _check(p)
        for line in p.stdout.splitlines():
            if not line.startswith("insmod "):
                continue
            src = Path(line.split()[1])
            if src.suffix not in (".xz", ".ko"):
                raise RuntimeError(f"{src}: only xz-compressed or plain modules are handled")
            dst = out / src.name.removesuffix(".xz")
            if not dst.exists():
                data = src.read_bytes()
                dst.write_bytes(lzma.decompress(data) if src.suffix == ".xz" else data)
            if dst not in order:
                order.append(dst)
    return order


def _copy_with_libraries(binary: str, root: Path) -> None:
    """Copy a host binary and every library ldd says it loads to the same
    paths under root."""
    files = [Path(binary)]
    for line in _run("ldd", binary).stdout.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            files.append(Path(m.group(1)))
    for f in files:
        dst = root / f.relative_to("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)


def build_initramfs(kernel: GuestKernel, out: Path, mounts: list[tuple[str, str, str]]) -> Path:
    """A newc cpio archive (made by cpio(1)) holding the guest's userland;
    ``mounts`` are (label, device, options) for guest-init.sh to try in turn."""
    stage = out.with_suffix(".d")
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "dev", "proc", "sys", "mnt", "etc", "lib/modules"):
        (stage / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", stage / "bin" / "busybox")
    shutil.copy2(HERE / "guest-init.sh", stage / "init")
    (stage / "init").chmod(0o755)
    for ko in kernel.modules:
        shutil.copy2(ko, stage / "lib" / "modules" / ko.name)
    (stage / "etc" / "modules.load").write_text("".join(ko.name + "\n" for ko in kernel.modules))
    devices = sorted({d for _, dev, opts in mounts for d in [dev, *re.findall(r"device=([^,]+)", opts)]})
    lines = "\n".join(":".join(m) for m in mounts)
    (stage / "etc" / "msb-vm.conf").write_text(f"WAIT_DEVICES='{' '.join(devices)}'\nMOUNTS='{lines}'\n")
    _copy_with_libraries(shutil.which("getfattr") or "/usr/bin/getfattr", stage)
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    with open(out, "wb") as f:
        p = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=stage,
                           input="\n".join(names).encode(), stdout=f, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"cpio failed: {p.stderr.decode()}")
    return out


@dataclass
class Boot:
    console: str        # kernel and init messages (first serial port)
    output: str         # what the guest wrote to the second serial port
    seconds: float      # from starting QEMU to its exit
    accel: str


def boot(kernel: GuestKernel, initramfs: Path, drives: list[str], workdir: Path) -> Boot:
    """Boot with the given -drive specifications; returns both serial logs.

    TCG (plain emulation) unless MSB_VM_ACCEL says otherwise: nested KVM
    on this machine kind stops the guest with "KVM internal error" while the
    kernel decompresses. The guest powers off when done; -no-reboot turns a
    panic into an exit."""
    console, output = workdir / "console.log", workdir / "serial1.log"
    accel = os.environ.get("MSB_VM_ACCEL") or "tcg"
    argv = ["qemu-system-x86_64", "-nodefaults", "-nographic", "-no-reboot", "-accel", accel,
            "-m", str(GUEST_MEMORY_MIB), "-smp", "1",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
            "-append", "console=ttyS0 panic=-1 rdinit=/init",
            "-serial", f"file:{console}", "-serial", f"file:{output}"]
    for d in drives:
        argv += ["-drive", d]
    start = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=BOOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the guest did not power off within {BOOT_TIMEOUT_S} s; console:\n"
                             f"{_tail(console)}") from None
    seconds = time.monotonic() - start
    if p.returncode != 0:
        raise AssertionError(f"qemu exited {p.returncode}: {p.stderr}\nconsole:\n{_tail(console)}")
    return Boot(console.read_text(errors="replace"),
                output.read_bytes().decode("utf-8", "surrogateescape").replace("\r\n", "\n"),
                seconds, accel)


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no console log)"


@dataclass
class Mount:
    label: str
    ok: bool
    release: str | None     # the guest's uname -r, for a mount that worked
    lines: list[str]        # manifest lines, or the kernel's erofs messages


def mounts(output: str) -> dict[str, Mount]:
    """The result of each mount guest-init.sh tried, by label."""
    out: dict[str, Mount] = {}
    current: Mount | None = None
    for line in output.split("\n"):
        if line.startswith("MSB-VM-MANIFEST-BEGIN "):
            _, label, release = line.split(" ", 2)
            current = out[label] = Mount(label, True, release, [])
        elif line.startswith("MSB-VM-MANIFEST-END "):
            current = None
        elif line.startswith("MSB-VM-MOUNT-FAILED "):
            label = line.split(" ", 1)[1]
            current = out[label] = Mount(label, False, None, [])
        elif current is not None and line:
            current.lines.append(line.removeprefix("D\t") if not current.ok else line)
    return out


def _unescape_getfattr(name: str) -> str:
    """getfattr writes bytes outside printable ASCII (and backslash) as \\ooo."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]),
                 name.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _xattr_value(text: str) -> bytes:
    if text.startswith("0x"):
        return bytes.fromhex(text[2:])
    if text in ("", '""'):
        return b""
    raise ValueError(f"getfattr value not in hex: {text!r}")


def snapshot(m: Mount) -> dict:
    """The manifest as ``erofs_kit.snapshot`` describes a tree (with xattrs,
    hard links, directory mtimes and set-id bits), so the two compare."""
    entries: dict[str, Any] = {}
    inodes: dict[str, list[str]] = {}
    xattr_path = ""
    for line in m.lines:
        kind, _, rest = line.partition("\t")
        if kind == "S":
            mode_hex, uid, gid, nlink, ino, mtime, size, major, minor, path = rest.split("\t", 9)
            path, mode = path.removeprefix("./"), int(mode_hex, 16)
            e: dict = {"type": stat.S_IFMT(mode), "mode": stat.S_IMODE(mode), "uid": int(uid), "gid": int(gid)}
            if stat.S_ISREG(mode):
                e["size"] = int(size)
                if int(nlink) > 1:
                    inodes.setdefault(ino, []).append(path)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                e["rdev"] = (int(major, 16), int(minor, 16))
            if not stat.S_ISLNK(mode):
                e["mtime"] = int(mtime)
                e["xattrs"] = {}
            entries[path] = e
        elif kind == "H":
            digest, path = rest.split("  ", 1)
            entries[path.removeprefix("./")]["sha256"] = digest
        elif kind == "L":
            path, target = rest.split("\t", 1)
            entries[path.removeprefix("./")]["target"] = target
        elif kind == "X" and rest.startswith("# file: "):
            xattr_path = _unescape_getfattr(rest[len("# file: "):]).removeprefix("./")
        elif kind == "X" and rest:
            name, _, value = rest.partition("=")
            entries[xattr_path]["xattrs"][name] = _xattr_value(value)
        elif kind != "X":
            raise ValueError(f"unexpected manifest line {line!r}")
    entries["<hardlinks>"] = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return entries
