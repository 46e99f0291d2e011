"""Real registries on loopback for the pull tests (stdlib only).

- :class:`Registry`: Debian's ``docker-registry`` (distribution 2.8) on a free
  127.0.0.1 port with a temporary config.yml: plain HTTP, htpasswd Basic auth
  over TLS with a test CA, Bearer token auth (with :class:`TokenServer`), or
  proxy mode in front of another registry (a pull-through mirror).
  ``requests(...)`` counts the requests it served, read from its access log.
- :class:`TokenServer`: a small token server (distribution "Token
  Authentication Specification"): checks Basic credentials and issues RS256
  JWTs signed with ``openssl dgst``, carrying an x5c chain the registry trusts.
- :class:`FaultServer`: a tiny registry that serves an OCI layout and
  misbehaves on purpose: wrong bytes for chosen blobs, or a connection cut
  in the middle of a blob (then honouring Range on the retry). It counts
  every request.
- :func:`push`: ``skopeo copy oci:LAYOUT:REF docker://HOST/NAME:TAG``.
- :func:`make_tls`: a test CA and a server certificate for 127.0.0.1.

Every key is a 2048-bit RSA key, as a registry's would be. Making one costs
openssl 0.2-0.5 s of CPU, and a run of scripts/test.sh needs dozens (each
TLS registry two, each token server one, in the plain and TSan suites and
the meson tests of three builds), so a run makes them once: see
:func:`_rsa_key`.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

from msbtest.buildonce import build_once

__all__ = ["free_port", "Registry", "TokenServer", "FaultServer", "push", "make_tls", "htpasswd_file",
           "raw_manifest", "TEST_USER", "TEST_PASSWORD", "TEST_IDENTITY_TOKEN"]

# The credentials of the test registries that want some.
TEST_USER, TEST_PASSWORD = "puller", "Pw-for-tests-91"
# An identity token (OAuth2 refresh token) the token fixtures accept for TEST_USER.
TEST_IDENTITY_TOKEN = "Identity-Token-9"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _run(*argv, **kw) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


# How many keys this process has taken from the run's pool (_rsa_key).
_keys_taken = 0
_keys_lock = threading.Lock()


def _genrsa(dest: Path) -> None:
    _run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", dest)


def _rsa_key(dest: Path) -> Path:
    """A 2048-bit RSA key written to dest, unlike every other key this
    process has had from here (two CAs of one test never share a key, so
    one never verifies what the other signed).

    With $MSB_TEST_IMAGE_CACHE set (scripts/test.sh: the run's cache,
    emptied at each run), the n-th key a process asks for is the n-th of
    the run's pool, made by the first process that needed it (build_once)
    and copied by the others: the
    servers of different processes may share a key, which none of them can
    tell, as they never talk to each other. Without it, each key is new."""
    global _keys_taken
    dest = Path(dest)
    cache = os.environ.get("MSB_TEST_IMAGE_CACHE")
    if not cache:
        _genrsa(dest)
        return dest
    with _keys_lock:
        n = _keys_taken
        _keys_taken += 1
    pooled = build_once(Path(cache) / "rsa-2048", f"key-{n}.pem", _genrsa)
    dest.write_bytes(pooled.read_bytes())
    dest.chmod(0o600)
    return dest


def make_tls(directory: Path, cn: str = "127.0.0.1") -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "server.ext"
    _run("openssl", "req", "-x509", "-new", "-key", _rsa_key(ca_key), "-out", ca_crt,
         "-days", "2", "-subj", "/CN=msb test CA")
    _run("openssl", "req", "-new", "-key", _rsa_key(key), "-out", csr, "-subj", f"/CN={cn}")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext)
    return {"ca": ca_crt, "cert": crt, "key": key}


def htpasswd_file(path: Path, user: str, password: str) -> Path:
    """An htpasswd file with a bcrypt entry (apache2-utils' htpasswd -B)."""
    Path(path).write_text(_run("htpasswd", "-Bbn", user, password))
    return Path(path)


_ACCESS_RE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3})')


class Registry:
    """docker-registry on 127.0.0.1:<free port>."""

    def __init__(self, workdir: Path, *, tls: dict | None = None, htpasswd: Path | None = None,
                 token: "TokenServer | None" = None, proxy: str | None = None,
                 proxy_username: str | None = None, proxy_password: str | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        self.log_path = self.workdir / "registry.log"
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
            f"  secret: {uuid.uuid4().hex}",
        ]
        if tls:
            lines += ["  tls:", f"    certificate: {tls['cert']}", f"    key: {tls['key']}"]
        if htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: msb-test", f"    path: {htpasswd}"]
        if token:
            lines += ["auth:", "  token:", f"    realm: {token.url}/token", f"    service: {token.service}",
                      f"    issuer: {token.issuer}", f"    rootcertbundle: {token.cert}"]
        if proxy:
            lines += ["proxy:", f"  remoteurl: {proxy}"]
            if proxy_username:
                lines += [f"  username: {proxy_username}", f"  password: {proxy_password}"]
        self.config = self.workdir / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Registry":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def access_log(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request served so far."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [(m.group(1), m.group(2), int(m.group(3))) for m in _ACCESS_RE.finditer(text)]

    def requests(self, method: str = "GET", path_contains: str = "", status: int | None = None) -> int:
        return sum(1 for m, p, s in self.access_log()
                   if m == method and path_contains in p and (status is None or s == status))


def push(layout: Path, ref: str, dest: str, *, creds: str | None = None, tls_verify: bool = False,
         cert_dir: Path | None = None, all_images: bool = True, docker_format: bool = False) -> None:
    """skopeo copy oci:LAYOUT:REF docker://DEST (all platforms of an index);
    docker_format converts to Docker schema 2 media types on the way."""
    argv = ["skopeo", "copy", "--retry-times", "2"]
    if all_images:
        argv.append("--all")
    if docker_format:
        argv += ["--format", "v2s2"]
    argv += ["--dest-tls-verify=" + ("true" if tls_verify else "false")]
    if cert_dir:
        argv += ["--dest-cert-dir", str(cert_dir)]
    if creds:
        argv += ["--dest-creds", creds]
    argv += [f"oci:{layout}:{ref}", f"docker://{dest}"]
    _run(*argv)


def raw_manifest(ref: str) -> bytes:
    """The manifest bytes a registry serves for docker://REF (skopeo inspect --raw)."""
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], capture_output=True,
                       check=True)
    return r.stdout


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # noqa: D401 - the tests read counters, not logs
        pass


class TokenServer:
    """Issues registry tokens for a user/password (Basic, GET), anonymously,
    or for an identity token: an OAuth2 refresh token POSTed as a form
    (grant_type=refresh_token, the distribution spec's "OAuth2 token"
    request, what Docker sends when its config holds an identitytoken)."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, anonymous: bool = False,
                 expires_in: int = 300, refresh_tokens: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.refresh_tokens = dict(refresh_tokens or {})  # refresh token -> user
        self.oauth_posts: list[dict[str, str]] = []  # the forms POSTed, refresh tokens left out
        self.anonymous = anonymous
        self.expires_in = expires_in
        self.service = "msb-test-registry"
        self.issuer = "msb-test-issuer"
        self.key = self.workdir / "token.key"
        self.cert = self.workdir / "token.crt"
        _run("openssl", "req", "-x509", "-new", "-key", _rsa_key(self.key), "-out", self.cert,
             "-days", "2", "-subj", "/CN=msb test token signer")
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], capture_output=True,
                             check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued = 0
        self.tokens: list[str] = []
        self.refused = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: http.server.ThreadingHTTPServer | None = None

    def _sign(self, payload: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(payload).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             capture_output=True, check=True).stdout
        return signing_input + "." + _b64url(sig)

    def _token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) >= 3 and parts[0] == "repository":
                access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                               "actions": [a for a in parts[-1].split(",") if a in ("pull", "push")]})
        now = int(time.time())
        return self._sign({"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + self.expires_in,
                           "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access})

    def start(self) -> "TokenServer":
        outer = self

        class Handler(_QuietHandler):
            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(url.query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    try:
                        u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    except Exception:
                        u, p = "", None
                    if outer.users.get(u) == p:
                        user = u
                if url.path != "/token" or (user is None and not (outer.anonymous and not auth)):
                    return self._refuse()
                token = outer._token(user or "", q.get("scope", []))
                self._issue({"token": token, "expires_in": outer.expires_in}, token)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(min(length, 65536)).decode(errors="replace"))
                field = lambda k: (form.get(k) or [""])[0]  # noqa: E731
                user = outer.refresh_tokens.get(field("refresh_token"))
                with outer.lock:
                    outer.oauth_posts.append({k: field(k) for k in form if k != "refresh_token"})
                if (urllib.parse.urlparse(self.path).path != "/token" or field("grant_type") != "refresh_token"
                        or not field("client_id") or user is None
                        or self.headers.get("Content-Type") != "application/x-www-form-urlencoded"):
                    return self._refuse()
                token = outer._token(user, field("scope").split(" ") if field("scope") else [])
                self._issue({"access_token": token, "expires_in": outer.expires_in, "scope": field("scope")}, token)

            def _refuse(self):
                with outer.lock:
                    outer.refused += 1
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _issue(self, answer, token):
                body = json.dumps(answer).encode()
                with outer.lock:
                    outer.issued += 1
                    outer.tokens.append(token)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FaultServer:
    """A registry (read-only v2 API) serving one OCI layout, with faults.

    ``repos`` maps a repository name to the layout it serves; tags are the
    layout's ref names (the part after the last ':').  ``corrupt`` holds blob
    digests served with one byte flipped; ``cut`` maps blob digests to the
    number of bytes after which the first response is cut (the connection is
    closed); later requests are served whole, honouring ``Range``.
    ``fail`` maps a path suffix (a tag or a digest) to ``(status, times)``:
    the first ``times`` requests get that status (-1 times: always), with
    ``Retry-After: 1`` on 429.  ``throttle`` maps blob digests to a rate in
    bytes per second.  For throttled blobs it keeps ``sent`` (bytes written
    per digest, all responses together) and ``streaming`` (responses still
    being written); ``wait_quiet(timeout)`` waits until none is.
    """

    def __init__(self, repos: dict[str, Path], corrupt=(), cut: dict[str, int] | None = None,
                 manifest_override: dict[str, bytes] | None = None,
                 fail: dict[str, tuple[int, int]] | None = None, throttle: dict[str, int] | None = None):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.corrupt = set(corrupt)
        self.cut = dict(cut or {})
        self.manifest_override = dict(manifest_override or {})
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.throttle = dict(throttle or {})
        self.sent: dict[str, int] = {}
        self.streaming = 0
        self.log: list[tuple[str, str, str]] = []  # (method, path, range)
        self.lock = threading.Lock()
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.server: http.server.ThreadingHTTPServer | None = None

    def count(self, path_contains: str) -> int:
        with self.lock:
            return sum(1 for _, p, _ in self.log if path_contains in p)

    def wait_quiet(self, timeout: float) -> float:
        """Seconds until no throttled blob is being written any more (the
        client went away, or it is all sent); raises TimeoutError."""
        t0 = time.monotonic()
        while True:
            with self.lock:
                if self.streaming == 0:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"a throttled blob is still being sent after {timeout}s")
            time.sleep(0.02)

    def sent_bytes(self, digest: str) -> int:
        with self.lock:
            return self.sent.get(digest, 0)

    def _tags(self, layout: Path, repo: str) -> dict[str, dict]:
        """Tags of the layout's ref names; where several names share a tag
        (a layout of several images), the one named like the repository's
        last component wins."""
        index = json.loads((layout / "index.json").read_text())
        tags, exact = {}, {}
        for d in index.get("manifests", []):
            name = (d.get("annotations") or {}).get("org.opencontainers.image.ref.name")
            if name:
                base, _, tag = name.rpartition(":")
                tags.setdefault(tag, d)
                if base == repo.rsplit("/", 1)[-1]:
                    exact[tag] = d
        return {**tags, **exact}

    def start(self) -> "FaultServer":
        outer = self

        class Handler(_QuietHandler):
            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                with outer.lock:
                    outer.log.append((self.command, self.path, self.headers.get("Range", "")))
                if self.path == "/v2/":
                    return self._send(200, b"{}", {"Docker-Distribution-API-Version": "registry/2.0"})
                with outer.lock:
                    rule = next((v for k, v in outer.fail.items() if self.path.endswith("/" + k)), None)
                    status = None
                    if rule and rule[1] != 0:
                        status = rule[0]
                        rule[1] -= 1 if rule[1] > 0 else 0
                if status:
                    return self._send(status, b'{"errors":[{"code":"UNAVAILABLE"}]}',
                                      {"Retry-After": "1"} if status == 429 else {})
                m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", self.path)
                if not m or m.group(1) not in outer.repos:
                    return self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
                layout, kind, ref = outer.repos[m.group(1)], m.group(2), m.group(3)
                if kind == "manifests":
                    return self._manifest(layout, ref, m.group(1))
                return self._blob(layout, ref)

            def _manifest(self, layout, ref, repo):
                if ref in outer.manifest_override:
                    return self._send(200, outer.manifest_override[ref],
                                      {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
                desc = outer._tags(layout, repo).get(ref)
                digest = desc["digest"] if desc else ref
                path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
                if not digest.startswith("sha256:") or not path.exists():
                    return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                data = path.read_bytes()
                mt = json.loads(data).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
                self._send(200, data, {"Content-Type": mt, "Docker-Content-Digest": digest})

            def _blob(self, layout, digest):
                path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
                if not digest.startswith("sha256:") or not path.exists():
                    return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                data = path.read_bytes()
                if digest in outer.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                with outer.lock:
                    cut = outer.cut.pop(digest, None)
                if cut is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Accept-Ranges", "bytes")
                    self.end_headers()
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                rate = outer.throttle.get(digest)
                if rate:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    step = max(1, rate // 20)
                    with outer.lock:
                        outer.streaming += 1
                    try:
                        for off in range(0, len(data), step):
                            self.wfile.write(data[off:off + step])
                            self.wfile.flush()
                            with outer.lock:
                                outer.sent[digest] = outer.sent.get(digest, 0) + len(data[off:off + step])
                            time.sleep(0.05)
                    except OSError:
                        pass
                    finally:
                        with outer.lock:
                            outer.streaming -= 1
                    return
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if rng and int(rng.group(1)) < len(data):
                    start = int(rng.group(1))
                    return self._send(206, data[start:], {
                        "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                        "Docker-Content-Digest": digest})
                self._send(200, data, {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
