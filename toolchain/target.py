"""The device a build is for, resolved once from what the user typed (``--device``, and
``--target``/``--token-file`` or ``--pool`` for agents on it), and the one place that decides how a
latency is obtained there: measured on this host (when the device is this host), measured by the
device's `edgec agent` (or a pool of them, :mod:`toolchain.profile.pool`), or predicted (a fitted
predictor, else the calibrated model of :mod:`toolchain.devices.latency`, with its interval), each
labelled so.

Every stage that needs the device receives a :class:`DeviceTarget`; nothing else resolves a device
name. The search sees it only through two calls (``latency_for`` / ``shape_of`` to predict, and
``measure_candidates`` to measure), so :mod:`toolchain.nas` imports nothing above itself. Several
things to measure go through :meth:`DeviceTarget.measure_many`: at once over a pool's agents, one
after another on this host (two measurements here at once would disturb each other's timings).

Example::

    target = DeviceTarget.resolve("jetson", predictors_dir=default_predictors_dir())
    target.note          # "'jetson' is an alias: using profile jetson-orin-nano-8gb ..."
    shape = target.shape_of(Shape(3, 384, 12, 1536), target.profile.budgets[0], vocab=30522)
    target.latency_for(shape, "int8")    # {"latency_ms": ..., "label": "predicted ..."}
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.bundle.build import build_bundle
from toolchain.config import BudgetSpec, ProfileConfig
from toolchain.devices.predict import Shape, predictor_for
from toolchain.devices.profiles import (
    DeviceProfile,
    DeviceResolution,
    MeasurementProtocol,
    resolve_device,
)
from toolchain.errors import ConfigError
from toolchain.export.timing import SHIPPED_FORMAT, timing_onnx
from toolchain.profile.agent import read_token
from toolchain.profile.connections import client_tls
from toolchain.profile.local import budget_verdicts, run_worker
from toolchain.profile.pool import Agent, AgentPool
from toolchain.profile.poolfile import agents_for_device, read_pool_file
from toolchain.profile.runners import ProfileError

MEASURED_HERE = "measured here"
MEASURED_BY_AGENT = "measured by the agent"
PREDICTED = "predicted"
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_rss_mb")


@dataclass(frozen=True)
class DeviceTarget:
    """A device profile resolved from the user's words, and how latency is obtained on it.

    Attributes:
        profile: the resolved profile.
        requested: what the user typed (an alias, a name, or a profile path).
        is_host: the device is this machine (latencies are measured here).
        pool: the device's agents, when any were given (latencies are measured there, several
            things at once, one per agent); which are down is shared by every copy of the target.
        predictors_dir: folder of fitted predictors (``<device>.json``); None: the calibrated
            model.
        protocol: the profile's measurement protocol with the recipe's ``profile`` overrides.
    """

    profile: DeviceProfile
    requested: str
    is_host: bool
    pool: AgentPool | None = None
    predictors_dir: Path | None = None
    protocol: MeasurementProtocol = field(default_factory=MeasurementProtocol)
    via_alias: bool = False
    _predictors: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def resolve(
        cls,
        device: str,
        *,
        agent_url: str | Sequence[str] | None = None,
        token_file: str | None = None,
        predictors_dir: str | Path | None = None,
        overrides: ProfileConfig | None = None,
        ca_cert: str | None = None,
        pool_file: str | Path | None = None,
    ) -> DeviceTarget:
        """Resolve ``device`` (name, alias or profile path) once, with its agents and predictors.

        Args:
            agent_url: one agent's URL, or several (a pool), all with ``token_file`` and
                ``ca_cert``.
            pool_file: a pool file (:mod:`toolchain.profile.poolfile`); its agents of another
                device are left out, logged.

        Raises:
            UnknownDeviceError: the closest known names listed.
            ConfigError: an agent URL without a token file, a CA certificate without an agent, an
                agent given twice, a bad pool file or one without an agent of this device.
        """
        resolution = resolve_device(device)
        host = resolve_device("host").profile
        urls = [agent_url] if isinstance(agent_url, str) else list(agent_url or ())
        if ca_cert and not urls:
            raise ConfigError("--ca-cert goes with an https:// --target (the agent's certificate)")
        if urls and not token_file:
            raise ConfigError("--target needs --token-file F (the agent's token)")
        agents = [_agent(url, token_file, ca_cert) for url in urls]
        if pool_file:
            entries = agents_for_device(read_pool_file(pool_file), resolution.profile.name,
                                        pool_file)  # fmt: skip
            agents += [_agent(e.url, e.token_file, e.ca_cert) for e in entries]
        given = [a.url.rstrip("/") for a in agents]
        if twice := sorted({u for u in given if given.count(u) > 1}):
            raise ConfigError(f"an agent given twice (--target, --pool): {', '.join(twice)}")
        return cls(
            profile=resolution.profile,
            requested=device,
            is_host=resolution.profile.name == host.name,
            pool=AgentPool(agents) if agents else None,
            predictors_dir=Path(predictors_dir).resolve() if predictors_dir else None,
            protocol=_protocol(resolution.profile.protocol, overrides),
            via_alias=resolution.via_alias,
        )

    # -- facts ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def note(self) -> str:
        """How the name was resolved, when it was an alias ('' otherwise)."""
        return DeviceResolution(self.profile, self.requested, self.via_alias).note

    @property
    def agents(self) -> tuple[Agent, ...]:
        """The device's agents (a pool's, or the one given); () when there are none."""
        return self.pool.agents if self.pool is not None else ()

    @property
    def agent(self) -> Agent | None:
        """The first of the device's agents (the only one, without a pool), else None."""
        return self.agents[0] if self.agents else None

    @property
    def latency_source(self) -> str:
        """How this target's latencies are obtained: measured here, by the agent, or predicted."""
        if self.pool is not None:
            return MEASURED_BY_AGENT
        return MEASURED_HERE if self.is_host else PREDICTED

    @property
    def measurable(self) -> bool:
        return self.latency_source != PREDICTED

    def with_predictors(self, folder: str | Path | None) -> DeviceTarget:
        folder = Path(folder) if folder else None
        return dataclasses.replace(self, predictors_dir=folder, _predictors={})

    def has_fitted_predictor(self) -> bool:
        return bool(self.predictors_dir) and (self.predictors_dir / f"{self.name}.json").is_file()

    # -- prediction -----------------------------------------------------------------------------
    @staticmethod
    def shape_of(arch, budget: BudgetSpec, vocab: int) -> Shape:
        """The predictor's shape of an architecture (anything with ``layers`` as a count or the
        kept layers, ``hidden``, ``heads`` and ``ffn``) at the budget's batch and sequence."""
        layers = arch.layers if isinstance(arch.layers, int) else len(arch.layers)
        return Shape(
            layers=layers,
            hidden=arch.hidden,
            heads=arch.heads,
            ffn=arch.ffn,
            seq=budget.seq_len,
            batch=budget.batch,
            vocab=vocab,
        )

    def predictor(self, precision: str):
        """``predict(shape) -> {"latency_ms", "memory_mb", "label"}`` at ``precision``.

        Raises:
            ConfigError: the profile lacks the facts for a prediction and no predictor was
                fitted.
        """
        if precision not in self._predictors:
            try:
                self._predictors[precision] = predictor_for(
                    self.profile, self.predictors_dir, precision
                )
            except ValueError as e:
                raise ConfigError(
                    f"no latency predictor for {self.name} ({e}): run `edgec profile --device "
                    f"{self.name} --calibrate 48` on it, or complete the profile's facts"
                ) from None
        return self._predictors[precision]

    def latency_for(self, shape: Shape, precision: str) -> dict:
        """The predicted latency (and memory, where the predictor has one) of ``shape``."""
        return self.predictor(precision)(shape)

    # -- measurement ----------------------------------------------------------------------------
    def request(self, shapes, *, runtime: str = "onnxruntime", **overrides) -> dict:
        """The measurement request (the protocol, with ``overrides`` that are not None)."""
        proto = self.protocol
        request = {
            "shapes": [list(s) for s in shapes],
            "runtime": runtime,
            "threads": proto.threads,
            "warmup": proto.warmup,
            "iterations": proto.iterations,
            "repeats": proto.repeats,
        }
        request.update({k: v for k, v in overrides.items() if v is not None})
        if request["threads"] is None:
            del request["threads"]
        return request

    def measure(self, path: Path, shapes, *, runtime: str = "onnxruntime", **overrides) -> dict:
        """Measure ``path`` at ``shapes`` ((batch, seq) pairs) on the device: in a fresh process
        here when the device is this host, else through its agent (``path`` must then be a
        bundle; with a pool, another agent when one fails). Returns the report with ``label``,
        ``agent`` (the URL, where an agent measured it) and each of the profile's budgets judged.

        Raises:
            ProfileError: the device is neither this host nor reachable through an agent, or
                every agent of the pool failed.
        """
        return self.measure_many([(path, shapes)], runtime=runtime, **overrides)[0]

    def measure_many(
        self, jobs: Iterable[tuple[Path, Sequence]], *, runtime: str = "onnxruntime", **overrides
    ) -> list[dict]:
        """Measure every ``(path, shapes)`` of ``jobs`` as :meth:`measure` does, the reports in
        order: at once over the pool's agents (each agent one at a time), one after another on
        this host. ``jobs`` is read one item at a time while the agents measure (a generator
        may export each path as its turn comes).

        Example::

            reports = target.measure_many((b, [(1, 128)]) for b in bundles)
            [r["agent"] for r in reports]      # the agent that measured each
        """
        requests = ((Path(path), self.request(sorted(set(map(tuple, shapes))), runtime=runtime,
                                               **overrides)) for path, shapes in jobs)  # fmt: skip
        if self.pool is not None:
            reports = self.pool.measure_all(requests)
        elif self.is_host:  # never two at once: a second measurement would disturb the first's
            reports = [self._measure_here(path, request) for path, request in requests]
        else:
            host = resolve_device("host").profile.name
            raise ProfileError(
                f"{self.name} is not this machine ({host}): measure it on the device (`edgec "
                "agent` there, --target http://HOST:9600 here), or ask for a prediction; a "
                "figure measured here is never reported as the device's"
            )
        for report in reports:
            if "agent" in report:
                where = report.get("environment", {}).get("device") or self.name
                report["label"] = f"measured on {where} by the agent at {report['agent']}"
            report["device"] = self.name
            report["budgets"] = budget_verdicts(self.profile.budgets, report["results"])
        return reports

    def _measure_here(self, path: Path, request: dict) -> dict:
        report = run_worker({**request, "target": str(path)})
        report["label"] = f"measured on {self.name} ({report['environment']['cpu']})"
        return report

    def measured_latency(self, path: Path, batch: int, seq_len: int) -> dict:
        """``path`` measured on the device at one shape, as a manifest's latency entry:
        p50/p90/p99/mean, peak RSS, the shape, whether torch was loaded, and the label."""
        report = self.measure(path, [(batch, seq_len)])
        row = _row(report, (batch, seq_len))
        return {
            "status": "measured",
            **{k: row[k] for k in LATENCY_KEYS if k in row},
            "batch": batch,
            "seq_len": seq_len,
            "torch_loaded": report.get("environment", {}).get("torch_loaded"),
            **_by(report),
            "label": report["label"],
        }

    def latency_entry(self, folder: Path, budget: BudgetSpec, shape: Shape, precision: str) -> dict:
        """A bundle's latency for its manifest: measured (here or by the agent) at the budget's
        batch and sequence, else predicted for the device; the label says which."""
        if self.measurable:
            return self.measured_latency(folder, budget.batch, budget.seq_len)
        p = self.latency_for(shape, precision)
        return {
            "status": "predicted",
            "p90_ms": p["latency_ms"],
            "p90_lo_ms": p["latency_lo_ms"],
            "p90_hi_ms": p["latency_hi_ms"],
            "peak_rss_mb": p["memory_mb"],
            "peak_rss_hi_mb": p["memory_hi_mb"],
            "label": f"predicted for {self.name}, not measured: p90 {p['latency_ms']:.2f} ms "
            f"({p['latency_lo_ms']:.2f}-{p['latency_hi_ms']:.2f}), peak memory up to "
            f"{p['memory_hi_mb']:.0f} MB at batch {budget.batch}, sequence {budget.seq_len} "
            f"({p['label']})",
        }

    def measured_generation(self, path: Path, budget: BudgetSpec, *, rounds: int = 3) -> dict:
        """A decoder (an ONNX file here, a bundle through the agent) generating on the device:
        time to first token (p90 over ``rounds`` prompts of the budget's length), decode
        tokens/s (1000 / p90 step up to the budget's context) and the peak RSS of the measuring
        process, as a manifest's latency entry labelled with where it was measured."""
        shape = (1, budget.seq_len)
        gen = {"prompt": budget.seq_len, "context": budget.context_len, "rounds": rounds}
        report = self.measure(path, [shape], warmup=2, iterations=10, repeats=1,
                              generation=gen)  # fmt: skip
        g = report.get("generation")
        if not g:
            raise ProfileError(f"{self.name}: the measurement returned no generation figures")
        return {
            "status": "measured",
            **{k: g[k] for k in ("ttft_ms", "ttft_p50_ms", "step_ms", "step_p50_ms",
                                 "decode_tok_s", "decode_tok_s_p50", "prompt", "context",
                                 "rounds", "percentile") if k in g},
            "memory_mb": g["peak_rss_mb"],
            "memory_hi_mb": g["peak_rss_mb"],
            "prefill_p50_ms": _row(report, shape).get("p50_ms"),
            "torch_loaded": report.get("environment", {}).get("torch_loaded"),
            **_by(report),
            "label": f"{report['label']}: {rounds} prompts of {budget.seq_len} tokens decoded "
            f"greedily to {budget.context_len} positions; memory = peak RSS of the measuring "
            "process",
        }  # fmt: skip

    def measure_candidate(self, student, spec, budget: BudgetSpec, precision: str) -> dict | None:
        """Measure a search candidate (a plain model) as the ONNX its precision implies; None
        where the device cannot be measured. With agents, the candidate is bundled first."""
        return self.measure_candidates([student], lambda s: s, spec, budget, precision)[0]

    def measure_candidates(
        self, candidates: Sequence, make: Callable, spec, budget: BudgetSpec, precision: str
    ) -> list[dict | None]:
        """Measure search candidates at the budget's shape, as :meth:`measure_candidate` does:
        ``make(c)`` gives the plain model of each of ``candidates``, called here one at a time
        as its turn comes (exported, and bundled for agents, on this machine); the pool's agents
        measure them at once, this host one after another. Each figure names its ``agent``
        where one measured it; all None where the device cannot be measured."""
        if not self.measurable:
            return [None] * len(candidates)
        shape, formats = (budget.batch, budget.seq_len), {}
        with tempfile.TemporaryDirectory(prefix="edgec-search-") as tmp:

            def jobs():
                for i, c in enumerate(candidates):
                    path, formats[i] = self._candidate_file(make(c), spec, precision,
                                                            Path(tmp) / f"c{i}")  # fmt: skip
                    yield path, [shape]

            reports = self.measure_many(jobs())
        figures = []
        for i, report in enumerate(reports):
            row = _row(report, shape)
            figures.append({
                **{k: row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "peak_rss_mb")},
                "format": formats[i],
                "verdict": budget_verdicts([budget], [row])[0]["verdict"],
                **_by(report),
                "label": report["label"],
            })  # fmt: skip
        return figures

    def _candidate_file(self, student, spec, precision: str, folder: Path) -> tuple[Path, str]:
        """The candidate as the graph its precision ships in (the graph, not its values, sets
        the latency), bundled when an agent measures it; (path, format)."""
        folder.mkdir(parents=True)
        onnx, fmt = timing_onnx(student, folder, precision)
        if self.pool is None:
            return onnx, fmt
        student.tokenizer.save_pretrained(folder)
        bundle = folder.with_suffix(".edgec")
        build_bundle(folder, bundle, target=self, spec=spec, tarball=False)
        return bundle, fmt

    def candidate_note(self, count: int, precision: str) -> str:
        """What the search says about how its candidates were (or were not) measured."""
        if not self.measurable:
            host = resolve_device("host").profile.name
            return (
                f"not measured: {self.name} is not this machine ({host}) and no agent was given "
                "(--target URL --token-file F); the figures are predictions"
            )
        where = f"on this host ({self.name})"
        if len(self.agents) == 1:
            where = f"through the agent at {self.agent.url}"
        elif self.agents:
            down = self.pool.down
            urls = ", ".join(a.url + (f" (down: {down[a.url]})" if a.url in down else "")
                             for a in self.agents)  # fmt: skip
            where = f"through a pool of {len(self.agents)} agents at once ({urls})"

        fmt = SHIPPED_FORMAT.get(precision, precision)
        return f"top {count} measured {where} as {fmt} graphs (the format {precision} ships in)"


def _protocol(proto: MeasurementProtocol, overrides: ProfileConfig | None) -> MeasurementProtocol:
    """The profile's protocol with the recipe's ``profile.warmup/iterations/repeats/threads``."""
    if overrides is None:
        return proto
    given = {
        k: getattr(overrides, k)
        for k in ("warmup", "iterations", "repeats", "threads")
        if getattr(overrides, k) is not None
    }
    return dataclasses.replace(proto, **given)


def _agent(url: str, token_file: str, ca_cert: str | None) -> Agent:
    """An agent given by the user, its token read once; a CA file for an http:// URL refused."""
    client_tls(url, ca_cert)
    if ca_cert:  # used later, from whatever working directory: resolved against the user's
        ca_cert = str(Path(ca_cert).expanduser().resolve())
    return Agent(url, read_token(token_file), str(token_file), ca_cert)


def _by(report: dict) -> dict:
    """``{"agent": URL}`` where an agent measured ``report``, else nothing."""
    return {"agent": report["agent"]} if "agent" in report else {}


def _row(report: dict, shape: tuple[int, int]) -> dict:
    return next(r for r in report["results"] if (r["batch"], r["seq"]) == tuple(shape))


__all__ = ["Agent", "AgentPool", "DeviceTarget", "MEASURED_BY_AGENT", "MEASURED_HERE", "PREDICTED"]
