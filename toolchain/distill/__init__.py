"""Knowledge distillation: losses, layer mappings (uniform, last, RAIL-KD, GA), student init."""
