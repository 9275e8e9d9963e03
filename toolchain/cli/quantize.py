"""`edgec quantize`: LSQ/KDLSQ quantization: 2-8-bit weights, 8-bit activations, packed checkpoint.

Not implemented yet: it lands with the issue
"LSQ / KDLSQ quantization". Planned form::

    edgec quantize MODEL --teacher DIR --w-bits 4 --a-bits 8 -o DIR
"""

HELP = "LSQ/KDLSQ quantization: 2-8-bit weights, 8-bit activations, packed checkpoint"
IMPLEMENTED = False
PLANNED = "edgec quantize MODEL --teacher DIR --w-bits 4 --a-bits 8 -o DIR"
