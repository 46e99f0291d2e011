"""Fetch the guest kernels of tests/vm into their cache (build/vm-guest, or
under $MSB_BUILD_DIR) ahead of the suite: scripts/test.sh runs this while
the build compiles, so that the download does not hold up a test job.

What the tests see is the same either way: each fetches its kernel through
vmkit.fetch_kernel(), which finds it ready, or fetches it itself and skips or
fails as it would have (this script's failure is only printed).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
sys.path.insert(0, str(HERE))

from msbtest.daemon import build_dir  # noqa: E402

import vmkit  # noqa: E402


def main() -> int:
    status = 0
    for meta in (vmkit.NEW_KERNEL, vmkit.OLD_KERNEL):
        try:
            kernel = vmkit.fetch_kernel(meta, build_dir() / "vm-guest")
            print(f"{meta}: {kernel.package} {kernel.version} ({kernel.release})")
        except Exception as e:  # the suite fetches again and says why
            print(f"{meta}: not fetched: {e}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
