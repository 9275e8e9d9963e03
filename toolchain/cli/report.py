"""`edgec report`: regenerate the Markdown/HTML report of a build's run directory.

Not implemented yet: it lands with the issue
"edgec build". Planned form::

    edgec report RUN_DIR
"""

HELP = "regenerate the Markdown/HTML report of a build's run directory"
IMPLEMENTED = False
PLANNED = "edgec report RUN_DIR"
