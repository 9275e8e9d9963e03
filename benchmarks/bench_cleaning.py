"""Training-data cleaning on real data: what each rule removes (SST-2, CoLA, RTE), with the
near-duplicate rule on datasketch's MinHash-LSH. Writes ``benchmarks/results/cleaning.json`` and
``cleaning.md``.

    python benchmarks/bench_cleaning.py --data-dir ../shared/data

Besides the default threshold (0.9), the near-duplicate rule is also run at 0.8 on SST-2, where
paraphrased phrases are frequent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_distill import environment  # noqa: E402

RUNS = (("sst2", 0.9), ("sst2", 0.8), ("cola", 0.9), ("rte", 0.9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    from toolchain.config import DataConfig
    from toolchain.data.clean import clean
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task

    rows = []
    for task, threshold in RUNS:
        train = load_split(get_task(task), "train", args.data_dir)
        start = time.perf_counter()
        _, report = clean(train, replace(DataConfig(), near_duplicate_threshold=threshold))
        rows.append({"task": task, "threshold": threshold, "examples": len(train),
                     "kept": report.kept, **report.as_dict()["removed"],
                     "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    env = environment()
    out = REPO / "benchmarks" / "results"
    data = {"environment": env, "command": " ".join(sys.argv), "rows": rows}
    (out / "cleaning.json").write_text(json.dumps(data, indent=2) + "\n")
    keys = ("empty", "length", "label_conflict", "exact_duplicate", "near_duplicate")
    lines = [
        "# Training-data cleaning (near duplicates: datasketch MinHash-LSH, 16 bands x 4 rows, "
        "verified by exact shingle Jaccard)",
        "",
        f"Command: `{data['command']}`; {env['cpu']}, {env['cores']} cores.",
        "",
        "| task | threshold | examples | " + " | ".join(keys) + " | kept | s |",
        "|---|---|---|" + "---|" * len(keys) + "---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['threshold']} | {r['examples']:,} | "
                     + " | ".join(f"{r.get(k, 0):,}" for k in keys)
                     + f" | {r['kept']:,} | {r['seconds']} |")  # fmt: skip
    (out / "cleaning.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
