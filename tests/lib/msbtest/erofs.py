"""EROFS images in tests: kernel mounts, where the test may mount.

``mount_reason() -> str | None``
    why ``mount -t erofs -o loop`` cannot be tried here, or None.
``Mount(image, where)``
    a context manager: the image mounted read-only at ``where`` (made if
    missing), unmounted on exit; the test skips, saying why, if the kernel
    refuses the mount.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

__all__ = ["mount_reason", "Mount"]


def mount_reason() -> str | None:
    """Why a kernel mount cannot be tried here, or None."""
    if os.geteuid() != 0:
        return "not root: mount -t erofs -o loop needs CAP_SYS_ADMIN"
    if "erofs" not in Path("/proc/filesystems").read_text():
        return "the kernel has no erofs driver"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control missing)"
    return None


class Mount:
    def __init__(self, image: Path, where: Path):
        self.image, self.where = Path(image), Path(where)

    def __enter__(self) -> Path:
        self.where.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["mount", "-t", "erofs", "-o", "loop,ro", str(self.image), str(self.where)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"mount -t erofs -o loop,ro refused here: {p.stderr.strip()}")
        return self.where

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", str(self.where)], check=True)
