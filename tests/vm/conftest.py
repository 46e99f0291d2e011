"""VM tests: the VMDK that pin.add returns, booted in QEMU with a Debian
kernel, and what the guest kernel shows of it.

The guest kernels come from Debian's mirror through apt (see vmkit.py) and
are cached under the build directory. When a kernel cannot be had (no
mirror, or its suite missing from the apt sources) the tests skip with the
reason, except under CI (CI set), where they must run and fail instead.
"""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
sys.path.insert(0, str(HERE.parent / "erofs"))
sys.path.insert(0, str(HERE))

from msbtest.daemon import build_dir  # noqa: E402
from msbtest.fixtures import *  # noqa: E402,F401,F403

import vmkit  # noqa: E402
from vmkit import NEW_KERNEL, OLD_KERNEL  # noqa: E402


def _kernel(meta: str) -> vmkit.GuestKernel:
    try:
        return vmkit.fetch_kernel(meta, build_dir() / "vm-guest")
    except vmkit.KernelUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"guest kernel {meta} unavailable under CI: {e}", pytrace=False)
        pytest.skip(f"guest kernel {meta} unavailable: {e}")


@pytest.fixture(scope="session")
def new_kernel() -> vmkit.GuestKernel:
    return _kernel(NEW_KERNEL)


@pytest.fixture(scope="session")
def old_kernel() -> vmkit.GuestKernel:
    return _kernel(OLD_KERNEL)
