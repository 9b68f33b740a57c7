"""FITS files: images, cubes, one file per band, and science + mask + variance extensions
(a reader of :mod:`galforge.data.readers`)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from galforge.data.rawimage import (
    RawImage,
    band_sort_key,
    default_bands,
)
from galforge.errors import ConfigError, DataError
from galforge.fitsheader import units_from_header

_BAND_KEYS = ("FILTER", "BAND", "FILTNAM1", "FILTER1")


def _header_band(header) -> str | None:
    for key in _BAND_KEYS:
        v = header.get(key)
        if v is not None and str(v).strip():
            return str(v).strip()
    return None


def _cube_bands(header, c: int) -> tuple[str, ...] | None:
    from galforge.data.builtin import parse_bands

    if header.get("BANDS"):
        names = parse_bands(str(header["BANDS"]))
        if len(names) == c:
            return names
    for base in ("BAND", "FILTER"):
        for start in (0, 1):
            names = [header.get(f"{base}{start + k}") for k in range(c)]
            if all(v is not None and str(v).strip() for v in names):
                return tuple(str(v).strip() for v in names)
    return None


def header_pixel_scale(header) -> float | None:
    """Pixel scale in arcsec/pixel from a FITS header's celestial WCS (``CD`` matrix or
    ``CDELT``, in degrees) or a ``PIXSCALE``/``PIXSCAL1``/``SECPIX`` card; None without one."""
    ctype = str(header.get("CTYPE1", ""))
    celestial = "-" in ctype and ctype[:4].strip("-").upper() in (
        "RA",
        "DEC",
        "GLON",
        "GLAT",
        "ELON",
        "ELAT",
    )

    def num(key):
        v = header.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    if celestial:
        cd = [num(k) for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")]
        if cd[0] is not None and cd[3] is not None:
            det = abs(cd[0] * cd[3] - (cd[1] or 0.0) * (cd[2] or 0.0))
            if det > 0:
                return float(np.sqrt(det) * 3600.0)
        d1, d2 = num("CDELT1"), num("CDELT2")
        if d1 and d2:
            return float(np.sqrt(abs(d1 * d2)) * 3600.0)
    for key in ("PIXSCALE", "PIXSCAL1", "SECPIX"):
        v = num(key)
        if v and v > 0:
            return float(v)
    return None


def read_fits(path, *, hdu=None, band_axis=None) -> Iterator[RawImage]:
    """FITS: a 2-D image (one band), a 3-D cube with a band axis (``band_axis``, default: the
    first numpy axis, or the last when it is short and the others long) or a multi-extension
    file with one 2-D band per image HDU. ``hdu`` (index or EXTNAME) reads a single HDU.

    Band names come from ``FILTER``/``BAND``/``FILTNAM1`` headers (cubes: ``BANDS`` or
    ``BAND0..``/``BAND1..``; MEF: each HDU's header, else its ``EXTNAME``). Units from
    ``BUNIT``, else ``"adu"``.
    """
    from astropy.io import fits

    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty FITS file (0 bytes)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False) as hl:
                hl.verify("silentfix")
                primary_header = hl[0].header
                if hdu is not None:
                    try:
                        chosen = [(hdu, hl[hdu])]
                    except (KeyError, IndexError) as exc:
                        names = [h.name for h in hl]
                        raise DataError(
                            f"{path}: no HDU {hdu!r}; the file has {len(hl)} HDUs ({', '.join(names)})"
                        ) from exc
                else:
                    chosen = [(i, h) for i, h in enumerate(hl) if h.is_image]
                items = []
                for i, h in chosen:
                    data = h.data
                    if data is None or data.ndim < 2:
                        continue
                    items.append((i, h.name, h.header.copy(), np.array(data)))
        for w in caught:
            msg = str(w.message)
            if "truncated" in msg.lower():
                raise DataError(f"{path}: truncated FITS file ({msg}); re-download or re-export it")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{path}: truncated or corrupt FITS file ({type(exc).__name__}: {exc}); "
            "re-download or re-export it"
        ) from exc
    if not items:
        raise DataError(f"{path}: FITS file has no image data in any HDU")

    def units_of(header):
        return units_from_header(header, primary_header)

    meta = {"file": str(path)}
    for key in ("OBJECT", "RA", "DEC", "CRVAL1", "CRVAL2", "EXPTIME", "MAGZP", "ZEROPT"):
        v = primary_header.get(key)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            meta[key.lower()] = v

    roles = [plane_role(name, header) for _, name, header, _ in items]
    if len(items) > 1 and "science" in roles and set(roles) - {"science", "other"}:
        yield _science_with_planes(path, items, roles, meta, primary_header, units_of)
        return
    items = [(i, name, header, np.asarray(d, dtype=np.float32)) for i, name, header, d in items]
    if len(items) == 1:
        i, name, header, data = items[0]
        scale = header_pixel_scale(header) or header_pixel_scale(primary_header)
        if scale:
            meta["pixel_scale"] = scale
        while data.ndim > 3 and data.shape[0] == 1:
            data = data[0]
        if data.ndim == 2:
            band = _header_band(header) or _header_band(primary_header)
            bands = (band,) if band else default_bands(1)
            chw = data[None]
        elif data.ndim == 3:
            ax = band_axis
            if ax is None:
                ax = 2 if (data.shape[0] > 16 and data.shape[2] <= 16) else 0
            if ax not in (0, 2, -1):
                raise ConfigError(
                    f"{path}: band_axis must be 0 (first) or -1 (last), got {band_axis}"
                )
            chw = data if ax == 0 else np.moveaxis(data, -1, 0)
            bands = _cube_bands(header, chw.shape[0]) or _cube_bands(primary_header, chw.shape[0])
            bands = bands or default_bands(chw.shape[0])
        elif data.ndim == 4:
            # a stamp cube (galforge generate --format fits-cube): N galaxies x C bands x H x W
            bands = _cube_bands(header, data.shape[1]) or _cube_bands(primary_header, data.shape[1])
            bands = bands or default_bands(data.shape[1])
            for k in range(data.shape[0]):
                yield RawImage(
                    np.ascontiguousarray(data[k]),
                    tuple(bands),
                    units_of(header),
                    {**meta, "plane": k},
                    f"{path}[{k}]",
                )
            return
        else:
            raise DataError(
                f"{path}: FITS data of {data.ndim} dimensions {data.shape}; "
                "expected 2-D, 3-D or a 4-D stamp cube"
            )
        yield RawImage(np.ascontiguousarray(chw), tuple(bands), units_of(header), meta, str(path))
        return

    # Several image HDUs: one band per HDU.
    shapes = {tuple(d.shape) for _, _, _, d in items}
    if any(d.ndim != 2 for _, _, _, d in items) or len(shapes) != 1:
        desc = ", ".join(f"HDU {i} {tuple(d.shape)}" for i, _, _, d in items)
        raise DataError(
            f"{path}: image extensions of different shapes ({desc}); choose one with hdu=/--hdu"
        )
    bands, named = [], []
    for i, name, header, _ in items:
        b = _header_band(header)
        named.append(bool(b) or band_sort_key(name or "")[0] < 2)
        if (
            not b
            and name
            and name.upper() not in ("PRIMARY", "SCI", "IMAGE", "COMPRESSED_IMAGE", "")
        ):
            b = name
        bands.append(b or f"band{i}")
    if len(set(bands)) != len(bands):
        bands = [f"band{i}" for i in range(len(items))]
    chw = np.stack([d for _, _, _, d in items])
    scale = header_pixel_scale(items[0][2]) or header_pixel_scale(primary_header)
    if scale:
        meta["pixel_scale"] = scale
    warned = []
    if not all(named):
        listing = ", ".join(f"{n or i}" for i, n, _, _ in items)
        warned.append(
            f"{path}: the image extensions ({listing}) were read as {len(items)} bands "
            f"{tuple(bands)}, but they do not look like filters (no FILTER/BAND card, not a "
            "filter name); read one with --hdu, or name them with --bands if they are bands"
        )
    yield RawImage(
        np.ascontiguousarray(chw),
        tuple(bands),
        units_of(items[0][2]),
        meta,
        str(path),
        warnings=warned,
    )


# Roles of the image extensions of a science + mask + variance file (HSC/LSST ``IMAGE``,
# ``MASK``, ``VARIANCE``; HST ``SCI``, ``ERR``, ``DQ``, ``WHT``), by EXTTYPE, else EXTNAME.
_ROLES = {
    "IMAGE": "science",
    "SCI": "science",
    "SCIENCE": "science",
    "MASK": "mask",
    "DQ": "mask",
    "BPM": "mask",
    "FLAGS": "mask",
    "VARIANCE": "variance",
    "VAR": "variance",
    "ERR": "error",
    "SIGMA": "error",
    "RMS": "error",
    "NOISE": "error",
    "WHT": "weight",
    "WEIGHT": "weight",
    "IVAR": "weight",
    "INVVAR": "weight",
}
#: Mask planes (LSST/HSC ``MP_<NAME>`` bit cards) whose pixels carry no usable value.
BAD_MASK_PLANES = ("BAD", "SAT", "CR", "NO_DATA", "SUSPECT", "UNMASKEDNAN")


def plane_role(extname: str, header) -> str:
    """``science``, ``mask``, ``variance``, ``error``, ``weight`` or ``other`` for an HDU."""
    for key in (str(header.get("EXTTYPE", "")).strip().upper(), str(extname or "").upper()):
        if key in _ROLES:
            return _ROLES[key]
    return "other"


def bad_pixels(mask: np.ndarray, header) -> tuple[np.ndarray, list[str]]:
    """Pixels a mask plane flags as unusable, and the names of the planes used.

    LSST/HSC masks name their bits in ``MP_<NAME>`` cards; the planes of
    :data:`BAD_MASK_PLANES` flag a pixel (DETECTED and the like mark sources, not defects).
    A mask without such cards (HST ``DQ``, a plain 0/1 mask) flags every non-zero pixel.
    """
    mask = np.asarray(mask)
    if mask.dtype.kind == "f":
        mask = np.where(np.isfinite(mask), mask, 1).astype(np.int64)
    mask = mask.astype(np.int64)
    planes = {
        k[3:]: int(v)
        for k, v in header.items()
        if k.startswith("MP_") and isinstance(v, int) and not isinstance(v, bool)
    }
    if not planes:
        return mask != 0, ["any non-zero value"]
    used = [name for name in BAD_MASK_PLANES if name in planes]
    bits = 0
    for name in used:
        bits |= 1 << planes[name]
    return (mask & bits) != 0, used


def _science_with_planes(path, items, roles, meta, primary_header, units_of) -> RawImage:
    """One image from a science + mask/variance file: masked pixels become NaN (so the NaN
    policy fills or rejects them) and the variance is kept as an inverse-variance weight."""
    by_role: dict[str, list] = {}
    for item, role in zip(items, roles, strict=True):
        by_role.setdefault(role, []).append(item)
    for role, found in by_role.items():
        if role != "other" and len(found) > 1:
            names = ", ".join(str(n or i) for i, n, _, _ in found)
            raise DataError(
                f"{path}: {len(found)} {role} extensions ({names}); choose one with hdu=/--hdu"
            )
    i, name, header, sci = by_role["science"][0]
    sci = np.asarray(sci, dtype=np.float32)
    if sci.ndim != 2:
        raise DataError(f"{path}: science extension {name or i} is {sci.ndim}-D; expected 2-D")
    layout = [f"{name or i}=science"]
    for role, found in by_role.items():
        if role in ("science", "other"):
            continue
        j, other, _, plane = found[0]
        if np.shape(plane) != sci.shape:
            raise DataError(
                f"{path}: {role} extension {other or j} is {np.shape(plane)} but the science "
                f"image is {sci.shape}; choose the image with hdu=/--hdu"
            )
        layout.append(f"{other or j}={role}")
    data = sci.copy()
    weight = None
    if "variance" in by_role:
        var = np.asarray(by_role["variance"][0][3], dtype=np.float64)
        weight = np.where(np.isfinite(var) & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    elif "error" in by_role:
        err = np.asarray(by_role["error"][0][3], dtype=np.float64)
        weight = np.where(np.isfinite(err) & (err > 0), 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0)
    elif "weight" in by_role:
        wht = np.asarray(by_role["weight"][0][3], dtype=np.float64)
        weight = np.where(np.isfinite(wht) & (wht > 0), wht, 0.0)
    meta = dict(meta)
    if "mask" in by_role:
        _, _, mask_header, mask = by_role["mask"][0]
        bad, used = bad_pixels(mask, mask_header)
        data[bad] = np.nan
        if weight is not None:
            weight[bad] = 0.0
        meta["masked_pixels"] = int(bad.sum())
        meta["mask_planes"] = used
    meta["extensions"] = layout
    band = _header_band(header) or _header_band(primary_header)
    scale = header_pixel_scale(header) or header_pixel_scale(primary_header)
    if scale:
        meta["pixel_scale"] = scale
    units = units_of(header)
    warned = []
    if "other" in by_role:
        names = ", ".join(str(n or j) for j, n, _, _ in by_role["other"])
        warned.append(
            f"{path}: extensions {names} are not science, mask or variance planes and were not read"
        )
    return RawImage(
        np.ascontiguousarray(data[None]),
        (band,) if band else default_bands(1),
        units,
        meta,
        str(path),
        weight=None if weight is None else weight[None].astype(np.float32),
        warnings=warned,
    )
