"""Shared fixtures of the SDK tests.

The tests are plain functions that drive their coroutine with asyncio.run(),
so every test has its own event loop (and so its own connection), and the
SDK must leave nothing behind when a loop ends: pytest runs with warnings as
errors, which turns an unclosed transport into a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

SDK_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = SDK_DIR.parent
sys.path.insert(0, str(SDK_DIR / "src"))
# For the helper module fakedaemon, also under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO_DIR / "tests" / "lib"))

# The shared harness: fixtures daemon, daemon_factory, imagekit, short_tmp;
# its Daemon waits for READY=1 like every launcher of the tests.
from msbtest.fixtures import *  # noqa: E402,F401,F403


@pytest.fixture
def socket_path(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MSB_IMAGED_SOCKET pointed at a fresh path in short_tmp."""
    path = str(short_tmp / "imaged.sock")
    monkeypatch.setenv("MSB_IMAGED_SOCKET", path)
    return path


@pytest.fixture
def env_without_socket(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("MSB_IMAGED_SOCKET", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def sdk_daemon(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The harness's real msb-imaged (fresh store), with MSB_IMAGED_SOCKET
    pointing the SDK at it."""
    monkeypatch.setenv("MSB_IMAGED_SOCKET", str(daemon.socket_path))
    return daemon
