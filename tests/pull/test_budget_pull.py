"""Pulls with the disk budget and events: image.pulled events (cache hits
too) and last_used_at moving with them, what a pull in flight holds never
evicted, concurrent pulls over the budget at once, and a fleet of daemons
sharing one pull-through cache, whose upstream serves each blob once."""

import json
import os
import signal
import time

import pytest

from msbtest import proto
from msbtest.events import budget_config, read_events, subscribe, summary
from msbtest.imagekit import ImageKit
from msbtest.store import consistency_problems, hex_of
from registry_harness import FaultServer, Registry, push


def pull(c, reference, **params):
    return c.call("image.pull", {"reference": reference, **params}, timeout=120)


def test_pulls_are_events_and_uses(published, pull_daemon):
    img = published.images["test/small:v1"]
    ref = f"{published.registry.host}/test/small:v1"
    d = pull_daemon()
    sub = subscribe(d)
    c = d.client()
    first = pull(c, ref)
    time.sleep(0.01)
    # A cache hit, by tag and by digest: the image is used again each time.
    hit = pull(c, ref)
    assert hit["created_at"] == first["created_at"]
    assert hit["last_used_at"] > first["last_used_at"]
    time.sleep(0.01)
    by_digest = f"{published.registry.host}/test/small@{img.manifest_digest}"
    pull(c, by_digest)
    assert c.call("image.get", {"reference": ref})["last_used_at"] > hit["last_used_at"]
    # "always" asks the registry again and stores what it finds.
    time.sleep(0.01)
    again = pull(c, ref, policy="always")
    assert again["last_used_at"] > hit["last_used_at"]
    events = read_events(sub, 4)
    assert summary(events) == [("image.pulled", ref), ("image.pulled", ref), ("image.pulled", by_digest),
                               ("image.pulled", ref)]
    assert {e["manifest_digest"] for e in events} == {img.manifest_digest}


def test_what_a_pull_in_flight_holds_is_not_evicted(tmp_path, pull_daemon):
    """A pull kept in flight by a throttled registry while loads commit and
    evict with a budget nothing meets. A loaded image shares the pull's
    first layer: once it is evicted, that layer's row and file stay for the
    pull, which leases it, and the pulled image ends whole."""
    kit = ImageKit(tmp_path / "images")
    slow = kit.image("slow:v1", [{"small": b"s"}, {"big": os.urandom(256 * 1024)}])
    # The same entries make the same tar, so the same diff_id.
    shared = kit.image("example.com/budget/shared:1", [{"small": b"s"}])
    assert shared.diff_ids[0] == slow.diff_ids[0]
    with FaultServer({"test/slow": slow.layout.path}, throttle={slow.layers[1].blob_digest: 64 * 1024}) as fault:
        d = pull_daemon({"store": {"max_bytes": 64 * 1024}})
        shared_file = d.store / "layers/sha256" / (hex_of(shared.diff_ids[0]) + ".erofs")
        puller, c = d.client(timeout=120), d.client()
        rid = puller.send_request("image.pull", {"reference": f"{fault.host}/test/slow:v1"})
        deadline = time.monotonic() + 30
        while not shared_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        c.call("image.load", {"path": str(shared.layout.path)})
        for k in range(2):
            time.sleep(0.002)
            small = kit.image(f"example.com/budget/small{k}:1", [{"x": os.urandom(64 * 1024)}])
            c.call("image.load", {"path": str(small.layout.path)})
        assert {h["reference"] for h in c.call("image.list")} == {"example.com/budget/small1:1"}
        # The pull is still downloading, and its layer is still there.
        with pytest.raises(TimeoutError):
            puller.wait(rid, timeout=0)
        assert not any(n["params"]["event"] == "complete" for n in puller.notifications)
        assert shared_file.exists()
        resp = puller.wait(rid, timeout=120)
        assert resp["result"]["manifest_digest"] == slow.manifest_digest, resp
        detail = c.call("image.inspect", {"reference": f"{fault.host}/test/slow:v1"})
        assert [l["diff_id"] for l in detail["layers"]] == slow.diff_ids
        assert consistency_problems(d.store, c) == []


def test_concurrent_pulls_over_the_budget(published, pull_daemon):
    host = published.registry.host
    refs = [f"{host}/test/base-a:v1", f"{host}/test/base-b:v1", f"{host}/test/big:v1", f"{host}/test/small:v1"]
    d = pull_daemon({"store": {"max_bytes": 64 * 1024}})
    sub = subscribe(d)
    clients = [d.client(timeout=120) for _ in refs]
    ids = [c.send_request("image.pull", {"reference": r}) for c, r in zip(clients, refs)]
    for c, i, r in zip(clients, ids, refs):
        resp = c.wait(i, timeout=120)
        assert resp["result"]["reference"] == r, resp
    # Side by side, none evicted another's image; the log says why the
    # store stays over its budget.
    c = clients[0]
    assert {h["reference"] for h in c.call("image.list")} == set(refs)
    assert sorted(r for t, r in summary(read_events(sub, quiet=1.0)) if t == "image.pulled") == sorted(refs)
    assert "the disk budget cannot be met" in d.log_since_start()
    assert consistency_problems(d.store, c) == []
    # The next pull, alone, makes room: everything older goes.
    kit_ref = f"{host}/test/multi:v1"
    pull(c, kit_ref)
    assert {h["reference"] for h in c.call("image.list")} == {kit_ref}


def test_a_fleet_shares_one_pull_through_cache(tmp_path, pull_daemon):
    """Hosts with a store each, one docker-registry in proxy mode (as a
    mirror) in front of the upstream registry: the first host's pull makes
    the cache fetch each blob, every later host's is served by the cache
    alone, so the upstream serves the fleet each blob once. (On its first
    miss, docker-registry 2.8 fetches a blob twice, once for the answer and
    once for its own storage: distribution's proxyblobstore. Both are the
    cache's one fetch from the upstream's point of view here.)"""
    kit = ImageKit(tmp_path / "images")
    img = kit.image("fleet:v1", [{"usr/lib/one": os.urandom(300 * 1024)}, {"etc/two": b"two\n"}])
    blobs = [img.config_digest] + [layer.blob_digest for layer in img.layers]
    with Registry(tmp_path / "upstream") as upstream:
        push(img.layout.path, "fleet:v1", f"{upstream.host}/team/fleet:v1")
        with Registry(tmp_path / "cache", proxy=upstream.url) as cache:
            config = {"registries": {upstream.host: {"mirrors": [cache.url]}}}
            hosts = [pull_daemon(config, name=f"host{i}") for i in range(3)]
            ref = f"{upstream.host}/team/fleet:v1"

            def served(registry):
                return {b: registry.requests("GET", f"/blobs/{b}", 200) for b in blobs}

            assert set(served(upstream).values()) == {0}
            def stored_by_cache():
                # The cache's second fetch of a blob (for its storage) runs
                # beside its answer and may end after the pull: wait until it
                # stored every blob and the upstream logged what it served.
                data = tmp_path / "cache" / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
                deadline = time.monotonic() + 30
                while not all((data / b[7:9] / b[7:] / "data").exists() for b in blobs):
                    assert time.monotonic() < deadline, "the cache never stored the blobs"
                    time.sleep(0.02)
                deadline = time.monotonic() + 5
                while min(served(upstream).values()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
                return served(upstream)

            counts = []
            for d in hosts:
                c = d.client()
                assert pull(c, ref)["manifest_digest"] == img.manifest_digest
                assert [l["diff_id"] for l in c.call("image.inspect", {"reference": ref})["layers"]] == img.diff_ids
                counts.append(stored_by_cache())
            # The first host's pull: the cache fetched each blob (1 or 2
            # GETs, see above); the others cost the upstream nothing.
            assert all(1 <= n <= 2 for n in counts[0].values()), counts[0]
            assert counts[1] == counts[0] and counts[2] == counts[0]
            # The cache served every host each blob.
            assert set(served(cache).values()) == {len(hosts)}
            assert upstream.requests("GET", "/manifests/", 200) <= 1


def test_a_download_past_the_floor_is_not_started(published, pull_daemon, short_tmp):
    """A floor of free space (store.keep_free_bytes) that no blob fits
    above: the pull fails, naming the floor, before any layer is asked of
    the registry; SIGHUP with the floor off lets the same pull through."""
    img = published.images["test/small:v1"]
    ref = f"{published.registry.host}/test/small:v1"
    st = os.statvfs(short_tmp)
    d = pull_daemon({"store": {"keep_free_bytes": st.f_blocks * st.f_frsize}})
    c = d.client()

    def layer_gets():
        return sum(published.registry.requests("GET", f"/blobs/{layer.blob_digest}", 200) for layer in img.layers)

    before = layer_gets()
    resp = c.request("image.pull", {"reference": ref}, timeout=120)
    proto.check_error(resp, "store-error")
    message = resp["error"]["message"]
    assert "downloading sha256:" in message and "store.keep_free_bytes" in message, message
    assert resp["error"]["data"]["keep_free_bytes"] == st.f_blocks * st.f_frsize
    assert layer_gets() == before
    assert c.call("image.list") == []
    assert list((d.store / "tmp").iterdir()) == []

    (short_tmp / "daemon-config.json").write_text(json.dumps({"store": {"keep_free_bytes": 0}}))
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP: read the configuration" not in d.log_since_start() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pull(c, ref)["manifest_digest"] == img.manifest_digest
    assert layer_gets() > before
    assert consistency_problems(d.store, c) == []
