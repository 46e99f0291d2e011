#!/usr/bin/env python3
"""Benchmark: image.pull end to end against skopeo, on loopback and through
a throttled link.

Builds a Debian-minbase-sized root filesystem layer (a tar of this Debian
host's /usr, /etc and /var/lib/dpkg, gzip-compressed with pigz to about
--gzip-mb MB; there is no network to fetch the real minbase image), pushes
it with skopeo to a docker-registry on loopback, then measures, interleaved
run by run, medians of --runs:

  skopeo            skopeo copy docker://... oci:... (fetch and verify only)
  pull              image.pull into an empty store of the real msb-imaged
                    (download, sha256, EROFS conversion, fsmeta, VMDK, commit)
  pull (baseline)   the same with --baseline-daemon (another build's
                    msb-imaged, e.g. main's), when given
  ... @ N MB/s      the same three through a TCP proxy on loopback that
                    forwards at most --throttle-mbps MB/s (a token bucket,
                    both directions; 0 skips these rows)
  load              image.load of the same image from the OCI layout on
                    disk into an empty store of a new msb-imaged: the same
                    conversion, fsmeta, VMDK and commit without the network,
                    the floor a pull stands on (bench/erofs shows it is the
                    disk's durable write of the EROFS image here)
  igzip, gunzip     igzip -dc (ISA-L, the daemon's inflater) and
                    libdeflate-gunzip of the blob to /dev/null, once a run
  cached            a second image.pull of the pulled image (median of 200)

Targets (issue 12): pull <= 1.15x skopeo on loopback and <= 1.05x through
40 MB/s; a cached pull under 1 ms.

--perf FILE records one more pull (loopback) with `perf record -g -p PID`
and prints where its time went, by thread and by symbol.

Usage: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 bench/pull/bench_pull.py
         [--gzip-mb 95] [--runs 5] [--throttle-mbps 40] [--baseline-daemon PATH] [--perf FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "tests" / "pull"))

from msbtest.daemon import Daemon  # noqa: E402
from msbtest.imagekit import host_platform  # noqa: E402
from registry_harness import Registry, free_port, push  # noqa: E402

ROOTS = ["usr/bin", "usr/sbin", "usr/lib", "usr/libexec", "usr/share", "etc", "var/lib/dpkg"]
GZIP_RATIO_GUESS = 0.38


def build_rootfs_tar(dest: Path, budget: int) -> int:
    """A tar of host files in a stable order until `budget` bytes of content."""
    total = 0
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for root in ROOTS:
            for dirpath, dirnames, filenames in os.walk("/" + root):
                dirnames.sort()
                for name in sorted(filenames) + []:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if not (os.path.islink(path) or os.path.isfile(path)):
                        continue
                    if total >= budget:
                        return total
                    try:
                        tar.add(path, arcname=path.lstrip("/"), recursive=False)
                    except (OSError, PermissionError):
                        continue
                    total += st.st_size if os.path.isfile(path) and not os.path.islink(path) else 0
    return total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def put_blob(layout: Path, path: Path | None = None, data: bytes | None = None) -> tuple[str, int]:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    if data is not None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest[7:]).write_bytes(data)
        return digest, len(data)
    digest = sha256_file(path)
    shutil.copyfile(path, blobs / digest[7:])
    return digest, path.stat().st_size


def build_layout(work: Path, gzip_mb: int) -> tuple[Path, dict]:
    tar_path, gz_path = work / "rootfs.tar", work / "rootfs.tar.gz"
    build_rootfs_tar(tar_path, int(gzip_mb * 1024 * 1024 / GZIP_RATIO_GUESS))
    with open(gz_path, "wb") as out:
        subprocess.run(["pigz", "-6", "-n", "-c", str(tar_path)], stdout=out, check=True)
    layout = work / "layout"
    layer_digest, layer_size = put_blob(layout, gz_path)
    diff_id = sha256_file(tar_path)
    os_, arch = host_platform().split("/")[:2]
    config = json.dumps({"architecture": arch, "os": os_, "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg_digest, cfg_size = put_blob(layout, data=config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cfg_digest, "size": cfg_size},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": layer_digest, "size": layer_size}]}).encode()
    m_digest, m_size = put_blob(layout, data=manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
         "annotations": {"org.opencontainers.image.ref.name": "minbase:v1"}}]}))
    tar_path.unlink()
    return layout, {"blob": gz_path, "layer_digest": layer_digest, "layer_size": layer_size,
                    "manifest_digest": m_digest}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def child_cpu(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child processes fn ran and reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(fn)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The throttling proxy. Bytes are forwarded in pieces of at most
# PROXY_CHUNK_BYTES; the bucket holds at most PROXY_BURST_BYTES, so the
# link never delivers more than that above its rate.
PROXY_CHUNK_BYTES = 64 * 1024
PROXY_BURST_BYTES = 256 * 1024
# How many symbols of each thread the perf summary shows.
PERF_SYMBOLS_PER_THREAD = 8


class TokenBucket:
    """A link's capacity in one direction, shared by every connection: a
    piece waits until the bucket has refilled what it takes (the balance may
    go negative, so that waiters queue in the order they came)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = float(PROXY_BURST_BYTES)
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(float(PROXY_BURST_BYTES), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class ThrottleProxy:
    """A TCP proxy on 127.0.0.1:<free port> to 127.0.0.1:upstream that
    forwards at most rate bytes a second each way: a slow link to the
    registry on loopback. Plain TCP, so TLS attempts and plain HTTP pass
    alike. Runs its own asyncio loop on a thread of the benchmark."""

    def __init__(self, upstream: int, rate: float):
        self.upstream = upstream
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.down = TokenBucket(rate)
        self.up = TokenBucket(rate)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader, writer, bucket: TokenBucket) -> None:
        try:
            while data := await reader.read(PROXY_CHUNK_BYTES):
                await bucket.take(len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, creader, cwriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(self._pipe(creader, uwriter, self.up), self._pipe(ureader, cwriter, self.down))

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.ready.set()
        async with self.server:
            await self.server.serve_forever()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass

    def start(self) -> "ThrottleProxy":
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the throttling proxy did not start")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(self.loop)])
        self.thread.join(10)


# The progress events whose times the benchmark shows: when the manifest
# and config were in, when the last byte of the layers was, when the last
# layer was converted.
PHASES = ("resolved", "layer-downloaded", "layer-converted")


def pull_with_marks(socket_path: Path, ref: str) -> tuple[dict, float, dict[str, float]]:
    """image.pull over a connection of its own, timing its progress events
    as they arrive: (the answer's result, wall s, {event: s since the
    request}, the last of each kind)."""
    marks: dict[str, float] = {}
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(socket_path))
        f = sock.makefile("rb")
        t0 = time.perf_counter()
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "image.pull",
                                 "params": {"reference": ref}}).encode() + b"\n")
        while line := f.readline():
            t = time.perf_counter() - t0
            msg = json.loads(line)
            if msg.get("id") == 1:
                if "error" in msg:
                    raise RuntimeError(f"image.pull failed: {msg['error']}")
                return msg["result"], t, marks
            marks[msg.get("params", {}).get("event", "")] = t
    raise RuntimeError("the daemon hung up during image.pull")


@contextlib.contextmanager
def fresh_daemon(workdir: Path, binary: Path | None) -> Iterator[Daemon]:
    """A new daemon (of binary, else MSB_BUILD_DIR's) on an empty store,
    stopped and its store deleted afterwards."""
    d = Daemon(workdir, log_level="info", binary=binary)
    d.start()
    try:
        yield d
    finally:
        d.close()
        shutil.rmtree(d.store, ignore_errors=True)


def pull_once(workdir: Path, binary: Path | None, ref: str, manifest_digest: str, cached: list | None = None,
              perf: Path | None = None, phases: list | None = None) -> tuple[float, float]:
    """One image.pull into the empty store of a new daemon: (wall s, daemon CPU s).
    With cached, then 200 pulls of the cached image (their times appended).
    With perf, the pull is recorded there and summarised. With phases, the
    times of its progress events (PHASES) are appended."""
    recorder = None
    with fresh_daemon(workdir, binary) as d:
        try:
            rpc = d.client(timeout=600)
            if perf:
                recorder = subprocess.Popen(["perf", "record", "-g", "-o", str(perf), "-p", str(d.pid)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            cpu0 = proc_cpu(d.pid)
            handle, wall, marks = pull_with_marks(d.socket_path, ref)
            cpu = proc_cpu(d.pid) - cpu0
            if phases is not None:
                phases.append(marks)
            if recorder:
                recorder.send_signal(2)
                recorder.wait(timeout=120)
                recorder = None
                perf_summary(perf, d.pid)
            assert handle["manifest_digest"] == manifest_digest, handle
            if cached is not None:
                for _ in range(200):
                    t0 = time.perf_counter()
                    rpc.call("image.pull", {"reference": ref})
                    cached.append(time.perf_counter() - t0)
            return wall, cpu
        finally:
            if recorder:
                recorder.kill()
                recorder.wait()


def load_once(workdir: Path, layout: Path, manifest_digest: str) -> tuple[float, float]:
    """One image.load of the layout into the empty store of a new daemon:
    (wall s, daemon CPU s)."""
    with fresh_daemon(workdir, None) as d:
        rpc = d.client(timeout=600)
        cpu0 = proc_cpu(d.pid)
        t0 = time.perf_counter()
        loaded = rpc.call("image.load", {"path": str(layout)})
        wall = time.perf_counter() - t0
        cpu = proc_cpu(d.pid) - cpu0
        assert any(h["manifest_digest"] == manifest_digest for h in loaded), loaded
        return wall, cpu


def perf_summary(data: Path, pid: int) -> None:
    """Where the recorded pull's time went: each thread's share of the
    samples (the loop thread is the daemon's pid) and its top symbols. A
    library without symbols (libcrypto: its sha256) counts as one entry."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,ip,sym,dso", "-G"],
                         capture_output=True, text=True).stdout
    by_thread: dict[int, int] = {}
    by_sym: dict[tuple[int, str], int] = {}
    total = 0
    for line in out.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        tid = int(fields[0])
        sym, _, dso = fields[2].rpartition(" (")
        dso = os.path.basename(dso.rstrip(")"))
        name = f"{dso} (no symbols)" if sym.startswith("[unknown]") or not sym else f"{sym} [{dso}]"
        by_thread[tid] = by_thread.get(tid, 0) + 1
        by_sym[tid, name] = by_sym.get((tid, name), 0) + 1
        total += 1
    if not total:
        print("perf: no samples")
        return
    print(f"perf record -g of the pull: {total} samples; by thread (the loop thread is {pid}), top symbols:")
    for tid, n in sorted(by_thread.items(), key=lambda kv: -kv[1]):
        if n / total < 0.01:
            break
        print(f"  thread {tid}{' (loop)' if tid == pid else ''}: {100 * n / total:5.1f}%")
        syms = sorted(((k, name) for (t, name), k in by_sym.items() if t == tid), reverse=True)
        for k, name in syms[:PERF_SYMBOLS_PER_THREAD]:
            if k / total < 0.005:
                break
            print(f"      {100 * k / total:5.1f}%  {name}")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gzip-mb", type=int, default=95)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--throttle-mbps", type=float, default=40.0,
                    help="the throttled link's rate, MB/s (10^6 bytes); 0: no throttled rows")
    ap.add_argument("--baseline-daemon", type=Path, help="another msb-imaged to measure in the same runs")
    ap.add_argument("--perf", type=Path, help="record one more loopback pull with perf record -g into this file")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="msb-bench-pull-", dir="/tmp"))
    reg = proxy = None
    try:
        layout, info = build_layout(work, args.gzip_mb)
        reg = Registry(work / "registry").start()
        path = "bench/minbase:v1"
        push(layout, "minbase:v1", f"{reg.host}/{path}")
        print(f"layer: {info['layer_size'] / 1e6:.1f} MB gzip ({info['layer_digest'][:19]}...)", flush=True)
        links = [("loopback", reg.host)]
        if args.throttle_mbps > 0:
            proxy = ThrottleProxy(reg.port, args.throttle_mbps * 1e6).start()
            links.append((f"{args.throttle_mbps:g} MB/s", proxy.host))

        def skopeo_once(host: str):
            dest = work / "skopeo-out"
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{host}/{path}",
                            f"oci:{dest}:v1"], check=True, capture_output=True)

        def inflate(tool: str):
            subprocess.run([tool, "-dc" if tool == "igzip" else "-c", str(info["blob"])], check=True,
                           stdout=subprocess.DEVNULL)

        daemons = [("pull", None)]
        if args.baseline_daemon:
            daemons.append(("pull (baseline)", args.baseline_daemon.resolve()))
        wall: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        cached: dict[str, list[float]] = {}
        phases: dict[str, list[dict[str, float]]] = {}
        reg_cpu: dict[str, list[float]] = {}  # the registry's CPU while serving each
        n = 0
        for run in range(args.runs):
            for tool in ("igzip", "libdeflate-gunzip"):
                w, c = child_cpu(lambda: inflate(tool))
                wall.setdefault(tool, []).append(w)
                cpu.setdefault(tool, []).append(c)
            w, c = load_once(work / f"daemon-{n}", layout, info["manifest_digest"])
            n += 1
            wall.setdefault("load", []).append(w)
            cpu.setdefault("load", []).append(c)
            for link, host in links:
                # Alternate the order run by run: neither side always goes first.
                order = [("skopeo", None)] + daemons
                if run % 2:
                    order.reverse()
                for name, binary in order:
                    key = f"{name} @ {link}"
                    reg_cpu0 = proc_cpu(reg.proc.pid)
                    if name == "skopeo":
                        w, c = child_cpu(lambda: skopeo_once(host))
                    else:
                        want_cached = cached.setdefault(name, []) if run == 0 and link == "loopback" else None
                        w, c = pull_once(work / f"daemon-{n}", binary, f"{host}/{path}", info["manifest_digest"],
                                         want_cached, phases=phases.setdefault(key, []))
                        n += 1
                    wall.setdefault(key, []).append(w)
                    cpu.setdefault(key, []).append(c)
                    reg_cpu.setdefault(key, []).append(proc_cpu(reg.proc.pid) - reg_cpu0)

        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs;"
              f" medians of {args.runs} runs")
        print(f"{'':34} {'wall s':>8} {'CPU s':>7} {'reg CPU':>7}  ratio")
        for tool in ("igzip", "libdeflate-gunzip"):
            print(f"{tool + ' of the blob':34} {median(wall[tool]):8.3f} {median(cpu[tool]):7.3f}")
        print(f"{'image.load of the layout':34} {median(wall['load']):8.3f} {median(cpu['load']):7.3f}"
              f"          runs: {' '.join(f'{x:.3f}' for x in wall['load'])}")
        ok = True
        for link, _ in links:
            base = median(wall[f"skopeo @ {link}"])
            target = 1.15 if link == "loopback" else 1.05
            key = f"skopeo @ {link}"
            print(f"{'skopeo copy @ ' + link:34} {base:8.3f} {median(cpu[key]):7.3f} {median(reg_cpu[key]):7.3f}"
                  f"  runs: {' '.join(f'{x:.3f}' for x in wall[key])}")
            for name, _ in daemons:
                key = f"{name} @ {link}"
                ratio = median(wall[key]) / base
                print(f"{'image.' + key:34} {median(wall[key]):8.3f} {median(cpu[key]):7.3f} "
                      f"{median(reg_cpu[key]):7.3f}  {ratio:.2f}x skopeo (target <= {target}x){'' if name == 'pull' else ' '}"
                      f"  runs: {' '.join(f'{x:.3f}' for x in wall[key])}")
                marks = phases[key]
                print(f"{'':34}   events at (median s): " + ", ".join(
                    f"{ev} {median([m[ev] for m in marks if ev in m]):.3f}" for ev in PHASES))
                print(f"{'':34}   {median(wall[key]) / median(wall['load']):.2f}x image.load of the same image")
                if name == "pull":
                    ok = ok and ratio <= target
        for name, _ in daemons:
            xs = sorted(cached[name])
            ms = median(xs) * 1000
            print(f"{'image.' + name + ' cached (median)':34} {ms:8.3f} ms   (target < 1 ms; p99 "
                  f"{xs[int(len(xs) * 0.99) - 1] * 1000:.3f} ms)")
            if name == "pull":
                ok = ok and ms < 1
        if args.perf:
            w, c = pull_once(work / "daemon-perf", None, f"{reg.host}/{path}", info["manifest_digest"],
                             perf=args.perf)
            print(f"(the recorded pull: {w:.3f} s wall, {c:.3f} s CPU)")
        print("PASS" if ok else "MISS")
        return 0
    finally:
        if proxy:
            proxy.stop()
        if reg:
            reg.stop()
        if os.environ.get("MSB_BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
