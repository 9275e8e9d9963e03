"""Bundle manifests: hashing, the bundle digest, verification and safe unpacking. Standard library
only, so that a device without torch (or even numpy, or `cryptography`) can verify a bundle.

A bundle is a folder ``NAME.edgec/`` (or the same as ``NAME.edgec.tar.gz``) whose
``manifest.json`` lists every other file with its size and sha256, and names its model and
tokenizer by their paths inside the bundle. The bundle's digest is the sha256 of the canonical
manifest (sorted keys, no spaces, ASCII; the ``digest`` key itself left out), which covers every
file through its hash; the manifest carries its own digest, so a flipped byte in it is caught.
An optional ``signature.json`` (see :mod:`toolchain.bundle.sign`) signs that digest: hashes
catch corruption, a signature by a trusted key catches tampering.

Schema versions: 1 (no ``digest``; still read) and 2 (``digest`` required; written since
signatures came in). A file name, type or size in a ``.tar.gz`` is checked against
:class:`ArchiveLimits` before a byte is written, and tar's extended headers (pax, GNU long
names) are bounded while tarfile parses them, before it reads their bodies.

Example::

    manifest = verify("sst2-jetson.edgec")      # raises BundleError naming the bad file
    print(digest(manifest))                     # sha256:...
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ConfigError, EdgecError

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
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
# runtime keys holding a path inside the bundle: required, then optional
RUNTIME_PATHS = ("model", "tokenizer")
OPTIONAL_RUNTIME_PATHS = ("engine", "generation_config")
# runtime integers: what the tokenizer takes (it overflows on 2**64)
RUNTIME_INTS = {"max_seq_len": (1, 65536), "pad_id": (0, 2**31 - 1)}
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_SIGNATURE_BYTES = 64 * 2**10
# paths inside a bundle (checked before anything is written)
MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_PATH_DEPTH = 32
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class BundleError(EdgecError):
    """A bundle is malformed, tampered with, or unsafe to unpack."""


class ArchiveLimitError(BundleError):
    """An archive exceeds :class:`ArchiveLimits` (too many members, too large, a bomb)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """What a bundle archive may unpack to, checked on its tar headers before a byte is written
    and again on the bytes written.

    Args:
        max_members: tar members (files and folders).
        max_member_bytes: the declared size of one file.
        max_total_bytes: the declared sizes of all files together.
        max_ratio: the declared total over the archive's own size (gzip reaches ~1000 on zeros;
            models and tokenizers compress 1-5x).
    """

    max_members: int = 10_000
    max_member_bytes: int = 4 * 2**30
    max_total_bytes: int = 4 * 2**30
    max_ratio: float = 100.0

    def __post_init__(self):
        for name, flag in LIMIT_FLAGS.items():
            value = getattr(self, name)
            ok = type(value) in (int, float) and math.isfinite(value) and value > 0
            if not ok:  # NaN would pass `value <= 0` and then disable the check it sets
                raise ConfigError(
                    f"must be a positive finite number, got {value!r}", key=f"{flag} ({name})"
                )


# each limit's option of `edgec agent` (in megabytes there, bytes here), named in its errors
LIMIT_FLAGS = {
    "max_members": "--max-members",
    "max_member_bytes": "--max-member-mb",
    "max_total_bytes": "--max-unpacked-mb",
    "max_ratio": "--max-ratio",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _present_files(folder: Path) -> set[str]:
    """Every file under ``folder`` (relative POSIX paths); a link or special file is refused."""
    out, stack = set(), [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                rel = Path(entry.path).relative_to(folder).as_posix()
                if entry.is_symlink():
                    raise BundleError(f"{folder}: {rel} is a link; a bundle holds plain files")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    out.add(rel)
                else:
                    raise BundleError(f"{folder}: {rel} is not a plain file or folder")
    return out - {MANIFEST, SIGNATURE}


def file_table(folder: Path) -> dict[str, dict]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``folder`` but the manifest
    and the signature."""
    return {
        rel: {"bytes": (folder / rel).stat().st_size, "sha256": sha256(folder / rel)}
        for rel in sorted(_present_files(folder))
    }


def canonical(manifest: dict) -> bytes:
    """The manifest as canonical JSON (sorted keys, no spaces, ASCII), its ``digest`` left out."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(manifest: dict) -> str:
    """The bundle's digest, ``sha256:<hex>`` of :func:`canonical`: it covers every file's hash."""
    return "sha256:" + hashlib.sha256(canonical(manifest)).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Give ``manifest`` its digest and write it to ``folder/manifest.json`` (temp, then rename)."""
    manifest["digest"] = digest(manifest)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(folder / MANIFEST)
    return manifest


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_bundle` found: the manifest, its digest, and the signature's key id
    (None: unsigned) and whether a trusted key checked it."""

    manifest: dict
    digest: str
    key_id: str | None
    trusted: bool


def verify(bundle: str | Path, *, trust=None, limits: ArchiveLimits | None = None) -> dict:
    """Check a bundle folder (or ``.tar.gz``) against its manifest and return the manifest.

    Args:
        trust: a :class:`toolchain.bundle.sign.TrustedKeys`: the bundle must then be signed by
            one of its keys. None: hashes only (corruption is caught, tampering is not).
        limits: for an archive, what it may unpack to (default :class:`ArchiveLimits`).

    Raises:
        BundleError: no or unreadable manifest, a missing or mistyped key (named), a wrong schema
            version, a manifest that does not match its digest, a path outside the bundle, a file
            missing, extra, resized or with another sha256 (named), a stale signature; with
            ``trust``, an unsigned bundle or one no trusted key signed.
    """
    return verify_bundle(bundle, trust=trust, limits=limits).manifest


def verify_bundle(bundle: str | Path, *, trust=None, limits=None) -> Verification:
    """:func:`verify`, returning the digest and the signer beside the manifest."""
    bundle = Path(bundle)
    if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="edgec-verify-") as tmp:
            return verify_bundle(unpack(bundle, Path(tmp), limits=limits), trust=trust)
    if not bundle.is_dir():
        raise BundleError(f"bundle not found: {bundle} (a NAME.edgec folder or .tar.gz)")
    manifest = read_manifest(bundle)
    bundle_digest = digest(manifest)
    signature = read_signature(bundle)
    if signature is not None and signature["digest"] != bundle_digest:
        raise BundleError(
            f"{bundle}: {SIGNATURE} signs another manifest ({signature['digest'][:19]}..., this "
            f"one is {bundle_digest[:19]}...): the manifest changed after signing"
        )
    if trust is not None:  # before hashing the files: an untrusted bundle is refused at once
        trust.check(bundle, bundle_digest, signature)
    _check_files(bundle, manifest["files"])
    key_id = signature["key_id"] if signature else None
    return Verification(manifest, bundle_digest, key_id, trusted=trust is not None)


def _check_files(bundle: Path, listed: dict) -> None:
    present = _present_files(bundle)
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


def read_listed(folder: Path, manifest: dict, rel: str) -> bytes:
    """The bytes of the listed file ``rel``, read once and checked against the manifest's size
    and sha256: what the caller loads from these bytes is what was verified, even if the file
    is replaced after :func:`verify` (hashing, then reopening by path, would leave a window).

    Raises:
        BundleError: the file is gone, not a plain file, or not the bytes the manifest lists.
    """
    entry, path = manifest["files"][rel], folder / rel
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)  # a FIFO must not block
    try:
        with os.fdopen(os.open(path, flags), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BundleError(f"{folder}: {rel} is not a plain file")
            data = f.read(entry["bytes"] + 1)
    except OSError as e:
        raise BundleError(f"{folder}: cannot read {rel}: {e.strerror or e}") from None
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise BundleError(
            f"{folder}: {rel} changed after it was verified (it does not match its sha256)"
        )
    return data


def _load_json(path: Path, limit: int) -> object:
    def no_duplicates(pairs):
        out = dict(pairs)
        if len(out) != len(pairs):
            twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
            raise BundleError(f"{path}: key {twice!r} appears twice")
        return out

    if path.stat().st_size > limit:
        raise BundleError(f"{path}: {path.stat().st_size} bytes, more than {limit}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting 100,000 deep
        raise BundleError(f"{path}: unreadable JSON ({type(e).__name__}: {e})") from None


def read_manifest(folder: Path) -> dict:
    """``folder/manifest.json``, checked: types, paths inside the bundle, its own digest."""
    path = folder / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{folder}: no {MANIFEST}; not an edgec bundle")
    manifest = _load_json(path, MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path}: missing key(s) {', '.join(missing)}")
    version = manifest["schema_version"]
    if type(version) is not int or version not in READABLE_SCHEMAS:
        raise BundleError(
            f"{path}: schema_version {version!r}; this edgec reads {READABLE_SCHEMAS} "
            "(a newer bundle needs a newer edgec)"
        )
    if version >= 2 or "digest" in manifest:
        found = manifest.get("digest")
        if not (isinstance(found, str) and _DIGEST.fullmatch(found)):
            raise BundleError(f"{path}: digest must be 'sha256:' and 64 hex digits, got {found!r}")
        if found != digest(manifest):
            raise BundleError(
                f"{path}: does not match its own digest (corrupt, or edited without resealing)"
            )
    check_manifest(manifest, where=str(path))
    return manifest


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expect(ok: bool, where: str, key: str, what: str, value: object) -> None:
    if not ok:
        raise BundleError(f"{where}: {key} must be {what}, got {_show(value)}")


def _is_int(value: object, low: int) -> bool:
    return type(value) is int and value >= low


def check_manifest(manifest: dict, *, where: str) -> None:
    """Every key the runtime and the verifier read has its type; every path is a listed member.

    Raises:
        BundleError: naming the key (``files['model.onnx'].sha256``, ``runtime.model``).
    """
    for key in ("model", "task", "target", "metrics", "latency", "provenance", "runtime"):
        _expect(isinstance(manifest[key], dict), where, key, "an object", manifest[key])
    labels = manifest["labels"]
    ok = isinstance(labels, list) and all(isinstance(v, str) for v in labels)
    _expect(ok, where, "labels", "a list of strings", labels)
    for key in ("name", "kind"):
        value = manifest["task"].get(key)
        _expect(isinstance(value, str), where, f"task.{key}", "a string", value)
    files = manifest["files"]
    _expect(isinstance(files, dict) and bool(files), where, "files", "a non-empty object", files)
    for name, entry in files.items():
        check_relative(name, where=f"{where}: files")
        _expect(name not in (MANIFEST, SIGNATURE), where, "files", "other files", name)
        key = f"files[{name!r}]"
        _expect(isinstance(entry, dict), where, key, "an object {bytes, sha256}", entry)
        value = entry.get("bytes")
        _expect(_is_int(value, 0), where, f"{key}.bytes", "an integer >= 0", value)
        value = entry.get("sha256")
        ok = isinstance(value, str) and bool(_HEX64.fullmatch(value))
        _expect(ok, where, f"{key}.sha256", "64 lowercase hex digits", value)
    _check_runtime(manifest["runtime"], files, where)


def _check_runtime(rt: dict, files: dict, where: str) -> None:
    for key in RUNTIME_PATHS + OPTIONAL_RUNTIME_PATHS:
        if key not in rt and key in OPTIONAL_RUNTIME_PATHS:
            continue
        value = rt.get(key)
        _expect(isinstance(value, str), where, f"runtime.{key}", "a path in the bundle", value)
        if value not in files:
            check_relative(value, where=f"{where}: runtime.{key}")
            raise BundleError(
                f"{where}: runtime.{key} {value!r} is not a file listed in the manifest"
            )
    for key, (low, high) in RUNTIME_INTS.items():
        value = rt.get(key)
        ok = _is_int(value, low) and value <= high
        _expect(ok, where, f"runtime.{key}", f"an integer from {low} to {high}", value)
    value = rt.get("pad_token")
    _expect(isinstance(value, str), where, "runtime.pad_token", "a string", value)
    value = rt.get("providers", [])
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    _expect(ok, where, "runtime.providers", "a list of strings", value)


def check_relative(name: object, *, where: str) -> None:
    """A plain relative POSIX path inside the bundle, or BundleError saying why not: at most
    :data:`MAX_PATH_BYTES` in UTF-8, :data:`MAX_PATH_DEPTH` components of at most
    :data:`MAX_COMPONENT_BYTES` each (names any file system takes, folders made without
    recursion)."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where}: unsafe path {_show(name)} (not a non-empty string)")
    parts = name.split("/")
    if name.startswith("/"):
        why = "absolute: a bundle names its files relative to itself"
    elif ".." in parts:
        why = "'..' leads outside the bundle"
    elif "\\" in name or ":" in name:
        why = "a backslash or drive letter"
    elif any(ord(c) < 32 or c == "\x7f" for c in name):
        why = "a control character"
    elif "" in parts or "." in parts:
        why = "an empty or '.' component"
    else:
        _check_length(name, parts, where)
        return
    raise BundleError(f"{where}: unsafe path {_show(name)} ({why})")


def _check_length(name: str, parts: list[str], where: str) -> None:
    if len(parts) > MAX_PATH_DEPTH:
        why = f"{len(parts)} levels deep; the limit is {MAX_PATH_DEPTH}"
    elif _utf8_len(name) > MAX_PATH_BYTES:
        why = f"{_utf8_len(name)} bytes; the limit is {MAX_PATH_BYTES}"
    elif any(_utf8_len(part) > MAX_COMPONENT_BYTES for part in parts):
        why = f"a component over {MAX_COMPONENT_BYTES} bytes"
    else:
        return
    raise BundleError(f"{where}: path {_show(name)} too long ({why})")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))  # tarfile's undecodable bytes: \udcXX


def read_signature(folder: Path) -> dict | None:
    """``folder/signature.json`` checked for form (not for validity: see
    :mod:`toolchain.bundle.sign`), or None when the bundle is unsigned."""
    path = folder / SIGNATURE
    if not path.exists():
        return None
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{path}: not a plain file")
    sig = _load_json(path, MAX_SIGNATURE_BYTES)
    if not isinstance(sig, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(sig).__name__}")
    where = str(path)
    _expect(
        sig.get("algorithm") == "ed25519", where, "algorithm", "'ed25519'", sig.get("algorithm")
    )
    value = sig.get("key_id")
    ok = isinstance(value, str) and bool(_HEX64.fullmatch(value))
    _expect(ok, where, "key_id", "64 lowercase hex digits", value)
    value = sig.get("digest")
    ok = isinstance(value, str) and bool(_DIGEST.fullmatch(value))
    _expect(ok, where, "digest", "'sha256:' and 64 hex digits", value)
    for key, size in (("public_key", 32), ("signature", 64)):
        value = sig.get(key)
        _expect(_b64_len(value) == size, where, key, f"{size} bytes in base64", value)
    return sig


def _b64_len(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return None


# --- archives -----------------------------------------------------------------------------------

# RecursionError: tarfile recurses once per extended header (bounded below, caught anyway)
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, RecursionError)
# tarfile reads an extended header's whole body into memory before it yields the member it
# describes: bounded here, while the headers are parsed
MAX_HEADER_BYTES = 64 * 2**10  # one pax or GNU long-name/long-link header body
MAX_HEADER_CHAIN = 4  # extended headers in a row before a member
MAX_EXTENDED_BYTES = 2**20  # all extended header bodies of an archive
MAX_PAX_KEYS = 64  # pax keywords one member carries (its own and the global ones)
_EXTENDED = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _HeaderRefused(Exception):
    """A tar header over the bounds, raised inside tarfile; :func:`unpack` names the archive.
    Not a ``tarfile.HeaderError``, which tarfile would take for the end of the archive."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header parsing with bounds: an extended header (pax, GNU long name or link)
    larger than :data:`MAX_HEADER_BYTES` or more than :data:`MAX_HEADER_CHAIN` in a row, more
    than :data:`MAX_EXTENDED_BYTES` of them in all, or a sparse file is refused before its body
    is read. The running counts live on the TarFile being read."""

    def _proc_member(self, tar):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _HeaderRefused(f"member {_show(self.name)} is a sparse file; refused")
        if self.type not in _EXTENDED:
            tar.edgec_chain = 0
            return super()._proc_member(tar)
        tar.edgec_chain = getattr(tar, "edgec_chain", 0) + 1
        tar.edgec_extended = getattr(tar, "edgec_extended", 0) + max(self.size, 0)
        if not 0 <= self.size <= MAX_HEADER_BYTES:
            raise _HeaderRefused(
                f"an extended header (pax or GNU long name) of {self.size} bytes; the limit is "
                f"{MAX_HEADER_BYTES}"
            )
        if tar.edgec_chain > MAX_HEADER_CHAIN:
            raise _HeaderRefused(f"more than {MAX_HEADER_CHAIN} extended headers in a row")
        if tar.edgec_extended > MAX_EXTENDED_BYTES:
            raise _HeaderRefused(f"more than {MAX_EXTENDED_BYTES} bytes of extended headers")
        return super()._proc_member(tar)

    def _proc_pax(self, tar):
        member = super()._proc_pax(tar)
        if len(member.pax_headers) > MAX_PAX_KEYS:
            raise _HeaderRefused(
                f"member {_show(member.name)} has {len(member.pax_headers)} pax keywords; the "
                f"limit is {MAX_PAX_KEYS}"
            )
        return member

    def _proc_gnusparse_00(self, *args):  # pax-encoded sparse files, refused like GNU's
        raise _HeaderRefused("a sparse file (pax GNU.sparse); refused")

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


def unpack(archive: str | Path, target: Path, *, limits: ArchiveLimits | None = None) -> Path:
    """Unpack a bundle archive into ``target`` safely; return the bundle folder.

    Every member must be a regular file or folder with a plain relative name (a leading ``./``
    is fine), all under one top folder ``NAME.edgec/``, or with ``manifest.json`` at the top (as
    ``tar czf B.tgz -C NAME.edgec .`` makes; unpacked into ``target/B``). The names, types and
    declared sizes are checked against ``limits`` while the headers are read, and the archive is
    refused before a byte is written; the bytes written are counted against them again.

    Raises:
        ArchiveLimitError: too many members, a file or the total too large, a compression bomb.
        BundleError: an unreadable, truncated or unsafe archive.
    """
    archive, target = Path(archive), Path(target)
    limits = limits or ArchiveLimits()
    try:
        size = archive.stat().st_size
        tar = tarfile.open(archive, "r:gz", tarinfo=_BoundedTarInfo)  # reads the first header
    except _HeaderRefused as e:
        raise ArchiveLimitError(f"{archive}: {e}") from None
    except _READ_ERRORS as e:
        raise BundleError(f"{archive}: not a readable .tar.gz ({_read_error(e)})") from None
    with tar:
        try:
            members = _checked_members(tar, str(archive), size, limits)
            root = _bundle_root(members, str(archive))
            name = root or re.sub(r"(\.tar\.gz|\.tgz)$", "", archive.name)
            return _extract(tar, members, root, target, name, limits)
        except _HeaderRefused as e:
            raise ArchiveLimitError(f"{archive}: {e}") from None
        except _READ_ERRORS as e:  # writing errors are EdgecErrors by now, never these
            raise BundleError(f"{archive}: not a readable .tar.gz ({_read_error(e)})") from None


def _read_error(e: BaseException) -> str:
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)


def _checked_members(tar, where: str, archive_bytes: int, limits: ArchiveLimits) -> list:
    """``[(member, name)]`` read lazily, every header checked before the next is read: a bomb's
    data is never skipped over (decompressed), and nothing past member N+1 of a limit of N is
    read (``getmembers()`` would read them all first)."""
    out, seen, total = [], set(), 0
    budget = min(limits.max_total_bytes, limits.max_ratio * archive_bytes)
    for i, member in enumerate(tar):
        if i >= limits.max_members:
            raise ArchiveLimitError(f"{where}: more than {limits.max_members} members (the limit)")
        name = member.name
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            continue  # the folder the archive was made from
        check_relative(name, where=where)
        if name in seen:
            raise BundleError(f"{where}: member {name!r} appears twice")
        seen.add(name)
        if member.isdir():
            out.append((member, name))
            continue
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse:
            raise BundleError(f"{where}: member {name!r} is a link, device or sparse file; refused")
        if member.size < 0 or member.size > limits.max_member_bytes:
            raise ArchiveLimitError(
                f"{where}: member {name!r} declares {member.size} bytes; the limit is "
                f"{limits.max_member_bytes}"
            )
        total += member.size
        if total > budget:
            why = (
                f"more than {limits.max_total_bytes} bytes (the limit)"
                if total > limits.max_total_bytes
                else f"over {limits.max_ratio:g}x its {archive_bytes} bytes (a compression bomb?)"
            )
            raise ArchiveLimitError(f"{where}: its files would unpack to {why}")
        out.append((member, name))
    files = {n for m, n in out if not m.isdir()}
    # a file that is a parent of another member; each name's parents are looked up, not kept
    # (every prefix of every name would be quadratic in a name's length)
    both = {n[:cut] for n in seen for cut in _slashes(n) if n[:cut] in files}
    for name in sorted(both):
        raise BundleError(f"{where}: {name!r} is both a file and a folder")
    return out


def _slashes(name: str):
    cut = name.find("/")
    while cut != -1:
        yield cut
        cut = name.find("/", cut + 1)


def _bundle_root(members: list, where: str) -> str:
    """The top folder holding manifest.json, or '' when manifest.json is at the top."""
    files = {n for m, n in members if not m.isdir()}
    if not files:
        raise BundleError(f"{where}: an archive without files; not an edgec bundle")
    if MANIFEST in files:
        return ""
    tops = sorted({n.split("/")[0] for _, n in members})
    if len(tops) == 1 and f"{tops[0]}/{MANIFEST}" in files:
        return tops[0]
    raise BundleError(
        f"{where}: expected one top folder NAME.edgec holding {MANIFEST} (or {MANIFEST} at the "
        f"top, as `tar czf B.tgz -C NAME.edgec .` makes), found {tops[:5]}"
    )


def _extract(tar, members: list, root: str, target: Path, name: str, limits) -> Path:
    """Write the checked members into a temp folder in ``target``, then rename it to ``name``."""
    final = target / name
    with _writing(target):
        target.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise BundleError(f"{final} exists already; not overwritten")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target))
    try:
        written = 0
        for member, rel in members:
            inner = rel[len(root) + 1 :] if root else rel
            if inner:
                written += _write_member(tar, member, tmp / inner, limits, written)
        with _writing(final):
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@contextlib.contextmanager
def _writing(path: Path):
    """OSErrors of writing (a full disk) as EdgecError: not the archive's fault, not a crash."""
    try:
        yield
    except OSError as e:
        raise EdgecError(f"cannot write {path}: {e.strerror or e}") from None


def _write_member(tar, member, dest: Path, limits: ArchiveLimits, written: int) -> int:
    """Write one member; its bytes are counted against its declared size and the limits."""
    if member.isdir():
        with _writing(dest):
            dest.mkdir(parents=True, exist_ok=True)
        return 0
    src = tar.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with _writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = os.fdopen(os.open(dest, flags, 0o644), "wb")
    n = 0
    with out:
        while chunk := src.read(1 << 20):  # a read error propagates: the archive's fault
            n += len(chunk)
            if n > member.size or n > limits.max_member_bytes:
                raise ArchiveLimitError(f"{member.name!r} holds more than it declared")
            if written + n > limits.max_total_bytes:
                raise ArchiveLimitError(f"unpacked more than {limits.max_total_bytes} bytes")
            with _writing(dest):
                out.write(chunk)
    return n


def pack(folder: Path, archive: Path) -> Path:
    """``folder`` as a ``.tar.gz`` holding one top folder (written to a temp name, then renamed)."""
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    tmp.replace(archive)
    return archive
