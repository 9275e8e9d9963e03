"""The export stage: a model directory (float or packed) -> one checked ONNX model.

Formats: ``fp32``; ``fp16`` (weights and activations, float32 inputs and outputs kept);
``int8-dynamic`` (ONNX Runtime's dynamic INT8 of the float graph);
``int8-qdq`` (explicit Q/DQ with the learned LSQ scales; packed checkpoints);
``nbits`` (MatMulNBits from the packed codes; packed checkpoints); ``auto`` (every candidate that
applies, each checked for parity and timed on this host at batch 1, sequence 128; the fastest
that passes wins, and the float export is always a candidate, so the result is never slower than
float). Every export is checked against the PyTorch model it came from on real dev inputs; a
failure raises :class:`~toolchain.export.onnx.ExportError` and nothing is written.

Example::

    report = export_model("runs/student-w4a8", out_dir, fmt="auto", spec=get_task("sst2"),
                          data_dir=data, cfg=ExportConfig())
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from toolchain.config import ExportConfig
from toolchain.data.readers import load_split
from toolchain.export import FORMATS
from toolchain.export.onnx import ExportError, check_parity, export_float, load_for_export, session
from toolchain.models.teacher import teacher_inputs
from toolchain.pipeline import Stage

log = logging.getLogger(__name__)

# max |logit difference| allowed against the PyTorch reference of each format
TOLERANCE = {
    "fp32": 1e-3,
    "fp16": 0.05,
    "nbits": 1e-3,  # weights exact; accuracy_level 0
    "nbits-acc4": 0.3,  # activations quantized per block inside the kernel
    "int8-qdq": 0.3,  # vs the fake-quant model; ORT's int8 kernels round differently
    "int8-dynamic": 1.0,
}
LATENCY_SEQ = 128


def candidates(fmt: str, packed: bool, act_bits: int | None, *, decoder: bool = False) -> list[str]:
    """The formats ``fmt`` stands for, given what the model directory holds."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if decoder and fmt == "fp16":
        raise ExportError("fp16 export of decoders is not supported yet: use fp32, nbits or auto")
    needs_packed = {"int8-qdq", "nbits"}
    if fmt in needs_packed and not packed:
        raise ExportError(
            f"--format {fmt} needs a packed checkpoint from `edgec quantize` (it reuses the "
            "learned codes and scales); this is a float model: use fp32, int8-dynamic or auto"
        )
    if fmt != "auto":
        return [fmt]
    out = ["fp32", "int8-dynamic"] if decoder else ["fp32", "fp16", "int8-dynamic"]
    if packed:
        out.append("nbits")
        if act_bits in (8, None):
            out.append("int8-qdq")
    return out


def _build(fmt: str, float_onnx: Path, src: Path, dst: Path, cfg: ExportConfig) -> tuple[Path, str]:
    """(path, tolerance key) of one candidate."""
    from toolchain.export import lowbit

    if fmt == "fp32":
        shutil.copyfile(float_onnx, dst)
        return dst, "fp32"
    if fmt == "fp16":
        return lowbit.to_fp16(float_onnx, dst), "fp16"
    if fmt == "int8-dynamic":
        return lowbit.to_dynamic_int8(float_onnx, dst), "int8-dynamic"
    if fmt == "int8-qdq":
        return lowbit.to_qdq_int8(float_onnx, dst, src), "int8-qdq"
    level = cfg.accuracy_level
    path = lowbit.to_matmul_nbits(float_onnx, dst, src, accuracy_level=level)
    return path, "nbits-acc4" if level else "nbits"


def latency_ms(
    path: Path, batch: dict, *, runs: int = 20, warmup: int = 3, timer: Callable = time.perf_counter
) -> float:
    """Median wall time (ms) of one ONNX Runtime call on ``batch``, after a warm-up."""
    from toolchain.export.onnx import onnx_logits

    sess = session(path)
    for _ in range(warmup):
        onnx_logits(sess, batch)
    times = []
    for _ in range(runs):
        start = timer()
        onnx_logits(sess, batch)
        times.append((timer() - start) * 1000)
    return statistics.median(times)


def _parity_batches(adapter, spec, data_dir, cfg: ExportConfig, seed: int) -> list[dict]:
    from toolchain.data.encode import batches, encode
    from toolchain.evaluate.evaluate import pad_id_of

    split = "dev" if "dev" in spec.files else "validation"
    examples = load_split(spec, split, data_dir)
    sample = random.Random(seed).sample(examples, min(cfg.parity_samples, len(examples)))
    enc = encode(spec, sample, adapter.tokenizer, LATENCY_SEQ)
    return [b for _, b in batches(enc, 32, pad_id=pad_id_of(adapter.tokenizer))]


def _latency_batch(adapter) -> dict:
    words = " ".join(["edge"] * (LATENCY_SEQ * 2))
    return dict(
        adapter.tokenizer([words], truncation=True, max_length=LATENCY_SEQ, return_tensors="pt")
    )


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    fmt: str,
    spec,
    data_dir=None,
    cfg: ExportConfig | None = None,
    seed: int = 0,
    measure: Callable[[Path, dict], float] | None = None,
    tensorrt: bool = False,
    plugin_libs: tuple[str, ...] = (),
) -> dict:
    """Export ``model_dir`` into ``out_dir`` (``model.onnx``, tokenizer, ``export.json``).

    Args:
        measure: ``(onnx path, batch) -> ms`` used by ``auto`` (default: :func:`latency_ms`).
        tensorrt: also build ``engine.plan`` where tensorrt imports; elsewhere the report says
            plainly that it was not built and why.
        plugin_libs: TensorRT plugin libraries loaded before the engine build (edgec's
            ``libedgec_trt_plugin.so`` for the MatMulNBits nodes of an nbits export).

    Returns:
        The report: chosen format, file size, parity figures, and for ``auto`` every
        candidate's parity and latency (or why it was rejected).
    """
    import tempfile

    cfg = cfg or ExportConfig()
    src, out = Path(model_dir), Path(out_dir)
    twin, qc = load_for_export(src)
    todo = candidates(fmt, qc is not None, (qc or {}).get("act_bits"), decoder=twin.is_decoder)
    parity = _checker(twin, spec, data_dir, cfg, seed)
    batch = _latency_batch(twin) if fmt == "auto" else None
    if measure is None:
        measure = _decoder_latency if twin.is_decoder else latency_ms
    report: dict = {"source": str(src.resolve()), "requested": fmt, "candidates": {}}
    references = {}
    with tempfile.TemporaryDirectory(prefix="edgec-export-") as tmp:
        float_onnx = _float_export(twin, Path(tmp), cfg)
        for f in todo:
            path, tol_key = _build(f, float_onnx, src, Path(tmp) / f"{f}.onnx", cfg)
            if f == "int8-qdq" and "q" not in references:
                from toolchain.quantize.convert import load_quantized

                references["q"] = load_quantized(src)
            reference = references["q"] if f == "int8-qdq" else twin
            tol = TOLERANCE[tol_key] if cfg.atol is None else cfg.atol
            entry: dict = {"bytes": path.stat().st_size, "tolerance": tol}
            try:
                entry["parity"] = parity(path, reference, tol)
            except ExportError as e:
                if fmt != "auto":
                    raise
                entry["rejected"] = str(e)
            if fmt == "auto" and "parity" in entry:
                entry["latency_ms_b1_s128"] = round(measure(path, batch), 3)
            report["candidates"][f] = entry
            log.info("%s: %s", f, entry)
        chosen = _choose(report["candidates"], fmt)
        report["format"] = chosen
        # what ships: the parameters of the model exported, and the kernel's activation mode
        report["params"] = sum(
            p.numel() for p in {id(p): p for p in twin.model.parameters()}.values()
        )
        if chosen == "nbits":
            report["accuracy_level"] = cfg.accuracy_level
        report.update({k: v for k, v in report["candidates"][chosen].items()})
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / f"{chosen}.onnx", out / "model.onnx")
    twin.tokenizer.save_pretrained(str(out))
    write_hf_config(src, out)
    if tensorrt:
        report["tensorrt"] = _tensorrt(out, plugin_libs)
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def write_hf_config(src: Path, out: Path) -> None:
    """``config.json`` of the float family beside ``model.onnx`` (labels included), so that the
    folder loads with optimum's ``ORTModelFor...`` classes and transformers' pipelines: a packed
    checkpoint's ``quantization_config`` and remote-code map are dropped, since the ONNX model
    already holds what was quantized."""
    from toolchain.models.loading import float_config_dict

    config = float_config_dict(json.loads((src / "config.json").read_text(encoding="utf-8")))
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _float_export(twin, tmp: Path, cfg: ExportConfig) -> Path:
    if not twin.is_decoder:
        return export_float(twin, tmp / "float.onnx", opset=cfg.opset)
    from toolchain.export.decoder import export_decoder

    path = export_decoder(twin, tmp / "decoder", opset=cfg.opset)
    return path.rename(tmp / "float.onnx")


def _checker(twin, spec, data_dir, cfg: ExportConfig, seed: int) -> Callable:
    """``parity(path, reference, tolerance) -> report`` on real dev inputs of ``spec``."""
    if twin.is_decoder:
        from toolchain.export.decoder import check_decoder_parity

        texts = _parity_texts(spec, data_dir, cfg, seed)
        return lambda path, ref, tol: check_decoder_parity(
            path, ref, texts, tolerance=tol, min_agreement=cfg.min_label_agreement
        )
    batches = _parity_batches(twin, spec, data_dir, cfg, seed)
    return lambda path, ref, tol: check_parity(
        path, ref, batches, tolerance=tol, min_label_agreement=cfg.min_label_agreement
    )


def _parity_texts(spec, data_dir, cfg: ExportConfig, seed: int) -> list[str]:
    split = next(s for s in ("dev", "validation", "test", "train") if s in spec.files)
    lines = [t for t in load_split(spec, split, data_dir) if isinstance(t, str) and t.strip()]
    if not lines:
        raise ExportError(f"{spec.name}: no text in its {split} split for the parity check")
    sample = random.Random(seed).sample(lines, min(len(lines), max(2, cfg.parity_samples // 32)))
    return sample


def _decoder_latency(path: Path, batch: dict) -> float:
    """Median ms of a prefill (empty past) at ``batch``'s shape."""
    from toolchain.export.decoder import _feeds

    sess = session(path)
    feeds = _feeds(sess, batch["input_ids"].numpy(), batch["attention_mask"].numpy(), {}, 0)
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _tensorrt(out: Path, plugin_libs: tuple[str, ...] = ()) -> dict:
    """Build ``engine.plan``; an export with ONNX Runtime's low-bit ops first gets its
    TensorRT-bound copy ``model.trt.onnx`` (written here even where TensorRT is absent, for a
    build on the device)."""
    from toolchain.export.tensorrt import availability, build_engine, for_tensorrt

    src, extra = out / "model.onnx", {}
    notes = for_tensorrt(src, out / "model.trt.onnx")
    if notes is not None:
        src, extra = out / "model.trt.onnx", {"onnx": "model.trt.onnx", "notes": notes}
        log.info("TensorRT-bound copy model.trt.onnx: %s", "; ".join(notes))
    ok, why = availability()
    if not ok:
        log.warning("engine.plan not built: %s", why)
        return {"built": False, "why": why, **extra}
    if notes is not None and any("MatMulNBits" in n for n in notes) and not plugin_libs:
        raise ExportError(
            "the export has MatMulNBits nodes, which TensorRT runs only through edgec's plugin: "
            "build libedgec_trt_plugin.so (kernels/tensorrt/README.md) and pass --plugin-lib"
        )
    engine = build_engine(src, out / "engine.plan", plugin_libs=plugin_libs)
    return {"built": True, "plugin_libs": list(plugin_libs), **extra, **engine}


def _choose(entries: dict, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    passed = {f: e for f, e in entries.items() if "latency_ms_b1_s128" in e}
    if "fp32" not in passed:
        raise ExportError(f"the float export failed its parity check: {entries['fp32']}")
    best = min(passed, key=lambda f: passed[f]["latency_ms_b1_s128"])
    log.info(
        "auto: %s (%.2f ms) of %s",
        best,
        passed[best]["latency_ms_b1_s128"],
        {f: e["latency_ms_b1_s128"] for f, e in passed.items()},
    )
    return best


def export_stage(
    *,
    model_dir: str,
    fmt: str,
    spec,
    data_dir=None,
    cfg: ExportConfig | None = None,
    name: str = "export",
    tensorrt: bool = False,
    plugin_libs: tuple[str, ...] = (),
):
    """A pipeline :class:`~toolchain.pipeline.Stage` around :func:`export_model`."""
    for lib in plugin_libs:
        if not Path(lib).is_file():
            raise ExportError(
                f"TensorRT plugin library {lib}: no such file (build it with the command in "
                "kernels/tensorrt/README.md)"
            )

    cfg = cfg or ExportConfig()
    config = {
        "model": model_dir,
        "format": fmt,
        "tensorrt": tensorrt,
        "task": spec.name,
        "task_spec": spec,
        "export": cfg,
    }
    if plugin_libs:  # absent otherwise, so earlier exports stay current
        config["plugin_libs"] = [str(Path(lib).resolve()) for lib in plugin_libs]

    def run(ctx) -> dict:
        return export_model(
            model_dir,
            ctx.out_dir,
            fmt=fmt,
            spec=spec,
            data_dir=data_dir,
            cfg=cfg,
            seed=ctx.seed,
            tensorrt=tensorrt,
            plugin_libs=tuple(plugin_libs),
        )

    return Stage(name, run, config=config, inputs=teacher_inputs(model_dir, spec, data_dir))
