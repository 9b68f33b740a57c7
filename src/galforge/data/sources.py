"""Sources and sky of a real field: what the ``deepfield`` family learns from.

Everything here works on one field ``C×H×W`` in physical units (8-bit levels for
``builtin:hdf``, counts or nanomaggies for FITS) with ``sep``; it sits on the data floor so
that the training recipe can use it (the evaluation's photometry, which reports on fields
after the fact, lives above training).

* :func:`measure_sky` — per band background level and noise σ, the noise's spatial
  correlation (a 3×3 kernel whose autocorrelation matches the source-free pixels'), the
  correlation between bands and, for 8-bit composites, the clip and quantisation step of the
  pixels (the level and σ are then those of the Gaussian that, rounded and clipped at 0,
  gives the source-free histogram);
* :func:`detect_sources` — sources detected on the band sum (sep, 3×3 smoothing), with per
  band aperture flux and magnitude, half-light radius, ellipticity and position angle;
* :func:`cut_stamps` — one sky-subtracted stamp per source, neighbours' pixels replaced by
  sky noise;
* :func:`denoise_colours` — faint sources' colours with their measurement noise shrunk
  out (what a catalogue model should draw, before the sky's noise is added again; the
  noise's bias on sizes was measured by adding a second draw of the sky noise to the XDF
  and is below 1 % in every S/N bin, so sizes are used as measured);
* :func:`pair_correlation` / :func:`fit_thomas` — the angular two-point correlation of the
  positions and the Thomas (Neyman–Scott) cluster process fitted to it.

Pixel convention: ``x`` the column, ``y`` the row, ``(0, 0)`` the centre of the first pixel;
``pa_deg`` counter-clockwise from +x towards +y; ellipticity ``1 - b/a``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from galforge.errors import DataError

__all__ = [
    "Detection",
    "SkyStats",
    "cut_stamps",
    "denoise_colours",
    "detect_sources",
    "fit_thomas",
    "measure_sky",
    "pair_correlation",
    "thomas_w",
]

_SMOOTH = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])


@dataclass
class SkyStats:
    """The sky of a field, per band (lists of floats, JSON-safe)."""

    level: list  # background level per band (physical units)
    sigma: list  # noise σ per band
    kernel: list  # C × 3 × 3, unit L2 norm: the noise's spatial correlation
    band_corr: list  # C × C correlation of the noise between bands
    quantize: float = 0.0  # output step (1 for 8-bit levels), 0: none
    clip: list | None = None  # [lo, hi] of the pixel values, None: none
    histogram: dict = field(default_factory=dict)  # source-free pixels: {"edges", "counts"}

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "sigma": self.sigma,
            "kernel": self.kernel,
            "band_corr": self.band_corr,
            "quantize": self.quantize,
            "clip": self.clip,
        }


@dataclass
class Detection:
    """What :func:`detect_sources` found: the catalogue (dict of equal-length arrays), the
    segmentation map (0 sky, k the k-th source + 1) and the sky."""

    catalogue: dict
    segmap: np.ndarray
    sky: SkyStats
    bands: tuple


def _check(image) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise DataError(
            f"deepfield: the training field must be one C×H×W image, got shape "
            f"{x.shape}; give a single field (one file or builtin:hdf)"
        )
    if min(x.shape[1:]) < 64:
        raise DataError(
            f"deepfield: the field is {x.shape[1]}×{x.shape[2]} pixels; it needs "
            "at least 64×64 to measure its sources and sky"
        )
    return np.ascontiguousarray(np.nan_to_num(x, nan=0.0))


def _is_quantised(x: np.ndarray) -> bool:
    return bool(np.all(x == np.round(x)) and x.min() >= 0)


def _censored_gaussian(values: np.ndarray, lo: float) -> tuple[float, float]:
    """Mean and σ of the Gaussian that, rounded to integers and clipped at ``lo``, gives
    the histogram of the integer ``values`` (maximum likelihood on the binned counts)."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    v = values.astype(np.int64)
    k0 = int(lo)
    counts = np.bincount(v - k0)
    ks = np.arange(len(counts)) + k0
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826 or 1.0

    def nll(p):
        mu, log_s = p
        s = np.exp(log_s)
        upper = norm.cdf((ks + 0.5 - mu) / s)
        lower = norm.cdf((ks - 0.5 - mu) / s)
        lower[0] = 0.0  # everything below lo lands on lo
        prob = np.clip(upper - lower, 1e-300, None)
        return -float(np.sum(counts * np.log(prob)))

    res = minimize(
        nll,
        [med, np.log(mad)],
        method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000},
    )
    return float(res.x[0]), float(np.exp(res.x[1]))


def _autocorr(noise: np.ndarray, good: np.ndarray, reach: int = 2) -> np.ndarray:
    """Normalised autocorrelation ``(2r+1)×(2r+1)`` of ``noise`` over pairs of good pixels."""
    h, w = noise.shape
    out = np.zeros((2 * reach + 1, 2 * reach + 1))
    z = np.where(good, noise, 0.0)
    var = float((z * z).sum() / max(good.sum(), 1))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            a = z[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            b = z[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            ga = good[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            gb = good[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            n = max(int((ga & gb).sum()), 1)
            out[dy + reach, dx + reach] = float((a * b).sum()) / n / max(var, 1e-30)
    return out


def fit_kernel(acf: np.ndarray) -> np.ndarray:
    """A 3×3 kernel of unit L2 norm whose autocorrelation best matches ``acf`` (5×5)."""
    from scipy.optimize import least_squares
    from scipy.signal import correlate2d

    def resid(k):
        k = k.reshape(3, 3)
        k = k / max(np.sqrt((k * k).sum()), 1e-12)
        return (correlate2d(k, k, mode="full") - acf).ravel()

    k0 = np.zeros(9)
    k0[4] = 1.0
    k0 += 0.05
    res = least_squares(resid, k0)
    k = res.x.reshape(3, 3)
    k = k / np.sqrt((k * k).sum())
    if k[1, 1] < 0:
        k = -k
    return k


def measure_sky(image, source_mask: np.ndarray | None = None, *, units: str = "") -> SkyStats:
    """The sky of a ``C×H×W`` field from its source-free pixels (``source_mask`` True on
    sources; None: the pixels below the 90th percentile of the band sum)."""
    x = _check(image)
    c = x.shape[0]
    if source_mask is None:
        s = x.sum(axis=0)
        source_mask = s > np.percentile(s, 90)
    good = ~np.asarray(source_mask, bool)
    if good.sum() < 1000:
        raise DataError(
            "deepfield: fewer than 1000 source-free pixels to measure the sky on; "
            "give a larger field"
        )
    quantised = _is_quantised(x) or "8-bit" in units
    clip = None
    quantize = 0.0
    if quantised:
        quantize = 1.0
        clip = [0.0, 255.0 if x.max() <= 255 else float(x.max())]
    level, sigma = [], []
    for b in range(c):
        v = x[b][good]
        if quantised:
            mu, s = _censored_gaussian(v, clip[0])
        else:
            mu = float(np.median(v))
            s = float(np.median(np.abs(v - mu))) * 1.4826
        level.append(mu)
        sigma.append(max(s, 1e-12))
    noise = [(x[b] - level[b]) / sigma[b] for b in range(c)]
    # the noise level's outliers (faint undetected wings) weigh on the correlations: clip
    good_corr = good & np.all([np.abs(n) < 5 for n in noise], axis=0)
    kernels = [fit_kernel(_autocorr(n, good_corr)) for n in noise]
    corr = np.eye(c)
    for a in range(c):
        for b in range(a + 1, c):
            va, vb = noise[a][good_corr], noise[b][good_corr]
            r = float(np.corrcoef(va, vb)[0, 1])
            corr[a, b] = corr[b, a] = r
    hist = {}
    s = x[0][good]
    if quantised:
        counts = np.bincount(s.astype(np.int64))
        hist = {
            "edges": [float(i) - 0.5 for i in range(len(counts) + 1)],
            "counts": counts.tolist(),
        }
    else:
        counts, edges = np.histogram(s, bins=64)
        hist = {"edges": edges.tolist(), "counts": counts.tolist()}
    return SkyStats(
        level, sigma, [k.tolist() for k in kernels], corr.tolist(), quantize, clip, hist
    )


def detect_sources(
    image,
    bands,
    *,
    thresh: float = 1.5,
    minarea: int = 5,
    zeropoint: float | None = None,
    units: str = "",
    deblend_cont: float = 0.005,
) -> Detection:
    """Sources of a ``C×H×W`` field: detection on the sky-subtracted band sum smoothed with
    a 3×3 pyramidal kernel at ``thresh`` × its σ, ``minarea`` pixels.

    Fluxes are summed in a circle of radius ``6 a`` (at least 4 px) with the other sources'
    pixels left out; the half-light radius is the radius holding half of the band sum's
    flux in that circle (so flux and size describe the same light). The catalogue has
    ``x, y, flux_<band>, fluxerr_<band>`` (the sky noise's), ``mag_<band>`` (``zeropoint -
    2.5 log10 flux``, zero point 0 when none is given; NaN for a non-positive flux),
    ``flux`` (band sum), ``hlr`` (px),
    ``ellipticity``, ``pa_deg``, ``npix``.
    """
    import sep

    x = _check(image)
    bands = tuple(bands)
    c, h, w = x.shape
    det0 = x.sum(axis=0).astype(np.float64)
    bkg = sep.Background(det0, bw=64, bh=64, fw=3, fh=3)
    rough = det0 > bkg.back() + 3 * bkg.globalrms
    sky = measure_sky(x, _dilate(rough, 3), units=units)
    level = np.asarray(sky.level, np.float64)
    det = np.ascontiguousarray(
        (x - level[:, None, None].astype(np.float32)).sum(axis=0), dtype=np.float64
    )
    corr = np.asarray(sky.band_corr)
    sig = np.asarray(sky.sigma)
    err = float(np.sqrt(sig @ corr @ sig))
    objs, seg = sep.extract(
        det,
        thresh,
        err=err,
        minarea=int(minarea),
        filter_kernel=_SMOOTH,
        deblend_cont=deblend_cont,
        segmentation_map=True,
    )
    if len(objs) == 0:
        raise DataError(
            "deepfield: no sources detected in the training field; is it a deep "
            "field (sky with galaxies)?"
        )
    n = len(objs)
    cat: dict[str, np.ndarray] = {
        "x": objs["x"].astype(np.float64),
        "y": objs["y"].astype(np.float64),
    }
    a = np.maximum(objs["a"], 1e-3)
    b_ = np.maximum(objs["b"], 1e-3)
    rmax = np.clip(6.0 * a, 4.0, 0.25 * min(h, w))
    seg_ids = np.arange(1, n + 1, dtype=np.int32)
    total = np.zeros(n)
    for b, name in enumerate(bands):
        # circular aperture of radius rmax; other sources' pixels left out
        sub = np.ascontiguousarray(x[b].astype(np.float64) - level[b])
        f, _, _ = sep.sum_circle(
            sub, cat["x"], cat["y"], rmax, segmap=seg, seg_id=seg_ids, subpix=5
        )
        cat[f"flux_{name}"] = np.asarray(f, np.float64)
        total += f
    # the error of an aperture sum of correlated noise: σ √area × the kernel's sum
    area = np.pi * rmax**2
    for b, name in enumerate(bands):
        ksum = abs(float(np.sum(sky.kernel[b])))
        cat[f"fluxerr_{name}"] = float(sky.sigma[b]) * ksum * np.sqrt(area)
    zp = 0.0 if zeropoint is None else float(zeropoint)
    for name in bands:
        f = cat[f"flux_{name}"]
        with np.errstate(divide="ignore", invalid="ignore"):
            cat[f"mag_{name}"] = np.where(f > 0, zp - 2.5 * np.log10(np.where(f > 0, f, 1)), np.nan)
    cat["flux"] = total
    hlr = _half_light(det, seg, cat["x"], cat["y"], rmax)
    cat["hlr"] = np.clip(hlr, 0.3, None)
    cat["ellipticity"] = 1.0 - b_ / a
    cat["pa_deg"] = np.degrees(objs["theta"].astype(np.float64))
    cat["npix"] = objs["npix"].astype(np.float64)
    cat["rmax"] = rmax.astype(np.float64)
    return Detection(cat, seg.astype(np.int32), sky, bands)


def denoise_colours(flux: np.ndarray, err: np.ndarray, *, bins: int = 10) -> np.ndarray:
    """Per band fluxes ``N×C`` with their measurement noise shrunk out of the colours.

    A faint source's measured colour is its true colour plus noise; drawing such a source
    and adding the sky's noise again would double that noise. Sources are grouped in
    ``bins`` quantile bins of their band sum ``F`` (faint sources have their own colours);
    in each, a band fraction's departure from the bin's mean ``p_b`` is shrunk by ``s_b² /
    (s_b² + (err_b / F)²)`` (``s_b²`` the bin's intrinsic variance: measured variance less
    the mean noise variance): the posterior mean under a Gaussian colour prior. The band sum
    is kept.
    """
    flux = np.asarray(flux, np.float64)
    err = np.asarray(err, np.float64)
    total = flux.sum(1)
    good = np.nonzero(total > 0)[0]
    out = flux.copy()
    if len(good) < 2 * bins:
        return out
    order = good[np.argsort(total[good], kind="stable")]
    for chunk in np.array_split(order, bins):
        t = total[chunk, None]
        frac = flux[chunk] / t
        noise = (err[chunk] / t) ** 2
        p = frac.mean(0)
        s2 = np.maximum(frac.var(0) - noise.mean(0), 1e-6)
        new = p[None] + s2[None] / (s2[None] + noise) * (frac - p[None])
        new = new / np.clip(new.sum(1, keepdims=True), 1e-12, None)
        out[chunk] = new * t
    return out


def _half_light(det: np.ndarray, seg: np.ndarray, x, y, rmax) -> np.ndarray:
    """Half-light radius of each source in a circle of ``rmax`` on ``det``, the pixels of
    other sources blanked (a box about each source, so the cost does not grow with the
    field)."""
    import sep

    h, w = det.shape
    out = np.zeros(len(x))
    for k in range(len(x)):
        r = int(np.ceil(rmax[k])) + 2
        y0, y1 = max(0, int(y[k]) - r), min(h, int(y[k]) + r + 1)
        x0, x1 = max(0, int(x[k]) - r), min(w, int(x[k]) + r + 1)
        sub_seg = seg[y0:y1, x0:x1]
        box = np.ascontiguousarray(
            np.where((sub_seg == 0) | (sub_seg == k + 1), det[y0:y1, x0:x1], 0.0), dtype=np.float64
        )
        rad, _ = sep.flux_radius(box, [x[k] - x0], [y[k] - y0], [rmax[k]], 0.5, subpix=5)
        out[k] = float(rad[0])
    return out


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=int(r))


def cut_stamps(
    image, detection: Detection, size: int = 32, *, seed: int = 0, select=None
) -> tuple[np.ndarray, np.ndarray]:
    """Sky-subtracted stamps ``N×C×size×size`` centred on the (rounded) positions of the
    selected sources (default: all), pixels of other sources and outside the field replaced
    by sky noise (level and σ of :func:`measure_sky`, rounded and clipped as the field's own
    pixels are). Returns ``(stamps, indices)``."""
    x = _check(image)
    c, h, w = x.shape
    cat, seg, sky = detection.catalogue, detection.segmap, detection.sky
    idx = np.arange(len(cat["x"])) if select is None else np.asarray(select, np.int64)
    rng = np.random.default_rng(seed)
    level = np.asarray(sky.level, np.float32)[:, None, None]
    sigma = np.asarray(sky.sigma, np.float32)[:, None, None]
    half = size // 2
    out = np.empty((len(idx), c, size, size), np.float32)
    for n, k in enumerate(idx):
        cx, cy = int(round(cat["x"][k])), int(round(cat["y"][k]))
        y0, x0 = cy - half, cx - half
        fill = level + sigma * rng.standard_normal((c, size, size)).astype(np.float32)
        if sky.quantize:
            fill = np.round(fill / sky.quantize) * sky.quantize
        if sky.clip:
            fill = np.clip(fill, *sky.clip)
        stamp = fill.copy()
        ys, ye = max(y0, 0), min(y0 + size, h)
        xs, xe = max(x0, 0), min(x0 + size, w)
        if ys < ye and xs < xe:
            own = seg[ys:ye, xs:xe]
            keep = (own == 0) | (own == k + 1)
            win = x[:, ys:ye, xs:xe]
            stamp[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = np.where(
                keep[None], win, fill[:, ys - y0 : ye - y0, xs - x0 : xe - x0]
            )
        out[n] = stamp - level
    return out, idx


def pair_correlation(x, y, shape, bins=None, *, seed: int = 0, randoms: int = 4):
    """The two-point correlation ``w(r)`` of positions in a ``shape`` (h, w) field
    (Landy–Szalay against ``randoms`` × as many uniform points). Returns
    ``(r_centres, w, dd_counts)``."""
    from scipy.spatial import cKDTree

    pts = np.stack([np.asarray(x, float), np.asarray(y, float)], 1)
    n = len(pts)
    if bins is None:
        bins = np.geomspace(2.0, min(shape) / 4.0, 13)
    bins = np.asarray(bins, float)
    rng = np.random.default_rng(seed)
    nr = max(randoms * n, 200)
    rand = np.stack([rng.uniform(0, shape[1], nr), rng.uniform(0, shape[0], nr)], 1)
    td, tr = cKDTree(pts), cKDTree(rand)
    dd = np.diff(td.count_neighbors(td, bins)).astype(float)
    rr = np.diff(tr.count_neighbors(tr, bins)).astype(float)
    dr = np.diff(td.count_neighbors(tr, bins)).astype(float)
    ddn = dd / max(n * (n - 1), 1)
    rrn = rr / max(nr * (nr - 1), 1)
    drn = dr / max(n * nr, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(rrn > 0, (ddn - 2 * drn + rrn) / rrn, 0.0)
    centres = np.sqrt(bins[1:] * bins[:-1])
    return centres, w, dd


def thomas_w(r, kappa: float, sigma: float) -> np.ndarray:
    """The pair correlation ``g(r) − 1`` of a Thomas process (parent density ``kappa`` per
    px², children Gaussian-scattered with σ px about their parent)."""
    r = np.asarray(r, float)
    s2 = float(sigma) ** 2
    return np.exp(-r * r / (4 * s2)) / (4 * np.pi * float(kappa) * s2)


def fit_thomas(r, w, dd, density: float, *, r_min: float = 6.0) -> dict:
    """The Thomas process matching ``w(r)`` (fitted where ``r >= r_min``: closer pairs are
    merged by deblending) at the catalogue's ``density`` (sources per px²).

    Returns ``{"kappa", "mu", "sigma", "clustered", "chi2_thomas", "chi2_poisson"}``; a field
    whose ``w`` is described by clustering no better than by 0 (χ² improved by less than 4,
    the two parameters' worth) gets ``clustered = False`` (a Poisson process).
    """
    from scipy.optimize import least_squares

    r, w, dd = (np.asarray(v, float) for v in (r, w, dd))
    use = (r >= r_min) & (dd > 0)
    if use.sum() < 3:
        return {
            "kappa": density,
            "mu": 1.0,
            "sigma": 1.0,
            "clustered": False,
            "chi2_thomas": 0.0,
            "chi2_poisson": 0.0,
        }
    rr, ww = r[use], w[use]
    err = (1.0 + np.abs(ww)) / np.sqrt(dd[use])  # Poisson errors of the pair counts

    def resid(p):
        log_amp, log_s = p
        s = np.exp(log_s)
        return (np.exp(log_amp) * np.exp(-rr * rr / (4 * s * s)) - ww) / err

    best = None
    for s0 in (5.0, 15.0, 40.0):
        res = least_squares(resid, [np.log(max(ww.max(), 1e-3)), np.log(s0)])
        if best is None or res.cost < best.cost:
            best = res
    amp, s = float(np.exp(best.x[0])), float(np.exp(best.x[1]))
    kappa = 1.0 / (4 * np.pi * amp * s * s)
    mu = density / kappa
    chi2_t = 2 * float(best.cost)
    chi2_p = float(np.sum((ww / err) ** 2))
    clustered = bool(chi2_t < chi2_p - 4.0)
    if not clustered:
        kappa, mu = density, 1.0
    return {
        "kappa": float(kappa),
        "mu": float(mu),
        "sigma": float(s),
        "clustered": clustered,
        "chi2_thomas": chi2_t,
        "chi2_poisson": chi2_p,
    }
