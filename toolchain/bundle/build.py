"""Write a deployable bundle (DESIGN.md): ``NAME.edgec/`` with ``manifest.json``, ``model.onnx``,
the tokenizer and a model card, and the same as ``NAME.edgec.tar.gz``.

A bundle is written with its latency "not measured"; the device target then measures it (on this
host when the device is this host, through `edgec agent` on the device) or predicts it, and
:func:`set_latency` records the figure with its label. No host figure is ever written as a device
figure.

Example::

    target = DeviceTarget.resolve("host")
    build_bundle("runs/student-w4a8-onnx", Path("sst2-host.edgec"), target=target, spec=spec)
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path

from toolchain.bundle.manifest import (
    SCHEMA_VERSION,
    SIGNATURE,
    BundleError,
    file_table,
    pack,
    read_manifest,
    write_manifest,
)
from toolchain.export import device_format
from toolchain.version import __version__, dist_version

log = logging.getLogger(__name__)

HF_FILES = (
    "config.json",  # the float family's config with the labels: optimum's ORTModelFor... load it
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)


def _origin_metrics(model_dir: Path) -> dict:
    """Accuracy and loyalty recorded by the stage that produced the model, if any."""
    path = model_dir / "metrics.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    dev = m.get("dev") or {}
    model = dev.get("quantized") or dev.get("student") or dev.get("model")
    reference = dev.get("float") or dev.get("teacher")
    out = {"source_stage_metrics": str(path)}
    if model:
        out["dev"] = model
    if reference:
        out["reference_dev"] = reference
        out["reference"] = "float model" if "float" in dev else "teacher"
    for key in ("label_loyalty", "prob_loyalty"):
        if key in dev:
            out[key] = dev[key]
    out["robustness"] = "not measured"
    return out


def _export(source: Path, tmp: Path, *, fmt: str | None, host: bool, spec, data_dir) -> Path:
    """An export folder for ``source``: itself when it already holds model.onnx."""
    if (source / "model.onnx").is_file():
        return source
    from toolchain.export.onnx import load_for_export
    from toolchain.export.stage import export_model

    if fmt is None:
        _, qc = load_for_export(source)
        act_bits = qc.get("act_bits") if qc else None
        fmt = device_format(host=host, quantized=qc is not None, act_bits=act_bits)
    out = tmp / "export"
    export_model(source, out, fmt=fmt, spec=spec, data_dir=data_dir)
    return out


def build_bundle(
    source: str | Path,
    out: str | Path,
    *,
    target,
    spec,
    data_dir=None,
    budget=None,
    fmt: str | None = None,
    tarball: bool = True,
    model_card: bool = True,
) -> dict:
    """Write ``out`` (a ``NAME.edgec`` folder; and ``NAME.edgec.tar.gz`` when ``tarball``).

    Args:
        source: an export folder (``model.onnx`` + tokenizer, from `edgec export`) or a model
            directory, which is exported first (``fmt``; default ``auto`` on this host,
            ``int8-qdq``/``nbits``/``fp32`` for another device).
        target: the :class:`~toolchain.target.DeviceTarget` the bundle is for (its profile, the
            name the user typed, whether it is this host).
        budget: the device budget the bundle is for: a name of the profile's budgets, or a
            custom ``BudgetSpec`` (default: the profile's first).

        model_card: write the model card (README.md) into the bundle.

    The bundle's latency is "not measured" until the caller measures it on the device (or
    predicts it) and calls :func:`set_latency`: measuring is the device target's job.

    Returns:
        The manifest.
    """
    source, out = Path(source), Path(out)
    if spec.kind not in ("classification", "regression", "token-classification",
                         "language-modeling"):  # fmt: skip
        raise BundleError(
            f"bundles of {spec.kind} models are not supported yet (sequence and token "
            "classification, regression and language modelling are): export them with "
            "`edgec export` and run the ONNX directly"
        )
    if not out.name.endswith(".edgec"):
        raise BundleError(f"the bundle name must end in .edgec, got {out.name}")
    profile, host = target.profile, target.is_host
    if budget is None or isinstance(budget, str):
        target_budget = profile.budget(budget) if budget else profile.budgets[0]
    else:  # a custom budget (a BudgetSpec of the recipe)
        target_budget = budget
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        exported = _export(source, tmp, fmt=fmt, host=host, spec=spec, data_dir=data_dir)
        folder = tmp / out.name
        folder.mkdir()
        shutil.copyfile(exported / "model.onnx", folder / "model.onnx")
        for name in HF_FILES:
            if (exported / name).is_file():
                shutil.copyfile(exported / name, folder / name)
        if not (folder / "tokenizer.json").is_file():
            raise BundleError(f"{exported}: no tokenizer.json (a fast tokenizer is required)")
        manifest = _manifest(exported, folder, profile, target_budget, target.requested, spec)
        if spec.kind == "language-modeling":
            _add_generation(exported, folder, manifest)
        if spec.kind == "token-classification":
            _add_tagging(exported, manifest)
        if model_card:
            (folder / "README.md").write_text(card(manifest))
        manifest["files"] = file_table(folder)
        write_manifest(folder, manifest)
        if out.exists():
            shutil.rmtree(out)
        folder.rename(out)
    if tarball:
        pack(out, out.with_name(out.name + ".tar.gz"))
    log.info("bundle %s: %d files", out, len(manifest["files"]))
    return manifest


def set_latency(
    folder: str | Path,
    latency: dict,
    quality: dict | None = None,
    robustness: dict | str | None = None,
) -> dict:
    """Give a built bundle its latency figures (measured by the device's agent, or predicted for
    the device; ``latency["label"]`` says which) and, from a build, its quality beside the
    teacher and the trivial baseline in the task's main metric (``quality``): the manifest, the
    model card and the file table are rewritten (with a new digest: a signature of the old one
    is removed, the bundle must be signed again), and the ``.tar.gz`` beside the folder re-packed
    if there is one."""
    folder = Path(folder)
    if "label" not in latency:
        raise BundleError("a latency figure needs its label (measured on / predicted for)")
    manifest = read_manifest(folder)
    manifest["latency"] = latency
    if quality is not None:
        manifest["metrics"]["quality"] = quality
    if robustness is not None:
        manifest["metrics"]["robustness"] = robustness
    manifest["schema_version"] = SCHEMA_VERSION
    if (folder / "README.md").is_file():
        (folder / "README.md").write_text(card(manifest))
    manifest["files"] = file_table(folder)
    if (folder / SIGNATURE).is_file():
        log.warning("%s: the manifest changed, its signature is removed: sign it again", folder)
        (folder / SIGNATURE).unlink()
    write_manifest(folder, manifest)
    tarball = folder.with_name(folder.name + ".tar.gz")
    if tarball.is_file():
        pack(folder, tarball)
    return manifest


def trained_precision(qc: dict) -> dict[str, str]:
    """Per layer, the precision the model was trained at (its packed checkpoint)."""
    act = qc.get("act_bits")
    return {n: f"W{e['bits']}A{act or 'float'}" for n, e in qc["modules"].items()}


def shipped_precision(fmt: str, qc: dict | None, accuracy_level: int = 4) -> dict[str, str]:
    """Per layer, the precision model.onnx holds: what the export format made of the trained
    precision (an fp32 export of a W4A8 model ships fp32 weights on the W4 grid and float
    activations; INT8 Q/DQ stores 2-4-bit codes in INT8; MatMulNBits keeps them, with INT8 or
    float activations inside the kernel)."""
    if fmt == "int8-dynamic":
        return {"*": "W8A8 (ONNX Runtime dynamic INT8)"}
    if fmt in ("fp32", "fp16") or not qc:
        note = " (weights on the trained low-bit grid, activations float)" if qc else ""
        return {"*": f"{fmt}{note}"}
    out = {}
    for name, e in qc["modules"].items():
        bits, linear = e["bits"], e["kind"] == "linear"
        if fmt == "int8-qdq":
            codes = f", {bits}-bit codes" if bits < 8 else ""
            out[name] = f"W8A8 (INT8 Q/DQ{codes})" if linear else f"W8 (INT8 table{codes})"
        elif fmt == "nbits":
            act = "A8 in the kernel" if accuracy_level else "A float"
            stored = max(bits, 4) if not linear else bits
            out[name] = (
                f"W{bits} {act} (MatMulNBits)"
                if linear
                else f"W{stored} (GatherBlockQuantized{', 2-bit codes in 4' if bits < 4 else ''})"
            )
        else:
            out[name] = fmt
    return out


def shipped_summary(fmt: str, qc: dict | None, accuracy_level: int = 4) -> str:
    """One line of :func:`shipped_precision`: 'W4A8 MatMulNBits', 'W8A8 Q/DQ', 'fp32 (trained
    W4A8)', 'W8A8 dynamic', 'fp32'."""
    trained = ""
    if qc:
        widths = sorted({e["bits"] for e in qc["modules"].values()})
        trained = f"W{'/'.join(map(str, widths))}A{qc.get('act_bits') or 'float'}"
    if fmt == "int8-dynamic":
        return "W8A8 dynamic (ONNX Runtime)"
    if fmt in ("fp32", "fp16") or not qc:
        return f"{fmt} (trained {trained})" if trained else fmt
    if fmt == "int8-qdq":
        return "W8A8 INT8 Q/DQ" + (
            f" ({trained} codes)" if trained and "W8A" not in trained else ""
        )
    if fmt == "nbits":
        act = "A8" if accuracy_level else "A-float"
        return f"{trained.split('A')[0]}{act} MatMulNBits"
    return fmt


# a device profile's runtimes, as ONNX Runtime execution providers (best first)
_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
}


def providers_for(profile) -> list[str]:
    """The execution providers a bundle for ``profile`` lists: TensorRT and CUDA where the device
    has them (in the profile's order), and the CPU last, as fallback. ONNX Runtime places each node
    on the first listed provider that can run it (MatMulNBits, an ORT contrib op, falls back to
    CUDA or the CPU under TensorRT)."""
    gpu = [_PROVIDERS[r] for r in profile.runtime_names if r in _PROVIDERS]
    return [*dict.fromkeys([*gpu, "CPUExecutionProvider"])]


def _manifest(exported: Path, folder: Path, profile, target_budget, requested, spec) -> dict:
    export_file = exported / "export.json"
    export = json.loads(export_file.read_text()) if export_file.is_file() else {}
    origin = Path(export["source"]) if "source" in export else None
    if origin is not None and not (origin / "config.json").is_file():
        # the model it came from has moved (or was named relative to another folder): the
        # labels come from the task, and the per-layer precision cannot be read back
        log.warning("%s: the source model %s is gone; labels from the task", export_file, origin)
        origin = None
    config = json.loads((origin / "config.json").read_text()) if origin else {}
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] or list(spec.labels or ())
    if spec.labels and len(spec.labels) == len(labels):
        labels = list(spec.labels)
    qc = config.get("quantization_config")
    fmt = export.get("format", "unknown")
    precision = shipped_precision(fmt, qc, export.get("accuracy_level", 4))
    params = export.get("params")
    onnx_bytes = (folder / "model.onnx").stat().st_size
    tok = json.loads((folder / "tokenizer.json").read_text())
    pad = (tok.get("padding") or {}) if isinstance(tok, dict) else {}
    pad_token = pad.get("pad_token") or "[PAD]"
    vocab = (tok.get("model") or {}).get("vocab") or {}
    pad_id = pad.get("pad_id", vocab.get(pad_token, 0) if isinstance(vocab, dict) else 0)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "architecture": (config.get("architectures") or ["unknown"])[0],
            "source": str(origin) if origin else str(exported),
            "format": fmt,
            "precision": precision,  # per layer, as shipped in model.onnx
            "precision_summary": shipped_summary(fmt, qc, export.get("accuracy_level", 4)),
            **({"trained_precision": trained_precision(qc)} if qc else {}),
            **(
                {"params": params, "stored_bits_per_param": round(8 * onnx_bytes / params, 2)}
                if params
                else {}
            ),
        },
        "task": {"name": spec.name, "kind": spec.kind},
        "labels": labels,
        "target": {
            "device": profile.name,
            "chipset": profile.chipset,
            "requested": requested,
            "budget": {
                "name": target_budget.name,
                "latency_ms": target_budget.latency_ms,
                "memory_mb": target_budget.memory_mb,
                **(
                    {
                        "decode_tok_s": target_budget.decode_tok_s,
                        "context_len": target_budget.context_len,
                        "prompt_len": target_budget.seq_len,
                    }
                    if target_budget.generation
                    else {}
                ),
            },
        },
        "metrics": {
            "main_metric": spec.main_metric,
            **(_origin_metrics(origin) if origin else {}),
            "parity": export.get("parity"),
        },
        "latency": {
            "status": "not measured",
            "label": f"not measured on {profile.name}: run `edgec profile` there (or through "
            "`edgec agent`); this host's figures are never reported as the device's",
        },
        "provenance": {
            "edgec": __version__,
            "export": export.get("candidates"),
            "python": platform.python_version(),
            "onnxruntime": dist_version("onnxruntime"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "runtime": {
            "name": "onnxruntime",
            "model": "model.onnx",
            "tokenizer": "tokenizer.json",
            "max_seq_len": 128,
            "pad_id": int(pad_id),
            "pad_token": pad_token,
            "providers": providers_for(profile),
        },
        "files": {},
    }


def _add_generation(exported: Path, folder: Path, manifest: dict) -> None:
    """A language model's bundle: ``generation_config.json`` (end-of-sequence ids, the context
    the model was exported for, greedy decoding by default) named in the manifest's runtime."""
    from toolchain.bundle.generator import GENERATION_CONFIG

    export = json.loads((exported / "export.json").read_text())
    config = json.loads((Path(export["source"]) / "config.json").read_text())
    eos = config.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    context = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
    generation = {
        "eos_token_ids": eos,
        "max_context": context,
        "max_new_tokens": 64,
        "temperature": 0.0,
        "top_k": 0,
        "top_p": 1.0,
        "kv_cache": "past_key_values.{i}.key/value in, present.{i}.key/value out",
    }
    (folder / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2) + "\n")
    rt = manifest["runtime"]
    rt["generation_config"] = GENERATION_CONFIG
    rt["max_seq_len"] = min(context, 65536)
    rt["pad_id"] = eos[0] if eos else 0
    manifest["labels"] = []


def _add_tagging(exported: Path, manifest: dict) -> None:
    """A tagger's bundle: what its model reads (sub-words, each word labelled at its first
    sub-token; or whole words with their UTF-8 bytes, a Cross-View Training tagger)."""
    export_file = exported / "export.json"
    export = json.loads(export_file.read_text()) if export_file.is_file() else {}
    rt = manifest["runtime"]
    if export.get("inputs") == "words":
        rt.update(inputs="words", max_word_bytes=int(export.get("max_word_bytes", 16)),
                  word_labels="one label per word")  # fmt: skip
    else:
        rt.update(inputs="subwords", word_labels="first sub-token of each word")


def _robustness_lines(rob) -> list[str]:
    if not isinstance(rob, dict):
        return [f"- Robustness: {rob}."] if rob else []
    lines = [f"- Robustness ({rob.get('protocol', '')}):"]
    for name in ("char", "word"):
        s = rob.get(name)
        if not s:
            continue
        if isinstance(s, str):  # why this attack was not run
            lines.append(f"  - {name} attack: {s}.")
            continue
        success = "n/a" if s["attack_success"] is None else f"{s['attack_success']:.1%}"
        lines.append(
            f"  - {name} attack, {s.get('attack', '')}: accuracy {s['accuracy']:.4f} -> "
            f"{s['accuracy_under_attack']:.4f} under attack; success rate {success}; "
            f"{s['avg_perturbed_words']} words perturbed, {s['avg_queries']} queries per example."
        )
    return lines


_EP = {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA",
       "CPUExecutionProvider": "CPU"}  # fmt: skip


def provider_names(providers: list[str] | None) -> str:
    """'TensorRT, CUDA, CPU': execution providers by their short names, best first."""
    return ", ".join(_EP.get(p, p) for p in providers or ["CPUExecutionProvider"])


def card_table(manifest: dict) -> list[str]:
    """The model card's table in the columns AI Hub users know: device, chipset, target runtime,
    inference time, peak memory, precision (each figure says measured or predicted, or that it
    was not measured)."""
    m, t, lat, rt = manifest["model"], manifest["target"], manifest["latency"], manifest["runtime"]
    eps = provider_names(rt.get("providers"))
    status = lat.get("status", "not measured")
    if lat.get("p90_ms") is not None:
        time_ = f"{lat['p90_ms']} ms (p90, {status})"
    elif lat.get("ttft_ms") is not None:
        time_ = f"{lat['ttft_ms']} ms to first token (p90, {status})"
    else:
        time_ = "not measured"
    memory = lat.get("peak_rss_mb") or lat.get("memory_hi_mb")
    memory = f"{memory:.0f} MB ({status})" if isinstance(memory, (int, float)) else "not measured"
    runtime = f"ONNX Runtime ({eps}), {m.get('format', '?')}"
    precision = m.get("precision_summary") or m.get("format", "?")
    return [
        "| device | chipset | target runtime | inference time | peak memory | precision |",
        "|---|---|---|---|---|---|",
        f"| {t['device']} | {t.get('chipset', '-')} | {runtime} | {time_} | {memory} | "
        f"{precision} |",
    ]


def card(manifest: dict) -> str:
    m, t, met, lat = manifest["model"], manifest["target"], manifest["metrics"], manifest["latency"]
    lines = [
        f"# {manifest['task']['name']} for {t['device']} ({t['budget']['name']} budget)",
        "",
        f"- Model: {m['architecture']} from `{m['source']}`, exported as {m['format']}.",
        f"- Labels: {', '.join(manifest['labels'])}."
        if manifest["task"]["kind"] != "language-modeling"
        else "- Generates text with its KV cache (`edgec run BUNDLE --prompt ...`; settings in "
        "generation_config.json).",
    ]
    lines += ["", *card_table(manifest), ""]
    if "dev" in met:
        dev = ", ".join(f"{k} {v:.4f}" for k, v in met["dev"].items() if isinstance(v, float))
        lines.append(f"- Dev: {dev} (reference {met.get('reference', '-')}).")
    q = met.get("quality")
    if q and q.get("dev") is not None:
        teacher = f"{q['teacher']:.4f}" if q.get("teacher") is not None else "-"
        trivial = f"{q['trivial']:.4f}" if q.get("trivial") is not None else "-"
        lines.append(
            f"- Dev {q['metric']} (the build's scoring of this ONNX file): {q['dev']:.4f}; "
            f"teacher {teacher}; trivial baseline {trivial}"
            + ("; accuracy floor NOT met" if q.get("floor_met") is False else "")
            + (
                "; NOT clearly above the trivial baseline"
                if q.get("above_trivial") is False
                else ""
            )
            + "."
        )
    if q and q.get("label_loyalty") is not None:
        lines.append(
            f"- Loyalty to the teacher on dev ({q.get('loyalty_unit', 'example')}): label "
            f"{q['label_loyalty']:.4f}, probability {q['prob_loyalty']:.4f}."
        )
    lines.extend(_robustness_lines(met.get("robustness")))
    if "label_loyalty" in met:
        lines.append(
            f"- Loyalty to the {met.get('reference')}: label {met['label_loyalty']:.4f}, "
            f"probability {met['prob_loyalty']:.4f}."
        )
    if met.get("parity"):
        p = met["parity"]
        lines.append(
            f"- ONNX vs PyTorch: max |logit diff| {p['max_abs_diff']:.3g}, label agreement "
            f"{p['label_agreement']:.4f} on {p['n']} dev examples."
        )
    if "ttft_ms" in lat:  # a language model: both phases of generation
        lines.append(
            f"- Generation ({lat['label']}): time to first token (p90) {lat['ttft_ms']} ms for a "
            f"{lat.get('prompt')}-token prompt; decode {lat.get('decode_tok_s')} tokens/s "
            f"(p90 step) up to {lat.get('context')} positions; peak memory up to "
            f"{lat.get('memory_hi_mb')} MB (predicted)."
        )
    elif lat["status"] == "measured":
        lines.append(
            f"- Latency ({lat['label']}): p50 {lat['p50_ms']} ms, p90 {lat['p90_ms']} ms, p99 "
            f"{lat['p99_ms']} ms at batch {lat['batch']}, sequence {lat['seq_len']}; peak RSS "
            f"{lat['peak_rss_mb']} MB."
        )
    else:
        lines.append(f"- Latency: {lat['label']}.")
    how = ('--prompt "..."' if manifest["task"]["kind"] == "language-modeling"
           else '--text "..."')  # fmt: skip
    lines += ["", f"Run it without torch: `edgec run NAME.edgec {how}`.", ""]
    return "\n".join(lines)
