"""pytest fixtures over the msbtest harness.

In a conftest.py::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[N] / "tests" / "lib"))
    from msbtest.fixtures import *  # noqa: F401,F403

Fixtures (function-scoped but for ``image_cache``, so every test gets a
fresh store):

``daemon``
    a started :class:`msbtest.daemon.Daemon` in ``<short_tmp>/daemon``; stopped
    at teardown with SIGTERM, asserting exit 0 and no sanitizer report.
``rpc``
    an :class:`msbtest.rpc.RpcClient` connected to ``daemon``.
``imagekit``
    an :class:`msbtest.imagekit.ImageKit` working in ``tmp_path/images``;
    ``imagekit.image(...)`` gives a copy of an image built once per session.
``image_cache``
    the session's :class:`msbtest.imagekit.ImageCache` behind ``imagekit``
    (shared by the sessions of one run when ``MSB_TEST_IMAGE_CACHE`` names
    a directory: ``ImageCache.shared``).
``short_tmp``
    a short private directory under /tmp (socket paths are limited to 108
    bytes), removed at teardown unless ``MSB_TEST_KEEP=1``.
``traversable_tmp``
    a fresh directory of mode 0711 that every uid can traverse, for a
    socket another uid must reach: /tmp need not be (it may be 0700); skips
    the test, saying why, when no place qualifies.
``daemon_factory``
    ``daemon_factory(name="d2", start=True, **kw) -> Daemon`` for tests that
    need more daemons or an unstarted one; all are closed at teardown.
``measured_daemon``
    a started daemon whose peak RSS (``status_kib("VmHWM")``) is its own,
    also under ASan.
``hidden_dir_daemon``
    ``(daemon, hidden)``: a started :class:`msbtest.daemon.NamespaceDaemon`
    that sees the directory ``hidden`` as an empty tmpfs, as a service with
    systemd's PrivateTmp sees the caller's /tmp; files put there are the
    caller's alone. Skips where user namespaces are not allowed.

The daemon binary is ``$MSB_BUILD_DIR/daemon/msb-imaged`` (default
``<repo>/build``); a missing binary fails the test with that path.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from .daemon import Daemon, NamespaceDaemon, daemon_env, namespaces_available
from .imagekit import ImageCache, ImageKit
from .rpc import RpcClient

__all__ = ["daemon", "rpc", "imagekit", "image_cache", "daemon_factory", "short_tmp", "traversable_tmp",
           "measured_daemon", "hidden_dir_daemon"]

# Where traversable_tmp may make its directory, shortest paths first (a
# socket path must fit 108 bytes). /run and /var/tmp are usually 0755 and
# 1777, but any of them may be closed on a given machine.
TRAVERSABLE_BASES = ("/run", "/var/tmp", "/dev/shm", "/tmp")


def _removed_at_teardown(d: Path):
    yield d
    if os.environ.get("MSB_TEST_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def short_tmp():
    """A short private directory under /tmp (Unix socket paths must fit 108 bytes).

    Removed at teardown unless MSB_TEST_KEEP=1.
    """
    yield from _removed_at_teardown(Path(tempfile.mkdtemp(prefix="msbt-", dir="/tmp")))


def others_can_traverse(path: Path) -> bool:
    """True when a uid that owns none of them may search path and every
    directory above it."""
    p = Path(path).resolve()
    return all(d.stat().st_mode & stat.S_IXOTH for d in (p, *p.parents))


@pytest.fixture
def traversable_tmp():
    """A fresh directory of mode 0711 under the first base of
    TRAVERSABLE_BASES that another uid can reach and this one can write.

    Removed at teardown unless MSB_TEST_KEEP=1.
    """
    for base in map(Path, TRAVERSABLE_BASES):
        if base.is_dir() and os.access(base, os.W_OK | os.X_OK) and others_can_traverse(base):
            d = Path(tempfile.mkdtemp(prefix="msbt-", dir=base))
            # mkdtemp makes it 0700; others may search it, not list it.
            os.chmod(d, 0o711)
            yield from _removed_at_teardown(d)
            return
    pytest.skip(f"none of {', '.join(TRAVERSABLE_BASES)} is writable here and traversable by every uid")


@pytest.fixture
def daemon_factory(short_tmp):
    made: list[Daemon] = []

    def make(name: str = "daemon", start: bool = True, **kw) -> Daemon:
        d = Daemon(short_tmp / name, **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    errors = []
    for d in made:
        try:
            d.close()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def daemon(daemon_factory) -> Daemon:
    return daemon_factory("daemon")


@pytest.fixture
def measured_daemon(daemon_factory) -> Daemon:
    """A daemon whose peak RSS is its own: ASan keeps freed memory in a
    quarantine (256 MiB by default) to catch its use; a small one still
    catches it without counting as the daemon's memory."""
    return daemon_factory("measured", env=daemon_env("quarantine_size_mb=16"))


@pytest.fixture
def rpc(daemon) -> RpcClient:
    return daemon.client()


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory) -> ImageCache:
    return ImageCache.shared(tmp_path_factory.mktemp("image-cache"))


@pytest.fixture
def imagekit(tmp_path, image_cache) -> ImageKit:
    return ImageKit(tmp_path / "images", cache=image_cache)


@pytest.fixture
def hidden_dir_daemon(short_tmp):
    if not namespaces_available():
        pytest.skip("no mount namespace here (unprivileged user namespaces disabled)")
    hidden = short_tmp / "private"
    d = NamespaceDaemon(short_tmp / "ns", tmpfs={hidden: "1m"})
    d.start()
    yield d, hidden
    d.close()
