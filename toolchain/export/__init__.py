"""ONNX and TensorRT export with parity checks against PyTorch."""
