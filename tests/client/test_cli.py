"""msb-image, the CLI, run as a program against the real daemon.

Images are real OCI layouts and archives built by the msbtest image kit and
loaded into the daemon; expected values come from those bytes (the kit's
truth) or from the daemon's own JSON-RPC answers, never from constants.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from clitool import CLI_TIMEOUT_S, Events, cli_binary, human, run, run_pty, short
from msbtest import RpcError
from msbtest.imagekit import Config

COMMANDS = ["ls", "images", "inspect", "exists", "rm", "prune", "pull", "load", "pin", "df", "info", "events"]

# The exit statuses of msb-image(1), EXIT STATUS.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_EXISTS_ERROR = range(6)


# Fixtures ------------------------------------------------------------------


@pytest.fixture
def app(imagekit):
    """A two-layer image with a full config, as an OCI layout."""
    return imagekit.image("example.com/test/app:v1",
                          layers=[{"etc/hello": b"hello from layer one\n", "bin/tool": b"#!/bin/sh\necho t\n"},
                                  {"etc/motd": b"second layer\n"}],
                          config=Config(env=["A=1", "PATH=/usr/bin:/bin"], cmd=["sh", "-c", "echo hi"],
                                        entrypoint=["/bin/tool"], working_dir="/srv", user="1000:1000",
                                        labels={"org.example.k": "v", "two": "2"}, stop_signal="SIGINT"))


@pytest.fixture
def other(imagekit):
    """A second, one-layer image."""
    return imagekit.image("example.com/test/other:v2", layers=[{"etc/other": b"other image\n" * 300}],
                          config=Config(cmd=["cat", "/etc/other"]))


@pytest.fixture
def loaded(daemon, rpc, app):
    r = run("load", app.layout.path, socket=daemon.socket_path)
    assert r.returncode == 0, r.stderr
    return app


def sock(daemon):
    return daemon.socket_path


# Global options, help, usage errors -----------------------------------------


def test_version(daemon, rpc):
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout == f"msb-image {rpc.call('system.info')['version']}\n"
    assert r.stderr == ""


def test_output_write_failure_is_an_error(daemon, rpc, loaded):
    with open("/dev/full", "w") as full:
        for args in (["ls"], ["ls", "--format", "json"], ["inspect", "example.com/test/app:v1"], ["--version"]):
            r = subprocess.run([str(cli_binary()), "--socket", str(daemon.socket_path), *args], stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT_S)
            assert r.returncode == 1, args
            assert r.stderr == "msb-image: cannot write the output: No space left on device\n"


def test_help_lists_every_command():
    for args in (["--help"], ["-h"]):
        r = run(*args)
        assert r.returncode == 0
        assert r.stdout.startswith("Usage: msb-image ")
        for cmd in COMMANDS:
            assert re.search(rf"^  {cmd}\b|, {cmd}\b", r.stdout, re.M), cmd


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_help(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0, r.stderr
    canonical = {"images": "ls"}.get(cmd, cmd)
    assert r.stdout.startswith(f"Usage: msb-image {canonical}")
    assert "--socket" in r.stdout
    assert r.stderr == ""
    # -h is the same.
    assert run(cmd, "-h").stdout == r.stdout


@pytest.mark.parametrize("args,message", [
    ([], "missing command"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["--bogus"], "unrecognized option"),
    (["ls", "--bogus"], "unrecognized option"),
    (["ls", "extra"], "unexpected argument 'extra'"),
    (["ls", "--format", "yaml"], "unknown format 'yaml'"),
    (["ls", "-q", "--format", "json"], "exclude each other"),
    (["inspect"], "missing image reference"),
    (["inspect", "a", "b"], "unexpected argument 'b'"),
    (["inspect", "--format", "xml", "a"], "unknown format"),
    (["rm"], "missing image reference"),
    (["prune", "now"], "unexpected argument"),
    (["pull"], "missing image reference"),
    (["pull", "--policy", "sometimes", "alpine"], "unknown policy 'sometimes'"),
    (["load", "a", "b"], "unexpected argument"),
    (["load", "-i", "a", "b"], "as PATH or with -i, not both"),
    (["pin"], "missing subcommand"),
    (["pin", "frob"], "unknown subcommand 'frob'"),
    (["pin", "add", "sandbox", "x"], "pin add KIND NAME REFERENCE"),
    (["pin", "add", "volume", "x", "alpine"], "unknown pin kind 'volume'"),
    (["pin", "rm", "sandbox"], "pin rm KIND NAME"),
    (["pin", "ls", "extra"], "pin ls"),
    (["pin", "rm", "--format", "json", "sandbox", "x"], "pin rm has no output to format"),
    (["pin", "ls", "--format", "yaml"], "unknown format"),
    (["prune", "--format", "yaml"], "unknown format"),
    (["df", "--format", "yaml"], "unknown format"),
    (["rm", "--bogus", "x"], "unrecognized option"),
    (["df", "x"], "unexpected argument"),
    (["info", "--format", "csv"], "unknown format"),
    (["--socket"], "requires an argument"),
    (["exists"], "missing image reference"),
    (["exists", "a", "b"], "unexpected argument 'b'"),
    (["ls", "--filter", "label=x"], "unknown filter 'label' (use reference, before or since)"),
    (["ls", "--filter", "reference"], "--filter needs KEY=VALUE, not 'reference'"),
    (["ls", "-f", "since="], "--filter needs KEY=VALUE"),
    (["ls", "--format", "{{.Nope}}"], "unknown field '.Nope' in --format (fields: .Reference .Repository"),
    (["ls", "--format", "table {{.ID}}\\t{{.Config}}"], "unknown field '.Config'"),
    (["ls", "--format", "{{range .}}{{.ID}}{{end}}"], "unsupported template action '{{range .}}'"),
    (["ls", "--format", "{{ .ID "], "unterminated '{{' in --format"),
    (["ls", "--format", "{{json}}"], "unsupported template action '{{json}}'"),
    (["ls", "--format", "{{.ID | printf}}"], "unsupported template action"),
    (["ls", "-q", "--format", "{{.ID}}"], "-q and --format TEMPLATE exclude each other"),
    (["inspect", "--format", "{{.Config.Nope}}", "a"], "unknown field '.Config.Nope'"),
    (["inspect", "--format", "{{.ID}}", "a"], "unknown field '.ID' in --format (fields: .Id "),
])
def test_usage_errors_exit_2(args, message, tmp_path):
    # A socket that does not exist: usage errors are found before connecting.
    r = run(*args, env=dict(os.environ, MSB_IMAGED_SOCKET=str(tmp_path / "none.sock")))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert r.stdout == ""
    assert "--help" in r.stderr


# A missing daemon ------------------------------------------------------------


@pytest.mark.parametrize("args", [["ls"], ["images"], ["inspect", "alpine"], ["rm", "alpine"], ["prune", "-y"],
                                  ["pull", "alpine"], ["load", "/"], ["pin", "ls"], ["df"], ["info"],
                                  ["exists", "alpine"]])
def test_daemon_absent(args, tmp_path):
    path = tmp_path / "nobody-home.sock"
    r = run(*args, socket=path)
    assert r.returncode == EXIT_UNREACHABLE
    assert r.stdout == ""
    assert r.stderr.startswith(f"msb-image: cannot connect to msb-imaged at {path}: No such file or directory\n")
    assert "'msb-imaged'" in r.stderr
    assert "systemctl --user start msb-imaged.socket" in r.stderr


def test_daemon_absent_default_socket(tmp_path):
    """Without --socket the path comes from XDG_RUNTIME_DIR, as the daemon's."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("MSB_IMAGED_SOCKET", None)
    r = run("ls", env=env)
    assert r.returncode == EXIT_UNREACHABLE
    assert f"at {tmp_path}/microsandbox/imaged.sock:" in r.stderr
    env.pop("XDG_RUNTIME_DIR")
    r = run("ls", env=env)
    assert f"at /tmp/microsandbox-{os.getuid()}/imaged.sock:" in r.stderr or r.returncode == 0


def test_stale_socket_refused(tmp_path):
    import socket as pysocket
    path = tmp_path / "stale.sock"
    s = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound, never listened: connect is refused
    r = run("info", socket=path)
    assert r.returncode == EXIT_UNREACHABLE
    assert "Connection refused" in r.stderr
    assert "systemctl --user start msb-imaged.socket" in r.stderr


def test_socket_discovery(daemon, rpc, tmp_path):
    env = dict(os.environ, MSB_IMAGED_SOCKET=str(daemon.socket_path))
    r = run("info", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == daemon.pid

    # $XDG_RUNTIME_DIR/microsandbox/imaged.sock, reached through a symlink.
    (tmp_path / "microsandbox").mkdir()
    (tmp_path / "microsandbox" / "imaged.sock").symlink_to(daemon.socket_path)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("MSB_IMAGED_SOCKET", None)
    r = run("info", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == daemon.pid

    # --socket after the command name works too, and wins over the env.
    env = dict(os.environ, MSB_IMAGED_SOCKET=str(tmp_path / "wrong.sock"))
    r = run("info", "--socket", daemon.socket_path, "--format", "json", env=env)
    assert r.returncode == 0, r.stderr


def test_daemon_stops_between_commands(daemon, rpc):
    assert run("ls", socket=sock(daemon)).returncode == 0
    daemon.stop()
    r = run("ls", socket=sock(daemon))
    assert r.returncode == EXIT_UNREACHABLE
    assert "cannot connect to msb-imaged" in r.stderr


# ls ---------------------------------------------------------------------------


def test_ls_empty(daemon, rpc):
    r = run("ls", socket=sock(daemon))
    assert (r.returncode, r.stdout, r.stderr) == (0, "No images found.\n", "")
    r = run("ls", "-q", socket=sock(daemon))
    assert (r.returncode, r.stdout) == (0, "")
    r = run("ls", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0
    assert json.loads(r.stdout) == []


def test_ls_table(daemon, rpc, app, other):
    for img in (app, other):
        assert run("load", img.layout.path, socket=sock(daemon)).returncode == 0
        time.sleep(0.01)  # distinct created_at, so the order is defined
    r = run("ls", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert run("ls", "--format", "table", socket=sock(daemon)).stdout == r.stdout
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"REFERENCE +DIGEST +SIZE +CREATED +LAST USED", lines[0])
    # Columns line up: every row starts its fields where the header does.
    starts = [lines[0].index(h) for h in ("DIGEST", "SIZE", "CREATED", "LAST USED")]
    handles = rpc.call("image.list")
    # Newest first: other was loaded last.
    assert [h["reference"] for h in handles] == ["example.com/test/other:v2", "example.com/test/app:v1"]
    truth = {"example.com/test/app:v1": app, "example.com/test/other:v2": other}
    assert len(lines) == 1 + len(handles)
    for line, h in zip(lines[1:], handles):
        img = truth[h["reference"]]
        assert line.startswith(h["reference"] + " ")
        assert line[starts[0]:].split()[0] == short(img.manifest_digest)
        size = human(img.size_bytes)
        assert line[starts[1]:starts[2]].strip() == size
        assert re.fullmatch(r"just now|\d+ seconds? ago", line[starts[2]:starts[3]].strip())
        assert re.fullmatch(r"just now|\d+ seconds? ago", line[starts[3]:].strip())


def test_ls_json_field_by_field(daemon, rpc, app, other):
    for img in (app, other):
        assert run("load", img.layout.path, socket=sock(daemon)).returncode == 0
    r = run("ls", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == rpc.call("image.list")
    by_ref = {h["reference"]: h for h in out}
    for ref, img in (("example.com/test/app:v1", app), ("example.com/test/other:v2", other)):
        h = by_ref[ref]
        assert set(h) == {"reference", "manifest_digest", "architecture", "os", "layer_count", "size_bytes",
                          "created_at", "last_used_at"}
        assert h["manifest_digest"] == img.manifest_digest
        assert h["architecture"] == img.architecture
        assert h["os"] == img.os
        assert h["layer_count"] == img.layer_count
        assert h["size_bytes"] == img.size_bytes
        assert isinstance(h["created_at"], (int, float)) and h["created_at"] > 0
        assert h["last_used_at"] >= h["created_at"]
    # `images` is the same command.
    r2 = run("images", "--format", "json", socket=sock(daemon))
    assert json.loads(r2.stdout) == out


def test_ls_quiet(daemon, rpc, app, other):
    for img in (app, other):
        assert run("load", img.layout.path, socket=sock(daemon)).returncode == 0
    r = run("ls", "-q", socket=sock(daemon))
    assert r.returncode == 0
    assert r.stdout.splitlines() == [h["reference"] for h in rpc.call("image.list")]
    assert run("ls", "--quiet", socket=sock(daemon)).stdout == r.stdout


@pytest.fixture
def three(daemon, rpc, app, other):
    """app, then other, then app again as alpine:9.9 (docker.io/library/),
    each stored a little after the one before, so that created_at orders
    them. Returns the handles, newest first, as the daemon lists them."""
    for path, tag in ((app.layout.path, None), (other.layout.path, None), (app.layout.path, "alpine:9.9")):
        params = {"path": str(path), **({"tag": tag} if tag else {})}
        rpc.call("image.load", params)
        time.sleep(0.02)
    handles = rpc.call("image.list")
    assert [h["reference"] for h in handles] == ["docker.io/library/alpine:9.9", "example.com/test/other:v2",
                                                 "example.com/test/app:v1"]
    assert handles[0]["created_at"] > handles[1]["created_at"] > handles[2]["created_at"]
    return handles


def refs(r):
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


ALPINE, OTHER, APP = "docker.io/library/alpine:9.9", "example.com/test/other:v2", "example.com/test/app:v1"


@pytest.mark.parametrize("filters,expected", [
    # Docker's familiar form and the name without its tag match, as well as
    # the canonical reference.
    (["reference=alpine"], [ALPINE]),
    (["reference=alpine:*"], [ALPINE]),
    (["reference=alpine:9.?"], [ALPINE]),
    (["reference=docker.io/library/alpine"], [ALPINE]),
    (["reference=docker.io/library/alpine:9.9"], [ALPINE]),
    (["reference=example.com/test/*"], [OTHER, APP]),
    (["reference=*/*/app:v[0-9]"], [APP]),
    # '*' does not cross '/'.
    (["reference=example.com/*"], []),
    (["reference=*app*"], []),
    # A repeated reference= matches any of its patterns.
    (["reference=example.com/test/app", "reference=alpine"], [ALPINE, APP]),
    (["reference=nothing*"], []),
])
def test_ls_filter_reference(daemon, three, filters, expected):
    args = [a for f in filters for a in ("--filter", f)]
    assert refs(run("ls", "-q", *args, socket=sock(daemon))) == expected
    table = run("ls", *args, socket=sock(daemon))
    assert table.returncode == 0
    if not expected:
        assert table.stdout == "No images found.\n"
    else:
        assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == expected


@pytest.mark.parametrize("filters,expected", [
    (["before=example.com/test/other:v2"], [APP]),
    (["before=alpine:9.9"], [OTHER, APP]),
    (["before=example.com/test/app:v1"], []),
    (["since=example.com/test/app:v1"], [ALPINE, OTHER]),
    (["since=docker.io/library/alpine:9.9"], []),
    # Different keys must all match; each bound holds.
    (["since=example.com/test/app:v1", "before=alpine:9.9"], [OTHER]),
    (["before=alpine:9.9", "before=example.com/test/other:v2"], [APP]),
    (["reference=example.com/test/*", "since=example.com/test/app:v1"], [OTHER]),
    (["-f", "reference=alpine", "since=example.com/test/app:v1"], [ALPINE]),
])
def test_ls_filter_before_since(daemon, three, filters, expected):
    args = []
    for f in filters:
        if f != "-f":
            args += ["--filter", f]
    assert refs(run("ls", "-q", *args, socket=sock(daemon))) == expected
    # The JSON output is the daemon's handles of the same images.
    r = run("ls", "--format", "json", *args, socket=sock(daemon))
    assert json.loads(r.stdout) == [h for h in three if h["reference"] in expected]


def test_ls_filter_unknown_reference(daemon, three):
    r = run("ls", "--filter", "since=example.com/none:1", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stdout == ""
    assert r.stderr.startswith("msb-image: cannot filter since=example.com/none:1: ")
    r = run("ls", "--filter", "before=Bad::Ref", socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert "invalid reference" in r.stderr


def test_ls_no_trunc(daemon, rpc, three):
    digests = [h["manifest_digest"] for h in three]
    short_table = run("ls", socket=sock(daemon)).stdout.splitlines()[1:]
    assert [line.split()[1] for line in short_table] == [short(d) for d in digests]
    full = run("ls", "--no-trunc", socket=sock(daemon))
    assert full.returncode == 0
    lines = full.stdout.splitlines()
    assert re.fullmatch(r"REFERENCE +DIGEST +SIZE +CREATED +LAST USED", lines[0])
    assert [line.split()[1] for line in lines[1:]] == digests
    # {{.ID}} truncates as the table does; {{.Digest}} is always whole.
    assert refs(run("ls", "--format", "{{.ID}}", socket=sock(daemon))) == [short(d) for d in digests]
    assert refs(run("ls", "--no-trunc", "--format", "{{.ID}}", socket=sock(daemon))) == digests
    assert refs(run("ls", "--format", "{{.Digest}}", socket=sock(daemon))) == digests


LS_FIELDS = ["Reference", "Repository", "Tag", "Digest", "ID", "Size", "SizeBytes", "CreatedAt", "CreatedSince",
             "LastUsedAt", "LastUsedSince", "Architecture", "Os", "Layers"]


def utc(ms):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms // 1000))


def test_ls_format_template(daemon, three):
    template = "{{.Repository}}|{{ .Tag }}|{{.ID}}|{{.Size}}|{{.SizeBytes}}|{{.Layers}}|{{.Os}}/{{.Architecture}}"
    lines = refs(run("ls", "--format", template, socket=sock(daemon)))
    familiar = {ALPINE: ("alpine", "9.9"), OTHER: ("example.com/test/other", "v2"),
                APP: ("example.com/test/app", "v1")}
    assert lines == [f"{familiar[h['reference']][0]}|{familiar[h['reference']][1]}|{short(h['manifest_digest'])}|"
                     f"{human(h['size_bytes'])}|{h['size_bytes']}|{h['layer_count']}|{h['os']}/{h['architecture']}"
                     for h in three]
    lines = refs(run("ls", "--format", "{{.Reference}} {{.CreatedAt}} {{.LastUsedAt}} {{.CreatedSince}}",
                     socket=sock(daemon)))
    for line, h in zip(lines, three):
        assert line.startswith(f"{h['reference']} {utc(h['created_at'])} {utc(h['last_used_at'])} ")
        assert re.fullmatch(r"just now|\d+ seconds? ago", line.split(" UTC ")[-1])
    # \t and \n are a tab and a newline, as for docker.
    r = run("ls", "--filter", "reference=alpine", "--format", "{{.Repository}}\\t{{.Tag}}\\n", socket=sock(daemon))
    assert r.stdout == "alpine\t9.9\n\n"


def test_ls_format_json_object(daemon, three):
    """{{json .}} prints every field a template can name, one object a line;
    --format json stays the daemon's list."""
    objects = [json.loads(line) for line in refs(run("ls", "--format", "{{json .}}", socket=sock(daemon)))]
    assert [list(o) for o in objects] == [LS_FIELDS] * 3
    for o, h in zip(objects, three):
        assert o["Reference"] == h["reference"]
        assert o["Digest"] == h["manifest_digest"]
        assert o["SizeBytes"] == h["size_bytes"]
        # Each field is what {{.Field}} prints.
        line = refs(run("ls", "--filter", f"reference={h['reference']}", "--format",
                        "|".join("{{.%s}}" % f for f in LS_FIELDS), socket=sock(daemon)))
        assert line == ["|".join(str(o[f]) for f in LS_FIELDS)]
    assert json.loads(run("ls", "--format", "json", socket=sock(daemon)).stdout) == three


def test_ls_format_table_template(daemon, three):
    r = run("ls", "--format", "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.Size}}", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +IMAGE ID +SIZE", lines[0])
    starts = [lines[0].index(h) for h in ("TAG", "IMAGE ID", "SIZE")]
    assert [l[:starts[0]].rstrip() for l in lines[1:]] == ["alpine", "example.com/test/other", "example.com/test/app"]
    assert [l[starts[0]:starts[1]].rstrip() for l in lines[1:]] == ["9.9", "v2", "v1"]
    assert [l[starts[1]:starts[2]].rstrip() for l in lines[1:]] == [short(h["manifest_digest"]) for h in three]
    assert [l[starts[2]:] for l in lines[1:]] == [human(h["size_bytes"]) for h in three]
    # An empty cache prints the header alone.
    r = run("ls", "--filter", "reference=none", "--format", "table {{.ID}}", socket=sock(daemon))
    assert r.stdout == "IMAGE ID\n"


# exists -------------------------------------------------------------------------


def test_exists(daemon, rpc, three):
    for spelling in ("alpine:9.9", "docker.io/library/alpine:9.9", "library/alpine:9.9",
                     "example.com/test/app:v1"):
        r = run("exists", spelling, socket=sock(daemon))
        assert (r.returncode, r.stdout, r.stderr) == (EXIT_OK, "", ""), spelling
    for absent in ("alpine", "alpine:9.8", "example.com/test/app:v2"):
        r = run("exists", absent, socket=sock(daemon))
        assert (r.returncode, r.stdout, r.stderr) == (EXIT_FAILURE, "", ""), absent
    # An error is not "no": it is reported, with its own status.
    r = run("exists", "Bad::Ref", socket=sock(daemon))
    assert r.returncode == EXIT_EXISTS_ERROR
    assert r.stderr.startswith("msb-image: cannot tell whether Bad::Ref is cached: invalid reference")
    rpc.call("image.remove", {"reference": "alpine:9.9"})
    assert run("exists", "alpine:9.9", socket=sock(daemon)).returncode == EXIT_FAILURE


# inspect ------------------------------------------------------------------------


def test_inspect_json_field_by_field(daemon, rpc, loaded):
    app = loaded
    r = run("inspect", "--format", "json", "example.com/test/app:v1", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) == {"handle", "config", "layers"}
    assert d["handle"]["reference"] == "example.com/test/app:v1"
    assert d["handle"]["manifest_digest"] == app.manifest_digest
    assert d["handle"]["size_bytes"] == app.size_bytes
    assert d["handle"]["layer_count"] == app.layer_count
    assert d["config"] == app.expected_config_detail()
    assert [{k: v for k, v in l.items() if k != "erofs_size_bytes"} for l in d["layers"]] == app.expected_layers()
    for l in d["layers"]:
        assert l["erofs_size_bytes"] > 0 and l["erofs_size_bytes"] % 4096 == 0
    assert d == rpc.call("image.inspect", {"reference": "example.com/test/app:v1"})


def test_inspect_table(daemon, rpc, loaded):
    app = loaded
    r = run("inspect", "example.com/test/app:v1", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    r2 = run("inspect", "--format", "table", "example.com/test/app:v1", socket=sock(daemon))
    assert r2.stdout == out

    def field(name):
        m = re.search(rf"^{re.escape(name)}: *(.*)$", out, re.M)
        assert m, f"no {name} in:\n{out}"
        return m.group(1)

    assert field("Reference") == "example.com/test/app:v1"
    assert field("Digest") == app.manifest_digest
    assert field("Platform") == f"{app.os}/{app.architecture}"
    assert field("Size") == f"{human(app.size_bytes)} ({app.size_bytes} bytes)"
    assert field("Config") == app.config_digest
    assert field("Entrypoint") == '["/bin/tool"]'
    assert field("Cmd") == '["sh", "-c", "echo hi"]'
    assert field("Working dir") == "/srv"
    assert field("User") == "1000:1000"
    assert field("Stop signal") == "SIGINT"
    assert field("Env") == "A=1"
    assert re.search(r"^ +PATH=/usr/bin:/bin$", out, re.M)
    assert "org.example.k=v" in out and "two=2" in out
    assert field("Layers") == str(app.layer_count)
    rows = out.splitlines()
    header = next(i for i, l in enumerate(rows) if l.startswith("POSITION"))
    for pos, layer in enumerate(app.layers):
        cells = rows[header + 1 + pos].split()
        assert cells[0] == str(pos)
        assert cells[1] == short(layer.diff_id)
        assert cells[2] == short(layer.blob_digest)
        assert cells[3] == layer.media_type


def test_inspect_any_spelling(daemon, rpc, app):
    assert run("load", "--tag", "alpine:9.9", app.layout.path, socket=sock(daemon)).returncode == 0
    for spelling in ("alpine:9.9", "docker.io/library/alpine:9.9", "library/alpine:9.9"):
        r = run("inspect", "--format", "json", spelling, socket=sock(daemon))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["handle"]["reference"] == "docker.io/library/alpine:9.9"


INSPECT_FIELDS = ["Id", "Reference", "Repository", "Tag", "Digest", "Architecture", "Os", "Size", "CreatedAt",
                  "LastUsedAt", "LayerCount", "Config", "Layers"]
CONFIG_FIELDS = ["Digest", "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "StopSignal"]


def test_inspect_format_template(daemon, rpc, loaded):
    app = loaded
    ref = "example.com/test/app:v1"
    wire = rpc.call("image.inspect", {"reference": ref})

    def fmt(template):
        r = run("inspect", "--format", template, ref, socket=sock(daemon))
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert fmt("{{.Id}} {{.Digest}} {{.Size}} {{.LayerCount}}") == (
        f"{app.manifest_digest} {app.manifest_digest} {app.size_bytes} {app.layer_count}\n")
    assert fmt("{{.Repository}}:{{.Tag}} {{.Os}}/{{.Architecture}}") == (
        f"example.com/test/app:v1 {app.os}/{app.architecture}\n")
    assert fmt("{{.CreatedAt}}|{{.LastUsedAt}}") == (
        f"{utc(wire['handle']['created_at'])}|{utc(wire['handle']['last_used_at'])}\n")
    # Lists and maps print as Go prints them; json prints JSON.
    assert fmt("{{.Config.Env}}") == "[A=1 PATH=/usr/bin:/bin]\n"
    assert fmt("{{.Config.Labels}}") == "map[org.example.k:v two:2]\n"
    assert fmt("{{json .Config.Env}}") == '["A=1","PATH=/usr/bin:/bin"]\n'
    assert fmt("{{json .Config.Cmd}} {{.Config.WorkingDir}} {{.Config.User}} {{.Config.StopSignal}}") == (
        '["sh","-c","echo hi"] /srv 1000:1000 SIGINT\n')
    assert fmt("{{.Config.Digest}}") == f"{app.config_digest}\n"

    whole = json.loads(fmt("{{json .}}"))
    assert list(whole) == INSPECT_FIELDS
    assert list(whole["Config"]) == CONFIG_FIELDS
    config = wire["config"]
    assert [whole["Config"][k] for k in CONFIG_FIELDS] == [config[k] for k in (
        "digest", "env", "cmd", "entrypoint", "working_dir", "user", "labels", "stop_signal")]
    assert whole["Layers"] == [{"Position": l["position"], "DiffID": l["diff_id"], "BlobDigest": l["blob_digest"],
                                "MediaType": l["media_type"], "Size": l["compressed_size_bytes"],
                                "ErofsSize": l["erofs_size_bytes"]} for l in wire["layers"]]
    assert json.loads(fmt("{{json .Layers}}")) == whole["Layers"]
    # table TEMPLATE: one row under its header.
    out = fmt("table {{.Repository}}\\t{{.Tag}}\\t{{.LayerCount}}").splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "LAYER", "COUNT"] and out[1].split() == [
        "example.com/test/app", "v1", str(app.layer_count)]
    # --format json is still the daemon's ImageDetail.
    assert json.loads(fmt("json")) == wire


def test_inspect_errors(daemon, rpc):
    r = run("inspect", "example.com/none:1", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stdout == ""
    with pytest.raises(RpcError) as e:
        rpc.call("image.inspect", {"reference": "example.com/none:1"})
    assert r.stderr == f"msb-image: cannot inspect example.com/none:1: {e.value.message}\n"

    r = run("inspect", "Bad::Ref", socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert r.stderr.startswith("msb-image: cannot inspect Bad::Ref: invalid reference")


# rm -----------------------------------------------------------------------------


def test_rm(daemon, rpc, app, other):
    for img in (app, other):
        assert run("load", img.layout.path, socket=sock(daemon)).returncode == 0
    r = run("rm", "example.com/test/app:v1", "example.com/test/other:v2", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Removed example.com/test/app:v1\nRemoved example.com/test/other:v2\n"
    assert rpc.call("image.list") == []


def test_rm_reports_each_failure(daemon, rpc, loaded):
    r = run("rm", "example.com/none:1", "example.com/test/app:v1", "Bad::Ref", socket=sock(daemon))
    # Not found and another failure: the other one decides.
    assert r.returncode == EXIT_FAILURE
    # The one that exists is removed despite the failures around it.
    assert r.stdout == "Removed example.com/test/app:v1\n"
    errs = r.stderr.splitlines()
    assert len(errs) == 2
    assert errs[0].startswith("msb-image: cannot remove example.com/none:1: ")
    assert errs[1].startswith("msb-image: cannot remove Bad::Ref: invalid reference")
    assert rpc.call("image.list") == []


def test_rm_not_found_exits_3(daemon, rpc, loaded):
    r = run("rm", "example.com/none:1", "example.com/test/app:v1", "example.com/none:2", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stdout == "Removed example.com/test/app:v1\n"
    assert len(r.stderr.splitlines()) == 2


def test_rm_in_use_and_force(daemon, rpc, loaded):
    rpc.call("pin.add", {"kind": "sandbox", "name": "box", "reference": "example.com/test/app:v1"})
    rpc.call("pin.add", {"kind": "snapshot", "name": "nightly 2", "reference": "example.com/test/app:v1"})
    r = run("rm", "example.com/test/app:v1", socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    with pytest.raises(RpcError) as e:
        rpc.call("image.remove", {"reference": "example.com/test/app:v1"})
    assert e.value.name == "image-in-use"
    # The pins are named from the error's data.holders, and -f is offered.
    holders = ", ".join(f"{h['kind']} '{h['name']}'" for h in e.value.data["holders"])
    assert holders == "sandbox 'box', snapshot 'nightly 2'"
    assert r.stderr == (f"msb-image: cannot remove example.com/test/app:v1: pinned by {holders}; "
                        "use 'msb-image rm -f example.com/test/app:v1' to remove the reference anyway "
                        "(the pinned data stays until its pins are removed)\n")
    assert len(rpc.call("image.list")) == 1

    for flag in ("-f", "--force"):
        rpc.call("image.load", {"path": str(loaded.layout.path)})
        r = run("rm", flag, "example.com/test/app:v1", socket=sock(daemon))
        assert r.returncode == 0, r.stderr
        assert rpc.call("image.list") == []


# prune ----------------------------------------------------------------------------


def test_prune_refused_without_terminal(daemon, rpc, loaded):
    r = run("prune", socket=sock(daemon), stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert "stdin is not a terminal, pass -y" in r.stderr
    assert r.stdout == ""
    # Piped "y" is not a terminal either: still refused.
    r = run("prune", socket=sock(daemon), input="y\n")
    assert r.returncode == 2
    assert len(rpc.call("image.list")) == 1


def test_prune_yes_json(daemon, rpc, loaded):
    r = run("prune", "-y", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report) == {"image_refs_removed", "manifests_removed", "layers_removed", "fsmeta_removed",
                           "vmdk_removed", "bytes_reclaimed"}
    assert report["image_refs_removed"] == 1
    assert report["manifests_removed"] == 1
    assert report["layers_removed"] == loaded.layer_count
    assert report["bytes_reclaimed"] > 0
    assert rpc.call("image.list") == []
    # Nothing left: zero counts, in the table form too.
    r = run("prune", "--yes", socket=sock(daemon))
    assert r.returncode == 0
    assert r.stdout.startswith("References removed:")
    assert re.search(r"^References removed: +0$", r.stdout, re.M)
    assert re.search(r"^Layers removed: +0$", r.stdout, re.M)


@pytest.mark.parametrize("flags", [["-y"], ["--yes", "--format", "table"], ["-f"], ["--force"]])
def test_prune_table(daemon, rpc, loaded, flags):
    r = run("prune", *flags, socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Removed example.com/test/app:v1\nReferences removed:")
    assert re.search(r"^References removed: +1$", r.stdout, re.M)
    assert re.search(r"^Manifests removed: +1$", r.stdout, re.M)
    assert re.search(rf"^Layers removed: +{loaded.layer_count}$", r.stdout, re.M)
    m = re.search(r"^Space reclaimed: +(\d+(?:\.\d)? (?:B|KiB|MiB))(?: \((\d+) bytes\))?$", r.stdout, re.M)
    assert m, r.stdout
    if m.group(2):
        assert human(int(m.group(2))) == m.group(1)


def test_prune_names_what_it_removed(daemon, rpc, app, other):
    """Three references, one of them pinned: the two others are named, in
    the daemon's list order, and their count is the report's."""
    for img in (app, other):
        assert run("load", img.layout.path, socket=sock(daemon)).returncode == 0
    rpc.call("image.load", {"path": str(app.layout.path), "tag": "example.com/test/app:alias"})
    rpc.call("pin.add", {"kind": "sandbox", "name": "keep", "reference": "example.com/test/other:v2"})
    before = [h["reference"] for h in rpc.call("image.list")]
    r = run("prune", "-y", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    removed = re.findall(r"^Removed (\S+)$", r.stdout, re.M)
    assert removed == [ref for ref in before if ref != "example.com/test/other:v2"]
    assert len(removed) == 2
    assert re.search(rf"^References removed: +{len(removed)}$", r.stdout, re.M)
    assert [h["reference"] for h in rpc.call("image.list")] == ["example.com/test/other:v2"]
    m = re.search(r"^Space reclaimed: +(.+) \((\d+) bytes\)$", r.stdout, re.M)
    assert m and int(m.group(2)) > 0 and m.group(1) == human(int(m.group(2)))


def test_prune_keeps_pinned(daemon, rpc, loaded):
    rpc.call("pin.add", {"kind": "snapshot", "name": "s", "reference": "example.com/test/app:v1"})
    r = run("prune", "-y", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0
    assert json.loads(r.stdout)["layers_removed"] == 0
    assert len(rpc.call("image.list")) == 1


PROMPT = "Remove all cached images not used by sandboxes or snapshots? [y/N] "


def test_prune_prompt_on_terminal_declined(daemon, rpc, loaded):
    rc, out = run_pty("prune", socket=sock(daemon), answer=b"n\n")
    assert PROMPT in out
    assert rc == 1
    assert "Nothing removed." in out
    assert len(rpc.call("image.list")) == 1
    # Just Enter is no too.
    rc, out = run_pty("prune", socket=sock(daemon), answer=b"\n")
    assert rc == 1
    assert len(rpc.call("image.list")) == 1


def test_prune_prompt_on_terminal_accepted(daemon, rpc, loaded):
    rc, out = run_pty("prune", socket=sock(daemon), answer=b"y\n")
    assert PROMPT in out
    assert rc == 0, out
    assert re.search(r"References removed: +1", out)
    assert rpc.call("image.list") == []


# load ------------------------------------------------------------------------------


def test_load_layout_relative_path(daemon, rpc, app):
    layout = Path(app.layout.path)
    r = run("load", layout.name, socket=sock(daemon), cwd=layout.parent)
    assert r.returncode == 0, r.stderr
    # A directory is read by the daemon: no archive bytes to report.
    assert r.stdout.splitlines() == [
        f"Resolved {app.manifest_digest}: 2 layers, {human(app.size_bytes)}",
        *[f"Layer {i + 1}/2 {short(l.blob_digest)}: converted (EROFS {human(e)})"
          for i, (l, e) in enumerate(zip(app.layers, _erofs_sizes(daemon, app)))],
        f"Loaded example.com/test/app:v1 ({app.manifest_digest})",
    ]
    assert rpc.call("image.get", {"reference": "example.com/test/app:v1"})["manifest_digest"] == app.manifest_digest
    r = run("load", "-q", layout, socket=sock(daemon))
    assert (r.returncode, r.stdout) == (0, "example.com/test/app:v1\n")


def _erofs_sizes(daemon, img):
    return [(daemon.store / "layers" / "sha256" / (l.diff_id.split(":")[1] + ".erofs")).stat().st_size
            for l in img.layers]


def _load_lines(app, archive_bytes, daemon, cached=False):
    """The plain progress and result lines of loading app from an archive."""
    layers = [f"Layer {i + 1}/{app.layer_count} {short(l.blob_digest)}: already cached" if cached else
              f"Layer {i + 1}/{app.layer_count} {short(l.blob_digest)}: converted (EROFS {human(e)})"
              for i, (l, e) in enumerate(zip(app.layers, _erofs_sizes(daemon, app)))]
    return [f"Read {human(archive_bytes)} of archive",
            f"Resolved {app.manifest_digest}: {app.layer_count} layers, {human(app.size_bytes)}",
            *layers, f"Loaded example.com/test/app:v1 ({app.manifest_digest})"]


@pytest.mark.parametrize("how", ["stdin", "pipe", "-i", "--input", "path"])
def test_load_archive_passed_to_the_daemon(daemon, rpc, app, tmp_path, how):
    archive = app.layout.oci_archive(tmp_path / "app.tar")
    size = archive.stat().st_size
    if how == "stdin":
        with open(archive, "rb") as f:
            r = run("load", socket=sock(daemon), stdin=f)
    elif how == "pipe":
        r = subprocess.run(["sh", "-c", f'cat "{archive}" | "{cli_binary()}" --socket "{sock(daemon)}" load'],
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    elif how == "path":
        r = run("load", archive, socket=sock(daemon))
    else:
        r = run("load", how, archive, socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == _load_lines(app, size, daemon), r.stdout
    assert "\x1b" not in r.stdout
    assert rpc.call("image.get", {"reference": "example.com/test/app:v1"})["manifest_digest"] == app.manifest_digest
    # Again, from stdin: the layers are cached now.
    with open(archive, "rb") as f:
        r = run("load", socket=sock(daemon), stdin=f)
    assert r.stdout.splitlines() == _load_lines(app, size, daemon, cached=True), r.stdout


def test_load_image_picks_one_of_an_archive(daemon, rpc, app, other, imagekit, tmp_path):
    lay = imagekit.layout("both")
    lay.copy_blobs_from(app)
    lay.copy_blobs_from(other)
    idx = lay.index()
    idx["manifests"] = [{"mediaType": i.manifest_media_type, "digest": i.manifest_digest, "size": i.manifest_size,
                         "annotations": {"org.opencontainers.image.ref.name": i.ref_name}} for i in (app, other)]
    lay.write_index(idx)
    archive = lay.oci_archive(tmp_path / "both.tar")
    r = run("load", "-q", "--tag", "example.com/picked:1", archive, socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert "tag names only one" in r.stderr and "image" in r.stderr
    r = run("load", "-q", "--image", "example.com/test/other:v2", "--tag", "example.com/picked:1", "-i", archive,
            socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["example.com/picked:1", "example.com/test/other:v2"]
    assert sorted(h["reference"] for h in rpc.call("image.list")) == ["example.com/picked:1",
                                                                       "example.com/test/other:v2"]
    r = run("load", "--image", "example.com/test/none:1", archive, socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert "names none of the source's images" in r.stderr


def test_load_progress_on_a_terminal(daemon, rpc, app, tmp_path):
    archive = app.layout.oci_archive(tmp_path / "app.tar")
    rc, out = run_pty("load", "-i", archive, socket=sock(daemon))
    assert rc == 0, out
    # The reading line is drawn in place (a bar: the file's size is known),
    # then ends as one line.
    assert re.search(r"\r\x1b\[2KReading archive: \[[= >]{30}\] ", out), out
    assert f"Read {human(archive.stat().st_size)} of archive" in out
    assert out.rstrip().endswith(f"Loaded example.com/test/app:v1 ({app.manifest_digest})")


def test_load_an_archive_the_daemon_cannot_see(hidden_dir_daemon, app):
    # The daemon runs where a tmpfs hides the archive's directory (as a
    # service with PrivateTmp does): msb-image passes the file open.
    d, hidden = hidden_dir_daemon
    archive = app.layout.oci_archive(hidden / "app.tar")
    r = run("load", "-q", archive, socket=d.socket_path)
    assert (r.returncode, r.stdout) == (0, "example.com/test/app:v1\n"), r.stderr


def test_load_without_archive_on_a_terminal_is_a_usage_error(tmp_path):
    rc, out = run_pty("load", env=dict(os.environ, MSB_IMAGED_SOCKET=str(tmp_path / "none.sock")))
    assert rc == EXIT_USAGE, out
    assert "missing path: give PATH or -i FILE, or pipe an archive to stdin" in out


def test_load_archives_and_tag(daemon, rpc, app, imagekit, tmp_path):
    archive = app.layout.oci_archive(tmp_path / "app.tar")
    for flag in ("--tag", "-t"):
        r = run("load", flag, f"example.com/tagged/{flag.strip('-')}:1", archive, socket=sock(daemon))
        assert r.returncode == 0, r.stderr
        assert f"Loaded example.com/tagged/{flag.strip('-')}:1 ({app.manifest_digest})\n" in r.stdout
    docker = app.layout.docker_archive("example.com/test/app:v1", tmp_path / "docker.tar",
                                       ["example.com/docker/app:1"])
    r = run("load", "-q", docker.path, socket=sock(daemon))
    assert (r.returncode, r.stdout) == (0, "example.com/docker/app:1\n"), r.stderr
    refs = {h["reference"] for h in rpc.call("image.list")}
    assert {"example.com/tagged/tag:1", "example.com/tagged/t:1", "example.com/docker/app:1"} <= refs


def test_load_errors(daemon, rpc, tmp_path, app):
    r = run("load", tmp_path / "missing.tar", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stderr == f"msb-image: cannot load {tmp_path / 'missing.tar'}: No such file or directory\n"

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not an archive" * 100)
    r = run("load", junk, socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert r.stderr.startswith(f"msb-image: cannot load {junk}: ")

    r = run("load", "--tag", "Bad::Tag", app.layout.path, socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert "invalid reference" in r.stderr
    assert rpc.call("image.list") == []


# pin ---------------------------------------------------------------------------------


def test_pin_add_ls_rm(daemon, rpc, loaded):
    r = run("pin", "add", "sandbox", "web", "example.com/test/app:v1", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^Manifest: +{loaded.manifest_digest}$", r.stdout, re.M)
    for label in ("Fsmeta", "VMDK"):
        value = re.search(rf"^{label}: +(\S+)$", r.stdout, re.M).group(1)
        assert value == "-" or Path(value).is_file(), (label, value)
    layer_paths = re.findall(r"^(?:Layers:)? +(/\S+\.erofs)$", r.stdout, re.M)
    assert len(layer_paths) == loaded.layer_count
    for p, diff_id in zip(layer_paths, loaded.diff_ids):
        assert Path(p).is_file()
        assert diff_id.split(":")[1] in p

    r = run("pin", "add", "--format", "json", "snapshot", "snap-1", "example.com/test/app:v1", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    rootfs = json.loads(r.stdout)
    assert set(rootfs) == {"manifest_digest", "fsmeta_path", "vmdk_path", "layers"}
    assert rootfs["manifest_digest"] == loaded.manifest_digest
    assert [l["diff_id"] for l in rootfs["layers"]] == loaded.diff_ids
    for l in rootfs["layers"]:
        assert os.path.getsize(l["path"]) == l["erofs_size_bytes"]
    for key in ("fsmeta_path", "vmdk_path"):
        assert rootfs[key] is None or Path(rootfs[key]).is_file()

    r = run("pin", "ls", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0
    pins = json.loads(r.stdout)
    assert pins == rpc.call("pin.list")
    assert [(p["kind"], p["name"], p["reference"], p["manifest_digest"]) for p in pins] == [
        ("sandbox", "web", "example.com/test/app:v1", loaded.manifest_digest),
        ("snapshot", "snap-1", "example.com/test/app:v1", loaded.manifest_digest)]

    r = run("pin", "ls", socket=sock(daemon))
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"KIND +NAME +REFERENCE +DIGEST +CREATED", lines[0])
    assert lines[1].split()[:4] == ["sandbox", "web", "example.com/test/app:v1", short(loaded.manifest_digest)]
    assert lines[2].split()[:4] == ["snapshot", "snap-1", "example.com/test/app:v1",
                                    short(loaded.manifest_digest)]

    r = run("pin", "rm", "sandbox", "web", socket=sock(daemon))
    assert (r.returncode, r.stdout) == (0, "Removed pin sandbox web\n")
    assert [p["name"] for p in rpc.call("pin.list")] == ["snap-1"]
    r = run("pin", "remove", "snapshot", "snap-1", socket=sock(daemon))
    assert r.returncode == 0
    r = run("pin", "list", socket=sock(daemon))
    assert (r.returncode, r.stdout) == (0, "No pins found.\n")


def test_pin_errors(daemon, rpc):
    r = run("pin", "rm", "sandbox", "ghost", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stderr.startswith("msb-image: cannot remove pin sandbox ghost: ")
    r = run("pin", "add", "sandbox", "x", "example.com/none:1", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    assert r.stderr.startswith("msb-image: cannot pin example.com/none:1 as sandbox x: ")
    r = run("pin", "add", "sandbox", "n" * 256, "example.com/none:1", socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert "invalid params" in r.stderr or "name" in r.stderr


# df, info ------------------------------------------------------------------------------


def test_df(daemon, rpc, loaded):
    r = run("df", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    df = json.loads(r.stdout)
    assert set(df) == {"image_refs", "manifests", "configs", "layers", "fsmeta", "vmdk", "index_bytes",
                       "total_bytes", "reclaimable_bytes", "budget"}
    assert df["image_refs"] == 1
    assert df["manifests"]["count"] == 1
    assert df["configs"]["count"] == 1
    assert df["layers"]["count"] == loaded.layer_count
    assert df["layers"]["bytes"] > 0
    live = rpc.call("system.df")
    for kind in ("manifests", "configs", "layers", "fsmeta", "vmdk"):
        assert df[kind] == live[kind]

    r = run("df", socket=sock(daemon))
    assert r.returncode == 0
    rows = {l.split()[0]: l.split()[1:] for l in r.stdout.splitlines() if l.strip()}
    assert rows["TYPE"] == ["COUNT", "SIZE"]
    assert rows["References"] == ["1"]
    assert rows["Layers"] == [str(live["layers"]["count"]), *human(live["layers"]["bytes"]).split()]
    assert rows["Manifests"][0] == "1"
    assert re.search(r"^Total: .+, reclaimable by prune: .+$", r.stdout, re.M)


def test_info(daemon, rpc):
    r = run("info", "--format", "json", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    live = rpc.call("system.info")
    for k in ("version", "store_path", "socket_path", "pid", "started_at"):
        assert info[k] == live[k]
    assert info["pid"] == daemon.pid
    assert info["socket_path"] == str(daemon.socket_path)
    assert info["store_path"] == str(daemon.store)

    r = run("info", socket=sock(daemon))
    assert r.returncode == 0
    assert re.search(rf"^Daemon pid: +{daemon.pid}$", r.stdout, re.M)
    assert re.search(rf"^Store: +{re.escape(str(daemon.store))}$", r.stdout, re.M)
    assert re.search(rf"^Socket: +{re.escape(str(daemon.socket_path))}$", r.stdout, re.M)
    assert re.search(rf"^Daemon version: +{re.escape(live['version'])}$", r.stdout, re.M)


# pull ------------------------------------------------------------------------------------


def test_pull_cached(daemon, rpc, loaded):
    """if-missing (the default) and never are answered from the cache."""
    r = run("pull", "example.com/test/app:v1", socket=sock(daemon))
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(f"Pulled example.com/test/app:v1 ({loaded.manifest_digest})\n")
    r = run("pull", "-q", "--policy", "never", "example.com/test/app:v1", socket=sock(daemon))
    assert (r.returncode, r.stdout) == (0, "example.com/test/app:v1\n")


def test_pull_failures(daemon, rpc):
    r = run("pull", "--policy", "never", "example.com/none:1", socket=sock(daemon))
    assert r.returncode == EXIT_NOT_FOUND
    with pytest.raises(RpcError) as e:
        rpc.call("image.pull", {"reference": "example.com/none:1", "policy": "never"})
    assert r.stderr == f"msb-image: cannot pull example.com/none:1: {e.value.message}\n"
    # Nothing listens on port 1 of loopback.
    r = run("pull", "127.0.0.1:1/none/image:1", socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert r.stderr.startswith("msb-image: cannot pull 127.0.0.1:1/none/image:1: ")
    r = run("pull", "Bad::Ref", socket=sock(daemon))
    assert r.returncode == EXIT_FAILURE
    assert "invalid reference" in r.stderr


@pytest.fixture
def registry_pull(tmp_path, short_tmp, daemon_factory, imagekit):
    """A loopback docker-registry holding test/app:v1 (two layers, one of
    them 3 MiB so that downloads report progress), and a daemon configured
    to reach it over plain HTTP. Skips when pulling is not available."""
    try:
        from registry_harness import Registry, push
    except ImportError as e:  # pragma: no cover - the pull tests' harness is missing
        pytest.skip(f"no registry harness: {e}")
    img = imagekit.image("app:v1", layers=[{"data/big": imagekit.unique_bytes(3 * 1024 * 1024)},
                                           {"etc/motd": b"top layer\n"}])
    reg = Registry(tmp_path / "registry").start()
    try:
        push(img.layout.path, "app:v1", f"{reg.host}/test/app:v1")
        config = short_tmp / "pull-config.json"
        config.write_text(json.dumps({"registries": {reg.host: {"insecure": True}}}))
        home = short_tmp / "home"
        home.mkdir()
        env = dict(os.environ, HOME=str(home))
        env.pop("DOCKER_CONFIG", None)
        d = daemon_factory(name="pulld", extra_args=["--config", str(config)], env=env)
        ref = f"{reg.host}/test/app:v1"
        probe = d.client().request("image.pull", {"reference": ref, "policy": "always"})
        if "error" in probe:
            pytest.skip(f"the daemon cannot pull yet: {probe['error'].get('message')}")
        d.client().call("image.remove", {"reference": ref})
        d.client().call("image.prune", {})
        yield d, ref, img
    finally:
        reg.stop()


def test_pull_plain_lines(registry_pull):
    d, ref, img = registry_pull
    r = run("pull", ref, socket=d.socket_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"Resolving {ref}"
    assert lines[1].startswith(f"Resolved {img.manifest_digest}: {img.layer_count} layers, ")
    for pos, layer in enumerate(img.layers):
        assert f"Layer {pos + 1}/{img.layer_count} {short(layer.blob_digest)}: downloaded" in lines
        assert any(l.startswith(f"Layer {pos + 1}/{img.layer_count} {short(layer.blob_digest)}: converted (EROFS ")
                   for l in lines)
    assert lines[-1] == f"Pulled {ref} ({img.manifest_digest})"
    # No terminal, no escape sequences.
    assert "\x1b" not in r.stdout

    # Again: everything is cached; -q prints only the reference.
    r = run("pull", "-q", "--policy", "always", ref, socket=d.socket_path)
    assert (r.returncode, r.stdout) == (0, f"{ref}\n")


def test_pull_progress_bar_on_terminal(registry_pull):
    d, ref, img = registry_pull
    rc, out = run_pty("pull", "--platform", img.platform, ref, socket=d.socket_path)
    assert rc == 0, out
    # The layer lines are redrawn in place: cursor up, clear line.
    assert "\x1b[2K" in out
    assert re.search(r"\x1b\[\d+A", out)
    for layer in img.layers:
        assert f"{short(layer.blob_digest)}: done (EROFS " in out
    # The big layer showed a bar while it downloaded, unless it came in one go.
    big = short(img.layers[0].blob_digest)
    bars = re.findall(rf"{big}: \[([= >]{{30}})\] ", out)
    assert bars or f"{big}: downloaded" in out
    assert out.rstrip().endswith(f"Pulled {ref} ({img.manifest_digest})")


# The README's first commands -------------------------------------------------------------


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_first_commands():
    text = README.read_text()
    section = text[text.index("## First commands"):text.index("## The protocol")]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("msb-image ")]


def test_readme_first_commands_run(daemon, rpc, app, tmp_path):
    """Each command of the README's "First commands", as written, against the
    real daemon holding alpine:3.19; rm is refused while the pin holds it,
    as its comment says."""
    import shlex
    rpc.call("image.load", {"path": str(app.layout.path), "tag": "alpine:3.19"})
    app.layout.oci_archive(tmp_path / "app.tar")
    lines = readme_first_commands()
    assert [shlex.split(l)[1] for l in lines] == ["pull", "load", "ls", "ls", "inspect", "exists", "pin", "rm", "pin",
                                                  "prune", "df", "prune", "events"]
    for line in lines:
        for command in line.split(" || ")[:1]:
            args = shlex.split(command, comments=True)[1:]
            if args[0] == "prune":
                rc, out = run_pty(*args, socket=sock(daemon), answer=b"y\n")
                assert rc == 0 and "References removed:" in out, out
                continue
            if args[0] == "events":
                # It runs until interrupted: it prints the loads made meanwhile.
                ev = Events(sock(daemon), *args[1:])
                try:
                    line = ev.wait_subscribed(lambda i: rpc.call("image.load", {"path": str(app.layout.path)}))
                finally:
                    ev.stop()
                assert " image.loaded example.com/test/app:v1 " in line
                continue
            r = run(*args, socket=sock(daemon), cwd=tmp_path)
            expected = EXIT_FAILURE if args[0] == "rm" else EXIT_OK
            assert r.returncode == expected, (line, r.stderr)
            if args[0] == "rm":
                assert "pinned by sandbox 'web'" in r.stderr
            if args[:2] == ["ls", "--filter"]:
                assert r.stdout.startswith("alpine:3.19 ")
