"""cudl: a GPU-first deep-learning runtime (C++/CUDA) with a Keras-compatible front, cudl.keras.

    import cudl as tf            # tf.keras.models.Sequential([...]) ...
    from cudl.keras.layers import Dense

cudl.Tensor: numpy() and cudl.from_numpy() copy; DLPack both ways: a Tensor's __dlpack__ views its
memory (torch.utils.dlpack.from_dlpack(t), np.from_dlpack(t): no copy, host or CUDA memory) and
cudl.from_dlpack(x) copies a CPU or CUDA tensor (torch, numpy) into a new cudl Tensor on the same
device (cudl tensors own their storage).
"""

from . import _cudl
from ._cudl import Tensor, built_with_cuda, from_dlpack, cuda_device_count, cuda_unavailable_reason, describe_devices

__version__ = _cudl.__version__


def from_numpy(array):
    """A cudl.Tensor holding a copy of a numpy array (float32, int32, int64 or uint8)."""
    return Tensor.from_numpy(array)


from . import keras  # noqa: E402  (after the extension, which keras uses)

__all__ = ["Tensor", "from_numpy", "from_dlpack", "keras", "built_with_cuda", "cuda_device_count", "cuda_unavailable_reason",
           "describe_devices"]
