"""Integration tests: the real msb-imaged on a temporary store and socket.

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/integration
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from msbtest.fixtures import *  # noqa: E402,F401,F403

import os  # noqa: E402

import pytest  # noqa: E402

from msbtest.imagekit import Config, ImageKit  # noqa: E402


@pytest.fixture(scope="session")
def big_image(tmp_path_factory):
    """example.com/crash/big:1, whose load takes a noticeable time
    (incompressible layers, 48 MiB).  Built once per session; loads only
    read it."""
    kit = ImageKit(tmp_path_factory.mktemp("big"))
    return kit.image("example.com/crash/big:1",
                     [{"blob-a": os.urandom(24 << 20)}, {"small": b"s"}, {"blob-b": os.urandom(24 << 20)}],
                     Config(cmd=["big"]))


def pytest_configure(config):
    config.addinivalue_line("markers", "erofs: needs the EROFS outputs (layer images, fsmeta, VMDK); "
                                       "skips with a reason while the daemon reports them as null")
