#!/usr/bin/python3
"""List speed at 5,000 and 10,000 references, on the real daemon (issue 12).

    MSB_BUILD_DIR=$PWD/build /usr/bin/python3 bench/list/bench_list.py [--json OUT]

Starts msb-imaged on a temporary store and loads one image built with umoci
under 5,000 references (one OCI layout whose index names the same manifest
5,000 times), measures, adds 5,000 more, measures again. Each round times,
in turn (so that all see the same load on a shared host):

  - `true`                          process start, the floor of any CLI run;
  - `msb-image ls` / `-q` / `--format json`, to /dev/null;
  - `socat` sending image.list      a raw round trip through another process;
  - image.list on a kept socket     the daemon's cost plus one read;
  - json.loads of the same bytes    what any Python client pays;
  - `await Image.list()`            the SDK, frozen dataclasses included.

With --baseline-build DIR (another build, e.g. of main), a second daemon
from DIR serves its own store loaded the same way, and its raw image.list
and its `msb-image ls` take turns with this build's: before and after in
one run. Reported: medians in milliseconds and the ratios against those
baselines.
Targets: `msb-image ls` of 5,000 < 50 ms, raw image.list of 5,000 < 20 ms,
Image.list() of 10,000 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python-sdk" / "src"))
sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "bench" / "sdk"))

import microsandbox  # noqa: E402
from microsandbox import Image  # noqa: E402
from msbtest.daemon import Daemon  # noqa: E402
from msbtest.rpc import RpcClient  # noqa: E402
from msbtest.imagekit import ImageKit  # noqa: E402
from bench_sdk import tag_layout  # noqa: E402

ROUNDS = 30
TARGET_LS_5K_MS = 50.0
TARGET_RAW_5K_MS = 20.0
TARGET_SDK_10K_MS = 50.0
LIST_REQUEST = b'{"jsonrpc":"2.0","id":1,"method":"image.list","params":{}}\n'
LIST_ROWS_REQUEST = b'{"jsonrpc":"2.0","id":1,"method":"image.list","params":{"rows":true}}\n'


def cli_path(build: Path | None = None) -> str:
    build = build or Path(os.environ.get("MSB_BUILD_DIR", REPO / "build"))
    return str(build / "client" / "msb-image")


def raw_call(path: str, method: str, params: dict[str, Any]) -> Any:
    """One call on a connection of its own (msbtest's client: errors raise)."""
    with RpcClient(path, timeout=600) as c:
        return c.call(method, params)


def run(argv: list[str]) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)


def raw_list(path: str, request: bytes = LIST_REQUEST) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(1 << 22)
            chunks.append(chunk)
            if not chunk or chunk.endswith(b"\n"):
                break
        return b"".join(chunks)


async def time_interleaved(clients: dict[str, Any], rounds: int) -> dict[str, float]:
    """Each client is a callable, or (prepare, callable): prepare runs untimed first."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for i in range(rounds + 3):
        for name, call in clients.items():
            if isinstance(call, tuple):
                prepare, call = call
                prepare()
            t0 = time.perf_counter()
            result = call()
            if asyncio.iscoroutine(result):
                await result
            if i >= 3:
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}


async def measure(size: int, sock: str, rounds: int, base: tuple[Path, str] | None) -> dict[str, Any]:
    cli = cli_path()
    reply = raw_list(sock)
    assert len(json.loads(reply)["result"]) == size
    assert len(await Image.list()) == size
    clients: dict[str, Any] = {
        "true": lambda: run(["true"]),
        "ls": lambda: run([cli, "--socket", sock, "ls"]),
        "ls -q": lambda: run([cli, "--socket", sock, "ls", "-q"]),
        "ls json": lambda: run([cli, "--socket", sock, "ls", "--format", "json"]),
    }
    if shutil.which("socat"):
        clients["socat"] = lambda: subprocess.run(
            ["socat", "-t", "5", "-", f"UNIX-CONNECT:{sock}"], input=LIST_REQUEST, stdout=subprocess.DEVNULL, check=True
        )
    clients["raw image.list"] = lambda: raw_list(sock)
    clients["json.loads"] = lambda: json.loads(reply)
    # The form the SDK asks for: {rows: true}.
    rows_reply = raw_list(sock, LIST_ROWS_REQUEST)
    assert len(json.loads(rows_reply)["result"]["rows"]) == size
    clients["raw rows"] = lambda: raw_list(sock, LIST_ROWS_REQUEST)
    # The daemon answers a repeated list from the last one's text until the
    # store changes: a commit first (a pin replaced, which moves one
    # image's last_used_at), then the list as read from the database.
    newest = json.loads(rows_reply)["result"]["rows"][0][0]
    touch = lambda: raw_call(sock, "pin.add", {"kind": "sandbox", "name": "bench-list", "reference": newest})  # noqa: E731
    clients["raw rows, changed"] = (touch, lambda: raw_list(sock, LIST_ROWS_REQUEST))
    clients["Image.list(), changed"] = (touch, Image.list)
    clients["json.loads rows"] = lambda: json.loads(rows_reply)
    clients["Image.list()"] = Image.list
    if base:
        base_cli, base_sock = cli_path(base[0]), base[1]
        assert len(raw_call(base_sock, "image.list", {})) == size
        clients["base ls"] = lambda: run([base_cli, "--socket", base_sock, "ls"])
        clients["base raw image.list"] = lambda: raw_list(base_sock)
        base_touch = lambda: raw_call(  # noqa: E731
            base_sock, "pin.add", {"kind": "sandbox", "name": "bench-list", "reference": newest})
        clients["base raw rows, changed"] = (base_touch, lambda: raw_list(base_sock, LIST_ROWS_REQUEST))
    medians = await time_interleaved(clients, rounds)
    return {"images": size, "reply_bytes": len(reply), "rows_reply_bytes": len(rows_reply), "median_ms": medians}


async def bench(
    sock: str, kit: ImageKit, sizes: list[int], rounds: int, base: tuple[Path, str] | None
) -> list[dict[str, Any]]:
    results, have = [], 0
    for size in sizes:
        layout = tag_layout(kit, have, size - have)
        loaded = await Image.load(layout)
        assert len(loaded) == size - have
        if base:
            raw_call(base[1], "image.load", {"path": str(layout)})
        have = size
        results.append(await measure(size, sock, rounds, base))
    await microsandbox.aclose()
    return results


def report(results: list[dict[str, Any]]) -> bool:
    ok = True
    for r in results:
        m = r["median_ms"]
        print(f"{r['images']} images, reply {r['reply_bytes'] / 1e6:.2f} MB, in rows {r['rows_reply_bytes'] / 1e6:.2f} MB")
        for name, ms in m.items():
            print(f"  {name:<16} {ms:8.2f} ms")
        ls_net = m["ls"] - m["true"]
        print(f"  ls - true = {ls_net:.2f} ms; ls / raw image.list = {ls_net / m['raw image.list']:.2f}x")
        if "base ls" in m:
            print(
                f"  after/before: ls {m['ls'] / m['base ls']:.2f}x, "
                f"raw image.list {m['raw image.list'] / m['base raw image.list']:.2f}x, "
                f"raw rows after a change {m['raw rows, changed'] / m['base raw rows, changed']:.2f}x"
            )
        print(f"  Image.list() / (raw rows + json.loads rows) = {m['Image.list()'] / (m['raw rows'] + m['json.loads rows']):.2f}x")
        if r["images"] == 5_000:
            ok &= m["ls"] < TARGET_LS_5K_MS and m["raw image.list"] < TARGET_RAW_5K_MS
        if r["images"] == 10_000:
            ok &= m["Image.list()"] < TARGET_SDK_10K_MS
    print(
        f"targets: ls(5,000) < {TARGET_LS_5K_MS:.0f} ms, raw image.list(5,000) < {TARGET_RAW_5K_MS:.0f} ms, "
        f"Image.list()(10,000) < {TARGET_SDK_10K_MS:.0f} ms: {'met' if ok else 'NOT met'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--sizes", default="5000,10000", help="reference counts to measure at, ascending")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--baseline-build", type=Path, help="another build directory to compare with")
    parser.add_argument("--keep", action="store_true", help="print the socket and wait (for profiling)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msb-bench-", dir="/tmp") as tmp:
        kit = ImageKit(Path(tmp) / "images")
        daemon = Daemon(Path(tmp) / "d", log_level="warning")
        daemon.start()
        baseline = None
        if args.baseline_build:
            baseline = Daemon(Path(tmp) / "base", log_level="warning",
                              binary=args.baseline_build.resolve() / "daemon" / "msb-imaged")
            baseline.start()
        try:
            os.environ["MSB_IMAGED_SOCKET"] = str(daemon.socket_path)
            sizes = [int(n) for n in args.sizes.split(",")]
            base = (args.baseline_build.resolve(), str(baseline.socket_path)) if baseline else None
            results = asyncio.run(bench(str(daemon.socket_path), kit, sizes, args.rounds, base))
            if args.keep:
                print(f"socket {daemon.socket_path} pid {daemon.proc.pid}; press Enter to stop", flush=True)
                sys.stdin.readline()
        finally:
            daemon.close()
            if baseline:
                baseline.close()
    load = os.getloadavg()
    print(f"host: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ok = report(results)
    if args.json:
        args.json.write_text(json.dumps({"host": {"loadavg": load}, "results": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
