"""The agent against hostile bundles, on loopback in a thread: a path out of the bundle, a flipped
manifest, a consistent rewrite without a trusted signature, a tar bomb and too many members each
get a 4xx with a message, and the agent keeps serving; a bundle archived from inside its folder
(``./``) and a bundle signed by a trusted key are measured."""

from __future__ import annotations

import contextlib
import gzip
import json
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fake_bundle import members_of, rewrite, tar_gz, write_fake_bundle

from toolchain.bundle.manifest import MANIFEST, ArchiveLimits, pack
from toolchain.bundle.sign import TrustedKeys, generate_keys, sign_bundle
from toolchain.profile.agent import REQUEST_HEADER, Agent

TOKEN = "correct-horse-battery"
QUICK = {"shapes": [[1, 8]], "warmup": 1, "iterations": 3, "repeats": 1}


@contextlib.contextmanager
def _serving(**options):
    agent = Agent("127.0.0.1", 0, token=TOKEN, device="test-device", max_upload_mb=1, **options)
    thread = threading.Thread(target=agent.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{agent.server_address[1]}"
    finally:
        agent.shutdown()
        agent.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    generate_keys(folder / "ours")
    generate_keys(folder / "theirs")
    return folder


@pytest.fixture(scope="module")
def open_agent():
    """No --trust (hashes only), at most 50 members an upload."""
    with _serving(archive_limits=ArchiveLimits(max_members=50)) as url:
        yield url


@pytest.fixture(scope="module")
def trusting_agent(keys):
    with _serving(trust=TrustedKeys.load([keys / "ours.pub"])) as url:
        yield url


def _post(url: str, data: bytes) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {TOKEN}", REQUEST_HEADER: json.dumps(QUICK)}
    req = urllib.request.Request(url + "/measure", data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _healthy(url: str) -> bool:
    req = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["status"] == "ok"


def _refused(url: str, data: bytes, status: int, message: str) -> None:
    code, body = _post(url, data)
    assert (code, message in body.get("error", "")) == (status, True), (code, body)
    assert "edgec-agent-" not in body["error"]  # names the bundle's files, not the agent's temp
    assert _healthy(url)


def _packed(folder: Path) -> bytes:
    return pack(folder, folder.with_name(folder.name + ".tar.gz")).read_bytes()


@pytest.mark.parametrize("path", ["/etc/hostname", "../../x.onnx"])
def test_a_path_out_of_the_bundle_is_refused(open_agent, tmp_path, path):
    folder = write_fake_bundle(tmp_path / "toy.edgec")
    rewrite(folder, lambda m: m["runtime"].update(model=path))
    _refused(open_agent, _packed(folder), 422, f"runtime.model: unsafe path {path!r}")


def test_a_flipped_manifest_is_refused(open_agent, tmp_path):
    folder = write_fake_bundle(tmp_path / "toy.edgec")
    text = (folder / MANIFEST).read_text().replace('"neg"', '"nag"')
    (folder / MANIFEST).write_text(text)
    _refused(open_agent, _packed(folder), 422, "toy.edgec/manifest.json: does not match its own")


def test_a_consistent_rewrite_is_refused_where_keys_are_trusted(trusting_agent, keys, tmp_path):
    folder = write_fake_bundle(tmp_path / "toy.edgec")
    sign_bundle(folder, keys / "ours")
    (folder / "model.onnx").write_bytes(b"a model of the tamperer's\n")
    (folder / "signature.json").unlink()
    rewrite(folder)  # every hash matches again
    _refused(trusting_agent, _packed(folder), 422, "toy.edgec: not signed; only bundles signed")
    sign_bundle(folder, keys / "theirs")
    _refused(trusting_agent, _packed(folder), 422, "which is not trusted here")


def test_the_refusal_of_an_unsigned_bundle_names_key_ids_not_key_files(
    trusting_agent, keys, tmp_path
):
    folder = write_fake_bundle(tmp_path / "toy.edgec")
    code, body = _post(trusting_agent, _packed(folder))
    (kid,) = TrustedKeys.load([keys / "ours.pub"]).keys
    assert code == 422 and f"(trusted: {kid[:16]})" in body["error"], body
    assert str(keys) not in body["error"] and "ours.pub" not in body["error"]


def test_a_tar_bomb_is_refused_with_413(open_agent, tmp_path):
    zeros = b"\0" * (8 * 2**20)
    bomb = tar_gz(tmp_path / "b.tgz", [("b.edgec", None), ("b.edgec/model.onnx", zeros)])
    _refused(open_agent, bomb.read_bytes(), 413, "(a compression bomb?)")
    header = tarfile.TarInfo("b.edgec/model.onnx")
    header.size = 2**40  # declared, never sent
    declared = gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    _refused(open_agent, declared, 413, f"declares {2**40} bytes")
    many = [("b.edgec", None)] + [(f"b.edgec/f{i}", b"") for i in range(100)]
    _refused(open_agent, tar_gz(tmp_path / "m.tgz", many).read_bytes(), 413, "more than 50")


def test_a_bundle_archived_from_inside_its_folder_is_measured(open_agent, tmp_path):
    folder = write_fake_bundle(tmp_path / "toy.edgec", onnx=True)
    archive = tar_gz(tmp_path / "b.tgz", members_of(folder, "./"))
    code, body = _post(open_agent, archive.read_bytes())
    assert code == 200, body
    assert body["label"] == "measured on test-device by edgec agent"
    assert body["results"][0]["p50_ms"] > 0


def test_a_bundle_signed_by_a_trusted_key_is_measured(trusting_agent, keys, tmp_path):
    folder = write_fake_bundle(tmp_path / "toy.edgec", onnx=True)
    sign_bundle(folder, keys / "ours")
    code, body = _post(trusting_agent, _packed(folder))
    assert code == 200, body
    assert body["results"][0]["p50_ms"] > 0 and _healthy(trusting_agent)
