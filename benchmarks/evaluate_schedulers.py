"""Wall time of a whole ``galforge evaluate`` with each local Dask engine.

Evaluates N GalSim galaxies (64 px, g/r/i, seed 0) against N others (seed 1) with the
measures of ``make demo`` (moments, Gini/M20/CAS/Sérsic, photometry, colour, memorisation,
power spectrum, FID) and, with ``--isophotes``, the isophote fits too, once per engine:

* ``synchronous`` — one task at a time in this process (the reference);
* ``threads``     — a thread pool of ``--workers``;
* ``processes``   — a pool of ``--workers`` worker processes (their start-up included);
* ``auto``        — what ``galforge evaluate`` picks by default (processes above
  ``AUTO_PROCESS_IMAGES`` images on more than one CPU, else threads).

Every run starts from an empty cache and must give the same summary as the reference.
Prints a table (seconds and speed-up over synchronous), then one JSON line.

    python benchmarks/evaluate_schedulers.py [--n 150] [--workers 2] [--isophotes]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEMO_MEASURES = [
    "moments",
    "morphology",
    "photometry",
    "colour",
    "memorization",
    "power_spectrum",
    "fid",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=150, help="galaxies per set")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--isophotes", action="store_true", help="add the isophote fits (native)")
    ap.add_argument("--engines", nargs="+", default=["synchronous", "threads", "processes", "auto"])
    args = ap.parse_args(argv)

    from galforge.data.builtin import galsim_galaxies
    from galforge.evaluation import evaluate
    from galforge.evaluation.runner import AUTO_PROCESS_IMAGES

    real, _ = galsim_galaxies(args.n, size=64, seed=0)
    fake, _ = galsim_galaxies(args.n, size=64, seed=1)
    measures = DEMO_MEASURES + (["isophotes"] if args.isophotes else [])
    # imports and first-call costs out of the timings
    with tempfile.TemporaryDirectory() as tmp:
        evaluate(
            real.subset(range(8)),
            fake.subset(range(8)),
            Path(tmp),
            measures=measures,
            progress=False,
            scheduler="synchronous",
            upscale=0,
        )

    rows, ref_summary = {}, None
    load_before = os.getloadavg()[0]
    for engine in args.engines:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = evaluate(
                real,
                fake,
                Path(tmp),
                measures=measures,
                progress=False,
                scheduler=engine,
                workers=args.workers,
                upscale=0,
            )
            seconds = time.perf_counter() - t0
        same = ref_summary is None or m["summary"] == ref_summary
        ref_summary = ref_summary or m["summary"]
        rows[engine] = {
            "seconds": round(seconds, 2),
            "used": m["settings"]["scheduler_used"],
            "same_summary": same,
        }
        print(f"{engine}: {seconds:.1f} s", file=sys.stderr, flush=True)

    ref = rows[args.engines[0]]["seconds"]
    print(
        f"\nevaluate() on {args.n} + {args.n} GalSim galaxies (64 px, g r i), "
        f"{len(measures)} measures, {args.workers} workers, {os.cpu_count()} CPUs"
    )
    hdr = f"{'engine':<13}{'ran as':<13}{'seconds':>9}{'speed-up':>10}  same numbers"
    print(hdr)
    print("-" * len(hdr))
    for engine, r in rows.items():
        r["speedup"] = round(ref / r["seconds"], 3)
        print(
            f"{engine:<13}{r['used']:<13}{r['seconds']:>9.1f}{r['speedup']:>10.2f}  "
            f"{'yes' if r['same_summary'] else 'NO'}"
        )
    load_after = os.getloadavg()[0]
    print(
        f"reference: {args.engines[0]}; auto starts processes from {AUTO_PROCESS_IMAGES} "
        f"images; load average before/after {load_before:.1f} / {load_after:.1f} "
        "(other work on the machine lowers these figures)"
    )
    print(
        json.dumps(
            {
                "benchmark": "evaluate_schedulers",
                "n": args.n,
                "workers": args.workers,
                "cpu_count": os.cpu_count(),
                "measures": measures,
                "load_average_before": load_before,
                "load_average_after": load_after,
                "results": rows,
            }
        )
    )
    return 0 if all(r["same_summary"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
