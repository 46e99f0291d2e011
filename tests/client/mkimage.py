#!/usr/bin/env python3
"""Builds the real OCI images the C tests of libmsbimage load, and prints
the truth about them as one JSON object (read back from the bytes on disk by
msbtest.imagekit, never typed in by hand).

Usage: mkimage.py OUTDIR

OUTDIR/app     an OCI layout with example.com/test/app:v1 (two layers, a config
               with env, cmd, entrypoint, working dir, user, labels, stop signal)
OUTDIR/app.tar the same layout as an OCI archive
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from msbtest.imagekit import Config, ImageKit  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1])
    kit = ImageKit(out / "kit")
    img = kit.image("example.com/test/app:v1",
                    layers=[{"etc/hello": b"hello from layer one\n", "bin/tool": b"#!/bin/sh\necho tool\n"},
                            {"etc/motd": b"second layer\n"}],
                    config=Config(env=["A=1", "PATH=/usr/bin:/bin"], cmd=["sh", "-c", "echo hi"],
                                  entrypoint=["/bin/tool"], working_dir="/srv", user="1000:1000",
                                  labels={"org.example.k": "v", "two": "2"}, stop_signal="SIGINT"))
    layout = Path(img.layout.path)
    archive = img.layout.oci_archive(out / "app.tar")
    truth = {
        "layout": str(layout.resolve()),
        "archive": str(Path(archive).resolve()),
        "reference": "example.com/test/app:v1",
        "manifest_digest": img.manifest_digest,
        "architecture": img.architecture,
        "os": img.os,
        "layer_count": img.layer_count,
        "size_bytes": img.size_bytes,
        "config": img.expected_config_detail(),
        "layers": img.expected_layers(),
    }
    print(json.dumps(truth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
