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
400 truncated upload or malformed request (a Content-Length that is not a whole number included),
408 a request that did not arrive within its deadline, 422 a bundle that fails verification (an
unreadable, truncated or unsafe archive, a bad manifest, a hash mismatch, unsigned or untrusted
when the agent trusts keys), 500 a measurement that failed, 503 more connections than allowed
(with Retry-After); the agent keeps serving after each, and no reply names a path on the agent.
Connections are guarded as :mod:`toolchain.profile.connections` describes: one deadline for the
headers and one for the body (not per read), a cap on open connections, optional TLS, one log
line for a client that leaves.

Example::

    serve("0.0.0.0", 9600, token="s3cret", device="jetson",         # on the device
          tls_cert="agent.crt", tls_key="agent.key")
    profile_remote(Path("b.edgec"), "https://jetson:9600", token="s3cret",
                   request={"shapes": [[1, 128]]}, ca_file="agent.crt")
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import io
import json
import logging
import os
import re
import socket
import ssl
import sys
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
from toolchain.errors import EdgecError
from toolchain.profile.connections import (
    TLS_RECORD,
    ConnectionLimits,
    DeadlineReader,
    RequestTimeout,
    busy_reply,
    client_tls,
    exposure_warning,
    refuse_busy,
    server_tls,
    without_paths,
)
from toolchain.profile.local import run_worker
from toolchain.profile.runners import ProfileError

log = logging.getLogger(__name__)

REQUEST_HEADER = "X-Edgec-Request"
# what the agent measures a bundle on: ONNX Runtime on the CPU or CUDA, or TensorRT (the engine is
# built on the device from the bundle's ONNX, where tensorrt imports; elsewhere a clear refusal)
AGENT_RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt")
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
    unknown = set(req) - {"shapes", "runtime", "generation", *LIMITS}
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
    if out["runtime"] not in AGENT_RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(AGENT_RUNTIMES)}")
    for key, (lo, hi) in LIMITS.items():
        value = req.get(key, {"warmup": 20, "iterations": 200, "repeats": 5}.get(key))
        if value is not None and not (isinstance(value, int) and lo <= value <= hi):
            raise ValueError(f"{key} must be an integer in [{lo}, {hi}]")
        out[key] = value
    if "generation" in req:
        out["generation"] = _generation(req["generation"])
    return out


def _generation(g) -> dict:
    """A decoder bundle's generation request: ``{"prompt", "context", "rounds"}``."""
    ok = isinstance(g, dict) and not set(g) - {"prompt", "context", "rounds"}
    values = (
        {k: g.get(k, {"rounds": 3}.get(k)) for k in ("prompt", "context", "rounds")} if ok else {}
    )
    ok = ok and all(isinstance(v, int) and 0 < v <= 8192 for v in values.values())
    if not ok or values["prompt"] > values["context"] or values["rounds"] > 20:
        raise ValueError(
            "generation must be {prompt, context, rounds}: integers with prompt <= context <= 8192 "
            "and rounds <= 20"
        )
    return values


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgec-agent/1"
    server: Agent

    def setup(self):
        limits = self.server.limits
        deadline = time.monotonic() + limits.header_timeout_s
        # until a request line is parsed, a reply (408) still needs these
        self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
        self.plain_on_tls = False
        if self.server.tls is not None:
            self._start_tls(deadline)
        super().setup()
        self.rfile.close()  # reads go through the deadline instead
        self.reader = DeadlineReader(self.connection, deadline, limits.write_timeout_s)
        self.rfile = io.BufferedReader(self.reader, 1 << 16)
        self.connection.settimeout(limits.write_timeout_s)

    def _start_tls(self, deadline: float) -> None:
        self.request.settimeout(max(deadline - time.monotonic(), 0.001))
        first = self.request.recv(1, socket.MSG_PEEK)
        if not first:
            raise ConnectionAbortedError("closed before the TLS handshake")
        if first[0] != TLS_RECORD:  # plain HTTP: answered in plain HTTP, with what to use
            self.plain_on_tls = True
            return
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)

    def finish(self):
        super().finish()
        if isinstance(self.request, ssl.SSLSocket):  # the server closes only the plain socket
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_WR)
            self.request.close()

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except RequestTimeout:
            self.close_connection = True
            s = self.server.limits.header_timeout_s
            log.info("%s: request not complete within %g s; dropped", self.address_string(), s)
            self._reply(408, {"error": f"the request did not arrive within {s:g} s"})

    def log_message(self, fmt, *args):  # through logging, not stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def send_error(self, code, message=None, explain=None):  # http.server's own refusals: JSON
        self.close_connection = True
        self._reply(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self, size: int, *, seconds: float = 2.0, most: int = 64 << 20) -> None:
        """After refusing a body unread: close the connection, but first read and drop what the
        client is still sending (briefly, boundedly), so that it reads the refusal instead of a
        reset ("broken pipe") from closing a socket with unread data (a lingering close)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.request.settimeout(seconds)
            deadline, left = time.monotonic() + seconds, min(size, most)
            while left > 0 and time.monotonic() < deadline:
                chunk = self.request.recv(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)

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
        self._guarded(self._health)

    def do_POST(self):  # noqa: N802
        self._guarded(self._measure)

    def _guarded(self, action) -> None:
        """Run ``action``; whatever it raises is answered (500) without a server path, and the
        agent keeps serving. A client that went away is left to the server's one log line."""
        if self.plain_on_tls:
            self.close_connection = True
            where = self.headers.get("Host") or f"HOST:{self.server.server_address[1]}"
            self._reply(400, {"error": f"this agent speaks TLS only: use https://{where}"})
            return
        try:
            action()
        except (ConnectionError, ssl.SSLError, RequestTimeout):
            raise
        except EdgecError as e:
            log.warning("%s: %s %s failed: %s", self.address_string(), self.command, self.path, e)
            self._reply(500, {"error": without_paths(str(e))})
        except Exception:
            log.exception("%s: %s %s: unexpected error", self.address_string(), self.command,
                          self.path)  # fmt: skip
            self._reply(500, {"error": "internal error in the agent (its log has the details)"})

    def _health(self) -> None:
        if not self._authorized():
            return
        if self.path != "/health":
            self._reply(404, {"error": f"no such endpoint {self.path}; try /health or /measure"})
            return
        self._reply(
            200, {"status": "ok", "busy": self.server.lock.locked(), "device": self.server.device}
        )

    def _measure(self) -> None:
        if self.path != "/measure":
            self._reply(404, {"error": f"no such endpoint {self.path}; POST /measure"})
            return
        if not self._authorized():
            return
        size = self._content_length()
        if size is None:
            return
        if size > self.server.max_upload:
            self._reply(413, {"error": f"upload of {size} bytes exceeds {self.server.max_upload}"})
            self._drain(size)
            return
        try:
            request = validate_request(self.headers.get(REQUEST_HEADER))
        except ValueError as e:
            self._reply(400, {"error": str(e)})
            return
        self.reader.deadline = self.server.limits.body_deadline(size)
        try:
            body = self._read(size)
        except RequestTimeout:
            self.close_connection = True
            self._reply(408, {"error": f"the upload of {size} bytes did not arrive in time"})
            return
        if body is None:
            self._reply(400, {"error": f"truncated upload: expected {size} bytes"})
            return
        status, reply = self.server.measure(body, request)
        if "error" in reply and status not in (413, 422):
            # a refused bundle's message names its own members and manifest values (the
            # user's, e.g. an escaping '/etc/x'), already relative to the agent's temp folder
            reply = {**reply, "error": without_paths(str(reply["error"]))}
        self._reply(status, reply)

    def _content_length(self) -> int | None:
        """The declared body size, or None once the refusal (411, 400) is sent."""
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, {"error": "Content-Length required"})
            return None
        if not re.fullmatch(r"[0-9]{1,18}", length.strip()):
            self.close_connection = True
            error = f"Content-Length must be a whole number of bytes, got {length!r:.40}"
            self._reply(400, {"error": error})
            return None
        return int(length)

    def _read(self, size: int) -> bytes | None:
        buf = io.BytesIO()
        while buf.tell() < size:
            chunk = self.rfile.read(min(1 << 20, size - buf.tell()))
            if not chunk:
                return None
            buf.write(chunk)
        return buf.getvalue()


class Agent(ThreadingHTTPServer):
    """The HTTP(S) server; :meth:`measure` runs one measurement at a time.

    Each connection has a thread, at most ``limits.max_connections`` at a time (beyond them:
    503 from the accept loop), and deadlines for its whole request; ``tls`` (see
    :func:`~toolchain.profile.connections.server_tls`) makes it HTTPS.
    """

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
        tls: ssl.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
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
        self.tls, self.limits = tls, limits or ConnectionLimits()
        self.open_connections = 0
        self._count = threading.Lock()
        self._refusing = threading.Semaphore(1)

    def process_request(self, request, client_address):
        with self._count:
            busy = self.open_connections >= self.limits.max_connections
            if not busy:
                self.open_connections += 1
        if busy:
            log.info("%s: refused (503): %d connections open", client_address[0],
                     self.limits.max_connections)  # fmt: skip
            args = (request, busy_reply(self.limits.max_connections))
            if self.tls is None:  # answered here, without a thread
                refuse_busy(*args, tls=None)
            elif not self._refusing.acquire(blocking=False):
                request.close()  # too many at once even to answer 503
            else:  # a TLS 503 needs a handshake: one short-lived thread (at most one at a time)
                threading.Thread(target=self._refuse_tls, args=args, daemon=True).start()
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def _refuse_tls(self, request, reply) -> None:
        try:
            refuse_busy(request, reply, tls=self.tls)
        finally:
            self._refusing.release()

    def _release(self) -> None:
        with self._count:
            self.open_connections -= 1

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def handle_error(self, request, client_address):
        """A client that went away, stalled or failed its TLS handshake: one line, no
        traceback. Anything else: the traceback, once."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError, RequestTimeout)):
            why = type(error).__name__
            if isinstance(error, ssl.SSLError):
                why = f"TLS handshake: {error.reason or error}"
            log.info("%s: connection dropped (%s)", client_address[0], why)
        else:
            log.exception("%s: unexpected error", client_address[0])

    def measure(self, archive: bytes, request: dict) -> tuple[int, dict]:
        with tempfile.TemporaryDirectory(prefix="edgec-agent-") as tmp:
            path = Path(tmp) / "upload.edgec.tar.gz"
            path.write_bytes(archive)
            try:
                folder = unpack(path, Path(tmp) / "bundle", limits=self.archive_limits)
                manifest = verify(folder, trust=self.trust)
            except BundleError as e:  # the messages name files, not this agent's temp folders
                status = 413 if isinstance(e, ArchiveLimitError) else 422
                text = str(e).replace(tmp + "/", "").replace(tmp, "upload")
                return status, {"error": f"bundle refused: {text}"}
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
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    limits: ConnectionLimits | None = None,
    trust=None,
    archive_limits: ArchiveLimits | None = None,
) -> None:
    """Serve until interrupted: HTTPS with ``tls_cert`` and ``tls_key`` (PEM), else plain
    HTTP, with a warning on stderr when that is reachable beyond this machine; with ``trust``
    (:class:`toolchain.bundle.sign.TrustedKeys`) only bundles its keys signed are run.

    Raises:
        ProfileError: only one of ``tls_cert``/``tls_key``, or files that cannot be loaded.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ProfileError("TLS needs both --tls-cert and --tls-key")
    tls = server_tls(tls_cert, tls_key) if tls_cert else None
    agent = Agent(
        host,
        port,
        token=token,
        device=device,
        max_upload_mb=max_upload_mb,
        tls=tls,
        limits=limits,
        trust=trust,
        archive_limits=archive_limits,
    )
    bound = agent.server_address
    scheme = "https" if tls else "http"
    print(f"edgec agent: listening on {bound[0]}:{bound[1]} as {device} ({scheme})", flush=True)
    if trust is None:
        print("edgec agent: no --trust: any bundle whose hashes verify is run", flush=True)
    else:
        print(f"edgec agent: only bundles signed by {trust.describe()} are run", flush=True)
    if warning := exposure_warning(host, tls=tls is not None):
        print(f"edgec agent: {warning}", file=sys.stderr, flush=True)
    try:
        agent.serve_forever()
    finally:
        agent.server_close()


def read_token(path: str | Path) -> str:
    """The shared secret in ``path``: at least 8 characters, in a file only its owner can read.

    Raises:
        ProfileError: the file is missing, readable by group or others, or the token too short.
    """
    try:
        mode = os.stat(path).st_mode
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ProfileError(f"cannot read the token file {path}: {e.strerror}") from None
    if os.name == "posix" and mode & 0o077:
        raise ProfileError(
            f"the token file {path} can be read by others (mode {mode & 0o777:o}): "
            f"run chmod 600 {path}"
        )
    if len(token) < 8:
        raise ProfileError(f"{path}: the token must be at least 8 characters")
    return token


class AgentUnreachable(ProfileError):
    """The agent could not be reached, or the connection failed (refused, closed, timed out):
    a fault of the agent or the network, not of what was sent."""

    def __init__(self, message: str, *, url: str, reason: str):
        super().__init__(message)
        self.url, self.reason = url, reason


class AgentRefused(ProfileError):
    """The agent answered with an error status (``status``: 400, 401, 413, 422, 500, 503 ...)."""

    def __init__(self, message: str, *, url: str, status: int, detail: str):
        super().__init__(message)
        self.url, self.status, self.detail = url, status, detail


def profile_remote(
    bundle: Path,
    url: str,
    *,
    token: str,
    request: dict,
    timeout: float = 3600,
    ca_file: str | Path | None = None,
):
    """Upload ``bundle`` (a folder or .tar.gz) to an agent and return its measurement.

    ``url`` is ``http://`` or ``https://``; ``ca_file`` is the certificate to trust for an
    https agent (its self-signed certificate; None: the system's trust store).

    Raises:
        AgentRefused: the agent answered an error status (its message included).
        AgentUnreachable: no answer: connection refused, closed or timed out.
    """
    context = client_tls(url, ca_file)
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
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read() or b"{}").get("error", e.reason)
        except ValueError:
            detail = e.reason
        raise AgentRefused(
            f"the agent at {url} refused: {e.code} {detail}", url=url, status=e.code,
            detail=str(detail),
        ) from None  # fmt: skip
    except urllib.error.URLError as e:
        hint = _hint(e.reason)
        raise AgentUnreachable(
            f"cannot reach the agent at {url}: {e.reason}{hint}", url=url, reason=_why(e.reason)
        ) from None
    except (OSError, http.client.HTTPException) as e:
        why = str(e) or type(e).__name__
        raise AgentUnreachable(
            f"the agent at {url} closed the connection ({why}); an https:// agent reached with "
            "http://, or one busy with --max-connections open?",
            url=url,
            reason=_why(e),
        ) from None


def _why(reason) -> str:
    """A transport failure in a few words: refused, closed, timed out, or as it came."""
    detail = str(reason) or type(reason).__name__
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused ({detail})"
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        return f"connection closed ({detail})"
    if isinstance(reason, TimeoutError):
        return f"timed out ({detail})"
    return detail


def _hint(reason) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return " (a self-signed agent certificate? give it with --ca-cert FILE)"
    if isinstance(reason, ssl.SSLError):
        return " (does the agent serve TLS? it needs --tls-cert and --tls-key)"
    return ""
