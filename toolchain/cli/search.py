"""`edgec search`: train a NAS-BERT supernet from the teacher and search one subnet per budget
of a device.

    edgec search --teacher runs/teacher --task sst2 --device host -o runs/search
    edgec search --teacher runs/teacher --task sst2 --device jetson-orin-nano-8gb \\
        --budget balanced --predictors DIR -o runs/search-orin

DIR gets supernet/ (the trained supernet), subnets/<budget>/ (each budget's most accurate subnet
with inherited weights, a plain Hugging Face model that `edgec distill`, `edgec quantize` and
`edgec export` take unchanged; a link into subnets/<key>/, where every budget's finalists are),
search.json (per budget: subnet, accuracy with inherited weights, the finalists that fit it,
predicted and - where the device is this host - measured latency and memory) and
pareto.json/.png. Latency and memory are predicted by the device's fitted predictor (`edgec
profile --calibrate`, stored in --predictors) or else its calibrated model
(:mod:`toolchain.devices.latency`), with an interval whose upper end decides what fits.
`edgec build` distils the finalists and chooses after distillation. Re-running the same command
does nothing; an interrupted run resumes from its last supernet checkpoint or search generation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.options import add_agent_arguments
from toolchain.cli.teacher import add_task_arguments, task_from_args
from toolchain.config import load_recipe

HELP = "train a NAS-BERT supernet and search one subnet per device budget"
IMPLEMENTED = True

_FIELDS = (
    "supernet_steps",
    "sandwich",
    "learning_rate",
    "batch_size",
    "max_seq_len",
    "hidden_weight",
    "prune_after",
    "prune_margin",
    "population",
    "generations",
    "mutation_rate",
    "crossover_rate",
    "eval_samples",
    "measure_top_k",
    "accuracy_tolerance",
    "shrink_evaluations",
    "precision",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="DIR", help="fine-tuned teacher")
    add_task_arguments(parser)
    parser.add_argument("--device", required=True, metavar="D", help="device profile (budgets)")
    parser.add_argument(
        "--budget",
        action="append",
        metavar="NAME",
        help="search for this budget of the device only (repeatable; default: every budget)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--recipe", metavar="R.yaml", help="take search settings from a recipe")
    parser.add_argument(
        "--agnostic",
        metavar="DIR",
        help="a task-agnostic supernet (`edgec supernet -o DIR`): adapt it to this task in "
        "--proxy-steps instead of training a supernet from --teacher",
    )
    parser.add_argument(
        "--proxy-steps", type=int, help="with --agnostic: steps of task fine-tuning (300)"
    )
    add_agent_arguments(
        parser,
        ca_cert=False,
        target_help="the device's `edgec agent`: the top candidates are measured there "
        "(repeatable: a pool, measuring them at once)",
    )
    parser.add_argument(
        "--predictors",
        metavar="DIR",
        help="fitted predictors, DEVICE.json each (default: $EDGEC_HOME/predictors or "
        "~/.cache/edgec/predictors)",
    )
    s = parser.add_argument_group("search (defaults: the recipe's search section)")
    s.add_argument("--steps", type=int, dest="supernet_steps", help="supernet training steps")
    s.add_argument("--sandwich", type=int, help="subnets trained per step")
    s.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--max-seq-len", type=int)
    s.add_argument("--hidden-weight", type=float, help="weight of the block-wise hidden KD")
    s.add_argument("--prune-after", type=float, help="share of steps before pruning (0: off)")
    s.add_argument(
        "--prune-margin", type=float, help="accuracy lead that makes a choice dominated (0.01)"
    )
    s.add_argument("--population", type=int)
    s.add_argument("--generations", type=int)
    s.add_argument("--mutation-rate", type=float)
    s.add_argument("--crossover-rate", type=float)
    s.add_argument("--eval-samples", type=int, help="validation examples scoring each subnet")
    s.add_argument("--measure-top-k", type=int, help="candidates measured for real per budget")
    s.add_argument(
        "--accuracy-tolerance",
        type=float,
        help="a subnet within this much of the best accuracy that fits counts as good as it: "
        "the fastest such wins (default 0.01; 0: the most accurate)",
    )
    s.add_argument(
        "--shrink-evaluations",
        type=int,
        help="subnets scored descending to cheaper ones within the tolerance (default 64)",
    )
    s.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "int4", "int2"),
        help="precision the latency predictions assume (that of the quantize stage)",
    )
    s.add_argument("--seed", type=int)
    s.add_argument("--no-clean", action="store_true", help="skip training-data cleaning")
    parser.add_argument(
        "--train-device",
        help="torch device for training: cpu, cuda or cuda:N (default: cuda when available)",
    )
    parser.add_argument("--force", action="store_true", help="re-run even if the output is current")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    spec = task_from_args(args)
    overrides = {f"search.{k}": getattr(args, k) for k in _FIELDS}
    overrides["seed"] = args.seed
    overrides["search.proxy_steps"] = args.proxy_steps
    if args.no_clean:
        overrides["data.clean"] = False
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.output).resolve()
    device = api.target(
        args.device,
        agent_url=args.target or recipe.profile.targets,
        token_file=args.token_file or recipe.profile.token_file,
        predictors=args.predictors or api.DEFAULT,
        overrides=recipe.profile,
        ca_cert=recipe.profile.ca_cert,
        pool=args.pool or recipe.profile.pool,
    )
    result = api.search(
        args.teacher,
        out,
        task=spec,
        device=device,
        budgets=tuple(args.budget or recipe.budgets),
        cfg=recipe.search,
        data_dir=args.data_dir or recipe.data_dir,
        data_cfg=recipe.data,
        train_device=args.train_device,
        agnostic=args.agnostic,
        seed=recipe.seed,
        force=args.force,
    )
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    state = "up to date (cached)" if result.cached else "searched"
    sn = m["supernet"]
    print(f"{out}: {state} on {m['device']} ({m['space_size']:,} subnets: {m['space']})")
    print(f"  supernet: {sn['steps']} steps in {sn['train_s']} s")
    for name, r in m["budgets"].items():
        if "error" in r:
            c = r["closest"]
            print(
                f"  {name}: NOT MET: {r['error']} (closest: {c['subnet']}, predicted "
                f"{c['predicted']['latency_ms']:.2f} ms)"
            )
            continue
        b, p, meas = r["budget"], r["predicted"], r.get("measured")
        line = (
            f"  {name} (p{b['percentile']:g} <= {b['latency_ms']:g} ms, <= {b['memory_mb']:g} MB): "
            f"{r['subnet']} {r['params']:,} params, {spec.main_metric} "
            f"{r['accuracy_inherited']:.4f} (inherited), predicted {p['latency_ms']:.2f} ms"
        )
        if meas:
            line += f", measured p50 {meas['p50_ms']:.2f} ms ({meas['verdict']}, {meas['label']})"
        else:
            line += f" [{r['measured_note']}]"
        print(line + f" -> {r['model']}")
    return 0
