"""Packed integer checkpoints: a trained fake-quant model -> codes + steps, and back.

A packed checkpoint is a Hugging Face directory whose ``config.json`` carries a
``quantization_config``::

    {"quant_method": "edgec-lsq", "format_version": 1, "layout": "matmul_nbits",
     "block_size": 32, "act_bits": 8,
     "modules": {"bert.encoder.layer.0.attention.self.query":
                    {"kind": "linear", "bits": 4, "container_bits": 4, "shape": [384, 384],
                     "act_signed": true},
                 "bert.embeddings.word_embeddings": {"kind": "embedding", "bits": 2, ...}},
     "tied": {"lm_head.weight": "transformer.wte.weight"}}

and whose ``model.safetensors`` holds, per quantized module ``M``: ``M.qweight`` (uint8, the
layout of :mod:`toolchain.lowbit.reference`), ``M.w_scale`` (float32 (N,), the LSQ step of each
row), ``M.a_scale`` (float32 scalar, linear layers with quantized inputs), ``M.bias``; and every
other parameter in float under its usual name. The export stage reads it without training code;
:func:`load_quantized` rebuilds the fake-quant model, whose logits equal the trained one's.

Its ``model_type`` is ``edgec_lsq`` (the family moves to ``base_model_type``) and ``auto_map``
points transformers' Auto classes at the ``modeling_edgec.py`` copied beside it: transformers
either loads the checkpoint through edgec (``trust_remote_code=True``) or refuses it, and never
builds the float model with random Linear weights, as it does for an unknown ``quant_method``.
Checkpoints written before (``model_type`` of the family) still load here.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import EdgecError
from toolchain.lowbit import reference as lb
from toolchain.models.loading import PACKED_MODEL_TYPE
from toolchain.quantize.modules import QuantEmbedding, QuantLinear, quantized_modules

log = logging.getLogger(__name__)

QUANT_METHOD = "edgec-lsq"
FORMAT_VERSION = 1


class QuantFormatError(EdgecError):
    """A packed checkpoint or its quantization_config is malformed."""


def pack_model(model: nn.Module, *, block_size: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and the ``quantization_config`` of a calibrated or trained fake-quant model."""
    lb.check_block_size(block_size)
    qmods = quantized_modules(model)
    tensors: dict[str, torch.Tensor] = {}
    entries, act_bits = {}, None
    for name, m in qmods.items():
        bits = m.w_bits
        codes = lb.to_unsigned(m.weight_quant.codes(m.weight.detach().float()).cpu(), bits)
        tensors[f"{name}.qweight"] = lb.pack(codes, bits=bits, block_size=block_size)
        tensors[f"{name}.w_scale"] = m.weight_quant.step.detach().float().cpu().clone()
        entry = {
            "kind": "linear" if isinstance(m, QuantLinear) else "embedding",
            "bits": bits,
            "container_bits": lb.container_bits(bits),
            "shape": list(m.weight.shape),
        }
        if isinstance(m, QuantLinear):
            if m.bias is not None:
                tensors[f"{name}.bias"] = m.bias.detach().float().cpu().clone()
            if m.act_quant is not None:
                tensors[f"{name}.a_scale"] = m.act_quant.step.detach().float().cpu().clone()
                entry["act_signed"] = m.act_quant.signed
                act_bits = m.act_quant.bits
        entries[name] = entry
    quantized_params = {f"{n}.{p}" for n, m in qmods.items() for p, _ in m.named_parameters()}
    seen: dict[int, str] = {}
    tied = {}
    # every parameter and persistent buffer that is not a quantized weight, tied ones once
    for key, value in model.state_dict(keep_vars=True).items():
        if key in quantized_params:
            continue
        ptr = value.data_ptr()
        if ptr in seen:
            tied[key] = seen[ptr]
            continue
        seen[ptr] = key
        tensors[key] = value.detach().cpu().contiguous().clone()
    qconfig = {
        "quant_method": QUANT_METHOD,
        "format_version": FORMAT_VERSION,
        "layout": "matmul_nbits",
        "block_size": block_size,
        "act_bits": act_bits,
        "modules": entries,
        "tied": tied,
    }
    return tensors, qconfig


def save_quantized(adapter, path: str | Path, *, block_size: int = 32) -> Path:
    """Write a fake-quant model (and its tokenizer) as a packed checkpoint into ``path``.

    Not atomic: the stage writes into its temporary output folder.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors, qconfig = pack_model(adapter.model, block_size=block_size)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = packed_config(adapter.model.config.to_dict(), type(adapter.model).__name__, qconfig)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(Path(__file__).with_name("modeling_edgec.py"), path / "modeling_edgec.py")
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(str(path))
    return path


_AUTO_HEADS = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForCausalLM": "AutoModelForCausalLM",
    "LMHeadModel": "AutoModelForCausalLM",
}


def packed_config(config: dict, architecture: str, qconfig: dict) -> dict:
    """``config.json`` of a packed checkpoint: the float model's config under
    ``model_type: edgec_lsq`` (its family kept in ``base_model_type``) with transformers'
    ``auto_map`` onto ``modeling_edgec.py``, so that the Auto classes either load it through edgec
    (``trust_remote_code=True``) or refuse it, never fill it with random weights."""
    out = dict(config)
    out["base_model_type"] = out["model_type"]
    out["model_type"] = PACKED_MODEL_TYPE
    out["architectures"] = [architecture]
    out["quantization_config"] = qconfig
    auto = {"AutoConfig": "modeling_edgec.EdgecLSQConfig"}
    for suffix, auto_cls in _AUTO_HEADS.items():
        if architecture.endswith(suffix):
            head = auto_cls.removeprefix("AutoModel")
            auto[auto_cls] = f"modeling_edgec.EdgecLSQ{head}"
    out["auto_map"] = auto
    return out


def read_quantization_config(path: str | Path) -> dict:
    """The validated ``quantization_config`` of a packed checkpoint directory.

    Raises:
        QuantFormatError: missing, of another method or version, or with a malformed entry;
            the message names the key and what was expected.
    """
    cfg_path = Path(path) / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise QuantFormatError(f"{cfg_path} does not exist: not a model directory") from None
    except json.JSONDecodeError as e:
        raise QuantFormatError(f"{cfg_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        raise QuantFormatError(
            f"{cfg_path} has no quantization_config: a float model, not an `edgec quantize` "
            "output (load it with load_model)"
        )
    validate_quantization_config(qc, where=str(cfg_path))
    return qc


def validate_quantization_config(qc: dict, *, where: str = "quantization_config") -> None:
    def bad(key: str, expected: str, got) -> QuantFormatError:
        return QuantFormatError(
            f"{where}: quantization_config.{key} must be {expected}, got {got!r}"
        )

    if qc.get("quant_method") != QUANT_METHOD:
        raise bad("quant_method", repr(QUANT_METHOD), qc.get("quant_method"))
    if qc.get("format_version") != FORMAT_VERSION:
        raise bad("format_version", f"{FORMAT_VERSION} (upgrade edgec)", qc.get("format_version"))
    if qc.get("layout") != "matmul_nbits":
        raise bad("layout", "'matmul_nbits'", qc.get("layout"))
    if qc.get("block_size") not in lb.BLOCK_SIZES:
        raise bad("block_size", f"one of {lb.BLOCK_SIZES}", qc.get("block_size"))
    act = qc.get("act_bits")
    if act is not None and (not isinstance(act, int) or not 4 <= act <= 8):
        raise bad("act_bits", "null or an integer in 4..8", act)
    modules = qc.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise bad("modules", "a non-empty object {module name: entry}", modules)
    for name, e in modules.items():
        key = f"modules.{name}"
        if not isinstance(e, dict):
            raise bad(key, "an object", e)
        if e.get("kind") not in ("linear", "embedding"):
            raise bad(f"{key}.kind", "'linear' or 'embedding'", e.get("kind"))
        bits = e.get("bits")
        if not isinstance(bits, int) or not 2 <= bits <= 8:
            raise bad(f"{key}.bits", "an integer in 2..8", bits)
        if e.get("container_bits") != lb.container_bits(bits):
            raise bad(
                f"{key}.container_bits", str(lb.container_bits(bits)), e.get("container_bits")
            )
        shape = e.get("shape")
        if not (
            isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(s, int) and s > 0 for s in shape)
        ):
            raise bad(f"{key}.shape", "[rows, columns] of positive integers", shape)
    if not isinstance(qc.get("tied", {}), dict):
        raise bad("tied", "an object {alias: source}", qc.get("tied"))


def load_quantized(path: str | Path, *, device: str | torch.device = "cpu"):
    """Rebuild the fake-quant model of a packed checkpoint (a :class:`ModelAdapter`).

    Weights are the dequantized codes; steps and activation steps are the stored ones, so the
    logits equal those of the model that was packed.
    """
    import transformers
    from safetensors.torch import load_file

    from toolchain.models.adapters import adapter_class
    from toolchain.models.loading import _load_tokenizer, load_errors, read_config
    from toolchain.quantize.modules import quantize_modules

    path = Path(path)
    qc = read_quantization_config(path)
    config = read_config(path)  # the float family's, without the quantization_config
    arch = (config.architectures or [None])[0]
    model_cls = getattr(transformers, arch or "", None)
    if model_cls is None:
        raise QuantFormatError(f"{path}/config.json: unknown architectures {config.architectures}")
    model = model_cls(config)
    modules = qc["modules"]
    quantize_modules(model, {n: e["bits"] for n, e in modules.items()}, act_bits=qc["act_bits"])
    with load_errors(path, "weights"):
        tensors = load_file(str(path / "model.safetensors"))
    _load_tensors(model, tensors, qc, path)
    model.to(device).eval()
    tokenizer = _load_tokenizer(str(path), {}, path)
    return adapter_class(config.model_type)(model, tokenizer)


def load_any(name: str | Path, *, head: str, device: str | torch.device = "cpu"):
    """:func:`~toolchain.models.loading.load_model` for a float model, :func:`load_quantized` (the
    fake-quant model) for a packed checkpoint; the one loader for a model directory of any stage."""
    from toolchain.models.loading import is_packed, load_model

    if Path(name).is_dir() and is_packed(name):
        return load_quantized(name, device=device)
    adapter = load_model(str(name), head=head)
    adapter.model.to(device)
    return adapter


@torch.no_grad()
def _load_tensors(model: nn.Module, tensors: dict, qc: dict, path: Path) -> None:
    qmods = quantized_modules(model)
    block = qc["block_size"]
    for name, e in qc["modules"].items():
        m = qmods[name]
        n, k = e["shape"]
        packed, scale = (
            _take(tensors, f"{name}.qweight", path),
            _take(tensors, f"{name}.w_scale", path),
        )
        expected = lb.packed_shape(n, k, bits=e["bits"], block_size=block)
        if tuple(packed.shape) != expected or tuple(scale.shape) != (n,):
            raise QuantFormatError(
                f"{path}: {name} has qweight {tuple(packed.shape)} and w_scale "
                f"{tuple(scale.shape)}; its entry (bits {e['bits']}, shape {e['shape']}, block "
                f"{block}) needs {expected} and ({n},)"
            )
        w = lb.dequantize(packed, scale, bits=e["bits"], k=k, block_size=block)
        m.weight.data = w.to(m.weight.dtype)
        m.weight_quant.step.copy_(scale)
        if isinstance(m, QuantLinear):
            if m.bias is not None:
                m.bias.copy_(_take(tensors, f"{name}.bias", path))
            if m.act_quant is not None:
                m.act_quant.step.copy_(_take(tensors, f"{name}.a_scale", path))
                m.act_quant.signed = bool(e.get("act_signed", True))
        elif not isinstance(m, QuantEmbedding):
            raise QuantFormatError(f"{name}: unexpected module {type(m).__name__}")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    quantized = {f"{n}.{p}" for n, m in qmods.items() for p, _ in m.named_parameters()}
    aliases = set(qc.get("tied", {}))
    missing = [k for k in missing if k not in quantized and k not in aliases]
    if missing or unexpected:
        raise QuantFormatError(
            f"{path}/model.safetensors does not match the model: missing {missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    for alias, source in qc.get("tied", {}).items():
        _tie(model, alias, source)


def _take(tensors: dict, key: str, path: Path) -> torch.Tensor:
    if key not in tensors:
        raise QuantFormatError(f"{path}/model.safetensors has no tensor {key!r}")
    return tensors.pop(key)


def _tie(model: nn.Module, alias: str, source: str) -> None:
    a_mod, _, a_name = alias.rpartition(".")
    s_mod, _, s_name = source.rpartition(".")
    setattr(model.get_submodule(a_mod), a_name, getattr(model.get_submodule(s_mod), s_name))


def model_bytes(model: nn.Module, *, block_size: int, plan: dict[str, int] | None = None) -> int:
    """Bytes of the tensors a packed checkpoint of ``model`` holds (file size less its header).

    ``plan`` ({module: bits}) prices a float model as if it were quantized that way; without it
    the model's own quantized modules are priced.
    """
    qmods = quantized_modules(model)
    widths = plan if plan is not None else {n: m.w_bits for n, m in qmods.items()}
    modules = dict(model.named_modules())
    total, seen, skip = 0, set(), set()
    for name, bits in widths.items():
        m = modules[name]
        n, k = m.weight.shape if not _is_conv1d(m) else m.weight.shape[::-1]
        total += lb.packed_bytes(n, k, bits=bits, block_size=block_size) + 4 * n
        if isinstance(m, QuantLinear):
            total += 4 if m.act_quant is not None else 0
        elif not isinstance(m, nn.Embedding | QuantEmbedding):
            total += 4  # a float Linear priced by a plan: assume quantized inputs
        skip.add(m.weight.data_ptr())
        for pname, p in m.named_parameters():
            if pname.endswith("step"):
                skip.add(p.data_ptr())
    for p in model.parameters():
        ptr = p.data_ptr()
        if ptr in seen or ptr in skip:
            continue
        seen.add(ptr)
        total += p.numel() * p.element_size()
    return total


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"
