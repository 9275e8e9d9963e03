"""Tasks and data: readers for GLUE, CoNLL, WikiText and generic TSV/CSV/JSONL; cleaning."""
