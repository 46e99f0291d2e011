#!/usr/bin/python3
"""The daemon's memory and descriptors over load/remove/prune cycles (issue 12).

    MSB_BUILD_DIR=$PWD/build /usr/bin/python3 bench/memory/bench_rss.py [--cycles 100] [--json OUT]

Starts msb-imaged on a temporary store, builds one image of about 20 MB of
incompressible files with umoci, and runs --cycles times: image.load of its
OCI layout, image.remove of the reference, image.prune (which deletes the
now unreferenced blobs and EROFS layers). After each cycle it reads the
daemon's VmRSS and VmHWM from /proc/PID/status and counts /proc/PID/fd.

Reported: idle RSS (after start, before any call), RSS after the first
cycle, after the last, the largest RSS growth over the last half of the
cycles (a plateau shows none), and the descriptor counts. Targets: idle
RSS <= 8 MiB, the last RSS within 16 MiB of the first cycle's, no growth of
descriptors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lib"))

from msbtest.daemon import Daemon  # noqa: E402
from msbtest.rpc import RpcClient  # noqa: E402
from msbtest.imagekit import ImageKit  # noqa: E402

IMAGE_MIB = 20
FILE_MIB = 2
TARGET_IDLE_MIB = 8.0
TARGET_GROWTH_MIB = 16.0
REFERENCE = "example.com/bench/rss:v1"


def call(path: str, method: str, params: dict[str, Any]) -> Any:
    """One call on a connection of its own (msbtest's client: errors raise)."""
    with RpcClient(path, timeout=600) as c:
        return c.call(method, params)


def sample(pid: int) -> dict[str, int]:
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                status[key] = int(value.split()[0])
    status["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return status


def build_image(kit: ImageKit) -> Path:
    # Random bytes: gzip cannot shrink them, so the layer is really ~20 MB.
    files = {f"data/blob{i}": os.urandom(FILE_MIB << 20) for i in range(IMAGE_MIB // FILE_MIB)}
    return kit.image(REFERENCE, layers=[files]).layout.path


def run(cycles: int, extra_args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="msb-bench-", dir="/tmp") as tmp:
        layout = build_image(ImageKit(Path(tmp) / "images"))
        daemon = Daemon(Path(tmp) / "d", log_level="warning", extra_args=extra_args)
        daemon.start()
        try:
            sock, pid = str(daemon.socket_path), daemon.pid
            time.sleep(0.5)
            idle = sample(pid)
            per_cycle = []
            t0 = time.perf_counter()
            for _ in range(cycles):
                call(sock, "image.load", {"path": str(layout)})
                call(sock, "image.remove", {"reference": REFERENCE})
                call(sock, "image.prune", {})
                per_cycle.append(sample(pid))
            elapsed = time.perf_counter() - t0
            time.sleep(1.0)
            after_idle = sample(pid)
        finally:
            daemon.close()
    return {"idle": idle, "cycles": per_cycle, "after_idle": after_idle, "seconds": elapsed}


def report(r: dict[str, Any]) -> bool:
    cycles = r["cycles"]
    mib = lambda kib: kib / 1024  # noqa: E731
    first, last = cycles[0], cycles[-1]
    half = cycles[len(cycles) // 2 :]
    late_growth = max(c["VmRSS"] for c in half) - half[0]["VmRSS"]
    print(f"{len(cycles)} cycles of load/remove/prune of a {IMAGE_MIB} MB image in {r['seconds']:.1f} s")
    i = r["idle"]
    print(
        f"  idle:          VmRSS {mib(i['VmRSS']):6.1f} MiB (anon {mib(i['RssAnon']):5.1f}, file {mib(i['RssFile']):5.1f}), "
        f"{i['fds']} fds, {i['Threads']} threads"
    )
    for n in sorted({1, 2, 5, 10, 25, 50, len(cycles)}):
        if n <= len(cycles):
            c = cycles[n - 1]
            print(
                f"  after {n:>3}:     VmRSS {mib(c['VmRSS']):6.1f} MiB (anon {mib(c['RssAnon']):5.1f}, "
                f"file {mib(c['RssFile']):5.1f}), VmHWM {mib(c['VmHWM']):6.1f} MiB, {c['fds']} fds, "
                f"{c['Threads']} threads"
            )
    a = r["after_idle"]
    print(f"  1 s later:     VmRSS {mib(a['VmRSS']):6.1f} MiB, {a['fds']} fds")
    growth = mib(last["VmRSS"] - first["VmRSS"])
    print(f"  growth first->last cycle {growth:+.1f} MiB; over the last half {mib(late_growth):+.1f} MiB")
    idle_ok = mib(r["idle"]["VmRSS"]) <= TARGET_IDLE_MIB
    growth_ok = mib(last["VmRSS"] - r["idle"]["VmRSS"]) <= TARGET_GROWTH_MIB
    # Counted when the daemon is quiet: right after a call, the connection
    # the benchmark just closed may still be open on the daemon's side.
    fds_ok = r["after_idle"]["fds"] <= r["idle"]["fds"]
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(
        f"targets: idle <= {TARGET_IDLE_MIB:.0f} MiB {verdict(idle_ok)}; last cycle within "
        f"{TARGET_GROWTH_MIB:.0f} MiB of idle {verdict(growth_ok)}; no fd growth {verdict(fds_ok)}"
    )
    ok = idle_ok and growth_ok and fds_ok
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the samples to this file")
    parser.add_argument("--daemon-arg", action="append", default=[], help="an extra daemon argument")
    args = parser.parse_args()
    r = run(args.cycles, args.daemon_arg)
    ok = report(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
