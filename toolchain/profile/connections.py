"""How the agent guards its connections: deadlines, a cap, TLS, and replies without server paths.

Standard library only (the agent runs on a device with the standard library, numpy and
onnxruntime). :mod:`toolchain.profile.agent` uses these; they are here so each can be tested
alone.

Example::

    limits = ConnectionLimits(header_timeout_s=60, max_connections=16)
    tls = server_tls("agent.crt", "agent.key")          # None: plain HTTP
    if warning := exposure_warning("0.0.0.0", tls=tls is not None):
        print(warning)
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from toolchain.profile.runners import ProfileError

TLS_RECORD = 0x16  # the first byte of a TLS handshake; a plain HTTP request starts with a letter
RETRY_AFTER_S = 5
# an absolute POSIX path of at least two parts, not inside a URL: keep its last part only
_PATH = re.compile(r"(?<![\w/.:~-])/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]*)")


@dataclass(frozen=True)
class ConnectionLimits:
    """What the agent allows one connection before it answers.

    The deadlines hold for the whole request, not for each read: a client that sends one byte
    every few seconds is cut off (408) when its deadline passes.
    """

    header_timeout_s: float = 60.0  # the request line and headers (and TLS handshake), from accept
    body_timeout_s: float = 60.0  # the body: this much plus its size at min_upload_mb_s
    min_upload_mb_s: float = 0.25  # slowest upload rate allowed for (a 100 MB bundle: 460 s)
    max_connections: int = 16  # open connections; more are answered 503 without a thread
    write_timeout_s: float = 30.0  # each write of a reply

    def __post_init__(self):
        for name in ("header_timeout_s", "body_timeout_s", "min_upload_mb_s", "write_timeout_s"):
            if not getattr(self, name) > 0:
                raise ProfileError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_connections < 1:
            raise ProfileError(f"max_connections must be at least 1, got {self.max_connections}")

    def body_deadline(self, size: int) -> float:
        """The monotonic time by which a body of ``size`` bytes must have arrived, from now."""
        return time.monotonic() + self.body_timeout_s + size / (self.min_upload_mb_s * 2**20)


class RequestTimeout(Exception):
    """The request (headers or body) did not arrive before its deadline."""


class DeadlineReader(io.RawIOBase):
    """A socket read against one deadline for all reads (``deadline``, a monotonic time, may be
    moved on: the body gets its own). Between reads the socket keeps ``write_timeout_s``."""

    def __init__(self, sock: socket.socket, deadline: float, write_timeout_s: float):
        self.sock, self.deadline, self.write_timeout_s = sock, deadline, write_timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buf)
        except TimeoutError:
            raise RequestTimeout from None
        finally:
            self.sock.settimeout(self.write_timeout_s)


def server_tls(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from a PEM certificate and its private key.

    Raises:
        ProfileError: a file is missing, a folder or unreadable, or the key does not match the
            certificate.
    """
    _check_pem_file(cert, "TLS certificate (--tls-cert)")
    _check_pem_file(key, "TLS key (--tls-key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as e:
        raise ProfileError(
            f"cannot load the TLS certificate {cert} with key {key}: {e} (PEM files, the key "
            "unencrypted and matching the certificate)"
        ) from None
    return context


def client_tls(url: str, ca_file: str | Path | None) -> ssl.SSLContext | None:
    """The TLS context for an ``https://`` agent URL (``ca_file``: the agent's self-signed
    certificate or its CA; None: the system's trust store), None for ``http://``.

    Raises:
        ProfileError: a CA file with an http:// URL, or one that is missing, a folder,
            unreadable or not a PEM certificate.
    """
    if not url.startswith("https://"):
        if ca_file:
            raise ProfileError(f"a CA certificate was given but {url} is not https://")
        return None
    if ca_file:
        _check_pem_file(ca_file, "CA certificate (--ca-cert)")
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except OSError as e:  # ssl.SSLError is one: the file is not PEM
        what = "not a PEM certificate" if isinstance(e, ssl.SSLError) else "cannot be read"
        raise ProfileError(f"{ca_file}: {what} ({e})") from None


def _check_pem_file(path: str | Path, what: str) -> None:
    """Refuse a path that is not a readable file, naming it and what it should be."""
    path = Path(path)
    if path.is_dir():
        raise ProfileError(f"the {what} {path} is a folder; expected a PEM file")
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise ProfileError(
            f"cannot read the {what} {path}: {e.strerror or e}; expected a PEM file"
        ) from None


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1 or ``localhost``."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def exposure_warning(host: str, *, tls: bool) -> str | None:
    """The warning for listening beyond loopback in plain HTTP; None when there is nothing to
    warn of."""
    if tls or is_loopback(host):
        return None
    return (
        f"warning: listening on {host or 'every address'} without TLS: the token and the "
        "bundles cross the network in clear text. Give --tls-cert/--tls-key, or keep the agent "
        "on 127.0.0.1 and reach it through an SSH tunnel (ssh -L 9600:localhost:9600 DEVICE)"
    )


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last part: a reply never shows where
    the agent keeps its files (its temp folder, its install)."""
    return _PATH.sub(r"\1", message)


def busy_reply(max_connections: int) -> bytes:
    """The whole HTTP reply to a connection beyond the cap: 503, a JSON error, Retry-After."""
    body = json.dumps(
        {
            "error": f"the agent is busy: {max_connections} connections are open "
            f"(--max-connections); retry in {RETRY_AFTER_S} s"
        }
    ).encode()
    head = (
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_S}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def refuse_busy(sock: socket.socket, reply: bytes, *, tls: ssl.SSLContext | None) -> None:
    """Answer ``reply`` on a fresh connection and close it, never blocking on a plain one (it
    runs in the accept loop). Whatever the client already sent is read first, so the close
    does not reset the connection before the client reads the reply."""
    try:
        if tls is None:
            sock.setblocking(False)
            try:
                sock.recv(65536)
            except OSError:  # nothing arrived yet
                pass
        else:  # a TLS reply needs the handshake: it runs on a thread of its own, briefly
            sock.settimeout(2.0)
            sock = tls.wrap_socket(sock, server_side=True)
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the client went away, or was too slow: it is closed all the same
        pass
    finally:
        sock.close()
