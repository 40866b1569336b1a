// cuda/conv.cpp — CUDA backend entries of the conv op family: cuDNN 9 graph (backend) API plans,
// built once per shape and cached, with an im2col + cuBLAS engine when cuDNN has no plan.
//
// Engines, in order of preference (CUDL_CONV_ENGINE=im2col forces the last one):
//   forward:  cuDNN conv + bias + ReLU fused in one graph  ->  cuDNN conv, then the bias/ReLU
//             kernel  ->  im2col + cuBLAS GEMM + bias/ReLU kernel
//   backward: cuDNN backward-data / backward-filter plan  ->  im2col (col2im) + cuBLAS GEMM
//   bias gradient: always the deterministic per-channel reduction kernel.
// Engines whose numerical notes say NONDETERMINISTIC are never used; neither are engines that
// down-convert fp32 to TF32 (notes TENSOR_CORE / DOWN_CONVERT_INPUTS) unless the call's MathMode is
// TF32 (CompileOptions::precision = tf32, or CUDL_ALLOW_TF32=1), which also makes the im2col GEMMs
// use CUBLAS_COMPUTE_32F_FAST_TF32. The math mode is part of the plan key.
// 16-bit storage (bf16/f16): the cuDNN graphs declare BFLOAT16/HALF tensors
// with an fp32 compute type, tensor-core engines allowed; the im2col engine runs 16-bit GEMM
// operands with fp32 compute. Either way fp32 sums are rounded once per output element, as the CPU
// reference does. The storage type is part of the plan key.
#include "cuda/conv.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/cudnn_graph.hpp"
#include "kernels/conv.cuh"
#include "kernels/data.cuh"
#include "ops/conv.hpp"

namespace cudl {
namespace {

// ---------------------------------------------------------------------------------------------
// engine choice
// ---------------------------------------------------------------------------------------------

/// True when CUDL_CONV_ENGINE=im2col; throws for a value that is neither im2col, cudnn nor auto.
bool im2col_forced() {
  const char* e = std::getenv("CUDL_CONV_ENGINE");
  if (!e || !*e || std::strcmp(e, "auto") == 0 || std::strcmp(e, "cudnn") == 0) return false;
  if (std::strcmp(e, "im2col") == 0) {
    static std::once_flag logged;
    std::call_once(logged,
                   [] { std::fprintf(stderr, "cudl: CUDL_CONV_ENGINE=im2col: conv ops use the im2col engine\n"); });
    return true;
  }
  CUDL_FAIL("CUDL_CONV_ENGINE=", e, " is not an engine (use auto, cudnn or im2col)");
}

const char* engine_op_name(OpKind op) {
  switch (op) {
    case OpKind::Conv2d:
      return "conv2d";
    case OpKind::Conv2dBackwardData:
      return "conv2d backward-data";
    case OpKind::Conv2dBackwardFilter:
      return "conv2d backward-filter";
    default:
      return op_name(op);
  }
}

// ---------------------------------------------------------------------------------------------
// cuDNN graphs (cuda/cudnn_graph.hpp)
// ---------------------------------------------------------------------------------------------

using dnn::cudnn_dtype;
using dnn::Desc;
using dnn::Graph;
using dnn::make_tensor;
using dnn::Unsupported;

// Tensor unique ids inside one graph.
constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3, kUidBias = 4, kUidConvOut = 5, kUidBiasOut = 6;

/// A packed NCHW tensor of `dtype`; virtual tensors (the intermediates of a fused graph) are fp32.
Desc make_nchw(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w, int64_t alignment, cudnnDataType_t dtype,
               bool is_virtual = false) {
  return make_tensor(uid, {n, c, h, w}, {c * h * w, h * w, w, 1}, alignment, is_virtual,
                     is_virtual ? CUDNN_DATA_FLOAT : dtype);
}

Desc make_conv_desc(const ops::Conv2dGeometry& g) {
  Desc c(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  int64_t spatial = 2;
  cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t pad[2] = {g.pad_h, g.pad_w}, stride[2] = {g.stride_h, g.stride_w}, dil[2] = {g.dil_h, g.dil_w};
  c.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial, "CONVOLUTION_SPATIAL_DIMS");
  c.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "CONVOLUTION_COMP_TYPE");
  c.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "CONVOLUTION_CONV_MODE");
  c.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad, "CONVOLUTION_PRE_PADDINGS");
  c.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad, "CONVOLUTION_POST_PADDINGS");
  c.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil, "CONVOLUTION_DILATIONS");
  c.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride, "CONVOLUTION_FILTER_STRIDES");
  c.finalize("convolution");
  return c;
}

/// One pointwise operation y = mode(x[, b]) with fp32 math.
Desc make_pointwise_op(cudnnPointwiseMode_t mode, const Desc& x, const Desc* b, const Desc& y,
                       std::vector<Desc>& keep) {
  Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "POINTWISE_MODE");
  pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "POINTWISE_MATH_PREC");
  pw.finalize("pointwise");
  Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "OPERATION_POINTWISE_PW_DESCRIPTOR");
  op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, "OPERATION_POINTWISE_XDESC");
  if (b) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b, "OPERATION_POINTWISE_BDESC");
  op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, "OPERATION_POINTWISE_YDESC");
  op.finalize("pointwise operation");
  keep.push_back(std::move(pw));
  return op;
}

Desc make_conv_op(OpKind op, const ops::Conv2dGeometry& g, const Desc& conv, const Desc& x, const Desc& w,
                  const Desc& y) {
  const float alpha = 1.f, beta = 0.f;
  switch (op) {
    case OpKind::Conv2d: {
      Desc d(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x, "CONVOLUTION_FORWARD_X");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w, "CONVOLUTION_FORWARD_W");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y, "CONVOLUTION_FORWARD_Y");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv, "CONVOLUTION_FORWARD_CONV_DESC");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, "CONVOLUTION_FORWARD_ALPHA");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta, "CONVOLUTION_FORWARD_BETA");
      d.finalize("convolution forward operation");
      return d;
    }
    case OpKind::Conv2dBackwardData: {
      Desc d(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, x, "CONVOLUTION_BWD_DATA_DX");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, w, "CONVOLUTION_BWD_DATA_W");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, y, "CONVOLUTION_BWD_DATA_DY");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv, "CONVOLUTION_BWD_DATA_CONV_DESC");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, "CONVOLUTION_BWD_DATA_ALPHA");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, 1, &beta, "CONVOLUTION_BWD_DATA_BETA");
      d.finalize("convolution backward-data operation");
      return d;
    }
    case OpKind::Conv2dBackwardFilter: {
      Desc d(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, x, "CONVOLUTION_BWD_FILTER_X");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, w, "CONVOLUTION_BWD_FILTER_DW");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, y, "CONVOLUTION_BWD_FILTER_DY");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, conv, "CONVOLUTION_BWD_FILTER_CONV_DESC");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha,
            "CONVOLUTION_BWD_FILTER_ALPHA");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, 1, &beta,
            "CONVOLUTION_BWD_FILTER_BETA");
      d.finalize("convolution backward-filter operation");
      return d;
    }
    default:
      CUDL_FAIL("make_conv_op: ", op_name(op), " is not a cuDNN conv op");
  }
}

/// Builds the graph's operations: the conv op alone, or (forward, fused) conv -> [+bias] -> [ReLU]
/// through virtual intermediate tensors. x/dx is uid 1, w/dw 2, y/dy 3, bias 4. The tensors in
/// memory have the call's storage type `dtype` (float, bfloat16, half: NCHW, which cuDNN's engines
/// accept for every type, though its 16-bit tensor-core kernels prefer NHWC); the compute type and the
/// fused graph's virtual intermediates are fp32, so a 16-bit output is rounded once.
Graph build_graph(OpKind op, const ops::Conv2dGeometry& g, bool fused, int64_t alignment, cudnnDataType_t dtype) {
  Graph gr;
  Desc x = make_nchw(kUidX, g.N, g.C, g.H, g.W, alignment, dtype);
  Desc w = make_nchw(kUidW, g.K, g.Cg(), g.R, g.S, alignment, dtype);
  Desc conv = make_conv_desc(g);
  const bool bias = fused && g.has_bias, relu = fused && g.relu;
  // The conv writes y directly unless an epilogue follows, then a virtual tensor.
  Desc conv_out = make_nchw(bias || relu ? kUidConvOut : kUidY, g.N, g.K, g.P, g.Q, alignment, dtype, bias || relu);
  gr.ops.push_back(make_conv_op(op, g, conv, x, w, conv_out));
  gr.uids = {kUidX, kUidW, kUidY};
  if (bias) {
    Desc b = make_tensor(kUidBias, {1, g.K, 1, 1}, {g.K, 1, 1, 1}, alignment, false, dtype);  // broadcast over N, P, Q
    Desc add_out = make_nchw(relu ? kUidBiasOut : kUidY, g.N, g.K, g.P, g.Q, alignment, dtype, relu);
    gr.ops.push_back(make_pointwise_op(CUDNN_POINTWISE_ADD, conv_out, &b, add_out, gr.keep));
    gr.uids.push_back(kUidBias);
    gr.keep.push_back(std::move(b));
    if (relu) {
      Desc y = make_nchw(kUidY, g.N, g.K, g.P, g.Q, alignment, dtype);
      gr.ops.push_back(make_pointwise_op(CUDNN_POINTWISE_RELU_FWD, add_out, nullptr, y, gr.keep));
      gr.keep.push_back(std::move(y));
    }
    gr.keep.push_back(std::move(add_out));
  } else if (relu) {
    Desc y = make_nchw(kUidY, g.N, g.K, g.P, g.Q, alignment, dtype);
    gr.ops.push_back(make_pointwise_op(CUDNN_POINTWISE_RELU_FWD, conv_out, nullptr, y, gr.keep));
    gr.keep.push_back(std::move(y));
  }
  gr.keep.push_back(std::move(x));
  gr.keep.push_back(std::move(w));
  gr.keep.push_back(std::move(conv));
  gr.keep.push_back(std::move(conv_out));
  return gr;
}

std::atomic<int64_t> g_plans_built{0};

/// The conv graph's plan (dnn::find_plan). Throws Unsupported with the reason when there is none.
std::unique_ptr<dnn::Plan> build_plan(cudnnHandle_t handle, OpKind op, const ops::Conv2dGeometry& g, bool fused,
                                      int64_t alignment, bool allow_tf32, DType storage) {
  auto p = std::make_unique<dnn::Plan>();
  p->graph_ops = build_graph(op, g, fused, alignment, cudnn_dtype(storage));
  dnn::find_plan(handle, *p, allow_tf32, storage != DType::f32);
  ++g_plans_built;
  return p;
}

// ---------------------------------------------------------------------------------------------
// plan cache
// ---------------------------------------------------------------------------------------------

struct CacheEntry {
  std::unique_ptr<dnn::Plan> plan;  // null: cuDNN has no plan for this key (the im2col engine runs)
  bool fused = false;               // forward: the plan applies bias and ReLU itself
};

std::mutex g_cache_mutex;
// Deliberately never destroyed: at process exit cuDNN (and the CUDA context) may already be torn
// down, so the cached plans are not handed back to it from a static destructor.
auto& g_cache = *new std::map<std::vector<int64_t>, CacheEntry>;

/// The cached entry for (op, geometry, alignment, storage type, handle, math mode), building (and
/// logging) it on first use. `op` is the cuDNN operation (Conv2dTranspose runs as
/// Conv2dBackwardData). A 16-bit forward with a bias takes only the fused plan: the conv rounded to
/// 16 bits, then a bias kernel, would round twice (the im2col engine adds the bias to fp32 sums).
const CacheEntry& plan_for(cudnnHandle_t handle, const OpCall& call, OpKind op, const ops::Conv2dGeometry& g,
                           int64_t alignment, DType storage) {
  const bool wants_fusion = op == OpKind::Conv2d && (g.has_bias || g.relu);
  std::vector<int64_t> key = {static_cast<int64_t>(op), g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.groups};
  for (int64_t v : {g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, alignment}) key.push_back(v);
  key.push_back(wants_fusion && g.has_bias);
  key.push_back(wants_fusion && g.relu);
  key.push_back(static_cast<int64_t>(reinterpret_cast<uintptr_t>(handle)));
  const bool tf32 = call.math == MathMode::TF32;
  key.push_back(tf32);
  key.push_back(static_cast<int64_t>(storage));
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) return it->second;

  CacheEntry entry;
  std::string fused_reason;
  if (wants_fusion) {
    try {
      entry.plan = build_plan(handle, op, g, true, alignment, tf32, storage);
      entry.fused = true;
    } catch (const Unsupported& u) {
      fused_reason = u.reason;
    } catch (const Error& e) {  // fusion is optional: any refusal of the fused graph falls back
      fused_reason = e.what();
    }
  }
  if (!entry.plan && wants_fusion && g.has_bias && storage != DType::f32) {
    std::fprintf(stderr,
                 "cudl: %s %s x %s (%s): cuDNN has no fused bias plan (%s); using the im2col engine, which adds the "
                 "bias before the one rounding to %s\n",
                 engine_op_name(op), call.label, g.x_shape().str().c_str(), dtype_name(storage), fused_reason.c_str(),
                 dtype_name(storage));
  } else if (!entry.plan) {
    try {
      entry.plan = build_plan(handle, op, g, false, alignment, tf32, storage);
      if (wants_fusion)
        std::fprintf(stderr,
                     "cudl: %s %s x %s: cuDNN has no fused bias/ReLU plan (%s); bias/ReLU run as a separate kernel\n",
                     engine_op_name(op), call.label, g.x_shape().str().c_str(), fused_reason.c_str());
    } catch (const Unsupported& u) {
      std::fprintf(stderr, "cudl: %s %s x %s: cuDNN has no plan (%s); using the im2col engine\n",
                   engine_op_name(op), call.label, g.x_shape().str().c_str(), u.reason.c_str());
    }
  }
  return g_cache.emplace(std::move(key), std::move(entry)).first->second;
}

// ---------------------------------------------------------------------------------------------
// the im2col engine: im2col / col2im kernels + cuBLAS strided-batched GEMM (fp32 or TF32 compute;
// 16-bit storage: 16-bit A/B with fp32 compute, and every sum that is rounded later kept in fp32)
// ---------------------------------------------------------------------------------------------

constexpr int64_t kIm2colWorkspaceLimit = int64_t(256) << 20;  // bytes of column buffer per chunk of images

kernels::ConvKernelGeometry kernel_geometry(const ops::Conv2dGeometry& g) {
  return {g.C, g.H, g.W, g.R, g.S, g.P, g.Q, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w};
}

int to_int(const OpCall& call, int64_t v, const ops::Conv2dGeometry& g) {
  if (v > INT_MAX)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): GEMM dimension ", v, " exceeds int for x ", g.x_shape(), ", w ",
              g.w_shape());
  return static_cast<int>(v);
}

cudaDataType cuda_dtype(DType t) {
  switch (t) {
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

char* byte_ptr(const void* p) { return static_cast<char*>(const_cast<void*>(p)); }

/// One operand of a GEMM: data of `type`, `ld` and `stride` in elements.
struct Operand {
  const void* p;
  DType type;
  int64_t ld, stride;
};

/// Column-major C = op(A)·op(B) for `batch` matrices at the given element strides. A and B have one
/// type; C has theirs or f32. Compute: fp32 (TF32 in the TF32 math mode for f32 operands).
void gemm(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, cublasOperation_t ta,
          cublasOperation_t tb, int64_t m, int64_t n, int64_t k, Operand a, Operand b, float beta, Operand c,
          int64_t batch) {
  const float alpha = 1.f;
  const cublasComputeType_t compute =
      a.type == DType::f32 ? detail::cublas_compute_type(call.math) : CUBLAS_COMPUTE_32F;
  CUDL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      ctx.cublas(), ta, tb, to_int(call, m, g), to_int(call, n, g), to_int(call, k, g), &alpha, a.p, cuda_dtype(a.type),
      to_int(call, a.ld, g), a.stride, b.p, cuda_dtype(b.type), to_int(call, b.ld, g), b.stride, &beta,
      const_cast<void*>(c.p), cuda_dtype(c.type), to_int(call, c.ld, g), c.stride, to_int(call, batch, g), compute,
      CUBLAS_GEMM_DEFAULT));
}

/// The im2col engine's scratch, carved from the context's workspace: a column buffer (chunk,
/// C*R*S, P*Q) of `col_type`, `per_image_f32` floats per image of the chunk, `fixed_f32` more floats.
struct Scratch {
  int64_t chunk = 0;
  void* col = nullptr;
  float* per_image = nullptr;
  float* fixed = nullptr;
};

Scratch scratch(CudaContext& ctx, const ops::Conv2dGeometry& g, DType col_type, int64_t per_image_f32,
                int64_t fixed_f32) {
  auto round_up = [](int64_t b) { return (b + 255) / 256 * 256; };
  const int64_t col_image = g.C * g.R * g.S * g.P * g.Q * static_cast<int64_t>(dtype_size(col_type));
  const int64_t per_image = col_image + per_image_f32 * 4;
  Scratch s;
  s.chunk = std::max<int64_t>(1, std::min<int64_t>(g.N, kIm2colWorkspaceLimit / per_image));
  const int64_t col_bytes = round_up(s.chunk * col_image), extra_bytes = round_up(s.chunk * per_image_f32 * 4);
  char* base = static_cast<char*>(ctx.workspace(static_cast<size_t>(col_bytes + extra_bytes + fixed_f32 * 4)));
  s.col = base;
  s.per_image = reinterpret_cast<float*>(base + col_bytes);
  s.fixed = reinterpret_cast<float*>(base + col_bytes + extra_bytes);
  return s;
}

/// y (N, K, PQ) = act(w · im2col(x) + bias). 16-bit storage with a bias: the GEMM writes fp32 sums
/// and the epilogue rounds once; otherwise the GEMM writes y (ReLU commutes with rounding).
void im2col_forward(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, DType st, const void* x,
                    const void* w, const void* bias, void* y) {
  const auto kg = kernel_geometry(g);
  const kernels::Storage ks = kernels::storage_of(st);
  const int64_t es = static_cast<int64_t>(dtype_size(st));
  const int64_t PQ = g.P * g.Q, CRS = g.Cg() * g.R * g.S, Kg = g.Kg(), col_image = g.C * g.R * g.S * PQ;
  const bool f32_sums = st != DType::f32 && bias;
  const Scratch sc = scratch(ctx, g, st, f32_sums ? g.K * PQ : 0, 0);
  for (int64_t n0 = 0; n0 < g.N; n0 += sc.chunk) {
    const int64_t nc = std::min(sc.chunk, g.N - n0);
    kernels::conv2d_im2col_cuda(byte_ptr(x) + n0 * g.C * g.H * g.W * es, sc.col, ks, kg, nc, ctx.stream());
    const Operand out =
        f32_sums ? Operand{sc.per_image, DType::f32, PQ, 0} : Operand{byte_ptr(y) + n0 * g.K * PQ * es, st, PQ, 0};
    const int64_t out_es = static_cast<int64_t>(dtype_size(out.type));
    if (g.groups == 1) {
      // y[n] (K, PQ) = w (K, CRS) · col[n] (CRS, PQ), batched over the chunk's images
      gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_N, PQ, g.K, CRS, {sc.col, st, PQ, col_image}, {w, st, CRS, 0}, 0.f,
           {out.p, out.type, PQ, g.K * PQ}, nc);
    } else {
      for (int64_t i = 0; i < nc; ++i)  // batched over groups
        gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_N, PQ, Kg, CRS,
             {byte_ptr(sc.col) + i * col_image * es, st, PQ, CRS * PQ}, {w, st, CRS, Kg * CRS}, 0.f,
             {byte_ptr(out.p) + i * g.K * PQ * out_es, out.type, PQ, Kg * PQ}, g.groups);
    }
    if (f32_sums)
      kernels::conv2d_bias_act_cuda(sc.per_image, true, byte_ptr(y) + n0 * g.K * PQ * es, ks, bias, nc, g.K, PQ,
                                    g.relu ? 1 : 0, ctx.stream());
  }
  if (!f32_sums && (bias || g.relu))
    kernels::conv2d_bias_act_cuda(y, st == DType::f32, y, ks, bias, g.N, g.K, PQ, g.relu ? 1 : 0, ctx.stream());
}

/// dx = col2im(wᵀ · dy) (+ bias per channel of dx, nullable: Conv2dTranspose): the column gradient in
/// fp32, summed per dx element, the bias added, and rounded once.
void im2col_backward_data(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, DType st, const void* dy,
                          const void* w, const void* bias, void* dx) {
  const auto kg = kernel_geometry(g);
  const int64_t es = static_cast<int64_t>(dtype_size(st));
  const int64_t PQ = g.P * g.Q, CRS = g.Cg() * g.R * g.S, Kg = g.Kg(), col_image = g.C * g.R * g.S * PQ;
  const Scratch sc = scratch(ctx, g, DType::f32, 0, 0);
  float* col = static_cast<float*>(sc.col);
  for (int64_t n0 = 0; n0 < g.N; n0 += sc.chunk) {
    const int64_t nc = std::min(sc.chunk, g.N - n0);
    if (g.groups == 1) {
      // dcol[n] (CRS, PQ) = wᵀ (CRS, K) · dy[n] (K, PQ)
      gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_T, PQ, CRS, g.K, {byte_ptr(dy) + n0 * g.K * PQ * es, st, PQ, g.K * PQ},
           {w, st, CRS, 0}, 0.f, {col, DType::f32, PQ, col_image}, nc);
    } else {
      for (int64_t i = 0; i < nc; ++i)
        gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_T, PQ, CRS, Kg,
             {byte_ptr(dy) + (n0 + i) * g.K * PQ * es, st, PQ, Kg * PQ}, {w, st, CRS, Kg * CRS}, 0.f,
             {col + i * col_image, DType::f32, PQ, CRS * PQ}, g.groups);
    }
    kernels::conv2d_col2im_cuda(col, byte_ptr(dx) + n0 * g.C * g.H * g.W * es, kernels::storage_of(st), kg, nc, bias,
                                ctx.stream());
  }
}

/// dw = Σ_n dy[n] · im2col(x[n])ᵀ, accumulated in fp32 (in dw itself for f32 storage, else in a
/// scratch buffer rounded to dw once at the end).
void im2col_backward_filter(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, DType st, const void* x,
                            const void* dy, void* dw) {
  const auto kg = kernel_geometry(g);
  const int64_t es = static_cast<int64_t>(dtype_size(st));
  const int64_t PQ = g.P * g.Q, CRS = g.Cg() * g.R * g.S, Kg = g.Kg(), col_image = g.C * g.R * g.S * PQ;
  const int64_t dw_numel = g.K * CRS;
  const Scratch sc = scratch(ctx, g, st, 0, st == DType::f32 ? 0 : dw_numel);
  float* acc = st == DType::f32 ? static_cast<float*>(dw) : sc.fixed;
  for (int64_t n0 = 0; n0 < g.N; n0 += sc.chunk) {
    const int64_t nc = std::min(sc.chunk, g.N - n0);
    kernels::conv2d_im2col_cuda(byte_ptr(x) + n0 * g.C * g.H * g.W * es, sc.col, kernels::storage_of(st), kg, nc,
                                ctx.stream());
    // dw_g (Kg, CRS) (+)= dy[n, group] (Kg, PQ) · col[n, group]ᵀ (PQ, CRS), one image after the
    // other (a fixed summation order), batched over groups.
    for (int64_t i = 0; i < nc; ++i)
      gemm(ctx, call, g, CUBLAS_OP_T, CUBLAS_OP_N, CRS, Kg, PQ,
           {byte_ptr(sc.col) + i * col_image * es, st, PQ, CRS * PQ},
           {byte_ptr(dy) + (n0 + i) * g.K * PQ * es, st, PQ, Kg * PQ}, n0 + i == 0 ? 0.f : 1.f,
           {acc, DType::f32, CRS, Kg * CRS}, g.groups);
  }
  if (st != DType::f32)
    kernels::cast_cuda(acc, kernels::kCastF32, dw, kernels::cast_code(st), dw_numel,
                       ctx.stream());
}

// ---------------------------------------------------------------------------------------------
// op entries
// ---------------------------------------------------------------------------------------------

void cuda_conv2d(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  const DType st = g.storage;
  void *x = g.x.data, *w = g.w.data, *bias = g.bias.data, *y = g.y.data;
  if (!im2col_forced()) {
    const CacheEntry& e = plan_for(ctx.cudnn(), call, call.op, g, dnn::alignment_of(st, {x, w, bias, y}), st);
    if (e.plan) {
      dnn::execute(ctx, *e.plan, {{kUidX, x}, {kUidW, w}, {kUidY, y}, {kUidBias, bias}}, "conv");
      // Unfused: f32, or 16-bit without a bias (ReLU of a rounded value is the rounded ReLU).
      if (!e.fused && (bias || g.relu))
        kernels::conv2d_bias_act_cuda(y, st == DType::f32, y, kernels::storage_of(st), bias, g.N, g.K, g.P * g.Q,
                                      g.relu ? 1 : 0, ctx.stream());
      return;
    }
  }
  im2col_forward(ctx, call, g, st, x, w, bias, y);
}

/// dx = the data gradient of the convolution g for dy: a cuDNN backward-data plan, else the im2col
/// engine (Conv2dBackwardData, and Conv2dTranspose before its bias).
void backward_data(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, DType st, void* dy, void* w,
                   void* dx) {
  if (!im2col_forced()) {
    const CacheEntry& e =
        plan_for(ctx.cudnn(), call, OpKind::Conv2dBackwardData, g, dnn::alignment_of(st, {dy, w, dx}), st);
    if (e.plan) {
      dnn::execute(ctx, *e.plan, {{kUidX, dx}, {kUidW, w}, {kUidY, dy}}, "conv");
      return;
    }
  }
  im2col_backward_data(ctx, call, g, st, dy, w, nullptr, dx);
}

void cuda_conv2d_backward_data(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  backward_data(cuda_context(call), call, g, g.storage, g.dy.data, g.w.data, g.dx.data);
}

// The transposed convolution is the data gradient of the convolution whose geometry its check
// returns (cuDNN's backward-data operation), then its bias per output channel. In 16-bit storage with
// a bias it runs on the im2col engine, which adds the bias to the fp32 sums before the one rounding
// (cuDNN's plan would round y, and the bias kernel round it again).
void cuda_conv2d_transpose(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  const DType st = g.storage;
  void* y = g.dx.data;
  if (g.has_bias && st != DType::f32) return im2col_backward_data(ctx, call, g, st, g.dy.data, g.w.data, g.bias.data, y);
  backward_data(ctx, call, g, st, g.dy.data, g.w.data, y);
  if (g.has_bias)
    kernels::conv2d_bias_act_cuda(y, true, y, kernels::Storage::kF32, g.bias.data, g.N, g.C, g.H * g.W, 0,
                                  ctx.stream());
}

void cuda_conv2d_backward_filter(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  const DType st = g.storage;
  void *x = g.x.data, *dy = g.dy.data, *dw = g.dw.data;
  if (!im2col_forced()) {
    const CacheEntry& e = plan_for(ctx.cudnn(), call, call.op, g, dnn::alignment_of(st, {x, dy, dw}), st);
    if (e.plan) {
      dnn::execute(ctx, *e.plan, {{kUidX, x}, {kUidW, dw}, {kUidY, dy}}, "conv");
      return;
    }
  }
  im2col_backward_filter(ctx, call, g, st, x, dy, dw);
}

void cuda_conv2d_backward_bias(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::conv2d_bias_grad_cuda(g.dy.data, g.db.data, kernels::storage_of(g.storage), g.N, g.K, g.P * g.Q,
                                 ctx.stream());
}

}  // namespace

int64_t conv_plans_built() { return g_plans_built.load(); }

void conv_clear_plan_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  g_cache.clear();
  g_plans_built = 0;
}

void register_cuda_conv_ops(OpTable& t) {
  t.add(OpKind::Conv2d, cuda_conv2d);
  t.add(OpKind::Conv2dBackwardData, cuda_conv2d_backward_data);
  t.add(OpKind::Conv2dBackwardFilter, cuda_conv2d_backward_filter);
  t.add(OpKind::Conv2dBackwardBias, cuda_conv2d_backward_bias);
  t.add(OpKind::Conv2dTranspose, cuda_conv2d_transpose);
}

}  // namespace cudl
