#!/usr/bin/env python3
"""tests/launch/compare_checkpoints.py — compares two safetensors checkpoints tensor by tensor:
same names, dtypes and shapes; float32 tensors within RTOL relative (max |a - b| over max |a|,
per tensor), every other dtype bit for bit. Prints the largest relative difference; exit 1 if any
tensor is off. Usage: compare_checkpoints.py A B RTOL [--noise-floor V]

--noise-floor V: a parameter P whose Adam second moment (optim.P.1) stays below V in both
checkpoints has gradients of rounding-noise size, zero in exact arithmetic (the key projection's
bias of attention: softmax does not change when every score of a query moves by the same amount).
Adam normalises that noise into steps of the learning rate's size, so P and its optimizer states
depend on the summation order and are named and skipped instead of compared."""
import json
import struct
import sys
from array import array


def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), data[lo:hi])
    return out


def main():
    a, b, rtol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
    floor = float(sys.argv[5]) if len(sys.argv) == 6 and sys.argv[4] == "--noise-floor" else None
    if len(sys.argv) not in (4, 6) or (len(sys.argv) == 6 and floor is None):
        print(__doc__)
        return 2
    if a.keys() != b.keys():
        print(f"tensor names differ: {sorted(a.keys() ^ b.keys())}")
        return 1
    skipped = set()
    if floor is not None:
        for name in sorted(a):
            second = f"optim.{name}.1"
            if second not in a or a[second][0] != "F32":
                continue
            peak = [max(array("f", c[second][2]), default=0.0) for c in (a, b)]
            if max(peak) < floor:
                print(f"skipped {name} and its optimizer states: Adam's second moment peaks at "
                      f"{peak[0]:.3g} / {peak[1]:.3g} < {floor} (gradients of rounding-noise size)")
                skipped |= {n for n in a if n == name or n.startswith(f"optim.{name}.")}
    worst, worst_name, bad = 0.0, "", 0
    for name in sorted(a):
        if name in skipped:
            continue
        (da, sa, ba), (db, sb, bb) = a[name], b[name]
        if (da, sa) != (db, sb):
            print(f"{name}: {da} {sa} vs {db} {sb}")
            bad += 1
            continue
        if da != "F32":
            if ba != bb:
                print(f"{name}: {da} values differ")
                bad += 1
            continue
        x, y = array("f", ba), array("f", bb)
        scale = max((abs(v) for v in x), default=0.0)
        diff = max((abs(p - q) for p, q in zip(x, y)), default=0.0)
        rel = diff / scale if scale > 0 else diff
        if rel > worst:
            worst, worst_name = rel, name
        if rel > rtol:
            print(f"{name}: max |a - b| / max |a| = {rel:.3g} > {rtol}")
            bad += 1
    print(f"{len(a) - len(skipped)} tensors, largest relative difference {worst:.3g}" + (f" ({worst_name})" if worst_name else ""))
    return 1 if bad else 0


sys.exit(main())
