"""Catalogues with units: astropy ``QTable`` / ECSV beside galforge's CSV catalogues.

A CSV says nothing of units (``theta`` in radians sits beside ``pa_deg`` in degrees). Every
catalogue galforge writes as CSV (source catalogues of ``evaluate``, ``memorization_nn``,
truth catalogues) is also written as ECSV, whose header carries each column's unit and
type, so ``astropy.table.QTable.read("catalogue.ecsv")`` gives quantities.

Units come from the column names (:func:`column_unit`), the conventions galforge's
measurements follow: pixel positions and radii (``x``, ``y``, ``a``, ``b``,
``half_light_radius``, ``*_pix``) in ``pix``; ``theta`` (SEP's) in ``rad``; ``*_deg`` and
``pa_deg*`` in ``deg``; ``*_arcsec`` in ``arcsec``; ``mag*`` in ``mag``; fluxes (``flux*``,
``peak``) in the pixel unit of the images (:func:`galforge.fitsheader.table_unit`: ``count``,
``nmgy``, ``adu``...) when the writer knows it. ``units`` overrides any column by name.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["column_unit", "ecsv_path", "to_qtable", "write_ecsv"]

_PIX = {
    "x",
    "y",
    "a",
    "b",
    "kron_radius",
    "aper_radius",
    "half_light_radius",
    "sma",
    "rpetro_circ",
    "rpetro_ellip",
    "r20",
    "r50",
    "r80",
    "rhalf_circ",
    "rhalf_ellip",
    "xc",
    "yc",
    "x_peak",
    "y_peak",
    "x_true",
    "y_true",
}
_NO_UNIT = {"id", "image", "index", "flag", "npix", "n", "seed"}


def column_unit(name: str, pixel_units: str | None = None):
    """The ``astropy.units`` unit of a catalogue column named ``name`` (module docstring),
    or None for a dimensionless or unknown column."""
    from astropy import units as u

    from galforge.fitsheader import table_unit

    key = str(name).strip().lower()
    if key in _NO_UNIT:
        return None
    if key.endswith("_arcsec"):
        return u.arcsec
    if key.endswith("_deg") or key.startswith("pa_deg") or key in ("ra", "dec"):
        return u.deg
    if key == "theta" or key.endswith("_rad"):
        return u.rad
    if key in _PIX or key.endswith("_pix") or key.endswith("_px"):
        return u.pix
    if key == "mag" or key.startswith(("mag_", "magerr")):
        return u.mag
    if key.startswith("flux") or key in ("peak", "sky", "background"):
        return table_unit(pixel_units) if pixel_units else None
    return None


def _column(values):
    """A numpy column from a list of row values (None -> NaN or masked-free strings)."""
    import numpy as np

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return np.array([bool(v) for v in values])
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if all(isinstance(v, int) for v in present) and len(present) == len(values):
            return np.array(values, dtype=np.int64)
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    import json

    return np.array(
        [
            "" if v is None else (json.dumps(v) if isinstance(v, (list, dict, tuple)) else str(v))
            for v in values
        ]
    )


def to_qtable(
    rows: Sequence[Mapping],
    *,
    pixel_units: str | None = None,
    units: Mapping[str, str] | None = None,
    meta: Mapping | None = None,
):
    """An astropy ``QTable`` of ``rows`` (dicts; the columns are the union of their keys)
    with the units of :func:`column_unit`, ``units`` (name -> unit string) overriding."""
    from astropy import units as u
    from astropy.table import QTable

    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    table = QTable(meta=dict(meta or {}))
    for key in keys:
        col = _column([row.get(key) for row in rows])
        unit = None
        if units and key in units:
            unit = u.Unit(units[key]) if units[key] else None
        elif col.dtype.kind in "fi":
            unit = column_unit(key, pixel_units)
        table[key] = col * unit if unit is not None else col
    return table


def ecsv_path(csv_path) -> Path:
    """``catalogue.csv`` -> ``catalogue.ecsv`` (the ECSV written beside a CSV)."""
    path = Path(csv_path)
    return path.with_suffix(".ecsv")


def write_ecsv(
    path,
    rows: Sequence[Mapping],
    *,
    pixel_units: str | None = None,
    units: Mapping[str, str] | None = None,
    meta: Mapping | None = None,
) -> Path:
    """Write ``rows`` as an ECSV table with units (atomically); returns the path."""
    from galforge.fileio import atomic_write_bytes

    table = to_qtable(rows, pixel_units=pixel_units, units=units, meta=meta)
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    return atomic_write_bytes(Path(path), buffer.getvalue().encode("utf-8"))
