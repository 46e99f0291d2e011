"""Cancelling image.pull through the real daemon: by rpc.cancel, by hanging
up, by the CLI on Ctrl-C and by cancelling the SDK's task. A pull nobody
waits for any more stops within CANCEL_DEADLINE_S: the registry is asked for
no more bytes, STORE/tmp empties and nothing is committed; a pull another
caller waits for goes on for it.

The layer of test/big:v1 (8 MiB) comes from a FaultServer throttled to
THROTTLE_BYTES_PER_S, so it takes half a minute to arrive unless cancelled.
"""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msbtest import build_dir
from registry_harness import FaultServer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python-sdk" / "src"))

from microsandbox import Client  # noqa: E402

# DESIGN "Cancellation": a cancelled pull stops within 3 s.
CANCEL_DEADLINE_S = 3.0
THROTTLE_BYTES_PER_S = 256 * 1024
PULL_TIMEOUT = 120


@pytest.fixture
def slow_big(published):
    """(FaultServer serving test/big:v1 with its layer throttled, the image)."""
    img = published.images["test/big:v1"]
    with FaultServer({"test/big": img.layout.path}, throttle={img.layers[0].blob_digest: THROTTLE_BYTES_PER_S}) as f:
        yield f, img


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_bytes_flowing(fault, img, timeout=30):
    """Until the throttled layer is being sent (some bytes are out)."""
    wait_for(lambda: fault.sent_bytes(img.layers[0].blob_digest) > 0, timeout, "the layer download to start")


def store_tmp(daemon):
    tmp = daemon.store / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def assert_stopped(daemon, fault, img, t_cancel):
    """The pull stopped within the deadline and left nothing behind."""
    blob = img.layers[0].blob_digest
    quiet = fault.wait_quiet(CANCEL_DEADLINE_S + 2) + (time.monotonic() - t_cancel)
    assert time.monotonic() - t_cancel < CANCEL_DEADLINE_S, f"the download went on for {quiet:.2f}s"
    wait_for(lambda: store_tmp(daemon) == [], CANCEL_DEADLINE_S, "STORE/tmp to empty")
    assert time.monotonic() - t_cancel < CANCEL_DEADLINE_S + 0.5
    # No more requests and no more bytes afterwards: nobody resumes it.
    sent, gets = fault.sent_bytes(blob), fault.count(f"/blobs/{blob}")
    time.sleep(1.0)
    assert (fault.sent_bytes(blob), fault.count(f"/blobs/{blob}")) == (sent, gets)
    assert sent < img.layers[0].size
    rpc = daemon.client()
    assert rpc.call("image.list") == []
    assert not list((daemon.store / "layers" / "sha256").glob("*.erofs"))
    assert store_tmp(daemon) == []


def cancel_lines(daemon):
    return [l for l in daemon.log_since_start().splitlines() if "cancelled" in l]


def test_rpc_cancel_stops_the_pull(slow_big, pull_daemon):
    fault, img = slow_big
    d = pull_daemon()
    rpc = d.client()
    rid = rpc.send_request("image.pull", {"reference": f"{fault.host}/test/big:v1"})
    wait_bytes_flowing(fault, img)
    t0 = time.monotonic()
    rpc.notify("rpc.cancel", {"id": rid})
    resp = rpc.wait(rid, timeout=CANCEL_DEADLINE_S)
    # The cancelled call is answered at once, as every call is.
    assert resp["error"]["data"]["name"] == "shutting-down", resp
    assert "cancelled" in resp["error"]["message"]
    assert time.monotonic() - t0 < 1.0
    assert_stopped(d, fault, img, t0)
    # The connection goes on serving, and the log tells the story under one tag.
    assert rpc.call("image.list") == []
    lines = [l.split("] ", 1)[1] for l in cancel_lines(d) if "pull#" in l]
    assert lines[0] == "info: pull#1: a caller cancelled", lines
    assert lines[1].startswith("info: pull#1 ") and "nobody waits for it any more" in lines[1], lines


def test_hanging_up_stops_the_pull(slow_big, pull_daemon):
    fault, img = slow_big
    d = pull_daemon()
    rpc = d.client()
    rpc.send_request("image.pull", {"reference": f"{fault.host}/test/big:v1"})
    wait_bytes_flowing(fault, img)
    t0 = time.monotonic()
    rpc.close()
    assert_stopped(d, fault, img, t0)


def test_one_of_two_callers_cancels(published, pull_daemon):
    """The pull goes on for the caller that still waits; the other is
    answered at once."""
    img = published.images["test/big:v1"]
    blob = img.layers[0].blob_digest
    with FaultServer({"test/big": img.layout.path}, throttle={blob: 2 * 1024 * 1024}) as fault:
        d = pull_daemon()
        quitter, stayer = d.client(), d.client()
        ref = f"{fault.host}/test/big:v1"
        qid = quitter.send_request("image.pull", {"reference": ref})
        sid = stayer.send_request("image.pull", {"reference": ref})
        wait_bytes_flowing(fault, img)
        quitter.notify("rpc.cancel", {"id": qid})
        resp = quitter.wait(qid, timeout=CANCEL_DEADLINE_S)
        assert resp["error"]["data"]["name"] == "shutting-down", resp
        resp = stayer.wait(sid, timeout=PULL_TIMEOUT)
        assert resp["result"]["manifest_digest"] == img.manifest_digest
        # One download, never restarted.
        assert fault.count(f"/blobs/{blob}") == 1
        assert stayer.call("image.list")[0]["manifest_digest"] == img.manifest_digest
        assert store_tmp(d) == []
        # Cancelling an id that is no call any more (answered) is no error.
        quitter.notify("rpc.cancel", {"id": sid})
        assert quitter.call("image.list")[0]["manifest_digest"] == img.manifest_digest


def test_cli_ctrl_c_cancels_the_pull(slow_big, pull_daemon):
    fault, img = slow_big
    d = pull_daemon()
    cli = build_dir() / "client" / "msb-image"
    proc = subprocess.Popen([str(cli), "--socket", str(d.socket_path), "pull", f"{fault.host}/test/big:v1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_bytes_flowing(fault, img)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=CANCEL_DEADLINE_S + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Ended by the interrupt, as a shell expects, after saying so.
    assert proc.returncode == -signal.SIGINT, (proc.returncode, out, err)
    assert err == "msb-image: pull cancelled\n"
    assert_stopped(d, fault, img, t0)
    # It asked the daemon to cancel before it hung up (a hang-up alone is
    # logged the other way round: the connection closes, then the call).
    lines = d.log_since_start().splitlines()
    cancelled = next(i for i, l in enumerate(lines) if "a caller cancelled" in l)
    closed = max(i for i, l in enumerate(lines) if l.endswith(" closed") and "connection" in l)
    assert cancelled < closed, lines


def test_sdk_task_cancellation_cancels_the_pull(slow_big, pull_daemon):
    fault, img = slow_big
    d = pull_daemon()

    async def main():
        async with Client(socket=str(d.socket_path)) as client:
            task = asyncio.ensure_future(client.images.pull(f"{fault.host}/test/big:v1"))
            while fault.sent_bytes(img.layers[0].blob_digest) == 0:
                assert not task.done()
                await asyncio.sleep(0.02)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The connection stays open: only rpc.cancel can have stopped it.
            await asyncio.sleep(0.2)
            assert await client.images.list() == []
            await asyncio.to_thread(assert_stopped, d, fault, img, t0)
            assert any("a caller cancelled" in l for l in d.log_since_start().splitlines())

    asyncio.run(main())
