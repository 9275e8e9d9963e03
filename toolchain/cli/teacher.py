"""`edgec teacher`: fine-tune the teacher on a task (sequence/token classification, regression).

Not implemented yet: it lands with the issue
"Tasks, data, model adapters and teacher fine-tuning". Planned form::

    edgec teacher --task sst2 [--model DIR] [--data-dir D] -o DIR
"""

HELP = "fine-tune the teacher on a task (sequence/token classification, regression)"
IMPLEMENTED = False
PLANNED = "edgec teacher --task sst2 [--model DIR] [--data-dir D] -o DIR"
