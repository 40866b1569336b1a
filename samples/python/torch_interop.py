"""PyTorch interop through DLPack: torch tensors into cudl (a copy) and cudl tensors into torch (no copy).

    PYTHONPATH=build/python python3 samples/python/torch_interop.py"""
import numpy as np
import torch
from torch.utils import dlpack

import cudl
from cudl.keras import layers, models

# Data made with torch, handed to cudl: from_dlpack copies it into a cudl tensor.
torch.manual_seed(0)
x = torch.randn(512, 4)
w = torch.tensor([1.5, -2.0, 0.5, 1.0])
y = (x @ w > 0).to(torch.int32)
x_cudl, y_cudl = cudl.from_dlpack(x), cudl.from_dlpack(y)
print("into cudl:", x_cudl)

# Train a cudl.keras model on it (numpy arrays are what fit takes).
model = models.Sequential([layers.Dense(16, activation="relu", input_shape=(4,)), layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_cudl.numpy(), y_cudl.numpy(), epochs=20, verbose=0)
print("accuracy: %.3f" % model.evaluate(x_cudl.numpy(), y_cudl.numpy(), verbose=0)[1])

# Predictions back to torch without a copy: torch views the cudl tensor's memory.
probs = cudl.from_numpy(model.predict(x_cudl.numpy()))
probs_torch = dlpack.from_dlpack(probs)
print("torch sees", tuple(probs_torch.shape), probs_torch.dtype, "rows sum to 1:",
      bool(torch.allclose(probs_torch.sum(1), torch.ones(512))))
assert np.shares_memory(probs_torch.numpy(), np.from_dlpack(probs))
