"""EROFS tests: the converter through erofs-tool, and the daemon's load path
through the shared msbtest fixtures (the real daemon on a temporary store)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from msbtest.fixtures import *  # noqa: E402,F401,F403
