"""The noiseless galaxies of sky-noise generators against GalSim's noiseless truth.

A generator with sky noise (``model.sky_noise=true``) draws a noiseless scene and adds pixel
noise of a learned level.  ``galforge evaluate`` judges the noisy images, as a survey would
see them; on 500 galaxies a KS test there decides pass or fail only to within a few measures
from one draw of fakes to the next, because the noise hides the faint light that sizes and
profiles depend on.  ``builtin:galsim`` can also return its galaxies *without* noise, so for
that population the two noiseless scenes can be compared directly, on thousands of galaxies
and with no noise in the way: a sharper instrument for telling two models (or two snapshots
of one run) apart.

For each bundle or run (``pretrained:NAME`` too), ``--n`` latents of ``--seed`` give the
generator's noiseless scenes (zero noise maps), in the data's units; the real ones are
``--n`` noiseless ``builtin:galsim`` galaxies of the validation seed 2028 (never the held-out
seed 2026 of the zoo cards), and the reference row is a second noiseless real draw (seed
2029) against them.  Measured in the ``r`` band of each image, after subtracting the median
of its top and bottom four rows and keeping the pixels above 3 % of its peak:

* ``r20 / r50 / r80``: radii (px, about the stamp centre) enclosing 20 / 50 / 80 % of the light;
* ``C``: concentration ``5 log10(r80 / r20)``;
* ``e``: flux-weighted second-moment ellipticity ``|(Qxx − Qyy, 2 Qxy)| / (Qxx + Qyy)``;
* ``log F``: log10 of the total flux.

Each cell is the two-sample KS p against the real set, then the 5th / 50th / 95th percentile
of the measure for the fakes.  Prints a table, then one line of JSON.

    python benchmarks/noiseless_population.py pretrained:galsim-dcgan64 ~/galforge-runs/RUN
    python benchmarks/noiseless_population.py RUN/bundle-step-00004000 --n 2000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

VALIDATION_SEED = 2028
REFERENCE_SEED = 2029
MEASURES = ("r20", "r50", "r80", "C", "e", "log F")


def measure(images: np.ndarray, band: int = 1) -> dict[str, np.ndarray]:
    """The measures above for ``N×C×H×W`` noiseless images (band ``band``)."""
    x = np.asarray(images[:, band], dtype=np.float64)
    n, h, w = x.shape
    rows = np.concatenate([x[:, :4].reshape(n, -1), x[:, -4:].reshape(n, -1)], axis=1)
    x = x - np.median(rows, axis=1)[:, None, None]
    x = np.where(x > 0.03 * x.max(axis=(1, 2), keepdims=True), x, 0.0)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    radius = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(radius, kind="stable")
    sorted_r = radius[order]
    cum = np.cumsum(x.reshape(n, -1)[:, order], axis=1)
    total = cum[:, -1]
    frac = cum / np.where(total > 0, total, 1.0)[:, None]

    def enclosing(q: float) -> np.ndarray:
        return np.array([sorted_r[min(np.searchsorted(f, q), len(sorted_r) - 1)] for f in frac])

    r20, r50, r80 = enclosing(0.2), enclosing(0.5), enclosing(0.8)
    s = np.where(total > 0, total, 1.0)
    mx = (x * xx).sum(axis=(1, 2)) / s
    my = (x * yy).sum(axis=(1, 2)) / s
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    qxx = (x * dx * dx).sum(axis=(1, 2)) / s
    qyy = (x * dy * dy).sum(axis=(1, 2)) / s
    qxy = (x * dx * dy).sum(axis=(1, 2)) / s
    e = np.hypot(qxx - qyy, 2 * qxy) / np.maximum(qxx + qyy, 1e-12)
    return {
        "r20": r20,
        "r50": r50,
        "r80": r80,
        "C": 5 * np.log10(r80 / np.maximum(r20, 1e-6)),
        "e": e,
        "log F": np.log10(np.maximum(total, 1e-12)),
    }


def noiseless_real(n: int, seed: int) -> np.ndarray:
    from galforge.data.builtin import galsim_galaxies

    return galsim_galaxies(n, 64, seed=seed, return_noiseless=True)[2]


def noiseless_fake(source: str, n: int, seed: int) -> np.ndarray:
    import galforge

    bundle = galforge.load(source)
    if "noise" not in bundle.capabilities:
        raise SystemExit(
            f"{source}: its generator has no sky noise (no noiseless scene to "
            "compare); train it with model.sky_noise=true"
        )
    return np.asarray(bundle.sample(n, seed=seed, noise_mode="none"), dtype=np.float64)


def compare(real: dict, other: dict) -> dict:
    from scipy.stats import ks_2samp

    return {
        k: {
            "ks_p": float(ks_2samp(real[k], other[k]).pvalue),
            "pct": [float(v) for v in np.percentile(other[k], [5, 50, 95])],
        }
        for k in MEASURES
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", help="bundles or run folders (pretrained:NAME too)")
    ap.add_argument("--n", type=int, default=2000, help="galaxies per set (default 2000)")
    ap.add_argument("--seed", type=int, default=5, help="sample seed of the fakes")
    args = ap.parse_args()

    t0 = time.perf_counter()
    real = measure(noiseless_real(args.n, VALIDATION_SEED))
    rows = {
        f"real (seed {REFERENCE_SEED}) vs real": compare(
            real, measure(noiseless_real(args.n, REFERENCE_SEED))
        )
    }
    for src in args.sources:
        rows[src] = compare(real, measure(noiseless_fake(src, args.n, args.seed)))

    width = max(len(k) for k in rows) + 2
    print(
        f"noiseless r-band population, {args.n} galaxies each, against builtin:galsim "
        f"seed {VALIDATION_SEED}; cell: KS p  (5 / 50 / 95 %)"
    )
    print(
        f"{'real seed ' + str(VALIDATION_SEED):{width}s}"
        + "".join(
            f"{k + ' ' + '/'.join(f'{v:.3g}' for v in np.percentile(real[k], [5, 50, 95])):>30s}"
            for k in MEASURES
        )
    )
    for name, res in rows.items():
        cells = [
            f"{res[k]['ks_p']:.2g} ({'/'.join(f'{v:.3g}' for v in res[k]['pct'])})"
            for k in MEASURES
        ]
        print(f"{name:{width}s}" + "".join(f"{c:>30s}" for c in cells))
    print(
        json.dumps(
            {
                "n": args.n,
                "seed": args.seed,
                "validation_seed": VALIDATION_SEED,
                "rows": rows,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
