"""systemd integration tests: the units, and the real msb-imaged under socket
activation, readiness notification and the journal's stderr protocol.

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/systemd
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
# The kit next to this file, also under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from msbtest.fixtures import *  # noqa: E402,F401,F403
