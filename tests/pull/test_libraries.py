"""libcurl and libarchive are mapped at their first use, not at start
(daemon/base/dlopen.h): an idle daemon has mapped neither, a load maps
libarchive and not libcurl, a pull from a registry maps libcurl. When one
of them cannot be loaded, the calls that need it fail with internal-error
naming it, and the daemon goes on serving everything else."""

import ctypes.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from msbtest.rpc import RpcError
from msbtest.store import consistency_problems, store_state

PULL_TIMEOUT = 120


def soname(name: str) -> str:
    found = ctypes.util.find_library(name)
    assert found and found.startswith(f"lib{name}.so."), found
    return found


def library_path(so: str) -> Path:
    """Where the dynamic loader finds the soname (ldconfig's cache)."""
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^\s*{re.escape(so)} \([^)]*x86-64[^)]*\) => (\S+)$", out, re.M) or \
        re.search(rf"^\s*{re.escape(so)} \([^)]*\) => (\S+)$", out, re.M)
    assert m, f"{so} is not in ldconfig's cache"
    return Path(m.group(1))


CURL = soname("curl")
ARCHIVE = soname("archive")


def mapped(pid: int) -> set[str]:
    """The sonames of the shared objects the process has mapped, as their
    files are named up to the soname (libarchive.so.13.6.2: libarchive.so.13),
    and the other files it maps, by name."""
    names = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                name = os.path.basename(parts[5].strip())
                names.add(name)
                m = re.match(r"(.+\.so\.\d+)\.", name)
                if m:
                    names.add(m.group(1))
    return names


def test_libraries_are_mapped_when_first_needed(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    rpc.call("image.list", {})
    idle = mapped(d.pid)
    assert CURL not in idle and ARCHIVE not in idle, sorted(idle)
    # The daemon's own libraries are there: the check reads the right maps.
    assert any(n.startswith("libsqlite3.so") for n in idle), sorted(idle)

    img = published.images["test/small:v1"]
    rpc.call("image.load", {"path": str(img.layout.path)}, timeout=PULL_TIMEOUT)
    after_load = mapped(d.pid)
    assert ARCHIVE in after_load and CURL not in after_load, sorted(after_load)

    rpc.call("image.pull", {"reference": f"{published.registry.host}/test/base-a:v1"}, timeout=PULL_TIMEOUT)
    assert CURL in mapped(d.pid)
    assert consistency_problems(d.store, rpc) == []


@pytest.fixture
def broken_libraries(short_tmp):
    """A directory where libcurl's soname is not a library at all and
    libarchive's is a real library (libz) that lacks every libarchive
    function: dlopen() fails for the one, dlsym() for the other."""
    libs = short_tmp / "broken-libs"
    libs.mkdir()
    (libs / CURL).write_bytes(b"this is not a shared library\n")
    (libs / ARCHIVE).write_bytes(library_path(soname("z")).read_bytes())
    return libs


def test_a_library_that_cannot_be_loaded_fails_only_what_needs_it(published, pull_daemon, broken_libraries):
    d = pull_daemon(env_extra={"LD_LIBRARY_PATH": str(broken_libraries)})
    rpc = d.client()
    before = store_state(d.store)

    with pytest.raises(RpcError) as e:
        rpc.call("image.pull", {"reference": f"{published.registry.host}/test/small:v1"}, timeout=PULL_TIMEOUT)
    assert e.value.name == "internal-error", e.value
    assert f"cannot load {CURL}" in e.value.message, e.value.message

    with pytest.raises(RpcError) as e:
        rpc.call("image.load", {"path": str(published.images["test/small:v1"].layout.path)}, timeout=PULL_TIMEOUT)
    assert e.value.name == "internal-error", e.value
    assert f"cannot load {ARCHIVE}" in e.value.message and "undefined symbol" in e.value.message, e.value.message

    # Asked again, the same answer (a failed load is not retried), and
    # nothing of either call is in the store.
    with pytest.raises(RpcError) as e:
        rpc.call("image.pull", {"reference": f"{published.registry.host}/test/small:v1"}, timeout=PULL_TIMEOUT)
    assert f"cannot load {CURL}" in e.value.message
    assert store_state(d.store) == before
    assert consistency_problems(d.store, rpc) == []
    # The rest of the daemon serves on.
    assert rpc.call("image.list", {}) == []
    rpc.call("image.prune", {})
