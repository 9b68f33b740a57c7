"""Throughput of galforge's per-object measurements on 1 and 2 Dask workers.

Measures images per second of every per-object measurement of
``galforge.evaluation`` on GalSim stamps (64 px, g/r/i), run through Dask's local
multiprocessing scheduler in chunks, with 1 and with 2 workers:

* ``moments``          — sep moment shapes (:func:`morphology.measure_moments`)
* ``photometry``       — detection + Kron photometry in 3 bands (:func:`photometry.detect_and_measure`)
* ``isophotes_native`` — isophote fits at native resolution
* ``isophotes_512``    — isophote fits after 512-px upscaling (the paper's setting, the default)
* ``statmorph``        — Gini/M20/CAS/Sérsic (:func:`morphology.measure_statmorph`)

The reference for the ratio column is the fast moment shapes. CPU seconds per image are
measured in-process (1 worker), unaffected by other load; the projection of the CPU time
for the paper's 9,000 + 9,000 images is printed too. Prints a table, then one JSON line.

    python benchmarks/evaluate_throughput.py [--scale 1.0] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# images per measurement at --scale 1 (isophote fits are slow)
BASE_N = {
    "moments": 256,
    "photometry": 256,
    "isophotes_native": 24,
    "isophotes_512": 6,
    "statmorph": 24,
}


def _run(name, images, bands):
    from galforge.evaluation import morphology, photometry

    if name == "moments":
        return len(morphology.measure_moments(images, bands))
    if name == "photometry":
        photometry.detect_and_measure(images, bands)
        return len(images)
    if name == "isophotes_native":
        return len(morphology.measure_isophotes(images, bands, upscale=None))
    if name == "isophotes_512":
        return len(morphology.measure_isophotes(images, bands, upscale=512))
    if name == "statmorph":
        return len(morphology.measure_statmorph(images, bands))
    raise ValueError(name)


def measure(name, images, bands, workers, pool):
    """Images per second of one measurement; ``pool`` is a warm process pool (or None)."""
    import dask

    chunks = np.array_split(np.arange(len(images)), max(1, min(len(images), 4 * workers)))
    tasks = [dask.delayed(_run)(name, images[c], bands) for c in chunks if len(c)]
    t0, c0 = time.perf_counter(), time.process_time()
    if pool is None:
        done = dask.compute(*tasks, scheduler="synchronous")
    else:
        done = dask.compute(*tasks, scheduler="processes", pool=pool)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert sum(done) == len(images)
    # CPU seconds per image are only meaningful in-process (1 worker)
    return len(images) / wall, (cpu / len(images) if pool is None else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the image counts")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="+", default=list(BASE_N), choices=list(BASE_N))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from galforge.data.builtin import galsim_galaxies

    n_max = max(max(1, int(BASE_N[k] * args.scale)) for k in args.only)
    imgset, _ = galsim_galaxies(n_max, size=64, seed=args.seed)
    images, bands = imgset.images, imgset.bands
    # warm up imports, caches and Dask in this process
    for name in args.only:
        measure(name, images[:1], bands, 1, None)

    from concurrent.futures import ProcessPoolExecutor

    results = {name: {"n": max(1, int(BASE_N[name] * args.scale))} for name in args.only}
    load_before = os.getloadavg()
    for w in args.workers:
        pool = None if w == 1 else ProcessPoolExecutor(w)
        try:
            if pool is not None:  # start the workers and import everything before timing
                list(pool.map(_run, ["moments"] * w, [images[:1]] * w, [bands] * w))
            for name in args.only:
                n = results[name]["n"]
                rate, cpu = measure(name, images[:n], bands, w, pool)
                results[name][f"images_per_s_{w}w"] = rate
                if cpu is not None:
                    results[name]["cpu_seconds_per_image"] = cpu
                print(
                    f"{name} {w}w: {results[name][f'images_per_s_{w}w']:.2f} img/s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            if pool is not None:
                pool.shutdown()

    ref = results.get("moments", {}).get(f"images_per_s_{args.workers[0]}w")
    w1, wl = args.workers[0], args.workers[-1]
    print(
        f"\nPer-object measurement throughput, 64-px g/r/i GalSim stamps, "
        f"{os.cpu_count()} CPUs (Dask local processes)"
    )
    hdr = f"{'measurement':<18}{'n':>5}" + "".join(f"{f'img/s {w}w':>12}" for w in args.workers)
    hdr += f"{'speed-up':>10}{'vs moments':>12}{'CPU s/img':>11}{'9k+9k CPU-h':>13}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in results.items():
        rate1 = r[f"images_per_s_{w1}w"]
        line = f"{name:<18}{r['n']:>5}" + "".join(
            f"{r[f'images_per_s_{w}w']:>12.2f}" for w in args.workers
        )
        r["speedup"] = r[f"images_per_s_{wl}w"] / rate1
        r["seconds_per_image_1w"] = 1.0 / rate1
        cpu = r.get("cpu_seconds_per_image", 1.0 / rate1)
        r["cpu_hours_18000"] = 18000 * cpu / 3600
        line += f"{r['speedup']:>10.2f}"
        line += f"{(rate1 / ref) if ref else float('nan'):>12.4f}"
        line += f"{cpu:>11.3f}{r['cpu_hours_18000']:>13.2f}"
        print(line)
    print(
        f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} "
        "(other work on the machine lowers these figures)"
    )
    print(
        json.dumps(
            {
                "benchmark": "evaluate_throughput",
                "cpu_count": os.cpu_count(),
                "load_average_before": load_before[0],
                "load_average_after": os.getloadavg()[0],
                "workers": args.workers,
                "scale": args.scale,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
