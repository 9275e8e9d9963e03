"""Calibrated latency and memory of a BERT-like encoder on a device that cannot be measured here.

What
----
For a device profile and a precision, :func:`model_for` gives ``predict(shape)``: the p90 latency
(the protocol percentile) of ``Shape(layers, hidden, heads, ffn, seq, batch, vocab)`` with an
interval, and the peak process memory with an upper end::

    t90 = t0 + layers x kernels_per_layer x tau
          + max(FLOPs / (eta x peak), bytes moved / (beta x bandwidth))
    memory = runtime base + weights at the precision (embedding table included) + activations

``peak`` and ``bandwidth`` are the profile's facts (dense GPU TOPS/TFLOPS for the precision, or a
CPU's cores x clock x FLOPs/cycle); ``eta`` (achievable fraction of that peak, per precision
class), ``tau`` (per-kernel launch overhead), ``t0`` (per-inference overhead),
``kernels_per_layer`` and ``beta`` (achievable fraction of the bandwidth) belong to the device's
*family* (:data:`FAMILIES`). ``tau`` and ``t0`` are CPU work (driver calls, the runtime's
scheduling): they are stated at a reference CPU clock and scaled by ``ref_ghz / device GHz``.

Why hand-written
----------------
No library predicts TensorRT-on-Jetson latency from published figures: learned predictors
(nn-Meter, HELP) need measurements of the device, which is what ``edgec profile --calibrate`` does
for this host, and the bare roofline (``predict.roofline``: 100 % of peak, no launch overhead) put
every subnet at 0.01-0.1 ms on a Jetson, so no budget ever bit. What is published are MLPerf
Inference BERT-99 SingleStream p90 latencies (BERT-Large: 24 layers, hidden 1024, FFN 4096; seq
384; INT8; batch 1) of five Jetsons (``latency_anchors`` in their profiles, source S32): one number
per device, enough for eta once tau and t0 are fixed.

Parameters and provenance
-------------------------
* eta, Jetson families: fitted. Each anchored device's eta reproduces its anchors given the priors
  (geometric mean over its anchors); the family's is the geometric mean over its devices. MLPerf's
  SingleStream engine uses variable-length kernels (``bert_opt_seqlen`` 270, S33), so the real
  work is at most that of seq 384 and the fitted eta is conservative (predictions err slow).
  jetson-ampere 0.71 (AGX Orin 64GB 0.76 over its two anchors, Orin NX 16GB 0.66); jetson-volta
  0.41 (AGX Xavier 0.40, Xavier NX 0.41). A precision class with no anchor (FP16, FP32) uses the
  INT8 eta, labelled "assumed", with the compute term's band at x/÷ 2.
* eta, families with no anchor: jetson-maxwell (Nano) borrows jetson-volta's, datacenter-hopper
  (H100) jetson-ampere's; labelled "assumed", with the compute term's band at x/÷ 2.
* tau = 10 us per kernel at a 2.0 GHz Arm core, t0 = 0.1 ms, 8 kernels per layer (Jetsons): priors,
  labelled assumptions. No published Jetson launch figure was found; CUDA launches cost ~5-50 us
  of host time (stored pages on launch overhead), TensorRT inference on an Orin-class Arm CPU has
  been seen bound by the CPU-side launches (NVIDIA forum: "Question about inference using TensorRT
  API", Orin Drive vs x86), and the demoBERT plugin graph has about 8 kernels a layer (QKV GEMM,
  fused attention, output GEMM, skip-LayerNorm, FFN GEMM+GELU, FFN GEMM, skip-LayerNorm, a
  reformat). t0: enqueue, two small copies and a stream sync. H100: tau 5 us (x86 server host),
  t0 0.05 ms, not clock-scaled (the profile has no CPU).
* beta = 0.7 (Jetson LPDDR, H100 HBM): assumption. CPUs 0.3: the Pi copy benchmarks reach 2.8 of
  12.8 GB/s (Pi 4) and 5.5-6.2 of 17 GB/s (Pi 5) (S26, S26b).
* cpu-onnxruntime: t0, the per-layer overhead and eta fitted on this project's host measurements
  (:data:`CPU_CALIBRATION`: 48 shapes of benchmarks/results/profile.json, 2026-11-21, ONNX Runtime
  FP32, p50); INT8 eta from the teacher's dynamic-INT8 row of benchmarks/results/export.json,
  INT4/INT2 (MatMulNBits) from their measured speed relative to FP32 there; INT8 on a CPU without
  dot products assumed as fast as FP32; p90 = 1.08 x p50 (median of export.json's batch-1 rows).
  Nothing under benchmarks/ is read at run time; the host profile has no clock, so its 2.596 GHz
  is assumed for it.
  eta_fp32 = 1.01 of the formula peak (32 FP32 FLOPs/cycle for AVX-512 at 2.596 GHz): this host's
  flags (avx512_vp2intersect) mark a Zen 5 core, which likely issues 64, so on another ISA (Arm
  NEON, whose 16 FLOPs/cycle the formula counts right) eta is halved (assumption, band x/÷ 2).
* Memory: TensorRT base 450 MB (250-900), assumption: CUDA context 287 MB with lazy loading vs
  667 MB eager (pytorch PR 86509), "around 800 MB to load cuBLAS/cuDNN/TensorRT" (NVIDIA forum,
  TRT 5); weights x2 (the plan and the engine are both resident while it loads), two layers of
  activations. ONNX Runtime CPU: base 64.5 MB + 1.64 x weights + 0.21 x activations, fitted on the
  host's RSS (CPU_CALIBRATION).

Intervals: the overhead terms carry +-50 % (priors); the compute term the family's cross-device
error (at least 10 %: two devices are few), x/÷ 2 with no anchor; on the calibration host the
p90 of its held-out relative errors.

Measured (:func:`cross_device_check`: eta fitted on one device's anchor, the other's predicted;
the goal was |error| <= 15 %, the priors were fixed before): AGX Orin 64GB -> Orin NX 16GB 12.98
vs 14.40 ms (-9.9 %), Orin NX -> AGX Orin 6.21 vs 5.705 ms (+8.8 %), AGX Xavier -> Xavier NX
47.93 vs 46.41 ms (+3.3 %), Xavier NX -> AGX Xavier 29.01 vs 29.94 ms (-3.1 %). Host held-out
check (``predict.host_check``: fitted on the 48 calibration shapes, 24 held out): latency mean
|error| 11.9 %, p90 32 %, worst -39 % (tiny hidden-64 shapes, where non-GEMM work dominates);
memory mean 2.2 %, p90 4 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolchain.devices.profiles import get_profile, list_profiles

BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5, "int2": 0.25}
# FLOPs per cycle per core of one fused multiply-add pipe set, fp32; int8 dot products x4
_CPU_FP32_FLOPS_PER_CYCLE = (("avx512f", 32), ("avx2", 32), ("asimd", 16), ("neon", 16))
_DOT_PRODUCT = {"avx512_vnni", "avx_vnni", "asimddp", "dotprod"}
PERCENTILE = 90
OVERHEAD_BAND = 0.5  # +- on the prior overhead terms (t0, tau)
UNANCHORED_BAND = 1.0  # the compute term x/÷ (1 + band) where no anchor supports eta
MIN_FAMILY_BAND = 0.10  # floor on a family's cross-device error: two devices are few
ISA_TRANSFER = 0.5  # eta of the x86 calibration host applied to another ISA (see docstring)
MB = 2**20


@dataclass(frozen=True)
class Shape:
    """An encoder pass of (batch, seq) tokens, or a decoder's (``kv_hidden``: grouped-query K/V
    width; ``ffn_mats``: 3 for a gated FFN; ``lm_head``: logits over the vocabulary at every
    position; ``cached``: positions already in the KV cache, attended to but not recomputed)."""

    layers: int
    hidden: int
    heads: int
    ffn: int
    seq: int
    batch: int = 1
    vocab: int = 30522
    kv_hidden: int | None = None
    ffn_mats: int = 2
    lm_head: bool = False
    cached: int = 0

    @property
    def kv(self) -> int:
        return self.hidden if self.kv_hidden is None else self.kv_hidden

    def _layer_weights(self) -> int:
        """Q and O (2·H²), K and V (2·H·kv), the FFN (ffn_mats·H·F)."""
        h = self.hidden
        return 2 * h * h + 2 * h * self.kv + self.ffn_mats * h * self.ffn

    def gemm_flops(self) -> float:
        """Dense projections (see :meth:`_layer_weights`) and the LM head, 2 FLOPs per MAC."""
        tokens = self.batch * self.seq
        head = self.vocab * self.hidden if self.lm_head else 0
        return 2.0 * tokens * (self.layers * self._layer_weights() + head)

    def attention_flops(self) -> float:
        """Scores and context: 2 · B · S · (cached + S) · H per layer, 2 FLOPs per MAC."""
        span = self.cached + self.seq
        return 2.0 * self.layers * 2 * self.batch * self.seq * span * self.hidden

    def flops(self) -> float:
        return self.gemm_flops() + self.attention_flops()

    def weights(self) -> int:
        """Weights read by every pass: the layers, and the LM head where there is one (the
        embedding table is a gather: see :meth:`embedding`)."""
        head = self.vocab * self.hidden if self.lm_head else 0
        return self.layers * self._layer_weights() + head

    def embedding(self) -> int:
        return self.vocab * self.hidden

    def kv_cache_bytes(self, context: int | None = None) -> float:
        """Float32 keys and values of ``context`` positions (default: cached + seq)."""
        n = self.cached + self.seq if context is None else context
        return 4.0 * 2 * self.layers * self.batch * n * self.kv

    def activation_bytes(self) -> float:
        """Float32 activations written and read once per layer (hidden, FFN, scores), and the
        KV cache a decode step reads."""
        span = self.cached + self.seq
        per_layer = self.batch * self.seq * (4 * self.hidden + self.ffn)
        per_layer += self.batch * self.heads * self.seq * span
        cache = self.kv_cache_bytes(self.cached) if self.cached else 0.0
        return 4.0 * self.layers * per_layer + cache


# -- peaks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peak:
    ops: float  # operations per second
    cls: str  # which eta applies: "int8", "fp16", "fp32"; on a CPU also "int4", "int2"
    text: str


def peak_ops(profile, precision: str) -> Peak:
    """The dense peak of ``profile``'s device at ``precision`` and what it assumed.

    Raises:
        ValueError: an unknown precision, or a profile without the facts for a peak.
    """
    if precision not in BYTES_PER_WEIGHT:
        raise ValueError(f"unknown precision {precision!r}; expected {', '.join(BYTES_PER_WEIGHT)}")
    if profile.hardware.gpu is not None:
        return _gpu_peak(profile.name, profile.hardware.gpu, precision)
    return _cpu_peak(profile, precision)


def _gpu_peak(name: str, gpu, precision: str) -> Peak:
    fp16 = gpu.fp16_tflops_dense
    if precision == "int8" and gpu.int8_tops_dense:
        return Peak(
            gpu.int8_tops_dense * 1e12, "int8", f"GPU dense INT8 {gpu.int8_tops_dense:g} TOPS"
        )
    if precision != "fp32" and fp16:
        why = " (no INT8 tensor cores: runs FP16)" if precision == "int8" else ""
        if precision in ("int4", "int2"):
            why = f" ({precision.upper()} weight-only: FP16 GEMMs)"
        return Peak(fp16 * 1e12, "fp16", f"GPU dense FP16 {fp16:g} TFLOPS{why}")
    if gpu.fp32_tflops:
        return Peak(gpu.fp32_tflops * 1e12, "fp32", f"GPU FP32 {gpu.fp32_tflops:g} TFLOPS")
    if gpu.cuda_cores and gpu.max_mhz:
        ops = gpu.cuda_cores * 2 * gpu.max_mhz * 1e6
        how = f"derived: {gpu.cuda_cores} cores x 2 x {gpu.max_mhz:g} MHz"
        text = f"GPU FP32 {ops / 1e12:.2f} TFLOPS ({how})"
        return Peak(ops, "fp32", text)
    if fp16:
        return Peak(fp16 / 2 * 1e12, "fp32", f"GPU TF32 {fp16 / 2:g} TFLOPS (assumed: FP16 / 2)")
    raise ValueError(f"{name}: no GPU peak for {precision} in the profile")


def _cpu_peak(profile, precision: str) -> Peak:
    cpu = profile.hardware.cpu
    ghz, note = cpu.max_ghz if cpu is not None else None, ""
    if cpu is not None and not ghz and profile.facts_from_host:
        ghz = CPU_CALIBRATION.ghz
        note = f" (the profile has no clock: {ghz:g} GHz of the calibration host assumed)"
    if cpu is None or not ghz:
        raise ValueError(f"{profile.name}: no peak compute in the profile (GPU TFLOPS or CPU GHz)")
    features = set(cpu.features) | {cpu.isa}
    per_cycle = next((f for k, f in _CPU_FP32_FLOPS_PER_CYCLE if k in features), 8)
    # INT8 GEMMs use dot products x4 where the ISA has them; int4/int2 (MatMulNBits) have their
    # own eta against the FP32 peak: their measured speed relative to FP32 (CPU_CALIBRATION)
    factor = 4 if _DOT_PRODUCT & features and precision == "int8" else 1
    cls = "int8" if factor == 4 else precision if precision in ("int4", "int2") else "fp32"
    text = f"CPU {cpu.cores} cores x {ghz:g} GHz x {per_cycle} FLOPs/cycle"
    text += (" x 4 (int8 dot products)" if factor > 1 else "") + note
    return Peak(cpu.cores * ghz * 1e9 * per_cycle * factor, cls, text)


# -- the CPU family's calibration (this project's host) ---------------------------------------
@dataclass(frozen=True)
class CpuCalibration:
    """Constants fitted on the host measurements (re-derived by tests/devices/test_latency.py)."""

    date: str
    source: str
    machine: str
    cores: int
    ghz: float
    isa: str
    n: int
    t0_ms: float  # p50, at ``ghz``
    per_layer_ms: float
    eta: dict[str, float]  # by precision class, of the formula peak (see _cpu_peak)
    eta_source: dict[str, str]
    p90_over_p50: float
    holdout_p90: float  # relative latency error on the held-out shapes
    memory_base_mb: float
    memory_weights: float  # x the weights' bytes at the precision, embedding included
    memory_activations: float  # x the float32 activation bytes of all layers
    memory_holdout_p90: float


CPU_CALIBRATION = CpuCalibration(
    date="2026-11-21",
    source="benchmarks/results/profile.json (48 calibration + 24 held-out shapes, ONNX Runtime "
    "FP32, p50 of the least disturbed of 5 rounds, peak RSS)",
    machine="AMD EPYC (Zen 5 flags), 2 cores, 2.596 GHz by /proc/cpuinfo",
    cores=2,
    ghz=2.596,
    isa="x86_64",
    n=48,
    t0_ms=0.0,  # fitted; the non-negative fit drops it (a negative t0 fits slightly better)
    per_layer_ms=0.0543,
    eta={"fp32": 1.010, "int8": 0.562, "int4": 1.133, "int2": 0.484},
    eta_source={
        "fp32": "fitted on the 48 calibration shapes (FP16 runs at FP32 speed: export.json)",
        "int8": "the MiniLM-L6 teacher, ONNX Runtime dynamic INT8, batch 1, seq 128, p50 8.008 "
        "ms (benchmarks/results/export.json), against the x4 dot-product peak",
        "int4": "MatMulNBits (accuracy level 4) ran the student 8.992/8.014 = 1.12x as fast as "
        "FP32 (export.json): eta_fp32 x 1.122, against the FP32 peak",
        "int2": "the same for 2-bit weights: 8.992/18.749 = 0.48x (export.json)",
    },
    p90_over_p50=1.08,  # median of the 16 batch-1 rows of export.json
    holdout_p90=0.32,
    memory_base_mb=64.49,
    memory_weights=1.645,
    memory_activations=0.208,
    memory_holdout_p90=0.04,
)


# -- families -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Parameters shared by the devices of one kind (see the module docstring for provenance)."""

    name: str
    runtime: str  # the runtime of its anchors and memory model
    t0_ms: float
    tau_us: float
    kernels_per_layer: int
    ref_ghz: float | None  # CPU clock t0 and tau are stated at; None: not scaled
    beta: float
    act_bytes: dict[str, float]  # bytes per activation element, by precision class
    calibration: str  # "anchors" (fitted on profiles' latency_anchors), "host", "borrowed"
    eta_from: str | None = None  # "borrowed": whose fitted eta
    percentile_factor: float = 1.0  # p90 / the percentile eta was fitted at


_GPU_ACT = {"int8": 1.0, "fp16": 2.0, "fp32": 4.0}
_CPU_ACT = dict.fromkeys(("fp32", "int8", "int4", "int2"), 4.0)  # ORT CPU: FP32 activations


def _tensorrt(name: str, calibration: str, eta_from=None, t0_ms=0.1, tau_us=10.0, ref_ghz=2.0):
    return Family(name, "tensorrt", t0_ms, tau_us, 8, ref_ghz, 0.7, _GPU_ACT, calibration, eta_from)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        _tensorrt("jetson-ampere", "anchors"),
        _tensorrt("jetson-volta", "anchors"),
        _tensorrt("jetson-maxwell", "borrowed", eta_from="jetson-volta"),
        _tensorrt("datacenter-hopper", "borrowed", "jetson-ampere", 0.05, 5.0, ref_ghz=None),
        Family(
            name="cpu-onnxruntime",
            runtime="onnxruntime-cpu",
            t0_ms=CPU_CALIBRATION.t0_ms,
            tau_us=CPU_CALIBRATION.per_layer_ms * 100,  # 10 ONNX Runtime ops a layer, nominal
            kernels_per_layer=10,
            ref_ghz=CPU_CALIBRATION.ghz,
            beta=0.3,
            act_bytes=_CPU_ACT,
            calibration="host",
            percentile_factor=CPU_CALIBRATION.p90_over_p50,
        ),
    )
}
_GPU_FAMILY = {
    "ampere": "jetson-ampere",
    "volta": "jetson-volta",
    "maxwell": "jetson-maxwell",
    "hopper": "datacenter-hopper",
}


def family_of(profile) -> Family:
    """The family whose parameters ``profile``'s device takes (by GPU architecture; CPU-only
    devices are cpu-onnxruntime)."""
    gpu = profile.hardware.gpu
    if gpu is None:
        return FAMILIES["cpu-onnxruntime"]
    if gpu.arch not in _GPU_FAMILY:
        raise ValueError(
            f"{profile.name}: no latency family for GPU architecture {gpu.arch!r} "
            f"(known: {', '.join(_GPU_FAMILY)})"
        )
    return FAMILIES[_GPU_FAMILY[gpu.arch]]


def _clock_scale(family: Family, profile) -> float:
    cpu = profile.hardware.cpu
    if family.ref_ghz is None or cpu is None or not cpu.max_ghz:
        return 1.0
    return family.ref_ghz / cpu.max_ghz


def _overhead_ms(family: Family, profile, layers: int) -> float:
    per_layer = family.kernels_per_layer * family.tau_us / 1000
    return (family.t0_ms + layers * per_layer) * _clock_scale(family, profile)


def _work_ms(family: Family, profile, shape: Shape, precision: str, eta: float) -> tuple:
    """(compute ms, memory ms, bytes moved) of ``shape``'s work term."""
    peak = peak_ops(profile, precision)
    compute = shape.flops() / (eta * peak.ops) * 1e3
    act = family.act_bytes.get(peak.cls, 4.0)
    moved = shape.weights() * BYTES_PER_WEIGHT[precision] + shape.activation_bytes() / 4 * act
    bandwidth = profile.hardware.memory.bandwidth_gbps
    memory = moved / (family.beta * bandwidth * 1e9) * 1e3 if bandwidth else 0.0
    return compute, memory, moved


# -- anchors: eta per device and per family ------------------------------------------------------
def anchor_shape(anchor) -> Shape:
    return Shape(anchor.layers, anchor.hidden, anchor.heads, anchor.ffn, anchor.seq,
                 anchor.batch, anchor.vocab)  # fmt: skip


def eta_for_anchor(family: Family, profile, anchor) -> float:
    """The eta with which the model reproduces ``anchor`` on ``profile`` given the priors.

    Raises:
        ValueError: the priors alone (or the memory term) already exceed the anchor.
    """
    shape = anchor_shape(anchor)
    left = anchor.latency_ms - _overhead_ms(family, profile, shape.layers)
    _, memory, _ = _work_ms(family, profile, shape, anchor.precision, 1.0)
    if left <= memory:
        raise ValueError(f"{profile.name}: the overhead priors and memory term exceed its anchor")
    return shape.flops() / (left / 1e3 * peak_ops(profile, anchor.precision).ops)


def _anchor_ms(family: Family, profile, anchor, eta: float) -> float:
    shape = anchor_shape(anchor)
    compute, memory, _ = _work_ms(family, profile, shape, anchor.precision, eta)
    return _overhead_ms(family, profile, shape.layers) + max(compute, memory)


def _usable(family: Family, profile) -> list:
    return [
        a
        for a in getattr(profile, "latency_anchors", ())
        if a.runtime == family.runtime and a.percentile == PERCENTILE
    ]


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass(frozen=True)
class FamilyFit:
    """A family's eta fitted on the anchors of its devices."""

    family: str
    eta: float
    cls: str  # the precision class of the anchors
    per_device: dict[str, float]
    spread: float  # max |error| predicting one device's anchors with another's eta (0: one device)
    benchmarks: tuple[str, ...] = field(default=())

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.per_device)


def fit_family(family: Family, members) -> FamilyFit | None:
    """The family's eta from the anchors of ``members`` (profiles); None where none has one."""
    anchored = {p.name: (p, _usable(family, p)) for p in members if _usable(family, p)}
    if not anchored:
        return None
    per_device = {
        name: _geomean(eta_for_anchor(family, p, a) for a in anchors)
        for name, (p, anchors) in anchored.items()
    }
    errors = [
        _anchor_ms(family, p, a, per_device[src]) / a.latency_ms - 1
        for src in anchored
        for dst, (p, anchors) in anchored.items()
        if dst != src
        for a in anchors
    ]
    first = next(iter(anchored.values()))
    cls = peak_ops(first[0], first[1][0].precision).cls
    benchmarks = sorted({a.benchmark for _, anchors in anchored.values() for a in anchors})
    return FamilyFit(family.name, _geomean(per_device.values()), cls, per_device,
                     max((abs(e) for e in errors), default=0.0), tuple(benchmarks))  # fmt: skip


def _members(family: Family, profile) -> list:
    """The shipped (and ``$EDGEC_PROFILE_PATH``) profiles of ``family``, and ``profile`` itself
    where it belongs to it (a profile given as a path)."""
    found = [p for p in list_profiles() if _family_name(p) == family.name]
    if _family_name(profile) == family.name and profile.name not in {p.name for p in found}:
        found.append(profile)
    return found


def _family_name(profile) -> str | None:
    try:
        return family_of(profile).name
    except ValueError:
        return None


# -- eta of one device at one precision ----------------------------------------------------------
@dataclass(frozen=True)
class Eta:
    value: float
    work_band: float  # relative band of the compute term
    overhead_band: float  # relative band of t0 and the launch term
    memory_band: float  # relative band of the memory model (beyond its base's own range)
    source: str  # "calibrated" | "assumed"
    basis: str  # what the label says it rests on


def _isa_class(isa: str) -> str:
    if isa in ("x86_64", "amd64", "x86-64"):
        return "x86"
    return "arm" if isa.startswith(("arm", "aarch64")) else isa


def _cpu_eta(profile, cls: str) -> Eta:
    c = CPU_CALIBRATION
    eta = c.eta.get(cls, c.eta["fp32"])
    basis = f"CPU family calibrated on {c.n} shapes measured on {c.machine.split(',')[0]}, {c.date}"
    isa = _isa_class(profile.hardware.cpu.isa)
    if isa == _isa_class(c.isa):
        return Eta(eta, c.holdout_p90, c.holdout_p90, c.memory_holdout_p90, "calibrated", basis)
    basis += f", eta x{ISA_TRANSFER:g} for {isa} (assumed; no {isa} anchor)"
    return Eta(eta * ISA_TRANSFER, UNANCHORED_BAND, *[OVERHEAD_BAND] * 2, "calibrated", basis)


def _anchored_eta(family: Family, profile, cls: str) -> Eta:
    fit = fit_family(family, _members(family, profile))
    if fit is None:
        raise ValueError(f"{profile.name}: no latency anchor in family {family.name}")
    basis = f"calibrated on {', '.join(fit.benchmarks)} anchors of {', '.join(fit.devices)}"
    if cls != fit.cls:
        why = f"no {cls.upper()} anchor: eta assumed = the {fit.cls.upper()} one {fit.eta:.2f}"
        return Eta(fit.eta, UNANCHORED_BAND, *[OVERHEAD_BAND] * 2, "assumed", f"{why}, {basis}")
    band = max(fit.spread, MIN_FAMILY_BAND)
    return Eta(fit.eta, band, *[OVERHEAD_BAND] * 2, "calibrated", basis)


def _eta(family: Family, profile, cls: str) -> Eta:
    if family.calibration == "host":
        return _cpu_eta(profile, cls)
    if family.calibration == "anchors":
        return _anchored_eta(family, profile, cls)
    source = FAMILIES[family.eta_from]
    fit = fit_family(source, _members(source, profile))
    if fit is None:
        raise ValueError(f"{profile.name}: family {source.name} has no anchor to borrow")
    basis = (
        f"no anchor for this family ({family.name}); eta assumed = {source.name}'s fitted "
        f"{fit.cls.upper()} eta {fit.eta:.2f}"
    )
    return Eta(fit.eta, UNANCHORED_BAND, *[OVERHEAD_BAND] * 2, "assumed", basis)


# -- memory -------------------------------------------------------------------------------------
TRT_BASE_MB = (250.0, 450.0, 900.0)  # lo, point, hi: CUDA context + TensorRT runtime (assumption)


def _memory_mb(family: Family, shape: Shape, precision: str, cls: str, band: float) -> tuple:
    """(point, lo, hi, what it assumed) of the peak process memory in MB."""
    weights = (shape.weights() + shape.embedding()) * BYTES_PER_WEIGHT[precision] / MB
    if family.runtime == "tensorrt":
        two_layers = 2 * shape.activation_bytes() / shape.layers / 4 * family.act_bytes[cls] / MB
        rest, (lo, base, hi) = 2 * weights + two_layers, TRT_BASE_MB
        text = f"TensorRT base {base:g} MB ({lo:g}-{hi:g}, assumed) + 2 x weights + 2 layers"
        return base + rest, lo + rest * (1 - band), hi + rest * (1 + band), text
    c = CPU_CALIBRATION
    rest = c.memory_weights * weights + c.memory_activations * shape.activation_bytes() / MB
    base = c.memory_base_mb
    text = f"ONNX Runtime base {base:g} MB + {c.memory_weights:g} x weights (host fit, {c.date})"
    return base + rest, (base + rest) * (1 - band), (base + rest) * (1 + band), text


# -- the model of one device at one precision --------------------------------------------------
@dataclass(frozen=True)
class DeviceModel:
    """``predict(shape)`` for one device at one precision (see :func:`model_for`)."""

    profile: object  # DeviceProfile
    precision: str
    family: Family
    peak: Peak
    eta: Eta

    def predict(self, shape: Shape) -> dict:
        """The p90 latency and peak memory of ``shape``, each with its interval and label."""
        fam, eta = self.family, self.eta
        ovh = _overhead_ms(fam, self.profile, shape.layers)
        compute, memory, moved = _work_ms(fam, self.profile, shape, self.precision, eta.value)
        work, f = max(compute, memory), fam.percentile_factor
        point = (ovh + work) * f
        lo = (ovh * (1 - eta.overhead_band) + work / (1 + eta.work_band)) * f
        hi = (ovh * (1 + eta.overhead_band) + work * (1 + eta.work_band)) * f
        memory_mb = _memory_mb(fam, shape, self.precision, self.peak.cls, eta.memory_band)
        mem, mem_lo, mem_hi, mem_text = memory_mb
        band = f"-{100 * (1 - lo / point):.0f}%/+{100 * (hi / point - 1):.0f}%"
        bound = "overhead" if ovh >= work else "compute" if compute >= memory else "memory"
        return {
            "latency_ms": round(point, 4),
            "latency_lo_ms": round(lo, 4),
            "latency_hi_ms": round(hi, 4),
            "memory_mb": round(mem, 1),
            "memory_lo_mb": round(mem_lo, 1),
            "memory_hi_mb": round(mem_hi, 1),
            "percentile": PERCENTILE,
            "label": f"predicted ({eta.basis}; {band})",
            "source": eta.source,
            "bound": bound,
            "flops": shape.flops(),
            "bytes": moved,
            "assumed": self.assumed() + f"; memory: {mem_text}",
        }

    def assumed(self) -> str:
        fam, scale = self.family, _clock_scale(self.family, self.profile)
        bandwidth = self.profile.hardware.memory.bandwidth_gbps
        text = f"{fam.name}: {self.peak.text} x eta {self.eta.value:.3f}"
        text += f"; {bandwidth:g} GB/s x beta {fam.beta:g}" if bandwidth else "; no bandwidth"
        text += (
            f"; t0 {fam.t0_ms * scale:.3g} ms + {fam.kernels_per_layer} kernels/layer x "
            f"{fam.tau_us * scale:.3g} us"
        )
        return text + (
            f"; p90 = {fam.percentile_factor:g} x p50" if fam.percentile_factor != 1 else ""
        )


def model_for(profile, precision: str) -> DeviceModel:
    """The calibrated model of ``profile``'s device at ``precision``.

    Example::

        model_for(get_profile("jetson"), "int8").predict(Shape(6, 384, 12, 1536, 128))

    Raises:
        ValueError: an unknown precision, or a profile that lacks a peak (see :func:`peak_ops`).
    """
    family = family_of(profile)
    peak = peak_ops(profile, precision)
    return DeviceModel(profile, precision, family, peak, _eta(family, profile, peak.cls))


# -- checks -------------------------------------------------------------------------------------
CROSS_DEVICE_PAIRS = (
    ("jetson-agx-orin-64gb", "jetson-orin-nx-16gb"),
    ("jetson-agx-xavier", "jetson-xavier-nx"),
)


def cross_device_check(pairs=CROSS_DEVICE_PAIRS) -> list[dict]:
    """Calibrate eta on one device's first anchor and predict another device's, both ways.

    Returns rows ``{"calibrated_on", "predicted", "predicted_ms", "published_ms", "error", "eta"}``
    with ``error = predicted / published - 1``.
    """
    rows = []
    for a, b in pairs:
        for src, dst in ((a, b), (b, a)):
            ps, pd = get_profile(src), get_profile(dst)
            family = family_of(ps)
            eta = eta_for_anchor(family, ps, _usable(family, ps)[0])
            anchor = _usable(family, pd)[0]
            ms = _anchor_ms(family, pd, anchor, eta)
            rows.append({
                "calibrated_on": src, "predicted": dst, "predicted_ms": round(ms, 3),
                "published_ms": anchor.latency_ms, "error": round(ms / anchor.latency_ms - 1, 4),
                "eta": round(eta, 3),
            })  # fmt: skip
    return rows


# -- budgets ------------------------------------------------------------------------------------
TEACHER_SHAPE = Shape(6, 384, 12, 1536, 128)  # all-MiniLM-L6-v2, the default teacher
BUDGET_SHAPES = (
    ("tight", Shape(2, 256, 4, 1024, 128), "a 2-layer hidden-256 student"),
    ("balanced", Shape(4, 384, 12, 1536, 128), "a 4-layer hidden-384 student"),
    ("relaxed", TEACHER_SHAPE, "the teacher shape (6 layers, hidden 384, all-MiniLM-L6-v2)"),
)
MEMORY_HEADROOM = {"tight": 1.25, "balanced": 1.5, "relaxed": 2.0}  # relaxed: FP16, two engines


def budget_precision(profile) -> str:
    """INT8 where the device runs it (INT8 tensor cores, or ONNX Runtime CPU INT8), else FP16."""
    gpu = profile.hardware.gpu
    if gpu is not None:
        return "int8" if gpu.int8_tops_dense else "fp16"
    return "int8" if any("int8" in r.precisions for r in profile.runtimes) else "fp32"


def round_up(x: float, digits: int = 2) -> float:
    """``x`` rounded up to ``digits`` significant figures (0.4123 -> 0.42)."""
    step = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return round(math.ceil(x / step - 1e-9) * step, 10)


def suggest_budgets(profile) -> list[dict]:
    """The budgets the model implies for ``profile``: each the predicted upper end of its shape
    (batch 1, seq 128, p90, :func:`budget_precision`) rounded up to two significant figures, and
    the memory upper end with :data:`MEMORY_HEADROOM` rounded up to 64 MB."""
    precision = budget_precision(profile)
    model = model_for(profile, precision)
    out = []
    for name, shape, what in BUDGET_SHAPES:
        p = model.predict(shape)
        memory = math.ceil(p["memory_hi_mb"] * MEMORY_HEADROOM[name] / 64) * 64
        out.append({"name": name, "latency_ms": round_up(p["latency_hi_ms"]), "memory_mb": memory,
                    "shape": what, "precision": precision, "prediction": p})  # fmt: skip
    return out
