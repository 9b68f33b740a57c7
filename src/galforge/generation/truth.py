"""The truth catalogue of a field made of sources (generators with the ``sources`` capability).

Beside every field such a generator makes, ``galforge field`` writes ``<out>.truth.csv`` and
``<out>.truth.fits`` (one binary table): one row per source whose centre lies in the field,
columns ``id, x, y`` (pixels: ``x`` the column, ``y`` the row, ``(0, 0)`` the centre of the
first pixel), ``ra, dec`` (degrees, only when the field has a WCS: the training data's pixel
scale about an arbitrary centre, as in the field's FITS header), ``flux_<band>`` and
``mag_<band>`` (``zeropoint − 2.5 log10 flux``; NaN for a zero flux), ``hlr`` (half-light
radius, px), ``ellipticity`` (``1 − b/a``) and ``pa_deg`` (degrees from +x towards +y).
The catalogue is built tile row by tile row, so memory stays bounded by the rows' sources.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["truth_columns", "truth_paths", "write_truth"]


def truth_paths(out) -> tuple[Path, Path]:
    """``(<out>.truth.csv, <out>.truth.fits)``."""
    out = Path(out)
    return out.with_name(out.name + ".truth.csv"), out.with_name(out.name + ".truth.fits")


def truth_columns(bands, wcs: bool) -> list[str]:
    cols = ["id", "x", "y"] + (["ra", "dec"] if wcs else [])
    cols += [f"flux_{b}" for b in bands] + [f"mag_{b}" for b in bands]
    return cols + ["hlr", "ellipticity", "pa_deg"]


def _radec(x, y, shape_hw, scale):
    """The field's TAN WCS (centre at RA = Dec = 0, training pixel scale) at pixels x, y."""
    h, w = shape_hw
    deg = float(scale) / 3600.0
    # FITS pixel coordinates are 1-based: pixel (0, 0) here is FITS (1, 1)
    xi = -(np.asarray(x) + 1.0 - (0.5 + w / 2.0)) * deg
    eta = (np.asarray(y) + 1.0 - (0.5 + h / 2.0)) * deg
    xi_r, eta_r = np.radians(xi), np.radians(eta)
    ra = np.degrees(np.arctan2(xi_r, 1.0)) % 360.0
    dec = np.degrees(np.arctan2(eta_r, np.sqrt(1.0 + xi_r**2)))
    return ra, dec


def write_truth(
    generator, seed: int, size_hw, out, bands, *, tile: int, pixel_scale: float | None = None
) -> tuple[Path, Path, int]:
    """Write the truth catalogue of the field ``(seed, size_hw)`` beside ``out``; returns
    ``(csv path, fits path, rows)``."""
    from astropy.io import fits

    from galforge import __version__, fitsheader
    from galforge.fileio import atomic_file

    h, w = (int(v) for v in size_hw)
    bands = list(bands)
    zp = getattr(generator, "zeropoint", None)
    zp = 0.0 if zp is None else float(zp)
    cols = truth_columns(bands, bool(pixel_scale))
    csv_path, fits_path = truth_paths(out)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    n = 0
    step = max(int(tile), 256)
    with atomic_file(csv_path) as tmp_csv, open(tmp_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for y0 in range(0, h, step):
            cat = generator.sources_window(seed, y0, 0, min(step, h - y0), w, (h, w))
            m = len(cat["id"])
            if not m:
                continue
            flux = np.asarray(cat["flux"], np.float64).reshape(m, len(bands))
            with np.errstate(divide="ignore", invalid="ignore"):
                mag = np.where(flux > 0, zp - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
            block = {"id": cat["id"], "x": cat["x"], "y": cat["y"]}
            if pixel_scale:
                block["ra"], block["dec"] = _radec(cat["x"], cat["y"], (h, w), pixel_scale)
            for b, name in enumerate(bands):
                block[f"flux_{name}"] = flux[:, b]
                block[f"mag_{name}"] = mag[:, b]
            for k in ("hlr", "ellipticity", "pa_deg"):
                block[k] = np.asarray(cat[k], np.float64)
            for c in cols:
                parts[c].append(np.asarray(block[c]))
            for i in range(m):
                writer.writerow(
                    [int(block["id"][i])] + [f"{float(block[c][i]):.10g}" for c in cols[1:]]
                )
            n += m
    columns = []
    for c in cols:
        data = np.concatenate(parts[c]) if parts[c] else np.zeros(0)
        if c == "id":
            columns.append(fits.Column(name=c, format="K", array=data.astype(np.int64)))
        else:
            unit = {
                "x": "pix",
                "y": "pix",
                "hlr": "pix",
                "ra": "deg",
                "dec": "deg",
                "pa_deg": "deg",
            }.get(c, "mag" if c.startswith("mag_") else None)
            columns.append(
                fits.Column(name=c, format="D", array=data.astype(np.float64), unit=unit)
            )
    table = fits.BinTableHDU.from_columns(columns, name="TRUTH")
    table.header["ZEROPT"] = (zp, "mag = ZEROPT - 2.5 log10(flux)")
    table.header["SEED"] = (int(seed), "seed of the field")
    table.header["FIELDH"] = (h, "field height (px)")
    table.header["FIELDW"] = (w, "field width (px)")
    table.header["PIXCONV"] = ("(0,0) = centre of the first pixel", "x column, y row")
    primary = fits.PrimaryHDU()
    primary.header["CREATOR"] = (f"galforge {__version__}", "software version that wrote this file")
    primary.header["OBJECT"] = ("truth catalogue of a synthetic field", "not real sources")
    fitsheader.date_cards(primary.header)
    fitsheader.date_cards(table.header)
    with atomic_file(fits_path) as tmp:
        fits.HDUList([primary, table]).writeto(tmp, overwrite=True)
    return csv_path, fits_path, n
