"""CLI tests: build/client/msb-image against the real msb-imaged.

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/client
(meson test -C BUILD --suite client runs them too.)
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "lib"))
# clitool.py, the tests' way of running msb-image.
sys.path.insert(0, str(HERE))
# The loopback registry harness of the pull tests, for `msb-image pull`.
sys.path.insert(0, str(HERE.parents[0] / "pull"))

from msbtest.fixtures import *  # noqa: E402,F401,F403
