"""The store's directories and index files belong to the daemon's user alone
(issue: a store directory left 0777, or another user's, was used as it was).

Each case starts the real daemon on a prepared store directory.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

SUBDIRS = ["", "blobs", "blobs/sha256", "layers", "layers/sha256", "fsmeta/sha256", "vmdk/sha256", "tmp"]


def _mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_open_store_directory_is_made_private(daemon_factory, short_tmp):
    store = short_tmp / "d" / "store"
    store.mkdir(parents=True)
    os.chmod(store, 0o777)
    (store / "tmp").mkdir()
    os.chmod(store / "tmp", 0o777)
    d = daemon_factory("d", store=store)
    with d.client() as c:
        assert c.call("image.list") == []
    for sub in SUBDIRS:
        assert _mode(store / sub) == 0o700, f"{sub or 'the store'} is {_mode(store / sub):o}"
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        if (store / name).exists():
            assert _mode(store / name) == 0o600, f"{name} is {_mode(store / name):o}"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory of another user needs root")
def test_store_of_another_user_is_refused(daemon_factory, short_tmp):
    store = short_tmp / "d" / "store"
    store.mkdir(parents=True)
    os.chmod(store, 0o755)
    os.chown(store, 65534, 65534)
    d = daemon_factory("d", start=False, store=store)
    r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30, env=d.env)
    assert r.returncode == 1, r.stderr
    assert str(store) in r.stderr and "uid 65534" in r.stderr and "0755" in r.stderr, r.stderr
    assert list(store.iterdir()) == [], "the daemon wrote into a store it refused"


def test_symlinked_store_subdirectory_is_refused(daemon_factory, short_tmp):
    d = daemon_factory("d")
    d.stop()
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    (d.store / "tmp").rmdir()
    (d.store / "tmp").symlink_to(elsewhere)
    r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30, env=d.env)
    assert r.returncode == 1, r.stderr
    assert "symlink" in r.stderr and "tmp" in r.stderr, r.stderr
    assert _mode(elsewhere) == 0o755
