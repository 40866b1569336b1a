// ops/precision.cpp — the storage-slot table of ops/precision.hpp and its check.
#include "ops/precision.hpp"

#include "ops/common.hpp"

namespace cudl {
namespace ops {

namespace {
constexpr uint32_t bits(std::initializer_list<int> slots) {
  uint32_t b = 0;
  for (int s : slots) b |= 1u << s;
  return b;
}
}  // namespace

StorageSlots storage_slots(OpKind op) {
  switch (op) {
    // An op belongs here once its CUDA implementation reads and writes 16-bit storage natively
    // (kernels templated over the storage type, cuBLASLt with 16-bit A/B/C/D); the CPU reference
    // supports every entry through src/cpu/precision.cpp.
    case OpKind::Unary: return {bits({0}), bits({0})};
    case OpKind::UnaryBackward: return {bits({0, 1, 2}), bits({0})};
    case OpKind::Binary: return {bits({0, 1}), bits({0})};
    case OpKind::BinaryBackward: return {bits({0, 1, 2}), bits({0, 1})};
    case OpKind::BinaryScalar: return {bits({0}), bits({0})};
    case OpKind::BinaryScalarBackward: return {bits({0, 1}), bits({0})};
    case OpKind::Dropout: return {bits({0}), bits({0})};
    case OpKind::DropoutBackward: return {bits({0}), bits({0})};
    case OpKind::Matmul: return {bits({0, 1}), bits({0})};
    case OpKind::Linear: return {bits({0, 1, 2}), bits({0, 1})};
    case OpKind::LinearBackward: return {bits({0, 1, 2, 3, 4}), bits({0, 1, 2, 3}), bits({1, 2})};  // dw, db f32 too
    case OpKind::GatherBatch: return {0, bits({0})};  // xb, when x is u8 images
    // Data movement copies elements whatever their type (the byte size comes from the dtype): x and y
    // in the storage type, so a 16-bit value is permuted, joined or sliced without Casts around it.
    case OpKind::Permute: return {bits({0}), bits({0}), 0, true}; // x -> y
    case OpKind::Concat: return {~0u, bits({0}), 0, true};       // x0, x1, ... -> y
    case OpKind::Slice: return {bits({0}), bits({0}), 0, true};   // x -> y
    case OpKind::SliceBackward: return {bits({0}), bits({0}), 0, true};  // dy -> dx
    // Gather reads rows of an f32 table (the Embedding's master: only the gathered rows are read)
    // and writes them rounded to the storage type; its backward reads dy in the storage type and sums
    // into the f32 dtable, so the table's gradient needs no Cast either.
    case OpKind::Gather: return {0, bits({0})};          // table (f32), idx -> y
    case OpKind::GatherBackward: return {bits({0}), 0};  // dy, idx -> dtable (f32)
    // Attention: q, k, v, o, do, dq, dk, dv follow the storage type; the key mask and lse stay f32.
    case OpKind::Attention: return {bits({0, 1, 2}), bits({0})};                   // q, k, v, ... -> o, lse
    case OpKind::AttentionBackward: return {bits({0, 1, 2, 3, 5}), bits({0, 1, 2})};  // q, k, v, o, lse, do -> dq, dk, dv
    case OpKind::Conv2d: return {bits({0, 1, 2}), bits({0})};            // x, w, [bias] -> y
    case OpKind::Conv2dBackwardData: return {bits({0, 1}), bits({0})};    // dy, w -> dx
    case OpKind::Conv2dBackwardFilter: return {bits({0, 1}), bits({0})};  // x, dy -> dw
    case OpKind::Conv2dBackwardBias: return {bits({0}), bits({0})};       // dy -> db
    case OpKind::Conv2dTranspose: return {bits({0, 1, 2}), bits({0})};    // x, w, [bias] -> y
    case OpKind::MaxPool2d: return {bits({0}), bits({0})};                // x -> y, [argmax i32]
    case OpKind::MaxPool2dBackward: return {bits({0, 1, 2}), bits({0})};  // x, y, dy -> dx
    case OpKind::AvgPool2d: return {bits({0}), bits({0})};                // x -> y
    case OpKind::AvgPool2dBackward: return {bits({0}), bits({0})};        // dy -> dx
    case OpKind::GlobalAvgPool: return {bits({0}), bits({0})};            // x -> y
    case OpKind::GlobalAvgPoolBackward: return {bits({0}), bits({0})};    // dy -> dx
    // Recurrent: the sequence in and out (xp, h; dh, dxp) and the saved gates follow the storage type;
    // u, bias_r, aux (the cell state c or rec_h), du and dbias_r stay f32, and so does the state
    // carried from step to step.
    case OpKind::RecurrentSequence: return {bits({0}), bits({0, 1})};              // xp, u, [bias_r] -> h, [gates, aux]
    case OpKind::RecurrentSequenceBackward: return {bits({1, 2, 4}), bits({0})};   // u, h, [gates, aux], dh, [daux] -> dxp, ..
    case OpKind::RandomNormal: return {0, bits({0})};                      // [rng (i64)] -> y
    case OpKind::Upsample2d: return {bits({0}), bits({0})};                // x -> y
    case OpKind::Upsample2dBackward: return {bits({0}), bits({0})};        // dy -> dx
    // Batch norm: x, y, dy, dx follow the storage type; gamma, beta, running and saved statistics,
    // dgamma and dbeta stay f32.
    case OpKind::BatchNormTrain: return {bits({0}), bits({0})};            // x -> y
    case OpKind::BatchNormInference: return {bits({0}), bits({0})};        // x -> y
    case OpKind::BatchNormBackward: return {bits({0, 4}), bits({0})};      // x, dy -> dx
    case OpKind::BatchNormInferenceBackward: return {bits({0}), bits({0})};  // dy -> dx
    // Layer norm: x, y, dy, dx follow the storage type; gamma, beta, the row statistics (mean, rstd),
    // dgamma and dbeta stay f32.
    case OpKind::LayerNorm: return {bits({0}), bits({0})};                // x, [gamma], [beta] -> y, [mean, rstd]
    case OpKind::LayerNormBackward: return {bits({0, 4}), bits({0})};     // x, gamma, mean, rstd, dy -> dx, ...
    case OpKind::Softmax: return {bits({0}), bits({0})};                  // x -> y
    case OpKind::LogSoftmax: return {bits({0}), bits({0})};               // x -> y
    case OpKind::SoftmaxBackward: return {bits({0, 1}), bits({0})};       // y, dy -> dx
    case OpKind::LogSoftmaxBackward: return {bits({0, 1}), bits({0})};    // y, dy -> dx
    // Losses: pred (the logits) and dpred follow the storage type; target, dloss, the loss and the
    // metric accumulators stay f32.
    case OpKind::MseLoss:
    case OpKind::L1Loss:
    case OpKind::HuberLoss:
    case OpKind::BceLoss:
    case OpKind::BceWithLogitsLoss:
    case OpKind::CrossEntropyLoss:
    case OpKind::SoftCrossEntropyLoss:
    case OpKind::NllLoss: return {bits({0}), bits({1})};                  // pred, target, [dloss] -> loss, dpred, ...
    default:
      return {};
  }
}

DType check_storage(const OpCall& call) {
  const StorageSlots s = storage_slots(call.op);
  DType st = DType::f32;
  int st_slot = -1;
  bool st_in = true;
  auto visit = [&](const TensorView* views, int n, bool is_in) {
    for (int k = 0; k < n; ++k) {
      const TensorView& v = views[k];
      if (!v.defined() || !dtype_is_float(v.dtype)) continue;
      if (!is_in && s.f32_output(k) && v.dtype == DType::f32) continue;  // fp32 straight from a GEMM
      const char* dir = is_in ? "input" : "output";
      if (!(is_in ? s.input(k) : s.output(k))) {
        if (v.dtype != DType::f32)
          CUDL_FAIL(op_checks::who(call), ": ", dir, " ", k, " ", v.shape, " has dtype ", v.dtype,
                    ", expected f32 (this slot is kept in f32 in every precision)");
        continue;
      }
      if (st_slot < 0) {
        st = v.dtype;
        st_slot = k;
        st_in = is_in;
        if (st != DType::f32 && !is_16bit_float(st))
          CUDL_FAIL(op_checks::who(call), ": ", dir, " ", k, " ", v.shape, " has dtype ", v.dtype,
                    ", expected f32, bf16 or f16");
      } else if (v.dtype != st) {
        CUDL_FAIL(op_checks::who(call), ": ", dir, " ", k, " ", v.shape, " has dtype ", v.dtype, " but ",
                  st_in ? "input " : "output ", st_slot, " has ", st, " (one storage type per call)");
      }
    }
  };
  visit(call.inputs, call.n_inputs, true);
  visit(call.outputs, call.n_outputs, false);
  if (call.op == OpKind::LinearBackward && call.has_out(1) && call.has_out(2) &&
      call.outputs[1].dtype != call.outputs[2].dtype)  // BGRADB writes db in dw's type
    CUDL_FAIL(op_checks::who(call), ": dw ", call.outputs[1].shape, " has dtype ", call.outputs[1].dtype, " but db ",
              call.outputs[2].shape, " has ", call.outputs[2].dtype, " (one type for both)");
  if (call.op == OpKind::GatherBatch && st != DType::f32 && call.has_in(1) && call.inputs[1].dtype != DType::u8)
    CUDL_FAIL(op_checks::who(call), ": xb has dtype ", st, " but x has ", call.inputs[1].dtype,
              " (a 16-bit xb is made from u8 images only)");
  return st;
}

}  // namespace ops
}  // namespace cudl
