"""A failed pull takes back what it published (issue 14, point 9): layers it
converted before another layer failed go, rows and files, so the store after
the failure equals the store before; layers that other images use stay."""

import time

from msbtest.rpc import RpcError
from msbtest.store import consistency_problems, store_state
from registry_harness import FaultServer

PULL_TIMEOUT = 120


def pull_events(rpc, reference):
    rid = rpc.send_request("image.pull", {"reference": reference})
    resp = rpc.wait(rid, timeout=PULL_TIMEOUT)
    events = [n["params"] for n in rpc.notifications
              if n.get("method") == "image.pull.progress" and n["params"].get("id") == rid]
    return resp, events


def test_a_layer_that_fails_takes_back_the_converted_ones(published, pull_daemon):
    img = published.images["test/small:v1"]
    bad = img.layers[1]
    # The second layer comes slowly and corrupt: the first is converted and
    # indexed by the time its digest is found wrong.
    with FaultServer({"test/small": img.layout.path}, corrupt=[bad.blob_digest],
                     throttle={bad.blob_digest: max(1, bad.size // 2)}) as fault:
        d = pull_daemon()
        rpc = d.client()
        before = store_state(d.store)
        resp, events = pull_events(rpc, f"{fault.host}/test/small:v1")
        assert RpcError(resp).name == "digest-mismatch", resp
        converted = [e for e in events if e["event"] == "layer-converted"]
        assert [e["position"] for e in converted] == [0], events
        assert store_state(d.store) == before
        assert consistency_problems(d.store, rpc) == []


def test_layers_of_other_images_stay_after_a_failed_pull(published, pull_daemon):
    # base-a and base-b share their first layer: with base-a in the store, a
    # failed pull of base-b leaves that layer (and base-a) as they were.
    a = published.images["test/base-a:v1"]
    b = published.images["test/base-b:v1"]
    assert a.layers[0].diff_id == b.layers[0].diff_id
    bad = b.layers[-1]
    with FaultServer({"test/base-a": a.layout.path, "test/base-b": b.layout.path}, corrupt=[bad.blob_digest],
                     throttle={bad.blob_digest: max(1, bad.size // 2)}) as fault:
        d = pull_daemon()
        rpc = d.client()
        resp, _ = pull_events(rpc, f"{fault.host}/test/base-a:v1")
        assert "result" in resp, resp
        before = store_state(d.store)
        t = time.monotonic()
        resp, _ = pull_events(rpc, f"{fault.host}/test/base-b:v1")
        assert RpcError(resp).name == "digest-mismatch", resp
        assert time.monotonic() - t < PULL_TIMEOUT
        assert store_state(d.store) == before
        assert [h["reference"] for h in rpc.call("image.list")] == [f"{fault.host}/test/base-a:v1"]
        assert consistency_problems(d.store, rpc) == []
