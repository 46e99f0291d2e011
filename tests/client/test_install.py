"""What `meson install` puts on disk for the client: the shared and static
library with only the msb_* API exported (versioned MSBIMAGE_0.1), the
header, a pkg-config file a program can build against, the CLI and both
man pages (rendered by scdoc, naming every command)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from msbtest import build_dir

HEADER = Path(__file__).resolve().parents[2] / "client" / "include" / "msbimage.h"
COMPLETION = Path(__file__).resolve().parents[2] / "client" / "completion" / "msb-image"


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("dest")
    r = subprocess.run(["meson", "install", "--no-rebuild", "-C", str(build_dir()), "--destdir", str(dest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def find(dest: Path, name: str) -> Path:
    """The installed file whose path ends with name ("msb-image.1", "bin/msb-image")."""
    hits = [p for p in dest.rglob(Path(name).name) if (p.is_file() or p.is_symlink()) and p.match(name)]
    assert hits, f"{name} not installed under {dest}"
    return hits[0]


def test_exported_symbols_are_the_api(destdir):
    lib = find(destdir, "libmsbimage.so.0")
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    syms = {l.split()[-1] for l in out.splitlines() if l.strip()}
    names = {s.split("@")[0] for s in syms}
    # Every function the header declares, and nothing else but the version node.
    declared = set(re.findall(r"MSB_PUBLIC [^;]*?\b(msb_[a-z_]+)\(", HEADER.read_text()))
    assert declared, "no MSB_PUBLIC declarations found in the header"
    nodes = {"MSBIMAGE_0.1", "MSBIMAGE_0.2"}
    assert names - nodes == declared
    # Each symbol in the version node it was added in, never moved.
    added_in_0_2 = {"msb_client_set_cancel_fd", "msb_client_image_load_with", "msb_client_image_prune_unused",
                    "msb_event_free", "msb_client_events_subscribe", "msb_client_events_unsubscribe",
                    "msb_client_event_read"}
    for s in syms - nodes:
        name = s.split("@")[0]
        assert s == f"{name}@@{'MSBIMAGE_0.2' if name in added_in_0_2 else 'MSBIMAGE_0.1'}", s


def test_pkg_config_builds_a_program(destdir, tmp_path):
    if not shutil.which("cc") or not shutil.which("pkg-config"):
        pytest.skip("no cc or pkg-config")
    pc = find(destdir, "libmsbimage.pc")
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc.parent), PKG_CONFIG_SYSROOT_DIR=str(destdir))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmsbimage"], capture_output=True, text=True,
                           env=env, check=True).stdout.split()
    src = tmp_path / "consumer.c"
    src.write_text('#include <stdio.h>\n#include <msbimage.h>\n'
                   'int main(void) {\n'
                   '        char *p = NULL;\n'
                   '        if (msb_socket_path_default(&p) < 0) return 1;\n'
                   '        printf("%s %s\\n", msb_version(), p);\n'
                   '        return msb_client_free(NULL) == NULL ? 0 : 1;\n'
                   '}\n')
    exe = tmp_path / "consumer"
    # A -Db_sanitize build installs an instrumented library, whose runtime
    # must come first: build the consumer the same way then.
    needed = subprocess.run(["readelf", "-d", str(find(destdir, "libmsbimage.so.0"))], capture_output=True,
                            text=True, check=True).stdout
    sanitizers = [name for lib, name in (("libasan", "address"), ("libubsan", "undefined")) if lib in needed]
    sanitize = [f"-fsanitize={','.join(sanitizers)}"] if sanitizers else []
    subprocess.run(["cc", "-Wall", "-Werror", *sanitize, "-o", str(exe), str(src), *flags], check=True, env=env)
    r = subprocess.run([str(exe)], capture_output=True, text=True,
                       env=dict(os.environ, LD_LIBRARY_PATH=str(pc.parent.parent),
                                MSB_IMAGED_SOCKET="/run/test.sock"))
    assert r.returncode == 0, r.stderr
    version = subprocess.run([str(build_dir() / "client" / "msb-image"), "--version"], capture_output=True,
                             text=True).stdout.split()[1]
    assert r.stdout == f"{version} /run/test.sock\n"


def test_static_library_and_header_installed(destdir):
    assert find(destdir, "libmsbimage.a").stat().st_size > 0
    assert find(destdir, "msbimage.h").read_text() == HEADER.read_text()


def test_cli_installed(destdir):
    cli = find(destdir, "bin/msb-image")
    r = subprocess.run([str(cli), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("msb-image ")


def test_bash_completion_installed(destdir):
    """Where bash-completion loads it on demand (its completionsdir under our
    prefix, or datadir/bash-completion/completions without its pkg-config
    file), named after the command, and the same script as in the tree."""
    hits = [p for p in destdir.rglob("msb-image") if p.parent.name == "completions"]
    assert len(hits) == 1, hits
    assert hits[0].parent.parent.name == "bash-completion"
    assert hits[0].parent.parent.parent.name == "share"
    assert hits[0].read_text() == COMPLETION.read_text()


@pytest.mark.parametrize("page,section,words", [
    ("msb-image", "1", ["ls", "images", "inspect", "exists", "rm", "prune", "pull", "load", "pin add", "pin rm",
                        "pin ls", "df", "info", "--socket", "--version", "EXIT STATUS", "MSB_IMAGED_SOCKET",
                        "systemctl", "--filter", "--no-trunc", "FORMAT TEMPLATES", "{{json .}}",
                        "bash-completion"]),
    ("msb-imaged", "8", ["--store", "--socket", "--config", "--log-level", "MSB_IMAGED_STORE", "LISTEN_FDS",
                         "SIGTERM", "msb-imaged.socket"]),
])
def test_man_pages(destdir, page, section, words):
    path = find(destdir, f"{page}.{section}")
    text = path.read_text()
    assert text.startswith(".\\\" Generated by scdoc")
    assert re.search(rf'^\.TH "{page}" "{section}"', text, re.M)
    # Render it the way man does and look for every command and option.
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True,
                           env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0", PAGER="cat"))
        if r.returncode == 0 and r.stdout:
            text = re.sub(r".\x08", "", r.stdout)
    for w in words:
        assert w in text, w
