// W8A8: int8 activation codes x 8-bit packed weights -> int32 accumulators -> scaled output.
// The 8-bit container stores signed code q as q + 128, so a stored byte XOR 0x80 is q as int8 and
// the packed weights feed the integer units as they are. int8 tensor cores (WMMA s8, sm_72+)
// with 64x64x32 tiles; dp4a (sm_61+) one output per thread otherwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>

#include "edgec/kernels.h"

namespace edgec {
namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;
// Shared tiles are kept as two 16-wide K halves, [half][row][16]: every fragment pointer is then
// 32-byte aligned, as WMMA requires (a 16-byte offset inside one 32-wide row would not be).
constexpr int kHalf = 16;
constexpr uint32_t kFlip = 0x80808080u;

__device__ __forceinline__ void store(void* y, int64_t i, float v, DType t) {
  switch (t) {
    case DType::kHalf:
      static_cast<__half*>(y)[i] = __float2half_rn(v);
      break;
    case DType::kBFloat16:
      static_cast<__nv_bfloat16*>(y)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(y)[i] = v;
  }
}

__device__ __forceinline__ float load_bias(const void* bias, int i, DType t) {
  if (bias == nullptr) return 0.f;
  switch (t) {
    case DType::kHalf:
      return __half2float(static_cast<const __half*>(bias)[i]);
    case DType::kBFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(bias)[i]);
    default:
      return static_cast<const float*>(bias)[i];
  }
}

// the epilogue shared by both paths: the a_zero correction, then scales and bias (or the exact
// integers for kInt32)
__device__ __forceinline__ void epilogue(int32_t acc, int gm, int gn, int n, const float* w_scale,
                                         const int32_t* w_rowsum, float a_scale, int a_zero,
                                         const void* bias, void* y, DType t) {
  const int32_t total = acc + (a_zero != 0 ? a_zero * w_rowsum[gn] : 0);
  const int64_t i = static_cast<int64_t>(gm) * n + gn;
  if (t == DType::kInt32) {
    static_cast<int32_t*>(y)[i] = total;
    return;
  }
  store(y, i, a_scale * w_scale[gn] * static_cast<float>(total) + load_bias(bias, gn, t), t);
}

__global__ void __launch_bounds__(128)
    w8a8_wmma_kernel(const int8_t* __restrict__ a, const uint8_t* __restrict__ packed,
                     const float* __restrict__ w_scale, const int32_t* __restrict__ w_rowsum,
                     float a_scale, int a_zero, const void* __restrict__ bias, void* y, int m,
                     int n, int k, int64_t rbytes, DType out_dtype) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 720
  using namespace nvcuda;
  __shared__ __align__(32) int8_t as[2][kTileM][kHalf];
  __shared__ __align__(32) int8_t bs[2][kTileN][kHalf];  // [h][n] holds w[n, k0+16h : k0+16h+16]
  __shared__ __align__(32) int32_t cs[kTileM][kTileN + 4];
  const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
  const int warp = threadIdx.x >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  // each thread moves one 16-byte vector of each tile per K step: row t / 2, K half t % 2
  const int r = threadIdx.x >> 1, h = threadIdx.x & 1, c = h * kHalf;

  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0);

  for (int k0 = 0; k0 < k; k0 += kTileK) {
    const int gc = k0 + c;  // K % 16 == 0: a vector is wholly inside or wholly outside
    uint4 va = make_uint4(0, 0, 0, 0), vb = make_uint4(0, 0, 0, 0);
    if (m0 + r < m && gc < k)
      va = __ldg(reinterpret_cast<const uint4*>(a + static_cast<int64_t>(m0 + r) * k + gc));
    if (n0 + r < n && gc < k) {
      vb = __ldg(reinterpret_cast<const uint4*>(packed + (n0 + r) * rbytes + gc));
      vb.x ^= kFlip, vb.y ^= kFlip, vb.z ^= kFlip, vb.w ^= kFlip;
    }
    *reinterpret_cast<uint4*>(&as[h][r][0]) = va;
    *reinterpret_cast<uint4*>(&bs[h][r][0]) = vb;
    __syncthreads();
#pragma unroll
    for (int kh = 0; kh < 2; ++kh) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[kh][wm + 16 * i][0], kHalf);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &bs[kh][wn + 16 * j][0], kHalf);
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
    const int rr = e / kTileN, cc = e % kTileN;
    if (m0 + rr < m && n0 + cc < n)
      epilogue(cs[rr][cc], m0 + rr, n0 + cc, n, w_scale, w_rowsum, a_scale, a_zero, bias, y,
               out_dtype);
  }
#endif
}

__global__ void w8a8_dp4a_kernel(const int8_t* __restrict__ a, const uint8_t* __restrict__ packed,
                                 const float* __restrict__ w_scale,
                                 const int32_t* __restrict__ w_rowsum, float a_scale, int a_zero,
                                 const void* __restrict__ bias, void* y, int m, int n, int k,
                                 int64_t rbytes, DType out_dtype) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
  const int gn = blockIdx.x * blockDim.x + threadIdx.x;
  const int gm = blockIdx.y;
  if (gn >= n || gm >= m) return;
  const int* av = reinterpret_cast<const int*>(a + static_cast<int64_t>(gm) * k);
  const uint32_t* wv = reinterpret_cast<const uint32_t*>(packed + gn * rbytes);
  int32_t acc = 0;
  for (int i = 0; i < k / 4; ++i) acc = __dp4a(av[i], static_cast<int>(wv[i] ^ kFlip), acc);
  epilogue(acc, gm, gn, n, w_scale, w_rowsum, a_scale, a_zero, bias, y, out_dtype);
#endif
}

__global__ void w8_rowsum_kernel(const uint8_t* __restrict__ packed, int32_t* __restrict__ rowsum,
                                 int n, int k, int64_t rbytes) {
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n) return;
  int32_t s = 0;
  for (int i = lane; i < k; i += 32) s += static_cast<int8_t>(packed[row * rbytes + i] ^ 0x80u);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
  if (lane == 0) rowsum[row] = s;
}

}  // namespace

const char* check_w8a8(int m, int n, int k, int block_size) {
  const char* why = check_nbits(m, n, k, 8, block_size);
  return why;
}

cudaError_t gemm_w8a8(const int8_t* a, const uint8_t* packed, const float* w_scale,
                      const int32_t* w_rowsum, float a_scale, int a_zero, const void* bias,
                      void* y, int m, int n, int k, int block_size, DType out_dtype,
                      cudaStream_t stream) {
  if (check_w8a8(m, n, k, block_size) != nullptr) return cudaErrorInvalidValue;
  if (a_zero != 0 && w_rowsum == nullptr) return cudaErrorInvalidValue;
  // both operands are read in 16-byte vectors
  if ((reinterpret_cast<uintptr_t>(a) & 15u) != 0 || (reinterpret_cast<uintptr_t>(packed) & 15u) != 0)
    return cudaErrorMisalignedAddress;
  cudaError_t err;
  const int sm = current_sm(&err);
  if (err != cudaSuccess) return err;
  const int64_t rbytes = row_bytes(k, 8, block_size);
  if (sm >= 72) {
    const dim3 grid((n + kTileN - 1) / kTileN, (m + kTileM - 1) / kTileM);
    w8a8_wmma_kernel<<<grid, 128, 0, stream>>>(a, packed, w_scale, w_rowsum, a_scale, a_zero,
                                               bias, y, m, n, k, rbytes, out_dtype);
  } else if (sm >= 61) {
    const dim3 grid((n + 127) / 128, m);
    w8a8_dp4a_kernel<<<grid, 128, 0, stream>>>(a, packed, w_scale, w_rowsum, a_scale, a_zero,
                                               bias, y, m, n, k, rbytes, out_dtype);
  } else {
    return cudaErrorNotSupported;
  }
  return cudaGetLastError();
}

cudaError_t w8_rowsum(const uint8_t* packed, int32_t* rowsum, int n, int k, int block_size,
                      cudaStream_t stream) {
  if (n < 1 || k < 1) return cudaErrorInvalidValue;
  w8_rowsum_kernel<<<(n + 3) / 4, 128, 0, stream>>>(packed, rowsum, n, k,
                                                    row_bytes(k, 8, block_size));
  return cudaGetLastError();
}

}  // namespace edgec
