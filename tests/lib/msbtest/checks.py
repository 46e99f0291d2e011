"""Assertions that compare the daemon's answers with an image's truth.

``now_ms()``                                    wall clock in ms since the epoch.
``assert_handle(h, img, reference, before=None, after=None)``
    an ImageHandle against an :class:`msbtest.imagekit.Image` (or
    DockerArchive): exact field set, canonical reference, manifest digest
    (Images only), architecture/os from the config, layer count, size_bytes,
    times as numbers within [before, after] when given.
``assert_detail(d, img, reference)``
    an ImageDetail: its handle, the ImageConfigDetail field by field, and
    every ImageLayerDetail (erofs_size_bytes: an int >= 0 or None).
"""

from __future__ import annotations

import time

__all__ = ["now_ms", "assert_handle", "assert_detail", "HANDLE_FIELDS", "LAYER_FIELDS", "CONFIG_FIELDS"]

HANDLE_FIELDS = {"reference", "manifest_digest", "architecture", "os", "layer_count", "size_bytes",
                 "created_at", "last_used_at"}
CONFIG_FIELDS = {"digest", "env", "cmd", "entrypoint", "working_dir", "user", "labels", "stop_signal"}
LAYER_FIELDS = {"diff_id", "blob_digest", "media_type", "compressed_size_bytes", "erofs_size_bytes", "position"}


def now_ms() -> float:
    return time.time() * 1000.0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def assert_handle(h: dict, img, reference: str, before: float | None = None, after: float | None = None) -> None:
    assert set(h) == HANDLE_FIELDS, f"ImageHandle fields differ: {sorted(h)}"
    assert h["reference"] == reference, h
    if hasattr(img, "manifest_digest"):
        assert h["manifest_digest"] == img.manifest_digest, h
    else:
        assert isinstance(h["manifest_digest"], str) and h["manifest_digest"].startswith("sha256:"), h
    assert h["architecture"] == img.architecture, h
    assert h["os"] == img.os, h
    assert h["layer_count"] == len(img.layers) and type(h["layer_count"]) is int, h
    assert h["size_bytes"] == img.size_bytes and type(h["size_bytes"]) is int, h
    assert _is_number(h["created_at"]) and _is_number(h["last_used_at"]), h
    assert h["last_used_at"] >= h["created_at"], h
    # One second of slack: the daemon may truncate to whole ms or seconds.
    if before is not None:
        assert h["created_at"] >= before - 1000, (h, before)
    if after is not None:
        assert h["last_used_at"] <= after + 1000, (h, after)


def assert_detail(d: dict, img, reference: str) -> None:
    assert set(d) == {"handle", "config", "layers"}, f"ImageDetail fields differ: {sorted(d)}"
    assert_handle(d["handle"], img, reference)
    cfg = d["config"]
    assert cfg is not None and set(cfg) == CONFIG_FIELDS, f"ImageConfigDetail fields differ: {cfg}"
    if hasattr(img, "expected_config_detail"):
        want = img.expected_config_detail()
    else:
        c = img.config.get("config") or {}
        want = {"digest": img.config_digest, "env": c.get("Env") or [], "cmd": c.get("Cmd"),
                "entrypoint": c.get("Entrypoint"), "working_dir": c.get("WorkingDir") or None,
                "user": c.get("User") or None, "labels": c.get("Labels"), "stop_signal": c.get("StopSignal") or None}
    assert cfg == want, f"config detail:\n got  {cfg}\n want {want}"
    assert len(d["layers"]) == len(img.layers), d["layers"]
    for i, (got, layer) in enumerate(zip(d["layers"], img.layers)):
        assert set(got) == LAYER_FIELDS, f"ImageLayerDetail fields differ: {sorted(got)}"
        assert got["position"] == i, got
        assert got["diff_id"] == layer.diff_id, (i, got, layer)
        assert got["blob_digest"] == layer.blob_digest, (i, got, layer)
        assert got["compressed_size_bytes"] == layer.size, (i, got, layer)
        if layer.media_type is not None:
            assert got["media_type"] == layer.media_type, (i, got, layer)
        e = got["erofs_size_bytes"]
        assert e is None or (type(e) is int and e > 0), got
