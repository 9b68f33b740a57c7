"""The clustering of deepfield positions: Thomas process against Poisson, scored on the real w(r).

Measures the two-point correlation w(r) (Landy–Szalay) of the sources detected in the real
field (``builtin:hdf`` by default, as the deepfield recipe detects them), fits the Thomas
process the recipe fits, then draws the positions of ``--fields`` generated fields of the
real field's size from the fitted Thomas process and from a Poisson process of the same
density (positions only: ``sources_window`` of a deepfield generator, no pixels), and
scores each against the real w(r) by χ² over the bins with r ≥ 6 px (Poisson errors of the
real pair counts). The table gives w per bin (real, Thomas mean, Poisson mean) and the χ²
of each; the last line is the same figures as JSON.

    python benchmarks/deepfield_clustering.py --fields 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from galforge.data.builtin import hdf_field
from galforge.data.sources import detect_sources, fit_thomas, pair_correlation
from galforge.models.deepfield import DeepFieldGenerator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--thresh", type=float, default=2.0)
    args = ap.parse_args()
    real = hdf_field()
    img = real.images[0]
    _, h, w = img.shape
    det = detect_sources(img, real.bands, thresh=args.thresh)
    cat = det.catalogue
    n = len(cat["x"])
    density = n / (h * w)
    r, w_real, dd = pair_correlation(cat["x"], cat["y"], (h, w))
    fit = fit_thomas(r, w_real, dd, density)
    use = (r >= 6.0) & (dd > 0)
    err = (1.0 + np.abs(w_real)) / np.sqrt(np.maximum(dd, 1))
    rows = torch.ones((4, 5))
    table = {}
    for name, process in (
        ("thomas", {**fit, "density": density, "clustered": True}),
        (
            "poisson",
            {"density": density, "kappa": density, "mu": 1.0, "sigma": 1.0, "clustered": False},
        ),
    ):
        g = DeepFieldGenerator(
            3, latent_dim=4, width=4, stamp=8, render=8, cell=128, n_rows=4, process=process
        )
        g.rows.copy_(rows)
        ws, counts = [], []
        for seed in range(args.fields):
            s = g.sources_window(seed, 0, 0, h, w, (h, w))
            counts.append(len(s["x"]))
            ws.append(pair_correlation(s["x"], s["y"], (h, w), seed=seed)[1])
        mean = np.mean(ws, 0)
        chi2 = float(np.sum(((mean - w_real) / err)[use] ** 2))
        table[name] = {"w": mean.tolist(), "chi2": chi2, "count_mean": float(np.mean(counts))}
    print(
        f"real field: {n} sources, density {density:.3e} /px²; Thomas fit κ={fit['kappa']:.3e}"
        f" μ={fit['mu']:.2f} σ={fit['sigma']:.1f} px (clustered: {fit['clustered']})"
    )
    print(f"{'r px':>7} {'w real':>8} {'Thomas':>8} {'Poisson':>8}")
    for k in range(len(r)):
        print(
            f"{r[k]:7.1f} {w_real[k]:8.3f} {table['thomas']['w'][k]:8.3f} "
            f"{table['poisson']['w'][k]:8.3f}"
        )
    print(
        f"χ² (r ≥ 6 px, {int(use.sum())} bins): Thomas {table['thomas']['chi2']:.1f}, "
        f"Poisson {table['poisson']['chi2']:.1f}; sources per field: real {n}, Thomas "
        f"{table['thomas']['count_mean']:.0f}, Poisson {table['poisson']['count_mean']:.0f}"
    )
    print(
        json.dumps(
            {
                "r": r.tolist(),
                "w_real": w_real.tolist(),
                "fit": fit,
                "thomas": table["thomas"],
                "poisson": table["poisson"],
            }
        )
    )


if __name__ == "__main__":
    main()
