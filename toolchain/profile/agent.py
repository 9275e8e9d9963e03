"""The on-device measurement agent (`edgec agent`) and its client (`edgec profile --target`).

The agent runs on the target (a Jetson, a Raspberry Pi) with the standard library, numpy and
onnxruntime. ``POST /measure`` takes a bundle as ``.tar.gz`` (the body) and the protocol as JSON
in the ``X-Edgec-Request`` header; the agent checks the bearer token, the declared size, checks
the archive's members against its limits before unpacking (count, sizes, ratio, types, names),
verifies every hash and that every path the manifest names is inside the bundle, with ``trust``
that a trusted key signed it, measures the bundle's ONNX model in a fresh process (one
measurement at a time; others wait their turn) and answers JSON with its own environment header.
Nothing but a verified bundle's ONNX model is ever run. ``GET /health`` answers too.

Status codes: 401 no token, 403 wrong token, 411 no Content-Length, 413 too large (the upload, or
an archive over the unpacking limits: too many members, too large unpacked, a compression bomb),
400 truncated upload or malformed request, 422 a bundle that fails verification (an unreadable,
truncated or unsafe archive, a bad manifest, a hash mismatch, unsigned or untrusted when the
agent trusts keys), 500 a measurement that failed; the agent keeps serving after each.

Example::

    serve("0.0.0.0", 9600, token="s3cret")                    # on the device
    profile_remote(Path("b.edgec"), "http://jetson:9600", token="s3cret", shapes=[[1, 128]])
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from toolchain.bundle.manifest import (
    ArchiveLimitError,
    ArchiveLimits,
    BundleError,
    pack,
    unpack,
    verify,
)
from toolchain.profile.local import run_worker
from toolchain.profile.runners import ProfileError

log = logging.getLogger(__name__)

REQUEST_HEADER = "X-Edgec-Request"
LIMITS = {
    "warmup": (0, 10_000),
    "iterations": (1, 100_000),
    "repeats": (1, 100),
    "threads": (1, 1024),
}


def validate_request(raw: str | None) -> dict:
    """The measurement request, or ValueError naming what is wrong."""
    if not raw:
        raise ValueError(f"missing {REQUEST_HEADER} header (JSON: shapes, warmup, iterations, ...)")
    try:
        req = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{REQUEST_HEADER} is not JSON: {e.msg}") from None
    if not isinstance(req, dict):
        raise ValueError(f"{REQUEST_HEADER} must be a JSON object")
    unknown = set(req) - {"shapes", "runtime", *LIMITS}
    if unknown:
        raise ValueError(f"unknown request keys: {sorted(unknown)}")
    shapes = req.get("shapes", [[1, 128]])
    if not (
        isinstance(shapes, list)
        and 0 < len(shapes) <= 64
        and all(
            isinstance(s, list)
            and len(s) == 2
            and all(isinstance(v, int) and 0 < v <= 8192 for v in s)
            for s in shapes
        )
    ):
        raise ValueError("shapes must be a list of [batch, seq] positive integers (at most 64)")
    out = {"shapes": shapes, "runtime": req.get("runtime", "onnxruntime")}
    if out["runtime"] not in ("onnxruntime", "onnxruntime-cuda"):
        raise ValueError("runtime must be onnxruntime or onnxruntime-cuda")
    for key, (lo, hi) in LIMITS.items():
        value = req.get(key, {"warmup": 20, "iterations": 200, "repeats": 5}.get(key))
        if value is not None and not (isinstance(value, int) and lo <= value <= hi):
            raise ValueError(f"{key} must be an integer in [{lo}, {hi}]")
        out[key] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgec-agent/1"

    def log_message(self, fmt, *args):  # through logging, not stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            self._reply(401, {"error": "missing token: send 'Authorization: Bearer <token>'"})
            return False
        if not hmac.compare_digest(header[7:].encode(), self.server.token.encode()):
            self._reply(403, {"error": "wrong token"})
            return False
        return True

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if not self._authorized():
            return
        if self.path != "/health":
            self._reply(404, {"error": f"no such endpoint {self.path}; try /health or /measure"})
            return
        self._reply(
            200, {"status": "ok", "busy": self.server.lock.locked(), "device": self.server.device}
        )

    def do_POST(self):  # noqa: N802
        try:
            self._measure()
        except Exception as e:  # a request never takes the agent down
            log.exception("measurement failed")
            self._reply(500, {"error": f"{type(e).__name__}: {e}"})

    def _measure(self) -> None:
        if self.path != "/measure":
            self._reply(404, {"error": f"no such endpoint {self.path}; POST /measure"})
            return
        if not self._authorized():
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, {"error": "Content-Length required"})
            return
        size = int(length)
        if size > self.server.max_upload:
            self._reply(413, {"error": f"upload of {size} bytes exceeds {self.server.max_upload}"})
            return
        try:
            request = validate_request(self.headers.get(REQUEST_HEADER))
        except ValueError as e:
            self._reply(400, {"error": str(e)})
            return
        body = self._read(size)
        if body is None:
            self._reply(400, {"error": f"truncated upload: expected {size} bytes"})
            return
        self._reply(*self.server.measure(body, request))

    def _read(self, size: int) -> bytes | None:
        buf = io.BytesIO()
        while buf.tell() < size:
            try:
                chunk = self.rfile.read(min(1 << 20, size - buf.tell()))
            except TimeoutError:
                return None
            if not chunk:
                return None
            buf.write(chunk)
        return buf.getvalue()


class Agent(ThreadingHTTPServer):
    """The HTTP server; :meth:`measure` runs one measurement at a time."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str,
        device: str,
        max_upload_mb: float,
        timeout_s: float = 3600,
        trust=None,
        archive_limits: ArchiveLimits | None = None,
    ):
        """``trust``: a :class:`toolchain.bundle.sign.TrustedKeys`, and only bundles one of its
        keys signed are run (None: any bundle whose hashes verify); ``archive_limits``: what an
        upload may unpack to (default :class:`ArchiveLimits`)."""
        if len(token) < 8:
            raise ProfileError("the agent token must be at least 8 characters")
        super().__init__((host, port), _Handler)
        self.token, self.device = token, device
        self.max_upload = int(max_upload_mb * 2**20)
        self.timeout_s = timeout_s
        self.trust = trust
        self.archive_limits = archive_limits or ArchiveLimits()
        self.lock = threading.Lock()

    def finish_request(self, request, client_address):
        request.settimeout(30)  # a client that stalls mid-upload is dropped
        super().finish_request(request, client_address)

    def measure(self, archive: bytes, request: dict) -> tuple[int, dict]:
        with tempfile.TemporaryDirectory(prefix="edgec-agent-") as tmp:
            path = Path(tmp) / "upload.edgec.tar.gz"
            path.write_bytes(archive)
            try:
                folder = unpack(path, Path(tmp) / "bundle", limits=self.archive_limits)
                manifest = verify(folder, trust=self.trust)
            except BundleError as e:  # the messages name files, not this agent's temp folders
                status = 413 if isinstance(e, ArchiveLimitError) else 422
                return status, {"error": f"bundle refused: {str(e).replace(tmp + '/', '')}"}
            with self.lock:  # one measurement at a time; later requests wait here
                started = time.time()
                reply = run_worker(
                    {"target": str(folder / manifest["runtime"]["model"]), **request},
                    timeout=self.timeout_s,
                )
                finished = time.time()
        reply["environment"]["device"] = self.device
        reply.update(
            started=started, finished=finished, label=f"measured on {self.device} by edgec agent"
        )
        return 200, reply


def serve(
    host: str,
    port: int,
    *,
    token: str,
    device: str,
    max_upload_mb: float = 512,
    trust=None,
    archive_limits: ArchiveLimits | None = None,
) -> None:
    agent = Agent(
        host,
        port,
        token=token,
        device=device,
        max_upload_mb=max_upload_mb,
        trust=trust,
        archive_limits=archive_limits,
    )
    bound = agent.server_address
    print(f"edgec agent: listening on {bound[0]}:{bound[1]} as {device}", flush=True)
    if trust is None:
        print("edgec agent: no --trust: any bundle whose hashes verify is run", flush=True)
    else:
        print(f"edgec agent: only bundles signed by {trust.describe()} are run", flush=True)
    try:
        agent.serve_forever()
    finally:
        agent.server_close()


def read_token(path: str | Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ProfileError(f"cannot read the token file {path}: {e.strerror}") from None
    if len(token) < 8:
        raise ProfileError(f"{path}: the token must be at least 8 characters")
    return token


def profile_remote(bundle: Path, url: str, *, token: str, request: dict, timeout: float = 3600):
    """Upload ``bundle`` (a folder or .tar.gz) to an agent and return its measurement."""
    with tempfile.TemporaryDirectory(prefix="edgec-upload-") as tmp:
        archive = bundle
        if bundle.is_dir():
            archive = pack(bundle, Path(tmp) / f"{bundle.name}.tar.gz")
        data = archive.read_bytes()
    req = urllib.request.Request(
        url.rstrip("/") + "/measure",
        data=data,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            REQUEST_HEADER: json.dumps(request),
            "Content-Type": "application/gzip",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        detail = json.loads(e.read() or b"{}").get("error", e.reason)
        raise ProfileError(f"the agent at {url} refused: {e.code} {detail}") from None
    except urllib.error.URLError as e:
        raise ProfileError(f"cannot reach the agent at {url}: {e.reason}") from None
