#!/usr/bin/python3
"""Latency of the Python SDK against a raw-socket client, on the real daemon.

    MSB_BUILD_DIR=/tmp/build-sdk /usr/bin/python3 bench/sdk/bench_sdk.py [--json OUT]

Starts msb-imaged on a temporary store, loads one image built with umoci
under 1,000 references (one OCI layout whose index names the same manifest
1,000 times), measures, adds 9,000 more references, measures again.

For each size it times, sequentially, each client on its own connection,
the three clients taking turns round by round, after a warm-up:
  - `await Image.get(ref)`  vs the same request from a raw asyncio client
    (open_unix_connection, write a line, readuntil, json.loads) and from a
    raw blocking socket;
  - `await Image.list()`    vs the same two raw clients.
The raw clients decode the JSON but build no objects; the SDK also builds
the frozen dataclasses. Reported: median and p90 in microseconds, and the
SDK/raw-asyncio ratio. Targets (issue 5): get < 200 us, list of 10,000 <
100 ms, SDK within 2x of the raw client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python-sdk" / "src"))
sys.path.insert(0, str(REPO / "tests" / "lib"))

import microsandbox  # noqa: E402
from microsandbox import Image, ImageHandle  # noqa: E402
from msbtest.daemon import Daemon  # noqa: E402
from msbtest.imagekit import REF_NAME_ANNOTATION, ImageKit  # noqa: E402

GET_ROUNDS = 3000
LIST_ROUNDS = {1_000: 200, 10_000: 40}
TARGET_GET_US = 200.0
TARGET_LIST_10K_US = 100_000.0
TARGET_RATIO = 2.0


def tag_layout(kit: ImageKit, first: int, count: int) -> Path:
    """An OCI layout naming one manifest under refs t{first}..t{first+count-1}."""
    img = kit.image("example.com/bench/img:seed", layers=[{"etc/bench": b"bench\n"}, {"etc/more": b"more\n"}])
    index = img.layout.index()
    entry = dict(index["manifests"][0])
    index["manifests"] = [
        dict(entry, annotations={REF_NAME_ANNOTATION: f"example.com/bench/img:t{i}"}) for i in range(first, first + count)
    ]
    img.layout.write_index(index)
    return img.layout.path


class RawAsyncClient:
    def __init__(self, path: str) -> None:
        self.path = path
        self.next_id = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(self.path, limit=1 << 28)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.writer.write(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).encode() + b"\n")
        reply = json.loads(await self.reader.readuntil(b"\n"))
        return reply["result"]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class RawBlockingClient:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)["result"]

    def close(self) -> None:
        self.sock.close()


async def time_interleaved(clients: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Times each client once per round, in turn, so that all of them see the
    same machine load (the host may be busy with other work)."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    warmup = max(5, rounds // 10)
    for i in range(warmup + rounds):
        for name, call in clients.items():
            t0 = time.perf_counter()
            result = call()
            if asyncio.iscoroutine(result):
                await result
            elapsed = (time.perf_counter() - t0) * 1e6
            if i >= warmup:
                samples[name].append(elapsed)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered),
        "p90_us": ordered[int(len(ordered) * 0.9)],
        "min_us": ordered[0],
        "rounds": len(ordered),
    }


def client_side_cost(reply_line: bytes, rounds: int) -> dict[str, Any]:
    """What the SDK adds on top of the wire for one image.list reply, taken
    from the daemon: decoding the line (a raw client pays that too) and
    building the frozen ImageHandles (only the SDK does), in microseconds."""
    decode, build = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = json.loads(reply_line)["result"]
        t1 = time.perf_counter()
        handles = [ImageHandle._from_wire(item) for item in result]
        t2 = time.perf_counter()
        decode.append((t1 - t0) * 1e6)
        build.append((t2 - t1) * 1e6)
    assert len(handles) == len(result)
    return {"json_loads": summary(decode), "build_handles": summary(build)}


async def measure(size: int, socket_path: str) -> dict[str, Any]:
    ref = "example.com/bench/img:t7"
    raw = RawAsyncClient(socket_path)
    await raw.open()
    blocking = RawBlockingClient(socket_path)
    try:
        assert len(await Image.list()) == size
        get = await time_interleaved(
            {
                "sdk": lambda: Image.get(ref),
                "raw_asyncio": lambda: raw.call("image.get", {"reference": ref}),
                "raw_blocking": lambda: blocking.call("image.get", {"reference": ref}),
            },
            GET_ROUNDS,
        )
        listing = await time_interleaved(
            {
                "sdk": Image.list,
                "raw_asyncio": lambda: raw.call("image.list", {}),
                "raw_blocking": lambda: blocking.call("image.list", {}),
            },
            LIST_ROUNDS.get(size, 40),
        )
        out: dict[str, Any] = {
            "images": size,
            "get": {name: summary(samples) for name, samples in get.items()},
            "list": {name: summary(samples) for name, samples in listing.items()},
        }
        blocking.sock.sendall(b'{"jsonrpc":"2.0","id":0,"method":"image.list","params":{}}\n')
        while b"\n" not in blocking.buf:
            blocking.buf += blocking.sock.recv(1 << 20)
        line, _, blocking.buf = blocking.buf.partition(b"\n")
        out["list"]["client_side"] = client_side_cost(line, LIST_ROUNDS.get(size, 40))
    finally:
        blocking.close()
        await raw.close()
    for op in ("get", "list"):
        out[op]["sdk_over_raw_asyncio"] = out[op]["sdk"]["median_us"] / out[op]["raw_asyncio"]["median_us"]
        out[op]["sdk_over_raw_blocking"] = out[op]["sdk"]["median_us"] / out[op]["raw_blocking"]["median_us"]
    return out


async def bench(socket_path: str, kit: ImageKit, sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    have = 0
    for size in sizes:
        loaded = await Image.load(tag_layout(kit, have, size - have))
        assert len(loaded) == size - have
        have = size
        results.append(await measure(size, socket_path))
    await microsandbox.aclose()
    return results


def report(results: list[dict[str, Any]]) -> bool:
    ok = True
    print(f"{'images':>7} {'call':<5} {'client':<13} {'median us':>11} {'p90 us':>11} {'min us':>11}")
    for r in results:
        for op in ("get", "list"):
            for client in ("sdk", "raw_asyncio", "raw_blocking"):
                s = r[op][client]
                print(f"{r['images']:>7} {op:<5} {client:<13} {s['median_us']:>11.1f} {s['p90_us']:>11.1f} {s['min_us']:>11.1f}")
            if op == "list":
                cs = r[op]["client_side"]
                print(
                    f"{'':>7} {op:<5} in the SDK process: json.loads {cs['json_loads']['median_us']:.0f} us "
                    f"+ building handles {cs['build_handles']['median_us']:.0f} us (median)"
                )
            ratio = r[op]["sdk_over_raw_asyncio"]
            print(f"{'':>7} {op:<5} sdk/raw_asyncio = {ratio:.2f}x, sdk/raw_blocking = {r[op]['sdk_over_raw_blocking']:.2f}x")
            ok &= ratio <= TARGET_RATIO
            if op == "get":
                ok &= r[op]["sdk"]["median_us"] < TARGET_GET_US
            if op == "list" and r["images"] == 10_000:
                ok &= r[op]["sdk"]["median_us"] < TARGET_LIST_10K_US
    print(
        f"targets: get < {TARGET_GET_US:.0f} us, list(10,000) < {TARGET_LIST_10K_US / 1000:.0f} ms, "
        f"sdk/raw_asyncio <= {TARGET_RATIO:.1f}x: {'met' if ok else 'NOT met'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--sizes", default="1000,10000", help="image counts to measure at, ascending")
    parser.add_argument("--log-level", default="warning", help="daemon log level (debug logging costs time)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msb-bench-", dir="/tmp") as tmp:
        kit = ImageKit(Path(tmp) / "images")
        daemon = Daemon(Path(tmp) / "d", log_level=args.log_level)
        daemon.start()
        try:
            os.environ["MSB_IMAGED_SOCKET"] = str(daemon.socket_path)
            results = asyncio.run(bench(str(daemon.socket_path), kit, [int(n) for n in args.sizes.split(",")]))
        finally:
            daemon.close()
    load = os.getloadavg()
    print(f"host: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ok = report(results)
    if args.json:
        host = {"cpus": os.cpu_count(), "loadavg": load}
        args.json.write_text(json.dumps({"host": host, "results": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
