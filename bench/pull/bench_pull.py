#!/usr/bin/env python3
"""Benchmark: image.pull end to end against skopeo and libdeflate-gunzip.

Builds a Debian-minbase-sized root filesystem layer (a tar of this Debian
host's /usr, /etc and /var/lib/dpkg, gzip-compressed with pigz to about
--gzip-mb MB; there is no network to fetch the real minbase image), pushes
it with skopeo to a docker-registry on loopback, then measures, best of
--runs:

  skopeo   skopeo copy docker://... oci:... (fetch and verify only)
  gunzip   libdeflate-gunzip of the same blob to /dev/null
  pull     image.pull into an empty store of the real msb-imaged
           (download, sha256, EROFS conversion, fsmeta, VMDK, commit)
  cached   a second image.pull of the cached image (median of 200)

Targets (issue 4): pull within 1.3x of skopeo; cached under 5 ms.
Usage: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 bench/pull/bench_pull.py [--gzip-mb 95] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "tests" / "pull"))

from msbtest.daemon import Daemon  # noqa: E402
from msbtest.imagekit import host_platform  # noqa: E402
from registry_harness import Registry, push  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gzip-mb", type=int, default=95)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="msb-bench-pull-", dir="/tmp"))
    reg = None
    try:
        layout, info = build_layout(work, args.gzip_mb)
        reg = Registry(work / "registry").start()
        ref = f"{reg.host}/bench/minbase:v1"
        push(layout, "minbase:v1", ref)
        print(f"layer: {info['layer_size'] / 1e6:.1f} MB gzip ({info['layer_digest'][:19]}...)", flush=True)

        def skopeo_once():
            dest = work / "skopeo-out"
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:v1"],
                           check=True, capture_output=True)

        def gunzip_once():
            subprocess.run(["libdeflate-gunzip", "-c", str(info["blob"])], check=True, stdout=subprocess.DEVNULL)

        skopeo_runs = [child_cpu(skopeo_once) for _ in range(args.runs)]
        gunzip_runs = [child_cpu(gunzip_once) for _ in range(args.runs)]
        skopeo, skopeo_cpu = min(skopeo_runs)
        gunzip, gunzip_cpu = min(gunzip_runs)

        pulls = []
        pull_cpus = []
        cached = []
        for i in range(args.runs):
            d = Daemon(work / f"daemon-{i}", log_level="info")
            d.start()
            try:
                rpc = d.client(timeout=600)
                cpu0 = proc_cpu(d.pid)
                t0 = time.perf_counter()
                handle = rpc.call("image.pull", {"reference": ref}, timeout=600)
                pulls.append(time.perf_counter() - t0)
                pull_cpus.append(proc_cpu(d.pid) - cpu0)
                assert handle["manifest_digest"] == info["manifest_digest"], handle
                if i == 0:
                    for _ in range(200):
                        t0 = time.perf_counter()
                        rpc.call("image.pull", {"reference": ref})
                        cached.append(time.perf_counter() - t0)
            finally:
                d.close()
                shutil.rmtree(d.store, ignore_errors=True)

        pull = min(pulls)
        pull_cpu = min(pull_cpus)
        cached_ms = statistics.median(cached) * 1000
        ratio = pull / skopeo
        print(f"load average at the end:      {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"skopeo copy (fetch+verify):   {skopeo:7.3f} s wall, {skopeo_cpu:6.3f} s CPU")
        print(f"libdeflate-gunzip:            {gunzip:7.3f} s wall, {gunzip_cpu:6.3f} s CPU")
        print(f"image.pull (end to end):      {pull:7.3f} s wall, {pull_cpu:6.3f} s CPU (daemon)"
              f"   = {ratio:.2f}x skopeo (target <= 1.3x)")
        print(f"image.pull cached (median):   {cached_ms:7.3f} ms  (target < 5 ms; p99 "
              f"{sorted(cached)[int(len(cached) * 0.99) - 1] * 1000:.3f} ms)")
        ok = ratio <= 1.3 and cached_ms < 5
        print("PASS" if ok else "MISS")
        return 0
    finally:
        if reg:
            reg.stop()
        if os.environ.get("MSB_BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
