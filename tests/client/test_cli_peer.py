"""msb-image against a peer that says odd but well-formed things: how the
pull display copes with layer counts over PULL_LAYERS_MAX, positions out of
range, unknown events and zero totals, and how the prune prompt treats an
answer longer than PRUNE_ANSWER_MAX. The real daemon's behaviour is covered
by test_cli.py; these are the edges a daemon does not produce on demand.

The peer is a real Unix socket served by a thread: it reads a request,
checks it is a JSON-RPC 2.0 request for the expected method, and writes the
scripted lines; then the next request of the script, if any.
"""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from clitool import run, run_pty

HANDLE = {"reference": "example.com/a:1", "manifest_digest": "sha256:" + "ab" * 32, "architecture": "amd64",
          "os": "linux", "layer_count": 1, "size_bytes": 10, "created_at": 1, "last_used_at": 2}


class Peer:
    """Serves one connection: for each (method, lines) of the script, reads
    a request and answers with the lines. Peer(path, method, lines) is a
    script of one request."""

    def __init__(self, path, method, lines=None, *, script=None):
        self.path = str(path)
        self.script = script if script is not None else [(method, lines)]
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            f = conn.makefile("rb")
            for _method, lines in self.script:
                line = f.readline()
                if not line:
                    return
                self.requests.append(json.loads(line))
                rid = self.requests[-1]["id"]
                for line in lines:
                    conn.sendall(json.dumps(line(rid) if callable(line) else line).encode() + b"\n")
            # Wait for the client to hang up.
            while conn.recv(4096):
                pass

    def close(self):
        self.thread.join(timeout=10)
        self.sock.close()
        assert [r["jsonrpc"] for r in self.requests] == ["2.0"] * len(self.script)
        assert [r["method"] for r in self.requests] == [method for method, _ in self.script]


def progress(**params):
    return lambda rid: {"jsonrpc": "2.0", "method": "image.pull.progress", "params": {"id": rid, **params}}


def result(value):
    return lambda rid: {"jsonrpc": "2.0", "id": rid, "result": value}


@pytest.mark.parametrize("layer_count", [0, 257, 10**12, -5])
def test_pull_display_ignores_absurd_layer_counts(short_tmp, layer_count):
    peer = Peer(short_tmp / "p.sock", "image.pull", [
        progress(event="resolving", reference="example.com/a:1"),
        progress(event="resolved", manifest_digest=HANDLE["manifest_digest"], layer_count=layer_count,
                 total_bytes=10),
        progress(event="layer-download", position=0, digest="sha256:" + "cd" * 32, downloaded_bytes=5,
                 total_bytes=10),
        progress(event="layer-converted", position=3, digest="sha256:" + "cd" * 32, diff_id="sha256:00",
                 erofs_size_bytes=4096),
        result(HANDLE),
    ])
    rc, out = run_pty("pull", "example.com/a:1", socket=peer.path, timeout=30)
    peer.close()
    assert rc == 0, out
    assert f"Resolved {HANDLE['manifest_digest']}: {layer_count} layer" in out
    assert out.rstrip().endswith(f"Pulled example.com/a:1 ({HANDLE['manifest_digest']})")


def test_pull_display_edges(short_tmp):
    digest = "sha256:" + "cd" * 32
    peer = Peer(short_tmp / "p.sock", "image.pull", [
        progress(event="resolved", manifest_digest=HANDLE["manifest_digest"], layer_count=2, total_bytes=0),
        # A zero total: no division by zero, an empty bar.
        progress(event="layer-download", position=0, digest=digest, downloaded_bytes=0, total_bytes=0),
        # More than the total: the bar stops full.
        progress(event="layer-download", position=1, digest="sha256:" + "ef" * 32, downloaded_bytes=50,
                 total_bytes=10),
        # Out of range, negative, an event from a later protocol: ignored.
        progress(event="layer-download", position=2, digest=digest, downloaded_bytes=1, total_bytes=2),
        progress(event="layer-cached", position=-1, digest=digest),
        progress(event="teleported", position=0),
        # Progress of another request on this connection is not ours.
        lambda rid: {"jsonrpc": "2.0", "method": "image.pull.progress",
                     "params": {"id": rid + 1, "event": "layer-cached", "position": 0, "digest": digest}},
        progress(event="layer-converted", position=0, digest=digest, diff_id="sha256:00", erofs_size_bytes=8192),
        result(HANDLE),
    ])
    rc, out = run_pty("pull", "example.com/a:1", socket=peer.path, timeout=30)
    peer.close()
    assert rc == 0, out
    assert f"{'cd' * 6}: [>{' ' * 29}] 0 B / 0 B" in out
    assert f"{'ef' * 6}: [{'=' * 30}] 50 B / 10 B" in out
    assert f"{'cd' * 6}: done (EROFS 8.0 KiB)" in out
    assert "already cached" not in out


def test_pull_plain_edges(short_tmp):
    peer = Peer(short_tmp / "p.sock", "image.pull", [
        progress(event="resolving", reference="example.com/a:1"),
        progress(event="teleported"),
        progress(event="fsmeta", size_bytes=4096),
        progress(event="vmdk"),
        result(HANDLE),
    ])
    r = run("pull", "example.com/a:1", socket=peer.path)
    peer.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Resolving example.com/a:1", "Wrote fsmeta (4.0 KiB)", "Wrote VMDK descriptor",
                                     f"Pulled example.com/a:1 ({HANDLE['manifest_digest']})"]


def test_pull_answer_of_wrong_shape(short_tmp):
    peer = Peer(short_tmp / "p.sock", "image.pull", [result({"reference": 5})])
    r = run("pull", "example.com/a:1", socket=peer.path)
    peer.close()
    assert r.returncode == 1
    assert r.stderr == ("msb-image: cannot pull example.com/a:1: "
                        "msb-imaged sent an answer this client does not understand\n")


def test_ls_when_the_daemon_hangs_up(short_tmp):
    path = short_tmp / "p.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)

    def serve():
        conn, _ = s.accept()
        conn.makefile("rb").readline()
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = run("ls", socket=path)
    t.join(10)
    s.close()
    # A daemon that went away is "unreachable", not a refusal.
    assert r.returncode == 4
    assert r.stderr.startswith("msb-image: cannot list images: the connection to msb-imaged was lost")


def error(code, name, message):
    return lambda rid: {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message,
                                                               "data": {"name": name}}}


def test_shutting_down_is_unreachable(short_tmp):
    peer = Peer(short_tmp / "p.sock", "image.list", [error(1016, "shutting-down", "the daemon is shutting down")])
    r = run("ls", socket=peer.path)
    peer.close()
    assert r.returncode == 4
    assert r.stderr == "msb-image: cannot list images: the daemon is shutting down\n"


def test_rm_stops_when_the_daemon_goes(short_tmp):
    """The first reference is removed, the connection breaks during the
    second: 4, and the third is not tried (the connection is gone)."""
    path = short_tmp / "p.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    seen = []

    def serve():
        conn, _ = s.accept()
        f = conn.makefile("rb")
        seen.append(json.loads(f.readline()))
        conn.sendall(json.dumps({"jsonrpc": "2.0", "id": seen[0]["id"], "result": None}).encode() + b"\n")
        seen.append(json.loads(f.readline()))
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = run("rm", "example.com/a:1", "example.com/b:1", "example.com/c:1", socket=path)
    t.join(10)
    s.close()
    assert r.returncode == 4
    assert r.stdout == "Removed example.com/a:1\n"
    assert r.stderr.startswith("msb-image: cannot remove example.com/b:1: the connection to msb-imaged was lost")
    assert [q["params"]["reference"] for q in seen] == ["example.com/a:1", "example.com/b:1"]


# PRUNE_ANSWER_MAX (16 bytes with the newline): a longer answer is a no,
# even one that starts with y, and the daemon is never asked.
@pytest.mark.parametrize("answer", [b"y" * 40 + b"\n", b"yes please, go on\n", b"no\n", b"Y E S\n"])
def test_prune_prompt_long_or_other_answers_are_no(short_tmp, answer):
    path = short_tmp / "never-asked.sock"
    rc, out = run_pty("prune", socket=path, answer=answer, timeout=30)
    assert rc == 1, out
    assert "Nothing removed." in out
    assert "cannot connect" not in out


@pytest.mark.parametrize("answer", [b"y\n", b"yes\n", b"Y\n", b"YES\n"])
def test_prune_prompt_yes_answers(short_tmp, answer):
    kept = dict(HANDLE, reference="example.com/kept:1")
    peer = Peer(short_tmp / "p.sock", None, script=[
        ("image.list", [result([HANDLE, kept])]),
        ("image.prune", [result({"image_refs_removed": 3, "manifests_removed": 2, "layers_removed": 5,
                                 "fsmeta_removed": 2, "vmdk_removed": 2, "bytes_reclaimed": None})]),
        ("image.list", [result([kept])]),
    ])
    rc, out = run_pty("prune", socket=peer.path, answer=answer, timeout=30)
    peer.close()
    assert rc == 0, out
    # The references removed are those listed before and not after.
    assert "Removed example.com/a:1\r\n" in out
    assert "kept" not in out
    assert "References removed:  3" in out
    assert "Layers removed:      5" in out
    # null: nothing was measured.
    assert "Space reclaimed:     -" in out


def _layers_pull(n):
    digests = [f"sha256:{i:02x}" + "0" * 62 for i in range(n)]
    lines = [progress(event="resolved", manifest_digest=HANDLE["manifest_digest"], layer_count=n, total_bytes=n)]
    for i, d in enumerate(digests):
        lines += [progress(event="layer-download", position=i, digest=d, downloaded_bytes=1, total_bytes=2**40),
                  progress(event="layer-downloaded", position=i, digest=d),
                  progress(event="layer-converted", position=i, digest=d, diff_id=d, erofs_size_bytes=4096)]
    return lines + [result(HANDLE)]


def test_pull_more_layers_than_rows_prints_steps(short_tmp):
    """The live view cannot move above the screen: with more layers than
    the terminal has rows, each step is a line of its own instead."""
    peer = Peer(short_tmp / "p.sock", "image.pull", _layers_pull(6))
    rc, out = run_pty("pull", "example.com/a:1", socket=peer.path, timeout=30, size=(6, 80))
    peer.close()
    assert rc == 0, out
    assert "\x1b[" not in out
    for i in range(6):
        assert f"Layer {i + 1}/6 {i:02x}0000000000: converted (EROFS 4.0 KiB)" in out


def test_pull_lines_fit_the_terminal_width(short_tmp):
    peer = Peer(short_tmp / "p.sock", "image.pull", _layers_pull(2))
    rc, out = run_pty("pull", "example.com/a:1", socket=peer.path, timeout=30, size=(24, 40))
    peer.close()
    assert rc == 0, out
    drawn = re.findall(r"\x1b\[2K([^\r\n]*)", out)
    assert drawn, out
    # The bar line (12 + 3 + 30 + ...) would be 60 columns; it is cut to 39.
    assert max(len(l) for l in drawn) == 39
    assert any(l.startswith("000000000000: [") for l in drawn)


# Digest references are the daemon's to resolve: the CLI sends them as typed.
DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("args,method,answer,status", [
    (["inspect", DIGEST], "image.inspect", error(1001, "image-not-found", "no image"), 3),
    (["exists", DIGEST[7:19]], "image.get", result(HANDLE), 0),
    (["exists", DIGEST], "image.get", error(1001, "image-not-found", "no image"), 1),
    (["rm", DIGEST[7:27]], "image.remove", result(None), 0),
    (["pin", "add", "sandbox", "s", DIGEST], "pin.add", error(1001, "image-not-found", "no image"), 3),
])
def test_digest_references_pass_through(short_tmp, args, method, answer, status):
    peer = Peer(short_tmp / "p.sock", method, [answer])
    r = run(*args, socket=peer.path)
    peer.close()
    assert r.returncode == status, r.stderr
    assert peer.requests[0]["params"]["reference"] == args[-1]


def test_ls_filter_by_digest_passes_through(short_tmp):
    peer = Peer(short_tmp / "p.sock", None, script=[
        ("image.get", [result(dict(HANDLE, created_at=5))]),
        ("image.list", [result([dict(HANDLE, reference="example.com/new:1", created_at=9), HANDLE])]),
    ])
    r = run("ls", "-q", "--filter", f"since={DIGEST[7:19]}", socket=peer.path)
    peer.close()
    assert (r.returncode, r.stdout) == (0, "example.com/new:1\n")
    assert peer.requests[0]["params"] == {"reference": DIGEST[7:19]}


# References of every shape the daemon lists: docker's familiar form drops
# docker.io/ and docker.io/library/ only; a registry port is not a tag.
FORMS = [
    ("docker.io/library/alpine@" + DIGEST, "alpine", "<none>"),
    ("localhost:5000/app:1", "localhost:5000/app", "1"),
    ("docker.io/user/app:latest", "user/app", "latest"),
    ("docker.io/library/ns/app:2", "library/ns/app", "2"),
    ("registry.example/ns/deep/app:3.1-rc", "registry.example/ns/deep/app", "3.1-rc"),
]


def ls_peer(short_tmp, *args):
    path = short_tmp / "p.sock"
    peer = Peer(path, "image.list", [result([dict(HANDLE, reference=ref) for ref, _, _ in FORMS])])
    r = run("ls", *args, socket=path)
    peer.close()
    path.unlink()
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_ls_reference_forms(short_tmp):
    assert ls_peer(short_tmp, "--format", "{{.Repository}}|{{.Tag}}") == [f"{repo}|{tag}" for _, repo, tag in FORMS]


@pytest.mark.parametrize("pattern,expected", [
    ("alpine", [0]),
    ("alpine@sha256:*", [0]),
    ("localhost:5000/*", [1]),
    ("localhost:5000/app:1", [1]),
    ("user/app", [2]),
    ("*/app", [1, 2]),
    ("library/ns/app", [3]),
    ("registry.example/ns/*/app:3.*", [4]),
])
def test_ls_reference_filter_forms(short_tmp, pattern, expected):
    assert ls_peer(short_tmp, "-q", "--filter", f"reference={pattern}") == [FORMS[i][0] for i in expected]
