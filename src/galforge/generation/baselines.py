"""Baselines for sparse fields (de Fremond et al.): diamonds at uniform positions.

Both baselines are fitted to a set of sparse fields (single band, background exactly 0;
:mod:`galforge.data.sparse`) and draw new fields of the same size:

* the number of galaxies of a field is drawn from the data's per-field counts;
* each galaxy's centre pixel is uniform over the field;
* each galaxy has the same fixed **diamond** shape: pixel value ``I (1 − d/(r + 1))`` at
  Manhattan distance ``d ≤ r`` from the centre (``r`` the radius in pixels, ``I`` the peak
  intensity; overlapping diamonds add).

The galaxy *size* is the radius of the diamond with the galaxy's pixel count ``npix``
(``2r² + 2r + 1 = npix``); its *intensity* is its peak pixel value.

**B1** draws ``r`` and ``I`` from normal distributions with the data's means and standard
deviations (``r`` rounded to a whole number ≥ 0, ``I`` at least the data's faintest peak).
**B2** splits the galaxies at the median radius into small and large ones, draws the
group with the data's fraction of large galaxies, then for that group ``r = r_min +
Geom(p_r) − 1`` and ``I = q · (k_min + Geom(p_I) − 1)`` (geometric on 1, 2, …, ``p`` = 1 /
(1 + the group's mean excess over its minimum), intensities in steps ``q`` = the data's
brightest peak / 255), so both match the group's means.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from galforge.errors import ConfigError, DataError

__all__ = [
    "KINDS",
    "BaselineFit",
    "diamond",
    "draw_galaxies",
    "fit_baseline",
    "radius_of",
    "sample_baseline",
    "write_baseline",
]

KINDS = ("b1", "b2")


def radius_of(npix) -> np.ndarray:
    """Radius of the diamond of ``npix`` pixels (``2r² + 2r + 1 = npix``; not rounded)."""
    n = np.maximum(np.asarray(npix, dtype=np.float64), 1.0)
    return (np.sqrt(2.0 * n - 1.0) - 1.0) / 2.0


def diamond(radius: int, peak: float) -> np.ndarray:
    """The fixed shape: ``(2r+1)²`` float32, ``peak (1 − d/(r+1))`` for ``d = |dx|+|dy| ≤ r``."""
    r = int(radius)
    ax = np.arange(-r, r + 1)
    d = np.abs(ax)[:, None] + np.abs(ax)[None, :]
    return np.where(d <= r, float(peak) * (1.0 - d / (r + 1.0)), 0.0).astype(np.float32)


def _geometric_p(values, minimum) -> float:
    excess = float(np.mean(np.asarray(values, dtype=np.float64) - float(minimum)))
    return 1.0 / (1.0 + max(excess, 0.0))


@dataclass
class BaselineFit:
    """What a baseline learnt from the data (JSON-safe through :meth:`to_dict`)."""

    kind: str
    shape: tuple[int, int]
    counts: list[int]
    radius_mean: float = 0.0
    radius_std: float = 0.0
    intensity_mean: float = 0.0
    intensity_std: float = 0.0
    intensity_min: float = 0.0
    split_radius: float = 0.0
    p_large: float = 0.0
    groups: dict = field(default_factory=dict)  # B2: {"small"|"large": {r_min, p_r, k_min, p_i}}
    intensity_step: float = 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def fit_baseline(kind: str, images, source: str = "the data") -> BaselineFit:
    """Fit baseline ``kind`` (``b1`` or ``b2``) to sparse fields (N×1×H×W or N×H×W)."""
    from galforge.data.sparse import check_zero_background, detect_sources, field_stack

    kind = str(kind).lower()
    if kind not in KINDS:
        raise ConfigError(f"baseline {kind!r}: choose one of {', '.join(KINDS)}")
    arr = field_stack(images, source)
    check_zero_background(arr, source)
    counts, npix, peak = [], [], []
    for img in arr:
        src = detect_sources(img)
        counts.append(len(src["x"]))
        npix.append(src["npix"])
        peak.append(src["peak"])
    npix, peak = np.concatenate(npix), np.concatenate(peak)
    if npix.size == 0:
        raise DataError(f"{source}: no galaxy (non-zero pixel) in any image")
    r = radius_of(npix)
    fit = BaselineFit(
        kind,
        (int(arr.shape[1]), int(arr.shape[2])),
        [int(c) for c in counts],
        radius_mean=float(r.mean()),
        radius_std=float(r.std()),
        intensity_mean=float(peak.mean()),
        intensity_std=float(peak.std()),
        intensity_min=float(peak.min()),
    )
    if kind == "b2":
        ri = np.rint(r)
        split = float(np.median(ri))
        large = ri > split
        step = float(peak.max()) / 255.0 if peak.max() > 0 else 1.0
        k = np.maximum(np.rint(peak / step), 1.0)
        groups = {}
        for name, sel in (("small", ~large), ("large", large)):
            if not sel.any():
                continue
            groups[name] = {
                "r_min": float(ri[sel].min()),
                "p_r": _geometric_p(ri[sel], ri[sel].min()),
                "k_min": float(k[sel].min()),
                "p_i": _geometric_p(k[sel], k[sel].min()),
            }
        fit.split_radius, fit.p_large = split, float(large.mean())
        fit.groups, fit.intensity_step = groups, step
    return fit


def draw_galaxies(
    fit: BaselineFit, m: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Radii (whole pixels) and peak intensities of ``m`` galaxies drawn from ``fit``."""
    m = int(m)
    if fit.kind == "b1":
        r = np.maximum(np.rint(rng.normal(fit.radius_mean, fit.radius_std, m)), 0.0)
        i = np.maximum(rng.normal(fit.intensity_mean, fit.intensity_std, m), fit.intensity_min)
        return r.astype(np.int64), i
    names = sorted(fit.groups)
    if len(names) == 2:
        large = rng.random(m) < fit.p_large
    else:
        large = np.full(m, names == ["large"])
    r, k = np.zeros(m), np.zeros(m)
    for name, sel in (("small", ~large), ("large", large)):
        if not sel.any():
            continue
        g = fit.groups[name]
        r[sel] = g["r_min"] + rng.geometric(g["p_r"], int(sel.sum())) - 1
        k[sel] = g["k_min"] + rng.geometric(g["p_i"], int(sel.sum())) - 1
    return r.astype(np.int64), k * fit.intensity_step


def sample_baseline(fit: BaselineFit, n: int, seed: int = 0) -> np.ndarray:
    """``n`` fields (float32 N×1×H×W) drawn from ``fit``; the same seed gives the same fields."""
    if int(n) < 0:
        raise ConfigError(f"-n {n}: the number of images must be >= 0")
    rng = np.random.default_rng([int(seed), 12])
    h, w = fit.shape
    out = np.zeros((int(n), 1, h, w), dtype=np.float32)
    for i in range(int(n)):
        m = int(rng.choice(fit.counts)) if fit.counts else 0
        ys, xs = rng.integers(0, h, m), rng.integers(0, w, m)
        radii, peaks = draw_galaxies(fit, m, rng)
        for y, x, r, p in zip(ys, xs, radii, peaks, strict=True):
            d = diamond(int(r), float(p))
            y0, x0 = int(y) - int(r), int(x) - int(r)
            fy0, fx0 = max(y0, 0), max(x0, 0)
            fy1, fx1 = min(y0 + d.shape[0], h), min(x0 + d.shape[1], w)
            out[i, 0, fy0:fy1, fx0:fx1] += d[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return out


def write_baseline(
    out, images: np.ndarray, fit: BaselineFit, *, seed: int, units: str, band: str, source: str
) -> list[Path]:
    """Write ``baseline_000000.fits``… (2-D float32), ``baseline.json`` (the fit) and the
    ``grid.png`` preview into ``out``; return the FITS paths."""
    import json

    from astropy.io import fits

    from galforge import __version__, fitsheader
    from galforge.data.display import save_grid
    from galforge.fileio import atomic_write_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        hdr = fits.Header()
        fitsheader.unit_cards(hdr, units)
        fitsheader.band_cards(hdr, [band])
        fitsheader.date_cards(hdr)
        hdr["BASELINE"] = (fit.kind.upper(), "sparse-field baseline (diamonds)")
        hdr["SEED"] = (int(seed), "galforge baseline seed")
        hdr["INDEX"] = (int(i), "image index for this seed")
        hdr["CREATOR"] = (f"galforge {__version__}", "software version that wrote this file")
        hdr.add_comment("SYNTHETIC IMAGE: a baseline of diamonds at uniform positions fitted")
        hdr.add_comment(f"to {source}; not an observation.")
        fitsheader.wcs_cards(hdr, img.shape[-2], img.shape[-1], None)
        buf = io.BytesIO()
        fits.PrimaryHDU(data=np.ascontiguousarray(img[0], dtype=np.float32), header=hdr).writeto(
            buf
        )
        path = out / f"baseline_{i:06d}.fits"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    info = {
        "kind": fit.kind,
        "seed": int(seed),
        "n": len(images),
        "like": source,
        "fit": fit.to_dict(),
    }
    atomic_write_bytes(out / "baseline.json", (json.dumps(info, indent=2) + "\n").encode())
    if len(images):
        save_grid(out / "grid.png", images[:16], (band,), units=units)
    return paths
