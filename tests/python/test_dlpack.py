"""DLPack: cudl tensors export a view of their memory (no copy), cudl.from_dlpack imports a CPU tensor by
copying it; round trips with numpy (always) and torch (skipped, saying so, when torch is absent)."""
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
