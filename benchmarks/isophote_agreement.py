"""Does galforge's isophote fitter give photutils' answers, and how much faster is it?

Agreement: on ``--n-galsim`` GalSim galaxies (``builtin:galsim``, 64 px) and ``--n-fake`` fakes
of the zoo model ``pretrained:galsim-dcgan64``, :func:`galforge.evaluation.morphology.
measure_isophotes` is run with both engines (native resolution unless ``--upscale``), and the
combined values the evaluation compares are set side by side: the fit-failure verdicts, the
median |Δε|, the median |ΔPA| where ε > 0.1 (photutils' ε), and the median relative
differences of flux, outermost sma and half-light sma.

Speed: ``galforge evaluate REAL FAKE --measures isophotes --upscale 0`` of ``--n-speed``
GalSim galaxies against as many fakes, timed from the command line (start-up, sampling,
detection, fits, report), against a plain loop of photutils ``Ellipse.fit_image`` over the
same stamps (one fit each from the moments' start, fits only), measured in the same run.
Prints a table, then one last line of JSON with the same figures.

    OMP_NUM_THREADS=1 python benchmarks/isophote_agreement.py [--n-galsim 200] [--n-fake 100]
        [--n-speed 100] [--seed 5] [--workers N] [--upscale 0] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MODEL = "pretrained:galsim-dcgan64"


def _galsim(n: int, seed: int):
    from galforge.data import load_images

    return load_images(f"builtin:galsim?n={n}&size=64&seed={seed}")


def _fakes(n: int, seed: int):
    import galforge

    bundle = galforge.load(MODEL, device="cpu")
    return np.asarray(bundle.sample(n, seed=seed), dtype=np.float32), tuple(bundle.bands)


def _axial(d: np.ndarray) -> np.ndarray:
    d = np.abs(d) % 180.0
    return np.minimum(d, 180.0 - d)


def compare(images, bands, upscale=None) -> dict:
    """Both engines on the same stamps; their combined values side by side."""
    from galforge.evaluation.morphology import measure_isophotes

    out = {"n": int(len(images))}
    rows = {}
    for engine in ("galforge", "photutils"):
        t0 = time.perf_counter()
        rows[engine] = measure_isophotes(images, bands, upscale=upscale, engine=engine)
        out[f"seconds_{engine}"] = time.perf_counter() - t0
    g, p = rows["galforge"], rows["photutils"]
    ok_g = np.array([r["ok"] for r in g])
    ok_p = np.array([r["ok"] for r in p])
    both = ok_g & ok_p
    out["failures_galforge"] = int((~ok_g).sum())
    out["failures_photutils"] = int((~ok_p).sum())
    out["same_verdict"] = float(np.mean(ok_g == ok_p))

    def col(rs, k):
        return np.array([r[k] for r, b in zip(rs, both, strict=True) if b], dtype=np.float64)

    eg, ep = col(g, "ellipticity"), col(p, "ellipticity")
    de = np.abs(eg - ep)
    out["n_both_ok"] = int(both.sum())
    out["median_abs_d_eps"] = float(np.median(de)) if de.size else math.nan
    out["p90_abs_d_eps"] = float(np.percentile(de, 90)) if de.size else math.nan
    round_ = ep > 0.1
    dpa = _axial(col(g, "pa_deg") - col(p, "pa_deg"))[round_]
    out["n_eps_gt_0.1"] = int(round_.sum())
    out["median_abs_d_pa_deg"] = float(np.median(dpa)) if dpa.size else math.nan
    out["p90_abs_d_pa_deg"] = float(np.percentile(dpa, 90)) if dpa.size else math.nan
    for k in ("flux", "sma", "half_light_sma"):
        a, b = col(g, k), col(p, k)
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
        out[f"median_rel_d_{k}"] = float(np.median(rel)) if rel.size else math.nan
    out["speedup_in_process"] = out["seconds_photutils"] / out["seconds_galforge"]
    return out, {"d_eps": de, "d_pa": dpa, "same": ok_g == ok_p}


def photutils_loop(images, bands) -> tuple[float, float]:
    """Wall and CPU seconds of a plain ``Ellipse.fit_image`` loop, one fit per stamp from the
    moments."""
    from photutils.isophote import Ellipse, EllipseGeometry

    from galforge.evaluation import morphology as morph

    stack = morph.select_band(images, bands, "sum")
    starts = []
    for img in stack:
        sub, rms = morph._prepare(img, None, 4)
        found = morph._detect_central(sub, rms, 1.5, 5)
        if found is None:
            continue
        objs, _, i = found
        o = objs[i]
        x0, y0 = float(o["x"]), float(o["y"])
        a, b = float(max(o["a"], 0.5)), float(max(o["b"], 0.5))
        maxsma = max(min(x0, y0, sub.shape[1] - 1 - x0, sub.shape[0] - 1 - y0), 4.0)
        starts.append(
            (
                sub,
                x0,
                y0,
                float(np.clip(2.0 * a, 3.0, 0.8 * maxsma)),
                float(np.clip(1.0 - b / a, 0.05, 0.9)),
                float(o["theta"]) % math.pi,
                maxsma,
            )
        )
    t0, c0 = time.perf_counter(), time.process_time()
    for sub, x0, y0, sma0, eps0, pa0, maxsma in starts:
        geometry = EllipseGeometry(x0=x0, y0=y0, sma=sma0, eps=eps0, pa=pa0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                Ellipse(sub, geometry=geometry).fit_image(sma0=sma0, minsma=1.0, maxsma=maxsma)
            except Exception:  # a failed fit still took its time
                pass
    return time.perf_counter() - t0, time.process_time() - c0


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def evaluate_cli(n: int, seed: int, workers: int | None, engine: str) -> tuple[float, float]:
    """Wall and CPU seconds (all its processes) of ``galforge evaluate`` (isophotes only,
    native resolution)."""
    exe = Path(sys.executable).with_name("galforge")
    cmd = [
        str(exe) if exe.exists() else "galforge",
        "evaluate",
        f"builtin:galsim?n={n}&size=64&seed={seed}",
        MODEL,
        "-n",
        str(n),
        "--seed",
        str(seed),
        "--measures",
        "isophotes",
        "--upscale",
        "0",
        "--no-cache",
        "--no-progress",
        "--device",
        "cpu",
        "--isophote-engine",
        engine,
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    tmp = Path(tempfile.mkdtemp(prefix="galforge-iso-"))
    try:
        t0, c0 = time.perf_counter(), _children_cpu()
        subprocess.run(cmd + ["--out", str(tmp / "eval")], check=True, capture_output=True)
        return time.perf_counter() - t0, _children_cpu() - c0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-galsim", type=int, default=200)
    ap.add_argument("--n-fake", type=int, default=100)
    ap.add_argument("--n-speed", type=int, default=100, help="stamps per set in the timing")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument(
        "--workers", type=int, default=None, help="evaluate's --workers (default: its own choice)"
    )
    ap.add_argument(
        "--upscale",
        type=int,
        default=0,
        help="agreement at this upscaling (0: native, as the timing)",
    )
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]

    gal = _galsim(args.n_galsim, args.seed)
    fake, fbands = _fakes(args.n_fake, args.seed)
    res, raw = {}, {}
    up = args.upscale or None
    res["galsim"], raw["galsim"] = compare(gal.images, gal.bands, up)
    res["dcgan"], raw["dcgan"] = compare(fake, fbands, up)
    print(
        f"{'set':<8} {'n':>4} {'fail g/p':>9} {'same verdict':>12} {'med|Δε|':>8} "
        f"{'p90|Δε|':>8} {'med|ΔPA|°':>9} {'flux':>7} {'sma':>7} {'r_half':>7} "
        f"{'t galforge':>10} {'t photutils':>11} {'speed-up':>8}"
    )
    for name, r in res.items():
        print(
            f"{name:<8} {r['n']:>4} {r['failures_galforge']:>4}/{r['failures_photutils']:<4} "
            f"{r['same_verdict']:>12.1%} {r['median_abs_d_eps']:>8.4f} "
            f"{r['p90_abs_d_eps']:>8.4f} {r['median_abs_d_pa_deg']:>9.3f} "
            f"{r['median_rel_d_flux']:>7.1e} {r['median_rel_d_sma']:>7.1e} "
            f"{r['median_rel_d_half_light_sma']:>7.1e} {r['seconds_galforge']:>9.1f}s "
            f"{r['seconds_photutils']:>10.1f}s {r['speedup_in_process']:>7.1f}×"
        )
    # pooled over both sets: the targets
    cat = {k: np.concatenate([r[k] for r in raw.values()]) for k in ("d_eps", "d_pa", "same")}
    pooled = {
        "same_verdict": float(np.mean(cat["same"])),
        "median_abs_d_eps": float(np.median(cat["d_eps"])),
        "median_abs_d_pa_deg": float(np.median(cat["d_pa"])),
    }
    pooled["targets_met"] = bool(
        pooled["same_verdict"] >= 0.98
        and pooled["median_abs_d_eps"] <= 0.005
        and pooled["median_abs_d_pa_deg"] <= 1.0
    )
    print(
        f"{'pooled':<8} {len(cat['same']):>4} {'':>9} {pooled['same_verdict']:>12.1%} "
        f"{pooled['median_abs_d_eps']:>8.4f} {'':>8} {pooled['median_abs_d_pa_deg']:>9.3f}"
        f"   targets (≥ 98 %, ≤ 0.005, ≤ 1°) met: {pooled['targets_met']}"
    )
    out = {"upscale": up, "sets": res, "pooled": pooled, "load_average_before": load0}
    if not args.skip_speed:
        real = _galsim(args.n_speed, args.seed)
        fk, fb = _fakes(args.n_speed, args.seed)
        (w1, c1), (w2, c2) = photutils_loop(real.images, real.bands), photutils_loop(fk, fb)
        t_loop, c_loop = w1 + w2, c1 + c2
        t_eval, c_eval = evaluate_cli(args.n_speed, args.seed, args.workers, "galforge")
        out["speed"] = {
            "n_per_set": args.n_speed,
            "seconds_evaluate_galforge": t_eval,
            "seconds_photutils_loop": t_loop,
            "ratio": t_eval / t_loop,
            "cpu_seconds_evaluate_galforge": c_eval,
            "cpu_seconds_photutils_loop": c_loop,
            "cpu_ratio": c_eval / c_loop,
            "workers": args.workers,
        }
        print(
            f"\nspeed: galforge evaluate {args.n_speed} vs {args.n_speed} --measures isophotes "
            f"--upscale 0: {t_eval:.1f} s wall ({c_eval:.1f} CPU-s); photutils "
            f"Ellipse.fit_image loop over the same {2 * args.n_speed} stamps: {t_loop:.1f} s "
            f"wall ({c_loop:.1f} CPU-s); ratio {t_eval / t_loop:.3f} wall, "
            f"{c_eval / c_loop:.3f} CPU (target ≤ 0.2)"
        )
    out["load_average_after"] = os.getloadavg()[0]
    print(f"load average before/after: {load0:.1f} / {out['load_average_after']:.1f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
