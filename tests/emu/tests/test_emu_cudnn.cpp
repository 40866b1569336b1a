// tests/emu/tests/test_emu_cudnn.cpp — the emulated cuDNN graph API: descriptor validation errors,
// heuristics and engine notes, execution errors, and conv forward / backward-data / backward-filter
// (and the fused conv + bias + ReLU graph) against naive loops written here; BFLOAT16/HALF
// convolutions rounded once, and the type configurations cuDNN refuses.
#include <cuda_runtime.h>
#include <cudnn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "emu/cudnn_emu.hpp"
#include "emu/emu.hpp"
#include "src/core/half.hpp"

namespace {

// ---------------------------------------------------------------------------------------------
// helpers

struct DevBuf {
  float* ptr = nullptr;
  size_t n = 0;
  explicit DevBuf(const std::vector<float>& host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(float)), cudaSuccess);
    if (n) EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DevBuf() { cudaFree(ptr); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  std::vector<float> host() const {
    std::vector<float> h(n);
    if (n) EXPECT_EQ(cudaMemcpy(h.data(), ptr, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<float> random_vec(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// RAII backend descriptor.
struct Be {
  cudnnBackendDescriptor_t d = nullptr;
  explicit Be(cudnnBackendDescriptorType_t t) { EXPECT_EQ(cudnnBackendCreateDescriptor(t, &d), CUDNN_STATUS_SUCCESS); }
  ~Be() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  Be(Be&& o) noexcept : d(std::exchange(o.d, nullptr)) {}
  Be(const Be&) = delete;
  cudnnStatus_t set(cudnnBackendAttributeName_t n, cudnnBackendAttributeType_t t, int64_t c, const void* v) {
    return cudnnBackendSetAttribute(d, n, t, c, v);
  }
  cudnnStatus_t set_desc(cudnnBackendAttributeName_t n, const Be& o) {
    return cudnnBackendSetAttribute(d, n, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o.d);
  }
  cudnnStatus_t finalize() { return cudnnBackendFinalize(d); }
};

/// A packed tensor descriptor, finalized unless told otherwise.
Be tensor(int64_t uid, std::vector<int64_t> dims, bool is_virtual = false, bool finalize = true,
          cudnnDataType_t dt = CUDNN_DATA_FLOAT) {
  Be t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  std::vector<int64_t> strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * dims[i + 1];
  int64_t align = dt == CUDNN_DATA_FLOAT ? 4 : 2;
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, (int64_t)dims.size(), dims.data()),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, (int64_t)strides.size(), strides.data()),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), CUDNN_STATUS_SUCCESS);
  bool v = is_virtual;
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v), CUDNN_STATUS_SUCCESS);
  if (finalize) EXPECT_EQ(t.finalize(), CUDNN_STATUS_SUCCESS);
  return t;
}

/// Geometry of one test convolution (pre/post paddings may differ).
struct Geo {
  int64_t N, C, H, W, K, R, S;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, qh = 0, qw = 0, dh = 1, dw = 1, groups = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  int64_t P() const { return (H + ph + qh - dh * (R - 1) - 1) / sh + 1; }
  int64_t Q() const { return (W + pw + qw - dw * (S - 1) - 1) / sw + 1; }
  int64_t Cg() const { return C / groups; }
};

Be conv_desc(const Geo& g, cudnnDataType_t comp = CUDNN_DATA_FLOAT) {
  Be c(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  int64_t sd = 2;
  int64_t pre[2] = {g.ph, g.pw}, post[2] = {g.qh, g.qw}, st[2] = {g.sh, g.sw}, dil[2] = {g.dh, g.dw};
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &sd), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &g.mode), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pre), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, post), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, st), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(c.finalize(), CUDNN_STATUS_SUCCESS);
  return c;
}

enum class Kind { Fwd, BwdData, BwdFilter };

/// Sets a conv operation's tensors (x/dx uid 1, w/dw uid 2, y/dy uid 3), conv desc and alpha/beta.
cudnnStatus_t conv_op(Be& op, Kind k, const Be& x, const Be& w, const Be& y, const Be& conv, float alpha = 1.f,
                      float beta = 0.f) {
  cudnnBackendAttributeName_t ax, aw, ay, ac, aa, ab;
  if (k == Kind::Fwd) {
    ax = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, aw = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W;
    ay = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, ac = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC;
    aa = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, ab = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA;
  } else if (k == Kind::BwdData) {
    ax = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, aw = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W;
    ay = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, ac = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC;
    aa = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, ab = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA;
  } else {
    ax = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, aw = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW;
    ay = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, ac = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC;
    aa = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, ab = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA;
  }
  cudnnStatus_t s;
  if ((s = op.set_desc(ax, x)) || (s = op.set_desc(aw, w)) || (s = op.set_desc(ay, y)) || (s = op.set_desc(ac, conv)))
    return s;
  if ((s = op.set(aa, CUDNN_TYPE_FLOAT, 1, &alpha)) || (s = op.set(ab, CUDNN_TYPE_FLOAT, 1, &beta))) return s;
  return op.finalize();
}

cudnnBackendDescriptorType_t op_type(Kind k) {
  return k == Kind::Fwd       ? CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR
         : k == Kind::BwdData ? CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR
                              : CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR;
}

/// Graph -> heuristics -> first deterministic engine config -> plan. The descriptors live here.
struct Pipeline {
  cudnnHandle_t handle = nullptr;
  std::vector<Be> keep;
  Be graph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};
  Be heur{CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR};
  std::vector<Be> cfgs;
  Be plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
  int64_t n_configs = 0;
  bool allow_tf32 = false;  // else engines noted TENSOR_CORE / DOWN_CONVERT_INPUTS are skipped

  /// The first acceptable engine in the heuristics' order: never NONDETERMINISTIC, and not a TF32
  /// one unless allow_tf32. Returns the status of the first failing step (none: NOT_SUPPORTED).
  /// The finalized plan's engine, written into `engine` (an ENGINE descriptor).
  cudnnStatus_t plan_engine(Be& engine) const {
    Be cfg(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t n = 0;
    cudnnStatus_t s = cudnnBackendGetAttribute(plan.d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &cfg.d);
    if (s) return s;
    return cudnnBackendGetAttribute(cfg.d, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                    &engine.d);
  }

  cudnnStatus_t build(const std::vector<cudnnBackendDescriptor_t>& ops) {
    cudnnStatus_t s;
    if ((s = graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, (int64_t)ops.size(), ops.data())))
      return s;
    if ((s = graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle)) || (s = graph.finalize()))
      return s;
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_INSTANT;
    if ((s = heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph)) ||
        (s = heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode)) || (s = heur.finalize()))
      return s;
    if ((s = cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                      &n_configs, nullptr)))
      return s;
    if (n_configs == 0) return CUDNN_STATUS_NOT_SUPPORTED;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < n_configs; ++i) {
      cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(cfgs.back().d);
    }
    int64_t got = 0;
    if ((s = cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_configs,
                                      &got, raw.data())))
      return s;
    for (int64_t i = 0; i < got; ++i) {
      Be engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      int64_t n = 0;
      if ((s = cudnnBackendGetAttribute(raw[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                        &engine.d)))
        return s;
      cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
      if ((s = cudnnBackendGetAttribute(engine.d, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                        CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes)))
        return s;
      if (std::find(notes, notes + n, CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) != notes + n) continue;
      if (!allow_tf32 && (std::find(notes, notes + n, CUDNN_NUMERICAL_NOTE_TENSOR_CORE) != notes + n ||
                          std::find(notes, notes + n, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) != notes + n))
        continue;
      if ((s = plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle)) ||
          (s = plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[i])) || (s = plan.finalize()))
        return s;
      return cudnnBackendGetAttribute(plan.d, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                      &workspace);
    }
    return CUDNN_STATUS_NOT_SUPPORTED;
  }

  cudnnStatus_t execute(std::vector<int64_t> uids, std::vector<void*> ptrs, void* ws) {
    Be pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    cudnnStatus_t s;
    if ((s = pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, (int64_t)uids.size(), uids.data())) ||
        (s = pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, (int64_t)ptrs.size(), ptrs.data())) ||
        (s = pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws)) || (s = pack.finalize()))
      return s;
    return cudnnBackendExecute(handle, plan.d, pack.d);
  }
};

/// Naive references (NCHW, cross-correlation unless g.mode flips the filter), in double.
double wat(const std::vector<float>& w, const Geo& g, int64_t k, int64_t c, int64_t r, int64_t s) {
  if (g.mode == CUDNN_CONVOLUTION) r = g.R - 1 - r, s = g.S - 1 - s;
  return w[((k * g.Cg() + c) * g.R + r) * g.S + s];
}

std::vector<double> ref_forward(const Geo& g, const std::vector<float>& x, const std::vector<float>& w) {
  const int64_t P = g.P(), Q = g.Q(), Kg = g.K / g.groups;
  std::vector<double> y(g.N * g.K * P * Q, 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double acc = 0;
          for (int64_t c = 0; c < g.Cg(); ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ih = p * g.sh - g.ph + r * g.dh, iw = q * g.sw - g.pw + s * g.dw;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                acc += x[((n * g.C + (k / Kg) * g.Cg() + c) * g.H + ih) * g.W + iw] * wat(w, g, k, c, r, s);
              }
          y[((n * g.K + k) * P + p) * Q + q] = acc;
        }
  return y;
}

/// dx by scattering every (output, filter tap) pair: an independent formulation from the gather.
std::vector<double> ref_backward_data(const Geo& g, const std::vector<float>& dy, const std::vector<float>& w) {
  const int64_t P = g.P(), Q = g.Q(), Kg = g.K / g.groups;
  std::vector<double> dx(g.N * g.C * g.H * g.W, 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q)
          for (int64_t c = 0; c < g.Cg(); ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ih = p * g.sh - g.ph + r * g.dh, iw = q * g.sw - g.pw + s * g.dw;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                dx[((n * g.C + (k / Kg) * g.Cg() + c) * g.H + ih) * g.W + iw] +=
                    dy[((n * g.K + k) * P + p) * Q + q] * wat(w, g, k, c, r, s);
              }
  return dx;
}

std::vector<double> ref_backward_filter(const Geo& g, const std::vector<float>& x, const std::vector<float>& dy) {
  const int64_t P = g.P(), Q = g.Q(), Kg = g.K / g.groups;
  std::vector<double> dw(g.K * g.Cg() * g.R * g.S, 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q)
          for (int64_t c = 0; c < g.Cg(); ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ih = p * g.sh - g.ph + r * g.dh, iw = q * g.sw - g.pw + s * g.dw;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                int64_t rr = g.mode == CUDNN_CONVOLUTION ? g.R - 1 - r : r;
                int64_t ss = g.mode == CUDNN_CONVOLUTION ? g.S - 1 - s : s;
                dw[((k * g.Cg() + c) * g.R + rr) * g.S + ss] +=
                    dy[((n * g.K + k) * P + p) * Q + q] * x[((n * g.C + (k / Kg) * g.Cg() + c) * g.H + ih) * g.W + iw];
              }
  return dw;
}

::testing::AssertionResult close(const std::vector<float>& got, const std::vector<double>& want, double tol = 1e-4) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i]))))
      return ::testing::AssertionFailure() << "[" << i << "] got " << got[i] << ", expected " << want[i];
  return ::testing::AssertionSuccess();
}

class EmuCudnn : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudnnCreate(&handle), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    ASSERT_EQ(cudnnSetStream(handle, stream), CUDNN_STATUS_SUCCESS);
    cudl_emu::cudnn_set_no_engines(false);
    cudl_emu::cudnn_set_fusion_supported(true);
  }
  void TearDown() override {
    cudl_emu::cudnn_set_no_engines(false);
    cudl_emu::cudnn_set_fusion_supported(true);
    cudaStreamDestroy(stream);
    cudnnDestroy(handle);
  }
  /// Sets up `op` (a conv operation of kind k) and plans it on the first acceptable engine.
  void plan_conv(Be& op, Pipeline& p, Kind k, const Be& x, const Be& w, const Be& y, const Be& conv) {
    ASSERT_EQ(conv_op(op, k, x, w, y, conv), CUDNN_STATUS_SUCCESS);
    p.handle = handle;
    ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
  }
  cudnnHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
};

// ---------------------------------------------------------------------------------------------
// handle, strings

TEST_F(EmuCudnn, HandleStreamAndErrorStrings) {
  cudaStream_t s = nullptr;
  EXPECT_EQ(cudnnGetStream(handle, &s), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(s, stream);
  cudnnHandle_t h2;
  ASSERT_EQ(cudnnCreate(&h2), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroy(h2), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnDestroy(h2), CUDNN_STATUS_BAD_PARAM);  // already destroyed
  EXPECT_EQ(cudnnCreate(nullptr), CUDNN_STATUS_BAD_PARAM_NULL_POINTER);
  EXPECT_STREQ(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED), "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED");
  EXPECT_EQ(cudnnGetVersion(), static_cast<size_t>(CUDNN_VERSION));
  char msg[256];
  cudnnGetLastErrorString(msg, sizeof msg);
  EXPECT_NE(std::string(msg).find("cudnnCreate"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------------
// descriptor validation

TEST_F(EmuCudnn, TensorAttributeChecks) {
  Be t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  int64_t uid = 7;
  float f = 1.f;
  cudnnDataType_t dt[2] = {CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT};
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_FLOAT, 1, &f), CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE);
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 2, dt), CUDNN_STATUS_BAD_PARAM);  // count
  EXPECT_EQ(t.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode),
            CUDNN_STATUS_BAD_PARAM);  // not a tensor attribute
  // (codes as libcudnn 9.19 answers them)
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, nullptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnBackendSetAttribute(nullptr, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid),
            CUDNN_STATUS_BAD_PARAM_NULL_POINTER);
  // Missing required attributes: finalize fails; reading before finalize: NOT_INITIALIZED.
  EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(t.finalize(), CUDNN_STATUS_BAD_PARAM);
  int64_t n = 0, got = 0;
  EXPECT_EQ(cudnnBackendGetAttribute(t.d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &n, &got),
            CUDNN_STATUS_NOT_INITIALIZED);

  // dims / strides disagree in count; bad alignment; negative dimension
  auto partial = [](std::vector<int64_t> dims, std::vector<int64_t> strides, int64_t align) {
    Be t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t uid = 1;
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, (int64_t)dims.size(), dims.data());
    t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, (int64_t)strides.size(), strides.data());
    return t.finalize();
  };
  EXPECT_EQ(partial({2, 3, 4, 5}, {60, 20, 5}, 4), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(partial({2, 3, 4, 5}, {60, 20, 5, 1}, 6), CUDNN_STATUS_BAD_PARAM);  // not a power of two
  EXPECT_EQ(partial({2, -1, 4, 5}, {60, 20, 5, 1}, 4), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(partial({2, 0, 4, 5}, {60, 20, 5, 1}, 4), CUDNN_STATUS_SUCCESS);  // empty tensors are fine
  EXPECT_EQ(partial({2, 3, 4, 5}, {1, 2, 30, 6}, 4), CUDNN_STATUS_SUCCESS);   // any non-overlapping order

  // Finalized: attributes read back, cannot be set again.
  Be ok = tensor(9, {1, 3, 4, 5});
  int64_t dims[8];
  EXPECT_EQ(cudnnBackendGetAttribute(ok.d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 8, &n, dims),
            CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(n, 4);
  EXPECT_EQ(dims[1], 3);
  EXPECT_EQ(dims[3], 5);
  EXPECT_EQ(ok.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), CUDNN_STATUS_BAD_PARAM);
}

TEST_F(EmuCudnn, ConvolutionDescriptorChecks) {
  Be c(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  int64_t sd = 2, two[2] = {1, 1}, three[3] = {0, 0, 0};
  cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  c.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &sd);
  c.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
  c.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  c.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, two);
  c.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, two);
  c.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, two);
  EXPECT_EQ(c.finalize(), CUDNN_STATUS_BAD_PARAM);  // PRE_PADDINGS missing
  c.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 3, three);
  EXPECT_EQ(c.finalize(), CUDNN_STATUS_BAD_PARAM);  // 3 paddings for 2 spatial dims
  c.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, three);
  EXPECT_EQ(c.finalize(), CUDNN_STATUS_SUCCESS);
}

TEST_F(EmuCudnn, ConvOperationChecks) {
  Geo g{2, 4, 6, 5, 6, 3, 3};
  g.groups = 2;
  Be conv = conv_desc(g);
  Be x = tensor(1, {g.N, g.C, g.H, g.W}), w = tensor(2, {g.K, g.Cg(), g.R, g.S});
  Be y = tensor(3, {g.N, g.K, g.P(), g.Q()});
  {  // a convolution descriptor where a tensor belongs
    Be op(op_type(Kind::Fwd));
    EXPECT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, conv), CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE);
  }
  {  // alpha as an int64 (a FLOAT-or-DOUBLE attribute: plain BAD_PARAM)
    Be op(op_type(Kind::Fwd));
    int64_t one = 1;
    EXPECT_EQ(op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_INT64, 1, &one),
              CUDNN_STATUS_BAD_PARAM);
  }
  {  // missing conv descriptor; alpha and beta themselves are optional
    Be op(op_type(Kind::Fwd));
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x);
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w);
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y);
    EXPECT_EQ(op.finalize(), CUDNN_STATUS_BAD_PARAM);
    Be op2(op_type(Kind::Fwd));
    op2.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x);
    op2.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w);
    op2.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y);
    op2.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv);
    EXPECT_EQ(op2.finalize(), CUDNN_STATUS_SUCCESS);
  }
  {  // an unfinalized tensor
    Be xu = tensor(1, {g.N, g.C, g.H, g.W}, false, false);
    Be op(op_type(Kind::Fwd));
    EXPECT_EQ(conv_op(op, Kind::Fwd, xu, w, y, conv), CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED);
  }
  {  // wrong output size
    Be y2 = tensor(3, {g.N, g.K, g.P() + 1, g.Q()});
    Be op(op_type(Kind::Fwd));
    EXPECT_EQ(conv_op(op, Kind::Fwd, x, w, y2, conv), CUDNN_STATUS_BAD_PARAM);
  }
  {  // input channels not a multiple of the filter's
    Be w3 = tensor(2, {g.K, 3, g.R, g.S});
    Be op(op_type(Kind::BwdData));
    EXPECT_EQ(conv_op(op, Kind::BwdData, x, w3, y, conv), CUDNN_STATUS_BAD_PARAM);
  }
  {  // two different tensors with one uid: the operation finalizes, its graph does not
    Be w1 = tensor(1, {g.K, g.Cg(), g.R, g.S});
    Be op(op_type(Kind::BwdFilter));
    ASSERT_EQ(conv_op(op, Kind::BwdFilter, x, w1, y, conv), CUDNN_STATUS_SUCCESS);
    Pipeline p;
    p.handle = handle;
    EXPECT_EQ(p.build({op.d}), CUDNN_STATUS_BAD_PARAM);
  }
  {  // fine
    Be op(op_type(Kind::BwdFilter));
    EXPECT_EQ(conv_op(op, Kind::BwdFilter, x, w, y, conv), CUDNN_STATUS_SUCCESS);
  }
}

TEST_F(EmuCudnn, GraphHeuristicsAndEngineNotes) {
  Geo g{1, 3, 5, 5, 4, 3, 3};
  Be conv = conv_desc(g);
  Be x = tensor(1, {g.N, g.C, g.H, g.W}), w = tensor(2, {g.K, g.C, g.R, g.S}), y = tensor(3, {g.N, g.K, g.P(), g.Q()});
  {  // a graph needs operations; the handle is optional (cuDNN >= 9.8)
    Be op(op_type(Kind::Fwd));
    ASSERT_EQ(conv_op(op, Kind::Fwd, x, w, y, conv), CUDNN_STATUS_SUCCESS);
    Be empty(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    EXPECT_EQ(empty.finalize(), CUDNN_STATUS_BAD_PARAM);
    Be graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op.d);
    EXPECT_EQ(graph.finalize(), CUDNN_STATUS_SUCCESS);
    cudnnHandle_t bogus = reinterpret_cast<cudnnHandle_t>(&graph);
    Be graph2(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph2.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op.d);
    graph2.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &bogus);
    EXPECT_EQ(graph2.finalize(), CUDNN_STATUS_BAD_PARAM);
  }
  {  // heuristics on an unfinalized graph
    Be graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    Be heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_INSTANT;
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    EXPECT_EQ(heur.finalize(), CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED);
  }
  {  // backward-filter: a TF32 tensor-core engine ranked first (index 2), then a nondeterministic one
     // (0) and a note-free one (1); without TF32 the pipeline takes 1
    Be op(op_type(Kind::BwdFilter));
    ASSERT_EQ(conv_op(op, Kind::BwdFilter, x, w, y, conv), CUDNN_STATUS_SUCCESS);
    Pipeline p;
    p.handle = handle;
    ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(p.n_configs, 3);
    int64_t n = 0, index = -1;
    Be engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    ASSERT_EQ(p.plan_engine(engine), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudnnBackendGetAttribute(engine.d, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(index, 1);
    EXPECT_GT(p.workspace, 0);
    // results into a descriptor of the wrong type
    Be wrong(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    EXPECT_EQ(cudnnBackendGetAttribute(p.heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                       &wrong.d),
              CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE);
  }
  {  // the no-engines hook
    cudl_emu::cudnn_set_no_engines(true);
    Be op(op_type(Kind::Fwd));
    ASSERT_EQ(conv_op(op, Kind::Fwd, x, w, y, conv), CUDNN_STATUS_SUCCESS);
    Pipeline p;
    p.handle = handle;
    EXPECT_EQ(p.build({op.d}), CUDNN_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(p.n_configs, 0);
    int64_t n = 0, count = -1;
    EXPECT_EQ(cudnnBackendGetAttribute(p.graph.d, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64, 1,
                                       &n, &count),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(count, 0);
  }
}

TEST_F(EmuCudnn, ExecuteChecks) {
  Geo g{1, 2, 4, 4, 2, 3, 3};
  g.ph = g.pw = g.qh = g.qw = 1;
  Be conv = conv_desc(g);
  Be x = tensor(1, {g.N, g.C, g.H, g.W}), w = tensor(2, {g.K, g.C, g.R, g.S}), y = tensor(3, {g.N, g.K, g.P(), g.Q()});
  Be op(op_type(Kind::Fwd));
  ASSERT_EQ(conv_op(op, Kind::Fwd, x, w, y, conv), CUDNN_STATUS_SUCCESS);
  Pipeline p;
  p.handle = handle;
  ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
  DevBuf dx(random_vec(g.N * g.C * g.H * g.W, 1)), dw(random_vec(g.K * g.C * g.R * g.S, 2));
  DevBuf dy(std::vector<float>(g.N * g.K * g.P() * g.Q())), ws(std::vector<float>(1024)), small(std::vector<float>(4));
  std::vector<float> host(64);
  // missing tensor, host pointer, too-small allocation, missing workspace, duplicate uid
  EXPECT_EQ(p.execute({1, 2}, {dx.ptr, dw.ptr}, ws.ptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(p.execute({1, 2, 3}, {dx.ptr, dw.ptr, host.data()}, ws.ptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(p.execute({1, 2, 3}, {dx.ptr, dw.ptr, small.ptr}, ws.ptr), CUDNN_STATUS_BAD_PARAM);
  if (p.workspace > 0) EXPECT_EQ(p.execute({1, 2, 3}, {dx.ptr, dw.ptr, dy.ptr}, nullptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(p.execute({1, 1, 3}, {dx.ptr, dw.ptr, dy.ptr}, ws.ptr), CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES);
  // unfinalized plan / pack
  Be raw_plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR), raw_pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  EXPECT_EQ(raw_plan.finalize(), CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED);  // no engine config
  EXPECT_EQ(cudnnBackendExecute(handle, raw_plan.d, raw_pack.d), CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED);
  EXPECT_EQ(cudnnBackendExecute(nullptr, p.plan.d, raw_pack.d), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnBackendExecute(handle, p.plan.d, raw_plan.d), CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE);
  // and a good one: the work runs on the handle's stream
  const uint64_t before = cudl_emu::cudnn_counters().executions;
  EXPECT_EQ(p.execute({1, 2, 3}, {dx.ptr, dw.ptr, dy.ptr}, ws.ptr), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudl_emu::cudnn_counters().executions, before + 1);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_TRUE(close(dy.host(), ref_forward(g, dx.host(), dw.host())));
}

// ---------------------------------------------------------------------------------------------
// numerics

struct Case {
  const char* name;
  Geo g;
};

std::vector<Case> cases() {
  std::vector<Case> v;
  v.push_back({"3x3 pad 1", {2, 3, 7, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1}});
  v.push_back({"stride 2 non-square filter", {1, 2, 9, 8, 3, 3, 2, 2, 2, 1, 0, 1, 0}});
  v.push_back({"dilation 2", {2, 2, 7, 7, 2, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2}});
  v.push_back({"groups 2 stride 2", {3, 4, 6, 5, 6, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 2}});
  v.push_back({"depthwise", {1, 3, 5, 6, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3}});
  v.push_back({"asymmetric padding", {1, 2, 5, 5, 2, 2, 2, 1, 1, 0, 1, 1, 0}});
  v.push_back({"1x1", {2, 5, 3, 4, 7, 1, 1}});
  Geo flip{1, 2, 5, 4, 3, 3, 2, 1, 1, 1, 0, 1, 0};
  flip.mode = CUDNN_CONVOLUTION;
  v.push_back({"convolution mode", flip});
  return v;
}

TEST_F(EmuCudnn, ForwardBackwardDataBackwardFilterMatchNaiveLoops) {
  for (const Case& cs : cases()) {
    SCOPED_TRACE(cs.name);
    const Geo& g = cs.g;
    const auto xv = random_vec(g.N * g.C * g.H * g.W, 11), wv = random_vec(g.K * g.Cg() * g.R * g.S, 12),
               yv = random_vec(g.N * g.K * g.P() * g.Q(), 13);
    Be conv = conv_desc(g);
    Be xt = tensor(1, {g.N, g.C, g.H, g.W}), wt = tensor(2, {g.K, g.Cg(), g.R, g.S}),
       yt = tensor(3, {g.N, g.K, g.P(), g.Q()});
    for (Kind k : {Kind::Fwd, Kind::BwdData, Kind::BwdFilter}) {
      Be op(op_type(k));
      Pipeline p;
      ASSERT_NO_FATAL_FAILURE(plan_conv(op, p, k, xt, wt, yt, conv));
      DevBuf x(k == Kind::BwdData ? std::vector<float>(xv.size(), NAN) : xv);
      DevBuf w(k == Kind::BwdFilter ? std::vector<float>(wv.size(), NAN) : wv);
      DevBuf y(k == Kind::Fwd ? std::vector<float>(yv.size(), NAN) : yv);
      DevBuf ws(std::vector<float>(std::max<int64_t>(1, p.workspace / 4)));
      ASSERT_EQ(p.execute({1, 2, 3}, {x.ptr, w.ptr, y.ptr}, ws.ptr), CUDNN_STATUS_SUCCESS);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      if (k == Kind::Fwd) EXPECT_TRUE(close(y.host(), ref_forward(g, xv, wv))) << "forward";
      if (k == Kind::BwdData) EXPECT_TRUE(close(x.host(), ref_backward_data(g, yv, wv))) << "backward data";
      if (k == Kind::BwdFilter) EXPECT_TRUE(close(w.host(), ref_backward_filter(g, xv, yv))) << "backward filter";
    }
  }
}

TEST_F(EmuCudnn, TensorCoreEngineReadsTheOperandsAsTf32) {
  const Geo g = cases().front().g;
  const auto xv = random_vec(g.N * g.C * g.H * g.W, 11), wv = random_vec(g.K * g.Cg() * g.R * g.S, 12),
             yv = random_vec(g.N * g.K * g.P() * g.Q(), 13);
  auto rounded = [](std::vector<float> v) {
    for (float& x : v) x = cudl_emu::round_tf32(x);
    return v;
  };
  const auto xr = rounded(xv), wr = rounded(wv), yr = rounded(yv);
  Be conv = conv_desc(g);
  Be xt = tensor(1, {g.N, g.C, g.H, g.W}), wt = tensor(2, {g.K, g.Cg(), g.R, g.S}), yt = tensor(3, {g.N, g.K, g.P(), g.Q()});
  for (Kind k : {Kind::Fwd, Kind::BwdData, Kind::BwdFilter}) {
    Be op(op_type(k));
    ASSERT_EQ(conv_op(op, k, xt, wt, yt, conv), CUDNN_STATUS_SUCCESS);
    Pipeline p;
    p.handle = handle;
    p.allow_tf32 = true;  // takes the first-ranked engine: the tensor-core one
    ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
    DevBuf x(xv), w(wv), y(yv);
    DevBuf ws(std::vector<float>(std::max<int64_t>(1, p.workspace / 4)));
    ASSERT_EQ(p.execute({1, 2, 3}, {x.ptr, w.ptr, y.ptr}, ws.ptr), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(cudl_emu::cudnn_counters().last_engine, k == Kind::Fwd ? 1 : 2);
    std::vector<float> got;
    std::vector<double> want, exact;
    if (k == Kind::Fwd) got = y.host(), want = ref_forward(g, xr, wr), exact = ref_forward(g, xv, wv);
    if (k == Kind::BwdData) got = x.host(), want = ref_backward_data(g, yr, wr), exact = ref_backward_data(g, yv, wv);
    if (k == Kind::BwdFilter)
      got = w.host(), want = ref_backward_filter(g, xr, yr), exact = ref_backward_filter(g, xv, yv);
    EXPECT_TRUE(close(got, want, 1e-6)) << static_cast<int>(k);
    EXPECT_FALSE(close(got, exact, 1e-6)) << static_cast<int>(k) << ": fp32 products";
  }
}

TEST_F(EmuCudnn, AlphaBetaBlendIntoTheOutput) {
  Geo g{1, 2, 4, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1};
  const auto xv = random_vec(g.N * g.C * g.H * g.W, 21), wv = random_vec(g.K * g.C * g.R * g.S, 22),
             y0 = random_vec(g.N * g.K * g.P() * g.Q(), 23);
  Be conv = conv_desc(g);
  Be xt = tensor(1, {g.N, g.C, g.H, g.W}), wt = tensor(2, {g.K, g.C, g.R, g.S}),
     yt = tensor(3, {g.N, g.K, g.P(), g.Q()});
  Be op(op_type(Kind::Fwd));
  ASSERT_EQ(conv_op(op, Kind::Fwd, xt, wt, yt, conv, 0.5f, 2.f), CUDNN_STATUS_SUCCESS);
  Pipeline p;
  p.handle = handle;
  ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
  DevBuf x(xv), w(wv), y(y0), ws(std::vector<float>(256));
  ASSERT_EQ(p.execute({1, 2, 3}, {x.ptr, w.ptr, y.ptr}, ws.ptr), CUDNN_STATUS_SUCCESS);
  auto want = ref_forward(g, xv, wv);
  for (size_t i = 0; i < want.size(); ++i) want[i] = 0.5 * want[i] + 2.0 * y0[i];
  EXPECT_TRUE(close(y.host(), want));
}

/// conv -> (virtual) -> add bias (1, K, 1, 1) -> (virtual) -> relu -> y
TEST_F(EmuCudnn, FusedConvBiasReluGraph) {
  Geo g{2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1};
  const auto xv = random_vec(g.N * g.C * g.H * g.W, 31), wv = random_vec(g.K * g.C * g.R * g.S, 32),
             bv = random_vec(g.K, 33);
  Be conv = conv_desc(g);
  Be xt = tensor(1, {g.N, g.C, g.H, g.W}), wt = tensor(2, {g.K, g.C, g.R, g.S});
  Be t1 = tensor(5, {g.N, g.K, g.P(), g.Q()}, true), t2 = tensor(6, {g.N, g.K, g.P(), g.Q()}, true);
  Be yt = tensor(3, {g.N, g.K, g.P(), g.Q()}), bt = tensor(4, {1, g.K, 1, 1});
  Be cop(op_type(Kind::Fwd));
  ASSERT_EQ(conv_op(cop, Kind::Fwd, xt, wt, t1, conv), CUDNN_STATUS_SUCCESS);
  auto pointwise = [](cudnnPointwiseMode_t mode) {
    Be pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    EXPECT_EQ(pw.finalize(), CUDNN_STATUS_SUCCESS);
    return pw;
  };
  Be add = pointwise(CUDNN_POINTWISE_ADD), relu = pointwise(CUDNN_POINTWISE_RELU_FWD);
  Be aop(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR), rop(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  aop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, add);
  aop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, t1);
  aop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, t2);
  EXPECT_EQ(aop.finalize(), CUDNN_STATUS_BAD_PARAM);  // ADD needs BDESC
  aop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, bt);
  ASSERT_EQ(aop.finalize(), CUDNN_STATUS_SUCCESS);
  rop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, relu);
  rop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, t2);
  rop.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, yt);
  ASSERT_EQ(rop.finalize(), CUDNN_STATUS_SUCCESS);

  {  // fusion disabled: no engine for this graph
    cudl_emu::cudnn_set_fusion_supported(false);
    Pipeline p;
    p.handle = handle;
    EXPECT_EQ(p.build({rop.d, cop.d, aop.d}), CUDNN_STATUS_NOT_SUPPORTED);
    cudl_emu::cudnn_set_fusion_supported(true);
  }
  {  // a graph that leaves the virtual conv output unconsumed finalizes but has no engine
    Pipeline p;
    p.handle = handle;
    EXPECT_EQ(p.build({cop.d}), CUDNN_STATUS_NOT_SUPPORTED);
  }
  Pipeline p;
  p.handle = handle;
  ASSERT_EQ(p.build({rop.d, cop.d, aop.d}), CUDNN_STATUS_SUCCESS);  // any op order
  DevBuf x(xv), w(wv), b(bv), y(std::vector<float>(g.N * g.K * g.P() * g.Q(), NAN));
  DevBuf ws(std::vector<float>(std::max<int64_t>(1, p.workspace / 4)));
  ASSERT_EQ(p.execute({1, 2, 3, 4}, {x.ptr, w.ptr, y.ptr, b.ptr}, ws.ptr), CUDNN_STATUS_SUCCESS);
  EXPECT_TRUE(cudl_emu::cudnn_counters().last_fused);
  auto want = ref_forward(g, xv, wv);
  const int64_t PQ = g.P() * g.Q();
  for (size_t i = 0; i < want.size(); ++i) want[i] = std::max(0.0, want[i] + bv[(i / PQ) % g.K]);
  EXPECT_TRUE(close(y.host(), want));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 16-bit tensors

namespace {

uint16_t to_bits(cudnnDataType_t dt, float f) {
  return dt == CUDNN_DATA_BFLOAT16 ? cudl::float_to_bf16_bits(f) : cudl::float_to_half_bits(f);
}
float from_bits(cudnnDataType_t dt, uint16_t h) {
  return dt == CUDNN_DATA_BFLOAT16 ? cudl::bf16_bits_to_float(h) : cudl::half_bits_to_float(h);
}

/// A device buffer of 16-bit values.
struct DevBuf16 {
  uint16_t* ptr = nullptr;
  std::vector<uint16_t> bits;
  DevBuf16(cudnnDataType_t dt, const std::vector<float>& host) : bits(host.size()) {
    for (size_t i = 0; i < host.size(); ++i) bits[i] = to_bits(dt, host[i]);
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr), bits.size() * 2), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DevBuf16() { cudaFree(ptr); }
  DevBuf16(const DevBuf16&) = delete;
  std::vector<uint16_t> host() const {
    std::vector<uint16_t> h(bits.size());
    EXPECT_EQ(cudaMemcpy(h.data(), ptr, h.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

/// v rounded to the 16-bit type (what a 16-bit tensor holds), as floats.
std::vector<float> rounded16(cudnnDataType_t dt, std::vector<float> v) {
  for (float& x : v) x = from_bits(dt, to_bits(dt, x));
  return v;
}

}  // namespace

TEST_F(EmuCudnn, SixteenBitConvolutionsSumInFp32AndRoundOnce) {
  for (cudnnDataType_t dt : {CUDNN_DATA_BFLOAT16, CUDNN_DATA_HALF}) {
    for (const Case& cs : cases()) {
      SCOPED_TRACE(std::string(cs.name) + (dt == CUDNN_DATA_HALF ? " HALF" : " BFLOAT16"));
      const Geo& g = cs.g;
      const auto xv = rounded16(dt, random_vec(g.N * g.C * g.H * g.W, 11)),
                 wv = rounded16(dt, random_vec(g.K * g.Cg() * g.R * g.S, 12)),
                 yv = rounded16(dt, random_vec(g.N * g.K * g.P() * g.Q(), 13));
      Be conv = conv_desc(g);
      Be xt = tensor(1, {g.N, g.C, g.H, g.W}, false, true, dt),
         wt = tensor(2, {g.K, g.Cg(), g.R, g.S}, false, true, dt),
         yt = tensor(3, {g.N, g.K, g.P(), g.Q()}, false, true, dt);
      for (Kind k : {Kind::Fwd, Kind::BwdData, Kind::BwdFilter}) {
        Be op(op_type(k));
        Pipeline p;
        ASSERT_NO_FATAL_FAILURE(plan_conv(op, p, k, xt, wt, yt, conv));
        DevBuf16 x(dt, xv), w(dt, wv), y(dt, yv);
        DevBuf ws(std::vector<float>(std::max<int64_t>(1, p.workspace / 4)));
        ASSERT_EQ(p.execute({1, 2, 3}, {x.ptr, w.ptr, y.ptr}, ws.ptr), CUDNN_STATUS_SUCCESS);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        std::vector<uint16_t> got;
        std::vector<double> want;
        if (k == Kind::Fwd) got = y.host(), want = ref_forward(g, xv, wv);
        if (k == Kind::BwdData) got = x.host(), want = ref_backward_data(g, yv, wv);
        if (k == Kind::BwdFilter) got = w.host(), want = ref_backward_filter(g, xv, yv);
        // The exact sum (double here, double in the emulator) rounded to fp32, then once to 16 bits.
        ASSERT_EQ(got.size(), want.size());
        int64_t differ = 0;
        for (size_t i = 0; i < got.size(); ++i) differ += got[i] != to_bits(dt, static_cast<float>(want[i]));
        EXPECT_EQ(differ, 0) << static_cast<int>(k) << ": elements not rounded once from the fp32 sum";
      }
    }
  }
}

TEST_F(EmuCudnn, SixteenBitGraphsTakeTheTensorCoreEngineWithoutDownConversion) {
  const Geo g = cases().front().g;
  Be conv = conv_desc(g);
  const cudnnDataType_t dt = CUDNN_DATA_BFLOAT16;
  Be xt = tensor(1, {g.N, g.C, g.H, g.W}, false, true, dt), wt = tensor(2, {g.K, g.Cg(), g.R, g.S}, false, true, dt),
     yt = tensor(3, {g.N, g.K, g.P(), g.Q()}, false, true, dt);
  Be op(op_type(Kind::Fwd));
  ASSERT_EQ(conv_op(op, Kind::Fwd, xt, wt, yt, conv), CUDNN_STATUS_SUCCESS);
  Pipeline p;
  p.handle = handle;
  p.allow_tf32 = true;  // the first-ranked engine: tensor cores
  ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
  Be engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t n = 0;
  ASSERT_EQ(cudnnBackendGetAttribute(p.cfgs.front().d, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &n, &engine.d),
            CUDNN_STATUS_SUCCESS);
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  ASSERT_EQ(cudnnBackendGetAttribute(engine.d, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                     CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes),
            CUDNN_STATUS_SUCCESS);
  EXPECT_NE(std::find(notes, notes + n, CUDNN_NUMERICAL_NOTE_TENSOR_CORE), notes + n);
  EXPECT_EQ(std::find(notes, notes + n, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS), notes + n);
}

TEST_F(EmuCudnn, MixedTensorTypesAndHalfComputeAreRefused) {
  const Geo g{1, 2, 5, 5, 3, 3, 3};
  Be conv = conv_desc(g);
  const std::vector<int64_t> xd{g.N, g.C, g.H, g.W}, wd{g.K, g.Cg(), g.R, g.S}, yd{g.N, g.K, g.P(), g.Q()};
  const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, hf = CUDNN_DATA_HALF, f = CUDNN_DATA_FLOAT;
  struct Mix {
    cudnnDataType_t x, w, y;
  };
  for (Kind k : {Kind::Fwd, Kind::BwdData, Kind::BwdFilter})
    for (Mix m : {Mix{bf, f, bf}, Mix{f, bf, bf}, Mix{bf, bf, f}, Mix{hf, hf, bf}, Mix{bf, hf, hf}}) {
      Be x = tensor(1, xd, false, true, m.x), w = tensor(2, wd, false, true, m.w), y = tensor(3, yd, false, true, m.y);
      Be op(op_type(k));
      EXPECT_EQ(conv_op(op, k, x, w, y, conv), CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
          << static_cast<int>(k) << ": " << m.x << " " << m.w << " " << m.y;
    }
  {  // a virtual FLOAT y (a fused graph's intermediate) is fine with 16-bit x and w
    Be x = tensor(1, xd, false, true, bf), w = tensor(2, wd, false, true, bf), y = tensor(5, yd, true, true, f);
    Be op(op_type(Kind::Fwd));
    EXPECT_EQ(conv_op(op, Kind::Fwd, x, w, y, conv), CUDNN_STATUS_SUCCESS);
  }
  {  // a HALF compute type ("true half") is not emulated
    Be conv_h = conv_desc(g, hf);
    Be x = tensor(1, xd, false, true, hf), w = tensor(2, wd, false, true, hf), y = tensor(3, yd, false, true, hf);
    Be op(op_type(Kind::Fwd));
    EXPECT_EQ(conv_op(op, Kind::Fwd, x, w, y, conv_h), CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE);
  }
}

// The SDPA forward operation (cuDNN 9.13+): q, k, v, o of one 16-bit type with matching (B, H, S, D)
// dimensions, head sizes multiples of 8, stats a FLOAT (B, H, Sq, 1), the scale one by-value FLOAT;
// what 9.19's operation adds (block masks, paged or ragged sequences) is not emulated. A graph of the
// operation alone has one tensor-core engine. (Its results against the CPU reference: the Attention
// op's tests, tests/test_op_attention.cpp.)
TEST_F(EmuCudnn, SdpaForwardOperationChecks) {
  const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f = CUDNN_DATA_FLOAT;
  auto scale_tensor = [](bool by_value) {
    Be t = tensor(6, {1, 1, 1, 1}, false, false);
    bool b = by_value;
    EXPECT_EQ(t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &b), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(t.finalize(), CUDNN_STATUS_SUCCESS);
    return t;
  };
  struct Dims {
    std::vector<int64_t> q, k, v, o, stats;
    cudnnDataType_t dt;
    bool by_value;
    cudnnStatus_t expect;
  };
  const std::vector<int64_t> q{2, 3, 5, 8}, k{2, 3, 7, 8}, st{2, 3, 5, 1};
  const std::vector<Dims> cases = {
      {q, k, k, q, st, bf, true, CUDNN_STATUS_SUCCESS},
      {q, k, k, q, st, f, true, CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE},                          // FLOAT q, k, v, o
      {q, {2, 3, 7, 16}, k, q, st, bf, true, CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH},            // k's D differs
      {q, {2, 1, 7, 8}, {2, 1, 7, 8}, q, st, bf, true, CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH},  // grouped heads
      {{2, 3, 5, 12}, {2, 3, 7, 12}, {2, 3, 7, 12}, {2, 3, 5, 12}, st, bf, true, CUDNN_STATUS_NOT_SUPPORTED_SHAPE},
      {q, k, k, q, {2, 3, 1, 5}, bf, true, CUDNN_STATUS_BAD_PARAM},  // stats (B, H, 1, Sq)
      {q, k, k, q, st, bf, false, CUDNN_STATUS_BAD_PARAM},           // the scale in device memory
  };
  for (const Dims& c : cases) {
    Be tq = tensor(1, c.q, false, true, c.dt), tk = tensor(2, c.k, false, true, c.dt),
       tv = tensor(3, c.v, false, true, c.dt), to = tensor(4, c.o, false, true, c.dt),
       ts = tensor(5, c.stats, false, true, f), sc = scale_tensor(c.by_value);
    Be op(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    ASSERT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, tq), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, tk), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, tv), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, to), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, ts), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, sc), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(op.finalize(), c.expect) << "q " << c.q[3] << " k " << c.k[1] << "," << c.k[3] << " dtype " << c.dt
                                       << " stats " << c.stats[2] << " by value " << c.by_value;
    if (c.expect != CUDNN_STATUS_SUCCESS) continue;
    Pipeline p;
    p.handle = handle;
    p.allow_tf32 = true;  // take tensor-core engines (16-bit operands: no TF32 involved)
    ASSERT_EQ(p.build({op.d}), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(p.n_configs, 1);
    Be engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    ASSERT_EQ(p.plan_engine(engine), CUDNN_STATUS_SUCCESS);
    int64_t n = 0;
    cudnnBackendNumericalNote_t notes[8];
    ASSERT_EQ(
        cudnnBackendGetAttribute(engine.d, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE, 8, &n, notes),
        CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(n, 1);
    EXPECT_EQ(notes[0], CUDNN_NUMERICAL_NOTE_TENSOR_CORE);
  }
  {  // a block mask is not emulated
    Be tq = tensor(1, q, false, true, bf), tk = tensor(2, k, false, true, bf), tv = tensor(3, k, false, true, bf),
       to = tensor(4, q, false, true, bf), mask = tensor(7, {2, 3, 1, 1}, false, true, f);
    Be op(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, tq), op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, tk);
    op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, tv), op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, to);
    op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_BLOCK_MASK_DESC, mask);
    EXPECT_EQ(op.finalize(), CUDNN_STATUS_NOT_SUPPORTED);
  }
}
