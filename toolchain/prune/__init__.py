"""Pruning: structured (heads, FFN neurons) and unstructured (magnitude), with KD fine-tuning."""
