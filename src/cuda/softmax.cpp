// cuda/softmax.cpp — CUDA backend entries of the softmax op family: checks (src/ops),
// then kernel launches on the context's stream.
#include "ops/softmax.hpp"

#include <climits>

#include "ops/common.hpp"
#include "cuda/context.hpp"
#include "kernels/softmax.cuh"

namespace cudl {

namespace {

ops::SoftmaxArgs check_for_cuda(const OpCall& call) {
  const ops::SoftmaxArgs p = ops::check_softmax_call(call);
  if (p.cols > INT_MAX)
    CUDL_FAIL(op_checks::who(call), ": rows of ", p.cols, " elements are not supported on CUDA (at most 2^31 - 1)");
  return p;
}

void run_forward(const OpCall& call, bool log) {
  const ops::SoftmaxArgs p = check_for_cuda(call);
  kernels::softmax_cuda(log, p.x.data, p.y.data, kernels::storage_of(p.storage), p.rows, p.cols,
                        cuda_context(call).stream());
}

void run_backward(const OpCall& call, bool log) {
  const ops::SoftmaxArgs p = check_for_cuda(call);
  kernels::softmax_backward_cuda(log, p.y.data, p.dy.data, p.dx.data, kernels::storage_of(p.storage), p.rows, p.cols,
                                 cuda_context(call).stream());
}

void cuda_softmax(const OpCall& call) { run_forward(call, false); }
void cuda_log_softmax(const OpCall& call) { run_forward(call, true); }
void cuda_softmax_backward(const OpCall& call) { run_backward(call, false); }
void cuda_log_softmax_backward(const OpCall& call) { run_backward(call, true); }

}  // namespace

void register_cuda_softmax_ops(OpTable& t) {
  t.add(OpKind::Softmax, cuda_softmax);
  t.add(OpKind::SoftmaxBackward, cuda_softmax_backward);
  t.add(OpKind::LogSoftmax, cuda_log_softmax);
  t.add(OpKind::LogSoftmaxBackward, cuda_log_softmax_backward);
}

}  // namespace cudl
