#!/usr/bin/env python3
"""The kernels of ops the planner may run in place take no __restrict__ pointers.

src/graph/planner.cpp (in_place_input) lets an op's output share its buffer with an input; a kernel
that declares those pointers __restrict__ promises the compiler they never alias, which nvcc may use
to reorder loads and stores. This reads the planner's list of in-place ops, maps each to its kernels
(a new in-place op must be added to KERNELS), and fails on any __restrict__ in their parameters.
Usage: in_place_kernels.py REPO_ROOT
"""
import re
import sys
from pathlib import Path

# op kind -> (kernel source, kernel names) for every op the planner may run in place.
KERNELS = {
    "Unary": ("kernels/elementwise.cu", ["unary_kernel"]),
    "BinaryScalar": ("kernels/elementwise.cu", ["unary_kernel"]),  # launched through launch_unary
    "BinaryScalarBackward": ("kernels/elementwise.cu", ["unary_backward_kernel"]),
    "UnaryBackward": ("kernels/elementwise.cu", ["unary_backward_kernel"]),
    "DropoutBackward": ("kernels/random.cu", ["dropout_backward_kernel"]),
    "Binary": ("kernels/elementwise.cu", ["binary_same_kernel", "binary_broadcast_kernel"]),
}


def in_place_ops(planner: str) -> list:
    body = planner[planner.index("int in_place_input("):]
    body = body[: body.index("\n}\n")]
    return re.findall(r"case OpKind::(\w+):", body)


def params(source: str, kernel: str) -> str:
    m = re.search(r"\b" + kernel + r"\s*\(", source)
    if not m:
        raise SystemExit(f"FAIL: kernel {kernel} not found")
    return source[m.end(): source.index(")", m.end())]


def main() -> int:
    root = Path(sys.argv[1])
    ops = in_place_ops((root / "src/graph/planner.cpp").read_text())
    if not ops:
        print("FAIL: no in-place ops found in src/graph/planner.cpp (in_place_input changed shape?)")
        return 1
    bad = 0
    for op in ops:
        if op not in KERNELS:
            print(f"FAIL: the planner runs {op} in place; add its kernels to {Path(__file__).name}")
            bad += 1
            continue
        path, names = KERNELS[op]
        source = (root / path).read_text()
        for k in names:
            p = params(source, k)
            if "__restrict__" in p:
                print(f"FAIL: {path}: {k} (op {op}, may run in place) declares __restrict__ pointers: ({' '.join(p.split())})")
                bad += 1
            else:
                print(f"ok: {op}: {k} ({path}) has no __restrict__ parameter")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
