"""Accuracy of galforge's isophote shapes against ground truth, on GalSim galaxies.

For every galaxy of ``galforge.data.builtin.galsim_galaxies`` (S/N 20–200 by default) the
isophote measurement of :func:`galforge.evaluation.morphology.measure_isophotes` is run on
the noisy stamp and on the same noiseless, PSF-convolved stamp, and compared with

(a) the measurement on the noiseless stamp — the measurement's own noise error, and
(b) the intrinsic (pre-PSF) truth — which also contains the rounding by the PSF: physics,
    not a bug of the measurement.

Both with and without the 512-px bicubic upscaling of Fussell & Moews §4.2 (the default);
``--smooth SIGMA`` measures with ``measure_isophotes``' optional Gaussian pre-smoothing.
Position-angle errors are taken over galaxies whose noiseless ellipticity is at least
``--pa-min-eps`` (0.1): the PA of a round galaxy is undefined. The fast sep-moment shapes are
reported beside. Prints a table, then one JSON line with the figures of the default
(upscaled) settings at top level and every mode under ``"modes"``.

    python benchmarks/measure_accuracy.py --n 500 --n-upscaled 150 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def _dpa(a, b):
    d = np.abs((np.asarray(a) - np.asarray(b)) % 180.0)
    return np.minimum(d, 180.0 - d)


def _measure_chunk(args):
    noisy, noiseless, bands, band, upscale, opts = args
    from galforge.evaluation.morphology import measure_isophotes

    t0 = time.process_time()
    rows_noisy = measure_isophotes(noisy, bands, band=band, upscale=upscale, **opts)
    cpu_noisy = time.process_time() - t0
    rows_clean = measure_isophotes(noiseless, bands, band=band, upscale=upscale, **opts)
    return rows_noisy, rows_clean, cpu_noisy


def run_mode(noisy, noiseless, truth, bands, band, upscale, workers, pa_min_eps, opts=None):
    n = len(noisy)
    chunks = max(1, min(n, workers * 4))
    idx = np.array_split(np.arange(n), chunks)
    opts = dict(opts or {})
    jobs = [(noisy[i], noiseless[i], bands, band, upscale, opts) for i in idx if len(i)]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_measure_chunk, jobs))
    else:
        results = [_measure_chunk(j) for j in jobs]
    wall = time.perf_counter() - t0
    rows_noisy = [r for res in results for r in res[0]]
    rows_clean = [r for res in results for r in res[1]]
    cpu_noisy = sum(res[2] for res in results)
    ok = np.array([a["ok"] and b["ok"] for a, b in zip(rows_noisy, rows_clean, strict=True)])
    fail_noisy = sum(not r["ok"] for r in rows_noisy)
    fail_clean = sum(not r["ok"] for r in rows_clean)
    e_n = np.array([r["ellipticity"] for r in rows_noisy])
    e_c = np.array([r["ellipticity"] for r in rows_clean])
    p_n = np.array([r["pa_deg"] for r in rows_noisy])
    p_c = np.array([r["pa_deg"] for r in rows_clean])
    e_t = np.array([t["ellipticity"] for t in truth])
    p_t = np.array([t["pa_deg"] for t in truth])
    pa_sel = ok & (e_c >= pa_min_eps)
    pa_sel_t = ok & (e_t >= pa_min_eps)
    reasons = {}
    for r in rows_noisy:
        if not r["ok"]:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return {
        "upscale": upscale,
        **opts,
        "n": n,
        "n_ok": int(ok.sum()),
        "median_abs_deps_noiseless": float(np.median(np.abs(e_n - e_c)[ok])),
        "median_abs_dpa_noiseless_deg": float(np.median(_dpa(p_n, p_c)[pa_sel])),
        "median_abs_dpa_noiseless_deg_all": float(np.median(_dpa(p_n, p_c)[ok])),
        "median_abs_deps_intrinsic": float(np.median(np.abs(e_n - e_t)[ok])),
        "median_deps_intrinsic": float(np.median((e_n - e_t)[ok])),
        "median_abs_deps_noiseless_vs_intrinsic": float(np.median(np.abs(e_c - e_t)[ok])),
        "median_abs_dpa_intrinsic_deg": float(np.median(_dpa(p_n, p_t)[pa_sel_t])),
        "n_pa": int(pa_sel.sum()),
        "failure_rate": fail_noisy / n,
        "failure_rate_noiseless": fail_clean / n,
        "failure_reasons": reasons,
        "seconds_per_image": cpu_noisy / n,
        "wall_seconds": wall,
    }


def moments_accuracy(noisy, noiseless, truth, bands, band, pa_min_eps):
    from galforge.evaluation.morphology import measure_moments

    t0 = time.process_time()
    rn = measure_moments(noisy, bands, band=band)
    sec = (time.process_time() - t0) / len(noisy)
    rc = measure_moments(noiseless, bands, band=band)
    ok = np.array([a["ok"] and b["ok"] for a, b in zip(rn, rc, strict=True)])
    e_n = np.array([r["ellipticity"] for r in rn])
    e_c = np.array([r["ellipticity"] for r in rc])
    p_n = np.array([r["pa_deg"] for r in rn])
    p_c = np.array([r["pa_deg"] for r in rc])
    e_t = np.array([t["ellipticity"] for t in truth])
    sel = ok & (e_c >= pa_min_eps)
    return {
        "n": len(noisy),
        "median_abs_deps_noiseless": float(np.median(np.abs(e_n - e_c)[ok])),
        "median_abs_dpa_noiseless_deg": float(np.median(_dpa(p_n, p_c)[sel])),
        "median_abs_deps_intrinsic": float(np.median(np.abs(e_n - e_t)[ok])),
        "failure_rate": float(1 - np.mean([r["ok"] for r in rn])),
        "seconds_per_image": sec,
    }


def _default_smooth():
    import inspect

    from galforge.evaluation.morphology import measure_isophotes

    return inspect.signature(measure_isophotes).parameters["smooth"].default


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="galaxies for the native-resolution path")
    ap.add_argument(
        "--n-upscaled",
        type=int,
        default=None,
        help="galaxies for the 512-px upscaled path (default: --n)",
    )
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--band", default="sum", help="band to fit or 'sum' (the default)")
    ap.add_argument("--upscale", type=int, default=512)
    ap.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    ap.add_argument("--pa-min-eps", type=float, default=0.1)
    ap.add_argument(
        "--smooth",
        type=float,
        default=None,
        help="Gaussian sigma (native px) of measure_isophotes' smoothing; "
        "default: the function's default; 0 turns it off",
    )
    ap.add_argument("--skip-native", action="store_true")
    ap.add_argument("--skip-upscaled", action="store_true")
    args = ap.parse_args(argv)

    from galforge.data.builtin import galsim_galaxies

    n_up = args.n if args.n_upscaled is None else args.n_upscaled
    n_all = max(args.n, n_up)
    t0 = time.perf_counter()
    imgset, truth, noiseless = galsim_galaxies(
        n_all, size=args.size, seed=args.seed, return_noiseless=True
    )
    print(
        f"simulated {n_all} GalSim galaxies in {time.perf_counter() - t0:.1f} s "
        f"(S/N {min(t['snr'] for t in truth):.0f}–{max(t['snr'] for t in truth):.0f})",
        file=sys.stderr,
    )
    images, bands = imgset.images, imgset.bands
    opts = {} if args.smooth is None else {"smooth": args.smooth}
    modes = {}
    modes["moments"] = moments_accuracy(
        images[: args.n], noiseless[: args.n], truth[: args.n], bands, args.band, args.pa_min_eps
    )
    if not args.skip_native:
        modes["native"] = run_mode(
            images[: args.n],
            noiseless[: args.n],
            truth[: args.n],
            bands,
            args.band,
            None,
            args.workers,
            args.pa_min_eps,
            opts,
        )
        print("native done", json.dumps(modes["native"]), file=sys.stderr, flush=True)
    if not args.skip_upscaled and n_up > 0:
        modes["upscaled"] = run_mode(
            images[:n_up],
            noiseless[:n_up],
            truth[:n_up],
            bands,
            args.band,
            args.upscale,
            args.workers,
            args.pa_min_eps,
            opts,
        )

    print(
        f"\nIsophote shape accuracy on GalSim galaxies ({args.size}px, band={args.band}, "
        f"PA over noiseless eps >= {args.pa_min_eps})"
    )
    hdr = (
        f"{'mode':<10}{'n':>6}{'|de| nl':>10}{'|dPA| nl':>10}{'|de| true':>11}"
        f"{'|dPA| true':>12}{'fail':>8}{'s/img':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, m in modes.items():
        print(
            f"{name:<10}{m['n']:>6}{m['median_abs_deps_noiseless']:>10.4f}"
            f"{m['median_abs_dpa_noiseless_deg']:>10.2f}{m['median_abs_deps_intrinsic']:>11.4f}"
            f"{m.get('median_abs_dpa_intrinsic_deg', float('nan')):>12.2f}"
            f"{m['failure_rate']:>8.3f}{m['seconds_per_image']:>8.3f}"
        )
    if "native" in modes and "upscaled" in modes:
        ratio = modes["upscaled"]["seconds_per_image"] / modes["native"]["seconds_per_image"]
        print(f"upscaled / native time per image: {ratio:.1f}x")
    default = modes.get("upscaled") or modes.get("native") or modes["moments"]
    out = {
        "benchmark": "measure_accuracy",
        "default_mode": "upscaled"
        if "upscaled" in modes
        else ("native" if "native" in modes else "moments"),
        "band": args.band,
        "size": args.size,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "smooth": opts.get("smooth", _default_smooth()),
        **{
            k: default[k]
            for k in (
                "median_abs_deps_noiseless",
                "median_abs_dpa_noiseless_deg",
                "median_abs_deps_intrinsic",
                "failure_rate",
                "seconds_per_image",
            )
        },
        "modes": modes,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
