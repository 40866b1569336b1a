// ops/collective.hpp — the contract of the collective op family: reductions across the ranks of a
// communicator (data-parallel training's gradient all-reduce), recorded into a step like any op.
//
// AllReduce  in: x_0 .. x_{n-1} (f32, n >= 1, each updated in place); out: none.
//            Every rank runs it with the same shapes in the same order. Afterwards each x_k holds the
//            sum over the ranks (average: the mean), added in rank order, so every rank ends with the
//            same bits. Tensors adjacent in memory may go to the library as one bucket.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/op.hpp"
#include "cudl/error.hpp"

namespace cudl {
class DeviceCommunicator;  // backend/communicator.hpp
}

namespace cudl::ops {

/// AllReduce: i[0] = the communicator (a DeviceCommunicator* the program's owner keeps alive), i[1] = average.
struct AllReduceAttrs {
  DeviceCommunicator* comm = nullptr;
  bool average = true;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    a.i[1] = average ? 1 : 0;
    return a;
  }
  static AllReduceAttrs from(const OpAttrs& a) {
    return {reinterpret_cast<DeviceCommunicator*>(static_cast<intptr_t>(a.i[0])), a.i[1] != 0};
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
