"""Image.pull and Image.pull_with_progress against a real registry.

A docker-registry (distribution) serves on 127.0.0.1 from a temporary
directory; images built with umoci are pushed to it with skopeo. The tests
skip, with the reason, when the registry cannot be started or when the
daemon answers image.pull with method-not-found.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from fakedaemon import run

from microsandbox import (
    Image,
    ImageHandle,
    PullComplete,
    PullLayerCached,
    PullLayerConverted,
    PullResolved,
    PullResolving,
)
from microsandbox.errors import (
    ImageNotFoundError,
    MethodNotFoundError,
    PlatformNotFoundError,
    RemoteNotFoundError,
)

try:
    from msbtest.imagekit import Config
except ImportError:  # pragma: no cover - the harness is part of the repository
    pytest.skip("tests/lib/msbtest is missing", allow_module_level=True)

REGISTRY_START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """docker-registry on a loopback port, storage in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            pytest.skip("docker-registry is not installed")
        config = self.workdir / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        log = open(self.workdir / "registry.log", "wb")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + REGISTRY_START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.skip(f"docker-registry exited with {self.proc.returncode}: {self.log()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"docker-registry did not answer on {self.host}: {self.log()[-500:]}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.workdir / "registry.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def push(self, layout: Path, ref_name: str, repo_tag: str, all_platforms: bool = False) -> str:
        """Copies the layout's image (every platform of an index with
        all_platforms) to the registry; returns the digest the registry
        serves for the tag (sha256 of the raw manifest or index bytes)."""
        target = f"docker://{self.host}/{repo_tag}"
        argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if all_platforms:
            argv.append("--all")
        subprocess.run([*argv, f"oci:{layout}:{ref_name}", target], check=True, capture_output=True)
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", target], check=True, capture_output=True
        ).stdout
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def registry(short_tmp: Path) -> Iterator[Registry]:
    workdir = short_tmp / "registry"
    workdir.mkdir()
    reg = Registry(workdir)
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def pushed(registry: Registry, imagekit: Any) -> tuple[str, str, Any]:
    """An image of two layers in the registry: (reference, manifest digest, truth)."""
    truth = imagekit.image(
        "example.com/src/app:v1",
        layers=[{"etc/one": b"one\n"}, {"etc/two": b"two\n" * 1000}],
        config=Config(cmd=["/bin/true"]),
    )
    reference = f"{registry.host}/test/app:v1"
    digest = registry.push(truth.layout.path, "example.com/src/app:v1", "test/app:v1")
    return reference, digest, truth


async def pull_or_skip(reference: str, **kw: Any) -> ImageHandle:
    try:
        return await Image.pull(reference, **kw)
    except MethodNotFoundError:
        pytest.skip("the daemon has no image.pull yet")


def test_pull_then_get(sdk_daemon: Any, pushed: tuple[str, str, Any]) -> None:
    reference, digest, truth = pushed

    async def main() -> None:
        handle = await pull_or_skip(reference)
        assert isinstance(handle, ImageHandle)
        assert handle.reference == reference
        assert handle.manifest_digest == digest
        assert handle.layer_count == truth.layer_count
        assert handle.architecture == truth.architecture and handle.os == truth.os
        assert await Image.get(reference) == handle or (await Image.get(reference)).manifest_digest == digest
        # A cache hit with the default policy answers the same image.
        again = await Image.pull(reference)
        assert again.manifest_digest == digest
        assert again.last_used_at is not None and handle.last_used_at is not None
        assert again.last_used_at >= handle.last_used_at

    run(main())


def test_pull_with_progress(sdk_daemon: Any, pushed: tuple[str, str, Any]) -> None:
    reference, digest, truth = pushed

    async def main() -> None:
        try:
            async with Image.pull_with_progress(reference, policy="always") as pull:
                events = [event async for event in pull.progress]
                handle = await pull.result()
        except MethodNotFoundError:
            pytest.skip("the daemon has no image.pull yet")
        assert handle.manifest_digest == digest
        assert isinstance(events[0], PullResolving)
        resolved = [e for e in events if isinstance(e, PullResolved)]
        assert len(resolved) == 1
        assert resolved[0].manifest_digest == digest and resolved[0].layer_count == truth.layer_count
        assert resolved[0].total_bytes == truth.size_bytes
        layer_done = [e for e in events if isinstance(e, (PullLayerConverted, PullLayerCached))]
        assert sorted(e.position for e in layer_done) == list(range(truth.layer_count))
        assert isinstance(events[-1], PullComplete) and events[-1].manifest_digest == digest

    run(main())


def test_pull_errors(sdk_daemon: Any, registry: Registry) -> None:
    async def main() -> None:
        try:
            with pytest.raises(RemoteNotFoundError) as info:
                await Image.pull(f"{registry.host}/test/absent:v1")
        except MethodNotFoundError:
            pytest.skip("the daemon has no image.pull yet")
        assert f"{registry.host}/test/absent:v1" in str(info.value)
        with pytest.raises(ImageNotFoundError):
            await Image.pull(f"{registry.host}/test/absent:v1", policy="never")

    run(main())


def test_pull_policy_never_uses_the_cache(sdk_daemon: Any, pushed: tuple[str, str, Any]) -> None:
    reference, digest, _truth = pushed

    async def main() -> None:
        await pull_or_skip(reference)
        cached = await Image.pull(reference, policy="never")
        assert cached.manifest_digest == digest

    run(main())


def test_pull_platform(sdk_daemon: Any, registry: Registry, imagekit: Any) -> None:
    images = {
        plat: imagekit.image(
            f"example.com/src/multi-{plat.replace('/', '-')}:v1",
            layers=[{"etc/arch": plat.encode()}],
            config=Config(architecture=plat.split("/")[1], os="linux"),
        )
        for plat in ("linux/amd64", "linux/arm64")
    }
    index = imagekit.platform_index("example.com/src/multi:v1", images)
    registry.push(index.layout.path, "example.com/src/multi:v1", "test/multi:v1", all_platforms=True)
    reference = f"{registry.host}/test/multi:v1"

    async def main() -> None:
        arm = await pull_or_skip(reference, platform="linux/arm64")
        assert arm.architecture == "arm64" and arm.os == "linux"
        assert arm.manifest_digest == images["linux/arm64"].manifest_digest
        with pytest.raises(PlatformNotFoundError):
            await Image.pull(reference, policy="always", platform="linux/s390x")

    run(main())


def test_concurrent_pulls_get_their_own_progress(sdk_daemon: Any, registry: Registry, imagekit: Any) -> None:
    """Two pulls on the one shared connection: each progress stream carries
    only the events of its own request (params.id)."""
    pushed_images = {}
    for name in ("one", "two"):
        truth = imagekit.image(f"example.com/src/{name}:v1", layers=[{f"etc/{name}": name.encode() * 5000}])
        digest = registry.push(truth.layout.path, f"example.com/src/{name}:v1", f"test/{name}:v1")
        pushed_images[f"{registry.host}/test/{name}:v1"] = digest

    async def pull_one(reference: str) -> tuple[list[Any], ImageHandle]:
        async with Image.pull_with_progress(reference) as pull:
            events = [event async for event in pull.progress]
            return events, await pull.result()

    async def main() -> None:
        try:
            results = await asyncio.gather(*(pull_one(ref) for ref in pushed_images))
        except MethodNotFoundError:
            pytest.skip("the daemon has no image.pull yet")
        for (events, handle), (reference, digest) in zip(results, pushed_images.items()):
            assert handle.reference == reference and handle.manifest_digest == digest
            assert isinstance(events[0], PullResolving) and events[0].reference == reference
            assert [e.manifest_digest for e in events if isinstance(e, (PullResolved, PullComplete))] == [digest, digest]

    run(main())
