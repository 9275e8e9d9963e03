// TensorRT 10 plugin (IPluginV3) for the com.microsoft::MatMulNBits nodes of edgec's ONNX export
// (toolchain/export/lowbit.py): y = x @ dequantize(B).T with B edgec's packed 2/4/8-bit layout,
// run by edgec::matmul_nbits (kernels/csrc/nbits.cu). TensorRT's ONNX parser has no importer for
// MatMulNBits, so it falls back to the plugin creator named like the op ("MatMulNBits", version
// "1", namespace ""), passing the node's int attributes as PluginFields and its inputs (the
// initializers become constant tensors) as plugin inputs. See README.md for build and loading.
//
// Inputs:  0  x       (..., K)                       kHALF, or kBF16 on sm_80+
//          1  B       (N, k_blocks, blob) packed     kINT8 / kUINT8: the bytes as they are;
//                                                    kINT32 with one element per byte: what the
//                                                    ONNX parser makes of a UINT8 initializer
//                                                    (narrowed once per execution context);
//                                                    kINT32 with 4 bytes per element: a raw view
//          2  scales  (N * k_blocks) or (N, k_blocks) kFLOAT
// Output:  0  y       (..., N)                       the type of x
// Fields:  K, N, bits (2..8; stored in a 2-, 4- or 8-bit container), block_size; accuracy_level
//          is accepted and ignored (the kernels always accumulate in float32).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include <NvInferRuntime.h>

#include "edgec/kernels.h"

#define EDGEC_TRT_EXPORT __attribute__((visibility("default")))

namespace edgec {
namespace {

using nvinfer1::DataType;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using Severity = nvinfer1::ILogger::Severity;

constexpr char kPluginName[] = "MatMulNBits";
constexpr char kPluginVersion[] = "1";
constexpr char kPluginNamespace[] = "";

// Set by TensorRT through setLoggerFinder() when the library is loaded with loadLibrary().
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

// Logs through TensorRT's logger when one is known, else to stderr (the ctypes loading path).
void report(Severity severity, std::string const& msg) noexcept {
  std::string const line = std::string("[edgec ") + kPluginName + "] " + msg;
  nvinfer1::ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
  if (logger != nullptr) {
    logger->log(severity, line.c_str());
  } else if (severity <= Severity::kWARNING) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

// The storage width of `bits`-bit codes (toolchain/lowbit/reference.py container_bits); 0: none.
int containerBits(int bits) {
  if (bits == 2) return 2;
  if (bits == 3 || bits == 4) return 4;
  if (bits >= 5 && bits <= 8) return 8;
  return 0;
}

int64_t volume(nvinfer1::Dims const& d, int32_t end) {
  int64_t v = 1;
  for (int32_t i = 0; i < end; ++i) v *= d.d[i];
  return v;
}

char const* typeName(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kUINT8: return "uint8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    default: return "another type";
  }
}

// How input 1 holds the packed bytes.
enum class Packed : int32_t {
  kBytes,    // kINT8 / kUINT8: one byte per element, used in place
  kWords,    // kINT32, four bytes per element (a raw little-endian view), used in place
  kWidened,  // kINT32, one byte per element (the ONNX parser widens UINT8 initializers)
};

struct Params {
  int32_t k{-1};
  int32_t n{-1};
  int32_t bits{-1};
  int32_t blockSize{-1};

  int container() const { return containerBits(bits); }
  int64_t kBlocks() const { return edgec::k_blocks(k, blockSize); }
  int64_t packedBytes() const { return n * edgec::row_bytes(k, container(), blockSize); }

  // Empty when the fields can run (any M), else why not.
  std::string check() const {
    if (container() == 0) return "bits must be in 2..8, got " + std::to_string(bits);
    char const* why = edgec::check_nbits(1, n, k, container(), blockSize);
    return why != nullptr ? why : "";
  }

  std::string describe() const {
    return "K=" + std::to_string(k) + " N=" + std::to_string(n) + " bits=" +
           std::to_string(bits) + " block_size=" + std::to_string(blockSize);
  }
};

// The layout of input 1 from its type and element count; false (and `why`) if it fits none.
bool packedLayout(Params const& p, DataType type, int64_t count, Packed* layout,
                  std::string* why) {
  int64_t const bytes = p.packedBytes();
  if ((type == DataType::kINT8 || type == DataType::kUINT8) && count == bytes) {
    *layout = Packed::kBytes;
    return true;
  }
  if (type == DataType::kINT32 && count == bytes) {
    *layout = Packed::kWidened;
    return true;
  }
  if (type == DataType::kINT32 && count * 4 == bytes) {
    *layout = Packed::kWords;
    return true;
  }
  *why = "input 1 (packed B) has " + std::to_string(count) + " " + typeName(type) +
         " elements; " + p.describe() + " needs " + std::to_string(bytes) +
         " bytes (int8/uint8/int32 one per byte, or int32 four per)";
  return false;
}

// bfloat16 is offered only where the GEMM path (M > kGemvMaxM) can run it: sm_80 and newer.
bool bf16Supported() {
  int device = 0;
  int major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    return false;
  return major >= 8;
}

class MatMulNBitsPlugin final : public nvinfer1::IPluginV3,
                                public nvinfer1::IPluginV3OneCore,
                                public nvinfer1::IPluginV3OneBuild,
                                public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit MatMulNBitsPlugin(Params const& p) : mParams(p), mId(p.describe()) {}
  MatMulNBitsPlugin(MatMulNBitsPlugin const&) = delete;
  MatMulNBitsPlugin& operator=(MatMulNBitsPlugin const&) = delete;
  ~MatMulNBitsPlugin() override {
    if (mNarrowed != nullptr) cudaFree(mNarrowed);  // may fail after CUDA teardown: ignored
  }

  // IPluginV3 ---------------------------------------------------------------------------------

  nvinfer1::IPluginCapability* getCapabilityInterface(
      nvinfer1::PluginCapabilityType type) noexcept override {
    switch (type) {
      case nvinfer1::PluginCapabilityType::kCORE:
        return static_cast<nvinfer1::IPluginV3OneCore*>(this);
      case nvinfer1::PluginCapabilityType::kBUILD:
        return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
      case nvinfer1::PluginCapabilityType::kRUNTIME:
        return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }

  // A fresh object with the same fields; per-context state (the narrowed copy of B) is not
  // shared, so each execution context (attachToContext) owns its own.
  nvinfer1::IPluginV3* clone() noexcept override {
    try {
      return new MatMulNBitsPlugin(mParams);
    } catch (...) {
      return nullptr;
    }
  }

  // IPluginV3OneCore --------------------------------------------------------------------------

  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuild -------------------------------------------------------------------------

  int32_t getNbOutputs() const noexcept override { return 1; }

  int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                             DataType const* inputTypes, int32_t nbInputs) const noexcept override {
    if (nbInputs != 3 || nbOutputs != 1) return 1;
    outputTypes[0] = inputTypes[0];
    return 0;
  }

  // y: x's shape with the last dimension N.
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                          nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override {
    if (nbInputs != 3 || nbOutputs != 1) {
      report(Severity::kERROR, "expects 3 inputs (A, B, scales) and 1 output, got " +
                                   std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
      return 1;
    }
    nvinfer1::DimsExprs const& x = inputs[0];
    if (x.nbDims < 1) {
      report(Severity::kERROR, "input 0 (A) must have at least one dimension");
      return 1;
    }
    nvinfer1::IDimensionExpr const* last = x.d[x.nbDims - 1];
    if (last->isConstant() && last->getConstantValue() != mParams.k) {
      report(Severity::kERROR, mId + ": input 0 (A) ends in " +
                                   std::to_string(last->getConstantValue()) + ", not K");
      return 1;
    }
    outputs[0] = x;
    outputs[0].d[x.nbDims - 1] = exprBuilder.constant(mParams.n);
    return 0;
  }

  // Formats only; shape errors are reported once, by configurePlugin.
  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override {
    if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos > 3) return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
    switch (pos) {
      case 0:
        return d.type == DataType::kHALF || (d.type == DataType::kBF16 && bf16Supported());
      case 1:
        return d.type == DataType::kINT8 || d.type == DataType::kUINT8 ||
               d.type == DataType::kINT32;
      case 2:
        return d.type == DataType::kFLOAT;  // the kernels read float32 scales
      default:
        return d.type == inOut[0].desc.type;
    }
  }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          DynamicPluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
    try {
      if (nbInputs != 3 || nbOutputs != 1) return 1;
      std::string const why = validate(in[0].desc, in[1].desc, in[2].desc);
      if (!why.empty()) {
        report(Severity::kERROR, why);
        return 1;
      }
      Packed layout{};
      std::string unused;
      packedLayout(mParams, in[1].desc.type, volume(in[1].desc.dims, in[1].desc.dims.nbDims),
                   &layout, &unused);
      if (layout == Packed::kWidened && !mWarnedWidened) {
        mWarnedWidened = true;
        report(Severity::kWARNING,
               mId + ": B arrives as int32 (one element per byte: the ONNX parser widens UINT8 "
                     "initializers), so the engine stores 4x the packed weights and each "
                     "context keeps a narrowed copy; export B as an int32 view of the bytes");
      }
      return 0;
    } catch (...) {
      return 1;
    }
  }

  // Workspace is not used: B is read in place or from the per-context narrowed copy.
  size_t getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
                          DynamicPluginTensorDesc const* /*outputs*/,
                          int32_t /*nbOutputs*/) const noexcept override {
    return 0;
  }

  // Timing results depend on the fields only (TensorRT adds shapes and formats itself).
  char const* getTimingCacheID() noexcept override { return mId.c_str(); }
  char const* getMetadataString() noexcept override { return mId.c_str(); }

  // IPluginV3OneRuntime -----------------------------------------------------------------------

  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                        PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override {
    try {
      if (nbInputs != 3 || nbOutputs != 1) return 1;
      std::string const why = validate(in[0], in[1], in[2]);
      if (!why.empty()) {
        report(Severity::kERROR, why);
        return 1;
      }
      std::string unused;
      packedLayout(mParams, in[1].type, volume(in[1].dims, in[1].dims.nbDims), &mLayout,
                   &unused);
      // Allocated here rather than in enqueue, which may run under CUDA graph capture.
      if (mLayout == Packed::kWidened && mNarrowed == nullptr) {
        cudaError_t const err = cudaMalloc(&mNarrowed, mParams.packedBytes());
        if (err != cudaSuccess) {
          mNarrowed = nullptr;
          report(Severity::kERROR,
                 mId + ": cannot allocate the narrowed copy of B: " + cudaGetErrorString(err));
          return 1;
        }
        mNarrowedFrom = nullptr;
      }
      return 0;
    } catch (...) {
      return 1;
    }
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                  void const* const* inputs, void* const* outputs, void* /*workspace*/,
                  cudaStream_t stream) noexcept override {
    try {
      nvinfer1::Dims const& xd = inputDesc[0].dims;
      int64_t const m = volume(xd, xd.nbDims - 1);
      if (m == 0) return 0;  // empty batch: nothing to write
      if (m < 0 || m > std::numeric_limits<int32_t>::max()) {
        report(Severity::kERROR, mId + ": M=" + std::to_string(m) + " is out of range");
        return 1;
      }
      DType const dtype =
          inputDesc[0].type == DataType::kBF16 ? DType::kBFloat16 : DType::kHalf;
      uint8_t const* packed = static_cast<uint8_t const*>(inputs[1]);
      if (mLayout == Packed::kWidened) {
        if (mNarrowed == nullptr) {
          report(Severity::kERROR, mId + ": enqueue before onShapeChange (no narrowed B)");
          return 1;
        }
        // Once per context (B is a constant): keep the low byte of each int32 element, a strided
        // device-to-device copy, so no kernel of our own is needed here.
        if (mNarrowedFrom != inputs[1]) {
          int64_t const bytes = mParams.packedBytes();
          cudaError_t const err =
              cudaMemcpy2DAsync(mNarrowed, 1, inputs[1], sizeof(int32_t), 1,
                                static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, stream);
          if (err != cudaSuccess) {
            report(Severity::kERROR,
                   mId + ": narrowing B to bytes failed: " + cudaGetErrorString(err));
            return 1;
          }
          mNarrowedFrom = inputs[1];
        }
        packed = static_cast<uint8_t const*>(mNarrowed);
      }
      cudaError_t const err = edgec::matmul_nbits(
          inputs[0], packed, static_cast<float const*>(inputs[2]), /*bias=*/nullptr, outputs[0],
          static_cast<int>(m), mParams.n, mParams.k, mParams.container(), mParams.blockSize,
          dtype, stream);
      if (err != cudaSuccess) {
        char const* rule = edgec::check_nbits(static_cast<int>(m), mParams.n, mParams.k,
                                              mParams.container(), mParams.blockSize);
        report(Severity::kERROR, mId + " M=" + std::to_string(m) + ": matmul_nbits failed: " +
                                     cudaGetErrorString(err) + (rule != nullptr ? "; " : "") +
                                     (rule != nullptr ? rule : ""));
        return 1;
      }
      return 0;
    } catch (...) {
      return 1;
    }
  }

  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*ctx*/) noexcept
      override {
    return clone();
  }

  // The four fields, enough to recreate the plugin in the runtime phase.
  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    mFields[0] = PluginField("K", &mParams.k, PluginFieldType::kINT32, 1);
    mFields[1] = PluginField("N", &mParams.n, PluginFieldType::kINT32, 1);
    mFields[2] = PluginField("bits", &mParams.bits, PluginFieldType::kINT32, 1);
    mFields[3] = PluginField("block_size", &mParams.blockSize, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = 4;
    mFieldCollection.fields = mFields;
    return &mFieldCollection;
  }

 private:
  // Empty when x, B and scales agree with the fields, else the message.
  std::string validate(PluginTensorDesc const& x, PluginTensorDesc const& b,
                       PluginTensorDesc const& s) const {
    std::string const fields = mParams.check();
    if (!fields.empty()) return mId + ": " + fields;
    if (x.dims.nbDims < 1) return mId + ": input 0 (A) must have at least one dimension";
    int64_t const kx = x.dims.d[x.dims.nbDims - 1];
    if (kx != -1 && kx != mParams.k)
      return mId + ": input 0 (A) ends in " + std::to_string(kx) + ", not K";
    for (int32_t i = 0; i < b.dims.nbDims; ++i)
      if (b.dims.d[i] < 0) return mId + ": input 1 (B) must have a static shape (a constant)";
    for (int32_t i = 0; i < s.dims.nbDims; ++i)
      if (s.dims.d[i] < 0) return mId + ": input 2 (scales) must have a static shape";
    Packed layout{};
    std::string why;
    if (!packedLayout(mParams, b.type, volume(b.dims, b.dims.nbDims), &layout, &why))
      return mId + ": " + why;
    int64_t const nScales = volume(s.dims, s.dims.nbDims);
    if (nScales != mParams.n * mParams.kBlocks())
      return mId + ": input 2 (scales) has " + std::to_string(nScales) + " elements, not " +
             "N * k_blocks = " + std::to_string(mParams.n * mParams.kBlocks());
    return "";
  }

  Params mParams;
  std::string mId;  // "K=.. N=.. bits=.. block_size=..": timing-cache ID, metadata, messages
  Packed mLayout{Packed::kBytes};
  void* mNarrowed{nullptr};  // device copy of B as bytes (Packed::kWidened only)
  void const* mNarrowedFrom{nullptr};
  bool mWarnedWidened{false};
  PluginField mFields[4];
  PluginFieldCollection mFieldCollection{};
};

class MatMulNBitsCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  MatMulNBitsCreator() {
    // Advertised so that the ONNX parser passes these attributes (it passes only listed ones).
    mFields[0] = PluginField("K", nullptr, PluginFieldType::kINT32, 1);
    mFields[1] = PluginField("N", nullptr, PluginFieldType::kINT32, 1);
    mFields[2] = PluginField("bits", nullptr, PluginFieldType::kINT32, 1);
    mFields[3] = PluginField("block_size", nullptr, PluginFieldType::kINT32, 1);
    mFields[4] = PluginField("accuracy_level", nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = 5;
    mFieldCollection.fields = mFields;
  }

  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
  PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

  nvinfer1::IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase /*phase*/) noexcept override {
    try {
      std::string const node = std::string("node '") + (name != nullptr ? name : "?") + "'";
      Params p;
      struct Slot {
        char const* name;
        int32_t* value;
      };
      Slot const slots[] = {
          {"K", &p.k}, {"N", &p.n}, {"bits", &p.bits}, {"block_size", &p.blockSize}};
      for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr) continue;
        for (Slot const& s : slots) {
          if (std::strcmp(f.name, s.name) != 0) continue;
          if (!readInt(f, s.value)) {
            report(Severity::kERROR, node + ": field '" + s.name + "' must be one integer");
            return nullptr;
          }
        }
        // accuracy_level and any other attribute: ignored.
      }
      for (Slot const& s : slots) {
        if (*s.value < 0) {
          report(Severity::kERROR,
                 node + ": field '" + s.name + "' is missing (needs K, N, bits, block_size)");
          return nullptr;
        }
      }
      std::string const why = p.check();
      if (!why.empty()) {
        report(Severity::kERROR, node + " (" + p.describe() + "): " + why);
        return nullptr;
      }
      return new MatMulNBitsPlugin(p);
    } catch (...) {
      return nullptr;
    }
  }

 private:
  // One integer of any integer field type (ONNX INT attributes arrive as kINT32).
  static bool readInt(PluginField const& f, int32_t* out) {
    if (f.data == nullptr || f.length != 1) return false;
    int64_t v = 0;
    switch (f.type) {
      case PluginFieldType::kINT8: v = *static_cast<int8_t const*>(f.data); break;
      case PluginFieldType::kINT16: v = *static_cast<int16_t const*>(f.data); break;
      case PluginFieldType::kINT32: v = *static_cast<int32_t const*>(f.data); break;
      case PluginFieldType::kINT64: v = *static_cast<int64_t const*>(f.data); break;
      default: return false;
    }
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) return false;
    *out = static_cast<int32_t>(v);
    return true;
  }

  PluginField mFields[5];
  PluginFieldCollection mFieldCollection{};
};

MatMulNBitsCreator gCreator;

// Static registration for the ctypes path (toolchain/export/tensorrt.py load_plugins: dlopen,
// then init_libnvinfer_plugins, which registers only TensorRT's own plugins). Done by hand
// rather than with REGISTER_TENSORRT_PLUGIN to learn whether it succeeded: getCreators() then
// hands loadLibrary() nothing, so the creator is not registered twice. Build with
// -DEDGEC_TRT_NO_STATIC_REGISTRATION for a library that loadLibrary() alone registers.
#ifndef EDGEC_TRT_NO_STATIC_REGISTRATION
bool const gStaticallyRegistered = [] {
  nvinfer1::IPluginRegistry* registry = getPluginRegistry();
  return registry != nullptr && registry->registerCreator(gCreator, kPluginNamespace);
}();
#else
bool const gStaticallyRegistered = false;
#endif

}  // namespace
}  // namespace edgec

// Entry points that IPluginRegistry::loadLibrary() (trtexec --dynamicPlugins, the Python
// load_library) looks up in a TensorRT 10 plugin library.
extern "C" {

EDGEC_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  edgec::gLoggerFinder = finder;
}

EDGEC_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&edgec::gCreator};
  nbCreators = edgec::gStaticallyRegistered ? 0 : 1;
  return creators;
}

}  // extern "C"
