"""The FITS header cards galforge writes, in one place, for every FITS file it writes.

Galaxy stamps, stamp cubes, deep fields, latent projections, baselines and scorer ladders
all describe their pixels with the same cards, built here:

* **units** (:func:`unit_cards`): ``BUNIT`` holds a FITS-standard unit string that
  ``astropy.units`` (and so ``CCDData.read``) parses: galforge's ``counts`` becomes
  ``count``, ``nanomaggy`` becomes ``nmgy``; 8- and 16-bit display levels become ``adu``,
  with a comment card saying what a display level is. Where galforge's own name differs from
  ``BUNIT``, ``GFUNIT`` keeps it, so a file read back by galforge has the units it was
  written in (:func:`units_from_header`); files written before (``BUNIT = 'counts'``,
  ``'8-bit level'``) are read as they were.
* **bands** (:func:`band_cards`): ``BANDS`` (comma separated), ``NBANDS``, ``BAND1``..``BANDn``
  and ``FILTER`` for a single band.
* **geometry** (:func:`wcs_cards`): ``PIXSCALE`` (arcsec/pixel) and a TAN WCS centred on the
  image whose ``CRVAL`` (0, 0) is a placeholder, not a sky position; a note card where the
  pixel scale is unknown. ``MAGZP`` (:func:`zeropoint_card`) where the data had a zero point.
* **dates** (:func:`date_cards`): ``DATE`` is the time the file was written, in FITS format
  (``YYYY-MM-DDThh:mm:ss``, UTC, no ``Z``); ``MODDATE`` the creation time of the model. When
  the environment variable ``SOURCE_DATE_EPOCH`` is set (the reproducible-builds convention),
  ``DATE`` is that time instead, so two runs give identical bytes.

This module sits on the bottom floor (it imports nothing of galforge but :mod:`errors`), so
the readers in :mod:`galforge.data` and every writer above can use it.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence

__all__ = [
    "FITS_UNITS",
    "band_cards",
    "date_cards",
    "file_date",
    "fits_date",
    "fits_unit",
    "table_unit",
    "unit_cards",
    "units_from_header",
    "wcs_cards",
    "zeropoint_card",
]

#: galforge's names of pixel units -> (FITS ``BUNIT``, the human wording for its comment).
FITS_UNITS: dict[str, tuple[str, str]] = {
    "counts": ("count", "counts (detector or simulated counts)"),
    "count": ("count", "counts (detector or simulated counts)"),
    "nanomaggy": ("nmgy", "nanomaggies (AB mag = 22.5 - 2.5 log10)"),
    "nanomaggies": ("nmgy", "nanomaggies (AB mag = 22.5 - 2.5 log10)"),
    "8-bit level": ("adu", "8-bit display level (0-255), see comment"),
    "16-bit level": ("adu", "16-bit display level (0-65535), see comment"),
}

_LEVEL_NOTE = (
    "BUNIT adu here means a display level: the value of a pixel of the 8/16-bit image "
    "(PNG/JPEG/TIFF) the model was trained on, after that image's own stretch; it is not "
    "a linear flux."
)


def _parses(unit: str) -> bool:
    import warnings

    from astropy import units as u

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u.Unit(unit)
    except (ValueError, TypeError):
        return False
    return True


def fits_unit(units: str | None) -> tuple[str | None, str]:
    """``(BUNIT value, comment)`` for galforge's unit name ``units``.

    Known names map to FITS-standard strings; a name astropy already parses (as
    ``CCDData.read`` does) is kept; anything else gets no ``BUNIT`` (None) and is carried by ``GFUNIT`` only.
    """
    name = str(units or "").strip()
    if name in FITS_UNITS:
        return FITS_UNITS[name]
    if name and _parses(name):
        return name, "physical units of the pixels"
    return None, "physical units of the pixels"


def unit_cards(header, units: str | None) -> None:
    """Add ``BUNIT`` (FITS-standard), ``GFUNIT`` (galforge's name, where it differs) and, for
    display levels, a comment card saying what they are (in place)."""
    name = str(units or "").strip()
    bunit, comment = fits_unit(name)
    if bunit is not None:
        header["BUNIT"] = (bunit, comment)
    if name and name != bunit:
        header["GFUNIT"] = (name, "galforge's name of the pixel unit")
    if name in ("8-bit level", "16-bit level"):
        header.add_comment(_LEVEL_NOTE)
    elif name and bunit is None:
        header.add_comment(f"No BUNIT: the pixel unit {name!r} (GFUNIT) is not a FITS unit.")


#: ``BUNIT`` strings of FITS files read back -> galforge's unit name (others stay as written).
_READ_UNITS = {"count": "counts", "nmgy": "nanomaggy"}


def units_from_header(header, fallback=None, default: str = "adu") -> str:
    """galforge's unit name of a FITS image: ``GFUNIT`` where present, else ``BUNIT`` (the
    FITS names of :data:`FITS_UNITS` mapped back: ``count`` -> ``counts``; old strings such as
    ``'8-bit level'`` or ``'counts'`` as written), else ``fallback``'s (a primary header),
    else ``default``."""
    for h in (header, fallback):
        if h is None:
            continue
        gf = h.get("GFUNIT")
        if gf is not None and str(gf).strip():
            return str(gf).strip()
        v = h.get("BUNIT")
        if v is not None and str(v).strip():
            text = str(v).strip()
            return _READ_UNITS.get(text, text)
    return default


def table_unit(units: str | None):
    """An ``astropy.units`` unit for a table column in galforge's unit ``units`` (display
    levels: ``adu``), or None where it is not a unit astropy knows."""
    from astropy import units as u

    bunit, _ = fits_unit(units)
    if bunit is None:
        return None
    return u.Unit(bunit)


def band_cards(header, bands: Sequence[str], *, filter_card: bool = True) -> None:
    """Add ``BANDS``, ``NBANDS``, ``BAND1``..``BANDn`` and (one band) ``FILTER`` (in place)."""
    bands = [str(b) for b in bands]
    header["BANDS"] = (",".join(bands), "band of each image plane, in order")
    header["NBANDS"] = (len(bands), "number of bands (image planes)")
    for k, band in enumerate(bands, start=1):
        header[f"BAND{k}"] = (band, f"band of plane {k}")
    if filter_card and len(bands) == 1:
        header["FILTER"] = (bands[0], "band of the image")


def wcs_cards(header, height: int, width: int, pixel_scale: float | None) -> None:
    """Add ``PIXSCALE`` and a simple TAN WCS of one ``height×width`` image (in place).

    The reference pixel is the image centre; ``CRVAL`` (0, 0) is a placeholder: a synthetic
    image has no sky position, only a pixel scale. Without a pixel scale a comment card says
    that there is no WCS.
    """
    scale = None
    if isinstance(pixel_scale, (int, float)) and not isinstance(pixel_scale, bool):
        if math.isfinite(pixel_scale) and pixel_scale > 0:
            scale = float(pixel_scale)
    if scale is None:
        header.add_comment(
            "No WCS: the training data had no known pixel scale; axes are "
            "pixels, not sky coordinates."
        )
        return
    deg = scale / 3600.0
    header["PIXSCALE"] = (scale, "[arcsec/pixel] pixel scale of the training data")
    header["WCSAXES"] = (2, "celestial axes: the image plane only")
    header["CTYPE1"] = ("RA---TAN", "gnomonic projection; scale only, see CRVAL")
    header["CTYPE2"] = ("DEC--TAN", "gnomonic projection; scale only, see CRVAL")
    header["CRPIX1"] = (0.5 + int(width) / 2.0, "reference pixel: image centre")
    header["CRPIX2"] = (0.5 + int(height) / 2.0, "reference pixel: image centre")
    header["CRVAL1"] = (0.0, "[deg] placeholder, not a real sky position")
    header["CRVAL2"] = (0.0, "[deg] placeholder, not a real sky position")
    header["CDELT1"] = (-deg, "[deg/pixel] pixel scale (RA grows to the left)")
    header["CDELT2"] = (deg, "[deg/pixel] pixel scale")
    header["CUNIT1"] = ("deg", "unit of CRVAL1 and CDELT1")
    header["CUNIT2"] = ("deg", "unit of CRVAL2 and CDELT2")
    header["RADESYS"] = ("ICRS", "frame of the placeholder position")
    header.add_comment(
        "The WCS carries the training data's pixel scale only: CRVAL (0, 0) "
        "is a placeholder, not a position on the sky."
    )


def zeropoint_card(header, zeropoint: float | None) -> None:
    """Add ``MAGZP`` (AB magnitude of one pixel unit) where the zero point is known."""
    if isinstance(zeropoint, (int, float)) and not isinstance(zeropoint, bool):
        if math.isfinite(zeropoint):
            header["MAGZP"] = (float(zeropoint), "[mag] zero point: m = MAGZP - 2.5 log10(flux)")


def fits_date(when) -> str | None:
    """``when`` (an ISO time string such as ``2026-11-25T00:29:30Z``, or a datetime) as a
    FITS date ``YYYY-MM-DDThh:mm:ss`` in UTC; None where it is empty or not a time."""
    if not when:
        return None
    if isinstance(when, _dt.datetime):
        moment = when
    else:
        text = str(when).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = _dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def file_date() -> str:
    """The time of writing, UTC, as a FITS date; ``SOURCE_DATE_EPOCH`` (seconds since 1970)
    replaces it when set, so that files can be made identical bit for bit."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            moment = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            from galforge.errors import ConfigError

            raise ConfigError(
                f"SOURCE_DATE_EPOCH={epoch!r}: must be whole seconds since "
                "1970-01-01 UTC; unset it or fix it"
            ) from None
    else:
        moment = _dt.datetime.now(_dt.timezone.utc)
    return fits_date(moment)


def date_cards(header, model_created=None) -> None:
    """Add ``DATE`` (this file's writing time) and ``MODDATE`` (the model's creation time)."""
    header["DATE"] = (file_date(), "[UTC] time this file was written")
    moddate = fits_date(model_created)
    if moddate:
        header["MODDATE"] = (moddate, "[UTC] creation time of the generator bundle")
