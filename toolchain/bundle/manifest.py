"""Bundle manifests: hashing, verification and safe unpacking. Standard library only, so that a
device without torch (or even numpy) can verify a bundle.

A bundle is a folder ``NAME.edgec/`` (or the same as ``NAME.edgec.tar.gz``) whose
``manifest.json`` lists every other file with its size and sha256.

Example::

    manifest = verify("sst2-jetson.edgec")      # raises BundleError naming the bad file
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from toolchain.errors import EdgecError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_KEYS = (
    "schema_version",
    "model",
    "task",
    "labels",
    "target",
    "files",
    "metrics",
    "latency",
    "provenance",
    "runtime",
)


class BundleError(EdgecError):
    """A bundle is malformed, tampered with, or unsafe to unpack."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(folder: Path) -> dict[str, dict]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``folder`` but the manifest."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST:
            out[rel] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
    return out


def verify(bundle: str | Path) -> dict:
    """Check a bundle folder (or ``.tar.gz``) against its manifest and return the manifest.

    Raises:
        BundleError: no or unreadable manifest, a missing key, a wrong schema version, a file
            missing, extra, resized or with another sha256 (named in the message).
    """
    bundle = Path(bundle)
    if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="edgec-verify-") as tmp:
            return verify(unpack(bundle, Path(tmp)))
    if not bundle.is_dir():
        raise BundleError(f"bundle not found: {bundle} (a NAME.edgec folder or .tar.gz)")
    manifest = read_manifest(bundle)
    listed = manifest["files"]
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    present.discard(MANIFEST)
    for rel in sorted(set(listed) - present):
        raise BundleError(f"{bundle}: {rel} is listed in the manifest but missing")
    for rel in sorted(present - set(listed)):
        raise BundleError(f"{bundle}: {rel} is not in the manifest (an added file)")
    for rel, entry in listed.items():
        path = bundle / rel
        if path.stat().st_size != entry["bytes"]:
            raise BundleError(
                f"{bundle}: {rel} has {path.stat().st_size} bytes, the manifest says "
                f"{entry['bytes']}"
            )
        if sha256(path) != entry["sha256"]:
            raise BundleError(f"{bundle}: {rel} does not match its sha256 (modified or corrupt)")
    return manifest


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{folder}: no {MANIFEST}; not an edgec bundle") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path}: missing key(s) {', '.join(missing)}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version {manifest['schema_version']!r}; this edgec reads "
            f"{SCHEMA_VERSION} (upgrade edgec)"
        )
    for rel in manifest["files"]:
        _check_member_name(rel, where=str(path))
    return manifest


def _check_member_name(name: str, *, where: str) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or ":" in p.parts[0]:
        raise BundleError(f"{where}: unsafe path {name!r} (absolute or outside the bundle)")


def unpack(archive: str | Path, target: Path) -> Path:
    """Unpack a bundle archive into ``target`` safely; return the bundle folder.

    Every member must be a regular file or folder under one top folder, with no absolute path,
    no ``..`` and no link; anything else is refused before a byte is written.
    """
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"{archive}: not a readable .tar.gz ({e})") from None
    with tar:
        members = tar.getmembers()
        tops = set()
        for m in members:
            _check_member_name(m.name, where=str(archive))
            if not (m.isfile() or m.isdir()):
                raise BundleError(f"{archive}: member {m.name!r} is a link or device; refused")
            tops.add(PurePosixPath(m.name).parts[0])
        if len(tops) != 1:
            raise BundleError(
                f"{archive}: expected one top folder NAME.edgec, found {sorted(tops)}"
            )
        tar.extractall(target, members=members, filter="data")
    return target / tops.pop()


def pack(folder: Path, archive: Path) -> Path:
    """``folder`` as a ``.tar.gz`` holding one top folder (written to a temp name, then renamed)."""
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    tmp.replace(archive)
    return archive
