"""`edgec build` for tagging tasks (named entities, chunking): the encoder plan
(:class:`~toolchain.plan.BuildPlan`: teacher, supernet search, distilled finalists, KDLSQ,
export, bundles), plus, with ``cvt.enabled`` (``--candidates cvt``), a Cross-View Training
BiLSTM tagger (:mod:`toolchain.cvt`) as one more finalist of every budget it fits.

    ... search -> cvt (training on the labelled and unlabelled text) -> export-cvt (dynamic INT8
    for a quantized recipe, else float; parity against PyTorch) -> measure-cvt (a bundle of it
    timed on the device: this host, or through the device's agent) -> per budget, the CVT
    tagger joins the distilled finalists that fit it and is chosen by the same rule (validation
    score, near ties to the faster) -> bundle-BUDGET

Where the latency is not measurable (another device without an agent), the CVT tagger is not a
candidate: edgec's latency predictors model transformer layers, not LSTMs, and a budget is never
called met on a guess. The tagger is timed at the budget's batch with as many **words** as the
budget's sequence has sub-tokens (a sentence has fewer words than sub-tokens, so this favours
the transformer).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from toolchain.bundle.build import build_bundle
from toolchain.errors import EdgecError
from toolchain.pipeline import Stage
from toolchain.plan import BuildPlan, Teacher, scored_bundle
from toolchain.summary import budget_row, judge_latency

log = logging.getLogger(__name__)
CVT = "cvt"


class TaggingBuildPlan(BuildPlan):
    """A tagging task's build (see the module docstring)."""

    def _extra_finalists(self, teacher: Teacher) -> list[dict]:
        if not self.recipe.cvt.enabled:
            return []
        try:
            trained = self._run(self._cvt_stage(teacher))
            self._run(self._cvt_export_stage())
            timing = self._run(self._cvt_measure_stage())
        except EdgecError as e:  # the transformer finalists still compete
            log.error("the CVT candidate failed: %s", e)
            return [{"arch": CVT, "score": None, "error": str(e)}]
        score = (trained.get("best_validation") or {}).get(self.spec.main_metric)
        out = {"arch": CVT, "score": score, "fits": [], "misses": {}, "latency_ms": None}
        for b in self.budgets:
            lat = timing["latency"].get(_shape_key(b))
            if lat is None:
                out["misses"][b.name] = timing.get("why") or "not measured"
                continue
            judged = judge_latency(b, lat)
            out["latency_ms"] = lat.get("p50_ms")
            if judged["latency_met"] and judged["memory_met"] is not False:
                out["fits"].append(b.name)
            else:
                out["misses"][b.name] = (
                    f"does not fit (measured {judged['judged_on']} {judged['judged_ms']} ms, "
                    f"peak {judged['memory_judged_mb']} MB)"
                )
        return [out]

    # -- stages -------------------------------------------------------------------------------
    def _cvt_stage(self, teacher: Teacher) -> Stage:
        from toolchain.cvt.train import train_cvt

        r, spec = self.recipe, self.spec

        def run(ctx) -> dict:
            return train_cvt(ctx.out_dir, spec=spec, data_dir=r.data_dir, cfg=r.cvt,
                             data_cfg=r.data, teacher=teacher.dir, seed=ctx.seed,
                             checkpoint_dir=ctx.checkpoint_dir,
                             device=self.options.torch_device)  # fmt: skip

        config = {"cvt": r.cvt, "data": r.data, "task": spec.name, "files": spec.files}
        return Stage(CVT, run, config=config, inputs=(teacher.dir,))

    def _cvt_format(self) -> str:
        return "fp32" if self.recipe.quantize.method == "none" else "int8-dynamic"

    def _cvt_export_stage(self) -> Stage:
        from toolchain.cvt.export import export_stage

        r = self.recipe
        return replace(
            export_stage(self.run.stage_dir(CVT), f"export-{CVT}", spec=self.spec,
                         fmt=self._cvt_format(), parity_samples=r.export.parity_samples,
                         data_dir=r.data_dir),
            inputs=(), depends=(CVT,),
        )  # fmt: skip

    def _cvt_measure_stage(self) -> Stage:
        """The CVT tagger's latency at each budget shape: a bundle of it measured on the
        device (fresh process here, or the agent), or why it cannot be."""
        target, spec, r = self.target, self.spec, self.recipe
        export_dir = self.run.stage_dir(f"export-{CVT}")
        budgets = self.budgets

        def run(ctx) -> dict:
            if not target.measurable:
                return {
                    "latency": {},
                    "why": f"not measurable on {target.name} from here (no agent), and edgec "
                    "has no latency model for BiLSTMs: the CVT tagger is not a candidate",
                }
            folder = ctx.out_dir / f"{spec.name}-{target.name}-{CVT}.edgec"
            build_bundle(export_dir, folder, target=target, spec=spec, data_dir=r.data_dir,
                         budget=budgets[0], tarball=False, model_card=False)  # fmt: skip
            latency = {}
            for b in budgets:
                key = _shape_key(b)
                if key not in latency:
                    latency[key] = target.measured_latency(folder, b.batch, b.seq_len)
            return {"latency": latency}

        config = {"device": target.name, "agent": bool(target.agent),
                  "shapes": sorted({_shape_key(b) for b in budgets})}  # fmt: skip
        return Stage(f"measure-{CVT}", run, config=config, depends=(f"export-{CVT}",))

    def _build_extra(self, budget, picked: dict, teacher: Teacher, scorer, quality) -> dict:
        if picked["arch"] != CVT:
            return super()._build_extra(budget, picked, teacher, scorer, quality)
        export_dir = self.run.stage_dir(f"export-{CVT}")
        target, r, spec = self.target, self.recipe, self.spec
        stage_name = self.bundle_stage(budget)

        def run(ctx) -> dict:
            folder = ctx.out_dir / self.bundle_name(budget)
            build_bundle(export_dir, folder, target=target, spec=spec, data_dir=r.data_dir,
                         budget=budget, tarball=r.bundle.tarball,
                         model_card=r.bundle.model_card)  # fmt: skip
            latency = target.measured_latency(folder, budget.batch, budget.seq_len)
            return scored_bundle(folder, latency, scorer, quality, self.robustness)

        stage = Stage(stage_name, run, config={"device": target.name, "budget": budget,
                                               "candidate": CVT, "agent": bool(target.agent),
                                               "quality": [quality.metric, quality.teacher,
                                                           quality.floor]},
                      depends=(f"export-{CVT}",))  # fmt: skip
        bundled = self._run(stage)
        trained = self.run.record(CVT)["metrics"]
        shape = SimpleNamespace(
            subnet=CVT,
            shape=_cvt_shape(self.run.stage_dir(CVT)),
            params=trained.get("params"),
        )
        folder = self.run.stage_dir(stage_name) / self.bundle_name(budget)
        export = self.run.record(f"export-{CVT}")["metrics"]
        int8 = export.get("format") == "int8-dynamic"
        return budget_row(budget, shape, folder, out=self.out, export=export,
                          quant={"a_bits": 8, "w_bits": 8} if int8 else {}, bundled=bundled,
                          quality=quality, device=target.name,
                          selection={k: v for k, v in picked.items()
                                     if k != "finalists"})  # fmt: skip


def _shape_key(budget) -> str:
    return f"b{budget.batch}-s{budget.seq_len}"


def _cvt_shape(model_dir: Path) -> str:
    import json

    s = json.loads((Path(model_dir) / "config.json").read_text())["cvt_shape"]
    return (f"CVT:E{s['word_dim']}:C{s['char_filters']}:L1x{s['hidden']}:"
            f"L2x{s['hidden2']}:P{s['proj']}")  # fmt: skip


__all__ = ["CVT", "TaggingBuildPlan"]
