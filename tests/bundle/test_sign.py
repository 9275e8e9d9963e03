"""Signed bundles: `edgec keygen`, `edgec bundle sign`, and `--trust`, which refuses unsigned
bundles, bundles signed by another key and bundles changed after signing, even when every hash
was rewritten to match."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
from fake_bundle import load_manifest, rewrite, write_fake_bundle

from toolchain.bundle.manifest import SIGNATURE, BundleError, pack, sha256, verify, verify_bundle
from toolchain.bundle.sign import TrustedKeys, generate_keys, sign_bundle
from toolchain.errors import ConfigError


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """Two key pairs: ``ours`` (trusted) and ``theirs``."""
    folder = tmp_path_factory.mktemp("keys")
    generate_keys(folder / "ours")
    generate_keys(folder / "theirs")
    return folder


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_fake_bundle(tmp_path / "toy.edgec")


def _trust(keys: Path, *names: str) -> TrustedKeys:
    return TrustedKeys.load([keys / f"{n}.pub" for n in names])


def test_sign_adds_only_the_signature_and_trust_accepts_it(bundle, keys):
    before = {p.name: sha256(p) for p in bundle.rglob("*") if p.is_file()}
    record = sign_bundle(bundle, keys / "ours")
    after = {p.name: sha256(p) for p in bundle.rglob("*") if p.is_file()}
    assert set(after) - set(before) == {SIGNATURE}
    assert all(after[name] == before[name] for name in before)  # the manifest too
    assert record["digest"] == load_manifest(bundle)["digest"]
    checked = verify_bundle(bundle, trust=_trust(keys, "ours"))
    assert checked.trusted and checked.key_id == record["key_id"]
    assert verify_bundle(bundle).key_id == record["key_id"]  # hashes only: named, not checked


def test_an_unsigned_bundle_is_refused_under_trust(bundle, keys):
    verify(bundle)
    with pytest.raises(BundleError, match="not signed; only bundles signed by a trusted key"):
        verify(bundle, trust=_trust(keys, "ours"))


def test_a_bundle_signed_by_another_key_is_refused(bundle, keys):
    sign_bundle(bundle, keys / "theirs")
    theirs = json.loads((bundle / SIGNATURE).read_text())["key_id"][:16]
    with pytest.raises(BundleError, match=f"signed by key {theirs}, which is not trusted here"):
        verify(bundle, trust=_trust(keys, "ours"))
    assert verify(bundle, trust=_trust(keys, "ours", "theirs"))  # either of two keys


def test_a_consistent_rewrite_passes_the_hashes_but_not_trust(bundle, keys):
    """The tamperer swaps the model and rewrites every hash and the digest: verify without trust
    cannot tell (hashes catch corruption, not tampering); with trust it is refused."""
    sign_bundle(bundle, keys / "ours")
    (bundle / "model.onnx").write_bytes(b"a model of the tamperer's\n")
    (bundle / SIGNATURE).unlink()
    rewrite(bundle)
    verify(bundle)
    with pytest.raises(BundleError, match="not signed"):
        verify(bundle, trust=_trust(keys, "ours"))


def test_a_signature_left_in_place_or_rewritten_does_not_cover_a_rewrite(bundle, keys):
    sign_bundle(bundle, keys / "ours")
    rewrite(bundle, lambda m: m["labels"].reverse())
    with pytest.raises(BundleError, match="signature.json signs another manifest"):
        verify(bundle)  # even without trust: the manifest changed after signing
    sig = json.loads((bundle / SIGNATURE).read_text())
    sig["digest"] = load_manifest(bundle)["digest"]
    (bundle / SIGNATURE).write_text(json.dumps(sig))
    verify(bundle)
    with pytest.raises(BundleError, match="the signature does not match this bundle"):
        verify(bundle, trust=_trust(keys, "ours"))


def test_a_forged_public_key_in_the_bundle_changes_nothing(bundle, keys):
    """The verifier checks with the key it trusts, never with the one the bundle carries."""
    sign_bundle(bundle, keys / "theirs")
    sig = json.loads((bundle / SIGNATURE).read_text())
    ours = json.loads(_signature_of(bundle, keys / "ours"))
    sig["key_id"], sig["public_key"] = ours["key_id"], ours["public_key"]
    (bundle / SIGNATURE).write_text(json.dumps(sig))
    with pytest.raises(BundleError, match="the signature does not match this bundle"):
        verify(bundle, trust=_trust(keys, "ours"))


def _signature_of(bundle: Path, key: Path) -> str:
    sign_bundle(bundle, key)
    text = (bundle / SIGNATURE).read_text()
    (bundle / SIGNATURE).unlink()
    return text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(algorithm="rsa"), "algorithm must be 'ed25519', got 'rsa'"),
        (lambda s: s.update(key_id="abc"), "key_id must be 64 lowercase hex digits, got 'abc'"),
        (lambda s: s.update(signature="!!"), "signature must be 64 bytes in base64, got '!!'"),
        (lambda s: s.pop("digest"), "digest must be 'sha256:' and 64 hex digits, got None"),
        (
            lambda s: s.update(public_key=base64.b64encode(b"x" * 31).decode()),
            "public_key must be 32 bytes in base64",
        ),
    ],
)
def test_a_malformed_signature_is_named(bundle, keys, change, message):
    sign_bundle(bundle, keys / "ours")
    sig = json.loads((bundle / SIGNATURE).read_text())
    change(sig)
    (bundle / SIGNATURE).write_text(json.dumps(sig))
    with pytest.raises(BundleError, match=re.escape(message)):
        verify(bundle)


def test_keygen_writes_a_0600_private_key_and_never_overwrites(edgec, tmp_path):
    proc = edgec("keygen", "release.key", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    private, public = tmp_path / "release.key", tmp_path / "release.key.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    key_id = TrustedKeys.load([public]).describe()[:16]
    assert f"public key {key_id}" in proc.stdout
    before = private.read_bytes()
    again = edgec("keygen", "release.key", cwd=tmp_path)
    assert again.returncode == 1 and "release.key: exists already; not overwritten" in again.stderr
    assert "Traceback" not in again.stderr and private.read_bytes() == before
    public.unlink()  # the public half alone missing: still refused, nothing written
    assert edgec("keygen", "release.key", cwd=tmp_path).returncode == 1
    assert not public.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["release.key"]


def test_sign_and_verify_trust_on_the_command_line(edgec, tmp_path, keys):
    """Paths relative to the working directory; the .tar.gz beside the folder is re-packed."""
    bundle = write_fake_bundle(tmp_path / "toy.edgec")
    pack(bundle, tmp_path / "toy.edgec.tar.gz")
    proc = edgec("bundle", "sign", "toy.edgec", "--key", str(keys / "ours"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "toy.edgec: signed by key" in proc.stdout
    for name in ("toy.edgec", "toy.edgec.tar.gz"):
        ok = edgec("bundle", "verify", name, "--trust", str(keys / "ours.pub"), cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert f"digest: {load_manifest(bundle)['digest']}" in ok.stdout
        assert ", trusted (" in ok.stdout
    refused = edgec(
        "bundle", "verify", "toy.edgec", "--trust", str(keys / "theirs.pub"), cwd=tmp_path
    )
    assert refused.returncode == 1 and "which is not trusted here" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_archive_can_be_signed_in_place(tmp_path, keys):
    archive = pack(write_fake_bundle(tmp_path / "toy.edgec"), tmp_path / "a.tgz")
    sign_bundle(archive, keys / "ours")
    assert verify_bundle(archive, trust=_trust(keys, "ours")).trusted


def test_edgec_run_refuses_an_unsigned_bundle_under_trust(edgec, bundle, keys):
    proc = edgec("run", str(bundle), "--trust", str(keys / "ours.pub"), "--text", "good")
    assert (
        proc.returncode == 1 and "not signed; only bundles signed by a trusted key" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the key file"),
        ("not a key", "not a PEM public key"),
        ("-----BEGIN PRIVATE KEY-----\n", "is a private key: trust its public key (KEY.pub)"),
    ],
)
def test_bad_trust_files_are_named(tmp_path, content, message):
    path = tmp_path / "k.pub"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        TrustedKeys.load([path])


def test_an_rsa_key_is_not_an_ed25519_key(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "rsa.pub").write_bytes(pem)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        TrustedKeys.load([tmp_path / "rsa.pub"])
    with pytest.raises(ConfigError, match="not a PEM private key"):
        sign_bundle(write_fake_bundle(tmp_path / "t.edgec"), tmp_path / "rsa.pub")


def test_without_cryptography_hashes_verify_and_trust_says_what_is_missing(edgec, bundle, keys):
    blocked = bundle.parent / "blocked" / "cryptography"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('cryptography is blocked here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocked.parent), *sys.path])}
    ok = edgec("bundle", "verify", str(bundle), env=env)
    assert ok.returncode == 0 and "signature: none" in ok.stdout, ok.stderr
    refused = edgec("bundle", "verify", str(bundle), "--trust", str(keys / "ours.pub"), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "need the Python package `cryptography`, which is not installed here" in refused.stderr
