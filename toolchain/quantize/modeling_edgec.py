"""transformers' remote code for a packed checkpoint of `edgec quantize`, copied into every one as
``modeling_edgec.py``.

A packed checkpoint stores integer codes and LSQ steps, not float weights. Its ``config.json``
names ``model_type: edgec_lsq`` and maps the Auto classes here, so that transformers never loads it
as a plain float model with random Linear weights: without ``trust_remote_code=True`` it stops
with an error that asks for it; with it, the checkpoint loads through edgec as its fake-quant model,
whose logits equal those of the model that was packed::

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(
        "runs/student-w4a8", trust_remote_code=True)  # needs `pip install edgec`

Written by hand: transformers has no hook for an out-of-tree quantization method other than
remote code (its quantizer registry lives in the importing process, not in the checkpoint).
"""

from transformers import PretrainedConfig, PreTrainedModel


class EdgecLSQConfig(PretrainedConfig):
    model_type = "edgec_lsq"


class _EdgecLSQModel(PreTrainedModel):
    config_class = EdgecLSQConfig

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            from toolchain.quantize.convert import load_quantized
        except ImportError as e:
            raise ImportError(
                f"{pretrained_model_name_or_path} is a packed checkpoint of edgec (integer codes "
                "and LSQ steps); loading it needs edgec installed (`pip install edgec`), or use "
                "its ONNX export (`edgec export`)"
            ) from e
        device = kwargs.get("device_map") if isinstance(kwargs.get("device_map"), str) else "cpu"
        return load_quantized(pretrained_model_name_or_path, device=device).model


class EdgecLSQForSequenceClassification(_EdgecLSQModel):
    pass


class EdgecLSQForTokenClassification(_EdgecLSQModel):
    pass


class EdgecLSQForCausalLM(_EdgecLSQModel):
    pass
