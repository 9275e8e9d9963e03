"""Device profiles: the schema of ``profiles/*.yaml``, loading, aliases and name resolution.

A profile holds a device's hardware facts (each with its source), its runtimes and precisions,
its software stack, the measurement protocol, named latency/memory budgets and, optionally,
published latencies of known models on it (``latency_anchors``, each with its source), which
calibrate :mod:`toolchain.devices.latency`. Facts come from
``shared/reference/devices.md``; a fact that no source confirms is left out (null) rather than
guessed. The host profile (``facts_from_host: true``) reads its hardware from the running machine.

Example::

    >>> res = resolve_device("jetson")
    >>> res.profile.name, res.note
    ('jetson-orin-nano-8gb', "'jetson' is an alias: using profile jetson-orin-nano-8gb ...")
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolchain import schema
from toolchain.config import MAX_ITERATIONS, BudgetSpec
from toolchain.devices.facts import HOST_SOURCE, Hardware, SoftwareStack
from toolchain.devices.host import host_hardware, host_software
from toolchain.devices.names import (  # noqa: F401  (re-exported: where profiles live)
    PROFILE_PATH_ENV,
    builtin_profiles_dir,
    profile_dirs,
)
from toolchain.errors import ConfigError, UnknownDeviceError
from toolchain.schema import check_range, require

PROFILE_SCHEMA_VERSION = 1
# S<n>: shared/reference/devices.md sources; E<n>: checks made by edgec developers.
REFERENCE_TAG = re.compile(r"\b[SE]\d+[a-z]?\b")

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4", "int2"]
RuntimeName = Literal["onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "pytorch"]
Kind = Literal["embedded-gpu", "embedded-cpu", "host-cpu", "server-gpu"]


@dataclass(frozen=True)
class Runtime:
    name: RuntimeName
    precisions: tuple[Precision, ...]
    notes: str = ""

    def __post_init__(self):
        require(bool(self.precisions), "precisions", "list at least one precision")


@dataclass(frozen=True)
class MeasurementProtocol:
    warmup: int = 20
    iterations: int = 200
    repeats: int = 5
    batch: int = 1
    seq_len: int = 128
    percentile: float = 90.0
    threads: int | None = None  # CPU runtimes; None = all cores
    notes: str = ""

    def __post_init__(self):
        check_range(self, "iterations", lo=1, hi=MAX_ITERATIONS)
        check_range(self, "repeats", lo=1, hi=1000)
        check_range(self, "batch", lo=1, hi=65536)
        check_range(self, "seq_len", lo=1, hi=8192)
        check_range(self, "threads", lo=1, hi=1024)
        check_range(self, "warmup", lo=0, hi=MAX_ITERATIONS)
        check_range(self, "percentile", lo=50, hi=100)


@dataclass(frozen=True)
class LatencyAnchor:
    """A published latency of a known model on the device: what calibrates the analytic model
    (:mod:`toolchain.devices.latency`). The shape is the model's; ``seq`` the sequence length the
    work is counted at."""

    benchmark: str  # short name used in labels, e.g. "MLPerf BERT-99"
    model: str  # e.g. "BERT-Large"
    layers: int
    hidden: int
    heads: int
    ffn: int
    seq: int
    precision: Precision
    latency_ms: float
    runtime: RuntimeName
    software: str
    source: str  # a reference tag of the profile's references, e.g. "S32 (...)"
    batch: int = 1
    vocab: int = 30522
    percentile: float = 90.0
    notes: str = ""

    def __post_init__(self):
        for key in ("layers", "hidden", "heads", "ffn", "seq", "batch", "vocab"):
            check_range(self, key, lo=1)
        check_range(self, "latency_ms", lo=1e-6)
        check_range(self, "percentile", lo=50, hi=100)
        require(
            self.hidden % self.heads == 0,
            "heads",
            f"hidden {self.hidden} is not a multiple of heads {self.heads}",
        )


@dataclass(frozen=True)
class DeviceProfile:
    """One device: facts with sources, runtimes, software, protocol and named budgets."""

    schema_version: int
    name: str
    kind: Kind
    description: str
    runtimes: tuple[Runtime, ...]
    protocol: MeasurementProtocol
    budgets: tuple[BudgetSpec, ...]
    budget_rationale: str
    references: dict[str, str]
    hardware: Hardware | None = None
    facts_from_host: bool = False
    aliases: tuple[str, ...] = ()
    software: tuple[SoftwareStack, ...] = ()
    notes: tuple[str, ...] = ()
    latency_anchors: tuple[LatencyAnchor, ...] = ()
    # decoder LMs: budgets on time to first token, decode tokens/s and memory with the KV cache
    generation_budgets: tuple[BudgetSpec, ...] = ()
    generation_rationale: str = ""

    def __post_init__(self):
        require(
            self.schema_version == PROFILE_SCHEMA_VERSION,
            "schema_version",
            f"this edgec reads profile schema {PROFILE_SCHEMA_VERSION}, got {self.schema_version}",
        )
        require(
            bool(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", self.name)),
            "name",
            f"profile names are lower-case, got {self.name!r}",
        )
        require(
            self.hardware is not None or self.facts_from_host,
            "hardware",
            "missing 'hardware' (or set facts_from_host: true)",
        )
        require(bool(self.runtimes), "runtimes", "list at least one runtime")
        require(
            2 <= len(self.budgets) <= 3,
            "budgets",
            f"give 2-3 named budgets, got {len(self.budgets)}",
        )
        names = [b.name for b in self.budgets]
        require(
            len(set(names)) == len(names), "budgets", f"budget names must be unique, got {names}"
        )
        names = [b.name for b in self.generation_budgets]
        require(
            len(set(names)) == len(names),
            "generation_budgets",
            f"budget names must be unique, got {names}",
        )
        require(
            all(b.generation for b in self.generation_budgets),
            "generation_budgets",
            "every generation budget sets decode_tok_s and context_len",
        )
        self._check_citations()

    def _check_citations(self) -> None:
        cited: list[tuple[str, str]] = []
        hw = self.hardware
        sections = (
            []
            if hw is None
            else [
                ("hardware", hw),
                ("hardware.cpu", hw.cpu),
                ("hardware.memory", hw.memory),
                ("hardware.gpu", hw.gpu),
            ]
        )
        for path, section in sections:
            if section is None:
                continue
            cited += [(f"{path}.sources.{k}", v) for k, v in section.sources.items()]
        cited += [(f"software[{i}].source", s.source) for i, s in enumerate(self.software)]
        cited += [(f"latency_anchors[{i}].source", a.source)
                  for i, a in enumerate(self.latency_anchors)]  # fmt: skip
        for key, text in cited:
            if text.startswith(HOST_SOURCE):
                continue
            tags = REFERENCE_TAG.findall(text)
            if not tags:
                raise ConfigError(f"cite a reference tag (e.g. S3), got {text!r}", key=key)
            missing = [t for t in tags if t not in self.references]
            if missing:
                raise ConfigError(
                    f"cites {', '.join(missing)}, which 'references' does not define", key=key
                )

    # -- conveniences ----------------------------------------------------------------------
    def budget(self, name: str) -> BudgetSpec:
        for b in self.budgets:
            if b.name == name:
                return b
        raise ConfigError(
            f"device {self.name} has no budget '{name}'; its budgets: "
            + ", ".join(b.name for b in self.budgets)
        )

    @property
    def runtime_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.runtimes)

    @property
    def chipset(self) -> str:
        """What a model card calls the chipset: the GPU and the CPU the profile names, else its
        description."""
        hw = self.hardware
        parts = [x.model for x in (hw.gpu, hw.cpu) if x is not None and getattr(x, "model", None)]
        return " + ".join(parts) if hw is not None and parts else self.description

    def memory_summary(self) -> str:
        """``8 GB LPDDR5, 68 GB/s`` (or what is known)."""
        if self.hardware is None:
            return "?"
        mem = self.hardware.memory
        text = f"{mem.size_gb:g} GB {mem.type}"
        if mem.bandwidth_gbps:
            text += f", {mem.bandwidth_gbps:g} GB/s"
        return text


@dataclass(frozen=True)
class DeviceResolution:
    """How a requested device name was resolved."""

    profile: DeviceProfile
    requested: str
    via_alias: bool

    @property
    def note(self) -> str:
        if not self.via_alias:
            return ""
        return (
            f"'{self.requested}' is an alias: using profile {self.profile.name} "
            f"({self.profile.description})"
        )


def load_profile_file(path: str | Path) -> DeviceProfile:
    """Load and validate one profile YAML; the host profile gets this machine's facts."""
    path = Path(path)
    profile = schema.from_yaml_file(DeviceProfile, path)
    if profile.name != path.stem:
        raise ConfigError(
            f"profile name '{profile.name}' must match its file name '{path.stem}'",
            key="name",
            file=str(path),
        )
    if profile.facts_from_host:
        profile = dataclasses.replace(
            profile, hardware=host_hardware(), software=(host_software(), *profile.software)
        )
    return profile


@functools.lru_cache(maxsize=8)
def _load_all(dirs: tuple[Path, ...]) -> dict[str, DeviceProfile]:
    profiles: dict[str, DeviceProfile] = {}
    aliases: dict[str, str] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            profile = load_profile_file(path)
            if profile.name in profiles:
                continue  # earlier folders override later ones
            profiles[profile.name] = profile
            for alias in profile.aliases:
                if alias in aliases or alias in profiles:
                    owner = aliases.get(alias, alias)
                    raise ConfigError(
                        f"alias '{alias}' is already used by profile {owner}",
                        key="aliases",
                        file=str(path),
                    )
                aliases[alias] = profile.name
    if not profiles:
        raise ConfigError(
            "no device profiles found in "
            + ", ".join(str(d) for d in dirs)
            + "; reinstall edgec or set EDGEC_PROFILE_PATH"
        )
    return profiles


def list_profiles() -> list[DeviceProfile]:
    """Every known profile, sorted by name."""
    return sorted(_load_all(profile_dirs()).values(), key=lambda p: p.name)


def resolve_device(name: str) -> DeviceResolution:
    """Resolve a profile name, an alias, or a path to a profile YAML.

    Raises:
        UnknownDeviceError: listing the known names and aliases, closest first.
    """
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        return DeviceResolution(load_profile_file(name), name, via_alias=False)
    profiles = _load_all(profile_dirs())
    if name in profiles:
        return DeviceResolution(profiles[name], name, via_alias=False)
    for profile in profiles.values():
        if name in profile.aliases:
            return DeviceResolution(profile, name, via_alias=True)
    raise UnknownDeviceError(_unknown_device_message(name, profiles))


def get_profile(name: str) -> DeviceProfile:
    """The profile for a name, alias or path (see :func:`resolve_device`)."""
    return resolve_device(name).profile


def _unknown_device_message(name: str, profiles: dict[str, DeviceProfile]) -> str:
    def score(label: str) -> float:
        a, b = name.lower(), label.lower()
        return difflib.SequenceMatcher(None, a, b).ratio() + (0.5 if a in b or b in a else 0.0)

    def best(p: DeviceProfile) -> float:
        return max(score(label) for label in (p.name, *p.aliases))

    ranked = sorted(profiles.values(), key=lambda p: (-best(p), p.name))
    lines = []
    for p in ranked:
        aliases = f" (aliases: {', '.join(p.aliases)})" if p.aliases else ""
        lines.append(f"  {p.name}{aliases}")
    return (
        f"unknown device '{name}'. Known devices, closest first:\n"
        + "\n".join(lines)
        + "\nRun `edgec devices` for details, or pass the path of a profile YAML."
    )
