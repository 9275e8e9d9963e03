"""Ed25519 signatures of bundles: `edgec keygen`, `edgec bundle sign`, and `--trust KEY.pub`.

A signature signs the bundle's digest (the sha256 of its canonical manifest, which holds every
file's hash: :func:`toolchain.bundle.manifest.digest`), so signing changes no file of the
bundle; it adds ``signature.json``::

    {"algorithm": "ed25519", "key_id": "<sha256 of the raw public key, hex>",
     "public_key": "<raw 32 bytes, base64>", "digest": "sha256:<hex>",
     "signature": "<64 bytes, base64>"}

The signed message is ``b"edgec-bundle-digest\\n" + digest`` (a prefix of its own, so the
signature means nothing to another protocol). Keys are PEM files `openssl pkey` reads: the
private key PKCS#8, unencrypted, mode 0600; the public key SubjectPublicKeyInfo. A verifier trusts
the public keys it is given, never the one a bundle carries (that one only names the signer).

`cryptography` is imported only when a key is used, so a device that checks hashes alone does not
need it; where it is missing, keygen, sign and ``--trust`` say so.

Example::

    generate_keys(Path("release.key"))                  # release.key + release.key.pub
    sign_bundle(Path("sst2.edgec"), Path("release.key"))
    trusted = TrustedKeys.load([Path("release.key.pub")])
    verify("sst2.edgec", trust=trusted)                 # BundleError unless release.key signed it
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.bundle.manifest import (
    SIGNATURE,
    BundleError,
    pack,
    read_signature,
    unpack,
    verify_bundle,
)
from toolchain.errors import ConfigError, EdgecError

log = logging.getLogger(__name__)

MESSAGE_PREFIX = b"edgec-bundle-digest\n"
MAX_KEY_BYTES = 64 * 2**10


def _crypto():
    """The `cryptography` modules used here, or EdgecError saying plainly that it is missing."""
    try:
        import cryptography.exceptions as exceptions
        import cryptography.hazmat.primitives.asymmetric.ed25519 as ed25519
        import cryptography.hazmat.primitives.serialization as serialization
    except ImportError:
        raise EdgecError(
            "Ed25519 keys and signatures (keygen, bundle sign, --trust) need the Python package "
            "`cryptography`, which is not installed here: pip install cryptography"
        ) from None
    return ed25519, serialization, exceptions


def key_id(raw_public_key: bytes) -> str:
    """A public key's id: the sha256 of its 32 raw bytes, in hex (shown by its first 16)."""
    return hashlib.sha256(raw_public_key).hexdigest()


def _raw(public_key) -> bytes:
    _, ser, _ = _crypto()
    return public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def generate_keys(private_path: str | Path, public_path: str | Path | None = None) -> str:
    """Write a new Ed25519 key pair: ``private_path`` (PKCS#8 PEM, mode 0600) and
    ``public_path`` (default ``private_path`` + ``.pub``); neither may exist yet.

    Returns:
        The key id.
    """
    private_path = Path(private_path)
    public_path = Path(public_path or private_path.with_name(private_path.name + ".pub"))
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigError(
                "exists already; not overwritten (remove it or pick another name)", file=str(path)
            )
    ed25519, ser, _ = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    public_pem = key.public_key().public_bytes(
        ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink()
        raise
    return key_id(_raw(key.public_key()))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` through a temp file and a hard link, which never replaces a file."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise ConfigError(f"cannot write here: {e.strerror}", file=str(path)) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError("exists already; not overwritten", file=str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot write: {e.strerror}", file=str(path)) from None
    finally:
        os.unlink(tmp)


def _read_key(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise ConfigError(f"larger than {MAX_KEY_BYTES} bytes; not a key file", file=str(path))
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the key file: {e.strerror}", file=str(path)) from None


def load_private_key(path: str | Path):
    """The Ed25519 private key in ``path`` (as `edgec keygen` writes it)."""
    path = Path(path)
    ed25519, ser, exceptions = _crypto()
    data = _read_key(path)
    try:
        key = ser.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            "the key is encrypted; edgec reads unencrypted keys (`edgec keygen`)", file=str(path)
        ) from None
    except (ValueError, exceptions.UnsupportedAlgorithm):
        raise ConfigError(
            "not a PEM private key (make one with `edgec keygen`)", file=str(path)
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"a {type(key).__name__}, not an Ed25519 key", file=str(path))
    return key


def sign_bundle(bundle: str | Path, key_path: str | Path) -> dict:
    """Sign a bundle folder (or ``.tar.gz``, re-packed in place) with the private key in
    ``key_path``: write ``signature.json``, replacing an earlier signature. The bundle must
    verify first. A ``NAME.edgec.tar.gz`` beside a folder is re-packed so it carries the signature.

    Returns:
        The signature record (``key_id``, ``digest``, ...).
    """
    bundle = Path(bundle)
    key = load_private_key(key_path)
    if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix=".edgec-sign-", dir=bundle.parent) as tmp:
            folder = unpack(bundle, Path(tmp))
            record = _sign_folder(folder, key)
            pack(folder, bundle)
        return record
    record = _sign_folder(bundle, key)
    tarball = bundle.with_name(bundle.name + ".tar.gz")
    if tarball.is_file():
        pack(bundle, tarball)
        log.info("re-packed %s with the signature", tarball)
    return record


def _sign_folder(folder: Path, key) -> dict:
    checked = verify_bundle(folder)
    if checked.key_id:
        log.warning("%s: replacing the signature by key %s", folder, checked.key_id[:16])
    raw = _raw(key.public_key())
    record = {
        "algorithm": "ed25519",
        "key_id": key_id(raw),
        "public_key": base64.b64encode(raw).decode(),
        "digest": checked.digest,
        "signature": base64.b64encode(key.sign(MESSAGE_PREFIX + checked.digest.encode())).decode(),
    }
    tmp = folder / (SIGNATURE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(folder / SIGNATURE)
    read_signature(folder)  # the record is well formed
    return record


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a verifier trusts: a bundle must be signed by one of them.

    Args:
        keys: key id -> the raw 32-byte Ed25519 public key.
        sources: key id -> the file it was read from (for messages).
    """

    keys: Mapping[str, bytes]
    sources: Mapping[str, str]

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> TrustedKeys:
        """Read public key files (PEM, as `edgec keygen` writes ``KEY.pub``)."""
        if not paths:
            raise ConfigError("no trusted public key given")
        ed25519, ser, exceptions = _crypto()
        keys, sources = {}, {}
        for path in map(Path, paths):
            data = _read_key(path)
            if b"PRIVATE KEY" in data:
                raise ConfigError(
                    "is a private key: trust its public key (KEY.pub); the private key stays "
                    "where bundles are signed",
                    file=str(path),
                )
            try:
                key = ser.load_pem_public_key(data)
            except (ValueError, exceptions.UnsupportedAlgorithm):
                raise ConfigError(
                    "not a PEM public key (`edgec keygen` writes KEY.pub)", file=str(path)
                ) from None
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise ConfigError(f"a {type(key).__name__}, not an Ed25519 key", file=str(path))
            raw = _raw(key)
            keys[key_id(raw)], sources[key_id(raw)] = raw, str(path)
        return cls(keys, sources)

    def describe(self) -> str:
        """Each key's id and the file it came from, for the operator's own console."""
        return ", ".join(f"{kid[:16]} ({src})" for kid, src in self.sources.items())

    def ids(self) -> str:
        """The trusted keys' ids (shortened), for messages that may leave this machine: a
        refusal an agent sends back names no file of the agent's."""
        return ", ".join(kid[:16] for kid in self.keys)

    def check(self, folder: Path, bundle_digest: str, signature: dict | None) -> str:
        """The id of the trusted key that signed ``bundle_digest``, or BundleError.

        ``signature`` is the bundle's ``signature.json`` as
        :func:`~toolchain.bundle.manifest.read_signature` returns it (None: unsigned).
        """
        if signature is None:
            raise BundleError(
                f"{folder}: not signed; only bundles signed by a trusted key are accepted here "
                f"(trusted: {self.ids()}); sign it with `edgec bundle sign BUNDLE --key KEY`"
            )
        kid = signature["key_id"]
        if kid not in self.keys:
            raise BundleError(
                f"{folder}: signed by key {kid[:16]}, which is not trusted here "
                f"(trusted: {self.ids()})"
            )
        ed25519, _, exceptions = _crypto()
        public = ed25519.Ed25519PublicKey.from_public_bytes(self.keys[kid])
        try:
            public.verify(
                base64.b64decode(signature["signature"]),
                MESSAGE_PREFIX + bundle_digest.encode(),
            )
        except exceptions.InvalidSignature:
            raise BundleError(
                f"{folder}: the signature does not match this bundle for key {kid[:16]} "
                "(tampered with, or not made by that key)"
            ) from None
        return kid
