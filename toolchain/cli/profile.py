"""`edgec profile`: measure latency and memory of a model against a device profile.

Not implemented yet: it lands with the issue
"Profiling". Planned form::

    edgec profile TARGET --device D [--target http://HOST:9600 --token-file F] [--json]
"""

HELP = "measure latency and memory of a model against a device profile"
IMPLEMENTED = False
PLANNED = "edgec profile TARGET --device D [--target http://HOST:9600 --token-file F] [--json]"
