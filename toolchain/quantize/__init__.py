"""LSQ / KDLSQ quantization-aware training and conversion to packed integer checkpoints."""
