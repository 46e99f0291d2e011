"""Pull integration tests: the real msb-imaged pulling from real registries
on loopback (docker-registry started here, images pushed with skopeo).

Run: MSB_BUILD_DIR=/tmp/build-x /usr/bin/python3 -m pytest -W error -q tests/pull
"""

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))
sys.path.insert(0, str(HERE))

from msbtest.fixtures import *  # noqa: E402,F401,F403
from msbtest.imagekit import Config, ImageKit, host_platform  # noqa: E402
from registry_harness import TEST_IDENTITY_TOKEN, TEST_PASSWORD, TEST_USER, Registry, TokenServer, push  # noqa: E402


class Published:
    """Images pushed to one plain registry, with the truth about each."""

    def __init__(self, registry: Registry, kit: ImageKit):
        self.registry = registry
        self.kit = kit
        self.images = {}

    def add(self, name: str, image, layout_ref: str) -> str:
        push(image.layout.path, layout_ref, f"{self.registry.host}/{name}")
        self.images[name] = image
        return f"{self.registry.host}/{name}"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One plain registry per test module with these repositories:

    test/small:v1     two layers
    test/multi:v1     an index: the host platform and one other
    test/base-a:v1    shares its first layer with test/base-b:v1
    test/big:v1       one 8 MiB layer (progress events)
    """
    work = tmp_path_factory.mktemp("registry")
    kit = ImageKit(work / "images")
    reg = Registry(work / "reg").start()
    pub = Published(reg, kit)
    try:
        small = kit.image("small:v1", layers=[{"etc/hello": b"hello\n", "bin/tool": b"#!/bin/sh\necho tool\n"},
                                              {"etc/motd": b"second layer\n"}],
                          config=Config(env=["A=1"], cmd=["sh"]))
        pub.add("test/small:v1", small, "small:v1")

        host = host_platform()
        other = "linux/arm64" if host != "linux/arm64" else "linux/amd64"
        h_os, h_arch = host.split("/")[:2]
        o_os, o_arch = other.split("/")[:2]
        img_host = kit.image("mh:v1", layers=[{"etc/which": host.encode()}],
                             config=Config(os=h_os, architecture=h_arch))
        img_other = kit.image("mo:v1", layers=[{"etc/which": other.encode()}],
                              config=Config(os=o_os, architecture=o_arch))
        idx = kit.platform_index("multi:v1", {host: img_host, other: img_other})
        push(idx.layout.path, "multi:v1", f"{reg.host}/test/multi:v1")
        pub.images["test/multi:v1"] = idx
        pub.other_platform = other

        base = {"usr/lib/base.bin": ImageKit.unique_bytes(512 * 1024)}
        lay = kit.layout("shared")
        a = lay.add_image("base-a:v1", layers=[base, {"etc/a": b"a\n"}])
        b = lay.add_image("base-b:v1", layers=[base, {"etc/b": b"b\n"}])
        assert a.layers[0].blob_digest == b.layers[0].blob_digest
        pub.add("test/base-a:v1", a, "base-a:v1")
        pub.add("test/base-b:v1", b, "base-b:v1")

        big = kit.image("big:v1", layers=[{"data/big": ImageKit.unique_bytes(8 * 1024 * 1024)}])
        pub.add("test/big:v1", big, "big:v1")
        yield pub
    finally:
        reg.stop()


@pytest.fixture
def pull_daemon(daemon_factory, short_tmp):
    """pull_daemon(config=None, name="daemon") -> a started Daemon with that
    JSON config (--config) and an empty HOME (no ~/.docker/config.json)."""

    def make(config: dict | None = None, name: str = "daemon", env_extra: dict | None = None):
        home = short_tmp / f"{name}-home"
        home.mkdir(exist_ok=True)
        args = []
        if config is not None:
            path = short_tmp / f"{name}-config.json"
            path.write_text(json.dumps(config))
            args = ["--config", str(path)]
        import os
        env = dict(os.environ, HOME=str(home))
        env.pop("DOCKER_CONFIG", None)
        env.update(env_extra or {})
        return daemon_factory(name=name, extra_args=args, env=env)

    return make


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, published):
    """(Registry, TokenServer): a registry whose token server wants
    TEST_USER/TEST_PASSWORD, or TEST_IDENTITY_TOKEN as a refresh token
    (registry_harness), holding test/small:v1."""
    work = tmp_path_factory.mktemp("token")
    token = TokenServer(work / "ts", users={TEST_USER: TEST_PASSWORD},
                        refresh_tokens={TEST_IDENTITY_TOKEN: TEST_USER}).start()
    reg = Registry(work / "reg", token=token).start()
    try:
        img = published.images["test/small:v1"]
        push(img.layout.path, "small:v1", f"{reg.host}/test/small:v1", creds=f"{TEST_USER}:{TEST_PASSWORD}")
        yield reg, token
    finally:
        reg.stop()
        token.stop()
