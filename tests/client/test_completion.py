"""The bash completion of msb-image (client/completion/msb-image), run by a
real bash the way readline runs it: COMP_LINE and COMP_POINT set, the
completion function called, COMPREPLY read back. Image references come
from the real daemon through the CLI being completed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from clitool import cli_binary, run

SCRIPT = Path(__file__).resolve().parents[2] / "client" / "completion" / "msb-image"

# What bash sets in an interactive shell: the characters it splits words at.
WORDBREAKS = " \t\n\"'><=;|&(:"


def complete(line, env=None):
    """The candidates bash would offer for `line`, the cursor at its end."""
    program = (f'source "{SCRIPT}"\n'
               'COMP_WORDBREAKS=$WB\n'
               'COMP_LINE=$LINE; COMP_POINT=${#LINE}\n'
               'complete -p msb-image >/dev/null || exit 9\n'
               '_msb_image\n'
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    e = dict(os.environ if env is None else env, LINE=line, WB=WORDBREAKS)
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True, env=e,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return [w for w in r.stdout.split("\n") if w]


def cli(socket=None):
    """The start of a line: this build's msb-image, with --socket when given."""
    return f"{cli_binary()} --socket {socket} " if socket else f"{cli_binary()} "


def help_commands():
    """Every command and alias `msb-image --help` lists."""
    out = run("--help").stdout
    names = re.findall(r"^  ([a-z]+)(?:, ([a-z]+))? ", out, re.M)
    return {n for pair in names for n in pair if n}


def help_options(command):
    """The options the Options: section of `msb-image COMMAND --help` lists."""
    options = run(command, "--help").stdout.split("\nOptions:\n", 1)[1]
    found = set()
    for line in options.splitlines():
        m = re.match(r"  (-[a-z], )?(--[a-z-]+)", line)
        if m:
            found |= {m.group(2)} | ({m.group(1)[:2]} if m.group(1) else set())
    return found


def test_commands_are_the_clis():
    assert set(complete("msb-image ")) == help_commands()
    assert complete("msb-image ex") == ["exists"]
    assert sorted(complete("msb-image p")) == ["pin", "prune", "pull"]


@pytest.mark.parametrize("command", sorted({"ls", "images", "inspect", "exists", "rm", "rmi", "prune", "pull",
                                            "load", "pin", "df", "info", "events"}))
def test_options_are_the_commands(command):
    """Each command completes exactly the options its --help documents."""
    offered = set(complete(f"msb-image {command} -"))
    assert offered == help_options(command), command


def test_global_options_and_values(tmp_path):
    assert set(complete("msb-image --")) == {"--socket", "--help", "--version"}
    (tmp_path / "imaged.sock").write_text("")
    assert complete(f"msb-image --socket {tmp_path}/ima") == [f"{tmp_path}/imaged.sock"]
    assert complete("msb-image ls --format ") == ["table", "json"]
    assert complete("msb-image pull --policy a") == ["always"]
    assert complete("msb-image ls --filter ") == ["reference=", "before=", "since="]
    assert complete("msb-image prune --filter ") == ["until="]
    assert complete("msb-image pin ") == ["add", "rm", "ls"]
    assert complete("msb-image pin add s") == ["sandbox", "snapshot"]
    assert complete("msb-image pin rm sn") == ["snapshot"]
    # An option's value is not taken for the command.
    assert complete("msb-image --socket /x ") == complete("msb-image ")


def test_load_completes_files(tmp_path):
    (tmp_path / "app.tar").write_bytes(b"")
    (tmp_path / "layout").mkdir()
    assert sorted(complete(f"msb-image load {tmp_path}/")) == [f"{tmp_path}/app.tar", f"{tmp_path}/layout"]
    assert complete(f"msb-image load -t x {tmp_path}/a") == [f"{tmp_path}/app.tar"]
    # -i and --input take a file; --image a name, which is not a file.
    assert complete(f"msb-image load -i {tmp_path}/a") == [f"{tmp_path}/app.tar"]
    assert complete(f"msb-image load --input {tmp_path}/a") == [f"{tmp_path}/app.tar"]
    assert complete(f"msb-image load --image x {tmp_path}/a") == [f"{tmp_path}/app.tar"]


@pytest.fixture
def cached(daemon, rpc, imagekit):
    img = imagekit.image("example.com/test/app:v1", layers=[{"etc/a": b"a\n"}])
    rpc.call("image.load", {"path": str(img.layout.path)})
    rpc.call("image.load", {"path": str(img.layout.path), "tag": "alpine:9.9"})
    return daemon


def test_references_from_the_daemon(cached):
    line = cli(cached.socket_path)
    # Canonical references and docker's short form.
    assert set(complete(line + "inspect ")) == {"docker.io/library/alpine:9.9", "alpine:9.9",
                                                "example.com/test/app:v1"}
    assert complete(line + "inspect alp") == ["alpine:9.9"]
    assert complete(line + "exists example.com/t") == ["example.com/test/app:v1"]
    # bash replaces only what follows the last ':' (a word break), so the
    # candidate is what comes after it.
    assert complete(line + "rm example.com/test/app:") == ["v1"]
    assert complete(line + "rmi docker.io/library/alpine:9") == ["9.9"]
    assert complete(line + "rm example.com/test/app:v1 alp") == ["alpine:9.9"]
    assert complete(line + "pin add sandbox web alp") == ["alpine:9.9"]
    assert complete(line + "pull alp") == ["alpine:9.9"]
    # --filter values: after '=', another word break.
    assert complete(line + "ls --filter reference=alp") == ["alpine:9.9"]
    assert complete(line + "ls -f since=example") == ["example.com/test/app:v1"]
    # Only the first argument of inspect is a reference.
    assert complete(line + "inspect alpine:9.9 ") == []


def test_socket_from_the_environment(cached):
    env = dict(os.environ, MSB_IMAGED_SOCKET=str(cached.socket_path))
    assert complete(f"{cli_binary()} inspect alp", env=env) == ["alpine:9.9"]
    # --socket after the command counts too.
    assert complete(f"{cli_binary()} inspect --socket {cached.socket_path} alp") == ["alpine:9.9"]


def test_no_daemon_no_references(tmp_path):
    assert complete(cli(tmp_path / "none.sock") + "inspect ") == []
