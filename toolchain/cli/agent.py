"""`edgec agent`: serve on-device measurements to edgec profile over HTTP (run on the target).

Not implemented yet: it lands with the issue
"Profiling". Planned form::

    edgec agent --host 0.0.0.0 --port 9600 --token-file F
"""

HELP = "serve on-device measurements to edgec profile over HTTP (run on the target)"
IMPLEMENTED = False
PLANNED = "edgec agent --host 0.0.0.0 --port 9600 --token-file F"
