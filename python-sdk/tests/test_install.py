"""The install commands of README.md work as written on an offline Debian 12:
each ```sh block of its Install section runs, line for line, in a bash with
a fresh HOME, Debian's /usr/bin/python3 first on PATH and no pip
configuration of this machine (so no package index and no local wheel
directory), from a copy of the checkout; then the installed package is
imported from where it landed and talks to a real daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

SDK_DIR = Path(__file__).resolve().parent.parent
README = SDK_DIR / "README.md"
TOP_README = SDK_DIR.parent / "README.md"

# What a user runs the installed package with, for each way of installing.
VENV_PYTHON = ".venvs/microsandbox/bin/python3"

CHECK = """\
import asyncio, os, sys
import microsandbox
from microsandbox import Client, Image, ImageInUseError
here = os.path.dirname(microsandbox.__file__)
assert here.startswith(os.environ["HOME"] + "/"), here
assert os.path.isfile(os.path.join(here, "py.typed"))
async def main() -> None:
    async with Client(socket=sys.argv[1]) as client:
        print(len(await client.images.list()), microsandbox.__version__)
asyncio.run(main())
"""


def install_blocks() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Install\n"):text.index("\n## ", text.index("## Install\n") + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [[line for line in b.splitlines() if line.strip() and not line.startswith("#")] for b in blocks]


def run_block(lines: list[str], tmp: Path) -> Path:
    checkout = tmp / "checkout"
    shutil.copytree(SDK_DIR, checkout / "python-sdk",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    home = tmp / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "PIP_CONFIG_FILE": "/dev/null"}
    r = subprocess.run(["bash", "-euc", "\n".join(lines)], cwd=checkout, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{lines}\n{r.stdout}\n{r.stderr}"
    return home


def check_installed(python: str, home: Path, daemon: Any) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    r = subprocess.run([python, "-c", CHECK, str(daemon.socket_path)], cwd="/", env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0.1.0"]


def test_readme_has_both_ways() -> None:
    blocks = install_blocks()
    assert len(blocks) == 2
    assert any("venv" in line for line in blocks[0])
    assert all("--no-index" in line for b in blocks for line in b if " install " in line)


def test_install_into_a_venv(tmp_path: Path, daemon: Any) -> None:
    block = install_blocks()[0]
    home = run_block(block, tmp_path)
    check_installed(str(home / VENV_PYTHON), home, daemon)


def test_install_for_the_user(tmp_path: Path, daemon: Any) -> None:
    block = install_blocks()[1]
    home = run_block(block, tmp_path)
    assert list((home / ".local" / "lib").glob("python3*/site-packages/microsandbox/__init__.py"))
    check_installed("/usr/bin/python3", home, daemon)


def test_top_readme_shows_the_same_command() -> None:
    top = TOP_README.read_text(encoding="utf-8")
    for line in install_blocks()[0]:
        assert line in top, line
