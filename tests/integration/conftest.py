"""Integration tests: the real msb-imaged on a temporary store and socket.

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/integration
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from msbtest.fixtures import *  # noqa: E402,F401,F403


def pytest_configure(config):
    config.addinivalue_line("markers", "erofs: needs the EROFS outputs (layer images, fsmeta, VMDK); "
                                       "skips with a reason while the daemon reports them as null")
