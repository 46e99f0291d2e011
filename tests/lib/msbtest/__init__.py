"""Test harness for msb-imaged: the real daemon, a raw JSON-RPC client and
real OCI images.  Stdlib only, shared by tests/integration and
python-sdk/tests.

- :mod:`msbtest.daemon`   -- ``Daemon``: start/stop/kill9/restart the real msb-imaged.
- :mod:`msbtest.rpc`      -- ``RpcClient``/``RpcError``: raw NDJSON JSON-RPC 2.0 client.
- :mod:`msbtest.imagekit` -- ``ImageKit``: build layouts/archives with tar, umoci, skopeo,
  returning the truth (digests, sizes, config) to compare against.
- :mod:`msbtest.fixtures` -- pytest fixtures ``daemon``, ``rpc``, ``imagekit``;
  use ``from msbtest.fixtures import *`` in a conftest.py.
- :mod:`msbtest.store`    -- read-only checks on a store directory (files vs index rows).
- :mod:`msbtest.proto`    -- proto/openrpc.json as data: methods, errors by name, limits,
  ``check_error(err, name, parameter)``.
- :mod:`msbtest.checks`   -- compare ImageHandle / ImageDetail answers with an image's truth.
- :mod:`msbtest.erofs`    -- ``Mount``: kernel mounts of EROFS images, where the test may mount.
"""

from .daemon import Daemon, DaemonError, build_dir, daemon_binary
from .rpc import RpcClient, RpcError, ConnectionClosed, NO_PARAMS

__all__ = ["Daemon", "DaemonError", "build_dir", "daemon_binary", "RpcClient", "RpcError",
           "ConnectionClosed", "NO_PARAMS"]
