"""Measure one target in a fresh process, so its peak memory is the target's own.

    python -m toolchain.profile.worker '{"target": ..., "runtime": ..., "shapes": [[1, 128]], ...}'

Prints one JSON object: the environment header, the resident memory before the model was loaded,
and per shape (smallest first) the protocol statistics and the process's peak RSS so far. A
decoder (a graph with ``past_key_values.*`` inputs) with ``"generation": {"prompt", "context",
"rounds"}`` in the request is also generated from: time to first token and decode tokens/s
(:func:`toolchain.export.generate.measure_generation`) and the peak RSS after it, KV cache
included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from toolchain.profile.protocol import current_rss_mb, environment, measure, peak_rss_mb
from toolchain.profile.runners import runner_for


def profile_shapes(request: dict) -> dict:
    baseline = current_rss_mb()
    largest = (max(b for b, _ in request["shapes"]), max(s for _, s in request["shapes"]))
    runner = runner_for(
        Path(request["target"]), request["runtime"], threads=request.get("threads"),
        max_shape=largest,
    )  # fmt: skip
    loaded = current_rss_mb()
    results = []
    for batch, seq in sorted(request["shapes"], key=lambda s: s[0] * s[1]):
        runner.prepare(batch, seq)
        stats = measure(
            runner.run,
            warmup=request["warmup"],
            iterations=request["iterations"],
            repeats=request["repeats"],
            batch=batch,
            sync=runner.sync,
        )
        row = {"batch": batch, "seq": seq, **stats, "peak_rss_mb": peak_rss_mb()}
        device_mb = runner.device_memory_mb()
        if device_mb is not None:  # GPU runtimes: the device memory in use after the runs
            row["device_memory_mb"] = device_mb
        results.append(row)
    generation = None
    if request.get("generation"):
        generation = _generation(runner, request["generation"])
    return {
        **({"generation": generation} if generation else {}),
        "environment": {
            **environment(runner.name, threads=request.get("threads")),
            "torch_loaded": "torch" in sys.modules,  # a bundle must run without it
        },
        "rss_before_load_mb": baseline,
        "rss_after_load_mb": loaded,
        "results": results,
    }


def _generation(runner, g: dict) -> dict:
    from toolchain.export.generate import measure_generation

    session = getattr(runner, "session", None)
    names = [i.name for i in session.get_inputs()] if session is not None else []
    if not any(n.startswith("past_key_values") for n in names):
        raise ValueError("a generation request needs a decoder with its KV cache (ONNX Runtime)")
    vocab = next(o for o in session.get_outputs() if o.name == "logits").shape[-1]
    stats = measure_generation(session, prompt=g["prompt"], context=g["context"],
                               vocab=vocab if isinstance(vocab, int) else 1000,
                               rounds=g.get("rounds", 3))  # fmt: skip
    return {**stats, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    try:
        print(json.dumps(profile_shapes(json.loads(sys.argv[1]))))
    except Exception as e:  # reported to the parent as one line, never a traceback
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
