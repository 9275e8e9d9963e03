"""Build presets: ``quick`` (the default: a first look, about 30 minutes on 2 CPU cores),
``standard`` (about 90 minutes on 2 CPU cores: the teacher fine-tuned on the whole training split,
longer distillation; what a bundle worth shipping needs) and ``full`` (paper-scale settings, meant
for a GPU). A preset only fills what the recipe file does not set; command-line options and API
arguments win over both. :data:`TIME_BUDGET` is what each preset is sized for, printed in the
report beside the build's measured wall time.

Example::

    overrides = preset_overrides("quick", "recipe.yaml")   # dotted keys -> values
    recipe = load_recipe("recipe.yaml", overrides=overrides)
"""

from __future__ import annotations

from toolchain.errors import ConfigError
from toolchain.schema import UNSET, read_yaml_text, safe_load

# Why the quick preset's numbers (SST-2, MiniLM-L6, 2 CPU cores; see benchmarks/results/build.md):
# - the supernet trains briefly, and its inherited-weight scores under-rate small subnets: a
#   3-layer subnet scored 4.5 points under the largest and, distilled 1,000 steps, finished 0.6
#   points under the teacher; so a subnet within 6 points (inherited) of the best counts as good,
#   and the final distillation gets the steps (1,000 steps: 0.829; 200 steps: 0.795);
# - KDLSQ against the float student (see the module docstring) needs few steps at W8A8;
# - W8A8: the device's format (INT8 Q/DQ) stores narrower weights in INT8 anyway, so 4-bit codes
#   would cost accuracy and save neither bytes nor time there.
# - choice per budget: 2 finalists (the most accurate that fits, the fastest within 6 points of
#   it, inherited weights) distilled each, the more accurate after distillation chosen; a
#   teacher not clearly above the trivial baseline trains on for up to 10 more minutes.
# The standard preset: the teacher as benchmarks/bench_teacher.py fine-tunes it (0.8956 SST-2 dev,
# 22-27 min on 2 cores), a longer-trained supernet, 3 finalists, 2,500 distillation steps (13 min
# each on 2 cores). Both presets distil at most 3 distinct finalists per build: uncapped, the
# standard build's three budgets pooled 7 (SST-2, this host), over two hours in all.
TIME_BUDGET: dict[str, str] = {
    "quick": "about 30 min on 2 CPU cores",
    "standard": "about 90 min on 2 CPU cores",
    "full": "GPU-scale (hours on a GPU)",
}

PRESETS: dict[str, dict] = {
    "quick": {
        "teacher_finetune.max_train_samples": 8000,
        "teacher_finetune.epochs": 1.0,
        "teacher_finetune.max_seq_len": 64,
        "teacher_finetune.eval_every": 100,
        "teacher_finetune.time_budget_s": 600,
        "search.supernet_steps": 100,
        # --supernet agnostic: an agnostic step costs ~1.3 s here (2.9x a task step,
        # benchmarks/results/agnostic.md): 300 steps ~7 min, paid once; 30 steps per task
        "search.agnostic_steps": 300,
        "search.proxy_steps": 30,
        "search.sandwich": 3,
        "search.learning_rate": 2e-4,
        "search.max_seq_len": 64,
        "search.population": 12,
        "search.generations": 3,
        "search.eval_samples": 256,
        "search.measure_top_k": 2,
        "search.accuracy_tolerance": 0.06,
        "search.finalists": 2,
        "quality.max_distilled": 3,
        "distill.steps": 800,
        "distill.learning_rate": 2e-4,
        "distill.max_seq_len": 64,
        "distill.eval_every": 250,
        "distill.eval_samples": 500,
        "quantize.weight_bits": 8,
        "quantize.steps": 50,
        "quantize.max_seq_len": 64,
        "quantize.eval_every": 50,
        "quantize.eval_samples": 500,
        "export.parity_samples": 128,
        # CVT (tagging, when asked for): 1,200 steps, 8-10 min on 2 cores with the unlabelled
        # batches; CoNLL-2003 validation span F1 0.857 there (benchmarks/results/tagging.md)
        "cvt.steps": 1200,
        "cvt.eval_every": 300,
        "cvt.eval_samples": 1000,
        # both attacks on 50 dev examples: about 1.5 min per bundle on 2 cores (SST-2, MiniLM)
        "robustness.samples": 50,
    },
    "standard": {  # the teacher: TeacherConfig's defaults (2 epochs, seq 128, batch 32)
        "teacher_finetune.time_budget_s": 1200,
        "search.supernet_steps": 400,
        "search.agnostic_steps": 1000,
        "search.proxy_steps": 100,
        "search.sandwich": 3,
        "search.learning_rate": 2e-4,
        "search.max_seq_len": 64,
        "search.population": 16,
        "search.generations": 4,
        "search.eval_samples": 500,
        "search.measure_top_k": 3,
        "search.accuracy_tolerance": 0.04,
        "search.finalists": 3,
        "quality.max_distilled": 3,
        "distill.steps": 2500,
        "distill.learning_rate": 2e-4,
        "distill.max_seq_len": 64,
        "distill.eval_every": 500,
        "distill.eval_samples": 1000,
        "quantize.weight_bits": 8,
        "quantize.steps": 100,
        "quantize.max_seq_len": 64,
        "quantize.eval_every": 100,
        "quantize.eval_samples": 1000,
        "export.parity_samples": 256,
        "cvt.steps": 3000,
        "cvt.eval_every": 500,
    },
    "full": {
        "teacher_finetune.epochs": 3.0,
        "search.supernet_steps": 20000,
        "search.agnostic_steps": 20000,
        "search.proxy_steps": 2000,
        "search.population": 64,
        "search.generations": 20,
        "search.eval_samples": 2000,
        "search.measure_top_k": 5,
        "distill.steps": 20000,
        "quantize.weight_bits": 8,
        "quantize.steps": 5000,
        "cvt.steps": 20000,
        "robustness.samples": 500,
    },
}


# Decoder LMs (language-modelling tasks): on top of the preset. SmolLM2-135M's students take
# about 3-5 s per KD step of 8 x 128 tokens on 2 cores (teacher forward included), so distillation
# is counted in hundreds of steps; weights 4-bit weight-only (MatMulNBits: the decoder is
# bandwidth-bound when decoding), activations float; the LM head is quantized too (students get
# an untied head: toolchain.plan_decoder). MatMulNBits at accuracy level 0 (float compute): level
# 4 quantizes the activations to int8 inside the op, and SmolLM2's activation outliers then broke
# parity (6 layers, W4 round-to-nearest: max |logit diff| 2.47, next-token agreement 0.949;
# level 0: 1.6e-4 and 1.0, at 275 decode tok/s here).
LM_PRESETS: dict[str, dict] = {
    "quick": {
        "search.finalists": 1,
        "quality.max_distilled": 2,
        "distill.init": "truncation",
        "distill.mapping": "uniform",
        "distill.hidden_loss": "cosine",
        "distill.steps": 120,
        "distill.batch_size": 8,
        "distill.learning_rate": 2e-4,
        "distill.max_seq_len": 128,
        "distill.eval_every": 40,
        "distill.eval_samples": 48,
        "distill.importance_samples": 64,
        "quantize.weight_bits": 4,
        "quantize.act_bits": UNSET,
        "quantize.exclude": ["*score*"],
        "quantize.steps": 30,
        "quantize.batch_size": 8,
        "quantize.max_seq_len": 128,
        "quantize.eval_every": 30,
        "quantize.eval_samples": 32,
        "quantize.calibration_batches": 4,
        "quantize.attention_weight": 0.0,
        "export.parity_samples": 64,
        "export.accuracy_level": 0,
    },
    "standard": {
        "search.finalists": 2,
        "quality.max_distilled": 3,
        "distill.mapping": "uniform",
        "distill.hidden_loss": "cosine",
        "distill.steps": 600,
        "distill.batch_size": 8,
        "distill.learning_rate": 2e-4,
        "distill.max_seq_len": 128,
        "distill.eval_every": 100,
        "distill.eval_samples": 96,
        "distill.importance_samples": 128,
        "quantize.weight_bits": 4,
        "quantize.act_bits": UNSET,
        "quantize.exclude": ["*score*"],
        "quantize.steps": 100,
        "quantize.batch_size": 8,
        "quantize.max_seq_len": 128,
        "quantize.eval_every": 50,
        "quantize.eval_samples": 64,
        "quantize.attention_weight": 0.0,
        "export.parity_samples": 64,
        "export.accuracy_level": 0,
    },
    "full": {
        "quantize.weight_bits": 4,
        "quantize.act_bits": UNSET,
        "quantize.exclude": ["*score*"],
        "quantize.attention_weight": 0.0,
        "export.accuracy_level": 0,
    },
}


def preset_overrides(preset: str, recipe_file: str | None, *, kind: str | None = None) -> dict:
    """The preset's settings for the keys the recipe file does not set itself (``kind``
    ``language-modeling``: with the decoder settings of :data:`LM_PRESETS` on top)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    given: set[str] = set()
    if recipe_file:

        def walk(node, prefix=""):
            for k, v in (node or {}).items():
                key = f"{prefix}{k}"
                given.add(key)
                if isinstance(v, dict):
                    walk(v, key + ".")

        try:
            walk(safe_load(read_yaml_text(recipe_file), file=str(recipe_file)) or {})
        except (ConfigError, AttributeError):
            pass  # load_recipe reports the file's problem with its line and key
    settings = dict(PRESETS[preset])
    if kind == "language-modeling":
        settings.update(LM_PRESETS[preset])
    chosen = {k: v for k, v in settings.items() if k not in given}
    return {**chosen, "preset": preset}


__all__ = ["LM_PRESETS", "PRESETS", "TIME_BUDGET", "preset_overrides"]
