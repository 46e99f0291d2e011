"""Read-only checks on a daemon's store directory (stdlib only).

The layout is the contract's: ``blobs/sha256/<hex>`` (manifests, configs),
``layers/sha256/<diffid-hex>.erofs``, ``fsmeta/sha256/<manifest-hex>.erofs``,
``vmdk/sha256/<manifest-hex>.vmdk``, ``tmp/``, ``index.db``.  The SQLite
schema is the daemon's own business, so the index is read generically: every
text value that looks like a sha256 digest counts as "named by a row".

``content_files(store) -> dict[kind, list[Path]]``
    the files under blobs/, layers/, fsmeta/, vmdk/ (and tmp/).
``index_digests(store) -> set[str]``
    every 64-hex digest named anywhere in index.db.
``store_state(store) -> dict``
    what a failed load or pull must leave as it found it: every file under
    the content directories and tmp/ (path, size) and every row of every
    table of index.db.  Compare two with ``==``.
``consistency_problems(store, rpc=None) -> list[str]``
    files without a row; and, with an :class:`RpcClient`, every listed
    image's manifest, config and layer files (and fsmeta/VMDK once the store
    holds any) and every pin's manifest must exist (the index never names a
    missing file).  Empty list = consistent.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

__all__ = ["CONTENT_KINDS", "content_files", "index_digests", "consistency_problems", "hex_of", "store_state"]

CONTENT_KINDS = {
    "blobs": ("blobs/sha256", ""),
    "layers": ("layers/sha256", ".erofs"),
    "fsmeta": ("fsmeta/sha256", ".erofs"),
    "vmdk": ("vmdk/sha256", ".vmdk"),
}

_HEX_RE = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1] if ":" in digest else digest


def content_files(store) -> dict[str, list[Path]]:
    """Regular files (and anything else) under each content directory and tmp/."""
    store = Path(store)
    out: dict[str, list[Path]] = {}
    for kind, (sub, _) in CONTENT_KINDS.items():
        top = store / kind
        out[kind] = sorted(p for p in top.rglob("*") if not p.is_dir()) if top.exists() else []
    tmp = store / "tmp"
    out["tmp"] = sorted(p for p in tmp.rglob("*") if not p.is_dir()) if tmp.exists() else []
    return out


@contextlib.contextmanager
def _index(store):
    """A connection to a copy of the store's index (with its WAL): SQLite
    resolves symbolic links in a path, so it cannot open a store reached
    through another mount namespace's /proc/PID/root; and a copy never
    takes a lock the daemon would wait on."""
    with tempfile.TemporaryDirectory(prefix="msb-index-") as copy:
        for name in ("index.db", "index.db-wal"):
            if (Path(store) / name).exists():
                shutil.copyfile(Path(store) / name, Path(copy) / name)
        con = sqlite3.connect(Path(copy) / "index.db", timeout=10)
        try:
            yield con
        finally:
            con.close()


def index_digests(store) -> set[str]:
    """Every sha256 hex named by any text column of any table of index.db."""
    with _index(store) as con:
        found: set[str] = set()
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                for v in row:
                    if isinstance(v, str):
                        found.update(_HEX_RE.findall(v))
        return found


def store_state(store) -> dict:
    """Files (relative path and size) and index rows, table by table."""
    store = Path(store)
    files = sorted((str(p.relative_to(store)), p.stat().st_size)
                   for ps in content_files(store).values() for p in ps)
    with _index(store) as con:
        tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        rows = {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    return {"files": files, "rows": rows}


def _expected_path(store: Path, kind: str, digest: str) -> Path:
    sub, suffix = CONTENT_KINDS[kind]
    return store / sub / (hex_of(digest) + suffix)


def consistency_problems(store, rpc=None) -> list[str]:
    store = Path(store)
    problems: list[str] = []
    files = content_files(store)
    named = index_digests(store)
    for kind in CONTENT_KINDS:
        sub, suffix = CONTENT_KINDS[kind]
        for p in files[kind]:
            if p.parent != store / sub or not p.name.endswith(suffix):
                problems.append(f"unexpected file in the store: {p}")
                continue
            h = p.name[: len(p.name) - len(suffix)] if suffix else p.name
            if h not in named:
                problems.append(f"file without an index row: {p}")
    if rpc is not None:
        for h in rpc.call("image.list"):
            try:
                d = rpc.call("image.inspect", {"reference": h["reference"]})
            except Exception as e:  # noqa: BLE001 - report, do not stop
                problems.append(f"image.inspect {h['reference']} failed: {e}")
                continue
            md = d["handle"]["manifest_digest"]
            if md and not _expected_path(store, "blobs", md).exists():
                problems.append(f"{h['reference']}: manifest blob {md} missing")
            if d.get("config") and not _expected_path(store, "blobs", d["config"]["digest"]).exists():
                problems.append(f"{h['reference']}: config blob {d['config']['digest']} missing")
            for layer in d["layers"]:
                if not _expected_path(store, "layers", layer["diff_id"]).exists():
                    problems.append(f"{h['reference']}: layer file for {layer['diff_id']} missing")
            # Once the daemon builds per-manifest outputs at all, every
            # manifest has them (README "The store": fsmeta and VMDK per manifest).
            if md and (files["fsmeta"] or files["vmdk"]):
                for kind in ("fsmeta", "vmdk"):
                    if not _expected_path(store, kind, md).exists():
                        problems.append(f"{h['reference']}: {kind} file for {md} missing")
        for pin in rpc.call("pin.list"):
            if not _expected_path(store, "blobs", pin["manifest_digest"]).exists():
                problems.append(f"pin {pin['kind']}/{pin['name']}: manifest blob missing")
    return problems
