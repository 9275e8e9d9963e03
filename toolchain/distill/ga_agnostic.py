"""Task-agnostic GA search of the layer mapping: the GA's proxy setting run as the seed paper
runs it for task-agnostic distillation, and its mapping reused by every task.

Fitness of a mapping (a strictly increasing list of teacher layers, one per student layer):

1. a student of the given shape is initialised from the *pretrained* teacher (no task head);
2. it learns the teacher's hidden states through the mapping (embeddings to embeddings, student
   layer j to teacher layer ``mapping[j]``, MSE; a learned projection where the widths differ) on
   a small portion of unlabelled text (``ga.proxy_sentences`` sentences, ``ga.proxy_steps``);
3. for each representative task (``ga.tasks``), a copy of it gets the task's head and is
   fine-tuned ``ga.task_steps`` on a seeded sample of the task's training split, then scored on
   a sample of its validation split; the fitness is the mean of the tasks' main metrics.

The search (:func:`toolchain.distill.ga.ga_search`: tournament, crossover, mutation, elitism,
resumable state) keeps the best mapping; :func:`search_agnostic_mapping` writes it as a JSON file
(``{"mapping", "teacher", "student_shape", "tasks", "fitness", "history", ...}``) that
``distill.ga.mapping_file`` reads for any task (:func:`load_mapping`), so the search is paid once.

Written here, not taken from a library: no KD library runs a GA over layer mappings.

Example::

    report = search_agnostic_mapping("default", Shape.parse("L3:H384:A12:F1536"), cfg.ga,
                                     data_dir="../shared/data", out=Path("mapping.json"))
    # then: edgec distill --mapping ga --set distill.ga.mapping_file=mapping.json ...
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from toolchain.config import GAConfig, TeacherConfig
from toolchain.distill import losses as L
from toolchain.distill.mapping import is_valid
from toolchain.errors import ConfigError
from toolchain.models.adapters import ModelAdapter, Shape

log = logging.getLogger(__name__)

MAPPING_SCHEMA = 1


def distill_hidden(
    student: ModelAdapter, teacher: ModelAdapter, texts: list[str], mapping: list[int], *,
    steps: int, batch_size: int = 16, max_len: int = 64, learning_rate: float = 2e-4,
    seed: int = 0, device="cpu",
) -> list[float]:  # fmt: skip
    """Train ``student`` (headless) to reproduce the teacher's hidden states through
    ``mapping``; returns the loss of every step."""
    from toolchain.data.text import text_batches

    torch.manual_seed(seed)
    s_model, t_model = student.model.to(device).train(), teacher.model.to(device).eval()
    proj = None
    if student.hidden_size != teacher.hidden_size:
        proj = torch.nn.Linear(student.hidden_size, teacher.hidden_size).to(device)
    params = list(s_model.parameters()) + (list(proj.parameters()) if proj else [])
    opt = torch.optim.AdamW(params, lr=learning_rate)
    it = text_batches(texts, student.tokenizer, max_len=max_len, batch_size=batch_size, seed=seed)
    losses = []
    for _ in range(steps):
        batch = {k: v.to(device) for k, v in next(it).items()}
        with torch.no_grad():
            t_states = t_model(**batch, output_hidden_states=True).hidden_states
        s_states = s_model(**batch, output_hidden_states=True).hidden_states
        pairs = [(0, 0)] + [(j + 1, i + 1) for j, i in enumerate(mapping)]
        mask = batch["attention_mask"]
        loss = sum(L.hidden_mse(s_states[j], t_states[i], mask, proj) for j, i in pairs)
        loss = loss / len(pairs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    s_model.eval()
    return losses


def representative_tasks(names, data_dir, *, train_samples: int, val_samples: int, seed: int):
    """``[(spec, train sample, validation sample)]`` of each named task."""
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task

    out = []
    for name in names:
        spec = get_task(name)
        if spec.kind not in ("classification", "regression"):
            raise ConfigError(
                f"ga.tasks: {name} is a {spec.kind} task; the fitness fine-tunes sentence "
                "classifiers (sst2, cola, rte, mrpc, ...)",
                key="distill.ga.tasks",
            )
        rng = random.Random(seed)
        train, val = load_split(spec, "train", data_dir), load_split(spec, "validation", data_dir)
        out.append((spec, rng.sample(train, min(train_samples, len(train))),
                    rng.sample(val, min(val_samples, len(val)))))  # fmt: skip
    return out


def task_score(student: ModelAdapter, spec, train, val, *, steps: int, seed: int, device) -> float:
    """The task's main metric on ``val`` after ``steps`` of fine-tuning a copy of ``student``
    with the task's head on ``train``."""
    from toolchain.models.finetune import finetune, head_for
    from toolchain.models.loading import load_model

    scratch = Path(tempfile.mkdtemp(prefix="ga-task-"))
    try:
        student.save(scratch / "encoder")
        adapter = load_model(
            str(scratch / "encoder"), head=head_for(spec), num_labels=spec.num_labels,
            problem_type="regression" if spec.kind == "regression" else None,
            id2label=dict(enumerate(spec.labels)) if spec.labels else None,
        )  # fmt: skip
        cfg = TeacherConfig(max_steps=steps, eval_every=steps, learning_rate=1e-4, batch_size=16,
                            max_seq_len=64, early_stopping_patience=0,
                            require_above_trivial=False)  # fmt: skip
        result = finetune(adapter, spec, train, val, cfg, out_dir=scratch / "out", seed=seed,
                          device=device)  # fmt: skip
        return float(result["best_validation"][spec.main_metric])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def search_agnostic_mapping(
    teacher: str, shape: Shape, cfg: GAConfig, *, data_dir, out: Path, init: str = "truncation",
    seed: int = 0, device="cpu",
) -> dict:  # fmt: skip
    """Run the task-agnostic GA (see the module docstring) and write its report to ``out``
    (written whole, then renamed; its state beside it as ``out.state.json`` for resuming)."""
    from toolchain.data.text import unlabelled_text
    from toolchain.distill.ga import ga_search
    from toolchain.distill.init import init_student
    from toolchain.models.loading import load_model

    started = time.perf_counter()
    base = load_model(teacher, head="base")
    texts = unlabelled_text(cfg.text, data_dir)
    texts = random.Random(seed).sample(texts, min(cfg.proxy_sentences, len(texts)))
    tasks = representative_tasks(cfg.tasks, data_dir, train_samples=cfg.task_train_samples,
                                 val_samples=cfg.task_val_samples, seed=seed)  # fmt: skip
    importance = None
    if init == "etd-impt":
        from toolchain.distill.importance import label_free_importance

        importance = label_free_importance(base, texts[:512], device=device)

    def fitness(genome: list[int]) -> float:
        student = init_student(base, shape, init, importance=importance, seed=seed)
        distill_hidden(student, base, texts, genome, steps=cfg.proxy_steps, seed=seed,
                       device=device)  # fmt: skip
        scores = [task_score(student, spec, tr, va, steps=cfg.task_steps, seed=seed, device=device)
                  for spec, tr, va in tasks]  # fmt: skip
        return sum(scores) / len(scores)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    best, state = ga_search(
        fitness, teacher_layers=base.num_layers, student_layers=shape.layers, cfg=cfg, seed=seed,
        state_path=out.with_name(out.name + ".state.json"),
    )  # fmt: skip
    report = {
        "schema": MAPPING_SCHEMA,
        "mapping": best,
        "teacher": teacher,
        "teacher_layers": base.num_layers,
        "student_shape": str(shape),
        "init": init,
        "text": list(cfg.text),
        "sentences": len(texts),
        "tasks": list(cfg.tasks),
        "fitness": state.fitness,
        "history": state.history,
        "evaluations": len(state.fitness),
        "search_s": round(time.perf_counter() - started, 1),
        "settings": {
            k: getattr(cfg, k)
            for k in ("population", "generations", "proxy_steps", "task_steps", "proxy_sentences")
        },  # fmt: skip
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=list) + "\n")
    tmp.replace(out)
    return report


def load_mapping(
    path: str | Path, *, teacher_layers: int, student_layers: int
) -> tuple[list, dict]:
    """The mapping of a file :func:`search_agnostic_mapping` wrote, checked against the teacher
    and student at hand; ``(mapping, report)``.

    Raises:
        ConfigError: not such a file, or a mapping for other layer counts.
    """
    path = Path(path)
    try:
        report = json.loads(path.read_text())
        mapping = [int(x) for x in report["mapping"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"distill.ga.mapping_file {path}: not a layer-mapping file ({e}); write one with "
            "`edgec mapping` (toolchain.api.search_mapping)",
            key="distill.ga.mapping_file",
        ) from e
    if not is_valid(mapping, teacher_layers, student_layers):
        raise ConfigError(
            f"distill.ga.mapping_file {path}: mapping {mapping} is not one of {student_layers} "
            f"student layers onto {teacher_layers} teacher layers; search one for this student "
            "shape",
            key="distill.ga.mapping_file",
        )
    return mapping, report


__all__ = ["distill_hidden", "load_mapping", "search_agnostic_mapping", "task_score"]
