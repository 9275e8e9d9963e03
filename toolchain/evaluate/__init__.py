"""Evaluation beyond accuracy: loyalty to the teacher, robustness, perplexity."""
