"""The package is fully typed (py.typed): mypy --strict finds nothing in it,
nor in a program that imports what it exports by name."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import microsandbox

SRC = Path(__file__).resolve().parent.parent / "src"


def test_package_is_marked_typed() -> None:
    assert (SRC / "microsandbox" / "py.typed").is_file()


needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (Debian: python3-mypy)")


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The incremental cache of the session's mypy runs: the second reads
    the standard library's stubs (most of a run's CPU) from the first
    instead of analysing them again. Each run still checks the files it is
    given whose contents changed, and mypy keys its cache by their hashes
    and its options."""
    return f"--cache-dir={tmp_path_factory.mktemp('mypy-cache')}"


@needs_mypy
def test_mypy_strict(mypy_cache: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", mypy_cache, str(SRC / "microsandbox")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# A program as a user writes it: every exported name imported from the
# package by name (an error class missing from the explicit imports and
# __all__ of microsandbox/__init__.py is "has no attribute" under --strict,
# as ImageInUseError was while the names came from a star import), and the
# error classes used the way the README shows.
USER_PROGRAM = """\
from __future__ import annotations

import asyncio

from microsandbox import ({names})
from microsandbox.errors import ERRORS_BY_NAME


async def main() -> None:
    try:
        await Image.remove("alpine")
    except ImageInUseError as e:
        holders: list[PinHolder] = e.holders
        print(e.code, e.error_name, e.message, e.reference, holders)
    except (ImageNotFoundError, InvalidReferenceError) as e:
        print(e.data, e.method)
    except DaemonNotRunningError as e:
        print(e.socket_path)
    except MicrosandboxError as e:
        print(e)
    async with Client(socket="/run/imaged.sock") as client:
        handle: ImageHandle = await client.images.get("alpine")
        detail: ImageDetail = await handle.inspect()
        print(detail.config.env if detail.config else None)
    kind: type[RpcError] = ERRORS_BY_NAME["image-in-use"]
    classes: list[type[MicrosandboxError]] = [{error_classes}]
    print(kind, classes)


asyncio.run(main())
"""


@needs_mypy
def test_exported_names_import_under_mypy_strict(tmp_path: Path, mypy_cache: str) -> None:
    names = sorted(microsandbox.__all__)
    error_classes = sorted(n for n in names if isinstance(getattr(microsandbox, n), type)
                           and issubclass(getattr(microsandbox, n), microsandbox.MicrosandboxError))
    assert {"ImageInUseError", "ImageNotFoundError", "RpcError"} <= set(error_classes)
    program = tmp_path / "user_program.py"
    program.write_text(USER_PROGRAM.format(names=", ".join(names), error_classes=", ".join(error_classes)))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", mypy_cache, str(program)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MYPYPATH=str(SRC)),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_error_classes_are_listed_by_name() -> None:
    """Every class generated from the proto is imported by name and listed in
    the literal __all__ of both microsandbox.errors and microsandbox."""
    import ast

    from microsandbox import _errors

    for module in ("errors.py", "__init__.py"):
        tree = ast.parse((SRC / "microsandbox" / module).read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        listed = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                      and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
        assert isinstance(listed, ast.List) and all(isinstance(e, ast.Constant) for e in listed.elts), module
        literal = {e.value for e in listed.elts if isinstance(e, ast.Constant)}
        missing = [n for n in _errors.__all__ if n not in imported or n not in literal]
        assert not missing, f"add {missing} to the imports and __all__ of microsandbox/{module}"
