"""The agent's connections, on loopback with the agent in a thread: deadlines for the whole
request, a connection cap, strict Content-Length, no server paths in replies, one log line for a
client that leaves, TLS, private token files, and the warning for plain HTTP beyond loopback."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import os
import select
import socket
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from toolchain.errors import EdgecError
from toolchain.profile import agent as agent_module
from toolchain.profile.agent import REQUEST_HEADER, Agent, profile_remote, read_token, serve
from toolchain.profile.connections import (
    ConnectionLimits,
    client_tls,
    exposure_warning,
    is_loopback,
    server_tls,
    without_paths,
)
from toolchain.profile.runners import ProfileError

TOKEN = "correct-horse-battery"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
QUICK = json.dumps({"shapes": [[1, 8]], "warmup": 1, "iterations": 3, "repeats": 1})


@contextlib.contextmanager
def running(*, tls=None, **limits):
    """An agent on a free loopback port, served by a thread; yields it."""
    agent = Agent(
        "127.0.0.1",
        0,
        token=TOKEN,
        device="test-device",
        max_upload_mb=1,
        tls=tls,
        limits=ConnectionLimits(**limits),
    )
    thread = threading.Thread(target=agent.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield agent
    finally:
        agent.shutdown()
        agent.server_close()
        thread.join(timeout=5)


@pytest.fixture
def agent_log(caplog, monkeypatch):
    """The agent's log records (the ``toolchain`` logger may have been set not to propagate)."""
    monkeypatch.setattr(logging.getLogger("toolchain"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="toolchain.profile.agent")
    return caplog


def health(agent, *, scheme="http", context=None) -> tuple[int, dict, dict]:
    port = agent.server_address[1]
    req = urllib.request.Request(
        f"{scheme}://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def raw(agent, data: bytes) -> tuple[int, str]:
    """Send ``data`` as is and read the reply to its end: (status, body)."""
    with socket.create_connection(agent.server_address, timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: s.recv(4096), b"")).decode()
    head, _, body = reply.partition("\r\n\r\n")
    return int(head.split()[1]), body


def drip(agent, head: bytes, drops: bytes, every_s: float) -> tuple[float, bytes]:
    """Send ``head`` at once, then ``drops`` one byte every ``every_s`` until the agent answers
    or closes: (seconds until then, its reply)."""
    with socket.create_connection(agent.server_address, timeout=5) as s:
        started = time.monotonic()
        s.sendall(head)
        for byte in drops:
            if select.select([s], [], [], every_s)[0]:  # a reply, or the close
                break
            try:
                s.send(bytes([byte]))
            except OSError:
                break
        reply = b""
        with contextlib.suppress(OSError):
            reply = b"".join(iter(lambda: s.recv(4096), b""))
        return time.monotonic() - started, reply


def test_a_client_dripping_headers_is_cut_off_at_the_deadline():
    with running(header_timeout_s=1.0) as agent:
        took, reply = drip(agent, b"", b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100, 0.3)
        assert took < 2.0, f"held {took:.1f} s"
        assert reply.startswith(b"HTTP/1.0 408 ") and b"did not arrive within 1 s" in reply
        assert health(agent)[:2] == (200, {"status": "ok", "busy": False, "device": "test-device"})


def test_a_client_dripping_its_upload_is_cut_off_at_the_body_deadline():
    with running(body_timeout_s=0.5, min_upload_mb_s=1000) as agent:
        head = (
            f"POST /measure HTTP/1.1\r\nHost: x\r\n{AUTH}{REQUEST_HEADER}: {QUICK}\r\n"
            "Content-Length: 100\r\n\r\n"
        ).encode()
        took, reply = drip(agent, head, b"x" * 100, 0.3)
        assert took < 1.5, f"held {took:.1f} s"
        assert reply.startswith(b"HTTP/1.0 408 ") and b"did not arrive in time" in reply
        assert health(agent)[0] == 200


def test_connections_beyond_the_cap_are_answered_503():
    with running(max_connections=2) as agent:
        idle = [socket.create_connection(agent.server_address, timeout=5) for _ in range(2)]
        try:
            status, body, headers = health(agent)
            assert status == 503 and headers["Retry-After"] == "5"
            assert "busy: 2 connections are open" in body["error"]
            assert threading.active_count() < 10  # no thread for the refused one
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 2
        while agent.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [health(agent)[0] for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", " ", "99999999999999999999"])
def test_a_bad_content_length_is_400_without_server_paths(length):
    with running() as agent:
        status, body = raw(
            agent,
            f"POST /measure HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {length}\r\n\r\n".encode(),
        )
    assert status == 400
    assert "Content-Length must be a whole number of bytes" in json.loads(body)["error"]
    assert "/tmp" not in body and tempfile.gettempdir() not in body


def test_a_refused_bundle_names_no_server_path():
    with running() as agent:
        data = b"not a tar.gz"
        status, body = raw(
            agent,
            f"POST /measure HTTP/1.1\r\nHost: x\r\n{AUTH}{REQUEST_HEADER}: {QUICK}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data,
        )
    error = json.loads(body)["error"]
    assert status == 422 and "upload.edgec.tar.gz: not a readable .tar.gz" in error
    assert tempfile.gettempdir() not in body and "edgec-agent-" not in body


def test_without_paths_keeps_the_last_part_only():
    assert without_paths("/tmp/edgec-agent-x1/bundle/m.edgec: vocab.txt does not match") == (
        "m.edgec: vocab.txt does not match"
    )
    assert without_paths('File "/usr/lib/python3/json/decoder.py", line 3') == (
        'File "decoder.py", line 3'
    )
    kept = "no such endpoint /health; see https://host:9600/health"
    assert without_paths(kept) == kept


def test_an_unexpected_error_is_a_generic_500_logged_once(agent_log, monkeypatch):
    def broken(archive, request):
        raise RuntimeError("boom in /home/agent/secret/place.py")

    with running() as agent:
        monkeypatch.setattr(agent, "measure", broken)
        status, body = raw(
            agent,
            f"POST /measure HTTP/1.1\r\nHost: x\r\n{AUTH}{REQUEST_HEADER}: {QUICK}\r\n"
            "Content-Length: 2\r\n\r\nab".encode(),
        )
        assert status == 500 and "internal error in the agent" in body
        assert "boom" not in body and "/home" not in body
        assert sum(r.exc_info is not None for r in agent_log.records) == 1

        def refused(archive, request):
            raise EdgecError("cannot load /tmp/edgec-agent-x/bundle/b.edgec/model.onnx")

        monkeypatch.setattr(agent, "measure", refused)
        status, body = raw(
            agent,
            f"POST /measure HTTP/1.1\r\nHost: x\r\n{AUTH}{REQUEST_HEADER}: {QUICK}\r\n"
            "Content-Length: 2\r\n\r\nab".encode(),
        )
        assert status == 500 and json.loads(body)["error"] == "cannot load model.onnx"
        assert health(agent)[0] == 200


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN: the way a client killed mid-request leaves


def _wait_for(records, text: str, timeout_s: float = 2.0) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in records if text in r.getMessage()]
        if found:
            return found
        time.sleep(0.02)
    return []


def test_a_client_leaving_before_auth_is_one_log_line(agent_log, capfd):
    with running() as agent:
        s = socket.create_connection(agent.server_address, timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers not finished
        time.sleep(0.1)
        _reset(s)
        assert len(_wait_for(agent_log.records, "connection dropped")) == 1
        for _ in range(10):  # a whole request, then gone before the 401 is written
            s = socket.create_connection(agent.server_address, timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            _reset(s)
        time.sleep(0.3)
        assert health(agent)[0] == 200
    assert not [r for r in agent_log.records if r.exc_info]
    assert len(_wait_for(agent_log.records, "connection dropped")) <= 11
    assert "Traceback" not in agent_log.text and "Traceback" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgec test agent")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "agent.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "agent.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "agent.crt", folder / "agent.key"


def test_tls_serves_https_and_refuses_plain_http_cleanly(certificate, tmp_path, agent_log):
    cert, key = certificate
    with running(tls=server_tls(cert, key)) as agent:
        url = f"https://127.0.0.1:{agent.server_address[1]}"
        status, body, _ = health(agent, scheme="https", context=client_tls(url, cert))
        assert (status, body["status"]) == (200, "ok")
        status, body, _ = health(agent)  # plain http to the TLS port
        assert status == 400 and f"speaks TLS only: use {url}" in body["error"]
        # the client side, through https: the agent's answer (here 422) comes back
        (tmp_path / "b.tar.gz").write_bytes(b"not a tar.gz")
        with pytest.raises(ProfileError, match="refused: 422 bundle refused: .*not a readable"):
            profile_remote(tmp_path / "b.tar.gz", url, token=TOKEN, request={}, ca_file=cert)
        with pytest.raises(ProfileError, match="CERTIFICATE_VERIFY_FAILED.*--ca-cert FILE"):
            profile_remote(tmp_path / "b.tar.gz", url, token=TOKEN, request={})
        plain = url.replace("https", "http")
        with pytest.raises(ProfileError, match="https"):
            profile_remote(tmp_path / "b.tar.gz", plain, token=TOKEN, request={})
        with pytest.raises(ProfileError, match="is not https://"):
            profile_remote(tmp_path / "b.tar.gz", plain, token=TOKEN, request={}, ca_file=cert)
        assert health(agent, scheme="https", context=client_tls(url, cert))[0] == 200
    with running(tls=server_tls(cert, key), max_connections=1) as agent:
        url = f"https://127.0.0.1:{agent.server_address[1]}"
        with socket.create_connection(agent.server_address, timeout=5):  # holds the one slot
            status, body, headers = health(agent, scheme="https", context=client_tls(url, cert))
        assert status == 503 and headers["Retry-After"] == "5" and "busy" in body["error"]
    assert not [r for r in agent_log.records if r.exc_info]


def test_https_to_a_plain_agent_says_what_is_wrong(tmp_path, certificate):
    (tmp_path / "b.tar.gz").write_bytes(b"not a tar.gz")
    with running() as agent:
        url = f"https://127.0.0.1:{agent.server_address[1]}"
        with pytest.raises(ProfileError, match="does the agent serve TLS"):
            profile_remote(
                tmp_path / "b.tar.gz", url, token=TOKEN, request={}, ca_file=certificate[0]
            )


def test_tls_files_are_checked(certificate, tmp_path):
    cert, key = certificate
    with pytest.raises(ProfileError, match=r"cannot read the TLS key \(--tls-key\) .*missing.key"):
        server_tls(cert, tmp_path / "missing.key")
    with pytest.raises(ProfileError, match="cannot load the TLS certificate"):
        server_tls(key, key)
    with pytest.raises(ProfileError, match="TLS needs both --tls-cert and --tls-key"):
        serve("127.0.0.1", 0, token=TOKEN, device="d", tls_cert=cert)


def test_tls_files_that_are_folders_or_unreadable_are_refused(certificate, tmp_path):
    cert, key = certificate
    url = "https://127.0.0.1:9600"
    with pytest.raises(ProfileError) as info:
        client_tls(url, tmp_path)
    assert str(info.value) == (
        f"the CA certificate (--ca-cert) {tmp_path} is a folder; expected a PEM file"
    )
    with pytest.raises(ProfileError, match=r"cannot read the CA certificate \(--ca-cert\) "
                                           r".*nope.pem: No such file or directory; expected a "
                                           r"PEM file"):  # fmt: skip
        client_tls(url, tmp_path / "nope.pem")
    with pytest.raises(ProfileError, match=r"the TLS certificate \(--tls-cert\) .* is a folder"):
        server_tls(tmp_path, key)
    with pytest.raises(ProfileError, match=r"the TLS key \(--tls-key\) .* is a folder"):
        server_tls(cert, tmp_path)
    (tmp_path / "text.pem").write_text("not a certificate\n")
    with pytest.raises(ProfileError, match="cannot read the TLS certificate .*Not a directory"):
        server_tls(tmp_path / "text.pem/agent.crt", key)  # unreadable, even by root
    with pytest.raises(ProfileError, match="text.pem: not a PEM certificate"):
        client_tls(url, tmp_path / "text.pem")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_tls_files_are_refused(certificate, tmp_path):
    cert, key = certificate
    locked = tmp_path / "locked.pem"
    locked.write_bytes(cert.read_bytes())
    locked.chmod(0)
    with pytest.raises(ProfileError, match="cannot read the CA certificate .*Permission denied"):
        client_tls("https://127.0.0.1:9600", locked)
    with pytest.raises(ProfileError, match="cannot read the TLS key .*Permission denied"):
        server_tls(cert, locked)


def test_a_token_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    with pytest.raises(ProfileError, match=f"can be read by others .*run chmod 600 {path}"):
        read_token(path)
    path.chmod(0o600)
    assert read_token(path) == TOKEN
    with pytest.raises(ProfileError, match="cannot read the token file"):
        read_token(tmp_path / "missing")


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [
        ("0.0.0.0", False, True),
        ("192.168.1.20", False, True),
        ("jetson.local", False, True),
        ("", False, True),
        ("0.0.0.0", True, False),
        ("127.0.0.1", False, False),
        ("127.3.2.1", False, False),
        ("::1", False, False),
        ("localhost", False, False),
    ],
)
def test_plain_http_beyond_loopback_is_warned_of(host, tls, warned):
    warning = exposure_warning(host, tls=tls)
    assert (warning is not None) == warned
    assert is_loopback(host) == (host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"))
    if warned:
        assert "without TLS" in warning and "ssh -L 9600:localhost:9600" in warning


def test_serve_says_how_it_listens(monkeypatch, capsys):
    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(agent_module.Agent, "serve_forever", interrupted)
    with pytest.raises(KeyboardInterrupt):
        serve("127.0.0.1", 0, token=TOKEN, device="test-device")
    out = capsys.readouterr()
    assert "listening on 127.0.0.1:" in out.out and "as test-device (http)" in out.out
    assert "warning" not in out.err


def test_connection_limits_are_checked():
    with pytest.raises(ProfileError, match="max_connections must be at least 1, got 0"):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ProfileError, match="header_timeout_s must be positive"):
        ConnectionLimits(header_timeout_s=0)
