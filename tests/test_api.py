"""toolchain/api.py: the README's build script, run with its own calls on a tiny model; the
public API refuses an unsupported task kind before any work; `toolchain.build` is the API's."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from toy import TOY_SPEC, write_toy_table

import toolchain
from toolchain import api
from toolchain.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_build import RECIPE  # noqa: E402  (the tiny recipe of the build test)


def _readme_script() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class TinyAPI:
    """The real API, pointed at a tiny model, tiny data and test folders: the script's calls go
    through unchanged, with these settings added."""

    DEFAULT = api.DEFAULT

    def __init__(self, tmp: Path):
        from conftest import write_fake_predictor, write_tiny_bert

        self.tmp = tmp
        write_toy_table(tmp / "train.tsv", 200, 0)
        write_toy_table(tmp / "dev.tsv", 40, 1)
        (tmp / "recipe.yaml").write_text(RECIPE)
        write_fake_predictor(tmp / "predictors")
        self.model = write_tiny_bert(tmp / "model", positions=160)
        files = {"train": str(tmp / "train.tsv"), "dev": str(tmp / "dev.tsv")}
        self.spec = replace(TOY_SPEC, files=files)
        self.calls: list[str] = []

    def build_recipe(self, recipe_file=None, *, preset="quick", overrides=None):
        self.calls.append("build_recipe")
        assert recipe_file is None and preset == "quick"
        tiny = {**overrides, "teacher": str(self.model), "data_dir": None}
        return api.build_recipe(self.tmp / "recipe.yaml", preset=preset, overrides=tiny)

    def build(self, recipe, out=None, **kwargs):
        self.calls.append("build")
        assert not kwargs, "the README's call takes the defaults"
        return api.build(
            recipe,
            self.tmp / out,
            task=self.spec,
            predictors=self.tmp / "predictors",
            teacher_cache=self.tmp / "teachers",
            train_device="cpu",
        )


def test_the_readme_script_builds_bundles(tmp_path, capsys):
    tiny = TinyAPI(tmp_path)
    code = _readme_script()
    assert code.startswith("from toolchain import api\n")
    exec(code.replace("from toolchain import api\n", ""), {"api": tiny})
    assert tiny.calls == ["build_recipe", "build"]
    printed = capsys.readouterr().out.splitlines()
    rows = [line for line in printed if line.startswith(("easy ", "roomy "))]
    assert len(rows) == 2 and all("measured on x86-64-host" in r for r in rows)
    run = tmp_path / "runs" / "sst2-host"
    assert (run / "build.json").is_file() and (run / "report.md").is_file()
    assert not (run / "bundle-impossible").exists()  # no subnet fits it: reported, not built


def test_an_unsupported_task_kind_is_refused_before_any_work(tmp_path, monkeypatch):
    from dataclasses import replace

    import toolchain.api as api_module

    made_up = replace(api_module.get_task("sst2"), name="asr", kind="speech-recognition")
    monkeypatch.setattr(api_module, "_task", lambda task: made_up)
    monkeypatch.setattr(api_module, "get_task", lambda task: made_up)
    recipe = api.build_recipe(None, overrides={"device": "host"})
    kinds = "supported task kinds are classification, language-modeling, regression, token-c"
    with pytest.raises(ConfigError, match=kinds):
        api.build(recipe, tmp_path / "run", teacher_cache=tmp_path / "teachers")
    assert not (tmp_path / "run").exists() and not (tmp_path / "teachers").exists()


def test_cvt_for_a_task_that_is_not_tagging_is_refused_before_any_work(edgec, tmp_path):
    proc = edgec("build", "--device", "host", "--task", "sst2", "--candidates", "cvt",
                 "-o", str(tmp_path / "r"))  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "CVT tags words" in proc.stderr and "sst2 is a classification task" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model_type", ["mpnet", "gpt2", "llama"])
def test_a_teacher_the_search_cannot_take_is_refused_before_any_work(tmp_path, model_type):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    recipe = api.build_recipe(None, overrides={"device": "host", "teacher": str(teacher)})
    with pytest.raises(ConfigError, match=f"a {model_type} model; edgec build searches subnets of "
                                          "BERT-family encoders"):  # fmt: skip
        api.build(recipe, tmp_path / "run", teacher_cache=tmp_path / "teachers")
    assert not (tmp_path / "run").exists() and not (tmp_path / "teachers").exists()
    gguf = tmp_path / "smollm.gguf"
    gguf.write_bytes(b"GGUF")
    recipe = api.build_recipe(None, overrides={"device": "host", "teacher": str(gguf)})
    with pytest.raises(ConfigError, match="a GGUF model; edgec build searches"):
        api.build(recipe, tmp_path / "run", teacher_cache=tmp_path / "teachers")


def test_toolchain_build_is_the_api_build():
    assert toolchain.build is api.build
