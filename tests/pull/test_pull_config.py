"""The configuration of pulls through the real daemon: SIGHUP reads the
configuration file again, the Docker config is read again when it changed,
Docker credential helpers, and the log lines a user debugs a pull with."""

import base64
import json
import os
import signal
import time
from pathlib import Path

import pytest

from registry_harness import TEST_PASSWORD, TEST_USER, FaultServer, free_port

USER, PASSWORD = TEST_USER, TEST_PASSWORD
PULL_TIMEOUT = 120
# daemon/pull/credential_helper.h
HELPER_TIMEOUT_S = 10
HELPER_OUTPUT_MAX_BYTES = 64 * 1024


def pull(rpc, reference, **params):
    """image.pull: (result or None, error name or None)."""
    rid = rpc.send_request("image.pull", {"reference": reference, **params})
    resp = rpc.wait(rid, timeout=PULL_TIMEOUT)
    if "error" in resp:
        return None, resp["error"]["data"]["name"]
    return resp["result"], None


def wait_log(daemon, needle, timeout=10.0):
    """The first line of the current run's log holding needle."""
    deadline = time.monotonic() + timeout
    while True:
        for line in daemon.log_since_start().splitlines():
            if needle in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {needle!r}:\n{daemon.log_tail(30)}")
        time.sleep(0.05)


def hup(daemon):
    """SIGHUP, and the log line that answers it."""
    before = len(daemon.log_since_start())
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        new = daemon.log_since_start()[before:]
        line = next((l for l in new.splitlines() if "SIGHUP" in l), None)
        if line:
            return line
        assert time.monotonic() < deadline, daemon.log_tail(30)
        time.sleep(0.05)


def write_config(path: Path, config) -> None:
    path.write_text(config if isinstance(config, str) else json.dumps(config))


def docker_auth(host):
    return {"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}


def test_sighup_applies_new_registries(token_registry, published, pull_daemon, short_tmp):
    reg, token = token_registry
    ref = f"{reg.host}/test/small:v1"
    d = pull_daemon({})
    config = short_tmp / "daemon-config.json"
    rpc = d.client()
    assert pull(rpc, ref) == (None, "unauthorized")

    write_config(config, {"registries": {reg.host: {"username": USER, "password": PASSWORD}},
                          "max_concurrent_downloads": 2})
    line = hup(d)
    assert "notice: SIGHUP: read the configuration" in line, line
    assert f"registries: {reg.host} added" in line and "max_concurrent_downloads: added" in line, line
    handle, err = pull(rpc, ref)
    assert err is None and handle["manifest_digest"] == published.images["test/small:v1"].manifest_digest
    assert d.running()
    assert PASSWORD not in d.log()


def test_sighup_keeps_the_configuration_when_the_file_is_bad(token_registry, pull_daemon, short_tmp):
    reg, _ = token_registry
    ref = f"{reg.host}/test/small:v1"
    good = {"registries": {reg.host: {"username": USER, "password": PASSWORD}}}
    d = pull_daemon(good)
    config = short_tmp / "daemon-config.json"
    rpc = d.client()

    write_config(config, '{"registries": ')
    line = hup(d)
    assert "warning: SIGHUP: keeping the configuration in force" in line and str(config) in line, line
    write_config(config, {"registries": {reg.host: {"username": USER}}})
    line = hup(d)
    assert "keeping the configuration in force" in line and f"registries.{reg.host}" in line, line
    write_config(config, {**good, "max_concurrent_downloads": 0})
    line = hup(d)
    assert "keeping the configuration in force" in line and "max_concurrent_downloads" in line, line
    # Still the good configuration: the credentials work.
    assert pull(rpc, ref, policy="always")[1] is None

    # A "store" section (the disk budget) is accepted and kept; nothing
    # changed is said so.
    write_config(config, {**good, "store": {"max_bytes": 1 << 30}})
    line = hup(d)
    assert "read the configuration" in line and line.endswith(": store: added"), line
    line = hup(d)
    assert line.endswith(": nothing changed"), line
    write_config(config, {"store": {"max_bytes": 1 << 30},
                          "registries": {reg.host: {"username": USER, "password": "Changed-Pw-11"}}})
    line = hup(d)
    assert line.endswith(f": registries: {reg.host} changed"), line
    assert "Changed-Pw-11" not in d.log()
    assert pull(rpc, ref, policy="always")[1] == "unauthorized"
    assert d.running()


def test_sighup_during_a_pull(published, pull_daemon, short_tmp):
    """Transfers in flight go on across reloads (the old config is freed
    under them: the ASan build checks that nothing still reads it)."""
    img = published.images["test/big:v1"]
    blob = img.layers[0].blob_digest
    with FaultServer({"test/big": img.layout.path}, throttle={blob: 2 * 1024 * 1024}) as fault:
        d = pull_daemon({"max_concurrent_downloads": 3})
        config = short_tmp / "daemon-config.json"
        rpc = d.client()
        rid = rpc.send_request("image.pull", {"reference": f"{fault.host}/test/big:v1"})
        deadline = time.monotonic() + 30
        while fault.sent_bytes(blob) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for n in (1, 5, 2):
            write_config(config, {"max_concurrent_downloads": n,
                                  "registries": {fault.host: {"username": "u", "password": f"p{n}"}}})
            assert "read the configuration" in hup(d)
            time.sleep(0.3)
        resp = rpc.wait(rid, timeout=PULL_TIMEOUT)
        assert resp["result"]["manifest_digest"] == img.manifest_digest
        assert fault.count(f"/blobs/{blob}") == 1


def test_docker_config_is_read_again_when_it_changes(token_registry, pull_daemon, short_tmp):
    reg, _ = token_registry
    ref = f"{reg.host}/test/small:v1"
    dockercfg = short_tmp / "docker"
    dockercfg.mkdir()
    d = pull_daemon(env_extra={"DOCKER_CONFIG": str(dockercfg)})
    rpc = d.client()
    assert pull(rpc, ref) == (None, "unauthorized")
    (dockercfg / "config.json").write_text(json.dumps(docker_auth(reg.host)))
    assert pull(rpc, ref)[1] is None
    assert "config.json changed: its registry credentials were read again" in wait_log(d, "config.json changed")
    # Removed again: the credentials go with it.
    (dockercfg / "config.json").unlink()
    assert pull(rpc, ref, policy="always") == (None, "unauthorized")


HELPER = """#!/bin/sh
# A Docker credential helper for the tests: records how it was run, then
# answers as its mode (the script's name after docker-credential-) says.
read -r server
echo "$0 $* server=$server" >> "{record}"
case "$0" in
*-good) printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server" ;;
*-none) echo "credentials not found in native keychain"; exit 1 ;;
*-slow) exec sleep 600 ;;
*-chatty) i=0; while [ $i -lt 6000 ]; do printf 'Secret-Chatty-42 %s\\n' "$i"; i=$((i+1)); done ;;
*-token) printf '{{"Username":"<token>","Secret":"Identity-Token-9"}}' ;;
esac
"""


@pytest.fixture
def helpers(short_tmp):
    """A PATH directory with docker-credential-{good,none,slow,chatty,token};
    returns (its PATH value, the record file of their runs)."""
    bindir = short_tmp / "helpers"
    bindir.mkdir()
    record = short_tmp / "helper-runs"
    script = HELPER.format(record=record, user=USER, password=PASSWORD)
    for mode in ("good", "none", "slow", "chatty", "token"):
        p = bindir / f"docker-credential-{mode}"
        p.write_text(script)
        p.chmod(0o755)
    return f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}", record


def test_credential_helpers(token_registry, published, pull_daemon, short_tmp, helpers):
    reg, token = token_registry
    path, record = helpers
    ref = f"{reg.host}/test/small:v1"
    dockercfg = short_tmp / "docker"
    dockercfg.mkdir()
    cfg = dockercfg / "config.json"
    cfg.write_text(json.dumps({"credsStore": "good"}))
    d = pull_daemon({}, env_extra={"DOCKER_CONFIG": str(dockercfg), "PATH": path})
    rpc = d.client()

    handle, err = pull(rpc, ref)
    assert err is None and handle["manifest_digest"] == published.images["test/small:v1"].manifest_digest
    # Run as Docker runs it: "get", the registry's host on stdin.
    assert record.read_text().splitlines() == [f"{Path(path.split(':')[0]) / 'docker-credential-good'} get "
                                               f"server={reg.host}"]

    # credHelpers wins over credsStore for its host; a name that is a path
    # is never run.
    cfg.write_text(json.dumps({"credsStore": "../../bin/false", "credHelpers": {reg.host: "none"}}))
    assert pull(rpc, ref, policy="always") == (None, "unauthorized")
    assert "docker-credential-none has no credentials for it" in wait_log(d, "has no credentials")
    cfg.write_text(json.dumps({"credsStore": "good", "credHelpers": {reg.host: "../good"}}))
    assert pull(rpc, ref, policy="always")[1] is None

    # A helper the daemon cannot use: the pull goes on without credentials.
    cfg.write_text(json.dumps({"credsStore": "missing"}))
    assert pull(rpc, ref, policy="always") == (None, "unauthorized")
    assert "cannot run docker-credential-missing: it is not on PATH" in wait_log(d, "docker-credential-missing")
    # A helper's identity token ("<token>" as Username) is exchanged at the
    # token server as an OAuth2 refresh token.
    cfg.write_text(json.dumps({"credsStore": "token"}))
    posts = len(token.oauth_posts)
    assert pull(rpc, ref, policy="always")[1] is None
    assert [p["grant_type"] for p in token.oauth_posts[posts:]] == ["refresh_token"]
    cfg.write_text(json.dumps({"credsStore": "chatty"}))
    assert pull(rpc, ref, policy="always") == (None, "unauthorized")
    assert f"wrote more than {HELPER_OUTPUT_MAX_BYTES} bytes" in wait_log(d, "wrote more than")

    # A helper that hangs is given HELPER_TIMEOUT_S, and the daemon serves
    # everyone else meanwhile.
    cfg.write_text(json.dumps({"credsStore": "slow"}))
    other = d.client()
    t0 = time.monotonic()
    rid = rpc.send_request("image.pull", {"reference": ref, "policy": "always"})
    while time.monotonic() - t0 < HELPER_TIMEOUT_S - 2:
        t1 = time.monotonic()
        other.call("image.list")
        assert time.monotonic() - t1 < 1.0
        time.sleep(0.5)
    resp = rpc.wait(rid, timeout=PULL_TIMEOUT)
    assert HELPER_TIMEOUT_S <= time.monotonic() - t0 < HELPER_TIMEOUT_S + 10
    assert resp["error"]["data"]["name"] == "unauthorized"
    assert f"did not answer within {HELPER_TIMEOUT_S * 1000} ms" in wait_log(d, "did not answer")

    log = d.log()
    for secret in (PASSWORD, "Secret-Chatty-42", "Identity-Token-9"):
        assert secret not in log
    # The daemon's own credentials win: no helper runs for that registry.
    runs = len(record.read_text().splitlines())
    write = short_tmp / "daemon-config.json"
    write_config(write, {"registries": {reg.host: {"username": USER, "password": PASSWORD}}})
    assert "read the configuration" in hup(d)
    assert pull(rpc, ref, policy="always")[1] is None
    assert len(record.read_text().splitlines()) == runs


def log_lines(daemon):
    return [l.split("] ", 1)[1] for l in daemon.log_since_start().splitlines() if "] " in l]


def test_failed_pull_log_lines(published, pull_daemon):
    img = published.images["test/small:v1"]
    blob = img.layers[1].blob_digest
    with FaultServer({"test/small": img.layout.path}, fail={blob: (502, -1)}) as fault:
        d = pull_daemon()
        ref = f"{fault.host}/test/small:v1"
        assert pull(d.client(), ref) == (None, "network-error")
        lines = log_lines(d)
        url = f"http://{fault.host}/v2/test/small/blobs/{blob}"
        warnings = [l for l in lines if l.startswith("warning: ")]
        assert len(warnings) == 1, lines
        w = warnings[0]
        assert w.startswith(f"warning: pull#1 {ref}: failed after "), w
        assert f"registry {fault.host}" in w and f"(last exchange: GET {url}: HTTP 502, 3 retries)" in w, w
        # Every HTTP exchange at debug level, with its status, bytes and time.
        exchanges = [l for l in lines if l.startswith(f"debug: pull#1 GET {url} -> ")]
        assert len(exchanges) == 4, lines
        assert all(l.endswith(" ms") and "-> HTTP 502, " in l and " bytes, " in l for l in exchanges), exchanges
        retries = [l for l in lines if l.startswith(f"info: pull#1 GET {url}: HTTP 502; retrying in ")]
        assert len(retries) == 3, lines
        # One tag through every line about the pull.
        tagged = [l for l in lines if "pull#" in l]
        assert tagged and all("pull#1" in l for l in tagged), tagged
        assert any(l.startswith(f"info: pull#1 {ref}: pulling for ") for l in lines), lines


def test_logs_hold_no_secret(token_registry, published, pull_daemon, short_tmp):
    """Neither the token request's query, nor a token, nor a password; a
    mirror URL with credentials in it is refused, without printing them."""
    reg, token = token_registry
    d = pull_daemon({"registries": {reg.host: {"username": USER, "password": PASSWORD}}})
    handle, err = pull(d.client(), f"{reg.host}/test/small:v1")
    assert err is None
    # The token request is logged, without its query.
    assert any(f"GET {token.url}/token -> HTTP 200" in l for l in d.log().splitlines())
    write_config(short_tmp / "daemon-config.json",
                 {"registries": {reg.host: {"mirrors": [f"http://mirror-user:Secret-Mirror-77@127.0.0.1:{free_port()}"]}}})
    line = hup(d)
    assert "keeping the configuration in force" in line and "may not hold credentials" in line, line
    log = d.log()
    assert token.tokens
    for secret in ("Secret-Mirror-77", "mirror-user", PASSWORD, "scope=", "service=", *token.tokens):
        assert secret not in log, secret
