"""`edgec distill`: distil a student from the teacher (KD, RAIL-KD, GA layer mapping, ETD init).

Not implemented yet: it lands with the issue
"Distillation suite". Planned form::

    edgec distill --teacher DIR --student-shape L3:H384:A12:F1536 \\
        --init etd-impt --mapping rail -o DIR
"""

HELP = "distil a student from the teacher (KD, RAIL-KD, GA layer mapping, ETD init)"
IMPLEMENTED = False
PLANNED = (
    "edgec distill --teacher DIR --student-shape L3:H384:A12:F1536 --init etd-impt "
    "--mapping rail -o DIR"
)
