"""`edgec export`: export to ONNX (fp32, fp16, INT8 Q/DQ, MatMulNBits) or TensorRT, with parity
checks.

Not implemented yet: it lands with the issue
"Export and bundles". Planned form::

    edgec export MODEL -o DIR --format {fp32,fp16,int8-qdq,nbits,auto}
"""

HELP = "export to ONNX (fp32, fp16, INT8 Q/DQ, MatMulNBits) or TensorRT, with parity checks"
IMPLEMENTED = False
PLANNED = "edgec export MODEL -o DIR --format {fp32,fp16,int8-qdq,nbits,auto}"
