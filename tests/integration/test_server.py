"""The daemon process: socket and directory modes, the store lock, start-up
sweep, system.info, signals, environment configuration."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msbtest import proto
from msbtest.checks import now_ms
from msbtest.rpc import RpcClient
from msbtest.store import content_files


def test_socket_and_directory_modes(daemon):
    st = os.lstat(daemon.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    dst = os.stat(daemon.socket_path.parent)
    assert stat.S_IMODE(dst.st_mode) == 0o700, oct(dst.st_mode)
    assert st.st_uid == os.getuid()


def test_existing_socket_directory_is_tightened_or_refused(daemon_factory):
    # The contract puts the socket in a 0700 directory; a pre-existing
    # world-readable one must not be used as it is.
    d = daemon_factory("loose", start=False)
    d.socket_path.parent.mkdir(parents=True)
    os.chmod(d.socket_path.parent, 0o755)
    try:
        d.start(timeout=10)
    except AssertionError:
        d.kill9()
        return  # Refusing to start is acceptable.
    assert stat.S_IMODE(os.stat(d.socket_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(d.socket_path).st_mode) == 0o600


def _snapshot(store: Path):
    out = {}
    for p in sorted(store.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(store))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_second_daemon_on_same_store_exits_at_once(daemon, short_tmp):
    with daemon.client() as c:
        assert c.call("image.list") == []
    before = _snapshot(daemon.store)
    other_sock = short_tmp / "other" / "imaged.sock"
    t0 = time.monotonic()
    r = subprocess.run(daemon.argv(socket_path=other_sock), capture_output=True, text=True, timeout=30,
                       env=daemon.env)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0, f"second daemon exited 0:\n{r.stderr}"
    # "At once": no waiting for the lock (10 s leaves room for ASan on a busy CI machine).
    assert elapsed < 10, f"second daemon took {elapsed:.1f}s to give up"
    text = r.stderr + r.stdout
    assert str(daemon.store) in text or os.path.realpath(daemon.store) in text, f"store not named:\n{text}"
    assert str(daemon.pid) in text, f"holder pid {daemon.pid} not named:\n{text}"
    assert "AddressSanitizer" not in text and "runtime error:" not in text, text
    assert not other_sock.exists(), "second daemon created its socket"
    assert _snapshot(daemon.store) == before, "second daemon touched the store"
    # The first one is unaffected.
    with daemon.client() as c:
        assert c.call("image.list") == []


def test_second_daemon_on_same_socket_does_not_steal_it(daemon, short_tmp):
    # A different store but the live socket path: the running daemon must
    # keep its socket (the newcomer fails, or at least the old one still
    # answers on a connection made afterwards).
    r = subprocess.Popen(daemon.argv(store=short_tmp / "store2"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=daemon.env)
    try:
        rc = r.wait(timeout=5)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        if r.poll() is None:
            r.send_signal(signal.SIGTERM)
            r.wait(timeout=20)
        r.stdout.close()
    assert rc not in (0,), "second daemon on a live socket exited 0"
    with daemon.client() as c:
        info = c.call("system.info")
    assert info["pid"] == daemon.pid, "the socket now belongs to another process"


def test_stale_socket_file_is_replaced(daemon_factory):
    d = daemon_factory("stale", start=False)
    d.socket_path.parent.mkdir(parents=True, mode=0o700)
    import socket as _s
    s = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
    s.bind(str(d.socket_path))
    s.close()  # A socket file nobody listens on, as after a crash.
    d.start()
    with d.client() as c:
        assert c.call("system.info")["pid"] == d.pid


def test_system_info(daemon, rpc):
    t0 = now_ms()
    info = rpc.call("system.info")
    schema = proto.document()["components"]["schemas"]["SystemInfo"]
    assert set(info) >= set(schema["required"]), info
    assert info["pid"] == daemon.pid
    assert os.path.realpath(info["store_path"]) == os.path.realpath(daemon.store)
    assert os.path.isabs(info["store_path"]) and os.path.isabs(info["socket_path"])
    assert os.path.realpath(info["socket_path"]) == os.path.realpath(daemon.socket_path)
    assert isinstance(info["version"], str) and info["version"]
    assert type(info["uptime_ms"]) is int and info["uptime_ms"] >= 0
    assert isinstance(info["started_at"], (int, float)) and info["started_at"] <= t0 + 1000
    assert info["started_at"] > t0 - 120_000
    time.sleep(0.05)
    later = rpc.call("system.info")
    assert later["uptime_ms"] >= info["uptime_ms"] + 40
    assert later["started_at"] == info["started_at"]


def test_system_df_on_an_empty_store(rpc):
    df = rpc.call("system.df")
    schema = proto.document()["components"]["schemas"]["SystemDf"]
    assert set(df) >= set(schema["required"]), df
    assert df["image_refs"] == 0
    for kind in ("manifests", "configs", "layers", "fsmeta", "vmdk"):
        assert df[kind] == {"count": 0, "bytes": 0}, (kind, df)
    assert df["index_bytes"] > 0
    assert df["total_bytes"] >= df["index_bytes"]
    assert df["reclaimable_bytes"] == 0


def test_store_layout_created(daemon):
    assert (daemon.store / "index.db").is_file()
    assert (daemon.store / "lock").exists()
    assert (daemon.store / "tmp").is_dir()


def test_sigint_also_stops_cleanly(daemon):
    daemon.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=20) == 0, daemon.log_tail()
    daemon.assert_log_clean()
    assert daemon.stop() == 0


def test_sighup_keeps_serving(daemon):
    """SIGHUP would end the daemon by default (status 129). It must not: the
    daemon reads its configuration again (here: none, so nothing changed)
    and keeps serving the connection it has and new ones, however often it
    is sent."""
    with daemon.client() as c:
        assert c.call("image.list") == []
        for n in (1, 2):
            # Not daemon.send_signal(): that marks an exit as expected.
            daemon.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while daemon.log_since_start().count("SIGHUP: read the configuration") < n:
                assert daemon.running(), f"SIGHUP ended the daemon:\n{daemon.log_tail()}"
                assert time.monotonic() < deadline, f"SIGHUP not logged:\n{daemon.log_tail()}"
                time.sleep(0.02)
            assert c.call("image.list") == []
        assert daemon.log_since_start().count("again: nothing changed") == 2
    with daemon.client() as c:
        assert c.call("system.info")["pid"] == daemon.pid
    assert daemon.stop() == 0


def test_sigterm_with_clients_connected(daemon):
    # Not daemon.client(): those are closed by stop() itself.
    clients = [RpcClient(daemon.socket_path, timeout=10) for _ in range(10)]
    try:
        for c in clients[:5]:
            c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"image.li')  # half a request
        assert clients[-1].call("image.list") == []
        assert daemon.stop() == 0
        for c in clients:
            assert c.expect_eof(5), "connection left open after the daemon exited"
    finally:
        for c in clients:
            c.close()


def test_restart_keeps_the_store_usable(daemon):
    daemon.restart()
    with daemon.client() as c:
        assert c.call("image.list") == []
        assert c.call("system.info")["pid"] == daemon.pid


def test_startup_sweeps_leftovers(daemon):
    daemon.stop()
    (daemon.store / "tmp" / "partial-download").write_bytes(b"x" * 10000)
    orphan_blob = daemon.store / "blobs" / "sha256" / ("ab" * 32)
    orphan_blob.parent.mkdir(parents=True, exist_ok=True)
    orphan_blob.write_bytes(b"no row names me")
    orphan_layer = daemon.store / "layers" / "sha256" / (("cd" * 32) + ".erofs")
    orphan_layer.parent.mkdir(parents=True, exist_ok=True)
    orphan_layer.write_bytes(b"\0" * 4096)
    daemon.start()
    files = content_files(daemon.store)
    assert files["tmp"] == [], files["tmp"]
    assert files["blobs"] == [] and files["layers"] == [], files
    with daemon.client() as c:
        assert c.call("image.list") == []


def test_environment_configures_store_and_socket(daemon_factory):
    d = daemon_factory("envcfg", start=False)
    env = dict(d.env, MSB_IMAGED_STORE=str(d.store), MSB_IMAGED_SOCKET=str(d.socket_path))
    d.start(argv=[d.binary, "--log-level", "debug"], env=env)
    with d.client() as c:
        info = c.call("system.info")
    assert os.path.realpath(info["store_path"]) == os.path.realpath(d.store)
    assert os.path.realpath(info["socket_path"]) == os.path.realpath(d.socket_path)


def test_flags_override_environment(daemon_factory, short_tmp):
    d = daemon_factory("flags", start=False, env=dict(os.environ, MSB_IMAGED_STORE=str(short_tmp / "envstore"),
                                                       MSB_IMAGED_SOCKET=str(short_tmp / "envrun" / "s.sock")))
    d.start()
    with d.client() as c:
        info = c.call("system.info")
    assert os.path.realpath(info["store_path"]) == os.path.realpath(d.store)
    assert not (short_tmp / "envstore").exists()


def test_unknown_option_fails(daemon_factory):
    d = daemon_factory("badopt", start=False)
    r = subprocess.run([str(d.binary), "--no-such-option"], capture_output=True, text=True, timeout=10,
                       env=d.env)
    assert r.returncode != 0
    assert r.stderr.strip(), "no message for an unknown option"


@pytest.mark.parametrize("level", ["error", "warning", "info", "debug"])
def test_log_levels_accepted(daemon_factory, level):
    d = daemon_factory(f"lvl-{level}", start=False, log_level=level)
    d.start()
    with d.client() as c:
        assert c.call("image.list") == []


_PEER_SCRIPT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"image.list"}\n')
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    print(json.dumps({"connected": True, "reply": data.decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"connected": False, "errno": e.errno}))
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_other_uid_is_refused_by_peer_credentials(daemon_factory, traversable_tmp):
    # The socket lives where uid 65534 can reach it (not in /tmp, which may
    # be 0700), and its directory's and its own modes are opened up, so
    # that only SO_PEERCRED stands between another uid and the daemon
    # (README, "The store").
    daemon = daemon_factory(socket_path=traversable_tmp / "run" / "imaged.sock")
    os.chmod(daemon.socket_path.parent, 0o777)
    os.chmod(daemon.socket_path, 0o777)
    try:
        r = subprocess.run([sys.executable, "-c", _PEER_SCRIPT, str(daemon.socket_path)], capture_output=True,
                           text=True, timeout=30, user=65534, group=65534, extra_groups=[], cwd="/")
    finally:
        os.chmod(daemon.socket_path.parent, 0o700)
        os.chmod(daemon.socket_path, 0o600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # The kernel completes the connect (the modes allow it); the daemon must
    # then refuse to serve: close (EPIPE/ECONNRESET on our write), or answer
    # with an error.  EACCES would mean the test never reached the daemon.
    if out["connected"]:
        reply = out["reply"].strip()
        assert '"result"' not in reply, f"uid 65534 was served: {reply}"
    else:
        assert out["errno"] in (errno.EPIPE, errno.ECONNRESET), out
    with daemon.client() as c:
        assert c.call("image.list") == []
