"""galforge's lean statmorph against statmorph's own class: the same numbers, the CPU time.

:func:`galforge.evaluation.morphology.measure_statmorph` computes only the quantities galforge
reports and searches the asymmetry centre with a fast half turn (``lean=True``, the default);
``lean=False`` runs statmorph's ``SourceMorphology`` as it comes.  Both measure the same
``builtin:galsim`` stamps (g, r, i summed; ``--noise`` adds Gaussian noise of that many times
the set's pixel standard deviation, so that some stamps fail), one after the other in this
process; the table gives the CPU seconds per stamp of each, their ratio, how many verdicts
(``ok``) and statmorph flags agree, and the largest relative difference of every reported
quantity.  The last line is the same figures as JSON.

    python benchmarks/statmorph_lean.py [--n 60] [--size 64] [--noise 0.5] [--seed 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    from galforge.data.builtin import galsim_galaxies
    from galforge.evaluation import morphology as M

    iset, _ = galsim_galaxies(args.n, size=args.size, seed=args.seed)
    images = iset.images
    if args.noise > 0:
        rng = np.random.default_rng(args.seed)
        sigma = args.noise * float(images.std())
        images = (images + rng.normal(0.0, sigma, images.shape)).astype(np.float32)
    M.measure_statmorph(images[:2], iset.bands)  # imports and caches
    M.measure_statmorph(images[:2], iset.bands, lean=False)
    c0 = time.process_time()
    lean = M.measure_statmorph(images, iset.bands)
    c1 = time.process_time()
    full = M.measure_statmorph(images, iset.bands, lean=False)
    c2 = time.process_time()
    t_lean, t_full = (c1 - c0) / args.n, (c2 - c1) / args.n
    worst = {}
    for key in M._STATMORPH_QUANTITIES:
        d = 0.0
        for a, b in zip(lean, full, strict=True):
            if math.isfinite(a[key]) and math.isfinite(b[key]):
                d = max(d, abs(a[key] - b[key]) / max(abs(b[key]), 1e-12))
            elif math.isfinite(a[key]) != math.isfinite(b[key]):
                d = math.inf
        worst[key] = d
    same_ok = sum(a["ok"] == b["ok"] for a, b in zip(lean, full, strict=True))
    same_flag = sum(a["flag"] == b["flag"] for a, b in zip(lean, full, strict=True))
    print(
        f"statmorph on {args.n} builtin:galsim stamps of {args.size} px (noise {args.noise}), "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'class':<22}{'CPU s/stamp':>12}{'ok':>6}")
    print(f"{'lean (galforge)':<22}{t_lean:>12.4f}{sum(r['ok'] for r in lean):>6}")
    print(f"{'statmorph (lean=False)':<22}{t_full:>12.4f}{sum(r['ok'] for r in full):>6}")
    print(
        f"speed-up {t_full / t_lean:.2f}x; same verdicts {same_ok}/{args.n}, same flags "
        f"{same_flag}/{args.n}"
    )
    print("largest relative difference: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    print(
        json.dumps(
            {
                "benchmark": "statmorph_lean",
                "n": args.n,
                "size": args.size,
                "noise": args.noise,
                "cpu_s_per_stamp_lean": round(t_lean, 5),
                "cpu_s_per_stamp_statmorph": round(t_full, 5),
                "speedup": round(t_full / t_lean, 3),
                "same_verdicts": same_ok,
                "same_flags": same_flag,
                "max_rel_diff": worst,
                "load_average": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
