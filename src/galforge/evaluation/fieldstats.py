"""Statistics of whole deep fields: sky noise, noise correlation, source clustering, truth.

Everything here works on arrays (``C×H×W`` fields in physical units, source positions in
field pixels, truth catalogues as columns) and is used by
:func:`galforge.evaluation.field_report.evaluate_fields`.

* :func:`source_mask` -- pixels covered by sources: ``sep`` segmentation of the band-merged
  image (background subtracted, 1.5 σ, 5 pixels) dilated by 2 pixels, plus non-finite pixels.
* :func:`sky_statistics` -- per band, the robust sky σ (1.4826 × MAD of the
  background-subtracted, source-free pixels) and the noise autocorrelation of those pixels
  (masked, zero-padded FFT: ``ρ(lag) = Σ m·r·m·r(·+lag) / Σ m·m(·+lag)``, normalised to
  ``ρ(0) = 1``), averaged in rings of integer radius; the *correlation length* is the radius
  at which the ring average first falls below ``1/e`` (linear interpolation between rings;
  on the central 2048×2048 px of larger fields).
  White noise has ``ρ(1) ≈ 0`` and a length of ``1 − 1/e ≈ 0.63`` px; noise smoothed by a
  Gaussian of σ px has ``2σ`` px.
* :func:`angular_correlation` -- the two-point correlation function ``w(θ)`` of source
  positions by Landy & Szalay (1993), ``(DD − 2DR + RR) / RR`` with normalised pair counts,
  against a uniform random catalogue over the field's rectangle, in logarithmic bins of
  separation (pixels), with its error: jackknife over ``g×g`` sub-areas (each left out in
  turn, ``σ² = (K−1)/K Σ (w_k − w̄)²``) or Poisson ``(1 + w)/√DD``.
* :func:`read_truth`, :func:`crossmatch`, :func:`completeness` -- a truth catalogue of the
  generated field (FITS table or CSV: ``x``, ``y`` and ``flux_<band>``/``mag_<band>``),
  one-to-one nearest matching within a radius, and the completeness and magnitude bias of
  the extraction per bin of true magnitude.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from galforge.errors import DataError, EvaluationError

__all__ = [
    "source_mask",
    "sky_statistics",
    "noise_acf",
    "separation_bins",
    "angular_correlation",
    "compare_wtheta",
    "read_truth",
    "crossmatch",
    "completeness",
]

#: ring radii (pixels) of the noise autocorrelation profile kept in the results
ACF_RADIUS = 8
#: the autocorrelation is measured on the central part of a larger field, at most this side
ACF_MAX_SIDE = 2048


def _central(resid: np.ndarray, good: np.ndarray, side: int):
    h, w = resid.shape
    y0, x0 = max((h - side) // 2, 0), max((w - side) // 2, 0)
    sl = (slice(y0, y0 + side), slice(x0, x0 + side))
    return resid[sl], good[sl]


def _sep_background(plane: np.ndarray, mask, box: int = 64):
    import sep

    h, w = plane.shape
    return sep.Background(
        np.ascontiguousarray(plane, dtype=np.float64),
        mask=mask,
        bw=min(box, w),
        bh=min(box, h),
        fw=3,
        fh=3,
    )


def source_mask(
    field_chw, *, thresh: float = 1.5, minarea: int = 5, dilate: int = 2, box: int = 64
) -> np.ndarray:
    """Boolean ``H×W`` mask of the pixels covered by sources (or not finite) in a field."""
    import sep
    from scipy import ndimage

    arr = np.asarray(field_chw, dtype=np.float64)
    bad = ~np.isfinite(arr).all(axis=0)
    det = np.where(bad, 0.0, np.nan_to_num(arr).mean(axis=0))
    bkg = _sep_background(det, bad if bad.any() else None, box)
    rms = float(bkg.globalrms)
    mask = bad.copy()
    if rms > 0:
        old = sep.get_extract_pixstack()
        sep.set_extract_pixstack(max(old, det.size))
        try:
            _, seg = sep.extract(
                np.ascontiguousarray(det - bkg.back()),
                thresh,
                err=rms,
                mask=bad if bad.any() else None,
                minarea=minarea,
                segmentation_map=True,
            )
        except Exception as exc:  # sep raises plain Exceptions on overflows
            raise EvaluationError(
                f"source masking failed ({exc}); the field may be mostly sources or constant"
            ) from exc
        finally:
            sep.set_extract_pixstack(old)
        mask |= seg > 0
    if dilate > 0:
        mask = ndimage.binary_dilation(mask, iterations=dilate)
    return mask


def noise_acf(residual: np.ndarray, good: np.ndarray, radius: int = ACF_RADIUS) -> dict:
    """Normalised autocorrelation of ``residual`` over the ``good`` pixels.

    Returns ``{"radius": [0..R], "rho": [ring means], "rho1": ρ at lag 1 (mean of the 4
    nearest lags), "corr_length": px}``."""
    r = np.where(good, residual - np.median(residual[good]), 0.0).astype(np.float64)
    m = good.astype(np.float64)
    h, w = r.shape
    shape = (2 * h, 2 * w)
    fr = np.fft.rfft2(r, shape)
    fm = np.fft.rfft2(m, shape)
    num = np.fft.irfft2(fr * np.conj(fr), shape)
    den = np.fft.irfft2(fm * np.conj(fm), shape)
    R = int(radius)
    lags = np.arange(-R, R + 1)
    sub_num = num[np.ix_(lags % shape[0], lags % shape[1])]
    sub_den = den[np.ix_(lags % shape[0], lags % shape[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        acf = np.where(sub_den > 0.5, sub_num / np.maximum(sub_den, 1e-12), np.nan)
    acf = acf / acf[R, R] if np.isfinite(acf[R, R]) and acf[R, R] > 0 else acf * np.nan
    dy, dx = np.meshgrid(lags, lags, indexing="ij")
    ring = np.rint(np.hypot(dy, dx)).astype(int)
    prof = np.array([np.nanmean(acf[ring == k]) for k in range(R + 1)])
    rho1 = float(np.nanmean([acf[R - 1, R], acf[R + 1, R], acf[R, R - 1], acf[R, R + 1]]))
    length = math.nan
    target = 1.0 / math.e
    for k in range(1, R + 1):
        if prof[k] < target:
            a, b = prof[k - 1], prof[k]
            length = (k - 1) + (a - target) / (a - b) if a != b else float(k)
            break
    else:
        length = float(R) if np.isfinite(prof).all() else math.nan
    return {
        "radius": list(range(R + 1)),
        "rho": prof.tolist(),
        "rho1": rho1,
        "corr_length": float(length),
    }


def sky_statistics(field_chw, bands: Sequence[str], mask: np.ndarray, *, box: int = 64) -> dict:
    """Per band: ``{"sigma", "median", "n_pixels", "corr_length", "rho1", "acf": {...}}``
    from the source-free pixels (``~mask``) of the background-subtracted band."""
    arr = np.asarray(field_chw, dtype=np.float64)
    good = ~mask & np.isfinite(arr).all(axis=0)
    n = int(good.sum())
    if n < 100:
        raise EvaluationError(
            f"only {n} source-free pixels in the field; the sky cannot be "
            "measured (is the field all sources, or tiny?)"
        )
    out = {}
    for c, band in enumerate(bands):
        plane = np.where(good, arr[c], 0.0)
        bkg = _sep_background(plane, ~good, box)
        resid = plane - bkg.back()
        vals = resid[good]
        med = float(np.median(vals))
        sigma = 1.4826 * float(np.median(np.abs(vals - med)))
        if sigma == 0.0:  # quantised data with most sky pixels on one level
            sigma = float(np.std(vals))
        acf = noise_acf(*_central(resid, good, ACF_MAX_SIDE))
        out[str(band)] = {
            "sigma": sigma,
            "median": float(np.median(arr[c][good])),
            "n_pixels": n,
            "corr_length": acf["corr_length"],
            "rho1": acf["rho1"],
            "acf": {"radius": acf["radius"], "rho": acf["rho"]},
        }
    return out


# ---------------------------------------------------------------------------- clustering


def separation_bins(
    shape, n_bins: int = 8, theta_min: float = 5.0, theta_max: float | None = None
) -> np.ndarray:
    """Logarithmic bin edges (pixels) of ``w(θ)`` over the scales a field of ``shape``
    (``H, W``) holds: ``theta_min`` to a quarter of the shorter side."""
    h, w = int(shape[-2]), int(shape[-1])
    hi = float(theta_max) if theta_max else min(h, w) / 4.0
    if not hi > theta_min:
        raise EvaluationError(
            f"field {h}×{w} too small for w(θ): the largest scale "
            f"{hi:.1f} px is below the smallest {theta_min} px"
        )
    return np.geomspace(theta_min, hi, n_bins + 1)


def _cum_pairs(a, b, edges) -> np.ndarray:
    """Ordered pairs (i in a, j in b) with separation ≤ each edge; ``a``/``b`` are trees."""
    if a is None or b is None:
        return np.zeros(len(edges))
    return np.asarray(a.count_neighbors(b, edges), dtype=np.float64)


def _cells(xy: np.ndarray, shape, grid: int) -> np.ndarray:
    h, w = shape
    cx = np.clip(((xy[:, 0] + 0.5) / w * grid).astype(int), 0, grid - 1)
    cy = np.clip(((xy[:, 1] + 0.5) / h * grid).astype(int), 0, grid - 1)
    return cy * grid + cx


def _ls(dd, dr, rr, nd, nr) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ddn = dd / (nd * (nd - 1.0))
        drn = dr / (nd * nr)
        rrn = rr / (nr * (nr - 1.0))
        return np.where(rr > 0, (ddn - 2.0 * drn + rrn) / rrn, np.nan)


def angular_correlation(
    x,
    y,
    shape,
    *,
    edges=None,
    n_bins: int = 8,
    seed: int = 0,
    randoms_per_source: int = 10,
    max_randoms: int = 20000,
    jackknife: int = 4,
) -> dict:
    """Landy–Szalay ``w(θ)`` of positions ``(x, y)`` in a field of ``shape`` (``H, W``).

    Returns ``{"edges", "centres", "w", "sigma", "sigma_poisson", "sigma_jackknife",
    "error", "dd", "n", "n_random"}`` (lists per bin; pixels).  ``error`` says which σ is
    used: ``"jackknife"`` (``jackknife``² sub-areas, at least 8 of them holding sources and
    50 sources) or ``"poisson"``."""
    from scipy.spatial import cKDTree

    h, w = int(shape[-2]), int(shape[-1])
    xy = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    edges = separation_bins((h, w), n_bins) if edges is None else np.asarray(edges, float)
    nd = len(xy)
    out = {"edges": edges.tolist(), "centres": np.sqrt(edges[1:] * edges[:-1]).tolist(), "n": nd}
    nb = len(edges) - 1
    if nd < 3:
        nan = [math.nan] * nb
        return {
            **out,
            "w": nan,
            "sigma": nan,
            "sigma_poisson": nan,
            "sigma_jackknife": nan,
            "error": "none",
            "dd": [0] * nb,
            "n_random": 0,
        }
    rng = np.random.default_rng(seed)
    nr = int(min(max(randoms_per_source * nd, 2000), max_randoms))
    rxy = np.column_stack([rng.uniform(-0.5, w - 0.5, nr), rng.uniform(-0.5, h - 0.5, nr)])
    td, tr = cKDTree(xy), cKDTree(rxy)
    dd = _cum_pairs(td, td, edges)
    dr = _cum_pairs(td, tr, edges)
    rr = _cum_pairs(tr, tr, edges)
    w_all = _ls(np.diff(dd), np.diff(dr), np.diff(rr), nd, nr)
    dd_bin = np.diff(dd) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        sig_p = np.where(dd_bin > 0, (1.0 + w_all) / np.sqrt(dd_bin), np.nan)
    # delete-one jackknife: pair counts without the points of sub-area k
    cd, cr = _cells(xy, (h, w), jackknife), _cells(rxy, (h, w), jackknife)
    wk = []
    for k in range(jackknife * jackknife):
        dk, rk = xy[cd == k], rxy[cr == k]
        if len(dk) == 0:
            continue
        tdk = cKDTree(dk)
        trk = cKDTree(rk) if len(rk) else None
        ndk, nrk = nd - len(dk), nr - len(rk)
        if ndk < 2 or nrk < 2:
            continue
        ddk = dd - 2 * _cum_pairs(tdk, td, edges) + _cum_pairs(tdk, tdk, edges)
        drk = (
            dr
            - _cum_pairs(tdk, tr, edges)
            - _cum_pairs(td, trk, edges)
            + _cum_pairs(tdk, trk, edges)
        )
        rrk = rr - 2 * _cum_pairs(trk, tr, edges) + _cum_pairs(trk, trk, edges)
        wk.append(_ls(np.diff(ddk), np.diff(drk), np.diff(rrk), ndk, nrk))
    sig_j = np.full(nb, np.nan)
    if len(wk) >= 2:
        arr = np.array(wk)
        kk = len(wk)
        with np.errstate(invalid="ignore"):
            sig_j = np.sqrt((kk - 1) / kk * np.nansum((arr - np.nanmean(arr, 0)) ** 2, 0))
    use_jk = len(wk) >= 8 and nd >= 50
    sigma = sig_j if use_jk else sig_p
    return {
        **out,
        "w": w_all.tolist(),
        "sigma": sigma.tolist(),
        "sigma_poisson": sig_p.tolist(),
        "sigma_jackknife": sig_j.tolist(),
        "error": "jackknife" if use_jk else "poisson",
        "dd": dd_bin.tolist(),
        "n_random": nr,
    }


def compare_wtheta(real: dict, fake: dict, *, z: float = 2.0) -> dict:
    """Per bin, is the generated ``w(θ)`` inside the real one's ``z``σ band (σ² = σ_real² +
    σ_generated², both estimates being noisy)?  Returns ``{"within": [bool|None],
    "fraction": fraction of usable bins within, "n_bins": usable bins, "z": z}``; a bin is
    usable when both ``w`` and both σ are finite and positive."""
    wr, wf = np.asarray(real["w"], float), np.asarray(fake["w"], float)
    sr, sf = np.asarray(real["sigma"], float), np.asarray(fake["sigma"], float)
    s = np.sqrt(sr**2 + sf**2)
    ok = np.isfinite(wr) & np.isfinite(wf) & np.isfinite(s) & (s > 0)
    within = [
        bool(abs(a - b) <= z * c) if good else None
        for a, b, c, good in zip(wr, wf, s, ok, strict=True)
    ]
    n = int(ok.sum())
    frac = float(np.mean([v for v in within if v is not None])) if n else math.nan
    return {"within": within, "fraction": frac, "n_bins": n, "z": z}


# ---------------------------------------------------------------------------- truth


def read_truth(path) -> dict[str, np.ndarray]:
    """Read a truth catalogue (FITS binary table or CSV) into ``{column: array}``.

    Needs ``x`` and ``y`` (field pixels, (0, 0) the centre of the first pixel); every other
    numeric column is kept.  Raises :class:`DataError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"--truth {p}: no such file; pass the truth catalogue (FITS or CSV) "
            "written beside the generated field"
        )
    cols: dict[str, np.ndarray] = {}
    if p.suffix.lower() in (".fits", ".fit", ".fts") or p.name.lower().endswith(".fits.gz"):
        from astropy.table import Table

        try:
            tab = Table.read(p)
        except Exception as exc:
            raise DataError(f"--truth {p}: not a readable FITS table ({exc})") from exc
        for name in tab.colnames:
            try:
                cols[name] = np.asarray(tab[name], dtype=np.float64)
            except (TypeError, ValueError):
                continue
    else:
        try:
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"--truth {p}: not a readable CSV file ({exc})") from exc
        names = list(rows[0]) if rows else []
        for name in names:
            try:
                cols[name] = np.array(
                    [float(r[name]) if r[name] not in ("", None) else math.nan for r in rows]
                )
            except (TypeError, ValueError):
                continue
    missing = [c for c in ("x", "y") if c not in cols]
    if missing:
        raise DataError(
            f"--truth {p}: no column {' or '.join(missing)}; a truth catalogue "
            f"needs x and y in field pixels (has: {', '.join(cols) or 'nothing'})"
        )
    if len(cols["x"]) == 0:
        raise DataError(f"--truth {p}: the catalogue has no rows")
    return cols


def crossmatch(truth_xy: np.ndarray, found_xy: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one nearest matches within ``radius``: for each truth source the index of its
    detection, or -1.  Closest pairs are matched first."""
    from scipy.spatial import cKDTree

    match = np.full(len(truth_xy), -1, dtype=np.int64)
    if len(truth_xy) == 0 or len(found_xy) == 0:
        return match
    pairs = cKDTree(truth_xy).sparse_distance_matrix(
        cKDTree(found_xy), radius, output_type="ndarray"
    )
    if len(pairs) == 0:
        return match
    order = np.argsort(pairs["v"], kind="stable")
    used = np.zeros(len(found_xy), dtype=bool)
    for i, j in zip(pairs["i"][order], pairs["j"][order], strict=True):
        if match[i] < 0 and not used[j]:
            match[i] = j
            used[j] = True
    return match


def _crossing(centres, frac, level: float) -> float | None:
    """Faintest magnitude before the completeness first falls below ``level`` (interpolated),
    scanning from bright to faint; ``None`` when it never does."""
    prev = None
    for c, f in zip(centres, frac, strict=True):
        if f is None or not np.isfinite(f):
            continue
        if f < level:
            if prev is None:
                return float(c)
            (c0, f0) = prev
            return float(c0 + (f0 - level) / (f0 - f) * (c - c0)) if f0 != f else float(c)
        prev = (c, f)
    return None


def completeness(
    true_mag: np.ndarray, matched: np.ndarray, measured_mag: np.ndarray, *, bin_width: float = 0.5
) -> dict:
    """Completeness and magnitude bias per bin of true magnitude.

    ``matched`` is a boolean per truth source, ``measured_mag`` the extracted magnitude of
    its match (NaN when unmatched).  Returns ``{"edges", "centres", "n_true", "n_found",
    "completeness", "dmag_median", "dmag_p16", "dmag_p84", "mag_90", "mag_50"}`` (Δmag =
    measured − true)."""
    tm = np.asarray(true_mag, dtype=np.float64)
    ok = np.isfinite(tm)
    tm, matched, mm = tm[ok], np.asarray(matched, bool)[ok], np.asarray(measured_mag, float)[ok]
    if tm.size == 0:
        raise EvaluationError("the truth catalogue has no finite magnitude in this band")
    lo = math.floor(tm.min() / bin_width) * bin_width
    hi = math.ceil(tm.max() / bin_width) * bin_width + bin_width
    edges = np.arange(lo, hi + 1e-9, bin_width)
    idx = np.clip(np.digitize(tm, edges) - 1, 0, len(edges) - 2)
    out = {
        k: [] for k in ("n_true", "n_found", "completeness", "dmag_median", "dmag_p16", "dmag_p84")
    }
    for b in range(len(edges) - 1):
        sel = idx == b
        nt, nf = int(sel.sum()), int((sel & matched).sum())
        out["n_true"].append(nt)
        out["n_found"].append(nf)
        out["completeness"].append(nf / nt if nt else None)
        d = (mm - tm)[sel & matched & np.isfinite(mm)]
        if d.size:
            p16, med, p84 = np.percentile(d, [16, 50, 84])
            out["dmag_median"].append(float(med))
            out["dmag_p16"].append(float(p16))
            out["dmag_p84"].append(float(p84))
        else:
            for k in ("dmag_median", "dmag_p16", "dmag_p84"):
                out[k].append(None)
    centres = (0.5 * (edges[1:] + edges[:-1])).tolist()
    return {
        "edges": edges.tolist(),
        "centres": centres,
        **out,
        "mag_90": _crossing(centres, out["completeness"], 0.9),
        "mag_50": _crossing(centres, out["completeness"], 0.5),
        "n_true_total": int(tm.size),
        "n_found_total": int(matched.sum()),
    }
