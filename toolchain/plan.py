"""`edgec build`: the stages of the whole pipeline for (recipe, device target, task kind), one
verified bundle per budget.

    teacher (cached; stops when not clearly above the trivial baseline) -> [calibrate] ->
    search (a shortlist per budget) -> distill every finalist -> per budget: the most accurate
    finalist after distillation that fits (:func:`toolchain.nas.budget.choose_per_budget`) ->
    per chosen subnet: quantize -> export -> per budget: bundle (+ latency from the device
    target: measured here, measured by the device's agent, or predicted) -> baseline (the task
    kind's teacher baseline, cached with the teacher) -> build.json and the report
    (:mod:`toolchain.summary`, :mod:`toolchain.report`)

A kind's plan may add finalists beside the supernet's subnets (:meth:`BuildPlan._extra_finalists`:
the CVT tagger of :mod:`toolchain.plan_tagging`); they join the pools of the budgets they fit and
are chosen by the same rule.

KDLSQ trains the quantized student against its own float model (the distilled student): layer
for layer the same shape, so every hidden state and attention map has its exact counterpart. With
the fine-tuned teacher as KDLSQ's teacher instead, a 3-layer subnet's W8A8 model lost 1.7 points
of SST-2 dev accuracy to its float model in 100 steps; against itself it lost none.

Every step is a stage of the run directory (``OUT/<stage>/`` with its ``stage.json``), named by
what it holds (:class:`SubnetStages`) and declaring the stages it reads (``depends``): a re-run
skips what is done and resumes the first stage that is not, and a training stage resumes from its
own checkpoints, so Ctrl-C or a kill loses at most the work since the last checkpoint. A budget
whose stages fail (e.g. no subnet fits it) is reported with the closest achievable figure while
the other budgets still build.

Example::

    plan = BuildPlan(recipe, Path("runs/sst2-orin"), spec=get_task("sst2"), target=target)
    summary = plan.execute()
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from toolchain import distributed as dist
from toolchain.bundle.build import build_bundle, set_latency
from toolchain.config import BudgetSpec, Recipe
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.devices.predict import FittedPredictor
from toolchain.distill.stage import distill_stage
from toolchain.errors import EdgecError
from toolchain.export import device_format
from toolchain.kinds import TaskKind, kind_for
from toolchain.models.teacher import teacher_stage
from toolchain.nas.results import BudgetChoice, SearchResult, subnet_key
from toolchain.pipeline import RunDir, Stage, _jsonable
from toolchain.presets import TIME_BUDGET
from toolchain.profile.calibrate import design, measure_shapes
from toolchain.report import write_report
from toolchain.schema import to_dict as schema_dict
from toolchain.summary import (
    BuildSummary,
    Quality,
    budget_row,
    device_facts,
    failed_row,
    unmet_row,
)
from toolchain.target import DeviceTarget
from toolchain.version import stack_versions

log = logging.getLogger(__name__)


def precision_of(recipe: Recipe) -> str:
    """The precision the search predicts latency at: that of the model the device runs. With
    8-bit activations that is INT8 whatever the weight width (the export is INT8 Q/DQ: 2-4-bit
    codes stored in INT8, INT8 GEMMs); weight-only quantization runs at its weight width."""
    q = recipe.quantize
    if q.method == "none":
        return "fp32"
    if q.act_bits == 8:
        return "int8"
    return {2: "int2", 3: "int4", 4: "int4"}.get(q.weight_bits, "int8")


def export_format(recipe: Recipe, target: DeviceTarget) -> str:
    """The recipe's export format, or where it says ``auto``, the device's
    (:func:`toolchain.export.device_format`)."""
    fmt, q = recipe.export.format, recipe.quantize
    if fmt != "auto":
        return fmt
    return device_format(host=target.is_host, quantized=q.method != "none", act_bits=q.act_bits)


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs (not what it builds): training device, stages to re-run, caches."""

    torch_device: str | None = None
    force: tuple[str, ...] = ()
    teacher_cache: Path | None = None  # None: the teacher is fine-tuned inside the run directory


@dataclass(frozen=True)
class Teacher:
    """The fine-tuned teacher: its folder, its stage's metrics, and where its stage lives."""

    dir: Path
    metrics: dict
    run: RunDir  # the teacher cache, or the build's run directory
    stage: str


@dataclass(frozen=True)
class SubnetStages:
    """The stage names of one subnet, shared by every budget that chose it."""

    key: str  # L[1,3,5]:H384:A12:F1536 -> L1.3.5-H384-A12-F1536
    distill: str
    quantize: str | None
    export: str

    @classmethod
    def of(cls, subnet: str, quantized: bool) -> SubnetStages:
        key = subnet_key(subnet)
        quantize = f"quantize-{key}" if quantized else None
        return cls(key, f"distill-{key}", quantize, f"export-{key}")

    @property
    def model(self) -> str:
        """The stage whose folder holds the model that is exported."""
        return self.quantize or self.distill


class BuildPlan:
    """One build: the run directory, the resolved recipe, the device target and the task kind,
    and the stages planned from them."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        *,
        spec: TaskSpec,
        target: DeviceTarget,
        kind: TaskKind | None = None,
        options: BuildOptions = BuildOptions(),
    ):
        self.kind = kind or kind_for(spec)  # an unsupported kind is refused before any work
        self.recipe, self.out, self.spec, self.target = recipe, Path(out), spec, target
        self.options = options
        self.budgets: tuple[BudgetSpec, ...] = tuple(recipe.budgets)
        self.force = set(options.force)
        self.stage_s: dict[str, float] = {}
        self.stage_status: dict[str, str] = {}
        self.run = RunDir(self.out)
        self._cache: RunDir | None = None  # the teacher cache's run directory, once opened

    # -- running stages -----------------------------------------------------------------------
    def _run(self, stage: Stage, run: RunDir | None = None, label: str | None = None) -> dict:
        t0 = time.perf_counter()
        force = [stage.name] if stage.name in self.force else []
        (res,) = (run or self.run).run([stage], seed=self.recipe.seed, force=force)
        took = time.perf_counter() - t0
        label = label or stage.name
        cached = res.status == "skipped"  # the time this build spent: ~0 for a cached stage
        if not (cached and label in self.stage_s):  # a stage shared by budgets: its first visit
            self.stage_s[label] = round(took if cached else res.record.get("wall_s", took), 1)
            self.stage_status[label] = "cached" if cached else "ran"
        state = "cached" if cached else f"done in {took:.0f} s"
        print(f"edgec build: {label}: {state}", flush=True)
        return res.record["metrics"] or {}

    def _write_recipe(self) -> str:
        """The effective recipe (defaults filled in) as ``recipe.yaml`` beside build.json: what
        `edgec build --recipe` takes to repeat this build."""
        from toolchain.config import recipe_to_yaml

        path = self.out / "recipe.yaml"
        header = f"# the effective recipe of {self.out.name}\n"
        if self.spec.name != self.recipe.task:  # a table task: named by its files, not the recipe
            header += (
                f"# its task, {self.spec.name}, came from data files given on the command line "
                "(--train-file/--dev-file ...): give them again\n"
            )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(recipe_to_yaml(self.recipe, header=header))
        tmp.replace(path)
        return path.name

    def execute(self) -> dict:
        """Run every stage (skipping those already done) and write build.json and the report."""
        started = time.perf_counter()
        print(
            f"edgec build: {self.spec.name} for {self.target.name}, budgets "
            f"{', '.join(b.name for b in self.budgets)} -> {self.out}",
            flush=True,
        )
        teacher = self._teacher()
        self.target = self._predictors()
        agnostic = self._agnostic()
        search = SearchResult.from_metrics(self._run(self._search_stage(teacher, agnostic)))
        r = self.recipe
        scorer = self.kind.dev_scorer(self.spec, teacher.dir, r.data_dir,
                                      confidence=r.quality.confidence)  # fmt: skip
        selection = self._select(search, teacher)
        metric = self.spec.main_metric
        quality = Quality(metric, (teacher.metrics.get("dev") or {}).get(metric),
                          r.quality.accuracy_floor)  # fmt: skip
        rows = [self._budget(b, search, teacher, scorer, selection, quality) for b in self.budgets]
        baseline = self._baseline(teacher, scorer)
        if not dist.is_main():  # under torchrun the other ranks only trained with rank 0
            return {}
        summary = BuildSummary(
            task=self.spec.name,
            device=self.target.name,
            requested_device=self.target.requested,
            teacher={
                "source": self.recipe.teacher,
                "dir": str(teacher.dir),
                "dev": teacher.metrics.get("dev") or {},
            },
            baseline=baseline,
            search=search,
            bundles=rows,
            stage_s=self.stage_s,
            wall_s=round(time.perf_counter() - started, 1),
            metric=metric,
            trivial=scorer.trivial_scores() if hasattr(scorer, "trivial_scores") else None,
            quality={**schema_dict(r.quality), "teacher_gate": teacher.metrics.get("gate")},
            preset={"name": r.preset, "time_budget": TIME_BUDGET.get(r.preset or "")},
            selection=selection,
            stage_status=self.stage_status,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            versions=stack_versions(),
            recipe_file=self._write_recipe(),
            device_facts=device_facts(self.target.profile),
        )
        summary.write(self.out / "build.json")
        write_report(self.out)
        return summary.to_dict()

    # -- the parts ------------------------------------------------------------------------------
    def _teacher(self) -> Teacher:
        """Fine-tune the teacher, or find it done: in the shared teacher cache when there is one
        (a build for another device or budget reuses it), else in the run directory."""
        r = self.recipe
        stage = teacher_stage(
            model=r.teacher,
            spec=self.spec,
            data_dir=r.data_dir,
            cfg=r.teacher_finetune,
            data_cfg=r.data,
            device=self.options.torch_device,
        )
        return self._teacher_in_cache(stage, self.spec.name)

    def _teacher_in_cache(self, stage: Stage, prefix: str) -> Teacher:
        """Run the teacher ``stage`` in the shared teacher cache (named by its settings, so a
        build for another device or budget reuses it), or in the run directory without one."""
        run, name, metrics = self._in_cache(stage, prefix, "teacher")
        return Teacher(run.stage_dir(name), metrics, run, name)

    def _in_cache(self, stage: Stage, prefix: str, label: str) -> tuple[RunDir, str, dict]:
        """Run ``stage`` in the shared teacher cache as ``prefix-<hash of its settings and
        seed>`` (a later build with the same settings finds it done), or in the run directory
        without a cache; its run directory, stage name and metrics."""
        if self.options.teacher_cache is None:
            return self.run, stage.name, self._run(stage)
        ident = json.dumps(_jsonable([stage.config, self.recipe.seed]), sort_keys=True, default=str)
        name = f"{prefix}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
        if self._cache is None:  # one per build: a run directory is locked by its holder
            self._cache = RunDir(self.options.teacher_cache)
        cache = self._cache
        if stage.name in self.force:
            self.force.add(name)
        return cache, name, self._run(replace(stage, name=name), run=cache, label=label)

    def _agnostic(self) -> Path | None:
        """The task-agnostic supernet's folder (search.supernet: agnostic): trained once per
        pretrained model, text and settings, in the teacher cache, so a build for any task or
        device reuses it (None on the task route)."""
        r = self.recipe
        if r.search.supernet != "agnostic":
            return None
        from toolchain.nas.agnostic import agnostic_stage

        stage = agnostic_stage(teacher=r.teacher, data_dir=r.data_dir, cfg=r.search,
                               torch_device=self.options.torch_device)  # fmt: skip
        run, name, _ = self._in_cache(stage, "agnostic-supernet", "agnostic-supernet")
        return run.stage_dir(name) / "supernet"

    def _predictors(self) -> DeviceTarget:
        """The target with its predictors: the user's (a fitted predictor of the device stored
        there), else for this host a calibration stage of the build (24 shapes measured here as
        the graph the build's precision ships in: this machine today, not the constants the CPU
        family model was calibrated with), else the device's calibrated model
        (:mod:`toolchain.devices.latency`), labelled so."""
        target = self.target
        if target.has_fitted_predictor() or not target.is_host:
            return target

        precision = precision_of(self.recipe)

        def calibrate(ctx) -> dict:
            rows = measure_shapes(
                design(24, seed=0), workdir=ctx.checkpoint_dir, rounds=2, precision=precision
            )
            fitted = FittedPredictor.fit(
                rows, device=target.name, runtime="onnxruntime", precision=precision
            )
            fitted.save(ctx.out_dir / f"{target.name}.json")
            return {"shapes": len(rows), "precision": precision}

        config = {"shapes": 24, "rounds": 2, "precision": precision}
        self._run(Stage("calibrate", calibrate, config=config))
        return target.with_predictors(self.run.stage_dir("calibrate"))

    def _search_stage(self, teacher: Teacher, agnostic: Path | None = None) -> Stage:
        from toolchain.nas.stage import search_stage

        r, cache = self.recipe, self.options.teacher_cache
        return search_stage(
            teacher_dir=str(teacher.dir),
            spec=self.spec,
            data_dir=r.data_dir,
            target=self.target,
            budgets=self.budgets,
            cfg=replace(r.search, precision=precision_of(r)),
            data_cfg=r.data,
            torch_device=self.options.torch_device,
            # trained supernets are kept beside the cached teachers: a later build that would
            # train the same one (same teacher, data and training settings) loads it
            supernet_cache=cache and Path(cache) / "supernets",
            agnostic_dir=agnostic,
        )

    def _select(self, search: SearchResult, teacher: Teacher) -> dict:
        """Distil the budgets' finalists (each subnet once; at most ``quality.max_distilled`` of
        them, see :func:`~toolchain.nas.budget.cap_finalists`) and choose per budget on the
        validation score after distillation. Returns budget name -> the record of the choice:
        ``{"arch", "score", "why", "shared_with", "finalists": [...]}`` (no "arch" when none of
        its finalists could be distilled)."""
        from toolchain.nas.budget import cap_finalists, choose_per_budget

        pools, finalists = {}, {}
        for b in self.budgets:
            choice = search.budgets[b.name]
            if not isinstance(choice, BudgetChoice):
                continue
            listed = choice.finalists or ([_as_finalist(choice)] if choice.model else [])
            pools[b.name] = [{"arch": f["arch"], "latency_ms": _speed(f)} for f in listed]
            for f in listed:
                finalists.setdefault(f["arch"], f)
        extras = self._extra_finalists(teacher)
        cap = self.recipe.quality.max_distilled
        kept = cap_finalists(self.budgets, pools, cap)
        skipped = {a: f"not distilled: over quality.max_distilled ({cap})" for a in finalists
                   if a not in kept}  # fmt: skip
        if skipped:
            log.info("distilling %d of %d pooled finalists (quality.max_distilled %d): %s",
                     len(kept), len(finalists), cap, ", ".join(kept))  # fmt: skip
        scores, errors = {a: None for a in skipped}, {}
        for arch, f in ((a, finalists[a]) for a in kept):
            try:
                metrics = self._distill(arch, f["model"], teacher)
                scores[arch] = (metrics.get("best_validation") or {}).get(self.spec.main_metric)
            except EdgecError as e:  # this finalist drops out; the others still compete
                log.error("distilling finalist %s failed: %s", arch, e)
                scores[arch], errors[arch] = None, str(e)
        for extra in extras:  # candidates besides the supernet's subnets (a CVT tagger)
            arch = extra["arch"]
            finalists[arch] = {"arch": arch, "accuracy_inherited": None}
            scores[arch] = extra.get("score")
            if extra.get("error"):
                errors[arch] = extra["error"]
            for name in extra.get("fits", ()):
                pools.setdefault(name, []).append({"arch": arch,
                                                   "latency_ms": extra["latency_ms"]})  # fmt: skip
        near_tie = self.recipe.quality.near_tie
        chosen = choose_per_budget(self.budgets, pools, scores, near_tie)
        out = {}
        for name, pool in pools.items():
            listed = [
                {
                    "arch": c["arch"],
                    "accuracy_inherited": finalists[c["arch"]]["accuracy_inherited"],
                    "validation_after_distill": scores.get(c["arch"]),
                    "latency_ms": c["latency_ms"],
                    **({"error": errors[c["arch"]]} if c["arch"] in errors else {}),
                    **({"skipped": skipped[c["arch"]]} if c["arch"] in skipped else {}),
                }
                for c in pool
            ]
            out[name] = {**chosen.get(name, {}), "near_tie": near_tie, "finalists": listed}
        for extra in extras:  # where an extra candidate does not fit: why, in the record
            for name, why in (extra.get("misses") or {}).items():
                entry = {"arch": extra["arch"], "accuracy_inherited": None,
                         "validation_after_distill": extra.get("score"),
                         "latency_ms": extra.get("latency_ms"), "skipped": why}  # fmt: skip
                out.setdefault(name, {"near_tie": near_tie, "finalists": []})
                out[name]["finalists"].append(entry)
        return out

    def _extra_finalists(self, teacher: Teacher) -> list[dict]:
        """Candidates besides the supernet's subnets, each ``{"arch", "score" (validation, the
        main metric), "latency_ms" (what ranks speed), "fits": [budget names]}`` and, if it
        failed, ``"error"``; a kind's plan adds them (:mod:`toolchain.plan_tagging`)."""
        return []

    def _build_extra(self, budget, picked: dict, teacher: Teacher, scorer, quality) -> dict:
        """The row of a budget that chose an extra candidate (see :meth:`_extra_finalists`)."""
        raise EdgecError(f"no stages build candidate {picked['arch']!r}")

    def _budget(self, budget, search: SearchResult, teacher: Teacher, scorer, selection, quality):
        """Build one budget's bundle: its chosen subnet's stages (shared with budgets that chose
        the same subnet), then the bundle; a row of build.json either way."""
        choice = search.budgets[budget.name]
        picked = selection.get(budget.name) or {}
        if (
            picked.get("arch")
            and not isinstance(choice, BudgetChoice)
            or (
                isinstance(choice, BudgetChoice)
                and picked.get("arch")
                and picked["arch"] not in {f["arch"] for f in choice.finalists} | {choice.subnet}
            )
        ):
            try:
                return self._build_extra(budget, picked, teacher, scorer, quality)
            except EdgecError as e:
                log.error("budget %s failed: %s", budget.name, e)
                return failed_row(budget, e)
        if not isinstance(choice, BudgetChoice):
            return unmet_row(budget, choice)
        if "arch" not in picked:
            why = "no finalist fits it" if not picked.get("finalists") else "every finalist failed"
            return failed_row(budget, EdgecError(f"{why} (see the search and distill stages)"))
        final = _as_choice(choice, picked["arch"])
        try:
            stages = self._subnet_stages(final, teacher)
            bundle = self._bundle_stage(budget, final, stages, search, scorer, quality)
            bundled = self._run(bundle)
            folder = self.run.stage_dir(self.bundle_stage(budget)) / self.bundle_name(budget)
            return budget_row(
                budget,
                final,
                folder,
                out=self.out,
                export=self.run.record(stages.export)["metrics"],
                quant=self.run.record(stages.quantize)["metrics"] if stages.quantize else {},
                bundled=bundled,
                quality=quality,
                device=self.target.name,
                selection={k: v for k, v in picked.items() if k != "finalists"},
            )
        except EdgecError as e:  # this budget fails; the others still build
            log.error("budget %s failed: %s", budget.name, e)
            return failed_row(budget, e)

    def _distill(self, subnet: str, model: str, teacher: Teacher) -> dict:
        """The distillation stage of a finalist, started from its extracted subnet (shared by
        every budget that shortlisted it); its metrics."""
        r = self.recipe
        stages = SubnetStages.of(subnet, r.quantize.method != "none")
        return self._run(replace(
            distill_stage(teacher_dir=str(teacher.dir), cfg=r.distill, data_cfg=r.data,
                          device=self.options.torch_device, name=stages.distill,
                          init_from=str(self.run.stage_dir("search") / model),
                          spec=self.spec, data_dir=r.data_dir),
            depends=("search",),
        ))  # fmt: skip

    def _subnet_stages(self, choice: BudgetChoice, teacher: Teacher) -> SubnetStages:
        """Distil (done already for a finalist), quantize and export the chosen subnet (stages
        shared by budgets)."""
        from toolchain.export.stage import export_stage
        from toolchain.quantize.stage import quantize_stage

        r, device = self.recipe, self.options.torch_device
        stages = SubnetStages.of(choice.subnet, r.quantize.method != "none")
        common = dict(spec=self.spec, data_dir=r.data_dir)
        self._distill(choice.subnet, choice.model, teacher)
        if stages.quantize:
            model = str(self.run.stage_dir(stages.distill))
            self._run(replace(
                quantize_stage(  # KDLSQ's teacher: the float student of the same shape
                    model_dir=model, teacher_dir=model, cfg=r.quantize, data_cfg=r.data,
                    device=device, name=stages.quantize, **common),
                depends=(stages.distill,),
            ))  # fmt: skip
        self._run(replace(
            export_stage(model_dir=str(self.run.stage_dir(stages.model)), cfg=r.export,
                         fmt=export_format(r, self.target), name=stages.export, **common),
            depends=(stages.model,),
        ))  # fmt: skip
        return stages

    @staticmethod
    def bundle_stage(budget: BudgetSpec) -> str:
        return f"bundle-{budget.name}"

    def bundle_name(self, budget: BudgetSpec) -> str:
        return f"{self.spec.name}-{self.target.name}-{budget.name}.edgec"

    def _bundle_stage(self, budget, choice, stages, search, scorer, quality: Quality) -> Stage:
        """Bundle the export and give it its latency from the device target: measured here
        (this host), measured by the device's agent, or predicted for it, each labelled so."""
        from toolchain.nas.space import Arch

        export_dir = self.run.stage_dir(stages.export)
        target, r = self.target, self.recipe

        def run(ctx) -> dict:
            folder = ctx.out_dir / self.bundle_name(budget)
            build_bundle(
                export_dir, folder, target=target, spec=self.spec, data_dir=r.data_dir,
                budget=budget, tarball=r.bundle.tarball, model_card=r.bundle.model_card,
            )  # fmt: skip
            shape = target.shape_of(Arch.parse(choice.subnet), budget, search.vocab or 30522)
            latency = target.latency_entry(folder, budget, shape, precision_of(r))
            return scored_bundle(folder, latency, scorer, quality, self.robustness)

        return Stage(
            self.bundle_stage(budget),
            run,
            config={
                "device": target.name,
                "budget": budget,
                "agent": bool(target.agent),
                "quality": [quality.metric, quality.teacher, quality.floor],
                "robustness": r.robustness,
            },
            depends=(stages.export,),
        )

    def robustness(self, folder: Path) -> dict | str:
        """The recipe's attacks run against the bundle (its own ONNX Runtime session) on a fixed
        seeded dev sample, or why not."""
        cfg, spec = self.recipe.robustness, self.spec
        if not cfg.enabled:
            return "not measured (robustness.enabled: false)"
        if spec.kind != "classification":
            return f"not measured: the attacks flip a predicted class; {spec.kind} has none"
        if "dev" not in spec.files:
            return "not measured: the task has no dev split"
        from toolchain.kinds.victims import robustness

        dev = load_split(spec, "dev", self.recipe.data_dir)
        return robustness(folder, spec, dev, attacks=cfg.attacks, n=cfg.samples, seed=cfg.seed)

    def _baseline(self, teacher: Teacher, scorer) -> dict:
        """The teacher as the task kind's baseline ships it (optimum + ONNX Runtime INT8 for
        sequence classification): dev accuracy, and p50/p90 measured on this host with the same
        timer as the bundles (labelled so: for another device it is compared only with bundles
        measured here too). It depends on the teacher alone: kept beside a cached teacher."""
        host = DeviceTarget.resolve("host")

        def run(ctx) -> dict:
            onnx = self.kind.baseline(teacher.dir, ctx.out_dir)
            proto = host.protocol
            return {
                "dev": scorer(onnx),
                "latency": host.measured_latency(onnx, proto.batch, proto.seq_len),
                "label": f"measured on {host.name} (this host)",
                "bytes": onnx.stat().st_size,
            }

        config = {"what": "optimum + ORT int8", "dev": self.spec.files.get("dev")}
        return self._run_baseline(teacher, run, config)

    def _run_baseline(self, teacher: Teacher, run, config: dict) -> dict:
        """The baseline stage ``run``, kept beside a cached teacher (or in the run directory);
        its metrics, or ``{"error"}`` when it fails (the bundles are still reported)."""
        cached = teacher.run is not self.run
        name = f"{teacher.stage}-ort-int8" if cached else "baseline"
        if cached and "baseline" in self.force:
            self.force.add(name)
        stage = Stage(name, run, config=config, inputs=(teacher.dir,))
        try:
            res = self._run(stage, run=teacher.run, label="baseline")
            return {**res, "dir": str(teacher.run.stage_dir(name))}
        except EdgecError as e:
            log.error("baseline failed: %s", e)
            return {"error": str(e)}


def scored_bundle(
    folder: Path, latency: dict, scorer, quality: Quality, robust: Callable | None = None
) -> dict:
    """A bundle stage's metrics: the bundle scored on the dev split and its latency, quality
    (beside the teacher and the trivial baseline, with its loyalty to the teacher) and
    robustness (``robust(folder)``: the attacks' figures, or why they were not run) written into
    its manifest."""
    dev = scorer(folder / "model.onnx")
    judged = quality.judge(dev)
    record = {
        "metric": quality.metric,
        "dev": dev.get(quality.metric),
        "teacher": quality.teacher,
        "trivial": (dev.get("vs_trivial") or {}).get("trivial"),
        "vs_trivial": dev.get("vs_trivial"),
        "floor": quality.floor,
        "floor_met": judged["floor_met"],
        "above_trivial": judged["above_trivial"],
    }
    for key in ("label_loyalty", "prob_loyalty", "loyalty_unit"):
        if key in dev:
            record[key] = dev[key]
    robustness = robust(folder) if robust is not None else None
    manifest = set_latency(folder, latency, record, robustness)
    return {"manifest": manifest, "dev": dev}


def _speed(finalist: dict) -> float:
    """What ranks a finalist's speed: its measured p50 where measured, else the prediction."""
    measured = finalist.get("measured") or {}
    return measured.get("p50_ms") or finalist["predicted"]["latency_ms"]


def _as_finalist(choice: BudgetChoice) -> dict:
    """A search record without finalists (an older search): its one subnet as the finalist."""
    return {
        "arch": choice.subnet,
        "shape": choice.shape,
        "params": choice.params,
        "accuracy_inherited": choice.accuracy_inherited,
        "predicted": choice.predicted,
        "measured": choice.measured,
        "model": choice.model,
    }


def _as_choice(choice: BudgetChoice, arch: str) -> BudgetChoice:
    """The budget's search record with the finalist chosen after distillation as its subnet."""
    if arch == choice.subnet and not choice.finalists:
        return choice
    f = next(f for f in choice.finalists if f["arch"] == arch)
    return replace(
        choice,
        subnet=arch,
        shape=f["shape"],
        params=f["params"],
        accuracy_inherited=f["accuracy_inherited"],
        predicted=f["predicted"],
        measured=f["measured"],
        model=f["model"],
    )


__all__ = [
    "BuildOptions",
    "BuildPlan",
    "SubnetStages",
    "export_format",
    "precision_of",
    "scored_bundle",
]
