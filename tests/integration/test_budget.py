"""The disk budget through the real daemon: the "store" section of the
config, system.df's budget, eviction least recently used first after a
load commits (never pinned data, never the image just stored), a budget
smaller than one image, concurrent loads pushing the store over at once,
kill -9 in the middle of an eviction, and image.prune {unused_for_ms}.
What a pull in flight holds is tests/pull/test_budget_pull.py's: a
throttled registry keeps one in flight for as long as the test needs.

Sizes are measured, not assumed: each test loads images whose layers are
incompressible, reads what system.df counts, and sets the budget from
that, with half an image of slack wherever the index's own growth (its
write-ahead log) could tip a comparison."""

import json
import os
import signal
import subprocess
import time

import pytest

from msbtest import proto
from msbtest.events import budget_config, read_events, subscribe, summary
from msbtest.rpc import RpcClient
from msbtest.store import consistency_problems, content_files, hex_of

MiB = 1 << 20


def own_image(kit, ref, size=MiB):
    """An image of one layer of `size` incompressible bytes of its own."""
    return kit.image(ref, [{"data/blob": os.urandom(size)}])


def load(c, img, timeout=120):
    return c.call("image.load", {"path": str(img.layout.path)}, timeout=timeout)


def total(c):
    return c.call("system.df")["total_bytes"]


def references(c):
    return {h["reference"] for h in c.call("image.list")}


def restart_with(daemon, config_path):
    """The same store, the daemon started again with that configuration."""
    if daemon.running():
        daemon.stop()
    daemon.extra_args = ["--config", str(config_path)]
    daemon.start()
    return daemon.client()


def image_files_exist(store, img):
    """Every file of the image, by its digests: manifest, config, layers."""
    files = [store / "blobs/sha256" / hex_of(img.manifest_digest), store / "blobs/sha256" / hex_of(img.config_digest)]
    files += [store / "layers/sha256" / (hex_of(d) + ".erofs") for d in img.diff_ids]
    return all(f.exists() for f in files)


def test_df_reports_the_budget(daemon, short_tmp):
    c = daemon.client()
    assert c.call("system.df")["budget"] is None
    # low_bytes defaults to 90% of max_bytes.
    c = restart_with(daemon, budget_config(short_tmp / "a.json", 10**9 + 7))
    df = c.call("system.df")
    assert df["budget"] == {"max_bytes": 10**9 + 7, "low_bytes": (10**9 + 7) * 90 // 100,
                            "remaining_bytes": 10**9 + 7 - df["total_bytes"]}
    c = restart_with(daemon, budget_config(short_tmp / "b.json", 4096, 0))
    df = c.call("system.df")
    assert df["budget"]["low_bytes"] == 0
    # Over the budget already (the index alone takes more): negative.
    assert df["budget"]["remaining_bytes"] == 4096 - df["total_bytes"] < 0


@pytest.mark.parametrize("section, field", [
    ({"max_bytes": 0}, "store.max_bytes"),
    ({"max_bytes": -5}, "store.max_bytes"),
    ({"max_bytes": "10G"}, "store.max_bytes"),
    ({"max_bytes": 1.5}, "store.max_bytes"),
    ({"low_bytes": 5}, "store.low_bytes"),
    ({"max_bytes": 10, "low_bytes": 11}, "store.low_bytes"),
    ({"max_bytes": 10, "maxbytes": 10}, "store"),
    ([], "store"),
    ({"keep_free_bytes": -1}, "store.keep_free_bytes"),
    ({"keep_free_bytes": "4G"}, "store.keep_free_bytes"),
])
def test_a_wrong_store_section_is_refused(daemon_factory, short_tmp, section, field):
    d = daemon_factory("d", start=False)
    path = short_tmp / "config.json"
    path.write_text(json.dumps({"store": section}))
    r = subprocess.run(d.argv(extra_args=["--config", str(path)]), capture_output=True, text=True, timeout=20,
                       env=d.env)
    assert r.returncode == 1, r.stderr
    assert field in r.stderr
    # Refused before the store is touched.
    assert not d.store.exists()


def test_evicts_least_recently_used_first(daemon, imagekit, short_tmp):
    c = daemon.client()
    imgs = {n: own_image(imagekit, f"example.com/budget/{n}:1") for n in "abcd"}
    size = 0
    for n in "abc":
        before = total(c)
        load(c, imgs[n])
        size = max(size, total(c) - before)
        time.sleep(0.01)
    # a is used again (pinned through, then unpinned): b is now the least
    # recently used, then c.
    c.call("pin.add", {"kind": "sandbox", "name": "s", "reference": "example.com/budget/a:1"})
    c.call("pin.remove", {"kind": "sandbox", "name": "s"})
    used = {h["reference"]: h["last_used_at"] for h in c.call("image.list")}
    assert used["example.com/budget/a:1"] > used["example.com/budget/c:1"] > used["example.com/budget/b:1"]
    three = total(c)

    # Room for d over the three, less half an image; evictions bring the
    # store down to half an image below the three: two must go.
    high, low = three + size // 2, three - size // 2
    c = restart_with(daemon, budget_config(short_tmp / "budget.json", high, low))
    sub = subscribe(daemon)
    load(c, imgs["d"])
    assert references(c) == {"example.com/budget/a:1", "example.com/budget/d:1"}
    assert summary(read_events(sub, 3)) == [("image.loaded", "example.com/budget/d:1"),
                                           ("image.evicted", "example.com/budget/b:1"),
                                           ("image.evicted", "example.com/budget/c:1")]
    df = c.call("system.df")
    assert df["total_bytes"] <= low
    assert df["budget"]["remaining_bytes"] == high - df["total_bytes"]
    assert not image_files_exist(daemon.store, imgs["b"]) and not image_files_exist(daemon.store, imgs["c"])
    assert image_files_exist(daemon.store, imgs["a"]) and image_files_exist(daemon.store, imgs["d"])
    assert consistency_problems(daemon.store, c) == []
    log = daemon.log_since_start()
    assert "evicted example.com/budget/b:1" in log and "cannot be met" not in log


def test_last_used_at_moves_on_load_and_pin(daemon, imagekit):
    c = daemon.client()
    img = own_image(imagekit, "example.com/budget/used:1", 4096)
    first = load(c, img)[0]
    assert first["last_used_at"] == first["created_at"]
    time.sleep(0.01)
    again = load(c, img)[0]
    assert again["created_at"] == first["created_at"]
    assert again["last_used_at"] > first["last_used_at"]
    time.sleep(0.01)
    c.call("pin.add", {"kind": "snapshot", "name": "p", "reference": img.manifest_digest[:19]})
    pinned = c.call("image.get", {"reference": "example.com/budget/used:1"})
    assert pinned["last_used_at"] > again["last_used_at"]
    # Reading does not count as use.
    c.call("image.inspect", {"reference": "example.com/budget/used:1"})
    assert c.call("image.get", {"reference": "example.com/budget/used:1"})["last_used_at"] == pinned["last_used_at"]


def test_budget_smaller_than_one_image(daemon, imagekit, short_tmp):
    c = restart_with(daemon, budget_config(short_tmp / "tiny.json", 64 * 1024))
    a, b, x = (own_image(imagekit, f"example.com/budget/{n}:1") for n in ("a", "b", "x"))

    # Stored all the same, and the log says the budget cannot be met.
    assert load(c, a)[0]["manifest_digest"] == a.manifest_digest
    assert references(c) == {"example.com/budget/a:1"}
    assert "the disk budget cannot be met" in daemon.log_since_start()
    assert c.call("system.df")["budget"]["remaining_bytes"] < -MiB // 2
    c.call("image.inspect", {"reference": "example.com/budget/a:1"})

    # Pinned data stays; so does the image just stored.
    rootfs = c.call("pin.add", {"kind": "sandbox", "name": "keep", "reference": "example.com/budget/a:1"})
    time.sleep(0.01)
    load(c, b)
    assert references(c) == {"example.com/budget/a:1", "example.com/budget/b:1"}
    assert os.path.exists(rootfs["vmdk_path"]) and all(os.path.exists(l["path"]) for l in rootfs["layers"])

    # Unpinned, a goes at the next commit, with b; x stays.
    c.call("pin.remove", {"kind": "sandbox", "name": "keep"})
    time.sleep(0.01)
    load(c, x)
    assert references(c) == {"example.com/budget/x:1"}
    assert not os.path.exists(rootfs["vmdk_path"])
    assert consistency_problems(daemon.store, c) == []


@pytest.mark.parametrize("fits", [True, False], ids=["room-for-the-new", "room-for-none"])
def test_concurrent_loads_over_the_budget(daemon, imagekit, short_tmp, fits):
    c = daemon.client()
    old = [own_image(imagekit, f"example.com/budget/old{i}:1") for i in range(3)]
    new = [own_image(imagekit, f"example.com/budget/new{i}:1", 8 * MiB) for i in range(4)]
    empty = total(c)
    for img in old:
        load(c, img)
        time.sleep(0.01)
    c.call("pin.add", {"kind": "sandbox", "name": "keep", "reference": "example.com/budget/old0:1"})
    three = total(c)
    size = (three - empty) // 3
    # Room for the four new images (8 MiB each) and the pinned one, or for
    # one old image only.
    new_size = 8 * MiB + size - MiB
    high = three - 2 * size + 4 * new_size + size // 2 if fits else empty + size + size // 2
    c = restart_with(daemon, budget_config(short_tmp / "budget.json", high, high - size // 4))
    sub = subscribe(daemon)

    clients = [daemon.client(timeout=120) for _ in new]
    ids = [cl.send_request("image.load", {"path": str(img.layout.path)}) for cl, img in zip(clients, new)]
    for cl, i, img in zip(clients, ids, new):
        resp = cl.wait(i, timeout=120)
        assert resp["result"][0]["manifest_digest"] == img.manifest_digest, resp

    # The loads ran side by side: none evicted another's image; the pinned
    # one stays; the old unpinned ones went, least recently used first.
    left = references(c)
    assert {f"example.com/budget/new{i}:1" for i in range(4)} <= left
    assert "example.com/budget/old0:1" in left
    events = read_events(sub, quiet=1.0)
    evicted = [r for t, r in summary(events) if t == "image.evicted"]
    assert evicted == [r for r in ("example.com/budget/old1:1", "example.com/budget/old2:1") if r not in left]
    assert sorted(r for t, r in summary(events) if t == "image.loaded") == \
        [f"example.com/budget/new{i}:1" for i in range(4)]
    df = c.call("system.df")
    if fits:
        assert df["total_bytes"] <= high
    else:
        assert left == {"example.com/budget/old0:1"} | {f"example.com/budget/new{i}:1" for i in range(4)}
        assert "the disk budget cannot be met" in daemon.log_since_start()
    assert consistency_problems(daemon.store, c) == []


@pytest.mark.parametrize("when", ["first-eviction", "in-the-middle"])
def test_kill9_during_an_eviction(daemon, imagekit, short_tmp, when):
    c = daemon.client()
    imgs = [own_image(imagekit, f"example.com/evict/i{i}:1", 128 * 1024) for i in range(40)]
    for img in imgs:
        load(c, img)
    pinned = imgs[:3]
    for k, img in enumerate(pinned):
        c.call("pin.add", {"kind": "sandbox", "name": f"p{k}", "reference": f"example.com/evict/i{k}:1"})
    empty_ish = total(c)
    last = own_image(imagekit, "example.com/evict/last:1", 128 * 1024)
    # A budget that forces out every unpinned image at the next commit.
    c = restart_with(daemon, budget_config(short_tmp / "budget.json", 1 * MiB, 0))
    offset = len(daemon.log())
    loader = daemon.client(timeout=60)
    loader.send_request("image.load", {"path": str(last.layout.path)})
    deadline = time.monotonic() + 30
    while "evicted example.com/evict/" not in daemon.log()[offset:]:
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.0005)
    if when == "in-the-middle":
        time.sleep(0.002)
    daemon.kill9()
    loader.close()

    daemon.start()
    c = daemon.client()
    # The index never names a missing file and no file is left without a
    # row; nothing pinned was lost.
    assert consistency_problems(daemon.store, c) == []
    assert content_files(daemon.store)["tmp"] == []
    assert sorted(p["name"] for p in c.call("pin.list")) == ["p0", "p1", "p2"]
    left = references(c)
    for k, img in enumerate(pinned):
        assert f"example.com/evict/i{k}:1" in left
        assert image_files_exist(daemon.store, img)
        rootfs = c.call("pin.add", {"kind": "sandbox", "name": f"p{k}", "reference": f"example.com/evict/i{k}:1"})
        assert os.path.exists(rootfs["fsmeta_path"]) and os.path.exists(rootfs["vmdk_path"])
    # The eviction committed before the kill (its events are logged after
    # the commit): every unpinned image but the new one is gone.
    assert left == {f"example.com/evict/i{k}:1" for k in range(3)} | {"example.com/evict/last:1"}
    assert total(c) < empty_ish
    # And the store goes on: the next commit's round runs to its end.
    load(c, own_image(imagekit, "example.com/evict/after:1", 4096))
    assert "example.com/evict/after:1" in references(c)
    assert consistency_problems(daemon.store, c) == []


def test_prune_unused_for(daemon, imagekit):
    c = daemon.client()
    sub = subscribe(daemon)
    old, pinned, new = (own_image(imagekit, f"example.com/prune/{n}:1", 4096) for n in ("old", "pinned", "new"))
    load(c, old)
    load(c, pinned)
    c.call("pin.add", {"kind": "sandbox", "name": "p", "reference": "example.com/prune/pinned:1"})
    time.sleep(0.4)
    load(c, new)
    # Unused for an hour: nothing is.
    report = c.call("image.prune", {"unused_for_ms": 3600 * 1000})
    assert report["image_refs_removed"] == 0 and report["manifests_removed"] == 0
    # Unused for 200 ms: old only (pinned stays as a pin holds it).
    report = c.call("image.prune", {"unused_for_ms": 200})
    assert (report["image_refs_removed"], report["manifests_removed"], report["layers_removed"]) == (1, 1, 1)
    assert references(c) == {"example.com/prune/pinned:1", "example.com/prune/new:1"}
    pruned = [e for e in read_events(sub) if e["type"] == "image.pruned"]
    assert [(e["reference"], e["manifest_digest"]) for e in pruned] == [("example.com/prune/old:1", old.manifest_digest)]
    # 0: every unpinned image, also one used this very millisecond.
    assert c.call("image.prune", {"unused_for_ms": 0})["image_refs_removed"] == 1
    assert references(c) == {"example.com/prune/pinned:1"}
    assert consistency_problems(daemon.store, c) == []


@pytest.mark.parametrize("value", [-1, "1h", 1.5, None, True])
def test_prune_unused_for_must_be_a_count_of_ms(rpc, value):
    resp = rpc.request("image.prune", {"unused_for_ms": value})
    proto.check_error(resp, "invalid-params", parameter="unused_for_ms")


def test_sighup_applies_a_new_budget_and_keeps_it_on_a_bad_file(daemon, short_tmp):
    # SIGHUP re-reads the budget too; a wrong section keeps the
    # configuration in force, registries included.
    config = budget_config(short_tmp / "c.json", 10**9)
    c = restart_with(daemon, config)
    assert c.call("system.df")["budget"]["max_bytes"] == 10**9
    budget_config(config, 2 * 10**9)
    os.kill(daemon.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while c.call("system.df")["budget"]["max_bytes"] != 2 * 10**9 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.call("system.df")["budget"]["max_bytes"] == 2 * 10**9
    config.write_text(json.dumps({"store": {"max_bytes": "lots"}}))
    os.kill(daemon.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "keeping the configuration in force" not in daemon.log_since_start() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "store.max_bytes" in daemon.log_since_start()
    assert c.call("system.df")["budget"]["max_bytes"] == 2 * 10**9
