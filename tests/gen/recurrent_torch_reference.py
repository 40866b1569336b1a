#!/usr/bin/env python3
# tests/gen/recurrent_torch_reference.py — writes recurrent_torch_reference.txt, PyTorch's forward
# values of an LSTM and a GRU on a fixed small case, read by tests/test_op_recurrent.cpp.
"""Usage: /usr/bin/python3 tests/gen/recurrent_torch_reference.py > tests/gen/recurrent_torch_reference.txt

Each tensor is one line: `name dims... : values...` (row-major, %.9g). The weights are PyTorch's
own seeded initialisation converted to cudl's layout (Keras's gate order, each matrix (G*H, in)):
  LSTM: torch's gates i, f, g, o are Keras's i, f, c, o; bias = b_ih + b_hh.
  GRU:  torch's gates r, z, n become Keras's z, r, h (blocks reordered); torch's GRU is Keras's
        reset_after GRU, so bias = b_ih and recurrent_bias = b_hh (reordered alike).
The outputs are every step's state (return_sequences) for x of shape (B, T, F).
"""
import torch

B, T, F, H = 3, 5, 4, 6


def emit(name, t):
    t = t.detach().contiguous()
    dims = " ".join(str(d) for d in t.shape)
    print(f"{name} {dims} : " + " ".join(f"{v:.9g}" for v in t.reshape(-1).tolist()))


def main():
    torch.manual_seed(19)
    x = torch.randn(B, T, F)
    print(f"# PyTorch {torch.__version__}; B {B} T {T} F {F} H {H}")
    emit("x", x)
    lstm = torch.nn.LSTM(F, H, batch_first=True)
    with torch.no_grad():
        emit("lstm.kernel", lstm.weight_ih_l0)
        emit("lstm.recurrent_kernel", lstm.weight_hh_l0)
        emit("lstm.bias", lstm.bias_ih_l0 + lstm.bias_hh_l0)
        emit("lstm.out", lstm(x)[0])
    gru = torch.nn.GRU(F, H, batch_first=True)
    order = torch.cat([torch.arange(H, 2 * H), torch.arange(0, H), torch.arange(2 * H, 3 * H)])  # r,z,n -> z,r,h
    with torch.no_grad():
        emit("gru.kernel", gru.weight_ih_l0[order])
        emit("gru.recurrent_kernel", gru.weight_hh_l0[order])
        emit("gru.bias", gru.bias_ih_l0[order])
        emit("gru.recurrent_bias", gru.bias_hh_l0[order])
        emit("gru.out", gru(x)[0])


if __name__ == "__main__":
    main()
