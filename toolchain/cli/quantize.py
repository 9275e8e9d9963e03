"""`edgec quantize`: LSQ quantization trained under distillation (KDLSQ), or RTN, to a packed
integer checkpoint (2-8-bit weights in the MatMulNBits layout, 8-bit activation steps).

    edgec quantize runs/student --task sst2 --w-bits 4 --a-bits 8 -o runs/student-w4a8
    edgec quantize runs/student --task sst2 --avg-bits 3 --embeddings -o runs/student-mixed
    edgec quantize runs/student --task sst2 --size-mb 5 --method rtn -o runs/student-rtn

The float MODEL supervises its quantized copy unless --teacher names another model. DIR gets
config.json (with quantization_config), model.safetensors (codes, steps), the tokenizer,
metrics.json (dev accuracy of both, loyalty, bytes, compression) and stage.json. Re-running the
same command does nothing; an interrupted run resumes from its last evaluation checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.teacher import add_run_arguments, add_task_arguments, task_from_args
from toolchain.config import load_recipe
from toolchain.devices.budgets import resolve_budgets
from toolchain.errors import ConfigError
from toolchain.target import DeviceTarget

HELP = "LSQ/KDLSQ quantization: 2-8-bit weights, 8-bit activations, packed checkpoint"
IMPLEMENTED = True

_FIELDS = (
    "method",
    "weight_bits",
    "act_bits",
    "avg_bits",
    "size_budget_mb",
    "init",
    "steps",
    "batch_size",
    "learning_rate",
    "max_seq_len",
    "eval_every",
    "block_size",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="float model directory to quantize")
    parser.add_argument(
        "--teacher", metavar="DIR", help="model that supervises the training (default: MODEL)"
    )
    add_task_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="packed checkpoint")
    parser.add_argument("--recipe", metavar="R.yaml", help="take quantize settings from a recipe")
    q = parser.add_argument_group("quantization (defaults: the recipe's quantize section)")
    q.add_argument("--method", choices=("kdlsq", "rtn"))
    q.add_argument("--w-bits", type=int, dest="weight_bits", help="weight width, 2..8")
    q.add_argument(
        "--a-bits", type=_act_bits, dest="act_bits", help="activation width, 4..8 or 'float'"
    )
    budget = q.add_mutually_exclusive_group()
    budget.add_argument("--avg-bits", type=float, help="mixed precision: stored bits per weight")
    budget.add_argument("--size-mb", type=float, dest="size_budget_mb", help="mixed precision: MiB")
    budget.add_argument(
        "--size-from",
        metavar="DEVICE[:BUDGET]",
        help="mixed precision: the memory_mb of a device profile's budget (edgec devices)",
    )
    q.add_argument("--embeddings", action="store_true", help="also quantize the embedding tables")
    q.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="GLOB=BITS",
        help="width of the modules matching GLOB (repeatable; later ones win)",
    )
    q.add_argument("--exclude", action="append", metavar="GLOB", help="keep these modules float")
    q.add_argument("--init", choices=("mse", "lsq", "max"), help="initial step sizes")
    q.add_argument("--steps", type=int)
    q.add_argument("--batch-size", type=int)
    q.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    q.add_argument("--max-seq-len", type=int)
    q.add_argument("--eval-every", type=int)
    q.add_argument("--block-size", type=int, help="MatMulNBits block along K (16..256)")
    add_run_arguments(parser, q)


def _act_bits(text: str):
    if text.lower() in ("float", "none", "32", "16"):
        return "float"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 4..8 or 'float', got {text!r}") from None


def _overrides(items: list[str]) -> dict[str, int] | None:
    out = {}
    for item in items:
        glob, sep, bits = item.rpartition("=")
        if not sep or not glob or not bits.isdigit():
            raise ConfigError(
                f"--override expects GLOB=BITS (e.g. '*.output.dense=8'), got {item!r}"
            )
        out[glob] = int(bits)
    return out or None


def _size_from(spec: str) -> float:
    """``DEVICE[:BUDGET]`` -> that budget's memory_mb (the first budget when none is named)."""
    name, _, budget = spec.partition(":")
    profile = DeviceTarget.resolve(name).profile
    return float(resolve_budgets(profile, [budget] if budget else [])[0].memory_mb)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    spec = task_from_args(args)
    if args.size_from:
        args.size_budget_mb = _size_from(args.size_from)
    act_float = args.act_bits == "float"
    if act_float:
        args.act_bits = None
    overrides = {f"quantize.{k}": getattr(args, k) for k in _FIELDS}
    overrides["quantize.overrides"] = _overrides(args.override)
    overrides["quantize.exclude"] = tuple(args.exclude) if args.exclude else None
    overrides["quantize.quantize_embeddings"] = True if args.embeddings else None
    overrides["seed"] = args.seed
    if args.no_clean:
        overrides["data.clean"] = False
    recipe = load_recipe(args.recipe, overrides=overrides)
    cfg = replace(recipe.quantize, act_bits=None) if act_float else recipe.quantize
    out = Path(args.output).resolve()
    result = api.quantize(
        args.model,
        out,
        task=spec,
        cfg=cfg,
        data_dir=args.data_dir or recipe.data_dir,
        data_cfg=recipe.data,
        teacher=args.teacher,
        device=args.train_device,
        seed=recipe.seed,
        force=args.force,
    )
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    _print_summary(out, result.status, m, spec.main_metric)
    return 0


def size_vs_fp32(ratio: float) -> str:
    """'3.2x smaller than fp32', or 'larger' where packing grew the model (small models, whose
    steps and float parts outweigh what the codes save)."""
    if ratio >= 1:
        return f"{ratio:.1f}x smaller than fp32"
    return f"{1 / ratio:.2f}x larger than fp32"


def _print_summary(out: Path, status: str, m: dict, metric: str) -> None:
    state = "up to date (cached)" if status == "skipped" else "quantized"
    widths = sorted(set(m["widths"].values()))
    width = f"W{m['w_bits']}" if m["w_bits"] else f"mixed W{'/'.join(map(str, widths))}"
    act = f"A{m['a_bits']}" if m["a_bits"] else "A-float"
    print(
        f"{out}: {state} ({m['method']} {width}{act}, {len(m['widths'])} modules, "
        f"{m['bytes'] / 2**20:.2f} MiB, {size_vs_fp32(m['compression_vs_fp32'])})"
    )
    dev = m.get("dev")
    if dev:
        print(
            f"  dev {metric}: quantized {dev['quantized'][metric]:.4f}, float "
            f"{dev['float'][metric]:.4f}"
        )
        if "label_loyalty" in dev:
            print(f"  loyalty to the float model: label {dev['label_loyalty']:.4f}")
    if "training" in m:
        t = m["training"]
        print(f"  {t['steps']} steps (best {t['best_step']}), {t['wall_s']} s on {t['device']}")
