"""Data sets available offline: GalSim parametric galaxies and the Hubble eXtreme Deep Field.

* :func:`galsim_galaxies` — Sérsic bulge + exponential disk galaxies convolved with a PSF, with
  Gaussian or correlated noise, in any number of bands, with an exact truth catalogue.
* :func:`hdf_field` — the Hubble XDF colour image bundled with scikit-image, as one field.
* :func:`hdf_stamps` — stamps centred on the sources ``sep`` detects in that field.
* :func:`sparse_fields` — single-band fields of GalSim galaxies at random places on a
  background of exactly 0 (no noise), each galaxy a connected cluster of non-zero pixels,
  with a truth catalogue per field.

Spec strings (``builtin:galsim?n=500&size=64&seed=3``) are parsed by :func:`from_spec`.

Shape conventions of the truth catalogue (used by the evaluation code as ground truth)
--------------------------------------------------------------------------------------
Array axes are ``[row, column]`` = ``[y, x]``; ``x`` grows with the column index and ``y``
with the row index (the FITS/ds9 view, i.e. an image shown with ``origin="lower"``).

* ``q = b/a`` is the axis ratio of every isophote of the intrinsic (pre-PSF) galaxy; bulge
  and disk share it, so it is exact for the composite profile.
* ``ellipticity = 1 − q``.
* ``pa_deg`` is the position angle of the major axis in degrees, counter-clockwise from the
  ``+x`` axis (the column direction) towards ``+y``, in ``[0, 180)``.
* ``e1 = ε cos 2PA``, ``e2 = ε sin 2PA`` with ``ε = 1 − q``; ``g1``, ``g2`` are the same
  with the reduced shear ``g = (1 − q)/(1 + q)`` (GalSim's convention).
* ``hlr`` (arcsec) and ``hlr_pix`` are the half-light radius of the whole intrinsic profile
  in the reference band (other bands mix bulge and disk differently), circularised (``sqrt(a·b)``: the shear keeps area); the semi-major half-light axis is
  ``hlr / sqrt(q)``.  ``hlr_bulge``/``hlr_disk`` are the components' radii.
* ``x``, ``y`` are the 0-based pixel coordinates of the profile centre (``(size−1)/2`` plus
  the random offset, if any).
* ``flux`` is the total flux in the reference band ``ref_band`` (counts), ``flux_stamp``
  the part of it that falls inside the stamp (the sum of the noiseless reference-band stamp;
  de Vaucouleurs wings reach beyond small stamps); ``flux_<band>`` the total flux in every band, ``bulge_frac`` the bulge fraction of the flux in the
  reference band, ``sersic_n`` the bulge Sérsic index, ``snr`` the matched-filter S/N
  ``sqrt(Σ I²)/σ`` of the reference-band noiseless stamp, ``noise_sigma`` the per-pixel
  noise standard deviation (counts, all bands).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import numpy as np

from galforge.data.imageset import ImageSet, ReadReport
from galforge.errors import ConfigError, DataError
from galforge.options import Options

# Flux ratios (bulge, disk) relative to the r band for common filters: red bulges, bluer disks.
_DEFAULT_COLOURS = {
    "u": (0.15, 0.45),
    "g": (0.45, 0.75),
    "r": (1.0, 1.0),
    "i": (1.35, 1.15),
    "z": (1.6, 1.25),
    "y": (1.75, 1.3),
}

_TRUTH_KEYS = (
    "id",
    "x",
    "y",
    "flux",
    "flux_stamp",
    "ref_band",
    "hlr",
    "hlr_pix",
    "hlr_bulge",
    "hlr_disk",
    "q",
    "ellipticity",
    "pa_deg",
    "e1",
    "e2",
    "g1",
    "g2",
    "sersic_n",
    "bulge_frac",
    "snr",
    "noise_sigma",
)


def parse_bands(bands) -> tuple[str, ...]:
    """Band names from a tuple/list or a string: ``"g,r,i"``, ``"g r i"``, ``"gri"`` (one letter
    per band when every letter is a broad-band filter name) or a single name (``"F814W"``)."""
    if isinstance(bands, str):
        text = bands.strip()
        if "," in text or " " in text:
            return tuple(b for b in text.replace(",", " ").split() if b)
        if len(text) > 1 and all(c in "ugrizyUBVRIJHKY" for c in text):
            return tuple(text)
        return (text,) if text else ()
    return tuple(str(b) for b in bands)


def _as_range(value, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"galsim_galaxies: {name} must be a number or (low, high), got {value!r}"
        ) from exc
    if hi < lo:
        raise ConfigError(f"galsim_galaxies: {name} range ({lo}, {hi}) has low > high")
    return lo, hi


def _sersic_b(n: float) -> float:
    from scipy.special import gammaincinv

    return float(gammaincinv(2.0 * n, 0.5))


def _enclosed(n: float, b: float, r_over_re: float) -> float:
    from scipy.special import gammainc

    return float(gammainc(2.0 * n, b * r_over_re ** (1.0 / n)))


def composite_hlr_factor(bulge_frac: float, size_ratio: float, bulge_n: float) -> float:
    """Half-light radius of bulge + exponential disk in units of the disk half-light radius.

    ``size_ratio`` = bulge hlr / disk hlr. Solved exactly from the Sérsic enclosed-flux
    profiles (incomplete gamma functions).
    """
    if bulge_frac <= 0.0 or abs(size_ratio - 1.0) < 1e-12:
        return 1.0
    if bulge_frac >= 1.0:
        return size_ratio
    from scipy.optimize import brentq

    bb, bd = _sersic_b(bulge_n), _sersic_b(1.0)

    def f(x):
        return (
            bulge_frac * _enclosed(bulge_n, bb, x / size_ratio)
            + (1 - bulge_frac) * _enclosed(1.0, bd, x)
            - 0.5
        )

    lo, hi = min(size_ratio, 1.0), max(size_ratio, 1.0)
    return float(brentq(f, lo, hi, xtol=1e-10))


def _colour_table(bands, colors) -> tuple[list[tuple[float, float]], int]:
    bands = list(bands)
    if colors is not None:
        missing = [b for b in bands if b not in colors]
        if missing:
            raise ConfigError(
                f"galsim_galaxies: colors has no (bulge, disk) flux ratio for band(s) {missing}"
            )
        table = [tuple(float(v) for v in colors[b]) for b in bands]
    elif all(b in _DEFAULT_COLOURS for b in bands):
        table = [_DEFAULT_COLOURS[b] for b in bands]
    else:
        # Unknown filter names: redder with the band index, bulge redder than disk.
        k = len(bands)
        mid = k // 2
        table = [(1.0 + 0.35 * (i - mid), 1.0 + 0.12 * (i - mid)) for i in range(k)]
        table = [(max(b, 0.1), max(d, 0.1)) for b, d in table]
    # Reference band: r if present, else the middle band.
    ref = bands.index("r") if "r" in bands else len(bands) // 2
    rb, rd = table[ref]
    table = [(b / rb, d / rd) for b, d in table]
    return table, ref


def _noise_kernel(corr_pix: float) -> np.ndarray:
    rad = max(1, int(math.ceil(3 * corr_pix)))
    ax = np.arange(-rad, rad + 1, dtype=np.float64)
    k = np.exp(-0.5 * (ax[:, None] ** 2 + ax[None, :] ** 2) / corr_pix**2)
    return k / np.sqrt((k**2).sum())  # unit per-pixel variance after convolution


def _noise_transfer(corr_pix: float, size: int) -> np.ndarray:
    """rfft2 of the unit-variance noise kernel wrapped onto a size×size grid (periodic
    convolution: every pixel of the correlated noise has the same variance)."""
    if corr_pix <= 0:
        raise ConfigError(f"galsim_galaxies: noise_correlation must be > 0 pixels, got {corr_pix}")
    k = _noise_kernel(corr_pix)
    rad = k.shape[0] // 2
    if k.shape[0] > size:
        raise ConfigError(
            f"galsim_galaxies: noise_correlation={corr_pix} px is too long for {size}-pixel stamps"
        )
    grid = np.zeros((size, size))
    ax = np.arange(-rad, rad + 1) % size
    grid[np.ix_(ax, ax)] = k
    return np.fft.rfft2(grid)


@dataclasses.dataclass(frozen=True)
class GalSimOptions(Options):
    """The population, PSF, pixels and noise of :func:`galsim_galaxies` (its docstring says
    what each option does).  Checked once, when made: the choices of ``noise`` and ``psf``
    from their annotations, sizes, bands and ranges; ``bands`` is parsed (``"gri"`` or
    ``"g,r,i"``), ``noise`` and ``psf`` lower-cased (``noise=None`` is ``"none"``)."""

    WHERE: ClassVar[str] = "galsim_galaxies"

    size: int = 64
    bands: str | Sequence[str] = ("g", "r", "i")
    seed: int = 0
    pixel_scale: float = 0.2
    psf_fwhm: float = 0.7
    noise: Literal["gaussian", "correlated", "none"] = "gaussian"
    snr: tuple[float, float] | float = (20, 200)
    psf: Literal["moffat", "gaussian"] = "moffat"
    moffat_beta: float = 3.5
    flux: tuple[float, float] | float = (1e3, 1e5)
    hlr: tuple[float, float] | float = (0.3, 1.2)
    q: tuple[float, float] | float = (0.2, 1.0)
    bulge_frac: tuple[float, float] | float = (0.0, 0.6)
    bulge_n: float | tuple[float, float] = 4.0
    bulge_size_ratio: float = 0.5
    colors: dict | None = None
    color_scatter: float = 0.1
    noise_correlation: float = 1.0
    max_offset: float = 0.0

    def __post_init__(self) -> None:
        self._set("noise", "none" if self.noise is None else str(self.noise).lower())
        self._set("psf", str(self.psf).lower())
        super().__post_init__()
        size = int(self.size)
        if size < 8:
            raise ConfigError(f"galsim_galaxies: size must be >= 8 pixels, got {size}")
        self._set("size", size)
        self._set("bands", parse_bands(self.bands))
        if not self.bands:
            raise ConfigError("galsim_galaxies: bands must name at least one band")
        q_r, bf_r, n_r = self.range("q"), self.range("bulge_frac"), self.range("bulge_n")
        if not (0 < q_r[0] <= q_r[1] <= 1):
            raise ConfigError(f"galsim_galaxies: q must lie in (0, 1], got {self.q}")
        if not (0 <= bf_r[0] <= bf_r[1] <= 1):
            raise ConfigError(
                f"galsim_galaxies: bulge_frac must lie in [0, 1], got {self.bulge_frac}"
            )
        if not (0.3 <= n_r[0] <= n_r[1] <= 6.2):
            raise ConfigError(
                f"galsim_galaxies: bulge_n must lie in [0.3, 6.2] (GalSim), got {self.bulge_n}"
            )
        if self.range("flux")[0] <= 0 or self.range("snr")[0] <= 0 or self.range("hlr")[0] <= 0:
            raise ConfigError("galsim_galaxies: flux, snr and hlr must be positive")

    def range(self, name: str) -> tuple[float, float]:
        """Option ``name`` as ``(low, high)`` (a single number is a range of one value)."""
        return _as_range(getattr(self, name), name)


#: the old positional order of galsim_galaxies' settings after ``n``
_GALSIM_POSITIONAL = ("size", "bands", "seed", "pixel_scale", "psf_fwhm", "noise", "snr")


def galsim_galaxies(
    n: int,
    *args,
    options: GalSimOptions | Mapping[str, Any] | None = None,
    return_noiseless: bool = False,
    **kwargs: Any,
):
    """Simulate ``n`` bulge + disk galaxies with GalSim; return ``(ImageSet, truth)``.

    The settings are a :class:`GalSimOptions` (``options``) or its keywords laid over it
    (``size=64, bands=("g", "r", "i"), seed=0, pixel_scale=0.2, psf_fwhm=0.7,
    noise="gaussian", snr=(20, 200)`` may also follow ``n`` by position, as before).

    Each galaxy is a Sérsic bulge (``bulge_n``: a number, 4 = de Vaucouleurs by default, or a
    ``(low, high)`` range drawn uniformly) plus an exponential disk sharing the centre, axis
    ratio and position angle, convolved with a Moffat (``psf="moffat"``, ``moffat_beta``) or
    Gaussian PSF of FWHM ``psf_fwhm`` arcsec, drawn on ``size×size`` pixels of
    ``pixel_scale`` arcsec. Ranges (drawn per galaxy from a ``numpy`` generator seeded with
    ``seed``): ``flux`` (counts in the reference band, log-uniform), ``hlr`` (arcsec,
    circularised half-light radius of the whole galaxy, uniform), ``q`` (b/a, uniform),
    position angle (uniform in [0, 180) degrees), ``bulge_frac`` (uniform) and ``snr``
    (matched-filter S/N in the reference band, log-uniform, sets the noise level).

    Colours: the bulge and disk have their own flux ratio per band relative to the reference
    band (``r`` if present, else the middle band), from ``colors`` ``{band: (bulge, disk)}``
    or a built-in red-bulge/blue-disk table, scattered per galaxy by a log-normal of width
    ``color_scatter``. Noise: ``"gaussian"`` (white), ``"correlated"`` (white noise smoothed by
    a Gaussian of ``noise_correlation`` pixels, rescaled to the same per-pixel σ) or
    ``"none"``. ``max_offset`` (pixels) moves centres uniformly within ±max_offset.

    The truth list has one dict per galaxy; its conventions are in this module's docstring
    (``q = b/a``, ``ellipticity = 1 − q``, ``pa_deg`` counter-clockwise from +x = columns).
    With ``return_noiseless=True`` a third value is returned: the noiseless PSF-convolved
    stamps, float32 N×C×H×W. Units are ``"counts"``.
    """
    import galsim

    if len(args) > len(_GALSIM_POSITIONAL):
        raise ConfigError(
            f"galsim_galaxies: at most {len(_GALSIM_POSITIONAL)} settings by position "
            f"({', '.join(_GALSIM_POSITIONAL)}); give the others by name"
        )
    for name in _GALSIM_POSITIONAL[: len(args)]:
        if name in kwargs:
            raise ConfigError(f"galsim_galaxies: {name} given by position and by name")
    kwargs.update(zip(_GALSIM_POSITIONAL, args, strict=False))
    o = GalSimOptions.build(options, **kwargs)
    n = int(n)
    if n < 1:
        raise ConfigError(f"galsim_galaxies: n must be >= 1, got {n}")
    size, bands, seed, noise, psf_kind = o.size, o.bands, o.seed, o.noise, o.psf
    pixel_scale, psf_fwhm, moffat_beta = o.pixel_scale, o.psf_fwhm, o.moffat_beta
    bulge_size_ratio, color_scatter, max_offset = o.bulge_size_ratio, o.color_scatter, o.max_offset
    flux_r, hlr_r, q_r = o.range("flux"), o.range("hlr"), o.range("q")
    bf_r, snr_r, n_r = o.range("bulge_frac"), o.range("snr"), o.range("bulge_n")

    colour_table, ref = _colour_table(bands, o.colors)
    rng = np.random.default_rng(seed)

    gsp = galsim.GSParams(folding_threshold=5e-3, maxk_threshold=1e-3)
    if psf_kind == "moffat":
        psf_obj = galsim.Moffat(beta=moffat_beta, fwhm=psf_fwhm, gsparams=gsp)
    else:
        psf_obj = galsim.Gaussian(fwhm=psf_fwhm, gsparams=gsp)

    nb = len(bands)
    images = np.empty((n, nb, size, size), dtype=np.float32)
    noiseless = np.empty((n, nb, size, size), dtype=np.float32) if return_noiseless else None
    kernel_ft = _noise_transfer(o.noise_correlation, size) if noise == "correlated" else None
    truth: list[dict] = []
    meta: list[dict] = []
    centre = (size - 1) / 2.0
    hlr_factor_cache: dict[tuple, float] = {}

    for i in range(n):
        tot_flux = float(np.exp(rng.uniform(np.log(flux_r[0]), np.log(flux_r[1]))))
        hlr_i = float(rng.uniform(*hlr_r))
        q_i = float(rng.uniform(*q_r))
        pa = float(rng.uniform(0.0, 180.0))
        bf = float(rng.uniform(*bf_r))
        sn = float(rng.uniform(*n_r))
        snr_i = float(np.exp(rng.uniform(np.log(snr_r[0]), np.log(snr_r[1]))))
        dx, dy = rng.uniform(-max_offset, max_offset, size=2) if max_offset > 0 else (0.0, 0.0)
        scatter = (
            rng.normal(0.0, color_scatter, size=(nb, 2)) if color_scatter > 0 else np.zeros((nb, 2))
        )
        scatter[ref] = 0.0

        key = (round(bf, 12), round(sn, 12))
        if key not in hlr_factor_cache:
            hlr_factor_cache[key] = composite_hlr_factor(bf, bulge_size_ratio, sn)
        r_disk = hlr_i / hlr_factor_cache[key]
        r_bulge = bulge_size_ratio * r_disk

        shear = galsim.Shear(q=q_i, beta=pa * galsim.degrees)
        disk = galsim.Exponential(half_light_radius=r_disk, flux=1.0, gsparams=gsp).shear(shear)
        comps = [galsim.Convolve(disk, psf_obj)]
        if bf > 0:
            bulge = galsim.Sersic(n=sn, half_light_radius=r_bulge, flux=1.0, gsparams=gsp).shear(
                shear
            )
            comps.append(galsim.Convolve(bulge, psf_obj))
        drawn = []
        for c in comps:
            im = galsim.ImageF(size, size, scale=pixel_scale)
            c.drawImage(image=im, offset=(float(dx), float(dy)))
            drawn.append(im.array.astype(np.float64))
        disk_img = drawn[0]
        bulge_img = drawn[1] if bf > 0 else np.zeros_like(disk_img)

        band_flux = []
        clean = np.empty((nb, size, size), dtype=np.float64)
        for b in range(nb):
            cb, cd = colour_table[b]
            fb = tot_flux * bf * cb * math.exp(scatter[b, 0])
            fd = tot_flux * (1 - bf) * cd * math.exp(scatter[b, 1])
            clean[b] = fb * bulge_img + fd * disk_img
            band_flux.append(fb + fd)

        sigma = float(np.sqrt((clean[ref] ** 2).sum()) / snr_i)
        if noise == "gaussian":
            noisy = clean + rng.normal(0.0, sigma, size=clean.shape)
        elif noise == "correlated":
            white = rng.normal(0.0, 1.0, size=clean.shape)
            corr = np.fft.irfft2(np.fft.rfft2(white) * kernel_ft, s=(size, size))
            noisy = clean + sigma * corr
        else:
            noisy = clean
        images[i] = noisy
        if noiseless is not None:
            noiseless[i] = clean

        eps = 1.0 - q_i
        g = (1.0 - q_i) / (1.0 + q_i)
        c2, s2 = math.cos(math.radians(2 * pa)), math.sin(math.radians(2 * pa))
        t = {
            "id": i,
            "x": centre + float(dx),
            "y": centre + float(dy),
            "flux": band_flux[ref],
            "flux_stamp": float(clean[ref].sum()),
            "ref_band": bands[ref],
            "hlr": hlr_i,
            "hlr_pix": hlr_i / pixel_scale,
            "hlr_bulge": r_bulge if bf > 0 else 0.0,
            "hlr_disk": r_disk,
            "q": q_i,
            "ellipticity": eps,
            "pa_deg": pa,
            "e1": eps * c2,
            "e2": eps * s2,
            "g1": g * c2,
            "g2": g * s2,
            "sersic_n": sn,
            "bulge_frac": bf,
            "snr": snr_i if noise != "none" else None,
            "noise_sigma": sigma if noise != "none" else 0.0,
        }
        for b, f in zip(bands, band_flux, strict=True):
            t[f"flux_{b}"] = f
        truth.append(t)
        meta.append({"id": i, "index": i, **t})

    spec = (
        f"builtin:galsim?n={n}&size={size}&bands={','.join(bands)}&seed={seed}"
        f"&noise={noise}&psf={psf_kind}"
    )
    truth_keys = list(_TRUTH_KEYS) + [f"flux_{b}" for b in bands]
    iset = ImageSet(
        images=images,
        bands=bands,
        meta=meta,
        units="counts",
        report=ReadReport(n_read=n),
        source=spec,
        extra={
            "truth_keys": truth_keys,
            "pixel_scale": pixel_scale,
            "psf_fwhm": psf_fwhm,
            "psf": psf_kind,
            "moffat_beta": moffat_beta,
            "conventions": "q=b/a; ellipticity=1-q; pa_deg CCW from +x (columns); "
            "e1,e2 = (1-q)(cos2PA, sin2PA); g1,g2 = (1-q)/(1+q)(cos2PA, sin2PA); "
            "hlr circularised, arcsec",
            "truth_units": {"hlr": "arcsec", "hlr_bulge": "arcsec", "hlr_disk": "arcsec"},
        },
    )
    if return_noiseless:
        return iset, truth, noiseless
    return iset, truth


def sparse_fields(
    n: int = 16,
    size: int = 1000,
    count=40,
    seed: int = 0,
    *,
    pixel_scale: float = 0.2,
    psf_fwhm: float = 0.7,
    flux=(300.0, 3e4),
    hlr=(0.2, 0.9),
    q=(0.3, 1.0),
    threshold: float = 1.0,
    stamp: int = 48,
):
    """``n`` single-band ``size×size`` fields of galaxies on a background of exactly 0.

    Each field holds ``count`` galaxies (a number, or ``(low, high)``: a whole number drawn
    uniformly per field), drawn by :func:`galsim_galaxies` (one band ``r``, no noise, the
    ``flux``/``hlr``/``q`` ranges given, a random sub-pixel centre) on ``stamp``-pixel
    stamps. Each stamp is truncated: pixels below ``threshold`` (counts) become 0 and only the
    connected cluster (8-connected) holding the galaxy's centre is kept, so every galaxy is
    one connected cluster of non-zero pixels. Its centre is placed uniformly at random inside
    the field; stamps reaching beyond the edge are cut; overlapping galaxies add.

    Returns ``(ImageSet, truth)``. ``truth`` has one dict per galaxy: ``image`` (field
    index), ``id``, ``x``, ``y`` (0-based column/row of the profile centre in the field),
    ``flux`` (counts kept after truncation, inside the field), ``flux_model`` (the profile's
    total), ``npix`` (non-zero pixels of its truncated stamp inside the field), ``peak``,
    ``hlr`` (arcsec), ``hlr_pix``, ``q``, ``pa_deg``. Each field's meta holds its galaxies
    (``galaxies``) and ``n_galaxies``. Units are ``"counts"``; band ``r``.
    """
    from galforge.data.sparse import label_clusters

    n, size, stamp = int(n), int(size), int(stamp)
    if n < 1:
        raise ConfigError(f"builtin:sparse: n must be >= 1, got {n}")
    if size < 16:
        raise ConfigError(f"builtin:sparse: size must be >= 16 pixels, got {size}")
    if stamp < 8:
        raise ConfigError(f"builtin:sparse: stamp must be >= 8 pixels, got {stamp}")
    if not threshold > 0:
        raise ConfigError(f"builtin:sparse: threshold must be > 0 counts, got {threshold}")
    c_lo, c_hi = _as_range(count, "count")
    if c_lo < 0 or not float(c_lo).is_integer() or not float(c_hi).is_integer():
        raise ConfigError(
            f"builtin:sparse: count must be a whole number >= 0 or a range "
            f"LOW,HIGH of them, got {count}"
        )
    rng = np.random.default_rng([int(seed), 7])
    counts = rng.integers(int(c_lo), int(c_hi) + 1, size=n)
    total = int(counts.sum())
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    truth: list[dict] = []
    meta: list[dict] = [
        {"id": i, "index": i, "n_galaxies": int(counts[i]), "galaxies": []} for i in range(n)
    ]
    if total:
        stamps, gal = galsim_galaxies(
            total,
            size=stamp,
            bands=("r",),
            seed=seed,
            pixel_scale=pixel_scale,
            psf_fwhm=psf_fwhm,
            noise="none",
            flux=flux,
            hlr=hlr,
            q=q,
            bulge_frac=(0.0, 0.4),
            max_offset=0.5,
            color_scatter=0.0,
        )
        k = 0
        for i in range(n):
            field = images[i, 0]
            for _ in range(int(counts[i])):
                g, img = gal[k], stamps.images[k, 0]
                k += 1
                cut = np.where(img >= threshold, img, 0.0).astype(np.float32)
                labels, _ = label_clusters(cut)  # threshold > 0: the kept pixels
                cy, cx = int(round(g["y"])), int(round(g["x"]))
                keep = labels[cy, cx]
                cut = np.where(labels == keep, cut, 0.0) if keep else np.zeros_like(cut)
                # the centre uniformly inside the field; the stamp at a whole-pixel corner
                u = rng.uniform(0.0, size - 1.0, size=2)
                x0 = int(np.clip(round(u[0] - g["x"]), -g["x"], size - 1 - g["x"]))
                y0 = int(np.clip(round(u[1] - g["y"]), -g["y"], size - 1 - g["y"]))
                x0 += int(x0 + g["x"] < 0)
                y0 += int(y0 + g["y"] < 0)
                fy0, fx0 = max(y0, 0), max(x0, 0)
                fy1, fx1 = min(y0 + stamp, size), min(x0 + stamp, size)
                part = cut[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
                field[fy0:fy1, fx0:fx1] += part
                t = {
                    "image": i,
                    "id": len(meta[i]["galaxies"]),
                    "x": x0 + float(g["x"]),
                    "y": y0 + float(g["y"]),
                    "flux": float(part.sum(dtype=np.float64)),
                    "flux_model": float(g["flux"]),
                    "npix": int((part > 0).sum()),
                    "peak": float(part.max()) if part.size else 0.0,
                    "hlr": float(g["hlr"]),
                    "hlr_pix": float(g["hlr_pix"]),
                    "q": float(g["q"]),
                    "pa_deg": float(g["pa_deg"]),
                }
                truth.append(t)
                meta[i]["galaxies"].append({k2: v for k2, v in t.items() if k2 != "image"})
    count_text = f"{int(c_lo)}" if c_lo == c_hi else f"{int(c_lo)},{int(c_hi)}"
    spec = f"builtin:sparse?n={n}&size={size}&count={count_text}&seed={seed}"
    iset = ImageSet(
        images=images,
        bands=("r",),
        meta=meta,
        units="counts",
        report=ReadReport(n_read=n),
        source=spec,
        extra={
            "pixel_scale": pixel_scale,
            "psf_fwhm": psf_fwhm,
            "background": 0.0,
            "threshold": float(threshold),
        },
    )
    return iset, truth


@functools.lru_cache(maxsize=1)
def _hdf_pixels() -> np.ndarray:
    """The XDF image as read-only float32 C×H×W (decoded once per process)."""
    from skimage import data as skdata

    try:
        rgb = skdata.hubble_deep_field()
    except Exception as exc:  # a broken scikit-image install
        raise DataError(
            f"builtin:hdf: could not load skimage.data.hubble_deep_field() ({exc}); "
            "reinstall scikit-image"
        ) from exc
    img = np.ascontiguousarray(np.transpose(rgb, (2, 0, 1)), dtype=np.float32)
    img.setflags(write=False)
    return img


def hdf_field() -> ImageSet:
    """The Hubble eXtreme Deep Field colour image bundled with scikit-image, as one field.

    Returns a 1×3×872×1000 float32 set, bands ``("R", "G", "B")``, units ``"8-bit level"``.
    Row 0 of the array is the top row of the picture as scikit-image stores it.
    """
    img = _hdf_pixels().copy()[None]
    return ImageSet(
        images=img,
        bands=("R", "G", "B"),
        meta=[{"id": "hubble_deep_field", "file": "skimage.data.hubble_deep_field"}],
        units="8-bit level",
        source="builtin:hdf",
    )


#: ``builtin:hdf-stamps?split=``: the whole field (None) or a strip of columns (see hdf_stamps)
HDF_SPLITS = (None, "train", "test", "reference")
#: the train/test boundary as a fraction of the field's width
HDF_SPLIT_FRACTION = 0.7


def hdf_split_column(width: int, fraction: float = HDF_SPLIT_FRACTION) -> int:
    """The first column at or beyond ``fraction · width``: ``ceil(fraction · width)`` (700 of
    the XDF's 1000 for the train/test boundary)."""
    return int(math.ceil(float(fraction) * int(width) - 1e-9))


def hdf_stamps(
    size: int = 64,
    n: int | None = None,
    *,
    threshold: float = 3.0,
    min_area: int = 20,
    min_flux: float = 0.0,
    min_separation: float | None = None,
    split: str | None = None,
) -> ImageSet:
    """Stamps centred on the sources ``sep`` detects in the Hubble XDF image (real galaxies).

    Detection runs on the sum of the R, G, B planes after subtracting a ``sep`` background,
    at ``threshold`` × the global background rms with at least ``min_area`` pixels. Sources
    whose stamp would leave the field are left out; with ``min_separation`` (pixels), of two
    sources closer than that only the brighter is kept. The brightest ``n`` (all by default)
    are returned, brightest first. Meta per stamp: field position ``x``, ``y`` (0-based
    column/row of the detection centroid), the stamp's corner ``x0``, ``y0``, and sep's
    ``flux``, ``a``, ``b``, ``theta_deg`` (CCW from +x), ``npix``.

    ``split`` divides the field by column so that training and test stamps share no pixel:
    ``train`` keeps the stamps lying wholly in the columns ``< 0.7·W`` (``x0 + size <= 700`` on
    the 1000-column field), ``test`` those lying wholly in the columns ``>= 0.7·W``
    (``x0 >= 700``); stamps crossing the boundary belong to neither. ``reference`` keeps those
    lying wholly in the columns ``< 0.3·W`` (``x0 + size <= 300``): a strip as wide as the test
    strip, at the other edge of the field (inside the training side), for the real-vs-real
    reference of an evaluation against ``test`` (no pixel in common with it). Detection still
    runs on the whole field, so a source is found and centred the same way whichever split it
    is in. At the default 64-pixel stamps: 462 train, 169 test and 144 reference stamps
    (664 in the whole field).
    """
    import sep

    size = int(size)
    field = hdf_field()
    img = field.images[0]
    _, H, W = img.shape
    if size < 8 or size > min(H, W):
        raise ConfigError(f"builtin:hdf-stamps: size must be between 8 and {min(H, W)}, got {size}")
    if split not in HDF_SPLITS:
        raise ConfigError(
            f"builtin:hdf-stamps: split={split!r} must be train (columns < 0.7·W of the field), "
            "test (columns >= 0.7·W) or reference (columns < 0.3·W); leave it out for the "
            "whole field"
        )
    cut = hdf_split_column(W)
    ref_cut = hdf_split_column(W, 1.0 - HDF_SPLIT_FRACTION)
    grey = np.ascontiguousarray(img.sum(axis=0), dtype=np.float32)
    bkg = sep.Background(grey)
    sub = grey - bkg.back()
    objs = sep.extract(sub, threshold, err=bkg.globalrms, minarea=int(min_area))
    order = np.argsort(-objs["flux"])
    half = size // 2
    chosen = []
    for k in order:
        o = objs[k]
        if o["flux"] < min_flux:
            continue
        xc, yc = int(round(float(o["x"]))), int(round(float(o["y"])))
        x0, y0 = xc - half, yc - half
        if x0 < 0 or y0 < 0 or x0 + size > W or y0 + size > H:
            continue
        if (
            (split == "train" and x0 + size > cut)
            or (split == "test" and x0 < cut)
            or (split == "reference" and x0 + size > ref_cut)
        ):
            continue
        if min_separation:
            if any((c[0] - o["x"]) ** 2 + (c[1] - o["y"]) ** 2 < min_separation**2 for c in chosen):
                continue
        chosen.append((float(o["x"]), float(o["y"]), x0, y0, o))
        if n is not None and len(chosen) >= int(n):
            break
    if not chosen:
        raise DataError(
            f"builtin:hdf-stamps: no source fits in a {size}-pixel stamp with threshold={threshold},"
            f" min_area={min_area}"
            + (f" in the {split} split" if split else "")
            + "; lower them or the stamp size"
        )
    stamps = np.stack([img[:, y0 : y0 + size, x0 : x0 + size] for _, _, x0, y0, _ in chosen])
    meta = [
        {
            "id": f"hdf-{j}",
            "index": j,
            "x": x,
            "y": y,
            "x0": x0,
            "y0": y0,
            "flux": float(o["flux"]),
            "a": float(o["a"]),
            "b": float(o["b"]),
            "theta_deg": float(np.degrees(o["theta"])),
            "npix": int(o["npix"]),
        }
        for j, (x, y, x0, y0, o) in enumerate(chosen)
    ]
    spec = (
        f"builtin:hdf-stamps?size={size}"
        + (f"&n={n}" if n is not None else "")
        + (f"&split={split}" if split else "")
    )
    return ImageSet(
        images=np.ascontiguousarray(stamps, dtype=np.float32),
        bands=("R", "G", "B"),
        meta=meta,
        units="8-bit level",
        report=ReadReport(n_read=len(chosen)),
        source=spec,
    )


# ----------------------------------------------------------------------------- spec strings

_KNOWN = {"galsim", "hdf", "hdf-stamps", "sparse"}


def _convert(value: str):
    v = value.strip()
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        pass
    if "," in v or ":" in v:
        parts = [p for p in v.replace(":", ",").split(",") if p != ""]
        conv = [_convert(p) for p in parts]
        if all(isinstance(c, (int, float)) for c in conv):
            return tuple(float(c) for c in conv)
        return tuple(str(c) for c in parts)
    return v


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split ``builtin:NAME?k=v&k2=v2`` into ``(NAME, {k: v})`` with numbers/lists converted.

    Lists are comma separated (``bands=g,r,i``, ``snr=20,200``).
    """
    if not spec.startswith("builtin:"):
        raise ConfigError(f"{spec!r} is not a builtin: spec (expected builtin:NAME?key=value&...)")
    body = spec[len("builtin:") :]
    name, _, query = body.partition("?")
    name = name.strip().lower()
    if name not in _KNOWN:
        raise ConfigError(
            f"unknown builtin data set {name!r} in {spec!r}; available: {', '.join(sorted(_KNOWN))}"
        )
    params = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        params[k.strip().replace("-", "_")] = _convert(v)
    return name, params


_FUNCS = {
    "galsim": "galsim_galaxies",
    "hdf": "hdf_field",
    "hdf-stamps": "hdf_stamps",
    "sparse": "sparse_fields",
}


def _check_params(name: str, params: dict, spec: str) -> None:
    """Parameters of a spec against the keywords of the function that makes the set: unknown
    names and values of the wrong kind (``n=abc``) raise ConfigError naming them."""
    import inspect as _inspect

    if name == "galsim":  # n, and the fields of its options
        fields = dataclasses.fields(GalSimOptions)
        parameters = {
            "n": _inspect.Parameter("n", _inspect.Parameter.KEYWORD_ONLY, annotation="int")
        }
        for f in fields:
            parameters[f.name] = _inspect.Parameter(
                f.name, _inspect.Parameter.KEYWORD_ONLY, annotation=f.type, default=f.default
            )
    else:
        parameters = dict(_inspect.signature(globals()[_FUNCS[name]]).parameters)
    allowed = set(parameters) - {"return_noiseless"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"builtin:{name}: unknown parameter(s) {unknown} in {spec!r}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    for key, value in params.items():
        param = parameters[key]
        ann = str(param.annotation)
        default = param.default
        optional = "None" in ann or default is None
        if value is None and optional:
            continue
        if ann.startswith("int") or (isinstance(default, int) and not isinstance(default, bool)):
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
            kind = "a whole number"
        elif ann.startswith("float") or isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            kind = "a number"
        elif (
            isinstance(default, tuple)
            and default
            and all(isinstance(v, (int, float)) for v in default)
        ):
            values = value if isinstance(value, tuple) else (value,)
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            kind = "a number or a range LOW,HIGH"
        else:
            continue
        if not ok:
            raise ConfigError(f"builtin:{name}: {key}={value!r} in {spec!r} must be {kind}")
        low, high, why = _RANGES.get(key, (None, None, ""))
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and ((low is not None and v < low) or (high is not None and v > high) or v != v)
            ):
                bounds = f"between {low} and {high}" if high is not None else f">= {low}"
                raise ConfigError(
                    f"builtin:{name}: {key}={value!r} in {spec!r} must be {bounds}{why}"
                )


# ranges of the numeric spec parameters (low, high, why); others are checked by their maker
_RANGES = {
    "n": (1, 10_000_000, " (the number of images)"),
    "size": (8, 65536, " pixels"),
    "stamp": (8, 65536, " pixels"),
    "seed": (0, None, ""),
    "count": (0, 1_000_000, " (galaxies per field)"),
    "pixel_scale": (1e-6, None, " arcsec per pixel"),
    "psf_fwhm": (0, None, " arcsec"),
    "snr": (1e-6, None, ""),
    "flux": (0, None, ""),
    "hlr": (1e-6, None, " arcsec"),
    "q": (1e-3, 1.0, ""),
    "bulge_frac": (0.0, 1.0, ""),
    "min_area": (1, None, " pixels"),
}


def describe_spec(spec: str) -> dict:
    """What a builtin spec would give, without generating it (used by ``inspect``)."""
    name, p = parse_spec(spec)
    _check_params(name, p, spec)
    if name == "galsim":
        bands = parse_bands(p.get("bands", ("g", "r", "i")))
        size = int(p.get("size", 64))
        return {
            "kind": "builtin",
            "name": name,
            "count": int(p.get("n", 1000)),
            "shape": [len(bands), size, size],
            "bands": list(bands),
            "units": "counts",
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        }
    if name == "sparse":
        size = int(p.get("size", 1000))
        return {
            "kind": "builtin",
            "name": name,
            "count": int(p.get("n", 16)),
            "shape": [1, size, size],
            "bands": ["r"],
            "units": "counts",
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        }
    if name == "hdf":
        return {
            "kind": "builtin",
            "name": name,
            "count": 1,
            "shape": [3, 872, 1000],
            "bands": ["R", "G", "B"],
            "units": "8-bit level",
            "params": {},
        }
    size = int(p.get("size", 64))
    count = len(from_spec(spec))  # detection on the bundled field takes about a second
    split = p.get("split")
    where = {
        None: "anywhere in the field",
        "train": "wholly in columns < 700 (0.7·W)",
        "test": "wholly in columns >= 700 (0.7·W)",
        "reference": "wholly in columns < 300 (0.3·W)",
    }.get(split, "")
    return {
        "kind": "builtin",
        "name": name,
        "count": count,
        "description": (
            f"{size}×{size}-pixel stamps centred on sources detected in the Hubble XDF "
            f"(872×1000), {where}" + (f" (split={split})" if split else "")
        ),
        "shape": [3, size, size],
        "bands": ["R", "G", "B"],
        "units": "8-bit level",
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
    }


def from_spec(spec: str) -> ImageSet:
    """Build the ImageSet a ``builtin:`` spec names.

    ``builtin:galsim?n=5000&size=64&seed=3&bands=g,r,i&noise=correlated`` (any keyword of
    :func:`galsim_galaxies`; ``n`` defaults to 1000); ``builtin:hdf``;
    ``builtin:hdf-stamps?size=64&n=200`` (keywords of :func:`hdf_stamps`);
    ``builtin:sparse?n=16&size=1000&count=40&seed=0`` (keywords of :func:`sparse_fields`).
    For galsim the truth catalogue is in each image's ``meta`` (and ``prepare`` writes it as
    truth.csv); for sparse each field's meta lists its galaxies.
    """
    name, params = parse_spec(spec)
    _check_params(name, params, spec)
    func = globals()[_FUNCS[name]]
    if name in ("galsim", "sparse"):
        if name == "galsim":
            params.setdefault("n", 1000)
        iset, _ = func(**params)
    else:
        iset = func(**params)
    iset.source = spec
    return iset
