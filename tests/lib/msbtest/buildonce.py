"""Test inputs built once and shared by test processes running side by side.

scripts/test.sh runs several pytest sessions and meson tests at once, all
pointed at one cache directory ($MSB_TEST_IMAGE_CACHE): images, the EROFS
kit, RSA keys. Each is built by the first process that needs it and read
by the others.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["build_once"]


def build_once(base: Path, name: str, build: Callable[[Path], object]) -> Path:
    """``base/name``, made by ``build(path)`` the first time (``path`` does
    not exist yet; build creates it, a file or a directory). It is built
    beside, in a temporary directory, and renamed into place whole, under a
    lock on ``base/.name.lock``: a process alongside waits for it instead of
    building it too, and never sees half of it. ``name`` must say
    everything the contents depend on."""
    base = Path(base)
    built = base / name
    if built.exists():
        return built
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            building = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=base))
            try:
                build(building / "entry")
                (building / "entry").rename(built)
            finally:
                shutil.rmtree(building, ignore_errors=True)
    return built
