"""`edgec build` end to end on a tiny model and tiny data: killed after the search and resumed
without redoing what was done, an impossible budget reported while the other is built and
bundled, and `edgec report` regenerating the same report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy import write_toy_table

from toolchain.bundle.manifest import verify

REPO = Path(__file__).resolve().parents[1]
# the shape of this tiny build (stage names and configs, bundle files, report columns, build.json
# keys): a change that alters what a build produces shows here and is reviewed
GOLDEN = Path(__file__).parent / "golden" / "build_shape.json"

RECIPE = """
device: host
budgets:
  - {name: impossible, latency_ms: 0.001, memory_mb: 1}
  - {name: easy, latency_ms: 500, memory_mb: 8192, percentile: 90}
  - {name: roomy, latency_ms: 900, memory_mb: 8192, percentile: 90}
teacher_finetune: {max_steps: 40, batch_size: 8, learning_rate: 0.003, eval_every: 20,
                   max_seq_len: 32}
search: {supernet_steps: 6, sandwich: 2, batch_size: 8, max_seq_len: 32, population: 6,
         generations: 2, eval_samples: 16, measure_top_k: 0}
distill: {steps: 8, batch_size: 8, max_seq_len: 32, eval_every: 4, eval_samples: 32}
quantize: {steps: 6, batch_size: 8, max_seq_len: 32, eval_every: 3, eval_samples: 32,
           calibration_batches: 2, sensitivity_batches: 1}
export: {parity_samples: 16}
quality: {accuracy_floor: 0.1}  # 40 dev examples: one error is 2.5 points
"""


@pytest.fixture
def setup(tmp_path):
    from conftest import write_fake_predictor, write_tiny_bert

    write_toy_table(tmp_path / "train.tsv", 200, 0)
    write_toy_table(tmp_path / "dev.tsv", 40, 1)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    write_fake_predictor(tmp_path / "predictors")  # a made-up law: 1 ms + 1.5 ms per layer
    model = write_tiny_bert(tmp_path / "model", positions=160)
    assert model == tmp_path / "model"
    args = [  # every path relative to the working directory the build runs from (tmp_path)
        sys.executable,
        "-m",
        "toolchain",
        "build",
        "--recipe",
        "recipe.yaml",
        "--model",
        "model",
        *("--train-file", "train.tsv", "--dev-file", "dev.tsv"),
        *("--text-column", "text", "--label-column", "label"),
        *("--predictors", "predictors", "--train-device", "cpu"),
        *("--teacher-cache", "teachers"),
        "-o",
        "run",
    ]
    return tmp_path, args


def build_shape(tmp: Path) -> dict:
    """What must not change from one version to the next: the stages (names, configs), each
    bundle's files, the report's columns and the summary's keys. Paths under ``tmp`` and the
    content hashes in cached stage names (which hash those paths) are normalised."""

    def norm(value):
        text = json.dumps(value).replace(str(tmp), "<tmp>")
        # which finalists the search shortlists varies between runs (inherited-weight scores of
        # a 6-step supernet on 16 examples tie, and CPU float sums are not bit-reproducible):
        # the subnets' names are normalised, the stages' structure is what must not change
        text = re.sub(r"L[\d.]+-H\d+-A\d+-F\d+", "<subnet>", text)
        return json.loads(re.sub(r"-[0-9a-f]{12}\b", "-<hash>", text))

    stages = {}
    for folder in (tmp / "run", tmp / "teachers"):
        for rec in sorted(folder.glob("*/stage.json")):
            stages[rec.parent.name] = json.loads(rec.read_text())["config"]
    summary = json.loads((tmp / "run" / "build.json").read_text())
    bundles = {
        b["budget"]: sorted(
            json.loads((tmp / "run" / b["bundle"] / "manifest.json").read_text())["files"]
        )
        for b in summary["bundles"]
        if b.get("built")
    }
    report = (tmp / "run" / "report.md").read_text().splitlines()
    return norm(
        {
            "stages": stages,
            "bundle_files": bundles,
            "report_header": next(line for line in report if line.startswith("| budget")),
            "summary_keys": sorted(summary),
            "bundle_keys": sorted({k for b in summary["bundles"] for k in b}),
        }
    )


def _records(*folders: Path) -> dict:
    return {p.parent.name: p.read_text() for f in folders for p in f.glob("*/stage.json")}


def test_build_killed_resumes_and_reports(setup):
    tmp, args = setup
    run = tmp / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while not (run / "search" / "stage.json").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the build did not reach the search stage in time"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # Ctrl-C after the search stage completed
    proc.wait(timeout=120)
    before = _records(run, tmp / "teachers")
    assert "search" in before and any(n.startswith("table-") for n in before)  # the teacher

    done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 3, done.stderr[-3000:]  # one budget could not be built
    assert "edgec build: teacher: cached" in done.stdout
    assert "edgec build: search: cached" in done.stdout
    after = _records(run, tmp / "teachers")
    for name, record in before.items():  # nothing done before the kill was redone
        assert after[name] == record, name

    summary = json.loads((run / "build.json").read_text())
    bundles = {b["budget"]: b for b in summary["bundles"]}
    assert not bundles["impossible"]["built"] and not bundles["impossible"]["met"]
    assert "no subnet of the search space fits" in bundles["impossible"]["error"]
    assert bundles["impossible"]["closest"]["predicted"]["latency_ms"] > 0.001
    easy = bundles["easy"]
    assert easy["built"] and easy["met"] and easy["measured"]
    assert easy["latency_label"].startswith("measured on x86-64-host")
    assert easy["metric"] == "accuracy" and easy["label_loyalty"] is not None
    assert easy["dev"] > summary["trivial"]["accuracy"]  # the toy task is learnt
    assert easy["verdict"] == "met (measured on x86-64-host)" and easy["quality"]["floor_met"]
    # every budget's finalists were distilled and the choice is recorded with its reason
    chosen = summary["selection"]["easy"]
    assert chosen["arch"] == easy["subnet"] and chosen["finalists"]
    assert all(f["validation_after_distill"] is not None for f in chosen["finalists"])
    manifest = verify(run / easy["bundle"])  # the bundle's files match its hashes
    assert manifest["target"]["device"] == "x86-64-host"
    quality = manifest["metrics"]["quality"]  # the bundle says what its score is and against what
    assert quality["metric"] == "accuracy" and quality["dev"] == easy["dev"]
    assert quality["trivial"] == summary["trivial"]["accuracy"] and quality["floor_met"]
    assert "trivial baseline" in (run / easy["bundle"] / "README.md").read_text()
    assert quality["label_loyalty"] == easy["label_loyalty"]  # loyalty to the teacher, too
    robust = manifest["metrics"]["robustness"]  # the attacks ran against the bundle itself
    assert robust["n"] == 40 and "seed 0" in robust["protocol"] and "bundle" in robust["protocol"]
    for name in ("char", "word", "suite"):
        r = robust[name]
        assert 0 <= r["accuracy_under_attack"] <= r["accuracy"] <= 1
    assert robust["suite"]["accuracy_under_attack"] <= robust["char"]["accuracy_under_attack"]
    assert "Robustness" in (run / easy["bundle"] / "README.md").read_text()
    assert (run / (easy["bundle"] + ".tar.gz")).is_file()
    assert summary["baseline_ort_int8_teacher"]["latency"]["p50_ms"] > 0
    stages = set(summary["stage_s"])
    assert {"teacher", "search", "bundle-easy", "bundle-roomy", "baseline"} <= stages
    if bundles["roomy"]["subnet"] == easy["subnet"]:  # one model: its stages ran once
        assert bundles["roomy"]["selection"]["shared_with"] == ["easy"]
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("edgec build: export-")]
        assert len(lines) == 2 and lines[1].endswith(": cached")  # the second budget reuses it
    key = "L" + easy["subnet"].split("]")[0][2:].replace(",", ".")  # stages named by the subnet
    assert any(s.startswith(f"distill-{key}-") for s in stages)

    # the same stages, configs, bundle files, report columns and build.json keys as the golden
    # record (regenerate it with EDGEC_WRITE_GOLDEN=1 when a change is meant, and review the diff)
    shape = build_shape(tmp)
    if os.environ.get("EDGEC_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(shape, indent=1, sort_keys=True) + "\n")
    assert shape == json.loads(GOLDEN.read_text())

    report = (run / "report.md").read_text()
    assert "| easy (<= 500 ms, 8192 MB) |" in report and "NOT MET" in report
    assert "dev accuracy" in report and "Trivial baseline" in report
    _check_what_ships(run, summary, easy, manifest, report)
    html = (run / "report.html").read_text()
    again = subprocess.run(
        [sys.executable, "-m", "toolchain", "report", "run"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert (run / "report.md").read_text() == report and (run / "report.html").read_text() == html


def _check_what_ships(run: Path, summary: dict, easy: dict, manifest: dict, report: str) -> None:
    """The report and the manifest describe the bundle as shipped, not as trained."""
    from toolchain.bundle.build import shipped_summary

    fmt = easy["format"]
    qc = json.loads((Path(manifest["model"]["source"]) / "config.json").read_text()).get(
        "quantization_config"
    )
    # this host's auto export picks the fastest format: whatever it is, that is what is shown
    assert easy["bits"] == manifest["model"]["precision_summary"] == shipped_summary(fmt, qc)
    assert easy["trained_bits"] == "W8A8"
    if fmt in ("fp32", "fp16"):  # shipped float: no layer may claim W8A8
        assert set(manifest["model"]["precision"].values()) == {
            f"{fmt} (weights on the trained low-bit grid, activations float)"
        }
        assert easy["bits"] == f"{fmt} (trained W8A8)"
    assert manifest["model"]["trained_precision"]
    assert 0 < manifest["model"]["stored_bits_per_param"] < 64
    assert manifest["runtime"]["providers"] == ["CPUExecutionProvider"]
    row = next(line for line in report.splitlines() if line.startswith("| easy ("))
    assert f"{fmt} / ONNX Runtime (CPU)" in row and easy["bits"] in row
    # the model card table, stage states, commands and provenance
    assert (
        "| budget | device | chipset | target runtime | inference time (ms) | peak memory" in report
    )
    assert "- teacher: cached" in report and "- search: cached" in report
    assert f"edgec bundle verify {easy['bundle']}" in report
    assert summary["versions"]["edgec"] and summary["created"].endswith("Z")
    recipe = (run / "recipe.yaml").read_text()
    assert "came from data files given on the command line" in recipe
    html = (run / "report.html").read_text()
    assert "src='search/" not in html and "src='report-" not in html  # nothing linked
    assert html.count("src='data:image/png;base64,") == 3  # shipped, search front, stages
    assert (run / "report-pareto.png").is_file()


@pytest.mark.slow
def test_report_html_renders_its_plots_in_chromium(setup, tmp_path):
    """report.html alone (copied away from its run directory) shows every plot in headless
    Chromium (Debian's package: apt install chromium)."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt install chromium)")
    tmp, args = setup
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 3, done.stderr[-3000:]
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    page = (tmp / "run" / "report.html").read_text()
    probe = (
        "<script>window.addEventListener('load', () => document.body.setAttribute('data-images',"
        " JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth]))));</script>"
    )
    (alone / "report.html").write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
         "--dump-dom", (alone / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-images="([^"]*)"', dom.stdout)
    assert found, dom.stdout[:2000]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == 3 and all(ok and width > 100 for ok, width in images), images
    assert "Model card" in dom.stdout and "Deploy and measure" in dom.stdout
