"""The shipped units under a real systemd user manager (Debian's systemd, run
as `systemd --user` by the test): the socket starts the sandboxed Type=notify
service on the first connection, the daemon works inside the sandbox (reads
an archive from the home directory, writes its store), stops cleanly, and is
started again by the next connection.

The manager runs in a private mount namespace of its own (unshare -m), with
a private /run holding what systemd as PID 1 would have made there (the
"booted with systemd" marker and the inaccessible nodes that sandboxing
mounts over hidden paths), so nothing of the host's /run is touched. That
needs root; the units themselves are the configured ones, ExecStart=
pointing at the daemon just built.

Everything the sandboxed daemon must see lives outside /tmp and /var/tmp,
since PrivateTmp= gives the service empty ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from activation_kit import wait_until
from msbtest import RpcClient, RpcError
from msbtest.daemon import SANITIZER_MARKERS, build_dir, daemon_binary
from msbtest.imagekit import ImageKit

# The pull suite's registry harness: docker-registry on loopback.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pull"))
from registry_harness import Registry, push  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace for systemd --user needs root")

SYSTEMD = "/lib/systemd/systemd"
START_TIMEOUT_S = 30.0

# Prepares the private /run, then becomes the user manager. systemd as PID 1
# creates /run/systemd/system (sd_booted(3)) and the inaccessible nodes at
# boot; a user manager expects them.
MANAGER_SCRIPT = r"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/system
i=/run/systemd/inaccessible
mkdir -p "$i"
: > "$i/reg"; chmod 0 "$i/reg"
mkdir "$i/dir"; chmod 0 "$i/dir"
mkfifo -m 0 "$i/fifo"
mknod -m 0 "$i/chr" c 0 0
mknod -m 0 "$i/blk" b 0 0
/usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$i/sock"
chmod 0 "$i/sock"
if [ -n "$MSB_TEST_JOURNALD_PID" ]; then
        # A journald of our own, writing only to tmpfs.
        [ -d /var/log/journal ] && mount -t tmpfs tmpfs /var/log/journal
        /lib/systemd/systemd-journald </dev/null &
        echo $! > "$MSB_TEST_JOURNALD_PID"
        n=0
        while [ ! -S /run/systemd/journal/stdout ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
fi
unset MSB_TEST_JOURNALD_PID
exec "$0" --user
"""


def outside_tmp_root() -> Path:
    """A fresh directory the sandbox can see: not under /tmp or /var/tmp."""
    base = Path(os.environ.get("MSB_SYSTEMD_TEST_DIR") or Path.home() / ".cache" / "msb-imaged-tests")
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="user-manager-", dir=base)).resolve()
    for hidden in ("/tmp", "/var/tmp"):
        assert not str(root).startswith(hidden + "/"), f"{root} is hidden by PrivateTmp=; set MSB_SYSTEMD_TEST_DIR"
    return root


class UserManager:
    """`systemd --user` for a home and runtime directory under `root`."""

    def __init__(self, root: Path, exec_args: list[str] = (), journal: bool = False):
        for tool in ("unshare", "nsenter", "systemctl"):
            assert shutil.which(tool), f"{tool} is missing"
        assert Path(SYSTEMD).exists(), f"{SYSTEMD} is missing: install Debian's systemd package"
        assert daemon_binary().is_file(), f"{daemon_binary()} does not exist: build it or set MSB_BUILD_DIR"
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.runtime.mkdir(mode=0o700)
        self.unit_dir = self.home / ".config" / "systemd" / "user"
        self.unit_dir.mkdir(parents=True)
        self.log_path = root / "daemon.log"
        self.socket_path = self.runtime / "microsandbox" / "imaged.sock"
        self.store = self.home / ".local" / "share" / "microsandbox" / "images"

        # The daemon as built, copied where the sandbox can run it.
        (root / "bin").mkdir()
        self.binary = root / "bin" / "msb-imaged"
        shutil.copy2(daemon_binary(), self.binary)
        for name in ("msb-imaged.socket", "msb-imaged.service"):
            text = (build_dir() / "systemd" / name).read_text()
            if name.endswith(".service"):
                text, n = re.subn(r"^ExecStart=\S+/msb-imaged\b.*$",
                                  " ".join([f"ExecStart={self.binary}", *exec_args]), text, flags=re.M)
                assert n == 1
            (self.unit_dir / name).write_text(text)
        # Without a journald in the namespace, the daemon's output goes to
        # a file. In a sanitizer build, LeakSanitizer would stop the world with
        # ptrace(2), which the unit's system call filter refuses (a fatal
        # error at exit): leaks are checked by the suites outside the sandbox.
        dropin = self.unit_dir / "msb-imaged.service.d"
        dropin.mkdir()
        logging = "" if journal else f"StandardOutput=append:{self.log_path}\nStandardError=inherit\n"
        (dropin / "test.conf").write_text("[Service]\n" + logging +
                                          "Environment=ASAN_OPTIONS=detect_leaks=0:abort_on_error=1\n"
                                          "Environment=UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1\n")

        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "LANG": "C.UTF-8",
        }
        self.journald_pid_path = root / "journald.pid" if journal else None
        if journal:
            self.env["MSB_TEST_JOURNALD_PID"] = str(self.journald_pid_path)
        with open(root / "manager.log", "wb") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                          MANAGER_SCRIPT, SYSTEMD], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=root)
        wait_until(lambda: (self.runtime / "systemd" / "private").exists() or self.proc.poll() is not None,
                   START_TIMEOUT_S, "the user manager's private socket")
        assert self.proc.poll() is None, f"systemd --user exited:\n{self.manager_log()}"
        wait_until(lambda: self.systemctl("is-system-running", check=False).stdout.strip()
                   in ("running", "degraded"), START_TIMEOUT_S, "the user manager to finish starting")

    def manager_log(self) -> str:
        return (self.root / "manager.log").read_text(errors="replace")

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "systemctl", "--user", "--no-pager",
                              *args], env=self.env, capture_output=True, text=True, timeout=60)
        if check:
            assert res.returncode == 0, f"systemctl {' '.join(args)}: {res.stdout}{res.stderr}\n{self.diagnose()}"
        return res

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def diagnose(self) -> str:
        status = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "systemctl", "--user", "--no-pager",
                                 "status", "msb-imaged.socket", "msb-imaged.service"], env=self.env,
                                capture_output=True, text=True, timeout=60)
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"{status.stdout}{status.stderr}\n--- daemon log ---\n{log[-4000:]}"

    def wait_service(self, active: str, timeout: float = START_TIMEOUT_S) -> dict[str, str]:
        props = ("ActiveState", "SubState", "Result", "MainPID", "ExecMainStatus", "StatusText")
        try:
            return wait_until(lambda: (lambda p: p if p["ActiveState"] == active else None)(
                self.show("msb-imaged.service", *props)), timeout, f"msb-imaged.service to be {active}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose()}") from None

    def journal(self, *args: str) -> list[dict]:
        """The journal of the namespace's journald, as JSON entries."""
        res = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "journalctl", "--no-pager", "-o", "json",
                              *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.systemctl("stop", "msb-imaged.socket", "msb-imaged.service", check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The journald started for this manager, by its pid.
        if self.journald_pid_path and self.journald_pid_path.exists():
            try:
                os.kill(int(self.journald_pid_path.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture
def root():
    path = outside_tmp_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def manager_factory(root):
    made: list[UserManager] = []

    def make(exec_args: list[str] = (), journal: bool = False) -> UserManager:
        m = UserManager(root, exec_args, journal)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
    for m in made:
        log = m.log_path.read_text(errors="replace") if m.log_path.exists() else ""
        for marker in SANITIZER_MARKERS:
            assert marker not in log, f"sanitizer report in the daemon log:\n{log[-6000:]}"


def info(path: Path) -> dict:
    with RpcClient(path, timeout=60) as c:
        return c.call("system.info")


def proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def test_socket_starts_sandboxed_service(manager_factory):
    m = manager_factory(["--log-level", "debug"])
    m.systemctl("start", "msb-imaged.socket")

    # The socket exists as the unit says; nothing runs yet.
    st = m.socket_path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(m.socket_path.parent.stat().st_mode) == 0o700
    assert m.show("msb-imaged.service", "ActiveState")["ActiveState"] == "inactive"

    first = info(m.socket_path)
    props = m.wait_service("active")
    # Type=notify: "active (running)" only after READY=1, with the status line.
    assert props["SubState"] == "running"
    assert int(props["MainPID"]) == first["pid"]
    assert props["StatusText"].startswith("Serving ")
    assert first["socket_path"] == str(m.socket_path)
    assert first["store_path"] == str(m.store)
    assert (m.store / "index.db").is_file(), "the store was not written inside the sandbox"
    assert info(m.socket_path)["pid"] == first["pid"]

    # The sandbox is in force on the running daemon.
    status = proc_status(first["pid"])
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    # PrivateUsers=: a user namespace mapping only the user.
    assert Path(f"/proc/{first['pid']}/uid_map").read_text().split() == [str(os.getuid()), str(os.getuid()), "1"]
    root_mount = next(line.split() for line in Path(f"/proc/{first['pid']}/mountinfo").read_text().splitlines()
                      if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), root_mount

    # A stop is clean (SIGTERM, exit 0), and the socket starts a new daemon.
    m.systemctl("stop", "msb-imaged.service")
    props = m.show("msb-imaged.service", "ActiveState", "Result", "ExecMainStatus")
    assert (props["ActiveState"], props["Result"], props["ExecMainStatus"]) == ("inactive", "success", "0"), \
        m.diagnose()
    assert m.show("msb-imaged.socket", "ActiveState")["ActiveState"] == "active"
    second = info(m.socket_path)
    assert second["pid"] != first["pid"]
    assert int(m.wait_service("active")["MainPID"]) == second["pid"]

    # Stopping the socket removes it (RemoveOnStop=yes).
    m.systemctl("stop", "msb-imaged.socket", "msb-imaged.service")
    assert not m.socket_path.exists()


def test_load_inside_the_sandbox(manager_factory, root):
    """An archive under the home directory loads, and the rootfs it pins is
    in the store; /tmp is the service's own (PrivateTmp=), so a path there
    is not found."""
    m = manager_factory()
    m.systemctl("start", "msb-imaged.socket")
    kit = ImageKit(m.home / "images")
    img = kit.image("example.com/systemd/sandboxed:1", [{"etc/hello": b"hello from a sandbox\n"}])

    with RpcClient(m.socket_path, timeout=120) as c:
        handles = c.call("image.load", {"path": str(img.layout.path)})
        assert [h["reference"] for h in handles] == ["example.com/systemd/sandboxed:1"]
        assert handles[0]["manifest_digest"] == img.manifest_digest
        rootfs = c.call("pin.add", {"kind": "sandbox", "name": "box", "reference": "example.com/systemd/sandboxed:1"})
        for path in [rootfs["fsmeta_path"], rootfs["vmdk_path"], *(layer["path"] for layer in rootfs["layers"])]:
            assert path.startswith(str(m.store) + "/") and Path(path).is_file(), path

        with tempfile.TemporaryDirectory() as tmp:
            hidden = ImageKit(Path(tmp)).image("example.com/systemd/hidden:1", [{"x": b"x"}])
            with pytest.raises(RpcError):
                c.call("image.load", {"path": str(hidden.layout.path)})
    assert m.wait_service("active")["SubState"] == "running"


def test_exit_idle_and_restart_on_demand(manager_factory):
    idle_s = 1
    m = manager_factory(["--exit-idle", str(idle_s)])
    m.systemctl("start", "msb-imaged.socket")

    first = info(m.socket_path)
    m.wait_service("active")
    # No client left: the daemon exits by itself, successfully, and the
    # socket stays with the manager.
    props = m.wait_service("inactive", timeout=idle_s + 20)
    assert props["Result"] == "success" and props["ExecMainStatus"] == "0", m.diagnose()
    assert m.show("msb-imaged.socket", "ActiveState")["ActiveState"] == "active"

    # A client that connects while nothing runs waits and is answered.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(m.socket_path))
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
        s.settimeout(60)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, "connection closed without an answer"
            data += chunk
    finally:
        s.close()
    assert b'"pid":' in data
    second_pid = int(re.search(rb'"pid":(\d+)', data).group(1))
    assert second_pid != first["pid"]
    m.wait_service("inactive", timeout=idle_s + 20)


def test_journal_gets_priorities(manager_factory):
    """Under a real journald, each line lands with the priority its "<N>"
    prefix gives (debug is 7, not journald's default 6) and without the
    prefix or a timestamp of our own in the message."""
    m = manager_factory(["--log-level", "debug"], journal=True)
    m.systemctl("start", "msb-imaged.socket")
    pid = info(m.socket_path)["pid"]
    m.wait_service("active")
    m.systemctl("stop", "msb-imaged.service")

    def ours():
        entries = [e for e in m.journal("-t", "msb-imaged") if e.get("_PID") == str(pid)]
        return entries if any("shutting down" in e.get("MESSAGE", "") for e in entries) else None

    entries = wait_until(ours, 20, "the daemon's lines in the journal")
    for e in entries:
        assert not e["MESSAGE"].startswith("<"), e["MESSAGE"]
        assert not re.match(r"\d{4}-\d\d-\d\dT", e["MESSAGE"]), e["MESSAGE"]
    by_priority = {}
    for e in entries:
        by_priority.setdefault(e["PRIORITY"], []).append(e["MESSAGE"])
    # Info and debug lines both, told apart: without the prefixes journald
    # would file everything under its default, 6.
    assert {"6", "7"} <= set(by_priority), by_priority
    assert set(by_priority) <= {"3", "4", "5", "6", "7"}, by_priority


def test_pull_inside_the_sandbox(manager_factory, tmp_path):
    """A pull from a registry on loopback works through the unit's address
    family and system call filters, and writes the store."""
    m = manager_factory()
    m.systemctl("start", "msb-imaged.socket")
    kit = ImageKit(tmp_path / "images")
    img = kit.image("pulled:v1", [{"etc/pulled": b"pulled into a sandbox\n"}, {"etc/second": b"2\n"}])
    with Registry(tmp_path / "registry") as reg:
        ref = f"{reg.host}/systemd/pulled:v1"
        push(img.layout.path, "pulled:v1", ref)
        with RpcClient(m.socket_path, timeout=120) as c:
            handle = c.call("image.pull", {"reference": ref})
            assert handle["manifest_digest"] == img.manifest_digest
            assert handle["layer_count"] == 2
            detail = c.call("image.inspect", {"reference": ref})
            assert [layer["diff_id"] for layer in detail["layers"]] == img.diff_ids
    for diff_id in img.diff_ids:
        assert (m.store / "layers" / "sha256" / (diff_id.split(":")[1] + ".erofs")).stat().st_size > 0
    assert m.wait_service("active")["SubState"] == "running"
