"""Bundle archives: checked member by member against the limits before a byte is written (count,
declared sizes, ratio, types, names), every defect a BundleError, and an archive made from inside
the bundle folder (`tar czf b.tgz -C NAME.edgec .`) works."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest
from fake_bundle import members_of, tar_gz, write_fake_bundle

from toolchain.bundle import manifest as manifest_module
from toolchain.bundle.manifest import (
    ArchiveLimitError,
    ArchiveLimits,
    BundleError,
    pack,
    unpack,
    verify,
)
from toolchain.errors import ConfigError


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_fake_bundle(tmp_path / "src" / "toy.edgec")


@pytest.fixture
def target(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def _nothing_written(target: Path) -> bool:
    return list(target.iterdir()) == []


@pytest.mark.parametrize("prefix", ["./", "", "toy.edgec/", "./toy.edgec/"])
def test_every_usual_layout_unpacks_and_verifies(bundle, tmp_path, target, prefix):
    archive = tar_gz(tmp_path / "b.tgz", members_of(bundle, prefix))
    folder = unpack(archive, target)
    assert folder == target / ("toy.edgec" if "toy" in prefix else "b")
    assert verify(folder)["files"] == verify(bundle)["files"]
    assert [p.name for p in target.iterdir()] == [folder.name]  # no temp folder left


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
def test_tar_czf_from_inside_the_bundle_folder_works(bundle, tmp_path):
    archive = tmp_path / "b.tgz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(bundle), "."], check=True)
    assert tarfile.open(archive).getnames()[0] == "."  # its first entry is ./
    assert verify(archive)["files"] == verify(bundle)["files"]


def test_a_truncated_gzip_is_refused_and_leaves_nothing(bundle, tmp_path, target):
    archive = pack(bundle, tmp_path / "toy.edgec.tar.gz")
    data = archive.read_bytes()
    # (a cut past the tar's end-of-archive blocks loses nothing: tarfile does not read there)
    for cut in (10, 200, len(data) // 2):
        archive.write_bytes(data[:cut])
        with pytest.raises(BundleError, match="not a readable .tar.gz"):
            unpack(archive, target)
        assert _nothing_written(target)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a readable .tar.gz"),
        (b"not a tar.gz", "not a readable .tar.gz"),
        (gzip.compress(b"x" * 1000), "not a readable .tar.gz"),
        (gzip.compress(b"\0" * 10240), "an archive without files"),
    ],
)
def test_what_is_not_a_tar_gz_is_refused(tmp_path, target, data, message):
    (tmp_path / "b.tgz").write_bytes(data)
    with pytest.raises(BundleError, match=message):
        unpack(tmp_path / "b.tgz", target)
    assert _nothing_written(target)


def test_too_many_members_are_refused_before_writing(tmp_path, target):
    members = [("b.edgec", None)] + [(f"b.edgec/f{i}", b"") for i in range(300)]
    archive = tar_gz(tmp_path / "b.tgz", members)
    with pytest.raises(ArchiveLimitError, match="more than 10 members"):
        unpack(archive, target, limits=ArchiveLimits(max_members=10))
    assert _nothing_written(target)


def test_the_member_count_stops_the_reading(tmp_path, target):
    """Headers are read lazily: past member 11 of a limit of 10 the archive is cut off, and the
    refusal is the count, not the read error that reading on would meet."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for i in range(20):
            tar.addfile(tarfile.TarInfo(f"b.edgec/f{i}"), io.BytesIO(b""))
    z = zlib.compressobj(wbits=31)  # a gzip stream, cut off after the 11th header
    (tmp_path / "b.tgz").write_bytes(z.compress(raw.getvalue()[: 11 * 512]) + z.flush(1))
    with pytest.raises(ArchiveLimitError, match="more than 10 members"):
        unpack(tmp_path / "b.tgz", target, limits=ArchiveLimits(max_members=10))
    with pytest.raises(BundleError, match="not a readable .tar.gz"):
        unpack(tmp_path / "b.tgz", target, limits=ArchiveLimits(max_members=100))
    assert _nothing_written(target)


def _declared_bomb(path: Path, size: int) -> Path:
    """A gzip of one tar header declaring ``size`` bytes and none of them (GNU base-256 size)."""
    info = tarfile.TarInfo("b.edgec/model.onnx")
    info.size = size
    path.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 512))
    return path


def test_a_huge_declared_size_is_refused_from_its_header(tmp_path, target):
    archive = _declared_bomb(tmp_path / "b.tgz", 2**40)
    with pytest.raises(ArchiveLimitError, match=f"declares {2**40} bytes; the limit is {2**32}"):
        unpack(archive, target)
    assert _nothing_written(target)
    roomy = ArchiveLimits(max_member_bytes=2**41, max_total_bytes=2**41, max_ratio=10**12)
    with pytest.raises(BundleError, match="not a readable .tar.gz"):  # its data is not there
        unpack(archive, target, limits=roomy)
    assert _nothing_written(target)


def test_a_compression_bomb_is_refused_by_its_ratio(tmp_path, target):
    zeros = b"\0" * (8 * 2**20)
    archive = tar_gz(tmp_path / "b.tgz", [("b.edgec", None), ("b.edgec/model.onnx", zeros)])
    assert archive.stat().st_size < 2**20 // 10  # 8 MiB in a few KB
    with pytest.raises(ArchiveLimitError, match=r"over 100x its \d+ bytes \(a compression bomb"):
        unpack(archive, target)
    with pytest.raises(ArchiveLimitError, match=f"would unpack to more than {2**20} bytes"):
        unpack(archive, target, limits=ArchiveLimits(max_total_bytes=2**20, max_ratio=10**6))
    assert _nothing_written(target)


def test_the_bytes_written_are_limited_too(monkeypatch, bundle, tmp_path, target):
    """Defence in depth: with the header checks bypassed, writing stops at the limit and leaves
    nothing behind."""
    archive = pack(bundle, tmp_path / "toy.edgec.tar.gz")
    check = manifest_module._checked_members
    monkeypatch.setattr(
        manifest_module,
        "_checked_members",
        lambda tar, where, size, limits: check(tar, where, size, ArchiveLimits()),
    )
    with pytest.raises(ArchiveLimitError, match="unpacked more than 40 bytes"):
        unpack(archive, target, limits=ArchiveLimits(max_total_bytes=40))
    assert _nothing_written(target)


def _typed(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("toy.edgec/../../escape.txt", "unsafe path 'toy.edgec/../../escape.txt' ('..'"),
        ("/tmp/abs.txt", "unsafe path '/tmp/abs.txt' (absolute"),
        ("toy.edgec\\..\\x", "unsafe path 'toy.edgec\\\\..\\\\x' (a backslash or drive letter"),
        ("C:/x", "unsafe path 'C:/x' (a backslash or drive letter"),
        ("toy.edgec/a\nb", "unsafe path 'toy.edgec/a\\nb' (a control character"),
        (_typed("toy.edgec/link", tarfile.SYMTYPE, "/etc/passwd"), "'toy.edgec/link' is a link"),
        (_typed("toy.edgec/hard", tarfile.LNKTYPE, "toy.edgec/x"), "'toy.edgec/hard' is a link"),
        (_typed("toy.edgec/fifo", tarfile.FIFOTYPE), "'toy.edgec/fifo' is a link, device"),
        (_typed("toy.edgec/dev", tarfile.CHRTYPE), "'toy.edgec/dev' is a link, device"),
        ("toy.edgec/manifest.json", "member 'toy.edgec/manifest.json' appears twice"),
        ("toy.edgec/model.onnx/x", "'toy.edgec/model.onnx' is both a file and a folder"),
        ("other/readme.txt", "expected one top folder NAME.edgec holding manifest.json"),
    ],
)
def test_unsafe_members_are_refused_before_writing(bundle, tmp_path, target, member, message):
    archive = tmp_path / "bad.edgec.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle, arcname="toy.edgec")
        if isinstance(member, str):
            info = tarfile.TarInfo(member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            tar.addfile(member)
    with pytest.raises(BundleError, match=_literal(message)):
        unpack(archive, target)
    assert _nothing_written(target) and not (tmp_path.parent / "escape.txt").exists()


def _literal(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_members", 0, "--max-members (max_members): must be a positive finite number, got 0"),
        ("max_ratio", float("nan"), "--max-ratio (max_ratio): must be a positive finite number"),
        ("max_ratio", float("inf"), "--max-ratio (max_ratio): must be a positive finite number"),
        ("max_member_bytes", -1, "--max-member-mb (max_member_bytes): must be a positive"),
        ("max_total_bytes", float("nan"), "--max-unpacked-mb (max_total_bytes): must be a"),
        ("max_total_bytes", "1", "--max-unpacked-mb (max_total_bytes): must be a positive"),
        ("max_members", True, "--max-members (max_members): must be a positive finite number"),
    ],
)
def test_limits_are_checked(field, value, message):
    with pytest.raises(ConfigError, match=_literal(message)):
        ArchiveLimits(**{field: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-ratio", "nan"), ("--max-member-mb", "nan"), ("--max-unpacked-mb", "inf")],
)
def test_the_agent_refuses_limits_that_are_not_finite(edgec, tmp_path, option, value):
    token = tmp_path / "token"
    token.write_text("correct-horse-battery\n")
    token.chmod(0o600)
    proc = edgec("agent", "--token-file", str(token), "--port", "0", option, value)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{option} (" in proc.stderr and "must be a positive finite number" in proc.stderr


# -- tar's extended headers (pax, GNU long names) and long names: bounded while tarfile parses --


def _gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw + b"\0" * 1024, mtime=0))
    return path


def _header(name: str, *, fmt=tarfile.PAX_FORMAT, data: bytes = b"", **pax) -> bytes:
    """One member as a tar writes it: its extended headers, its header, its data (padded)."""
    info = tarfile.TarInfo(name)
    info.size, info.pax_headers = len(data), pax
    return info.tobuf(format=fmt) + data + b"\0" * (-len(data) % 512)


def _extended_only(**pax) -> bytes:
    """A pax extended header without the member it describes (blocks before the last one)."""
    return _header("b.edgec/f", **pax)[:-512]


def _peak_bytes(run) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        run()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "raw",
    [
        _header("b.edgec/f", comment="x" * 2**20),  # a 1 MB pax header
        _header("b.edgec/" + "a" * 2**20, fmt=tarfile.GNU_FORMAT),  # a 1 MB GNU long name
        _header("b.edgec/f", linkpath="l" * 2**20),
    ],
    ids=["pax", "gnu-long-name", "pax-linkpath"],
)
def test_a_huge_extended_header_is_refused_before_its_body_is_read(tmp_path, target, raw):
    archive = _gz(tmp_path / "b.tgz", raw)
    assert archive.stat().st_size < 20_000

    def refused():
        with pytest.raises(ArchiveLimitError, match=r"an extended header .* of 10\d{5} bytes; "):
            unpack(archive, target)

    assert _peak_bytes(refused) < 2**19  # the 1 MB body was never read into memory
    assert _nothing_written(target)


def test_chained_extended_headers_are_refused_not_a_recursion_error(tmp_path, target):
    archive = _gz(tmp_path / "b.tgz", _extended_only(comment="c") * 3000 + _header("b.edgec/f"))
    with pytest.raises(ArchiveLimitError, match="more than 4 extended headers in a row"):
        unpack(archive, target)
    assert _nothing_written(target)


def test_a_recursion_error_in_tarfile_is_a_bundle_error(monkeypatch, tmp_path, target):
    """Defence in depth: with the chain limit lifted, tarfile's recursion is caught."""
    monkeypatch.setattr(manifest_module, "MAX_HEADER_CHAIN", 10**6)
    archive = _gz(tmp_path / "b.tgz", _extended_only(comment="c") * 3000 + _header("b.edgec/f"))
    with pytest.raises(BundleError, match=r"not a readable .tar.gz \(nested too deeply\)"):
        unpack(archive, target)
    assert _nothing_written(target)


def test_extended_headers_are_limited_in_all(tmp_path, target):
    members = b"".join(_header(f"b.edgec/f{i}", comment="x" * 60_000) for i in range(20))
    with pytest.raises(ArchiveLimitError, match=f"more than {2**20} bytes of extended headers"):
        unpack(_gz(tmp_path / "b.tgz", members), target)
    many = {f"k{i}": "v" for i in range(100)}
    with pytest.raises(ArchiveLimitError, match="'b.edgec/f' has 100 pax keywords; the limit"):
        unpack(_gz(tmp_path / "c.tgz", _header("b.edgec/f", **many)), target)
    assert _nothing_written(target)


def test_sparse_files_are_refused_while_the_headers_are_read(tmp_path, target):
    gnu = tarfile.TarInfo("b.edgec/s")
    gnu.type = tarfile.GNUTYPE_SPARSE
    with pytest.raises(ArchiveLimitError, match="member 'b.edgec/s' is a sparse file"):
        unpack(_gz(tmp_path / "a.tgz", gnu.tobuf(format=tarfile.GNU_FORMAT)), target)
    pax = _header("b.edgec/s", **{"GNU.sparse.map": "0,1," * 1000 + "0,1"})
    with pytest.raises(ArchiveLimitError, match=r"a sparse file \(pax GNU.sparse\)"):
        unpack(_gz(tmp_path / "b.tgz", pax), target)
    assert _nothing_written(target)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a/" * 20000 + "f", "too long (20001 levels deep; the limit is 32)"),  # was 409 MB
        ("b.edgec/" + "d/" * 1200 + "f", "too long (1202 levels deep; the limit is 32)"),
        ("b.edgec/" + "x" * 256, "too long (a component over 255 bytes)"),
        ("b.edgec/" + "é" * 128, "too long (a component over 255 bytes)"),  # 256 bytes in UTF-8
        ("b.edgec/" + "/".join(["y" * 200] * 6), "too long (1213 bytes; the limit is 1024)"),
    ],
    ids=["quadratic", "deep", "component", "utf8-component", "total"],
)
def test_long_or_deep_names_are_refused_before_writing(tmp_path, target, name, message):
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        archive = _gz(tmp_path / "b.tgz", _header(name, fmt=fmt, data=b"x"))
        with pytest.raises(BundleError, match=_literal(message)):
            unpack(archive, target)
        assert _nothing_written(target)


def test_names_at_the_limits_and_extended_headers_unpack(tmp_path, target):
    deep = "b.edgec/" + "/".join(["d"] * 30) + "/f"  # 32 levels
    wide = "b.edgec/" + "w" * 255
    members = [
        _header("b.edgec/manifest.json", data=b"{}", comment="made by hand"),
        _header(deep, fmt=tarfile.GNU_FORMAT, data=b"deep"),
        _header(wide, data=b"wide"),
    ]
    folder = unpack(_gz(tmp_path / "b.tgz", b"".join(members)), target)
    assert (folder / deep.removeprefix("b.edgec/")).read_bytes() == b"deep"
    assert (folder / wide.removeprefix("b.edgec/")).read_bytes() == b"wide"


def test_a_file_under_a_file_is_found_without_every_prefix_kept(tmp_path, target):
    base = "b.edgec/" + "/".join(["d"] * 30)
    members = [_header(base, data=b"f"), _header(base + "/x", data=b"x")]
    with pytest.raises(BundleError, match=f"{base!r} is both a file and a folder"):
        unpack(_gz(tmp_path / "b.tgz", b"".join(members)), target)
    assert _nothing_written(target)
