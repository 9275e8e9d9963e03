"""NAS-BERT supernet, block-wise distillation and per-budget evolutionary search."""
