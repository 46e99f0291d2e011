"""image.pull through the real daemon against real registries on loopback."""

import os
import threading
import time

import pytest

from msbtest.imagekit import host_platform
from msbtest.rpc import RpcError
from registry_harness import FaultServer, Registry, TokenServer, free_port, htpasswd_file, make_tls, push

PULL_TIMEOUT = 120


def pull(rpc, reference, **params):
    """image.pull; returns (result or RpcError, progress events of this call)."""
    rid = rpc.send_request("image.pull", {"reference": reference, **params})
    resp = rpc.wait(rid, timeout=PULL_TIMEOUT)
    events = [n["params"] for n in rpc.notifications
              if n.get("method") == "image.pull.progress" and n["params"].get("id") == rid]
    if "error" in resp:
        return RpcError(resp), events
    return resp["result"], events


def pull_ok(rpc, reference, **params):
    result, events = pull(rpc, reference, **params)
    assert not isinstance(result, RpcError), f"pull failed: {result.response}"
    return result, events


def pull_err(rpc, reference, **params) -> RpcError:
    result, _ = pull(rpc, reference, **params)
    assert isinstance(result, RpcError), f"pull should have failed, got {result}"
    return result


def store_tmp_files(daemon):
    tmp = daemon.store / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_pull_by_tag(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    img = published.images["test/small:v1"]
    ref = f"{published.registry.host}/test/small:v1"
    handle, _ = pull_ok(rpc, ref)
    assert handle["reference"] == ref
    assert handle["manifest_digest"] == img.manifest_digest
    assert handle["layer_count"] == 2
    assert handle["size_bytes"] == img.size_bytes
    assert handle["os"] == img.os and handle["architecture"] == img.architecture
    assert rpc.call("image.get", {"reference": ref})["manifest_digest"] == img.manifest_digest
    detail = rpc.call("image.inspect", {"reference": ref})
    assert [l["diff_id"] for l in detail["layers"]] == img.diff_ids
    assert [l["blob_digest"] for l in detail["layers"]] == [l.blob_digest for l in img.layers]
    for diff_id in img.diff_ids:
        assert (d.store / "layers" / "sha256" / (diff_id.split(":")[1] + ".erofs")).stat().st_size > 0
    assert store_tmp_files(d) == []


def test_pull_by_digest(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    img = published.images["test/small:v1"]
    ref = f"{published.registry.host}/test/small@{img.manifest_digest}"
    handle, _ = pull_ok(rpc, ref)
    assert handle["manifest_digest"] == img.manifest_digest
    assert handle["reference"] == ref
    # A digest that the registry does not have.
    missing = "sha256:" + "0" * 64
    e = pull_err(rpc, f"{published.registry.host}/test/small@{missing}")
    assert e.name == "remote-not-found"


def test_pull_index_picks_platform(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    idx = published.images["test/multi:v1"]
    ref = f"{published.registry.host}/test/multi:v1"
    handle, _ = pull_ok(rpc, ref)
    assert handle["manifest_digest"] == idx.for_platform(host_platform()).manifest_digest
    assert f"{handle['os']}/{handle['architecture']}" == host_platform()

    other = published.other_platform
    handle, _ = pull_ok(rpc, ref, platform=other, policy="always")
    assert handle["manifest_digest"] == idx.for_platform(other).manifest_digest
    assert f"{handle['os']}/{handle['architecture']}" == other

    e = pull_err(rpc, ref, platform="linux/s390x", policy="always")
    assert e.name == "platform-not-found"
    e = pull_err(rpc, ref, platform="not a platform")
    assert e.code == -32602
