"""DLPack: cudl tensors export a view of their memory (no copy), cudl.from_dlpack imports a CPU or CUDA
tensor by copying it; round trips with numpy (always) and torch (skipped, saying so, when torch is
absent); the CUDA tests run in ctest's python_emu, the package over the emulated CUDA backend."""
import numpy as np
import pytest

import cudl


def test_export_is_a_view_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = cudl.from_numpy(a)
    assert t.__dlpack_device__() == (1, 0)
    v = np.from_dlpack(t)
    np.testing.assert_array_equal(v, a)
    v2 = np.from_dlpack(t)
    assert v.__array_interface__["data"][0] == v2.__array_interface__["data"][0]  # the same memory
    del t  # the views keep the storage alive
    np.testing.assert_array_equal(v, a)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.uint8, np.float16])
def test_import_copies_numpy(dtype):
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    t = cudl.from_dlpack(a)
    assert t.shape == [2, 3, 4]
    np.testing.assert_array_equal(t.numpy(), a)
    np.testing.assert_array_equal(np.from_dlpack(cudl.from_dlpack(t)), a)  # cudl -> cudl


def test_import_rejects_bad_input():
    with pytest.raises(ValueError, match="contiguous"):
        cudl.from_dlpack(np.arange(12, dtype=np.float32).reshape(3, 4).T)
    with pytest.raises(ValueError, match="dtype"):
        cudl.from_dlpack(np.zeros(3, dtype=np.float64))
    with pytest.raises(TypeError):
        cudl.from_dlpack(3)


def test_torch_round_trip():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (Debian: python3-torch)")
    from torch.utils import dlpack
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    t = cudl.from_dlpack(dlpack.to_dlpack(x))  # a capsule
    np.testing.assert_array_equal(t.numpy(), x.numpy())
    t2 = cudl.from_dlpack(x)  # an object with __dlpack__
    y = dlpack.from_dlpack(t2)  # zero copy into torch
    assert torch.equal(y, x)
    y.mul_(2)  # writes through to the cudl tensor's memory
    np.testing.assert_array_equal(t2.numpy(), 2 * x.numpy())


def test_torch_interop_sample(root):
    pytest.importorskip("torch", reason="PyTorch is not installed (Debian: python3-torch)")
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(root / "samples" / "python" / "torch_interop.py")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rows sum to 1: True" in r.stdout


def cuda_or_skip():
    """The CUDA tests run in ctest's python_emu (the package over the emulated CUDA backend), which sets
    CUDL_EXPECT_EMULATED_CUDA=1 so that a missing device fails there instead of skipping."""
    import os
    if cudl.cuda_device_count() == 0:
        if os.environ.get("CUDL_EXPECT_EMULATED_CUDA") == "1":
            pytest.fail("python_emu: the emulated package sees no CUDA device (%s)" % cudl.cuda_unavailable_reason())
        pytest.skip("no CUDA device (%s); ctest's python_emu runs these on the emulated backend"
                    % cudl.cuda_unavailable_reason())


def test_cuda_tensor_exports_a_device_pointer_and_round_trips():
    cuda_or_skip()
    a = (np.arange(30) % 11).astype(np.float32).reshape(5, 6)
    t = cudl.from_numpy(a).to("cuda")
    assert t.device == "cuda:0"
    assert t.__dlpack_device__() == (2, 0)  # kDLCUDA, device 0
    u = cudl.from_dlpack(t)  # CUDA capsule -> a copy on the same CUDA device
    assert u.device == "cuda:0" and u.shape == [5, 6] and u.dtype == "f32"
    np.testing.assert_array_equal(u.numpy(), a)
    del t  # u owns its copy
    np.testing.assert_array_equal(u.numpy(), a)
    for dtype in (np.int32, np.int64, np.uint8):
        b = (np.arange(7) * 3).astype(dtype)
        np.testing.assert_array_equal(cudl.from_dlpack(cudl.from_numpy(b).to("cuda")).numpy(), b)
    with pytest.raises((BufferError, RuntimeError)):
        np.from_dlpack(cudl.from_numpy(a).to("cuda"))  # numpy reads host memory only: it refuses


def test_cuda_import_sees_queued_writes():
    """An upload still queued on cudl's stream when its capsule is imported (the emulator runs queued
    work lazily): the import copies the uploaded values, at sizes from 1 to past 64 Ki elements.
    (Work a producer queued on its own stream is waited for by a device-wide synchronisation, which
    only a real producer such as torch on a GPU exercises.)"""
    cuda_or_skip()
    for n in (1, 1000, 65537):
        a = np.random.default_rng(n).normal(size=n).astype(np.float32)
        u = cudl.from_dlpack(cudl.from_numpy(a).to("cuda"))
        np.testing.assert_array_equal(u.numpy(), a)


def test_cuda_import_error_names_the_device():
    """A CUDA DLPack tensor on a device cudl does not have: ValueError naming it (and, without CUDA,
    why there is none). Built by hand, so it runs everywhere."""
    import ctypes

    class DLDevice(ctypes.Structure):
        _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]

    class DLDataType(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]

    class DLTensor(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                    ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                    ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]

    class DLManagedTensor(ctypes.Structure):
        pass

    deleter_t = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
    DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", deleter_t)]
    released = []
    deleter = deleter_t(lambda p: released.append(True))
    shape = (ctypes.c_int64 * 1)(4)
    device_id = cudl.cuda_device_count() + 3  # never a device cudl has
    mt = DLManagedTensor(DLTensor(ctypes.c_void_p(0x1000), DLDevice(2, device_id), 1, DLDataType(2, 32, 1), shape,
                                  None, 0), None, deleter)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype, new_capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    cap = new_capsule(ctypes.addressof(mt), b"dltensor", None)
    with pytest.raises(ValueError, match="CUDA device %d but cudl sees %d CUDA device" % (device_id,
                                                                                        cudl.cuda_device_count())):
        cudl.from_dlpack(cap)
    assert released == [True]  # the producer's deleter ran although the import failed
    if cudl.cuda_device_count() == 0:
        cap = new_capsule(ctypes.addressof(mt), b"dltensor", None)
        mt.dl_tensor.device.device_id = 0
        with pytest.raises(ValueError, match="no CUDA device"):
            cudl.from_dlpack(cap)
