"""The degradation ladder of the realism scorer: damaged versions of real sparse fields with
known realism scores, so that fitting and predicting run on data made offline."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from galforge.data.sparse import check_zero_background as check_sparse_background
from galforge.errors import ConfigError, DataError
from galforge.evaluation.realism_features import as_planes, label_galaxies


@dataclass(frozen=True)
class Rung:
    """One step of the degradation ladder: its score, a name, and the damage done, in order.

    Damage steps (``(kind, options)``):

    * ``("blur", {"sigma": s})`` -- Gaussian blur of ``s`` pixels (zero outside the image);
    * ``("noise", {"sigma_ln": s})`` -- every non-zero pixel times a log-normal factor
      ``exp(s·N(0,1) − s²/2)`` (mean 1, positive, zero background kept);
    * ``("shuffle", {})`` -- each galaxy's pixel values permuted among its own pixels;
    * ``("diamonds", {"fraction": f, "fixed": b})`` -- a fraction ``f`` of the galaxies
      (chosen at random; ``f·n`` rounded half up, at least one) replaced by a flat diamond ``|dx| + |dy| ≤ r`` at their flux-weighted
      centre (moved inward when the diamond would cross the image border), with the galaxy's
      area and total flux, or (``fixed``) every diamond with the image's median galaxy area
      and median flux;
    * ``("move", {"fraction": f})`` -- a fraction ``f`` of the galaxies cut out and pasted at
      uniformly drawn positions (overlaps add).
    """

    score: float
    name: str
    steps: tuple[tuple[str, dict], ...] = ()

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "name": self.name,
            "steps": [[kind, dict(opts)] for kind, opts in self.steps],
        }


#: the default ladder: 8 = real, down to 0 = fixed diamonds at uniform positions
DEFAULT_LADDER = (
    Rung(8, "real"),
    Rung(7, "blur1", (("blur", {"sigma": 1.0}),)),
    Rung(6, "blur2", (("blur", {"sigma": 2.0}),)),
    Rung(5, "noise", (("noise", {"sigma_ln": 0.5}),)),
    Rung(4, "shuffled", (("shuffle", {}),)),
    Rung(3, "half-diamonds", (("diamonds", {"fraction": 0.5, "fixed": False}),)),
    Rung(2, "diamonds", (("diamonds", {"fraction": 1.0, "fixed": False}),)),
    Rung(
        1,
        "diamonds-uniform",
        (("diamonds", {"fraction": 1.0, "fixed": False}), ("move", {"fraction": 1.0})),
    ),
    Rung(
        0,
        "fixed-diamonds-uniform",
        (("diamonds", {"fraction": 1.0, "fixed": True}), ("move", {"fraction": 1.0})),
    ),
)


def _clusters(plane: np.ndarray):
    """``(slices, masks)`` of the galaxies (connected non-zero clusters) of ``plane``."""
    from scipy import ndimage

    lab, n = label_galaxies(plane)
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            out.append((sl, lab[sl] == k))
    return out


def _diamond(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (np.abs(yy) + np.abs(xx)) <= radius


def _radius_for_area(area: float) -> int:
    # a diamond of radius r covers 2r² + 2r + 1 pixels
    r = (-2 + np.sqrt(4 - 8 * (1 - area))) / 4 if area > 1 else 0.0
    return int(max(0, round(r)))


def _paste(out: np.ndarray, stamp: np.ndarray, y0: int, x0: int) -> None:
    """Add ``stamp`` with its top-left corner at ``(y0, x0)``, clipped to ``out``."""
    h, w = stamp.shape
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(out.shape[0], y0 + h), min(out.shape[1], x0 + w)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] += stamp[ys - y0 : ye - y0, xs - x0 : xe - x0]


def _pick(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    # half up, and at least one galaxy when the fraction is positive
    k = min(n, max(int(np.floor(float(fraction) * n + 0.5)), int(fraction > 0 and n > 0)))
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.permutation(n)[:k]] = True
    return chosen


def _diamonds(plane, rng, fraction: float = 1.0, fixed: bool = False) -> np.ndarray:
    cl = _clusters(plane)
    if not cl:
        return plane
    areas = np.array([m.sum() for _, m in cl], dtype=np.float64)
    fluxes = np.array([plane[sl][m].sum() for sl, m in cl])
    chosen = _pick(len(cl), fraction, rng)
    out = plane.copy()
    for k, (sl, m) in enumerate(cl):
        if not chosen[k]:
            continue
        sub = plane[sl] * m
        out[sl][m] -= plane[sl][m]
        area, flux = (np.median(areas), np.median(fluxes)) if fixed else (areas[k], fluxes[k])
        r = _radius_for_area(area)
        shape = _diamond(r)
        wsum = sub.sum()
        yy, xx = np.mgrid[sl]
        if wsum > 0:
            cy, cx = (yy * sub).sum() / wsum, (xx * sub).sum() / wsum
        else:
            cy, cx = yy[m].mean(), xx[m].mean()
        # centred on the galaxy, moved inward just enough to lie inside the image
        cy = int(np.clip(round(cy), r, max(r, plane.shape[0] - 1 - r)))
        cx = int(np.clip(round(cx), r, max(r, plane.shape[1] - 1 - r)))
        _paste(out, shape * (flux / shape.sum()), cy - r, cx - r)
    return out


def _move(plane, rng, fraction: float = 1.0) -> np.ndarray:
    cl = _clusters(plane)
    chosen = _pick(len(cl), fraction, rng)
    out = plane.copy()
    for k, (sl, m) in enumerate(cl):
        if not chosen[k]:
            continue
        stamp = plane[sl] * m
        out[sl][m] -= plane[sl][m]
        h, w = stamp.shape
        y0 = int(rng.integers(0, max(1, plane.shape[0] - h + 1)))
        x0 = int(rng.integers(0, max(1, plane.shape[1] - w + 1)))
        _paste(out, stamp, y0, x0)
    out[np.abs(out) < 1e-12 * max(1.0, float(np.abs(plane).max()))] = 0.0
    return out


def _shuffle(plane, rng) -> np.ndarray:
    out = plane.copy()
    for sl, m in _clusters(plane):
        vals = out[sl][m]
        out[sl][m] = vals[rng.permutation(vals.size)]
    return out


def _blur(plane, rng, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(plane, float(sigma), mode="constant")


def _noise(plane, rng, sigma_ln: float) -> np.ndarray:
    s = float(sigma_ln)
    factor = np.exp(s * rng.standard_normal(plane.shape) - s * s / 2)
    return np.where(plane != 0, plane * factor, 0.0)


_DAMAGE = {
    "blur": _blur,
    "noise": _noise,
    "shuffle": _shuffle,
    "diamonds": _diamonds,
    "move": _move,
}


def degrade(plane, steps: Sequence[tuple[str, dict]], rng: np.random.Generator) -> np.ndarray:
    """Apply the damage ``steps`` (see :class:`Rung`) to one ``H×W`` plane, in order."""
    out = np.asarray(plane, dtype=np.float64)
    for kind, opts in steps:
        if kind not in _DAMAGE:
            raise ConfigError(f"unknown ladder damage {kind!r}; use one of {', '.join(_DAMAGE)}")
        out = _DAMAGE[kind](out, rng, **opts)
    return out


def check_zero_background(planes, *, what: str = "the images") -> None:
    """Raise :class:`DataError` unless the planes (band means) look like galaxies on an
    exactly-0 sky: the rule of :func:`galforge.data.sparse.check_zero_background` (finite, a
    fifth of the pixels 0, no image without a 0), and no image without a galaxy."""
    x = as_planes(planes)
    check_sparse_background(
        x,
        what,
        fix="the ladder needs galaxies on a zero background (pass --threshold T to set "
        "pixels with |value| <= T to 0)",
    )
    blank = [i for i, p in enumerate(x) if not np.any(p)]
    if blank:
        raise DataError(
            f"{what}: image(s) {blank[:5]} hold no galaxy (every pixel is 0); leave them out"
        )


def degradation_ladder(
    images,
    *,
    rungs: Sequence[Rung] = DEFAULT_LADDER,
    seed: int = 0,
    threshold: float = 0.0,
    what: str = "the images",
) -> Iterator[tuple[int, Rung, np.ndarray]]:
    """Degraded versions of every image, with known scores: yields ``(source index, rung,
    H×W float32 plane)`` for each image and each rung (the source's band mean; pixels with
    ``|value| <= threshold`` set to 0 first).  The draws of image ``i``, rung ``j`` come from
    ``numpy.random.default_rng([seed, i, j])``, so the ladder is reproducible from the seed.
    """
    x = as_planes(images)
    if threshold > 0:
        x = np.where(np.abs(x) <= threshold, 0.0, x)
    check_zero_background(x, what=what)
    for i, plane in enumerate(x):
        for j, rung in enumerate(rungs):
            rng = np.random.default_rng([int(seed), i, j])
            yield i, rung, degrade(plane, rung.steps, rng).astype(np.float32)
