"""Stage configs (one frozen dataclass per stage) and the recipe that describes a whole build.

A recipe is one YAML file::

    teacher: default              # 'default' = the installed all-MiniLM-L6-v2, or a local HF dir
    task: sst2
    device: jetson                # a profile name or alias (see `edgec devices`)
    budgets: [tight, balanced]    # names from the device profile, or {name, latency_ms, memory_mb}
    distill: {mapping: rail, temperature: 2.0}
    quantize: {weight_bits: 4}

Every key is checked: an unknown key, a wrong type or an out-of-range value raises
:class:`~toolchain.errors.ConfigError` naming the file, line, key path and what was expected.

Example::

    >>> recipe = load_recipe("recipe.yaml", overrides={"device": "raspberry-pi-5"})
    >>> recipe.quantize.weight_bits
    4
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import yaml

from toolchain import schema
from toolchain.schema import check_range, require

DATA_DIR_ENV = "EDGEC_DATA_DIR"
RECIPE_VERSION = 1
MAX_ITERATIONS = 1_000_000  # timed iterations (or warm-up runs) of one latency measurement


@dataclass(frozen=True)
class StageConfig:
    """Base of every stage config; ``version`` is bumped when a field changes meaning, so that
    run-directory records made under the old meaning are not reused."""

    version: int = 1


@dataclass(frozen=True)
class BudgetSpec:
    """A latency/memory budget: p``percentile`` latency at (``batch``, ``seq_len``), peak memory.

    A generation budget (decoder LMs) also sets ``decode_tok_s``: then ``latency_ms`` is the
    time to first token for a prompt of ``seq_len`` tokens, ``decode_tok_s`` the decode rate
    that the percentile of steps must reach with ``context_len`` positions in the KV cache, and
    ``memory_mb`` the peak with that cache.
    """

    name: str
    latency_ms: float
    memory_mb: float
    percentile: float = 90.0
    batch: int = 1
    seq_len: int = 128
    description: str = ""
    decode_tok_s: float | None = None
    context_len: int | None = None

    @property
    def generation(self) -> bool:
        """Whether this is a generation budget (see the class docstring)."""
        return self.decode_tok_s is not None

    def __post_init__(self):
        if self.decode_tok_s is not None:
            check_range(self, "decode_tok_s", lo=1e-3)
            require(
                self.context_len is not None and self.context_len >= self.seq_len,
                "context_len",
                f"a generation budget needs context_len >= seq_len ({self.seq_len}), got "
                f"{self.context_len}",
            )
        require(
            bool(re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.name)),
            "name",
            f"budget names are lower-case words (a-z, 0-9, '-', '_'), got {self.name!r}",
        )
        check_range(self, "latency_ms", lo=1e-3)
        check_range(self, "memory_mb", lo=1)
        check_range(self, "percentile", lo=50, hi=100)
        check_range(self, "batch", lo=1, hi=65536)
        check_range(self, "seq_len", lo=1, hi=8192)


@dataclass(frozen=True)
class DataConfig(StageConfig):
    """Data cleaning before training (each rule can be switched off to measure its effect)."""

    clean: bool = True
    dedup_exact: bool = True
    dedup_near: bool = True
    near_duplicate_threshold: float = 0.9  # Jaccard similarity of word shingles
    drop_label_conflicts: bool = True
    min_chars: int = 1
    max_chars: int = 2000
    # the semi-supervised setting: keep the labels of this share of the (cleaned) training
    # examples, chosen at random with a fixed seed; the rest is unlabelled text (for CVT)
    labelled_fraction: float = 1.0

    def __post_init__(self):
        check_range(self, "near_duplicate_threshold", lo=0.5, hi=1.0)
        check_range(self, "labelled_fraction", lo=0, hi=1)
        require(0 < self.labelled_fraction <= 1, "labelled_fraction",
                f"must be in (0, 1], got {self.labelled_fraction}")  # fmt: skip
        check_range(self, "min_chars", lo=0)
        check_range(self, "max_chars", lo=1)
        require(
            self.max_chars >= self.min_chars,
            "max_chars",
            f"must be >= min_chars ({self.min_chars}), got {self.max_chars}",
        )


@dataclass(frozen=True)
class TeacherConfig(StageConfig):
    """Fine-tuning of the teacher on the task.

    The defaults are what benchmarks/bench_teacher.py ran for all-MiniLM-L6-v2 on SST-2 (0.896 GLUE
    dev accuracy); a BERT-base-sized teacher usually wants learning_rate 2e-5..5e-5.
    """

    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 32
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_seq_len: int = 128
    max_train_samples: int | None = None
    max_steps: int | None = None
    eval_every: int = 400
    early_stopping_patience: int = 3
    # the quality gate: a teacher not clearly above the trivial baseline (majority class, or the
    # mean for regression) on the validation split trains on, round after round of ``epochs``,
    # while validation improves and the time budget lasts; then the build stops with a message.
    # false: warn and go on (the report still shows the teacher beside the trivial baseline)
    require_above_trivial: bool = True
    gate_confidence: float = 0.95  # one-sided paired-bootstrap confidence that the gain is > 0
    time_budget_s: float | None = None  # the teacher's wall time for extra rounds; None: none

    def __post_init__(self):
        check_range(self, "epochs", lo=0.01, hi=1000)
        check_range(self, "gate_confidence", lo=0.5, hi=0.999)
        check_range(self, "time_budget_s", lo=0.0)
        check_range(self, "learning_rate", lo=1e-8, hi=1.0)
        check_range(self, "batch_size", lo=1, hi=65536)
        check_range(self, "warmup_ratio", lo=0.0, hi=1.0)
        check_range(self, "weight_decay", lo=0.0, hi=1.0)
        check_range(self, "max_seq_len", lo=8, hi=8192)
        check_range(self, "max_train_samples", lo=1)
        check_range(self, "max_steps", lo=1)
        check_range(self, "eval_every", lo=1)
        check_range(self, "early_stopping_patience", lo=0)


@dataclass(frozen=True)
class GAConfig:
    """Genetic-algorithm search of the teacher-to-student layer mapping."""

    population: int = 12
    generations: int = 6
    crossover_rate: float = 0.8
    mutation_rate: float = 0.2
    proxy_fraction: float = 0.1  # share of the training data for each fitness run
    proxy_steps: int = 200
    # a mapping found before (toolchain.distill.ga_agnostic: `edgec mapping`), reused instead
    # of searching: the task-agnostic GA's output serves every task
    mapping_file: str | None = None
    # the task-agnostic GA (`edgec mapping`): proxy distillation on this unlabelled text
    # (proxy_sentences of it, proxy_steps), fitness from these representative tasks, each a
    # fine-tune of task_steps on task_train_samples, scored on task_val_samples
    text: tuple[str, ...] = ("wikitext", "text", "conll")
    proxy_sentences: int = 2000
    tasks: tuple[str, ...] = ("sst2", "cola")
    task_steps: int = 60
    task_train_samples: int = 2000
    task_val_samples: int = 500

    def __post_init__(self):
        check_range(self, "population", lo=2, hi=10000)
        check_range(self, "generations", lo=1, hi=10000)
        check_range(self, "crossover_rate", lo=0.0, hi=1.0)
        check_range(self, "mutation_rate", lo=0.0, hi=1.0)
        check_range(self, "proxy_fraction", lo=1e-4, hi=1.0)
        check_range(self, "proxy_steps", lo=1)
        for key in ("proxy_sentences", "task_steps", "task_train_samples", "task_val_samples"):
            check_range(self, key, lo=1)
        require(bool(self.tasks), "tasks", "name at least one representative task (sst2, cola)")
        require(bool(self.text), "text", "name at least one unlabelled text source")


STUDENT_SHAPE = re.compile(r"L(\d+):H(\d+):A(\d+):F(\d+)")


@dataclass(frozen=True)
class CVTConfig(StageConfig):
    """Cross-View Training (:mod:`toolchain.cvt`): a BiLSTM tagger trained semi-supervised on
    unlabelled text, and a candidate of `edgec build` for tagging tasks when ``enabled``."""

    enabled: bool = False  # `edgec build --candidates cvt`
    steps: int = 3000  # supervised steps (each followed by an unlabelled step)
    batch_size: int = 32
    unlabelled_batch_size: int = 32
    learning_rate: float = 1e-3
    grad_clip: float = 5.0
    unlabelled: bool = True  # False: supervised only (the ablation)
    # the cross-view loss starts after this share of the steps: before the primary module
    # has learned anything its predictions are no target (they pull every view towards 'O')
    unlabelled_after: float = 0.2
    unlabelled_sources: tuple[str, ...] = ("train", "text", "wikitext")
    max_unlabelled: int | None = 60000  # sentences, a seeded sample
    embeddings: Literal["teacher", "scratch"] = "teacher"
    word_dim: int = 300  # with embeddings: scratch (teacher: the teacher's hidden size)
    vocab_size: int = 20000
    min_count: int = 2
    hidden: int = 256
    hidden2: int = 128
    proj: int = 256
    char_filters: int = 100
    max_word_bytes: int = 16
    dropout: float = 0.5
    eval_every: int = 500
    eval_samples: int | None = None  # validation sentences scored at each check (None: all)

    def __post_init__(self):
        for key in ("steps", "batch_size", "unlabelled_batch_size", "eval_every", "hidden",
                    "hidden2", "proj", "char_filters", "word_dim"):  # fmt: skip
            check_range(self, key, lo=1)
        check_range(self, "learning_rate", lo=0)
        check_range(self, "vocab_size", lo=3)
        check_range(self, "max_word_bytes", lo=1, hi=64)
        check_range(self, "dropout", lo=0, hi=0.95)
        check_range(self, "unlabelled_after", lo=0, hi=1)
        check_range(self, "grad_clip", lo=0)


@dataclass(frozen=True)
class TheseusConfig:
    """BERT-of-Theseus (``distill.method: theseus``): each successor layer replaces a block of
    teacher layers with a probability that rises linearly from ``replace_start`` to 1 over the
    replacing phase; the last ``successor_fraction`` of the steps fine-tune the successor alone."""

    replace_start: float = 0.3
    successor_fraction: float = 0.3

    def __post_init__(self):
        check_range(self, "replace_start", lo=0.0, hi=1.0)
        check_range(self, "successor_fraction", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class DistillConfig(StageConfig):
    """Knowledge distillation of a student from the teacher."""

    student_shape: str | None = None  # "L3:H384:A12:F1536"; None = chosen by the search stage
    init: Literal["random", "truncation", "etd-rand", "etd-impt"] = "etd-impt"
    mapping: Literal["none", "uniform", "last", "rail", "ga"] = "rail"
    rail_variant: Literal["layer", "concat"] = "layer"  # RAIL-KD: per layer or concatenated
    logit_loss: Literal["kl", "mse"] = "kl"
    temperature: float = 2.0
    kd_weight: float = 0.5  # logit-KD share; the hard-label loss gets 1 - kd_weight
    hidden_weight: float = 1.0
    # uniform/last/ga mappings: "mse" of the states, or "cosine" (1 - cos per token, DistilGPT-2's;
    # the decoder presets use it: a Llama residual stream's scale swamps the MSE)
    hidden_loss: Literal["mse", "cosine"] = "mse"
    attention_weight: float = 0.0
    embedding_weight: float = 0.0
    steps: int = 2000
    batch_size: int = 32
    grad_accumulation: int = 1
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_seq_len: int = 128
    eval_every: int = 200
    eval_samples: int | None = 2000  # validation subset used during training (None = all)
    early_stopping_patience: int = 0  # evaluations without improvement; 0 = off
    importance_samples: int = 512  # ETD-Impt: examples used to score heads and neurons
    ga: GAConfig = field(default_factory=GAConfig)
    # kd: the student learns from the teacher's outputs; theseus: BERT-of-Theseus module
    # replacing (task loss only, successors initialised from the teacher's layers)
    method: Literal["kd", "theseus"] = "kd"
    theseus: TheseusConfig = field(default_factory=TheseusConfig)

    def __post_init__(self):
        if self.student_shape is not None:
            m = STUDENT_SHAPE.fullmatch(self.student_shape)
            require(
                m is not None,
                "student_shape",
                f"expected 'L<layers>:H<hidden>:A<heads>:F<ffn>' (e.g. L3:H384:A12:F1536), "
                f"got {self.student_shape!r}",
            )
            layers, hidden, heads, ffn = (int(g) for g in m.groups())
            require(
                min(layers, hidden, heads, ffn) >= 1,
                "student_shape",
                f"every size must be >= 1, got {self.student_shape!r}",
            )
            require(
                hidden % heads == 0,
                "student_shape",
                f"hidden size {hidden} must be divisible by the head count {heads}",
            )
        check_range(self, "temperature", lo=0.05, hi=100)
        check_range(self, "kd_weight", lo=0.0, hi=1.0)
        for key in ("hidden_weight", "attention_weight", "embedding_weight"):
            check_range(self, key, lo=0.0)
        check_range(self, "steps", lo=1)
        check_range(self, "batch_size", lo=1, hi=65536)
        check_range(self, "grad_accumulation", lo=1, hi=4096)
        check_range(self, "learning_rate", lo=1e-8, hi=1.0)
        check_range(self, "warmup_ratio", lo=0.0, hi=1.0)
        check_range(self, "weight_decay", lo=0.0, hi=1.0)
        check_range(self, "max_seq_len", lo=8, hi=8192)
        check_range(self, "eval_every", lo=1)
        check_range(self, "eval_samples", lo=1)
        check_range(self, "early_stopping_patience", lo=0)
        check_range(self, "importance_samples", lo=1)


@dataclass(frozen=True)
class PruneConfig(StageConfig):
    """Pruning (`edgec prune`) then KD fine-tuning against the unpruned model.

    structured: attention heads and FFN neurons removed by importance (the model shrinks);
    unstructured: the smallest encoder weights zeroed (no speed-up in ONNX Runtime)."""

    method: Literal["structured", "unstructured"] = "structured"
    sparsity: float = 0.3  # share of heads and FFN neurons, or of encoder weights, removed
    head_sparsity: float | None = None  # structured: overrides sparsity for heads
    ffn_sparsity: float | None = None  # structured: overrides sparsity for FFN neurons
    importance_samples: int = 512
    steps: int = 600  # KD fine-tuning after pruning (0: none)
    batch_size: int = 32
    learning_rate: float = 5e-5
    temperature: float = 2.0
    kd_weight: float = 0.5
    hidden_weight: float = 1.0
    max_seq_len: int = 128
    eval_every: int = 200
    eval_samples: int | None = 2000

    def __post_init__(self):
        for key in ("sparsity", "head_sparsity", "ffn_sparsity"):
            check_range(self, key, lo=0.0, hi=0.99)
        check_range(self, "importance_samples", lo=1)
        check_range(self, "steps", lo=0)
        check_range(self, "batch_size", lo=1, hi=65536)
        check_range(self, "learning_rate", lo=1e-8, hi=1.0)
        check_range(self, "temperature", lo=0.05, hi=100)
        check_range(self, "kd_weight", lo=0.0, hi=1.0)
        check_range(self, "hidden_weight", lo=0.0)
        check_range(self, "max_seq_len", lo=8, hi=8192)
        check_range(self, "eval_every", lo=1)
        check_range(self, "eval_samples", lo=1)


@dataclass(frozen=True)
class RobustnessConfig(StageConfig):
    """Adversarial attacks (:mod:`toolchain.evaluate.attack`) run by `edgec build` on every
    bundle, on a fixed seeded sample of the dev split; the figures fill the manifest's
    ``robustness``."""

    enabled: bool = True
    attacks: tuple[str, ...] = ("char", "word")
    samples: int = 100
    seed: int = 0

    def __post_init__(self):
        check_range(self, "samples", lo=1, hi=100000)
        check_range(self, "seed", lo=0, hi=2**32 - 1)
        known = ("char", "word")
        bad = [a for a in self.attacks if a not in known]
        require(not bad, "attacks", f"unknown attack(s) {bad}: choose from {', '.join(known)}")


@dataclass(frozen=True)
class QuantizeConfig(StageConfig):
    """LSQ quantization trained under distillation (KDLSQ), or round-to-nearest PTQ (RTN)."""

    method: Literal["kdlsq", "rtn", "none"] = "kdlsq"
    weight_bits: int = 4
    act_bits: int | None = 8  # None: float activations
    avg_bits: float | None = None  # mixed precision: stored bits per quantized weight
    size_budget_mb: float | None = None  # mixed precision: whole packed checkpoint, MiB
    mixed_choices: tuple[int, ...] = (2, 4, 8)  # widths the allocation picks from
    quantize_embeddings: bool = False
    exclude: tuple[str, ...] = ("*classifier*", "*lm_head*", "*score*", "*qa_outputs*")
    overrides: dict[str, int] = field(default_factory=dict)  # glob -> weight bits (last wins)
    init: Literal["mse", "lsq", "max"] = "mse"  # initial step sizes (see quantize/lsq.py)
    calibration_batches: int = 8
    sensitivity_batches: int = 4
    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_seq_len: int = 128
    temperature: float = 1.0
    kd_weight: float = 1.0  # logit-KD share; the hard-label loss gets 1 - kd_weight
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    eval_every: int = 200
    eval_samples: int | None = 2000
    early_stopping_patience: int = 0
    block_size: int = 32

    def __post_init__(self):
        check_range(self, "weight_bits", lo=2, hi=8)
        if self.act_bits is not None:
            check_range(self, "act_bits", lo=4, hi=8)
        check_range(self, "avg_bits", lo=2, hi=8)
        check_range(self, "size_budget_mb", lo=1e-3)
        require(
            self.avg_bits is None or self.size_budget_mb is None,
            "avg_bits",
            "give avg_bits or size_budget_mb, not both",
        )
        require(
            len(self.mixed_choices) >= 1 and all(2 <= b <= 8 for b in self.mixed_choices),
            "mixed_choices",
            f"must be widths in [2, 8], got {list(self.mixed_choices)}",
        )
        for pattern, bits in self.overrides.items():
            require(2 <= bits <= 8, f"overrides.{pattern}", f"must be in [2, 8], got {bits}")
        for key in ("steps", "batch_size", "calibration_batches", "sensitivity_batches"):
            check_range(self, key, lo=1)
        check_range(self, "eval_every", lo=1)
        check_range(self, "learning_rate", lo=1e-9, hi=1.0)
        check_range(self, "kd_weight", lo=0.0, hi=1.0)
        check_range(self, "temperature", lo=0.05, hi=100)
        check_range(self, "warmup_ratio", lo=0.0, hi=1.0)
        check_range(self, "weight_decay", lo=0.0, hi=1.0)
        for key in ("hidden_weight", "attention_weight"):
            check_range(self, key, lo=0.0)
        require(
            self.block_size in (16, 32, 64, 128, 256),
            "block_size",
            f"must be one of 16, 32, 64, 128, 256, got {self.block_size}",
        )

    @property
    def mixed(self) -> bool:
        return self.avg_bits is not None or self.size_budget_mb is not None


# A SearchConfig field with this metadata does not change the trained supernet (only the search
# over it, or nothing at all): the supernet cache key takes every other field (see
# SearchConfig.supernet_fields), so a field added later is part of the key unless marked.
SEARCH_ONLY = {"supernet": False}
# A field of the task-agnostic supernet route: in the task supernet's key only on that route.
AGNOSTIC = {"agnostic": True}


@dataclass(frozen=True)
class SearchConfig(StageConfig):
    """NAS-BERT supernet training and per-budget evolutionary search."""

    # "task": the supernet is the task-fine-tuned teacher, trained on the task's data (a supernet
    # per task); "agnostic": one supernet trained once from the pretrained teacher on unlabelled
    # text (toolchain.nas.agnostic), then adapted to each task in proxy_steps
    supernet: Literal["task", "agnostic"] = field(default="task", metadata=AGNOSTIC)
    supernet_steps: int = 2000
    sandwich: int = 4  # subnets per step: largest, smallest, then random ones (>= 1)
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_seq_len: int = 128
    temperature: float = 2.0
    hidden_weight: float = 1.0  # per-block KD: each kept layer's output vs the teacher layer's
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    prune_after: float = 0.5  # share of the steps before dominated choices are dropped; 0 = off
    prune_margin: float = 0.01  # a choice is dropped only when beaten by this much accuracy
    checkpoint_every: int = field(default=100, metadata=SEARCH_ONLY)
    population: int = field(default=32, metadata=SEARCH_ONLY)
    generations: int = field(default=10, metadata=SEARCH_ONLY)
    mutation_rate: float = field(default=0.3, metadata=SEARCH_ONLY)
    crossover_rate: float = field(default=0.5, metadata=SEARCH_ONLY)
    eval_samples: int = 512  # validation subset for the inherited-weight accuracy estimate
    # candidates measured for real per budget
    measure_top_k: int = field(default=3, metadata=SEARCH_ONLY)
    # a subnet this close to the best accuracy that fits the budget counts as good as it: the
    # fastest such subnet is chosen (0: the most accurate)
    accuracy_tolerance: float = field(default=0.01, metadata=SEARCH_ONLY)
    # extra subnets scored descending to cheaper ones within it
    shrink_evaluations: int = field(default=64, metadata=SEARCH_ONLY)
    # per budget, the subnets distilled before the choice: the most accurate that fit (inherited
    # weights) and the fastest within accuracy_tolerance of the best; the build distils each
    # and chooses on the validation score after distillation
    finalists: int = field(default=3, metadata=SEARCH_ONLY)
    precision: Literal["fp32", "fp16", "int8", "int4", "int2"] = field(
        default="fp32", metadata=SEARCH_ONLY
    )  # of the latency predictors

    # the task-agnostic supernet (supernet: agnostic): block-wise distillation steps, the
    # unlabelled text (toolchain.data.text: wikitext, text, sst2, conll or a file), the teacher
    # layers per block, the weight of the attention term, the sentences kept (a seeded sample)
    agnostic_steps: int = field(default=2000, metadata=AGNOSTIC)
    agnostic_text: tuple[str, ...] = field(default=("wikitext", "text", "conll"), metadata=AGNOSTIC)
    agnostic_block_layers: int = field(default=2, metadata=AGNOSTIC)
    agnostic_attention_weight: float = field(default=1.0, metadata=AGNOSTIC)
    agnostic_max_sentences: int = field(default=60000, metadata=AGNOSTIC)
    # per task, the short fine-tune of the agnostic supernet before its subnets are scored
    # (NAS-BERT's performance approximation); prune_after applies to these steps
    proxy_steps: int = field(default=300, metadata=AGNOSTIC)

    def supernet_fields(self) -> dict:
        """The fields the task's trained supernet depends on (every field not marked
        SEARCH_ONLY; the agnostic supernet's only when it is the route)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.metadata.get("supernet", True)
            and (self.supernet == "agnostic" or not f.metadata.get("agnostic"))
        }

    def for_route(self) -> SearchConfig:
        """This config with the fields its route does not use at their defaults (the task
        route ignores the agnostic supernet's settings), so that a stage's record changes only
        with what it uses."""
        if self.supernet == "agnostic":
            return self
        unused = {f.name: f.default for f in fields(self) if f.metadata.get("agnostic")}
        return replace(self, **unused)

    def agnostic_fields(self) -> dict:
        """The fields the task-agnostic supernet depends on: its own and the training settings
        it shares (learning rate, batch, sequence length, sandwich, schedule)."""
        shared = ("sandwich", "learning_rate", "batch_size", "max_seq_len", "warmup_ratio",
                  "weight_decay")  # fmt: skip
        own = [f.name for f in fields(self) if f.metadata.get("agnostic")]
        return {
            n: getattr(self, n) for n in (*shared, *own) if n not in ("proxy_steps", "supernet")
        }

    def __post_init__(self):
        check_range(self, "supernet_steps", lo=1)
        check_range(self, "sandwich", lo=1, hi=64)
        check_range(self, "learning_rate", lo=0.0, hi=1.0)
        check_range(self, "batch_size", lo=1, hi=65536)
        check_range(self, "max_seq_len", lo=8, hi=8192)
        check_range(self, "temperature", lo=0.05, hi=100)
        check_range(self, "hidden_weight", lo=0.0)
        check_range(self, "warmup_ratio", lo=0.0, hi=1.0)
        check_range(self, "weight_decay", lo=0.0, hi=1.0)
        check_range(self, "prune_after", lo=0.0, hi=0.95)
        check_range(self, "checkpoint_every", lo=1)
        check_range(self, "accuracy_tolerance", lo=0.0, hi=1.0)
        check_range(self, "prune_margin", lo=0.0, hi=1.0)
        check_range(self, "population", lo=2, hi=100000)
        check_range(self, "generations", lo=1, hi=10000)
        check_range(self, "mutation_rate", lo=0.0, hi=1.0)
        check_range(self, "crossover_rate", lo=0.0, hi=1.0)
        check_range(self, "eval_samples", lo=1)
        check_range(self, "measure_top_k", lo=0)
        check_range(self, "shrink_evaluations", lo=0)
        check_range(self, "finalists", lo=1, hi=16)
        check_range(self, "agnostic_steps", lo=1)
        check_range(self, "agnostic_block_layers", lo=1, hi=64)
        check_range(self, "agnostic_attention_weight", lo=0.0)
        check_range(self, "agnostic_max_sentences", lo=1)
        check_range(self, "proxy_steps", lo=1)
        require(
            bool(self.agnostic_text),
            "agnostic_text",
            "name at least one text source (wikitext, text, sst2, conll or a file)",
        )


@dataclass(frozen=True)
class ExportConfig(StageConfig):
    """ONNX / TensorRT export with parity checks."""

    format: Literal["auto", "fp32", "fp16", "int8-dynamic", "int8-qdq", "nbits"] = "auto"
    opset: int = 17
    accuracy_level: int = 4  # MatMulNBits: 4 = int8 activations
    parity_samples: int = 256
    min_label_agreement: float = 0.995
    # max |logit difference| allowed against PyTorch; None = each format's own (export.TOLERANCE)
    atol: float | None = None

    def __post_init__(self):
        # onnxruntime 1.31 officially runs ai.onnx up to opset 26 (see shared/reference/stack.md).
        check_range(self, "opset", lo=14, hi=26)
        require(
            self.accuracy_level in (0, 1, 2, 3, 4),
            "accuracy_level",
            f"must be one of 0, 1, 2, 3, 4, got {self.accuracy_level}",
        )
        check_range(self, "parity_samples", lo=1)
        check_range(self, "min_label_agreement", lo=0.0, hi=1.0)
        check_range(self, "atol", lo=0.0)


@dataclass(frozen=True)
class ProfileConfig(StageConfig):
    """Latency and memory measurement (protocol fields override the device profile's)."""

    # http://HOST:9600 of an `edgec agent` on the device, or a list of them (a pool: candidates
    # measured at once, one per agent); None = this host or predicted
    target: str | tuple[str, ...] | None = None
    token_file: str | None = None  # shared by every agent of `target`
    ca_cert: str | None = None  # PEM certificate to trust for an https:// agent (self-signed)
    pool: str | None = None  # a file of agents, each with its token (toolchain.profile.poolfile)
    warmup: int | None = None
    iterations: int | None = None
    repeats: int | None = None
    threads: int | None = None

    def __post_init__(self):
        require(
            self.target != (),
            "target",
            "an empty list: give one agent URL or more (http://HOST:9600), or leave it out",
        )
        for url in self.targets:
            check_agent_url(url, "target")
        repeated = sorted({u for u in self.targets if self.targets.count(u) > 1})
        require(not repeated, "target", f"an agent given twice: {', '.join(repeated)}")
        # measurement arrays hold every iteration: bounded so a typo cannot exhaust memory
        check_range(self, "warmup", lo=0, hi=MAX_ITERATIONS)
        check_range(self, "repeats", lo=0, hi=1000)
        check_range(self, "iterations", lo=1, hi=MAX_ITERATIONS)
        check_range(self, "threads", lo=1, hi=1024)

    @property
    def targets(self) -> tuple[str, ...]:
        """The agent URLs of ``target``: none, one, or a pool's."""
        if self.target is None:
            return ()
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)


def check_agent_url(url: str, key: str) -> None:
    """ConfigError(key=key) unless ``url`` is an agent's http:// or https:// URL."""
    require(
        bool(re.match(r"https?://[^/\s]+", url)),
        key,
        f"expected a URL such as http://HOST:9600, got {url!r}",
    )


@dataclass(frozen=True)
class BundleConfig(StageConfig):
    """Deployable bundle per budget."""

    tarball: bool = True
    model_card: bool = True


@dataclass(frozen=True)
class QualityConfig(StageConfig):
    """What a bundle must reach to be called "met", and how budgets choose among finalists.

    Scores are in the task's main metric (accuracy, F1, MCC, Pearson ...), as absolute
    differences (0.02 = 2 points of accuracy)."""

    accuracy_floor: float = 0.02  # a bundle more than this under its teacher: floor not met
    near_tie: float = 0.005  # finalists this close to the best (after distillation): the faster
    # at most this many distinct finalists distilled per build: the budgets' shortlists pooled
    # overlap, yet three budgets of 3 gave 7 on SST-2 (90 minutes of distillation on 2 cores);
    # each budget keeps its most accurate first (tightest budget first), then round by round
    # its next (toolchain.nas.budget.cap_finalists)
    max_distilled: int = 4
    confidence: float = 0.95  # "clearly above the trivial baseline": one-sided bootstrap bound
    # language models: a bundle whose perplexity is more than this fraction above its
    # teacher's is reported "NOT MET: perplexity floor" (0.15: the decoder issue's goal)
    perplexity_floor: float = 0.15

    def __post_init__(self):
        check_range(self, "perplexity_floor", lo=0.0, hi=100.0)
        check_range(self, "accuracy_floor", lo=0.0, hi=1.0)
        check_range(self, "near_tie", lo=0.0, hi=1.0)
        check_range(self, "confidence", lo=0.5, hi=0.999)
        check_range(self, "max_distilled", lo=1, hi=64)


@dataclass(frozen=True)
class Recipe:
    """A whole build: teacher, task, data, device, budgets and per-stage settings."""

    version: int = RECIPE_VERSION
    name: str | None = None
    teacher: str = "default"
    task: str = "sst2"
    data_dir: str | None = None
    device: str = "jetson"
    budgets: tuple[str | BudgetSpec, ...] = ()  # () = every budget of the device
    seed: int = 0
    output: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    teacher_finetune: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    cvt: CVTConfig = field(default_factory=CVTConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    preset: str | None = None  # the preset that filled the unset keys (set by the build)

    def __post_init__(self):
        require(
            self.version == RECIPE_VERSION,
            "version",
            f"this edgec reads recipe version {RECIPE_VERSION}, got {self.version}",
        )
        require(bool(self.task.strip()), "task", "must not be empty")
        require(
            bool(self.teacher.strip()),
            "teacher",
            "must be 'default' or a local Hugging Face model directory",
        )
        check_range(self, "seed", lo=0, hi=2**32 - 1)
        names = [b if isinstance(b, str) else b.name for b in self.budgets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        require(not dupes, "budgets", f"budget names must be unique, repeated: {', '.join(dupes)}")


def load_recipe(path: str | Path | None = None, *, overrides: dict | None = None) -> Recipe:
    """Load and validate a recipe YAML (or the defaults when ``path`` is None).

    Args:
        path: recipe file; None gives the default recipe.
        overrides: dotted keys that win over the file, e.g. ``{"device": "raspberry-pi-5",
            "distill.mapping": "uniform"}`` (how CLI options reach the recipe). None values are
            ignored, so unset CLI options keep the file's value.

    Returns:
        The validated :class:`Recipe`; device and budgets are checked by
        :func:`toolchain.devices.budgets.resolve_recipe`.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    # an explicit None (a preset's "quantize.act_bits": float activations) arrives as UNSET
    overrides = {k: (None if v is schema.UNSET else v) for k, v in overrides.items()}
    if path is None:
        return schema.from_yaml_text(Recipe, "", file="<defaults>", overrides=overrides)
    return schema.from_yaml_file(Recipe, path, overrides=overrides)


def recipe_to_yaml(recipe: Recipe, *, header: str = "") -> str:
    """Serialise a recipe as YAML in field order (what ``edgec build --print-recipe`` prints)."""
    text = yaml.safe_dump(schema.to_dict(recipe), sort_keys=False, default_flow_style=False)
    return (header + text) if header else text
