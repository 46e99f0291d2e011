"""Crash safety: kill -9 of the daemon during a load, restart, and a
consistent store; durability of what was acknowledged before a crash."""

import os
import signal
import time

import pytest

from msbtest import proto
from msbtest.checks import assert_detail, assert_handle
from msbtest.imagekit import Config
from msbtest.rpc import ConnectionClosed, RpcClient
from msbtest.store import consistency_problems, content_files

BIG_REF = "example.com/crash/big:1"  # the big_image fixture (conftest.py)


def _assert_consistent_after_restart(daemon, imagekit, big_image):
    daemon.start()
    files = content_files(daemon.store)
    assert files["tmp"] == [], f"temporary files survived the start-up sweep: {files['tmp']}"
    with daemon.client() as c:
        listed = c.call("image.list")
        assert consistency_problems(daemon.store, c) == []
        # The load either completed before the kill (then it is whole) or
        # left nothing visible.
        for h in listed:
            assert h["reference"] == BIG_REF
            assert_handle(h, big_image, BIG_REF)
            assert_detail(c.call("image.inspect", {"reference": BIG_REF}), big_image, BIG_REF)
        # A new load works, the interrupted one too.
        small = imagekit.image("example.com/crash/after:1", [{"x": b"after"}])
        c.call("image.load", {"path": str(small.layout.path)})
        c.call("image.load", {"path": str(big_image.layout.path)}, timeout=120)
        assert_detail(c.call("image.inspect", {"reference": BIG_REF}), big_image, BIG_REF)
        assert consistency_problems(daemon.store, c) == []
    daemon.stop()


# A load of big_image takes about 0.25 s without sanitizers: the delays
# land before, inside and (the last) possibly after the load.
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08, 0.15, 0.3, "tmp-file", "layer-file"])
def test_kill9_during_load(daemon, imagekit, big_image, delay):
    c = daemon.client(timeout=120)
    c.send_request("image.load", {"path": str(big_image.layout.path)})
    if isinstance(delay, float):
        time.sleep(delay)
    else:
        # Wait until the load is visibly writing, then kill.
        deadline = time.monotonic() + 30
        kind = "tmp" if delay == "tmp-file" else "layers"
        while not content_files(daemon.store)[kind] and time.monotonic() < deadline:
            time.sleep(0.002)
    daemon.kill9()
    c.close()
    _assert_consistent_after_restart(daemon, imagekit, big_image)


def test_kill9_during_load_with_other_images_present(daemon, imagekit, big_image):
    keep = imagekit.image("example.com/crash/keep:1", [{"k": b"keep"}])
    with daemon.client() as c:
        c.call("image.load", {"path": str(keep.layout.path)})
        c.call("pin.add", {"kind": "sandbox", "name": "keeper", "reference": "example.com/crash/keep:1"})
    c = daemon.client(timeout=120)
    c.send_request("image.load", {"path": str(big_image.layout.path)})
    time.sleep(0.1)
    daemon.kill9()
    c.close()
    daemon.start()
    with daemon.client() as c:
        assert_handle(c.call("image.get", {"reference": "example.com/crash/keep:1"}), keep,
                      "example.com/crash/keep:1")
        assert [p["name"] for p in c.call("pin.list")] == ["keeper"]
        assert consistency_problems(daemon.store, c) == []


def test_acknowledged_load_survives_kill9(daemon, imagekit):
    img = imagekit.image("example.com/crash/acked:1", [{"a": b"a"}, {"b": b"b"}], Config(cmd=["x"]))
    with daemon.client() as c:
        c.call("image.load", {"path": str(img.layout.path)})
        c.call("pin.add", {"kind": "snapshot", "name": "s", "reference": "example.com/crash/acked:1"})
    daemon.kill9()
    daemon.start()
    with daemon.client() as c:
        assert_detail(c.call("image.inspect", {"reference": "example.com/crash/acked:1"}), img,
                      "example.com/crash/acked:1")
        assert [(p["kind"], p["name"]) for p in c.call("pin.list")] == [("snapshot", "s")]
        assert consistency_problems(daemon.store, c) == []


def test_acknowledged_remove_survives_kill9(daemon, imagekit):
    img = imagekit.image("example.com/crash/gone:1", [{"a": b"a"}])
    with daemon.client() as c:
        c.call("image.load", {"path": str(img.layout.path)})
        c.call("image.remove", {"reference": "example.com/crash/gone:1"})
    daemon.kill9()
    daemon.start()
    with daemon.client() as c:
        assert c.call("image.list") == []
        assert consistency_problems(daemon.store, c) == []


def test_sigterm_during_load_exits_cleanly(daemon, imagekit, big_image):
    c = RpcClient(daemon.socket_path, timeout=60)
    try:
        i = c.send_request("image.load", {"path": str(big_image.layout.path)})
        time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        # The load either finishes or is abandoned with shutting-down; a
        # closed connection without an answer is also tolerated.
        try:
            resp = c.wait(i)
            if "error" in resp:
                proto.check_error(resp, "shutting-down")
            else:
                assert resp["result"][0]["manifest_digest"] == big_image.manifest_digest
        except ConnectionClosed:
            pass
    finally:
        c.close()
    assert daemon.stop() == 0
    _assert_consistent_after_restart(daemon, imagekit, big_image)


def test_requests_after_sigterm_are_refused_or_unanswered(daemon, big_image):
    c = RpcClient(daemon.socket_path, timeout=60)
    try:
        c.send_request("image.load", {"path": str(big_image.layout.path)}, id="load")
        time.sleep(0.02)
        daemon.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        try:
            c.send_request("image.load", {"path": str(big_image.layout.path)}, id="late")
            resp = c.wait("late")
            if "error" in resp:
                proto.check_error(resp, "shutting-down")
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            pass
    finally:
        c.close()
    assert daemon.stop() == 0


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.05])
def test_kill9_during_prune_and_remove(daemon, imagekit, delay):
    imgs = [imagekit.image(f"example.com/crash/p{i}:1", [{"f": os.urandom(300_000)}, {"g": f"{i}".encode()}])
            for i in range(6)]
    with daemon.client() as c:
        for img in imgs:
            c.call("image.load", {"path": str(img.layout.path)})
        c.call("pin.add", {"kind": "sandbox", "name": "keep", "reference": "example.com/crash/p0:1"})
    c = daemon.client()
    c.send_request("image.remove", {"reference": "example.com/crash/p1:1"})
    c.send_request("image.prune")
    time.sleep(delay)
    daemon.kill9()
    c.close()
    daemon.start()
    files = content_files(daemon.store)
    assert files["tmp"] == []
    with daemon.client() as c:
        assert consistency_problems(daemon.store, c) == []
        # The pinned image survives whatever the prune got to.
        assert_detail(c.call("image.inspect", {"reference": "example.com/crash/p0:1"}), imgs[0],
                      "example.com/crash/p0:1")
        for h in c.call("image.list"):
            i = int(h["reference"].split("/p")[1].split(":")[0])
            assert_handle(h, imgs[i], h["reference"])
        c.call("image.prune")
        assert [h["reference"] for h in c.call("image.list")] in (["example.com/crash/p0:1"], [])
        assert consistency_problems(daemon.store, c) == []
        c.call("image.load", {"path": str(imgs[3].layout.path)})
        assert_detail(c.call("image.inspect", {"reference": "example.com/crash/p3:1"}), imgs[3],
                      "example.com/crash/p3:1")


def test_concurrent_mixed_operations_keep_the_store_consistent(daemon, imagekit):
    # Eight connections issue loads, removes, prunes, pins and lookups over
    # images that share layers, pipelined, in a fixed pseudo-random order.
    # Every request gets an answer from its documented set, and the store
    # is consistent afterwards.
    import random
    rnd = random.Random(20261127)
    shared = {"shared": os.urandom(200_000)}
    imgs = [imagekit.image(f"example.com/mix/i{i}:1", [shared, {"own": os.urandom(50_000 + i)}]) for i in range(5)]
    allowed = {
        "image.load": set(), "image.remove": {"image-not-found", "image-in-use"}, "image.prune": set(),
        "pin.add": {"image-not-found"}, "pin.remove": {"pin-not-found"}, "image.list": set(),
        "image.inspect": {"image-not-found"}, "system.df": set(),
    }
    clients = [daemon.client(timeout=120) for _ in range(8)]
    sent = []
    for c in clients:
        for _ in range(25):
            i = rnd.randrange(len(imgs))
            ref = f"example.com/mix/i{i}:1"
            method = rnd.choice(list(allowed))
            params = {
                "image.load": {"path": str(imgs[i].layout.path)},
                "image.remove": {"reference": ref, "force": rnd.random() < 0.3},
                "pin.add": {"kind": "sandbox", "name": f"p{i}", "reference": ref},
                "pin.remove": {"kind": "sandbox", "name": f"p{i}"},
                "image.inspect": {"reference": ref},
            }.get(method, {})
            sent.append((c, c.send_request(method, params), method))
    unexpected = []
    for c, rid, method in sent:
        resp = c.wait(rid)
        if "error" in resp:
            name = resp["error"].get("data", {}).get("name")
            if name not in allowed[method]:
                unexpected.append(f"{method}: {resp['error']}")
    assert unexpected == [], "\n".join(unexpected)
    with daemon.client() as c:
        assert consistency_problems(daemon.store, c) == []
        for p in c.call("pin.list"):
            c.call("pin.remove", {"kind": p["kind"], "name": p["name"]})
        c.call("image.prune")
        files = content_files(daemon.store)
        assert all(files[k] == [] for k in ("blobs", "layers", "fsmeta", "vmdk")), files
        c.call("image.load", {"path": str(imgs[0].layout.path)})
        assert_detail(c.call("image.inspect", {"reference": "example.com/mix/i0:1"}), imgs[0],
                      "example.com/mix/i0:1")
