// Weight-only INT2/INT4/INT8 matmul over the shared low-bit layout (see edgec/kernels.h):
// a GEMV path for M <= kGemvMaxM and a tensor-core GEMM path above it. Both read the packed
// codes straight from global memory and dequantize in registers (GEMV) or on the way into
// shared memory (GEMM); accumulation is float32 throughout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "edgec/kernels.h"

namespace edgec {
namespace {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The two 16-bit elements of a 32-bit word (the lower address in the low half), as float.
template <typename T>
__device__ __forceinline__ float lo16(uint32_t v);
template <typename T>
__device__ __forceinline__ float hi16(uint32_t v);
template <>
__device__ __forceinline__ float lo16<__half>(uint32_t v) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(v & 0xffffu)));
}
template <>
__device__ __forceinline__ float hi16<__half>(uint32_t v) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(v >> 16)));
}
template <>
__device__ __forceinline__ float lo16<__nv_bfloat16>(uint32_t v) {
  return __uint_as_float(v << 16);  // bfloat16 is the high half of a float32
}
template <>
__device__ __forceinline__ float hi16<__nv_bfloat16>(uint32_t v) {
  return __uint_as_float(v & 0xffff0000u);
}

// code - zero as float without an int-to-float conversion (a quarter-rate instruction on most
// GPUs): 0x4B000000 | code is the float 2^23 + code, exactly, for any code < 2^23.
constexpr uint32_t kMagic = 0x4B000000u;
constexpr float kMagicF = 8388608.f;  // 2^23

// ---------------------------------------------------------------------------------------------
// GEMV: one warp per output channel n. Row n's codes are one contiguous bit stream along K (a
// block is a whole number of 32-bit words for every block size >= 16), so each lane reads
// 32-bit words, four in flight, and each word's codes share one block scale. A word's
// activations are read as 8-byte vectors (its kPerWord codes start at a multiple of 4 elements;
// the binding passes 16-byte aligned x) and every code is dequantized once for all M rows.
// ---------------------------------------------------------------------------------------------
constexpr int kGemvWarps = 4;  // output channels per thread block
constexpr int kGemvUnroll = 4;

template <typename T, int kContainer, int kM>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_nbits_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                      const float* __restrict__ scales, const T* __restrict__ bias,
                      T* __restrict__ y, int m, int n, int k, int block_size) {
  constexpr int kPerWord = 32 / kContainer;  // codes in a 32-bit word
  constexpr uint32_t kMask = (1u << kContainer) - 1u;
  constexpr float kZero = static_cast<float>(1 << (kContainer - 1));
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kGemvWarps + warp;
  if (row >= n) return;

  const int kb = k_blocks(k, block_size);
  const int words = static_cast<int>(row_bytes(k, kContainer, block_size) / 4);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(packed) + static_cast<int64_t>(row) * words;
  const float* s = scales + static_cast<int64_t>(row) * kb;
  const int words_per_block = block_size / kPerWord;

  float acc[kM];
#pragma unroll
  for (int i = 0; i < kM; ++i) acc[i] = 0.f;

  // K % 16 == 0, so a word never straddles K: the words past k_words are the last block's
  // padding and are skipped
  const int k_words = k / kPerWord;
  for (int base = lane; base < k_words; base += 32 * kGemvUnroll) {
    uint32_t word[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int j = base + u * 32;
      word[u] = j < k_words ? __ldg(w + j) : 0u;
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int j = base + u * 32;
      if (j < k_words) {  // a guard, not a break, so the loop unrolls and word[] stays in registers
        const int k0 = j * kPerWord;
        const float scale = __ldg(s + j / words_per_block);
        float q[kPerWord];
#pragma unroll
        for (int c = 0; c < kPerWord; ++c)
          q[c] = __uint_as_float(((word[u] >> (c * kContainer)) & kMask) | kMagic) -
                 (kMagicF + kZero);
#pragma unroll
        for (int i = 0; i < kM; ++i) {
          if (i < m) {
            const uint2* xv = reinterpret_cast<const uint2*>(x + static_cast<int64_t>(i) * k + k0);
            float part = 0.f;
#pragma unroll
            for (int v = 0; v < kPerWord / 4; ++v) {
              const uint2 raw = __ldg(xv + v);
              part += q[4 * v] * lo16<T>(raw.x) + q[4 * v + 1] * hi16<T>(raw.x) +
                      q[4 * v + 2] * lo16<T>(raw.y) + q[4 * v + 3] * hi16<T>(raw.y);
            }
            acc[i] += scale * part;
          }
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kM; ++i) {
    const float v = warp_sum(acc[i]);
    if (lane == 0 && i < m) {
      const float b = bias != nullptr ? to_float(bias[row]) : 0.f;
      y[static_cast<int64_t>(i) * n + row] = from_float<T>(v + b);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GEMM (M > kGemvMaxM): 64x64 output tiles, 4 warps of 32x32 (2x2 WMMA 16x16x16 fragments),
// K in steps of 32. The activation tile is copied to shared memory; the weight tile is
// dequantized (code - zero) * scale on its way there, so the tensor cores see plain fp16/bf16.
// ---------------------------------------------------------------------------------------------
constexpr int kTileM = 64, kTileN = 64, kTileK = 32, kPad = 8;

template <typename T, int kContainer>
__device__ void gemm_nbits_tile(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                const float* __restrict__ scales, const T* __restrict__ bias,
                                T* __restrict__ y, int m, int n, int k, int block_size) {
  using namespace nvcuda;
  __shared__ __align__(32) T as[kTileM][kTileK + kPad];
  __shared__ __align__(32) T bs[kTileN][kTileK + kPad];  // row n holds W[n, k0:k0+32]
  __shared__ __align__(32) float cs[kTileM][kTileN + 4];

  constexpr uint32_t kMask = (1u << kContainer) - 1u;
  constexpr float kZero = static_cast<float>(1 << (kContainer - 1));
  const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
  const int warp = threadIdx.x >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int kb = k_blocks(k, block_size);
  const int64_t rbytes = row_bytes(k, kContainer, block_size);

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  for (int k0 = 0; k0 < k; k0 += kTileK) {
    // activations: 64 x 32, 16 per thread
    for (int e = threadIdx.x; e < kTileM * kTileK; e += blockDim.x) {
      const int r = e / kTileK, c = e % kTileK;
      const int gr = m0 + r, gc = k0 + c;
      as[r][c] = (gr < m && gc < k) ? x[static_cast<int64_t>(gr) * k + gc] : from_float<T>(0.f);
    }
    // weights: 64 rows x 32 codes, dequantized
    for (int e = threadIdx.x; e < kTileN * kTileK; e += blockDim.x) {
      const int r = e / kTileK, c = e % kTileK;
      const int gr = n0 + r, gc = k0 + c;
      float v = 0.f;
      if (gr < n && gc < k) {
        const int64_t bit = static_cast<int64_t>(gc) * kContainer;
        const uint8_t byte = __ldg(packed + gr * rbytes + (bit >> 3));
        const float q = static_cast<float>((byte >> (bit & 7)) & kMask) - kZero;
        v = q * __ldg(scales + static_cast<int64_t>(gr) * kb + gc / block_size);
      }
      bs[r][c] = from_float<T>(v);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[wm + 16 * i][kk], kTileK + kPad);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &bs[wn + 16 * j][kk], kTileK + kPad);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[wm + 16 * i][wn + 16 * j], acc[i][j], kTileN + 4,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < kTileM * kTileN; e += blockDim.x) {
    const int r = e / kTileN, c = e % kTileN;
    const int gr = m0 + r, gc = n0 + c;
    if (gr < m && gc < n) {
      const float b = bias != nullptr ? to_float(bias[gc]) : 0.f;
      y[static_cast<int64_t>(gr) * n + gc] = from_float<T>(cs[r][c] + b);
    }
  }
}

// fp16 WMMA needs sm_70 and bf16 WMMA sm_80; the host launcher refuses other combinations, and
// these guards keep one source tree compiling for every architecture in TORCH_CUDA_ARCH_LIST.
template <typename T, int kContainer>
__global__ void __launch_bounds__(128)
    gemm_nbits_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                      const float* __restrict__ scales, const T* __restrict__ bias,
                      T* __restrict__ y, int m, int n, int k, int block_size) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
  return;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return;
  } else {
    gemm_nbits_tile<T, kContainer>(x, packed, scales, bias, y, m, n, k, block_size);
  }
#else
  gemm_nbits_tile<T, kContainer>(x, packed, scales, bias, y, m, n, k, block_size);
#endif
}

template <typename T, int kContainer>
cudaError_t launch_gemv(const T* x, const uint8_t* packed, const float* scales, const T* bias,
                        T* y, int m, int n, int k, int block_size, cudaStream_t stream) {
  const dim3 grid((n + kGemvWarps - 1) / kGemvWarps), block(kGemvWarps * 32);
  // one instantiation per M bucket keeps the accumulators in registers
  if (m <= 1)
    gemv_nbits_kernel<T, kContainer, 1><<<grid, block, 0, stream>>>(x, packed, scales, bias, y,
                                                                   m, n, k, block_size);
  else if (m <= 4)
    gemv_nbits_kernel<T, kContainer, 4><<<grid, block, 0, stream>>>(x, packed, scales, bias, y,
                                                                   m, n, k, block_size);
  else
    gemv_nbits_kernel<T, kContainer, kGemvMaxM><<<grid, block, 0, stream>>>(
        x, packed, scales, bias, y, m, n, k, block_size);
  return cudaGetLastError();
}

template <typename T, int kContainer>
cudaError_t launch(const void* x, const uint8_t* packed, const float* scales, const void* bias,
                   void* y, int m, int n, int k, int block_size, cudaStream_t stream) {
  const T* xt = static_cast<const T*>(x);
  const T* bt = static_cast<const T*>(bias);
  T* yt = static_cast<T*>(y);
  if (m <= kGemvMaxM)
    return launch_gemv<T, kContainer>(xt, packed, scales, bt, yt, m, n, k, block_size, stream);
  const dim3 grid((n + kTileN - 1) / kTileN, (m + kTileM - 1) / kTileM);
  gemm_nbits_kernel<T, kContainer><<<grid, 128, 0, stream>>>(xt, packed, scales, bt, yt, m, n, k,
                                                             block_size);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_container(const void* x, const uint8_t* packed, const float* scales,
                             const void* bias, void* y, int m, int n, int k, int container,
                             int block_size, cudaStream_t stream) {
  switch (container) {
    case 2:
      return launch<T, 2>(x, packed, scales, bias, y, m, n, k, block_size, stream);
    case 4:
      return launch<T, 4>(x, packed, scales, bias, y, m, n, k, block_size, stream);
    default:
      return launch<T, 8>(x, packed, scales, bias, y, m, n, k, block_size, stream);
  }
}

}  // namespace

const char* check_nbits(int m, int n, int k, int container, int block_size) {
  if (m < 1 || n < 1 || k < 1) return "M, N and K must be positive";
  if (container != 2 && container != 4 && container != 8)
    return "the container must be 2, 4 or 8 bits (3-bit codes are stored in 4)";
  if (block_size != 16 && block_size != 32 && block_size != 64 && block_size != 128 &&
      block_size != 256)
    return "block_size must be 16, 32, 64, 128 or 256";
  if (k % 16 != 0) return "K must be a multiple of 16";
  return nullptr;
}

cudaError_t matmul_nbits(const void* x, const uint8_t* packed, const float* scales,
                         const void* bias, void* y, int m, int n, int k, int container,
                         int block_size, DType dtype, cudaStream_t stream) {
  if (check_nbits(m, n, k, container, block_size) != nullptr) return cudaErrorInvalidValue;
  if (dtype != DType::kHalf && dtype != DType::kBFloat16) return cudaErrorInvalidValue;
  // x is read in 8-byte vectors, the codes in 32-bit words
  if ((reinterpret_cast<uintptr_t>(x) & 7u) != 0 || (reinterpret_cast<uintptr_t>(packed) & 3u) != 0)
    return cudaErrorMisalignedAddress;
  if (m > kGemvMaxM) {
    cudaError_t err;
    const int sm = current_sm(&err);
    if (err != cudaSuccess) return err;
    if (sm < 70 || (dtype == DType::kBFloat16 && sm < 80)) return cudaErrorNotSupported;
  }
  if (dtype == DType::kHalf)
    return launch_container<__half>(x, packed, scales, bias, y, m, n, k, container, block_size,
                                    stream);
  return launch_container<__nv_bfloat16>(x, packed, scales, bias, y, m, n, k, container,
                                         block_size, stream);
}

}  // namespace edgec
