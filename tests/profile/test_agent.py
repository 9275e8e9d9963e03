"""The on-device agent on loopback, in a second process: a good request is measured; every bad
one is refused with a clear status and the agent keeps serving; requests run one at a time."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from toolchain.profile.agent import REQUEST_HEADER, profile_remote
from toolchain.profile.runners import ProfileError

REPO = Path(__file__).resolve().parents[2]
TOKEN = "correct-horse-battery"
QUICK = {"shapes": [[1, 8]], "warmup": 1, "iterations": 3, "repeats": 1}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    from conftest import start_agent

    with start_agent(tmp_path_factory.mktemp("agent"), TOKEN, max_upload_mb=1) as running:
        yield running


def _post(url: str, data: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/measure", data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _archive(tiny_bundle) -> bytes:
    return tiny_bundle[0].with_name(tiny_bundle[0].name + ".tar.gz").read_bytes()


def test_a_good_request_is_measured_on_the_agent(agent, tiny_bundle):
    report = profile_remote(tiny_bundle[0], agent[0], token=TOKEN, request=QUICK)
    assert report["label"] == "measured on x86-64-host by edgec agent"
    assert report["environment"]["device"] == "x86-64-host"
    r = report["results"][0]
    assert (r["batch"], r["seq"]) == (1, 8) and r["p50_ms"] > 0 and r["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing token"),
        ({"Authorization": "Bearer wrong-token-here"}, 403, "wrong token"),
        ({"Authorization": f"Bearer {TOKEN}", REQUEST_HEADER: "{not json"}, 400, "is not JSON"),
        (
            {"Authorization": f"Bearer {TOKEN}", REQUEST_HEADER: '{"shapes": [[0, 8]]}'},
            400,
            "shapes must be a list",
        ),
        (
            {"Authorization": f"Bearer {TOKEN}", REQUEST_HEADER: '{"command": "rm -rf /"}'},
            400,
            "unknown request keys: ['command']",
        ),
    ],
)
def test_bad_requests_are_refused(agent, tiny_bundle, headers, status, message):
    code, body = _post(agent[0], _archive(tiny_bundle), headers)
    assert code == status and message in body["error"]


def test_the_agent_takes_tensorrt_and_says_where_it_is_missing(agent, tiny_bundle):
    """`tensorrt` is a runtime the agent measures (the engine built on the device from the bundle's
    ONNX); where tensorrt does not import, the reply says so (500), and a runtime it does not know
    is refused (400) naming the three it takes."""
    from toolchain.export.tensorrt import availability

    request = {**QUICK, "runtime": "tensorrt"}
    headers = {"Authorization": f"Bearer {TOKEN}", REQUEST_HEADER: json.dumps(request)}
    code, body = _post(agent[0], _archive(tiny_bundle), headers)
    if availability()[0]:
        assert code == 200 and body["environment"]["runtime"] == "tensorrt"
    else:
        assert code == 500 and "TensorRT is not installed here" in body["error"]
    headers[REQUEST_HEADER] = json.dumps({**QUICK, "runtime": "openvino"})
    code, body = _post(agent[0], _archive(tiny_bundle), headers)
    assert code == 400
    assert "onnxruntime, onnxruntime-cuda, tensorrt" in body["error"]


def test_tampered_and_oversize_uploads_are_refused(agent, tiny_bundle, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_bundle[0], tmp_path / tiny_bundle[0].name))
    (copy / "vocab.txt").write_text("tampered\n")
    with pytest.raises(ProfileError, match="422 bundle refused: .*vocab.txt"):
        profile_remote(copy, agent[0], token=TOKEN, request=QUICK)
    headers = {"Authorization": f"Bearer {TOKEN}", REQUEST_HEADER: json.dumps(QUICK)}
    code, body = _post(agent[0], b"x" * (2 * 2**20), headers)
    assert code == 413 and "exceeds" in body["error"]
    code, body = _post(agent[0], b"not a tar.gz", headers)
    assert code == 422 and "not a readable .tar.gz" in body["error"]


def test_a_truncated_upload_is_refused(agent):
    with socket.create_connection(("127.0.0.1", agent[1]), timeout=60) as s:
        head = (
            f"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"{REQUEST_HEADER}: {json.dumps(QUICK)}\r\nContent-Length: 5000\r\n\r\n"
        )
        s.sendall(head.encode() + b"only a little")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(4096):  # the server closes the connection after its reply
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert " 400 " in reply.splitlines()[0] and "truncated upload" in reply


def test_two_requests_are_served_one_after_the_other(agent, tiny_bundle):
    results = []

    def go():
        results.append(profile_remote(tiny_bundle[0], agent[0], token=TOKEN, request=QUICK))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2
    first, second = sorted(results, key=lambda r: r["started"])
    assert first["finished"] <= second["started"]


def test_the_agent_is_still_healthy(agent):
    req = urllib.request.Request(agent[0] + "/health", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def test_edgec_profile_through_the_agent(edgec, agent, tiny_bundle, tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    proc = edgec(
        "profile",
        str(tiny_bundle[0]),
        "--device",
        "host",
        "--target",
        agent[0],
        "--token-file",
        str(tmp_path / "token"),
        "--seq",
        "8",
        "--warmup",
        "1",
        "--iterations",
        "3",
        "--repeats",
        "1",
        "--json",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["label"] == f"measured on x86-64-host by the agent at {agent[0]}"
    assert report["agent"] == agent[0] and report["budgets"]
    (tmp_path / "bad").write_text("short")
    (tmp_path / "bad").chmod(0o600)
    bad = edgec(
        "profile",
        str(tiny_bundle[0]),
        "--device",
        "host",
        "--target",
        agent[0],
        "--token-file",
        str(tmp_path / "bad"),
    )
    assert bad.returncode == 1 and "the token must be at least 8 characters" in bad.stderr
