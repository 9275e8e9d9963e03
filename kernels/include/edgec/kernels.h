// edgec's INT2-INT8 CUDA kernels: launchers shared by the torch extension (kernels/csrc/ops.cpp)
// and the TensorRT plugin (kernels/tensorrt/). Framework-free: CUDA runtime types only.
//
// Weights are in the one low-bit layout of edgec (toolchain/lowbit/reference.py, ONNX Runtime's
// MatMulNBits): W (N, K) split along K into ceil(K / block_size) blocks of unsigned codes of
// `container` bits (2, 4 or 8), packed LSB first, contiguously along K, so row n is
// row_bytes(K) = k_blocks * block_size * container / 8 bytes; W[n, k] = (code - 2^(container-1))
// * scale[n, k / block_size].
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#if defined(__CUDACC__)
#define EDGEC_HD __host__ __device__ __forceinline__
#else
#define EDGEC_HD inline
#endif

namespace edgec {

enum class DType : int { kHalf = 0, kBFloat16 = 1, kFloat = 2, kInt32 = 3 };

// M at or below this runs the GEMV path (one warp per output channel, codes dequantized in
// registers); above it, the tensor-core GEMM (WMMA tiles, which lower to mma.sync).
constexpr int kGemvMaxM = 8;

EDGEC_HD int k_blocks(int k, int block_size) { return (k + block_size - 1) / block_size; }

EDGEC_HD int64_t row_bytes(int k, int container, int block_size) {
  return static_cast<int64_t>(k_blocks(k, block_size)) * block_size * container / 8;
}

// The current device's compute capability as major * 10 + minor (0, with *err set, on failure).
inline int current_sm(cudaError_t* err) {
  int dev = 0, major = 0, minor = 0;
  *err = cudaGetDevice(&dev);
  if (*err == cudaSuccess)
    *err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (*err == cudaSuccess)
    *err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return *err == cudaSuccess ? major * 10 + minor : 0;
}

// nullptr when the shapes can run, else the rule that failed (a static string). The Python
// dispatch (toolchain/kernels.py) checks the same rules before any launch.
const char* check_nbits(int m, int n, int k, int container, int block_size);
const char* check_w8a8(int m, int n, int k, int block_size);

// y (M, N) = x (M, K) @ dequantize(packed).T (+ bias); x, bias and y in `dtype` (half or
// bfloat16), scales float32 (N, k_blocks); accumulation in float32. x must be 8-byte and packed
// 4-byte aligned (cudaErrorMisalignedAddress otherwise).
cudaError_t matmul_nbits(const void* x, const uint8_t* packed, const float* scales,
                         const void* bias, void* y, int m, int n, int k, int container,
                         int block_size, DType dtype, cudaStream_t stream);

// y (M, N) = a_scale * w_scale[n] * (sum_k a[m, k] * w[n, k] + a_zero * w_rowsum[n]) (+ bias):
// a (M, K) int8 activation codes (an unsigned activation quantizer's codes shifted by -a_zero),
// w the 8-bit packed layout (signed code = stored code ^ 0x80), one scale per output channel.
// out_dtype kInt32 writes the exact integer accumulators (a_zero term included), unscaled.
// int8 tensor cores (WMMA s8) on sm_72+, dp4a otherwise. a and packed must be 16-byte aligned
// (cudaErrorMisalignedAddress otherwise).
cudaError_t gemm_w8a8(const int8_t* a, const uint8_t* packed, const float* w_scale,
                      const int32_t* w_rowsum, float a_scale, int a_zero, const void* bias,
                      void* y, int m, int n, int k, int block_size, DType out_dtype,
                      cudaStream_t stream);

// w_rowsum[n] = sum_k signed code (the a_zero correction); int32 (N,).
cudaError_t w8_rowsum(const uint8_t* packed, int32_t* rowsum, int n, int k, int block_size,
                      cudaStream_t stream);

}  // namespace edgec
