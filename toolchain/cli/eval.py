"""`edgec eval`: evaluate a model on a task: accuracy, F1, MCC, perplexity, loyalty to the teacher.

Not implemented yet: it lands with the issue
"Tasks, data, model adapters and teacher fine-tuning". Planned form::

    edgec eval MODEL --task T [--teacher DIR] [--json]
"""

HELP = "evaluate a model on a task: accuracy, F1, MCC, perplexity, loyalty to the teacher"
IMPLEMENTED = False
PLANNED = "edgec eval MODEL --task T [--teacher DIR] [--json]"
