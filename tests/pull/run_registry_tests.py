#!/usr/bin/env python3
"""Runs a check test program against real registries on loopback.

Builds a two-layer image (with tar, through msbtest.imagekit), starts
docker-registry three ways (plain HTTP; Bearer tokens from TokenServer;
htpasswd Basic over TLS with a test CA) plus a FaultServer, pushes the image
with skopeo, and runs the program with the endpoints in its environment:

  MSB_TEST_PLAIN, MSB_TEST_TOKEN, MSB_TEST_TLS     host:port of each registry
  MSB_TEST_TLS_CA                                  the test CA (PEM)
  MSB_TEST_USER, MSB_TEST_PASSWORD                 valid credentials
  MSB_TEST_FAULT                                   host:port of the FaultServer
  MSB_TEST_REPO, MSB_TEST_TAG                      where the image is
  MSB_TEST_MANIFEST_DIGEST, MSB_TEST_MANIFEST_SIZE
  MSB_TEST_BLOB_DIGEST, MSB_TEST_BLOB_SIZE         the first (large) layer
  MSB_TEST_BLOB2_DIGEST, MSB_TEST_BLOB2_SIZE       the second (small) layer
  MSB_TEST_CORRUPT_DIGEST                          a blob the FaultServer corrupts
  MSB_TEST_CUT_DIGEST                              a blob it cuts mid-body once
  MSB_TEST_DEAD                                    host:port where nothing listens

Usage: run_registry_tests.py PROGRAM
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "lib"))
sys.path.insert(0, str(HERE))

from msbtest.imagekit import ImageKit  # noqa: E402
from registry_harness import (FaultServer, Registry, TokenServer, free_port, htpasswd_file,  # noqa: E402
                              make_tls, push)

USER, PASSWORD = "msbuser", "s3cret-Pa55"


def main() -> int:
    program = sys.argv[1]
    work = Path(tempfile.mkdtemp(prefix="msb-pull-"))
    servers = []
    try:
        kit = ImageKit(work / "images")
        big = ImageKit.unique_bytes(3 * 1024 * 1024)
        img = kit.image("app:v1", layers=[{"data/big": big}, {"etc/motd": b"hello from the second layer\n"}])
        layout = img.layout.path

        plain = Registry(work / "plain")
        servers.append(plain.start())
        push(layout, "app:v1", f"{plain.host}/test/app:v1")

        token = TokenServer(work / "token", users={USER: PASSWORD})
        servers.append(token.start())
        treg = Registry(work / "treg", token=token)
        servers.append(treg.start())
        push(layout, "app:v1", f"{treg.host}/test/app:v1", creds=f"{USER}:{PASSWORD}")

        tls = make_tls(work / "tls")
        htp = htpasswd_file(work / "htpasswd", USER, PASSWORD)
        sreg = Registry(work / "sreg", tls=tls, htpasswd=htp)
        servers.append(sreg.start())
        push(layout, "app:v1", f"{sreg.host}/test/app:v1", creds=f"{USER}:{PASSWORD}")

        blob, blob2 = img.layers[0], img.layers[1]
        fault = FaultServer({"test/app": layout}, corrupt=[blob2.blob_digest], cut={blob.blob_digest: 1024 * 1024})
        servers.append(fault.start())

        env = dict(os.environ)
        env.update({
            "MSB_TEST_PLAIN": plain.host,
            "MSB_TEST_TOKEN": treg.host,
            "MSB_TEST_TLS": sreg.host,
            "MSB_TEST_TLS_CA": str(tls["ca"]),
            "MSB_TEST_USER": USER,
            "MSB_TEST_PASSWORD": PASSWORD,
            "MSB_TEST_FAULT": fault.host,
            "MSB_TEST_REPO": "test/app",
            "MSB_TEST_TAG": "v1",
            "MSB_TEST_MANIFEST_DIGEST": img.manifest_digest,
            "MSB_TEST_MANIFEST_SIZE": str(img.manifest_size),
            "MSB_TEST_BLOB_DIGEST": blob.blob_digest,
            "MSB_TEST_BLOB_SIZE": str(blob.size),
            "MSB_TEST_BLOB2_DIGEST": blob2.blob_digest,
            "MSB_TEST_BLOB2_SIZE": str(blob2.size),
            "MSB_TEST_CORRUPT_DIGEST": blob2.blob_digest,
            "MSB_TEST_CUT_DIGEST": blob.blob_digest,
            "MSB_TEST_DEAD": f"127.0.0.1:{free_port()}",
            "MSB_TEST_TMP": str(work),
            "HOME": str(work),
        })
        env.pop("DOCKER_CONFIG", None)
        return subprocess.run([program], env=env).returncode
    finally:
        for s in reversed(servers):
            s.stop()
        if os.environ.get("MSB_TEST_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
