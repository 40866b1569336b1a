// cuda/cudnn_graph.hpp — the cuDNN 9 graph (backend) API as the CUDA ops use it: RAII descriptors,
// tensor descriptors, and one plan search and execution for any operation graph (heuristics,
// numerical-note filter, the first engine config that finalizes). conv.cpp (convolutions) and
// sdpa.cpp (fused attention) build their graphs with it.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "cudl/dtype.hpp"

namespace cudl {

class CudaContext;

namespace dnn {

/// Thrown while building a plan when cuDNN answers NOT_SUPPORTED: the caller falls back.
struct Unsupported {
  std::string reason;
};

std::string status_text(cudnnStatus_t s);

/// A backend descriptor owned by RAII (move-only).
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type);
  ~Desc();
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }

  /// Sets an attribute; a failure is a bug in the caller, so it throws naming the attribute.
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values,
           const char* what);
  void set_desc(cudnnBackendAttributeName_t name, const Desc& d, const char* what);
  /// Finalizes; NOT_SUPPORTED-category answers throw Unsupported (the caller falls back), any
  /// other failure throws cudl::Error.
  void finalize(const char* what);

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

/// Largest power of two <= 16 dividing every non-null pointer (at least the element size of
/// `storage`): part of a plan's key, so a plan declared for 16-byte alignment never sees a
/// 4-byte-aligned view.
int64_t alignment_of(DType storage, std::initializer_list<const void*> ptrs);

/// The cuDNN data type of a storage type (f32, bf16, f16).
cudnnDataType_t cudnn_dtype(DType t);

/// A finalized tensor descriptor. `by_value`: a host scalar passed in the variant pack (the data
/// pointer points at the value), as cuDNN takes scale factors.
Desc make_tensor(int64_t uid, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, int64_t alignment,
                 bool is_virtual, cudnnDataType_t dtype, bool by_value = false);

/// The operations of one graph; the descriptors they reference stay alive in `keep`.
struct Graph {
  std::vector<Desc> keep;
  std::vector<Desc> ops;
  std::vector<int64_t> uids;  // non-virtual tensors, in variant-pack order
};

/// A finalized execution plan and what executing it needs. Every descriptor the plan was built
/// from stays alive with it (declared first, destroyed last).
struct Plan {
  Graph graph_ops;
  Desc graph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};
  std::vector<Desc> heuristics;
  std::vector<Desc> configs;
  Desc plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
  std::vector<int64_t> uids;
};

/// Finalizes p.graph over p.graph_ops, then asks the heuristics (INSTANT, then FALLBACK) and
/// finalizes the first acceptable engine config into p.plan. Never NONDETERMINISTIC engines; engines
/// that read fp32 as TF32 only when `allow_tf32`; `storage16`: the graph's tensors are 16-bit, so
/// tensor-core engines are exact and wanted. Throws Unsupported with every reason when none is.
void find_plan(cudnnHandle_t handle, Plan& p, bool allow_tf32, bool storage16);

/// Executes `plan` on the context's stream: `tensors` maps the plan's uids to data pointers (a
/// by-value tensor's to its host value); the workspace comes from the context.
void execute(CudaContext& ctx, const Plan& plan, std::initializer_list<std::pair<int64_t, void*>> tensors,
             const char* who);

}  // namespace dnn
}  // namespace cudl
