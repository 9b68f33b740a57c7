"""Peak memory of bringing a training set into model space (``Normalizer.forward``).

Training normalises the whole set once (clip, asinh stretch, scale to [-1, 1]) in float64
for accuracy.  Done on the whole array at once, the float64 working copies need about six
times the set's float32 size; galforge does it in blocks of ``_BLOCK_VALUES`` values with
the same result bit for bit.  Each variant runs in a fresh process on N × 3 × S × S float32
images (random gamma-distributed counts) and reports its peak resident memory above the
input array (``ru_maxrss`` after minus before; the float32 output itself is part of it):

* ``whole array`` — the reference: one block the size of the set;
* ``blocks``      — galforge's default.

Prints a table, then one JSON line.

    python benchmarks/normalize_memory.py [--n 2048] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
import galforge.data.normalize as nm
n, size, whole = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
rng = np.random.default_rng(0)
x = np.empty((n, 3, size, size), np.float32)
for a in range(n):          # image by image: no float64 copy of the set before the timing
    x[a] = rng.gamma(2.0, 50.0, size=(3, size, size))
norm = nm.Normalizer.fit(x[:64], stretch="asinh")   # small: its own peak stays below
if whole:
    nm._BLOCK_VALUES = x.size + 1
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = norm.forward(x)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_mb": (after - before) / 1024.0, "input_mb": x.nbytes / 2**20,
                  "checksum": float(np.float64(y.astype(np.float64).sum()))}))
"""


def run(n: int, size: int, whole: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(size), "1" if whole else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)

    ref = run(args.n, args.size, True)
    new = run(args.n, args.size, False)
    same = ref["checksum"] == new["checksum"]
    print(
        f"Normalizer.forward on {args.n} × 3 × {args.size}² float32 images "
        f"({ref['input_mb']:.0f} MB), peak memory above the input"
    )
    hdr = f"{'variant':<14}{'extra MB':>10}{'× input':>9}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in (("whole array", ref), ("blocks", new)):
        print(f"{name:<14}{r['extra_mb']:>10.0f}{r['extra_mb'] / r['input_mb']:>9.2f}")
    ratio = ref["extra_mb"] / max(new["extra_mb"], 1.0)
    print(f"blocks need {ratio:.1f}× less extra memory; same values: {'yes' if same else 'NO'}")
    print(
        json.dumps(
            {
                "benchmark": "normalize_memory",
                "n": args.n,
                "size": args.size,
                "cpu_count": os.cpu_count(),
                "input_mb": ref["input_mb"],
                "whole_array_extra_mb": ref["extra_mb"],
                "blocks_extra_mb": new["extra_mb"],
                "reduction": ratio,
                "same_values": same,
            }
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
