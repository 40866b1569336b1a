// ops/collective.hpp — the contract of the collective op family: reductions across the ranks of a
// communicator (data-parallel training's gradient all-reduce), recorded into a step like any op.
//
// AllReduce  in: x_0 .. x_{n-1} (f32, n >= 1, each updated in place); out: none.
//            Every rank runs it with the same shapes in the same order. Afterwards each x_k holds the
//            sum over the ranks (average: the mean), added in rank order, so every rank ends with the
//            same bits. Tensors adjacent in memory may go to the library as one bucket.
//            stage kWhole: on the context's queue. kStart: on the communicator's own queue, after the
//            work queued so far (overlapping what the context queues next); kFinish (no reduction):
//            the context's later work waits for every started reduction. The x_k of a kStart must
//            not be touched before the kFinish that follows it.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/op.hpp"
#include "cudl/error.hpp"

namespace cudl {
class DeviceCommunicator;  // backend/communicator.hpp
}

namespace cudl::ops {

enum class AllReduceStage : int { kWhole = 0, kStart = 1, kFinish = 2 };

/// AllReduce: i[0] = the communicator (a DeviceCommunicator* the program's owner keeps alive),
/// i[1] = average, i[2] = stage.
struct AllReduceAttrs {
  DeviceCommunicator* comm = nullptr;
  bool average = true;
  AllReduceStage stage = AllReduceStage::kWhole;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    a.i[1] = average ? 1 : 0;
    a.i[2] = static_cast<int64_t>(stage);
    return a;
  }
  static AllReduceAttrs from(const OpAttrs& a) {
    return {reinterpret_cast<DeviceCommunicator*>(static_cast<intptr_t>(a.i[0])), a.i[1] != 0,
            static_cast<AllReduceStage>(a.i[2])};
  }
};

struct AllReduceArgs {
  std::vector<TensorView> xs;
  AllReduceAttrs attrs;
};

inline AllReduceArgs check_all_reduce_call(const OpCall& c) {
  AllReduceArgs r;
  r.attrs = AllReduceAttrs::from(c.attrs);
  if (!r.attrs.comm) CUDL_FAIL("AllReduce (", c.label, "): no communicator");
  const int stage = static_cast<int>(r.attrs.stage);
  if (stage < 0 || stage > 2) CUDL_FAIL("AllReduce (", c.label, "): stage ", stage, " (0 whole, 1 start, 2 finish)");
  for (int k = 0; k < c.n_inputs; ++k) {
    const TensorView& x = c.in(k);
    if (!x.defined()) CUDL_FAIL("AllReduce (", c.label, "): tensor ", k, " is undefined");
    if (x.dtype != DType::f32)
      CUDL_FAIL("AllReduce (", c.label, "): tensor ", k, " ", x.shape, " is ", x.dtype, " (f32 only)");
    r.xs.push_back(x);
  }
  return r;
}

}  // namespace cudl::ops
