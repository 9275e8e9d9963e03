// The torch binding of edgec's kernels: the `edgec` op library (edgec::matmul_nbits,
// edgec::gemm_w8a8, edgec::w8_rowsum) with CUDA implementations. toolchain/kernels.py registers
// their fake (meta) implementations, checks shapes with the rules of edgec::check_nbits before a
// launch and falls back to the reference where the extension or a GPU is absent.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdint>
#include <optional>

#include "edgec/kernels.h"

namespace {

void check(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "edgec::", op, ": CUDA error: ", cudaGetErrorString(err),
              err == cudaErrorNotSupported ? " (bfloat16 GEMMs need sm_80, fp16 sm_70)" : "");
}

int container_of(int64_t bits) {
  TORCH_CHECK(bits >= 2 && bits <= 8, "weight bits must be in 2..8, got ", bits);
  return bits <= 2 ? 2 : bits <= 4 ? 4 : 8;
}

edgec::DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return edgec::DType::kHalf;
    case at::kBFloat16:
      return edgec::DType::kBFloat16;
    case at::kFloat:
      return edgec::DType::kFloat;
    case at::kInt:
      return edgec::DType::kInt32;
    default:
      TORCH_CHECK(false, "unsupported dtype ", t);
  }
}

void check_packed(const at::Tensor& packed, int64_t n, int64_t k, int container,
                  int64_t block_size, const char* op) {
  TORCH_CHECK(packed.is_cuda() && packed.scalar_type() == at::kByte && packed.dim() == 3 &&
                  packed.is_contiguous(),
              "edgec::", op, ": packed weights must be contiguous uint8 (N, k_blocks, blob) on "
              "a CUDA device");
  const int64_t kb = edgec::k_blocks(static_cast<int>(k), static_cast<int>(block_size));
  TORCH_CHECK(packed.size(0) == n && packed.size(1) == kb &&
                  packed.size(2) == block_size * container / 8,
              "edgec::", op, ": packed weights ", packed.sizes(), " do not hold (N=", n,
              ", K=", k, ") at ", container, "-bit containers and block_size ", block_size);
}

// Every tensor a kernel reads must be on x's device (a host pointer would fault in the kernel).
void check_device(const at::Tensor& t, const at::Tensor& x, const char* what, const char* op) {
  TORCH_CHECK(t.device() == x.device(), "edgec::", op, ": ", what, " is on ", t.device(),
              ", the input on ", x.device());
}

// The kernels read 16-byte vectors (W8A8) and 32-bit words (packed codes): a tensor that starts
// off such a boundary (a view with an odd storage offset) is copied to a fresh, aligned one.
at::Tensor aligned(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone();
}

// (N,) per-channel steps or (N, k_blocks) block scales -> contiguous float32 (N, k_blocks)
at::Tensor block_scales(const at::Tensor& scales, int64_t n, int64_t kb) {
  at::Tensor s = scales.to(at::kFloat);
  if (s.dim() == 1) s = s.view({n, 1}).expand({n, kb});
  TORCH_CHECK(s.dim() == 2 && s.size(0) == n && s.size(1) == kb, "scales must be (", n, ",) or (",
              n, ", ", kb, "), got ", scales.sizes());
  return s.contiguous();
}

at::Tensor matmul_nbits(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                        int64_t bits, int64_t k, int64_t block_size,
                        const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.is_cuda(), "edgec::matmul_nbits: x must be on a CUDA device");
  TORCH_CHECK(x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16,
              "edgec::matmul_nbits: x must be float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.size(-1) == k, "edgec::matmul_nbits: x has ", x.size(-1), " features, K is ", k);
  const int container = container_of(bits);
  const int64_t n = packed.size(0), m = x.numel() / k;
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  if (m == 0) return at::empty(sizes, x.options());
  const char* why = edgec::check_nbits(static_cast<int>(m), static_cast<int>(n),
                                       static_cast<int>(k), container, static_cast<int>(block_size));
  TORCH_CHECK(why == nullptr, "edgec::matmul_nbits: ", why);
  check_packed(packed, n, k, container, block_size, "matmul_nbits");
  check_device(packed, x, "packed", "matmul_nbits");
  check_device(scales, x, "scales", "matmul_nbits");
  const at::Tensor s = block_scales(scales, n, packed.size(1));
  const at::Tensor xc = aligned(x);  // the GEMV reads x in 8-byte vectors
  const at::Tensor pc = aligned(packed);
  std::optional<at::Tensor> b;
  if (bias) {
    check_device(*bias, x, "bias", "matmul_nbits");
    TORCH_CHECK(bias->numel() == n, "edgec::matmul_nbits: bias has ", bias->numel(),
                " elements, N is ", n);
    b = bias->to(x.scalar_type()).contiguous();
  }
  at::Tensor y = at::empty(sizes, x.options());
  const c10::cuda::CUDAGuard guard(x.device());
  check(edgec::matmul_nbits(xc.data_ptr(), pc.data_ptr<uint8_t>(), s.data_ptr<float>(),
                            b ? b->data_ptr() : nullptr, y.data_ptr(), static_cast<int>(m),
                            static_cast<int>(n), static_cast<int>(k), container,
                            static_cast<int>(block_size), dtype_of(x.scalar_type()),
                            c10::cuda::getCurrentCUDAStream()),
        "matmul_nbits");
  return y;
}

at::Tensor w8_rowsum(const at::Tensor& packed, int64_t k, int64_t block_size) {
  check_packed(packed, packed.size(0), k, 8, block_size, "w8_rowsum");
  const at::Tensor pc = aligned(packed);
  at::Tensor out = at::empty({packed.size(0)}, packed.options().dtype(at::kInt));
  const c10::cuda::CUDAGuard guard(packed.device());
  check(edgec::w8_rowsum(pc.data_ptr<uint8_t>(), out.data_ptr<int32_t>(),
                         static_cast<int>(packed.size(0)), static_cast<int>(k),
                         static_cast<int>(block_size), c10::cuda::getCurrentCUDAStream()),
        "w8_rowsum");
  return out;
}

at::Tensor gemm_w8a8(const at::Tensor& a, double a_scale, int64_t a_zero, const at::Tensor& packed,
                     const at::Tensor& w_scale, int64_t k, int64_t block_size,
                     const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& w_rowsum, at::ScalarType out_dtype) {
  TORCH_CHECK(a.is_cuda() && a.scalar_type() == at::kChar,
              "edgec::gemm_w8a8: activations must be int8 codes on a CUDA device");
  TORCH_CHECK(a.size(-1) == k, "edgec::gemm_w8a8: a has ", a.size(-1), " features, K is ", k);
  TORCH_CHECK(out_dtype == at::kHalf || out_dtype == at::kBFloat16 || out_dtype == at::kFloat ||
                  out_dtype == at::kInt,
              "edgec::gemm_w8a8: out_dtype must be float16, bfloat16, float32 or int32");
  const int64_t n = packed.size(0), m = a.numel() / k;
  auto sizes = a.sizes().vec();
  sizes.back() = n;
  if (m == 0) return at::empty(sizes, a.options().dtype(out_dtype));
  const char* why = edgec::check_w8a8(static_cast<int>(m), static_cast<int>(n),
                                      static_cast<int>(k), static_cast<int>(block_size));
  TORCH_CHECK(why == nullptr, "edgec::gemm_w8a8: ", why);
  check_packed(packed, n, k, 8, block_size, "gemm_w8a8");
  check_device(packed, a, "packed", "gemm_w8a8");
  check_device(w_scale, a, "w_scale", "gemm_w8a8");
  const at::Tensor ws = w_scale.to(at::kFloat).contiguous();
  TORCH_CHECK(ws.dim() == 1 && ws.size(0) == n,
              "edgec::gemm_w8a8: one weight scale per output channel (", n, ",), got ",
              w_scale.sizes());
  at::Tensor rowsum;
  if (a_zero != 0) {
    if (w_rowsum) check_device(*w_rowsum, a, "w_rowsum", "gemm_w8a8");
    rowsum = w_rowsum ? w_rowsum->to(at::kInt).contiguous() : w8_rowsum(packed, k, block_size);
    TORCH_CHECK(rowsum.numel() == n, "edgec::gemm_w8a8: w_rowsum has ", rowsum.numel(),
                " elements, N is ", n);
  }
  std::optional<at::Tensor> b;
  if (bias && out_dtype != at::kInt) {
    check_device(*bias, a, "bias", "gemm_w8a8");
    TORCH_CHECK(bias->numel() == n, "edgec::gemm_w8a8: bias has ", bias->numel(),
                " elements, N is ", n);
    b = bias->to(out_dtype).contiguous();
  }
  const at::Tensor ac = aligned(a);
  const at::Tensor pc = aligned(packed);
  at::Tensor y = at::empty(sizes, a.options().dtype(out_dtype));
  const c10::cuda::CUDAGuard guard(a.device());
  check(edgec::gemm_w8a8(ac.data_ptr<int8_t>(), pc.data_ptr<uint8_t>(), ws.data_ptr<float>(),
                         a_zero != 0 ? rowsum.data_ptr<int32_t>() : nullptr,
                         static_cast<float>(a_scale), static_cast<int>(a_zero),
                         b ? b->data_ptr() : nullptr, y.data_ptr(), static_cast<int>(m),
                         static_cast<int>(n), static_cast<int>(k), static_cast<int>(block_size),
                         dtype_of(out_dtype), c10::cuda::getCurrentCUDAStream()),
        "gemm_w8a8");
  return y;
}

}  // namespace

TORCH_LIBRARY(edgec, m) {
  m.def(
      "matmul_nbits(Tensor x, Tensor packed, Tensor scales, int bits, int k, int block_size, "
      "Tensor? bias=None) -> Tensor");
  m.def(
      "gemm_w8a8(Tensor a, float a_scale, int a_zero, Tensor packed, Tensor w_scale, int k, "
      "int block_size, Tensor? bias, Tensor? w_rowsum, ScalarType out_dtype) -> Tensor");
  m.def("w8_rowsum(Tensor packed, int k, int block_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(edgec, CUDA, m) {
  m.impl("matmul_nbits", &matmul_nbits);
  m.impl("gemm_w8a8", &gemm_w8a8);
  m.impl("w8_rowsum", &w8_rowsum);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "edgec's INT2-INT8 CUDA kernels; the ops live in torch.ops.edgec";
}
