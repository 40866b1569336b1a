#!/usr/bin/env python3
"""tests/launch/compare_checkpoints.py — compares two safetensors checkpoints tensor by tensor:
same names, dtypes and shapes; float32 tensors within RTOL relative (max |a - b| over max |a|,
per tensor), every other dtype bit for bit. Prints the largest relative difference; exit 1 if any
tensor is off. Usage: compare_checkpoints.py A B RTOL"""
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
    if a.keys() != b.keys():
        print(f"tensor names differ: {sorted(a.keys() ^ b.keys())}")
        return 1
    worst, worst_name, bad = 0.0, "", 0
    for name in sorted(a):
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
    print(f"{len(a)} tensors, largest relative difference {worst:.3g}" + (f" ({worst_name})" if worst_name else ""))
    return 1 if bad else 0


sys.exit(main())
