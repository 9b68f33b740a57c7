"""Peak memory of preparing 64/128 training pairs (StackGAN stage II) against the images' size.

A chained super-resolution stage trains on the same images at 64 and 128 pixels
(:class:`galforge.training.pipeline.PairedStamps`): :func:`~galforge.training.pipeline.
prepare_data` reads the 128 px stamps, makes the 64 px ones from them (nearest, as the
stackgan recipe asks) and maps both to model space.  ``n`` GalSim stamps (``builtin:galsim``,
g/r/i, 128 px) are drawn once and saved as a ``.npy`` file; a fresh process then imports
galforge and torch, notes its resident memory, prepares the pairs from the file and reports its
peak resident memory (``ru_maxrss``).  The figure judged is the growth of the peak over the
process's memory before preparing, as a multiple of the 128 px images' own bytes
(``n × 3 × 128 × 128 × 4``); the whole peak is printed beside it.  Prints a table, then one
last line of JSON.

    python benchmarks/paired_memory.py [--n 2048] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch  # noqa: F401  (as a training process has it)
from galforge.config import resolve_config
from galforge.training.pipeline import PairedStamps, prepare_data

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

before = rss_mb()
cfg = resolve_config(base={"data": {"source": sys.argv[1]}})
t0 = time.perf_counter()
d = prepare_data(cfg, PairedStamps((64, 128), method="nearest"), (-1.0, 1.0))
seconds = time.perf_counter() - t0
shapes = {str(k): list(v.shape) for k, v in d.data.items()}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"before_mb": before, "peak_mb": peak, "after_mb": rss_mb(),
                  "seconds": seconds, "shapes": shapes}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="stamps of 128 px")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--source",
        choices=("npy", "builtin"),
        default="npy",
        help="prepare from the saved .npy file (default) or from the builtin:galsim spec itself "
        "(the drawing's own memory then counts too)",
    )
    args = ap.parse_args()

    import numpy as np

    from galforge.data.builtin import galsim_galaxies

    with tempfile.TemporaryDirectory(prefix="galforge-pairs-") as tmp:
        path = os.path.join(tmp, "stamps128.npy")
        t0 = time.perf_counter()
        iset, _ = galsim_galaxies(args.n, size=128, seed=args.seed)
        np.save(path, np.ascontiguousarray(iset.images, dtype=np.float32))
        image_mb = iset.images.astype(np.float32).nbytes / 2**20
        del iset
        draw_s = time.perf_counter() - t0
        spec = f"builtin:galsim?n={args.n}&size=128&seed={args.seed}"
        source = path if args.source == "npy" else spec
        out = subprocess.run(
            [sys.executable, "-c", CHILD, source], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            sys.exit(f"the preparing process failed:\n{out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
    grown = r["peak_mb"] - r["before_mb"]
    ratio = grown / image_mb
    print(
        f"64/128 pairs from {args.n} GalSim stamps of 128 px (g, r, i) read from "
        f"{'a .npy file' if args.source == 'npy' else spec}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} (drawn in {draw_s:.0f} s)"
    )
    print(f"{'quantity':<40}{'MB':>10}{'x images':>10}")
    for name, mb in (
        ("128 px images (float32)", image_mb),
        ("process before preparing", r["before_mb"]),
        ("peak of the process", r["peak_mb"]),
        ("peak growth while preparing", grown),
        ("after preparing (pairs held)", r["after_mb"]),
    ):
        print(f"{name:<40}{mb:>10.0f}{mb / image_mb:>10.2f}")
    print(f"peak growth / images: {ratio:.2f} (target <= 2.5); prepared in {r['seconds']:.1f} s")
    print(
        json.dumps(
            {
                "benchmark": "paired_memory",
                "n": args.n,
                "source": args.source,
                "image_mb": round(image_mb, 1),
                "before_mb": round(r["before_mb"], 1),
                "peak_mb": round(r["peak_mb"], 1),
                "peak_growth_mb": round(grown, 1),
                "ratio": round(ratio, 3),
                "after_mb": round(r["after_mb"], 1),
                "seconds": round(r["seconds"], 2),
                "shapes": r["shapes"],
            }
        )
    )


if __name__ == "__main__":
    main()
