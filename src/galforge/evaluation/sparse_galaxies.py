"""Per-galaxy statistics of sparse fields, real against generated.

A sparse field (one band, background exactly 0; :mod:`galforge.data.sparse`) holds its
galaxies as 8-connected clusters of non-zero pixels. :func:`galaxy_table` measures each
cluster of a stack of fields:

* ``peak`` (brightest pixel), ``flux`` (sum), ``npix`` (pixel count) and ``hlr`` (half-light
  radius, pixels) as :func:`galforge.data.sparse.detect_sources` measures them;
* ``ellipticity`` -- ``√((Q_xx − Q_yy)² + (2 Q_xy)²) / (Q_xx + Q_yy)`` of the cluster's
  flux-weighted second moments ``Q`` (0 for a round galaxy, → 1 for a line; 0 for a
  one-pixel cluster).

:func:`compare_galaxies` sets the generated galaxies beside the real ones: per quantity the
two-sample Kolmogorov–Smirnov statistic and p value (a quantity passes at ``p ≥ alpha``,
0.05), the clusters per field of both, the clusters per placed galaxy when the caller
knows how many it placed, and whether every generated pixel off the galaxies is exactly 0
(finite and ≥ 0 everywhere, a zero-background share like the data's).
:func:`format_comparison` prints it as a table.
"""

from __future__ import annotations

import numpy as np

from galforge.data.sparse import detect_sources, field_stack, label_clusters

__all__ = ["QUANTITIES", "compare_galaxies", "format_comparison", "galaxy_table"]

#: the per-galaxy quantities compared
QUANTITIES = ("peak", "flux", "hlr", "ellipticity", "npix")


def _ellipticities(image: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    from scipy import ndimage

    if k == 0:
        return np.zeros(0)
    idx = np.arange(1, k + 1)
    w = np.abs(image)
    rows, cols = np.indices(image.shape, dtype=np.float64)
    s = ndimage.sum(w, labels, idx)
    my = ndimage.sum(w * rows, labels, idx) / s
    mx = ndimage.sum(w * cols, labels, idx) / s
    dy = rows - my[np.maximum(labels - 1, 0)]
    dx = cols - mx[np.maximum(labels - 1, 0)]
    qyy = ndimage.sum(w * dy * dy, labels, idx) / s
    qxx = ndimage.sum(w * dx * dx, labels, idx) / s
    qxy = ndimage.sum(w * dx * dy, labels, idx) / s
    tr = qxx + qyy
    e = np.hypot(qxx - qyy, 2.0 * qxy) / np.where(tr > 0, tr, 1.0)
    return np.where(tr > 0, e, 0.0)


def galaxy_table(images, source: str = "the images") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(columns, clusters per image)``: every cluster of every field (N×H×W or N×1×H×W)
    with the :data:`QUANTITIES` and ``image`` (its field's index)."""
    arr = field_stack(images, source)
    cols: dict[str, list] = {k: [] for k in ("image", *QUANTITIES)}
    counts = []
    for i, img in enumerate(arr):
        img = np.asarray(img, dtype=np.float64)
        src = detect_sources(img)
        labels, k = label_clusters(img)
        counts.append(k)
        cols["image"].append(np.full(k, i))
        for q in ("peak", "flux", "hlr", "npix"):
            cols[q].append(src[q])
        cols["ellipticity"].append(_ellipticities(img, labels, k))
    return {k: np.concatenate(v) for k, v in cols.items()}, np.asarray(counts)


def compare_galaxies(real, fake, *, placed=None, alpha: float = 0.05) -> dict:
    """Per-galaxy KS of ``fake`` against ``real`` fields (see the module docstring).

    ``placed``: how many galaxies the generator placed in each fake field (or their total),
    for the clusters-per-placed-galaxy ratio. JSON-ready dict: ``quantities`` (per quantity
    ``n_real``, ``n_fake``, ``mean_real``, ``sd_real``, ``mean_fake``, ``sd_fake``,
    ``ks_stat``, ``ks_p``, ``passed``), ``clusters_per_field`` (``real``, ``fake``),
    ``clusters_per_placed`` (or None), ``zero_background`` and ``passed`` (how many
    quantities pass) of ``total``."""
    from scipy.stats import ks_2samp

    rt, rn = galaxy_table(real, "the real fields")
    ft, fn = galaxy_table(fake, "the generated fields")
    out: dict = {"quantities": {}}
    for q in QUANTITIES:
        a, b = rt[q], ft[q]
        if len(a) and len(b):
            ks = ks_2samp(a, b)
            stat, p = float(ks.statistic), float(ks.pvalue)
        else:
            stat, p = 1.0, 0.0
        out["quantities"][q] = {
            "n_real": int(len(a)),
            "n_fake": int(len(b)),
            "mean_real": float(np.mean(a)) if len(a) else None,
            "sd_real": float(np.std(a)) if len(a) else None,
            "mean_fake": float(np.mean(b)) if len(b) else None,
            "sd_fake": float(np.std(b)) if len(b) else None,
            "ks_stat": stat,
            "ks_p": p,
            "passed": bool(p >= alpha),
        }
    out["clusters_per_field"] = {"real": float(rn.mean()), "fake": float(fn.mean())}
    total = None if placed is None else float(np.sum(placed))
    out["clusters_per_placed"] = None if not total else float(fn.sum() / total)
    arr = field_stack(fake, "the generated fields")
    out["zero_background"] = bool(np.all(np.isfinite(arr)) and np.all(arr >= 0))
    out["zero_fraction"] = {
        "real": float(np.mean(field_stack(real, "the real fields") == 0)),
        "fake": float(np.mean(arr == 0)),
    }
    out["alpha"] = float(alpha)
    out["passed"] = sum(v["passed"] for v in out["quantities"].values())
    out["total"] = len(QUANTITIES)
    return out


def format_comparison(result: dict) -> str:
    """The result of :func:`compare_galaxies` as a readable table."""
    q = result["quantities"]
    first = next(iter(q.values()))
    lines = [
        f"per-galaxy KS: {first['n_real']} real galaxies, {first['n_fake']} generated "
        f"(pass at p >= {result['alpha']})",
        f"{'quantity':<12}{'real mean ± sd':>24}{'generated mean ± sd':>26}{'KS D':>8}{'p':>8}",
    ]

    def ms(m, s):
        return "–" if m is None else f"{m:.3g} ± {s:.3g}"

    for name, v in q.items():
        lines.append(
            f"{name:<12}{ms(v['mean_real'], v['sd_real']):>24}"
            f"{ms(v['mean_fake'], v['sd_fake']):>26}{v['ks_stat']:>8.3f}{v['ks_p']:>8.3f}"
            + ("" if v["passed"] else "  FAIL")
        )
    c = result["clusters_per_field"]
    lines.append(f"clusters per field: real {c['real']:.2f}, generated {c['fake']:.2f}")
    if result.get("clusters_per_placed") is not None:
        lines.append(f"clusters per placed galaxy: {result['clusters_per_placed']:.3f}")
    z = result["zero_fraction"]
    lines.append(
        f"pixels exactly 0: real {100 * z['real']:.2f} %, generated {100 * z['fake']:.2f} %; "
        f"generated finite and >= 0: {result['zero_background']}"
    )
    return "\n".join(lines)
