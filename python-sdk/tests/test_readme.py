"""The README's examples are real code: each block compiles, and the ones
that need no daemon run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_every_example_compiles() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 12
    for i, block in enumerate(blocks):
        compile(block, f"README.md block {i}", "exec")


def test_every_image_call_has_an_example() -> None:
    text = "\n".join(python_blocks())
    for call in ("get", "list", "inspect", "remove", "prune", "pull", "pull_with_progress", "load", "pin", "unpin",
                 "pins", "oci", "bind", "disk", "events"):
        assert re.search(rf"Image\.{call}\(", text), call
    for method in ("image.remove(", "image.inspect("):
        assert method in text
    for call in ("Client(socket=", "client.images.list(", "client.images.get("):
        assert call in text, call


def test_rootfs_source_example_runs() -> None:
    block = next(b for b in python_blocks() if "Image.oci(" in b and "asyncio" not in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    assert "OciRootfs(reference='python:3.12')" in out.getvalue()
    assert "fstype='ext4'" in out.getvalue()
