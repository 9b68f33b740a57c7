"""Point-spread functions: the ``--psf`` descriptions, their GalSim objects and pixel images.

A PSF is written as text, the same wherever galforge takes one (``galforge train --psf``,
``galforge generate --psf``, a bundle's spec):

* ``moffat:fwhm=0.7,beta=3.5`` — a Moffat profile, FWHM in arcsec (``beta`` 3.5 unless given);
* ``gaussian:fwhm=0.7`` — a Gaussian, FWHM in arcsec;
* ``PATH.fits`` — an image of the *effective* PSF (pixel response included, as PSFEx and
  survey PSF models give it): one 2-D image for every band or a ``C×k×k`` cube, one plane per
  band, sampled at the header's ``PIXSCALE``/``CDELT1`` (arcsec; degrees for ``CDELT``) or,
  without one, at the pixel scale of the images it goes with.

Several bands may each have their own: ``g=moffat:fwhm=0.8;r=moffat:fwhm=0.7`` (bands not
named take the first one given).  :func:`psf_object` is the GalSim object of a description;
:func:`render_psf` its pixel image at a pixel scale, pixel response included, normalised to a
sum of one — the kernel a forward model convolves with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galforge.errors import ConfigError, DataError

__all__ = ["PSF", "data_psf", "parse_psf", "psf_object", "render_psf"]

PARAMETRIC = {"moffat": ("fwhm", "beta"), "gaussian": ("fwhm",)}
DEFAULT_BETA = 3.5


@dataclass(frozen=True)
class PSF:
    """One band's PSF: ``kind`` (moffat, gaussian or image), its ``params`` and ``path``."""

    kind: str
    params: tuple[tuple[str, float], ...] = ()
    path: str | None = None

    @property
    def fwhm(self) -> float | None:
        """FWHM in arcsec of a parametric PSF (None for an image)."""
        return dict(self.params).get("fwhm")

    def describe(self) -> str:
        """The text this PSF is written as (what :func:`parse_psf` reads back)."""
        if self.kind == "image":
            return str(self.path)
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.params)


def _parse_one(text: str, option: str) -> PSF:
    text = text.strip()
    head, sep, rest = text.partition(":")
    kind = head.strip().lower()
    if sep and kind in PARAMETRIC:
        values: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            try:
                values[key] = float(value)
            except ValueError:
                eq = ""
            if not eq or key not in PARAMETRIC[kind]:
                raise ConfigError(
                    f"{option} {text!r}: {kind} takes "
                    f"{', '.join(k + '=NUMBER' for k in PARAMETRIC[kind])}"
                )
        if "fwhm" not in values or not (math.isfinite(values["fwhm"]) and values["fwhm"] > 0):
            raise ConfigError(f"{option} {text!r}: give the FWHM in arcsec, e.g. {kind}:fwhm=0.7")
        if kind == "moffat":
            values.setdefault("beta", DEFAULT_BETA)
            if not (math.isfinite(values["beta"]) and values["beta"] > 1.1):
                raise ConfigError(f"{option} {text!r}: the Moffat beta must be > 1.1")
        return PSF(kind, tuple((k, float(values[k])) for k in PARAMETRIC[kind]))
    if text.lower().endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{option} {text}: no such FITS file; give a PSF image or a "
                "parametric PSF such as moffat:fwhm=0.7"
            )
        return PSF("image", (), str(path))
    raise ConfigError(
        f"{option} {text!r}: write moffat:fwhm=ARCSEC[,beta=B], "
        "gaussian:fwhm=ARCSEC or a FITS image path"
    )


def parse_psf(text, bands, option: str = "--psf") -> tuple[PSF, ...]:
    """One :class:`PSF` per band from a description (see the module docstring); a list of
    descriptions (one per band) is accepted as well."""
    bands = tuple(str(b) for b in bands)
    if isinstance(text, (list, tuple)):
        if len(text) != len(bands):
            raise ConfigError(
                f"{option}: {len(text)} PSFs for {len(bands)} bands "
                f"({', '.join(bands)}); give one, or one per band"
            )
        return tuple(_parse_one(str(t), option) for t in text)
    text = str(text or "").strip()
    if not text:
        raise ConfigError(f"{option}: empty PSF; give e.g. moffat:fwhm=0.7")
    parts = [p.strip() for p in text.split(";") if p.strip()]
    named: dict[str, PSF] = {}
    first = None
    for part in parts:
        band, eq, rest = part.partition("=")
        if eq and ":" not in band and band.strip() in bands:
            named[band.strip()] = _parse_one(rest, option)
            first = first or named[band.strip()]
        elif len(parts) == 1:
            first = _parse_one(part, option)
        else:
            raise ConfigError(
                f"{option} {part!r}: name the band, one of {', '.join(bands)} "
                "(e.g. r=moffat:fwhm=0.7)"
            )
    return tuple(named.get(b, first) for b in bands)


def data_psf(extra: dict | None) -> str | None:
    """The PSF description a data set records of itself (``builtin:galsim`` does:
    ``psf``, ``psf_fwhm`` and ``moffat_beta`` in its ``extra``), or None."""
    extra = extra or {}
    if isinstance(extra.get("psf_description"), str):
        return extra["psf_description"]
    kind, fwhm = extra.get("psf"), extra.get("psf_fwhm")
    if kind not in PARAMETRIC or not isinstance(fwhm, (int, float)) or not fwhm > 0:
        return None
    if kind == "moffat":
        return f"moffat:fwhm={float(fwhm):g},beta={float(extra.get('moffat_beta', DEFAULT_BETA)):g}"
    return f"gaussian:fwhm={float(fwhm):g}"


def _image_scale(header, fallback: float) -> float:
    for key, factor in (
        ("PIXSCALE", 1.0),
        ("PIXSCAL1", 1.0),
        ("SCALE", 1.0),
        ("CDELT1", 3600.0),
        ("CD1_1", 3600.0),
    ):
        value = header.get(key)
        if isinstance(value, (int, float)) and value != 0:
            return abs(float(value)) * factor
    return float(fallback)


def _read_image(psf: PSF, band_index: int, n_bands: int, pixel_scale: float):
    from astropy.io import fits

    try:
        with fits.open(psf.path, memmap=False) as hdul:
            hdu = next(
                (
                    h
                    for h in hdul
                    if getattr(h, "data", None) is not None and np.ndim(h.data) in (2, 3)
                ),
                None,
            )
            if hdu is None:
                raise DataError(
                    f"{psf.path}: no 2-D image or cube in the file; give a PSF "
                    "image (one plane, or one per band)"
                )
            data = np.asarray(hdu.data, dtype=np.float64)
            scale = _image_scale(hdu.header, pixel_scale)
    except OSError as exc:
        raise DataError(f"{psf.path}: not a readable FITS file ({exc}); give a PSF image") from None
    if data.ndim == 3:
        if data.shape[0] != n_bands:
            raise DataError(
                f"{psf.path}: a cube of {data.shape[0]} PSF planes for {n_bands} "
                "bands; give one plane, or one per band"
            )
        data = data[band_index]
    if not np.all(np.isfinite(data)) or not data.sum() > 0:
        raise DataError(f"{psf.path}: the PSF image must be finite with a positive sum")
    return data / data.sum(), scale


def psf_object(psf: PSF, pixel_scale: float, band_index: int = 0, n_bands: int = 1):
    """``(galsim.GSObject, effective)``: the PSF as GalSim draws it; ``effective`` is True for
    an image PSF (it holds the pixel response already: draw with ``method="no_pixel"``)."""
    import galsim

    if psf.kind == "moffat":
        p = dict(psf.params)
        return galsim.Moffat(beta=p["beta"], fwhm=p["fwhm"]), False
    if psf.kind == "gaussian":
        return galsim.Gaussian(fwhm=dict(psf.params)["fwhm"]), False
    data, scale = _read_image(psf, band_index, n_bands, pixel_scale)
    image = galsim.ImageD(np.ascontiguousarray(data), scale=scale)
    return galsim.InterpolatedImage(image, flux=1.0), True


def kernel_size(image_size: int) -> int:
    """Side of the PSF kernel a forward model uses on ``image_size`` stamps: the largest odd
    number not above the stamp (a galaxy's light can reach across the whole stamp)."""
    k = int(image_size)
    return k if k % 2 else k - 1


def render_psf(psfs, pixel_scale: float, size: int, *, pixel: bool = True) -> np.ndarray:
    """``C×size×size`` float32 images of the PSFs (one per band) on pixels of ``pixel_scale``
    arcsec, centred on the middle pixel (``size`` odd), pixel response included (``pixel``;
    False: the PSF alone sampled at the pixel centres, for a finer grid than the data's; not
    possible for an image PSF, which holds its pixel), each summing to one."""

    if not (isinstance(pixel_scale, (int, float)) and pixel_scale > 0):
        raise ConfigError(
            "the PSF needs the pixel scale of the images (data.pixel_scale, arcsec per pixel)"
        )
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"PSF kernel size {size} must be odd")
    out = np.empty((len(psfs), size, size), dtype=np.float32)
    for c, psf in enumerate(psfs):
        obj, effective = psf_object(psf, float(pixel_scale), c, len(psfs))
        if effective and not pixel:
            raise ConfigError(
                f"{psf.describe()}: an image PSF holds the pixel response of its "
                "own pixels; it cannot be used on a finer grid (model.oversample)"
            )
        img = obj.drawImage(
            nx=size,
            ny=size,
            scale=float(pixel_scale),
            method="no_pixel" if effective or not pixel else "auto",
        )
        arr = np.asarray(img.array, dtype=np.float64)
        out[c] = arr / arr.sum()
    return out
