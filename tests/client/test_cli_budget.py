"""msb-image events, prune --filter until=TIME and df's budget line, run as
a program against the real daemon."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest

from clitool import Events, run
from msbtest.events import budget_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE = range(5)


def image(kit, ref):
    return kit.image(ref, [{"etc/" + ref.rsplit("/", 1)[-1]: ref.encode()}])


def probe(rpc, kit, i):
    rpc.call("image.load", {"path": str(image(kit, f"example.com/probe/p{i}:1").layout.path)})


def references(rpc):
    return {h["reference"] for h in rpc.call("image.list")}


def test_events_human(daemon, rpc, imagekit):
    ev = Events(daemon.socket_path)
    try:
        first = ev.wait_subscribed(lambda i: probe(rpc, imagekit, i))
        assert " image.loaded example.com/probe/p" in first
        app = image(imagekit, "example.com/cli/app:1")
        rpc.call("image.load", {"path": str(app.layout.path)})
        rpc.call("pin.add", {"kind": "sandbox", "name": "web", "reference": "example.com/cli/app:1"})
        rpc.call("pin.remove", {"kind": "sandbox", "name": "web"})
        rpc.call("image.remove", {"reference": "example.com/cli/app:1"})
        lines = ev.read(4)
    finally:
        ev.stop()
    digest = app.manifest_digest
    want = [f"image.loaded example.com/cli/app:1 {digest}",
            f"pin.added example.com/cli/app:1 {digest} (sandbox web)",
            f"pin.removed example.com/cli/app:1 {digest} (sandbox web)",
            f"image.removed example.com/cli/app:1 {digest}"]
    for line, rest in zip(lines, want):
        when, _, tail = line.partition(" ")
        assert tail == rest
        # Local time with milliseconds and the zone, as docker events shows it.
        t = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%f%z")
        assert abs(t.timestamp() - time.time()) < 60


def test_events_json(daemon, rpc, imagekit):
    ev = Events(daemon.socket_path, "--format", "json")
    try:
        json.loads(ev.wait_subscribed(lambda i: probe(rpc, imagekit, i)))
        app = image(imagekit, "example.com/cli/app:1")
        rpc.call("image.load", {"path": str(app.layout.path)})
        got = json.loads(ev.read(1)[0])
    finally:
        ev.stop()
    assert set(got) == {"type", "reference", "manifest_digest", "at"}
    assert (got["type"], got["reference"], got["manifest_digest"]) == \
        ("image.loaded", "example.com/cli/app:1", app.manifest_digest)


def test_events_end_when_the_daemon_goes(daemon, rpc, imagekit):
    ev = Events(daemon.socket_path)
    try:
        ev.wait_subscribed(lambda i: probe(rpc, imagekit, i))
        daemon.stop()
        assert ev.proc.wait(20) == EXIT_UNREACHABLE
        assert "the daemon closed the connection" in ev.proc.stderr.read()
    finally:
        ev.stop()


def test_prune_filter_until(daemon, rpc, imagekit):
    old, new = image(imagekit, "example.com/cli/old:1"), image(imagekit, "example.com/cli/new:1")
    rpc.call("image.load", {"path": str(old.layout.path)})
    time.sleep(1.2)
    rpc.call("image.load", {"path": str(new.layout.path)})
    # Unused for a day: nothing goes.
    r = run("prune", "-y", "--filter", "until=24h", socket=daemon.socket_path)
    assert r.returncode == EXIT_OK, r.stderr
    assert "References removed:  0" in r.stdout
    # Unused for a second: the old one.
    r = run("prune", "-y", "--filter", "until=1s", socket=daemon.socket_path)
    assert r.returncode == EXIT_OK, r.stderr
    assert "Removed example.com/cli/old:1\n" in r.stdout and "References removed:  1" in r.stdout
    assert references(rpc) == {"example.com/cli/new:1"}
    # A time before the load (RFC 3339, UTC): nothing; a time after it: the rest.
    before = datetime.fromtimestamp(time.time() - 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = run("prune", "-y", "--format", "json", "--filter", f"until={before}", socket=daemon.socket_path)
    assert json.loads(r.stdout)["image_refs_removed"] == 0
    r = run("prune", "-y", "--format", "json", "--filter", f"until={int(time.time()) + 5}",
            socket=daemon.socket_path)
    assert json.loads(r.stdout)["image_refs_removed"] == 1
    assert references(rpc) == set()


@pytest.mark.parametrize("value", ["24h", "30m", "10s", "1h30m", "1.5h", "500ms", "1700000000", "1700000000.5",
                                   "2024-01-31", "2024-01-31T12:00", "2024-01-31T12:00:00",
                                   "2024-01-31T12:00:00.25Z", "2024-01-31T12:00:00+01:00"])
def test_prune_until_forms(daemon, rpc, value):
    r = run("prune", "-y", "--format", "json", "--filter", f"until={value}", socket=daemon.socket_path)
    assert r.returncode == EXIT_OK, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--filter", "until="], "until= is neither"),
    (["--filter", "until=yesterday"], "until=yesterday is neither"),
    (["--filter", "until=24"], None),
    (["--filter", "until=10x"], "until=10x is neither"),
    (["--filter", "until=-1h"], "until=-1h is neither"),
    (["--filter", "until=2024-13-01"], "is neither"),
    (["--filter", "until=2024-01-31T25:00"], "is neither"),
    (["--filter", "until=2024-01-31T12:00:00+0100"], "is neither"),
    (["--filter", "label=a=b"], "unknown filter 'label=a=b'"),
    (["--filter", "until=1h", "--filter", "until=2h"], "until= may be given once"),
])
def test_prune_filter_usage_errors(tmp_path, args, message):
    r = run("prune", "-y", *args, env=dict(os.environ, MSB_IMAGED_SOCKET=str(tmp_path / "none.sock")))
    if message is None:
        # A bare number is a Unix timestamp, as docker reads it: valid.
        assert r.returncode == EXIT_UNREACHABLE
        return
    assert r.returncode == EXIT_USAGE, r.stderr
    assert message in r.stderr


def test_df_shows_the_budget(daemon, rpc, imagekit, short_tmp):
    r = run("df", socket=daemon.socket_path)
    assert r.returncode == EXIT_OK and "Budget: none\n" in r.stdout
    daemon.stop()
    daemon.extra_args = ["--config", str(budget_config(short_tmp / "b.json", 10 * 1024 * 1024, 9 * 1024 * 1024))]
    daemon.start()
    c = daemon.client()
    total = c.call("system.df")["total_bytes"]
    r = run("df", socket=daemon.socket_path)
    assert r.returncode == EXIT_OK, r.stderr
    left = 10 * 1024 * 1024 - total
    assert "Budget: 10 MiB (evicting down to 9.0 MiB), " in r.stdout
    assert r.stdout.rstrip().endswith(" left")
    df = json.loads(run("df", "--format", "json", socket=daemon.socket_path).stdout)
    assert df["budget"] == {"max_bytes": 10 * 1024 * 1024, "low_bytes": 9 * 1024 * 1024, "remaining_bytes": left}
    # Over it: the store is larger than a 4 KiB budget before anything is loaded.
    daemon.stop()
    daemon.extra_args = ["--config", str(budget_config(short_tmp / "c.json", 4096))]
    daemon.start()
    r = run("df", socket=daemon.socket_path)
    assert "Budget: 4.0 KiB (evicting down to 3.6 KiB), " in r.stdout and "over it" in r.stdout
