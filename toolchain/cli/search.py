"""`edgec search`: train a NAS-BERT supernet and search one subnet per device budget.

Not implemented yet: it lands with the issue
"NAS-BERT supernet and per-budget subnet search". Planned form::

    edgec search --teacher DIR --device D [--budget NAME] -o DIR
"""

HELP = "train a NAS-BERT supernet and search one subnet per device budget"
IMPLEMENTED = False
PLANNED = "edgec search --teacher DIR --device D [--budget NAME] -o DIR"
