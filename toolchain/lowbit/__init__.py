"""The packed low-bit layout (MatMulNBits-compatible), its reference dequant/GEMM, and dispatch to
the ``edgec_kernels`` CUDA extension."""
