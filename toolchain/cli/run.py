"""`edgec run`: run a verified bundle with ONNX Runtime or TensorRT alone (no torch).

Not implemented yet: it lands with the issue
"Export and bundles". Planned form::

    edgec run NAME.edgec --text "..." | --file in.jsonl
"""

HELP = "run a verified bundle with ONNX Runtime or TensorRT alone (no torch)"
IMPLEMENTED = False
PLANNED = 'edgec run NAME.edgec --text "..." | --file in.jsonl'
