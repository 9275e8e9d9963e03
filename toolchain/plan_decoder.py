"""`edgec build` for decoder language models (GPT-2 and Llama families): one verified bundle per
generation budget of the device, each generating text on ONNX Runtime alone.

    teacher (the pretrained decoder saved as fp32 and scored; not fine-tuned) -> candidates
    (students by layer truncation, the DistilGPT-2 route, and by ETD width extraction, each with
    its time to first token, decode tokens/s and memory for every budget: measured on this host
    when the device is this host, else predicted, :mod:`toolchain.devices.generation`) -> per
    budget the candidates that fit, largest first, ``search.finalists`` of them; pooled, at most
    ``quality.max_distilled`` distilled (logit + hidden-state KD on the cleaned training text) ->
    per budget the lowest validation perplexity (near ties to the faster) -> KDLSQ, weight-only
    (MatMulNBits) -> export with the KV cache, parity against PyTorch -> bundle (TTFT, decode
    and memory measured here or predicted, labelled) -> baseline (the teacher, optimum + ONNX
    Runtime INT8) -> build.json and report.md

Why a search over truncated and extracted students rather than a decoder supernet: the encoder
supernet trains every subnet together for minutes on SST-2; a 135M-parameter decoder takes about
5 s per step of 1,024 tokens on 2 cores here, so the few shapes a budget can hold are distilled
directly, and each is the shape that ships (measured before choosing on this host). Students get
an untied LM head (a copy of the embedding table): the head is then quantized with the layers
(MatMulNBits) while the embedding stays a float gather.

Selection never sees the evaluation text: checkpoints and finalists are chosen on the validation
split (held-out articles of the training file, see :mod:`toolchain.data.tasks`), and the dev
split (``wiki.test.raw``) is scored once per bundle with the protocol of
:func:`toolchain.kinds.causal_lm.protocol`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

from toolchain import distributed as dist
from toolchain.config import BudgetSpec
from toolchain.devices.generation import decoder_shape, predict_generation
from toolchain.devices.latency import model_for
from toolchain.errors import EdgecError
from toolchain.export.generate import measure_generation
from toolchain.pipeline import Stage, _jsonable
from toolchain.plan import BuildPlan, Teacher, precision_of
from toolchain.presets import TIME_BUDGET
from toolchain.report import write_report
from toolchain.schema import to_dict as schema_dict

log = logging.getLogger(__name__)

NO_ATTACK = (
    "not measured: the attacks of toolchain.evaluate.attack flip a predicted class, and a "
    "language model has none; loyalty (next-token agreement, probability loyalty) is in quality"
)
HEAD = "causal-lm"


# -- candidates -------------------------------------------------------------------------------
def candidate_grid(shape) -> list[dict]:
    """The students tried for a teacher of :class:`~toolchain.models.adapters.Shape` ``shape``:
    layer truncation at 1/2, 1/3 and 1/5 of the depth (full width; uniform layers, as
    DistilGPT-2 keeps every other layer), and ETD width extraction at 1/3 and 1/5 of the depth
    with the FFN cut to 2/3 of its neurons by importance (heads, K/V groups and hidden size
    kept: extraction keeps whole K/V groups, and a query head must stay with its group, so
    fewer heads would break grouped-query attention's even grouping)."""
    from toolchain.models.adapters import Shape

    out = []
    depths = sorted({max(1, round(shape.layers / d)) for d in (2, 3, 5)}, reverse=True)
    kv = getattr(shape, "kv_heads", None)
    for d in depths:
        full = Shape(d, shape.hidden, shape.heads, shape.ffn, kv_heads=kv)
        out.append({"key": f"trunc-L{d}", "init": "truncation", "shape": full})
    ffn = max(1, round(shape.ffn * 2 / 3))
    for d in depths[1:]:
        s = Shape(d, shape.hidden, shape.heads, ffn, kv_heads=kv)
        out.append({"key": f"etd-L{d}-F{ffn}", "init": "etd-impt", "shape": s})
    return out


def untie_head(adapter) -> None:
    """Give ``adapter`` its own LM head, a copy of the (tied) embedding table."""
    import torch

    model = adapter.model
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    if head is not None and head.weight is emb.weight:
        head.weight = torch.nn.Parameter(emb.weight.detach().clone())
    model.config.tie_word_embeddings = False


def _rtn_export(adapter, folder: Path, precision: str, spec, data_dir, cfg) -> Path:
    """``adapter`` exported as the graph a model of ``precision`` ships in (round-to-nearest
    steps: the graph, not the values, sets the speed); for timing only."""
    import tempfile

    from toolchain.export.stage import export_model
    from toolchain.export.timing import SHIPPED_FORMAT
    from toolchain.quantize.calibrate import rtn
    from toolchain.quantize.convert import save_quantized
    from toolchain.quantize.modules import plan_modules, quantize_modules

    fmt = SHIPPED_FORMAT[precision]
    with tempfile.TemporaryDirectory(prefix="edgec-timing-") as tmp:
        if fmt == "fp32":
            src = Path(tmp) / "float"
            adapter.save(src)
        else:
            bits = {"int8": 8, "int4": 4, "int2": 2}[precision]
            quant = copy.deepcopy(adapter)
            plan = plan_modules(quant.model, weight_bits=bits, exclude=("*score*",))
            quantize_modules(quant.model, plan, act_bits=None)
            ids = quant.tokenizer(["a short example sentence"], return_tensors="pt")
            rtn(quant.model, [dict(ids)])
            src = save_quantized(quant, Path(tmp) / "packed")
            fmt = "nbits"
        export_model(src, folder, fmt=fmt, spec=spec, data_dir=data_dir, cfg=cfg)
    return folder / "model.onnx"


def fits(figures: dict, budget: BudgetSpec) -> tuple[bool, str]:
    """Whether ``figures`` (measured or predicted generation figures) meet ``budget``; the
    verdict's reason. A prediction must fit at its slow end; memory is always predicted."""
    measured = figures.get("status") == "measured"
    ttft = figures["ttft_ms"] if measured else figures["ttft_hi_ms"]
    rate = figures["decode_tok_s"] if measured else figures["decode_tok_s_lo"]
    memory = figures.get("memory_hi_mb", figures.get("memory_mb"))
    misses = []
    if ttft > budget.latency_ms:
        misses.append(f"TTFT {ttft:.1f} > {budget.latency_ms:g} ms")
    if rate < budget.decode_tok_s:
        misses.append(f"decode {rate:.1f} < {budget.decode_tok_s:g} tok/s")
    if memory is not None and memory > budget.memory_mb:
        misses.append(f"memory {memory:.0f} > {budget.memory_mb:g} MB")
    how = "measured" if measured else "predicted (slow end)"
    return not misses, (", ".join(misses) + f" ({how})") if misses else f"fits ({how})"


# -- the plan ---------------------------------------------------------------------------------
class DecoderBuildPlan(BuildPlan):
    """A decoder LM's build (see the module docstring); the stages, caching and resume are
    :class:`~toolchain.plan.BuildPlan`'s."""

    def execute(self) -> dict:
        started = time.perf_counter()
        r = self.recipe
        print(
            f"edgec build: {self.spec.name} (decoder LM) for {self.target.name}, budgets "
            f"{', '.join(b.name for b in self.budgets)} -> {self.out}",
            flush=True,
        )
        teacher = self._teacher()
        scorer = self.kind.dev_scorer(self.spec, teacher.dir, r.data_dir)
        cands = self._run(self._candidates_stage(teacher))["candidates"]
        selection, distilled = self._select(cands, teacher)
        teacher_dev = scorer.teacher()
        rows = [
            self._budget_lm(b, cands, selection, distilled, scorer, teacher_dev)
            for b in self.budgets
        ]
        summary = {
            "kind": "language-modeling",
            "task": self.spec.name,
            "device": self.target.name,
            "requested_device": self.target.requested,
            "metric": "perplexity",
            "protocol": teacher_dev["protocol"],
            "teacher": {
                "source": r.teacher,
                "dir": str(teacher.dir),
                "dev": teacher_dev,
                **_teacher_extra(teacher.metrics),
            },  # fmt: skip
            "trivial": scorer.trivial_scores(),
            "baseline": self._baseline(teacher, scorer),
            "candidates": cands,
            "selection": selection,
            "bundles": rows,
            "precision": precision_of(r),
            "quality": schema_dict(r.quality),
            "preset": {"name": r.preset, "time_budget": TIME_BUDGET.get(r.preset or "")},
            "stage_s": self.stage_s,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        if not dist.is_main():  # under torchrun the other ranks only trained with rank 0
            return {}
        (self.out / "build.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
        write_report(self.out)
        return summary

    # -- teacher ------------------------------------------------------------------------------
    def _teacher(self) -> Teacher:
        r = self.recipe
        stage = lm_teacher_stage(model=r.teacher, spec=self.spec, data_dir=r.data_dir,
                                 data_cfg=r.data, block=r.distill.max_seq_len)  # fmt: skip
        return self._teacher_in_cache(stage, f"{self.spec.name}-lm")

    # -- candidates ---------------------------------------------------------------------------
    def _candidates_stage(self, teacher: Teacher) -> Stage:
        r, target, budgets = self.recipe, self.target, self.budgets
        precision = precision_of(r)
        spec, data_dir = self.spec, r.data_dir

        def run(ctx) -> dict:
            from toolchain.data.readers import load_split
            from toolchain.distill.importance import importance as score_units
            from toolchain.distill.init import init_student
            from toolchain.models.loading import load_model

            t = load_model(teacher.dir, head=HEAD)
            grid = candidate_grid(t.shape)
            imp = None
            if any(c["init"] == "etd-impt" for c in grid):
                text = load_split(spec, "train", data_dir)[: r.distill.importance_samples]
                imp = score_units(t, spec, text, batch_size=8, max_len=r.distill.max_seq_len)
            model = _device_model(target, precision)
            vocab = t.vocab_size
            out = []
            for c in grid:
                student = init_student(t, c["shape"], c["init"], importance=imp, seed=ctx.seed)
                untie_head(student)
                folder = ctx.out_dir / c["key"]
                student.save(folder)
                gated = t.family == "llama"
                shape = decoder_shape(c["shape"], vocab=vocab, gated=gated)
                row = {"key": c["key"], "init": c["init"], "shape": str(c["shape"]),
                       "layers": c["shape"].layers, "params": student.num_parameters(),
                       "model": c["key"], "budgets": {}}  # fmt: skip
                timing = None
                if target.is_host and target.agent is None:
                    print(f"edgec build: timing candidate {c['key']} on this host", flush=True)
                    timing = _rtn_export(student, ctx.checkpoint_dir / c["key"], precision,
                                         spec, data_dir, r.export)  # fmt: skip
                for b in budgets:
                    fig = predict_generation(model, shape, prompt=b.seq_len,
                                             context=b.context_len)  # fmt: skip
                    fig = {"status": "predicted", **fig,
                           "label": f"predicted for {target.name}: {fig['label']}"}  # fmt: skip
                    if timing is not None:
                        fig = _measured(timing, b, fig, target.name, vocab)
                    ok, why = fits(fig, b)
                    row["budgets"][b.name] = {"fits": ok, "why": why, **fig}
                out.append(row)
                log.info(
                    "candidate %s: %s", c["key"], {k: v["why"] for k, v in row["budgets"].items()}
                )
            return {"candidates": out, "precision": precision}

        config = {"teacher": str(teacher.dir), "budgets": list(budgets), "precision": precision,
                  "device": target.name, "measured": target.is_host,
                  "importance_samples": r.distill.importance_samples, "export": r.export,
                  "max_seq_len": r.distill.max_seq_len}  # fmt: skip
        return Stage("candidates", run, config=config, inputs=(teacher.dir,))

    # -- selection ----------------------------------------------------------------------------
    def _select(self, cands: list[dict], teacher: Teacher) -> tuple[dict, dict]:
        """Distil the budgets' finalists and choose per budget on validation perplexity.
        Returns (budget -> choice record, key -> distillation metrics or {"error"})."""
        from toolchain.distill.stage import distill_stage
        from toolchain.nas.budget import cap_finalists, choose_per_budget

        r = self.recipe
        k = max(1, r.search.finalists)
        pools = {}
        for b in self.budgets:
            fitting = [c for c in cands if c["budgets"][b.name]["fits"]]
            fitting.sort(key=lambda c: -c["params"])  # the largest that fits first
            pools[b.name] = [{"arch": c["key"], "latency_ms": c["budgets"][b.name]["ttft_ms"]}
                             for c in fitting[:k]]  # fmt: skip
        kept = cap_finalists(self.budgets, pools, r.quality.max_distilled)
        distilled, scores = {}, {}
        for key in kept:
            try:
                m = self._run(replace(
                    distill_stage(teacher_dir=str(teacher.dir), cfg=r.distill, data_cfg=r.data,
                                  device=self.options.torch_device, name=f"distill-{key}",
                                  init_from=str(self.run.stage_dir("candidates") / key),
                                  spec=self.spec, data_dir=r.data_dir),
                    depends=("candidates",),
                ))  # fmt: skip
                ppl = (m.get("best_validation") or {}).get("perplexity")
                distilled[key] = m
                scores[key] = -math.log(ppl) if ppl else None
            except EdgecError as e:
                log.error("distilling %s failed: %s", key, e)
                distilled[key], scores[key] = {"error": str(e)}, None
        for a in {c["arch"] for p in pools.values() for c in p} - set(kept):
            scores[a] = None
        # a budget may also take a student distilled for another budget that fits it (its own
        # finalists may have been left out by quality.max_distilled)
        for b in self.budgets:
            listed = {c["arch"] for c in pools[b.name]}
            pools[b.name] += [{"arch": c["key"], "latency_ms": c["budgets"][b.name]["ttft_ms"]}
                              for c in cands if c["key"] in kept and c["key"] not in listed
                              and c["budgets"][b.name]["fits"]]  # fmt: skip
        chosen = choose_per_budget(self.budgets, pools, scores, r.quality.near_tie)
        out = {}
        for b in self.budgets:
            pick = chosen.get(b.name)
            listed = [{"key": c["arch"], "ttft_ms": c["latency_ms"],
                       "validation_perplexity": _ppl(scores.get(c["arch"])),
                       **({"error": distilled[c["arch"]]["error"]}
                          if "error" in distilled.get(c["arch"], {}) else {}),
                       **({"skipped": "over quality.max_distilled"} if c["arch"] not in kept
                          else {})}
                      for c in pools[b.name]]  # fmt: skip
            rec = {"finalists": listed}
            if pick:
                rec.update(key=pick["arch"], validation_perplexity=_ppl(pick["score"]),
                           why=pick["why"].replace("accurate", "loyal to the text"),
                           shared_with=pick["shared_with"])  # fmt: skip
            out[b.name] = rec
        return out, distilled

    # -- one budget ---------------------------------------------------------------------------
    def _budget_lm(self, budget, cands, selection, distilled, scorer, teacher_dev) -> dict:
        pick = selection[budget.name]
        base = {"budget": budget.name, "ttft_budget_ms": budget.latency_ms,
                "decode_budget_tok_s": budget.decode_tok_s, "memory_budget_mb": budget.memory_mb,
                "prompt": budget.seq_len, "context": budget.context_len}  # fmt: skip
        if "key" not in pick:
            closest = min(cands, key=lambda c: c["budgets"][budget.name]["ttft_ms"])
            why = ("no candidate fits it" if not pick["finalists"]
                   else "every finalist failed to distil")  # fmt: skip
            return {**base, "built": False, "met": False,
                    "error": f"{why}; the closest candidate: {closest['key']} "
                             f"({closest['budgets'][budget.name]['why']})"}  # fmt: skip
        key = pick["key"]
        try:
            model_stage = self._quantize_export(key)
            bundled = self._run(self._lm_bundle_stage(budget, key, model_stage, scorer,
                                                      teacher_dev))  # fmt: skip
        except EdgecError as e:
            log.error("budget %s failed: %s", budget.name, e)
            return {**base, "built": False, "met": False, "key": key, "error": str(e)}
        cand = next(c for c in cands if c["key"] == key)
        folder = self.run.stage_dir(self.bundle_stage(budget)) / self.bundle_name(budget)
        lat, dev = bundled["latency"], bundled["dev"]
        ok, why = fits(lat, budget)
        floor = teacher_dev["perplexity"] * (1 + self.recipe.quality.perplexity_floor)
        floor_met = dev["perplexity"] <= floor
        above = dev["vs_trivial"]["above"]
        quant = (
            self.run.record(f"quantize-{key}")["metrics"]
            if self.recipe.quantize.method != "none"
            else {}
        )
        export = self.run.record(f"export-{key}")["metrics"]
        return {
            **base,
            "built": True,
            "key": key,
            "shape": cand["shape"],
            "init": cand["init"],
            "params": cand["params"],
            "bundle": str(folder),
            "format": export.get("format"),
            "onnx_mb": round(export.get("bytes", 0) / 2**20, 2),
            "parity": export.get("parity"),
            "validation_perplexity": pick.get("validation_perplexity"),
            "distill_s": (distilled.get(key) or {}).get("wall_s"),
            "quantize": {k: quant.get(k) for k in ("bits", "size_mb", "dev") if k in quant},
            "dev": dev,
            "latency": lat,
            "fits": why,
            "floor": round(floor, 3),
            "floor_met": floor_met,
            "above_trivial": above,
            "met": ok and floor_met and above,
            "verdict": _verdict(ok, why, floor_met, floor, above, dev)
            + (
                f" ({lat['status']} on {self.target.name})"
                if lat["status"] == "measured"
                else f" (predicted for {self.target.name})"
            ),
            "why": pick.get("why"),
            "shared_with": pick.get("shared_with"),
        }

    def _quantize_export(self, key: str) -> str:
        from toolchain.export.stage import export_stage
        from toolchain.quantize.stage import quantize_stage

        r, common = self.recipe, dict(spec=self.spec, data_dir=self.recipe.data_dir)
        model = f"distill-{key}"
        if r.quantize.method != "none":
            floating = str(self.run.stage_dir(model))
            self._run(replace(
                quantize_stage(model_dir=floating, teacher_dir=floating, cfg=r.quantize,
                               data_cfg=r.data, device=self.options.torch_device,
                               name=f"quantize-{key}", **common),
                depends=(model,),
            ))  # fmt: skip
            model = f"quantize-{key}"
        fmt = "nbits" if r.quantize.method != "none" else "fp32"
        self._run(replace(
            export_stage(model_dir=str(self.run.stage_dir(model)), cfg=r.export, fmt=fmt,
                         name=f"export-{key}", **common),
            depends=(model,),
        ))  # fmt: skip
        return f"export-{key}"

    def _lm_bundle_stage(self, budget, key, export_stage_name, scorer, teacher_dev) -> Stage:
        from toolchain.bundle.build import build_bundle, set_latency

        export_dir = self.run.stage_dir(export_stage_name)
        target, r = self.target, self.recipe

        def run(ctx) -> dict:
            folder = ctx.out_dir / self.bundle_name(budget)
            build_bundle(export_dir, folder, target=target, spec=self.spec, data_dir=r.data_dir,
                         budget=budget, tarball=r.bundle.tarball,
                         model_card=r.bundle.model_card)  # fmt: skip
            latency = self._generation_latency(folder, budget, key)
            dev = scorer(folder / "model.onnx")
            record = {"metric": "perplexity", "dev": dev["perplexity"],
                      "teacher": teacher_dev["perplexity"],
                      "trivial": dev["vs_trivial"]["trivial"],
                      "next_token_agreement": dev["next_token_agreement"],
                      "prob_loyalty": dev["prob_loyalty"], "protocol": dev["protocol"]}  # fmt: skip
            set_latency(folder, latency, record, NO_ATTACK)
            return {"latency": latency, "dev": dev}

        return Stage(self.bundle_stage(budget), run,
                     config={"device": target.name, "budget": budget, "key": key,
                             "teacher_ppl": teacher_dev["perplexity"]},
                     depends=(export_stage_name,))  # fmt: skip

    def _baseline(self, teacher: Teacher, scorer) -> dict:
        """The teacher as optimum + ONNX Runtime INT8 ship it, scored on the dev blocks and
        measured on this host at the first budget's prompt and context (labelled so), kept
        beside a cached teacher."""
        from toolchain.export.onnx import session

        b = self.budgets[0]

        def run(ctx) -> dict:
            onnx = self.kind.baseline(teacher.dir, ctx.out_dir)
            m = measure_generation(session(onnx), prompt=b.seq_len, context=b.context_len,
                                   vocab=_vocab(onnx.parent))  # fmt: skip
            return {"dev": scorer(onnx), "latency": m, "bytes": onnx.stat().st_size,
                    "label": "measured on this host (ONNX Runtime CPU)"}  # fmt: skip

        config = {
            "what": "optimum KV export + ORT dynamic int8",
            "prompt": b.seq_len,
            "context": b.context_len,
            "protocol": scorer.teacher()["protocol"],
        }
        return self._run_baseline(teacher, run, config)

    def _generation_latency(self, folder: Path, budget: BudgetSpec, key: str) -> dict:
        """The bundle's TTFT, decode speed and peak memory: measured in a fresh process on the
        device (this host, or through its agent), else predicted for it (the label says
        which)."""
        cand = next(c for c in self.run.record("candidates")["metrics"]["candidates"]
                    if c["key"] == key)  # fmt: skip
        predicted = cand["budgets"][budget.name]
        if self.target.measurable:  # this host, or the device through its agent
            measured = self.target.measured_generation(folder, budget)
            before = {k: predicted.get(k) for k in ("status", "ttft_ms", "ttft_hi_ms",
                      "decode_tok_s", "decode_tok_s_lo", "memory_mb", "memory_hi_mb")}  # fmt: skip
            return {**measured, "candidate": before}
        keep = ("ttft_ms", "ttft_lo_ms", "ttft_hi_ms", "step_ms", "step_hi_ms", "decode_tok_s",
                "decode_tok_s_lo", "memory_mb", "memory_hi_mb", "kv_cache_mb", "prompt",
                "context", "percentile", "bound")  # fmt: skip
        return {"status": "predicted", **{k: predicted[k] for k in keep if k in predicted},
                "label": predicted["label"] + " (the candidate's float shape at the build's "
                "precision; not measured)"}  # fmt: skip


def _verdict(fit: bool, why: str, floor_met: bool, floor: float, above: bool, dev: dict) -> str:
    misses = [] if fit else [why]
    if not floor_met:
        misses.append(f"perplexity floor ({dev['perplexity']:.2f} > {floor:.2f})")
    if not above:
        trivial = dev["vs_trivial"]["trivial"]
        misses.append(f"worse than the unigram trivial baseline ({trivial:.2f})")
    return "NOT MET: " + "; ".join(misses) if misses else "met"


def _device_model(target, precision: str):
    try:
        return model_for(target.profile, precision)
    except ValueError as e:
        raise EdgecError(f"no generation predictor for {target.name}: {e}") from None


def _measured(onnx: Path, budget: BudgetSpec, predicted: dict, device: str, vocab: int) -> dict:
    from toolchain.export.onnx import session

    m = measure_generation(session(onnx), prompt=budget.seq_len, context=budget.context_len,
                           vocab=vocab, rounds=2)  # fmt: skip
    return {**m, "status": "measured", "predicted": {k: predicted[k] for k in
            ("ttft_ms", "ttft_hi_ms", "decode_tok_s", "decode_tok_s_lo")},
            "memory_mb": predicted["memory_mb"], "memory_hi_mb": predicted["memory_hi_mb"],
            "label": f"measured on {device} (this host: the candidate's graph with "
                     "round-to-nearest weights); memory predicted"}  # fmt: skip


def _vocab(folder: Path) -> int:
    from toolchain.export.onnx import session

    sess = session(folder / "model.onnx")
    return int(next(o for o in sess.get_outputs() if o.name == "logits").shape[-1] or 1000)


def _ppl(score):
    return None if score is None else round(math.exp(-score), 4)


def _teacher_extra(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("validation", "cleaning", "parameters", "shape", "finetuned")
            if k in metrics}  # fmt: skip


# -- the teacher stage --------------------------------------------------------------------------
def lm_teacher_stage(*, model: str, spec, data_dir, data_cfg, block: int) -> Stage:
    """The pretrained decoder as the build's teacher: loaded (a folder or a .gguf), saved as a
    plain fp32 Hugging Face folder, the training text cleaned (per-rule counts recorded) and the
    validation perplexity measured. Not fine-tuned: a pretrained LM is its own task head."""
    from toolchain.models.teacher import teacher_inputs

    def run(ctx) -> dict:
        from toolchain.data.clean import clean
        from toolchain.data.readers import load_split
        from toolchain.evaluate.evaluate import evaluate
        from toolchain.models.loading import load_model

        adapter = load_model(model, head=HEAD)
        if not getattr(adapter, "is_decoder", False):
            raise EdgecError(f"{model}: not a decoder LM ({adapter.family}); a language-modelling "
                             "build needs a GPT-2 or Llama-family model")  # fmt: skip
        adapter.save(ctx.out_dir)
        train, report = clean(load_split(spec, "train", data_dir), data_cfg)
        validation = load_split(spec, "validation", data_dir)
        val = evaluate(adapter, spec, validation, max_len=block, desc="validation")
        metrics = {"model": model, "finetuned": False, "shape": str(adapter.shape),
                   "parameters": adapter.num_parameters(), "validation": val,
                   "cleaning": {**report.as_dict(), "train_lines_kept": len(train)}}  # fmt: skip
        (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics

    config = {"model": model, "task": spec.name, "task_spec": spec, "data": data_cfg,
              "block": block, "what": "pretrained decoder, not fine-tuned"}  # fmt: skip
    return Stage("teacher", run, config=config, inputs=teacher_inputs(model, spec, data_dir))


__all__ = ["DecoderBuildPlan", "candidate_grid", "fits", "lm_teacher_stage", "untie_head"]
