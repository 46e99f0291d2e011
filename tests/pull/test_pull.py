"""image.pull through the real daemon against real registries on loopback."""

import base64
import ctypes
import json
import os
import subprocess
import threading
import time

import pytest

from msbtest.imagekit import host_platform, sparse_tar, write_sparse_files
from msbtest.rpc import RpcError
from registry_harness import (TEST_IDENTITY_TOKEN, TEST_PASSWORD, TEST_USER, FaultServer, Registry, TokenServer,
                              free_port, htpasswd_file, make_tls, push)

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


def assert_events_complete(events, img):
    """A caller's progress: resolving first, resolved, every layer accounted
    for (cached, or downloaded then converted), complete last."""
    names = [e["event"] for e in events]
    assert names[:2] == ["resolving", "resolved"], names
    assert names[-1] == "complete" and events[-1]["manifest_digest"] == img.manifest_digest, names
    for pos, layer in enumerate(img.layers):
        mine = [e for e in events if e.get("position") == pos]
        kinds = [e["event"] for e in mine]
        assert kinds in (["layer-cached"],) or (
            kinds[-2:] == ["layer-downloaded", "layer-converted"]
            and set(kinds[:-2]) == {"layer-download"}), (pos, kinds)
        if kinds != ["layer-cached"]:
            assert mine[-3]["downloaded_bytes"] == layer.size
            assert mine[-1]["diff_id"] == layer.diff_id


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


def blob_gets(registry, digest):
    return registry.requests("GET", f"/blobs/{digest}", 200) + registry.requests("GET", f"/blobs/{digest}", 206)


def test_policies(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    reg = published.registry
    img = published.images["test/small:v1"]
    ref = f"{reg.host}/test/small:v1"

    e = pull_err(rpc, ref, policy="never")
    assert e.name == "image-not-found" and e.code == 1001

    first, _ = pull_ok(rpc, ref)
    manifests = reg.requests("GET", "/v2/test/small/manifests/")
    blobs = {l.blob_digest: blob_gets(reg, l.blob_digest) for l in img.layers}

    # if-missing (the default) and never: answered from the cache, no network.
    for policy in (None, "if-missing", "never"):
        t0 = time.monotonic()
        handle, events = pull_ok(rpc, ref, **({"policy": policy} if policy else {}))
        assert time.monotonic() - t0 < 1.0
        assert handle["manifest_digest"] == img.manifest_digest
        assert events[-1]["event"] == "complete"
        assert handle["last_used_at"] >= first["last_used_at"]
    assert reg.requests("GET", "/v2/test/small/manifests/") == manifests

    # always: resolves again, but downloads no layer it has.
    handle, events = pull_ok(rpc, ref, policy="always")
    assert handle["manifest_digest"] == img.manifest_digest
    assert reg.requests("GET", "/v2/test/small/manifests/") == manifests + 1
    assert {l.blob_digest: blob_gets(reg, l.blob_digest) for l in img.layers} == blobs
    assert [e["event"] for e in events if e["event"].startswith("layer-")] == ["layer-cached"] * 2

    e = pull_err(rpc, ref, policy="sometimes")
    assert e.code == -32602


def test_progress_events_in_order(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    img = published.images["test/big:v1"]
    ref = f"{published.registry.host}/test/big:v1"
    handle, events = pull_ok(rpc, ref)
    assert_events_complete(events, img)
    names = [e["event"] for e in events]
    assert names[0] == "resolving" and events[0]["reference"] == ref
    assert names[1] == "resolved"
    assert events[1]["manifest_digest"] == img.manifest_digest
    assert events[1]["layer_count"] == 1 and events[1]["total_bytes"] == img.size_bytes
    assert names[-3:] == ["fsmeta", "vmdk", "complete"]
    assert events[-1]["manifest_digest"] == img.manifest_digest
    fsmeta = d.store / "fsmeta" / "sha256" / (img.manifest_digest.split(":")[1] + ".erofs")
    assert events[-3]["size_bytes"] == (fsmeta.stat().st_size if fsmeta.exists() else 0)

    layer = img.layers[0]
    downloads = [e for e in events if e["event"] == "layer-download"]
    assert downloads, names
    got = [e["downloaded_bytes"] for e in downloads]
    assert got == sorted(got) and got[-1] == layer.size
    assert all(e["total_bytes"] == layer.size and e["digest"] == layer.blob_digest and e["position"] == 0
               for e in downloads)
    i_dl = names.index("layer-downloaded")
    i_cv = names.index("layer-converted")
    assert names.index("resolved") < names.index("layer-download") < i_dl < i_cv < names.index("fsmeta")
    conv = events[i_cv]
    assert conv["diff_id"] == layer.diff_id and conv["digest"] == layer.blob_digest
    detail = rpc.call("image.inspect", {"reference": ref})
    assert conv["erofs_size_bytes"] == detail["layers"][0]["erofs_size_bytes"]


def test_concurrent_pulls_download_each_blob_once(published, pull_daemon):
    d = pull_daemon()
    reg = published.registry
    a, b = published.images["test/base-a:v1"], published.images["test/base-b:v1"]
    shared = a.layers[0].blob_digest
    before = {dg: blob_gets(reg, dg) for dg in {shared, a.layers[1].blob_digest, b.layers[1].blob_digest}}

    clients = [d.client() for _ in range(3)]
    refs = [f"{reg.host}/test/base-a:v1", f"{reg.host}/test/base-a:v1", f"{reg.host}/test/base-b:v1"]
    ids = [c.send_request("image.pull", {"reference": r}) for c, r in zip(clients, refs)]
    results = [c.wait(i, timeout=PULL_TIMEOUT) for c, i in zip(clients, ids)]
    for r in results:
        assert "result" in r, r
    for c, i, img in zip(clients, ids, (a, a, b)):
        assert_events_complete([n["params"] for n in c.notifications if n["params"].get("id") == i], img)
    assert results[0]["result"]["manifest_digest"] == a.manifest_digest
    assert results[1]["result"]["manifest_digest"] == a.manifest_digest
    assert results[2]["result"]["manifest_digest"] == b.manifest_digest
    after = {dg: blob_gets(reg, dg) for dg in before}
    assert {dg: after[dg] - before[dg] for dg in before} == {dg: 1 for dg in before}
    # The same reference twice was one resolution.
    assert reg.requests("GET", "/v2/test/base-a/manifests/v1") == 1
    assert store_tmp_files(d) == []


def test_caller_disconnect_does_not_cancel_shared_pull(published, pull_daemon):
    d = pull_daemon()
    reg = published.registry
    img = published.images["test/big:v1"]
    ref = f"{reg.host}/test/big:v1"
    quitter, stayer = d.client(), d.client()
    quitter.send_request("image.pull", {"reference": ref})
    rid = stayer.send_request("image.pull", {"reference": ref})
    quitter.close()
    resp = stayer.wait(rid, timeout=PULL_TIMEOUT)
    assert resp["result"]["manifest_digest"] == img.manifest_digest
    assert_events_complete([n["params"] for n in stayer.notifications if n["params"].get("id") == rid], img)
    assert stayer.call("image.list")[0]["manifest_digest"] == img.manifest_digest


def test_list_stays_fast_during_pull(tmp_path, published, pull_daemon):
    img = published.images["test/big:v1"]
    # A server that cuts the big blob once: the pull takes a retry's backoff
    # on top of the download and the conversion.
    with FaultServer({"test/big": img.layout.path}, cut={img.layers[0].blob_digest: 1 << 20}) as fault:
        d = pull_daemon()
        puller, lister = d.client(), d.client()
        rid = puller.send_request("image.pull", {"reference": f"{fault.host}/test/big:v1"})
        latencies = []
        while True:
            t0 = time.monotonic()
            lister.call("image.list")
            latencies.append(time.monotonic() - t0)
            try:
                resp = puller.wait(rid, timeout=0.02)
                break
            except (TimeoutError, OSError):
                pass
        assert "result" in resp, resp
        # Answered all along (the loop never waits for the network, the
        # disk or the converter); generous bounds for a loaded CI machine.
        latencies.sort()
        assert len(latencies) >= 5
        assert latencies[len(latencies) // 2] < 0.1, latencies
        assert latencies[-1] < 2.0, latencies


def test_not_found_and_invalid(published, pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    reg = published.registry
    e = pull_err(rpc, f"{reg.host}/test/small:no-such-tag")
    assert e.name == "remote-not-found" and e.code == 1013
    e = pull_err(rpc, f"{reg.host}/test/no-such-repo:v1")
    assert e.name == "remote-not-found"
    e = pull_err(rpc, "Not A Reference!")
    assert e.code == -32602
    assert rpc.call("image.list") == []


def test_unreachable_registry(pull_daemon):
    d = pull_daemon()
    rpc = d.client()
    t0 = time.monotonic()
    e = pull_err(rpc, f"127.0.0.1:{free_port()}/test/small:v1")
    assert e.name == "network-error" and e.code == 1014
    assert time.monotonic() - t0 < 30


def test_digest_mismatch_leaves_nothing(published, pull_daemon):
    img = published.images["test/small:v1"]
    bad = img.layers[1]
    with FaultServer({"test/small": img.layout.path}, corrupt=[bad.blob_digest]) as fault:
        d = pull_daemon()
        rpc = d.client()
        e = pull_err(rpc, f"{fault.host}/test/small:v1")
        assert e.name == "digest-mismatch" and e.code == 1005
        assert e.data["expected"] == bad.blob_digest
        assert rpc.call("image.list") == []
        assert store_tmp_files(d) == []
        layers = d.store / "layers" / "sha256"
        assert not (layers / (bad.diff_id.split(":")[1] + ".erofs")).exists()


def test_cut_blob_is_resumed(published, pull_daemon):
    img = published.images["test/big:v1"]
    blob = img.layers[0]
    with FaultServer({"test/big": img.layout.path}, cut={blob.blob_digest: 3 * 1024 * 1024}) as fault:
        d = pull_daemon()
        rpc = d.client()
        handle, _ = pull_ok(rpc, f"{fault.host}/test/big:v1")
        assert handle["manifest_digest"] == img.manifest_digest
        gets = [(p, rng) for m, p, rng in fault.log if p.endswith(f"/blobs/{blob.blob_digest}")]
        assert len(gets) == 2
        assert gets[0][1] == "" and gets[1][1] == f"bytes={3 * 1024 * 1024}-"


def test_manifest_garbage(published, pull_daemon):
    img = published.images["test/small:v1"]
    with FaultServer({"test/small": img.layout.path}, manifest_override={"v1": b"\x00garbage{"}) as fault:
        d = pull_daemon()
        rpc = d.client()
        e = pull_err(rpc, f"{fault.host}/test/small:v1")
        assert e.name == "registry-error" and e.code == 1015


USER, PASSWORD = TEST_USER, TEST_PASSWORD


def test_bearer_token_flow(token_registry, published, pull_daemon):
    reg, token = token_registry
    img = published.images["test/small:v1"]
    ref = f"{reg.host}/test/small:v1"
    issued = token.issued
    d = pull_daemon({"registries": {reg.host: {"username": USER, "password": PASSWORD}}})
    handle, _ = pull_ok(d.client(), ref)
    assert handle["manifest_digest"] == img.manifest_digest
    # One token for the repository, reused for the manifest, config and layers.
    assert token.issued == issued + 1
    assert reg.requests("GET", "/v2/test/small/manifests/v1", 200) >= 1


def test_bearer_credentials_from_docker_config(token_registry, published, pull_daemon, short_tmp):
    import base64
    import json as _json
    reg, _ = token_registry
    cfg = short_tmp / "dockercfg"
    cfg.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (cfg / "config.json").write_text(_json.dumps({"auths": {reg.host: {"auth": auth}}}))
    d = pull_daemon(env_extra={"DOCKER_CONFIG": str(cfg)})
    handle, _ = pull_ok(d.client(), f"{reg.host}/test/small:v1")
    assert handle["manifest_digest"] == published.images["test/small:v1"].manifest_digest


def test_identity_token_from_docker_config(token_registry, published, pull_daemon, short_tmp):
    """An "identitytoken" in the Docker config's auths (what docker login
    stores for registries that answer with a refresh token, Azure's among
    them) is exchanged at the token server: an OAuth2 POST with
    grant_type=refresh_token, never a Basic password, never logged."""
    reg, token = token_registry
    cfg = short_tmp / "dockercfg-identity"
    cfg.mkdir()
    entry = {"auth": base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode(),
             "identitytoken": TEST_IDENTITY_TOKEN}
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: entry}}))
    posts = len(token.oauth_posts)
    d = pull_daemon(env_extra={"DOCKER_CONFIG": str(cfg)})
    handle, _ = pull_ok(d.client(), f"{reg.host}/test/small:v1")
    assert handle["manifest_digest"] == published.images["test/small:v1"].manifest_digest
    form = token.oauth_posts[posts:]
    assert len(form) == 1, form
    assert form[0]["grant_type"] == "refresh_token" and form[0]["client_id"] == "msb-imaged", form
    assert form[0]["scope"] == "repository:test/small:pull" and form[0]["service"] == token.service, form
    assert TEST_IDENTITY_TOKEN not in d.log()

    # A token the server does not know: unauthorized, naming where it came from.
    entry["identitytoken"] = "Identity-Token-Revoked-3"
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: entry}}))
    d2 = pull_daemon(name="revoked", env_extra={"DOCKER_CONFIG": str(cfg)})
    e = pull_err(d2.client(), f"{reg.host}/test/small:v1")
    assert e.name == "unauthorized" and "Docker config" in e.message, e.response
    assert "Identity-Token-Revoked-3" not in d2.log() and "Identity-Token-Revoked-3" not in str(e.response)


def test_wrong_credentials(token_registry, pull_daemon):
    reg, _ = token_registry
    d = pull_daemon({"registries": {reg.host: {"username": USER, "password": "Wrong-Secret-55"}}})
    rpc = d.client()
    e = pull_err(rpc, f"{reg.host}/test/small:v1")
    assert e.name == "unauthorized" and e.code == 1012
    assert "Wrong-Secret-55" not in str(e.response) and "Wrong-Secret-55" not in d.log()
    # Without any credentials the token server refuses as well.
    d2 = pull_daemon(name="anon")
    e = pull_err(d2.client(), f"{reg.host}/test/small:v1")
    assert e.name == "unauthorized"


def test_basic_auth_over_tls(tmp_path, published, pull_daemon):
    tls = make_tls(tmp_path / "tls")
    htp = htpasswd_file(tmp_path / "htpasswd", USER, PASSWORD)
    img = published.images["test/small:v1"]
    with Registry(tmp_path / "reg", tls=tls, htpasswd=htp) as reg:
        push(img.layout.path, "small:v1", f"{reg.host}/test/small:v1", creds=f"{USER}:{PASSWORD}")
        good = {"registries": {reg.host: {"username": USER, "password": PASSWORD, "ca_file": str(tls["ca"])}}}
        d = pull_daemon(good)
        handle, _ = pull_ok(d.client(), f"{reg.host}/test/small:v1")
        assert handle["manifest_digest"] == img.manifest_digest

        # The test CA is what makes the certificate trusted.
        d2 = pull_daemon({"registries": {reg.host: {"username": USER, "password": PASSWORD}}}, name="noca")
        e = pull_err(d2.client(), f"{reg.host}/test/small:v1")
        assert e.name in ("network-error", "registry-error")

        # "insecure": TLS without verification, no CA needed.
        d4 = pull_daemon({"registries": {reg.host: {"username": USER, "password": PASSWORD, "insecure": True}}},
                         name="insecure")
        handle, _ = pull_ok(d4.client(), f"{reg.host}/test/small:v1")
        assert handle["manifest_digest"] == img.manifest_digest

        d3 = pull_daemon({"registries": {reg.host: {"username": USER, "password": "nope-nope",
                                                    "ca_file": str(tls["ca"])}}}, name="badpw")
        e = pull_err(d3.client(), f"{reg.host}/test/small:v1")
        assert e.name == "unauthorized"
        assert "nope-nope" not in str(e.response)


def in_mount_namespace_with_certs(certs_dir):
    """A preexec_fn: the daemon gets a mount namespace of its own where
    certs_dir is /etc/ssl/certs, the system's CA directory."""
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_bind, ms_rec, ms_private = 0x00020000, 4096, 0x4000, 1 << 18

    def setup():
        for r in (libc.unshare(clone_newns),
                  libc.mount(b"none", b"/", None, ms_rec | ms_private, None),
                  libc.mount(str(certs_dir).encode(), b"/etc/ssl/certs", None, ms_bind, None)):
            if r != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))

    return setup


def hashed_ca_dir(directory, ca_pem):
    """A CA directory as update-ca-certificates makes it: the certificate
    under its subject hash (what OpenSSL looks up), and no bundle."""
    directory.mkdir()
    (directory / "test-ca.pem").write_bytes(ca_pem.read_bytes())
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(ca_pem)], capture_output=True, text=True,
                       check=True).stdout.strip()
    (directory / f"{h}.0").symlink_to("test-ca.pem")
    return directory


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root")
def test_system_ca_directory_verifies_registries(tmp_path, published, daemon_factory, short_tmp):
    """Without a ca_file the system's CA directory decides, read by hashed
    name: the bundle file (ca-certificates.crt) is not needed and not read
    (parsing it whole cost 30-75 ms of the loop at the first HTTPS try)."""
    tls = make_tls(tmp_path / "tls")
    other = make_tls(tmp_path / "other-tls")
    htp = htpasswd_file(tmp_path / "htpasswd", USER, PASSWORD)
    img = published.images["test/small:v1"]
    with Registry(tmp_path / "reg", tls=tls, htpasswd=htp) as reg:
        push(img.layout.path, "small:v1", f"{reg.host}/test/small:v1", creds=f"{USER}:{PASSWORD}")
        config = short_tmp / "config.json"
        config.write_text(json.dumps({"registries": {reg.host: {"username": USER, "password": PASSWORD}}}))
        for name, ca, trusted in (("trusting", tls["ca"], True), ("distrusting", other["ca"], False)):
            d = daemon_factory(name=name, start=False, extra_args=["--config", str(config)],
                               env=dict(os.environ, HOME=str(short_tmp)))
            d.preexec_fn = in_mount_namespace_with_certs(hashed_ca_dir(tmp_path / f"certs-{name}", ca))
            d.start()
            if trusted:
                handle, _ = pull_ok(d.client(), f"{reg.host}/test/small:v1")
                assert handle["manifest_digest"] == img.manifest_digest
            else:
                # HTTPS fails verification; the plain HTTP a loopback
                # registry is also tried gets the TLS server's 400.
                e = pull_err(d.client(), f"{reg.host}/test/small:v1")
                assert e.name in ("network-error", "registry-error"), e.response
                assert "SSL peer certificate or SSH remote key was not OK (curl error 60)" in d.log(), d.log_tail()


def test_mirror_in_front_of_origin(tmp_path, published, pull_daemon):
    origin = published.registry
    img = published.images["test/small:v1"]
    with Registry(tmp_path / "mirror", proxy=origin.url) as mirror:
        d = pull_daemon({"registries": {origin.host: {"mirrors": [mirror.url]}}})
        handle, _ = pull_ok(d.client(), f"{origin.host}/test/small:v1")
        assert handle["manifest_digest"] == img.manifest_digest
        assert handle["reference"] == f"{origin.host}/test/small:v1"
        # The mirror served the manifest and the layers.
        assert mirror.requests("GET", "/v2/test/small/manifests/v1", 200) == 1
        for layer in img.layers:
            assert mirror.requests("GET", f"/blobs/{layer.blob_digest}", 200) == 1


def test_mirror_down_falls_back_to_origin(published, pull_daemon):
    origin = published.registry
    img = published.images["test/small:v1"]
    d = pull_daemon({"registries": {origin.host: {"mirrors": [f"http://127.0.0.1:{free_port()}"]}}})
    handle, _ = pull_ok(d.client(), f"{origin.host}/test/small:v1")
    assert handle["manifest_digest"] == img.manifest_digest


def test_transient_errors_are_retried(published, pull_daemon):
    img = published.images["test/small:v1"]
    blob = img.layers[0].blob_digest
    with FaultServer({"test/small": img.layout.path},
                     fail={"v1": (429, 1), blob: (503, 2)}) as fault:
        d = pull_daemon()
        t0 = time.monotonic()
        handle, _ = pull_ok(d.client(), f"{fault.host}/test/small:v1")
        assert handle["manifest_digest"] == img.manifest_digest
        # Retry-After: 1 on the 429 was honoured.
        assert time.monotonic() - t0 >= 1.0
        assert fault.count("/manifests/v1") == 2
        assert fault.count(f"/blobs/{blob}") == 3


def test_network_error_after_retries(published, pull_daemon):
    img = published.images["test/small:v1"]
    blob = img.layers[1].blob_digest
    with FaultServer({"test/small": img.layout.path}, fail={blob: (502, -1)}) as fault:
        d = pull_daemon()
        rpc = d.client()
        e = pull_err(rpc, f"{fault.host}/test/small:v1")
        assert e.name == "network-error"
        # REGISTRY_ATTEMPTS_MAX attempts, then the error; nothing stays.
        assert fault.count(f"/blobs/{blob}") == 4
        assert rpc.call("image.list") == []
        assert store_tmp_files(d) == []


def test_sigterm_during_pull(published, pull_daemon):
    img = published.images["test/big:v1"]
    blob = img.layers[0].blob_digest
    with FaultServer({"test/big": img.layout.path}, throttle={blob: 512 * 1024}) as fault:
        d = pull_daemon()
        rpc = d.client()
        rid = rpc.send_request("image.pull", {"reference": f"{fault.host}/test/big:v1"})
        deadline = time.monotonic() + 30
        while not any(n["params"]["event"] == "layer-download" and n["params"].get("downloaded_bytes", 0) > 0
                      for n in rpc.notifications):
            assert time.monotonic() < deadline
            try:
                rpc._dispatch(rpc.recv(1.0))
            except (TimeoutError, OSError):
                pass
        d.send_signal(15)
        try:
            resp = rpc.wait(rid, timeout=30)
            assert resp["error"]["data"]["name"] == "shutting-down", resp
        except Exception as e:  # the connection may close first
            assert not isinstance(e, AssertionError), e
        assert d.proc.wait(30) == 0
        d.stop()
        d.start()
        rpc = d.client()
        assert rpc.call("image.list") == []
        assert store_tmp_files(d) == []


def test_prune_during_pull_keeps_its_files(published, pull_daemon):
    img = published.images["test/base-a:v1"]
    slow = img.layers[0].blob_digest
    with FaultServer({"test/base-a": img.layout.path}, throttle={slow: 256 * 1024}) as fault:
        d = pull_daemon()
        puller, other = d.client(), d.client()
        ref = f"{fault.host}/test/base-a:v1"
        rid = puller.send_request("image.pull", {"reference": ref})
        # Wait until the small layer is converted while the big one is
        # still downloading, then prune.
        deadline = time.monotonic() + 60
        while not any(n["params"]["event"] == "layer-converted" for n in puller.notifications):
            assert time.monotonic() < deadline
            try:
                puller._dispatch(puller.recv(1.0))
            except (TimeoutError, OSError):
                pass
        report = other.call("image.prune")
        assert report is not None
        resp = puller.wait(rid, timeout=PULL_TIMEOUT)
        assert resp["result"]["manifest_digest"] == img.manifest_digest
        detail = other.call("image.inspect", {"reference": ref})
        for layer in detail["layers"]:
            assert (d.store / "layers" / "sha256" / (layer["diff_id"].split(":")[1] + ".erofs")).exists()


def test_docker_schema2_image(published, pull_daemon):
    import hashlib
    from registry_harness import raw_manifest
    reg = published.registry
    img = published.images["test/small:v1"]
    ref = f"{reg.host}/test/docker-format:v1"
    push(img.layout.path, "small:v1", ref, docker_format=True)
    raw = raw_manifest(ref)
    assert b"application/vnd.docker.distribution.manifest.v2+json" in raw
    d = pull_daemon()
    rpc = d.client()
    handle, _ = pull_ok(rpc, ref)
    assert handle["manifest_digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    detail = rpc.call("image.inspect", {"reference": ref})
    assert [l["diff_id"] for l in detail["layers"]] == img.diff_ids
    assert all(l["media_type"] == "application/vnd.docker.image.rootfs.diff.tar.gzip" for l in detail["layers"])


def test_token_expiry_honoured(tmp_path, published, pull_daemon):
    token = TokenServer(tmp_path / "ts", users={USER: PASSWORD}, expires_in=2).start()
    try:
        with Registry(tmp_path / "reg", token=token) as reg:
            img = published.images["test/small:v1"]
            push(img.layout.path, "small:v1", f"{reg.host}/test/small:v1", creds=f"{USER}:{PASSWORD}")
            d = pull_daemon({"registries": {reg.host: {"username": USER, "password": PASSWORD}}})
            rpc = d.client()
            issued = token.issued
            pull_ok(rpc, f"{reg.host}/test/small:v1")
            assert token.issued == issued + 1
            pull_ok(rpc, f"{reg.host}/test/small:v1", policy="always")
            assert token.issued == issued + 1
            time.sleep(2.5)
            pull_ok(rpc, f"{reg.host}/test/small:v1", policy="always")
            assert token.issued == issued + 2
    finally:
        token.stop()


def test_slow_link_pull(published, pull_daemon):
    # A layer that takes seconds to arrive is converted on the way (or, if
    # that cannot be, from the file): the result is the same image.
    img = published.images["test/big:v1"]
    blob = img.layers[0]
    with FaultServer({"test/big": img.layout.path}, throttle={blob.blob_digest: 3 * 1024 * 1024}) as fault:
        d = pull_daemon()
        rpc = d.client()
        handle, events = pull_ok(rpc, f"{fault.host}/test/big:v1")
        assert handle["manifest_digest"] == img.manifest_digest
        assert_events_complete(events, img)
        assert len([e for e in events if e["event"] == "layer-download"]) >= 5
        assert store_tmp_files(d) == []
        detail = rpc.call("image.inspect", {"reference": f"{fault.host}/test/big:v1"})
        assert detail["layers"][0]["diff_id"] == blob.diff_id


def test_manifest_over_the_limit(published, pull_daemon):
    img = published.images["test/small:v1"]
    limit = 4 * 1024 * 1024  # proto x-limits manifest_bytes
    huge = b'{"schemaVersion": 2, "pad": "' + b"x" * limit + b'"}'
    with FaultServer({"test/small": img.layout.path}, manifest_override={"v1": huge}) as fault:
        d = pull_daemon()
        rpc = d.client()
        e = pull_err(rpc, f"{fault.host}/test/small:v1")
        assert e.name == "limit-exceeded" and e.code == 1007
        assert e.data["limit"] == "manifest_bytes" and e.data["max"] == limit
        # The daemon keeps serving.
        assert rpc.call("image.list") == []


def test_layer_over_the_limit(published, pull_daemon):
    """A manifest whose layer descriptor is over the uncompressed layer
    limit fails the pull from inside the loop that starts its layers; the
    pull must outlive that loop and end after it."""
    img = published.images["test/small:v1"]
    limit = 10 * 1024 ** 3  # proto x-limits layer_uncompressed_bytes
    manifest = json.loads(img.layout.blob_path(img.manifest_digest).read_bytes())
    manifest["layers"][0]["size"] = limit + 1
    with FaultServer({"test/small": img.layout.path},
                     manifest_override={"v1": json.dumps(manifest).encode()}) as fault:
        d = pull_daemon()
        rpc = d.client()
        e = pull_err(rpc, f"{fault.host}/test/small:v1")
        assert e.name == "limit-exceeded" and e.code == 1007
        assert e.data["limit"] == "layer_uncompressed_bytes" and e.data["max"] == limit
        # The daemon keeps serving, and the same pull fails the same way.
        assert pull_err(rpc, f"{fault.host}/test/small:v1").name == "limit-exceeded"
        assert rpc.call("image.list") == []
        assert store_tmp_files(d) == []


def test_sparse_layer_over_the_limit(tmp_path, published, pull_daemon):
    """A layer of a few KiB whose tar holds an 11 GiB file of holes: its
    apparent size exceeds the per-layer limit, so the pull is refused at the
    tar header, quickly, leaving nothing in the store."""
    src = write_sparse_files(tmp_path / "src", {"data/huge.img": (11 << 30, [(5 << 30, b"12345678")])})
    tar = sparse_tar(src, tmp_path / "layer.tar").read_bytes()
    assert len(tar) < 64 * 1024
    img = published.kit.image("sparse:v1", layers=[tar])
    ref = published.add("test/sparse:v1", img, "sparse:v1")
    d = pull_daemon()
    rpc = d.client()
    t0 = time.monotonic()
    e = pull_err(rpc, ref)
    assert time.monotonic() - t0 < 10
    assert e.name == "limit-exceeded" and e.code == 1007
    assert e.data["limit"] == "layer_uncompressed_bytes" and e.data["max"] == 10 << 30
    assert e.data["entry"] == "./data/huge.img"
    assert store_tmp_files(d) == []
    assert not list((d.store / "layers" / "sha256").glob("*.erofs"))
    assert rpc.call("image.list") == []


def test_fast_pull_converts_while_downloading(published, pull_daemon):
    # On loopback the layer is converted as it arrives, not after its
    # download: the two overlap on a fast link too.
    img = published.images["test/big:v1"]
    d = pull_daemon()
    rpc = d.client()
    handle, events = pull_ok(rpc, f"{published.registry.host}/test/big:v1")
    assert handle["manifest_digest"] == img.manifest_digest
    assert_events_complete(events, img)
    assert f"layer 0 ({img.layers[0].blob_digest}): converting while it downloads" in d.log_since_start()
    assert "converting it from the complete download instead" not in d.log_since_start()
    assert store_tmp_files(d) == []
    detail = rpc.call("image.inspect", {"reference": f"{published.registry.host}/test/big:v1"})
    assert detail["layers"][0]["diff_id"] == img.layers[0].diff_id


def test_digest_mismatch_while_converting_on_the_way(published, pull_daemon):
    # The converter has most of a corrupt layer when the download's digest
    # check fails: the pull fails with digest-mismatch and leaves nothing.
    img = published.images["test/big:v1"]
    bad = img.layers[0]
    with FaultServer({"test/big": img.layout.path}, corrupt=[bad.blob_digest],
                     throttle={bad.blob_digest: 8 * 1024 * 1024}) as fault:
        d = pull_daemon()
        rpc = d.client()
        e = pull_err(rpc, f"{fault.host}/test/big:v1")
        assert e.name == "digest-mismatch" and e.code == 1005
        assert e.data["expected"] == bad.blob_digest
        assert "converting while it downloads" in d.log_since_start()
        assert rpc.call("image.list") == []
        assert store_tmp_files(d) == []
        layers = d.store / "layers" / "sha256"
        assert not (layers / (bad.diff_id.split(":")[1] + ".erofs")).exists()


PULL_STREAMS_MAX = 4  # daemon/pull/pull.h


def test_conversions_on_the_way_are_bounded(published, pull_daemon):
    # Five pulls of five repositories holding one slow layer: each pull
    # converts its layer on the way, but at most PULL_STREAMS_MAX at once
    # (each holds a worker thread while it waits for bytes); the others
    # convert from the complete download. All five get the image.
    img = published.images["test/big:v1"]
    blob = img.layers[0].blob_digest
    n = PULL_STREAMS_MAX + 1
    repos = {f"test/big{k}": img.layout.path for k in range(n)}
    with FaultServer(repos, throttle={blob: 2 * 1024 * 1024}) as fault:
        d = pull_daemon()
        clients = [d.client() for _ in range(n)]
        ids = [c.send_request("image.pull", {"reference": f"{fault.host}/test/big{k}:v1"})
               for k, c in enumerate(clients)]
        for c, i in zip(clients, ids):
            resp = c.wait(i, timeout=PULL_TIMEOUT)
            assert resp["result"]["manifest_digest"] == img.manifest_digest, resp
            assert_events_complete([x["params"] for x in c.notifications if x["params"].get("id") == i], img)
        log = d.log_since_start()
        assert log.count("converting while it downloads") == PULL_STREAMS_MAX, log
        # One download served them all.
        assert fault.count(f"/blobs/{blob}") == 1
        assert store_tmp_files(d) == []
