"""`edgec bundle`: write or verify a deployable bundle (manifest, hashes, model card).

Not implemented yet: it lands with the issue
"Export and bundles". Planned form::

    edgec bundle MODEL_OR_ONNX --device D -o NAME.edgec | edgec bundle verify NAME.edgec
"""

HELP = "write or verify a deployable bundle (manifest, hashes, model card)"
IMPLEMENTED = False
PLANNED = "edgec bundle MODEL_OR_ONNX --device D -o NAME.edgec | edgec bundle verify NAME.edgec"
