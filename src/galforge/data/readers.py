"""Readers for galaxy images as they come: PNG/JPEG/TIFF, FITS, HDF5 and NumPy files.

Each file reader yields :class:`RawImage` objects (float32 ``C×H×W`` + band names + units +
metadata); :func:`read_source` turns a folder or a file into an :class:`ImageSet`, applying
the non-finite pixel policy, the optional centre crop and resize, band selection, and the
consistency checks (one size, one band count, one unit).

Policy: a problem with one file of a folder (corrupt, empty, all-NaN, unreadable) skips that
file and records the reason in the :class:`ReadReport`; a problem with the whole input
(unknown path, empty folder, no readable image, mixed sizes without resize, different band
counts) raises :class:`galforge.errors.DataError` naming the file(s) and the fix.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galforge.data.display import is_preview_png
from galforge.data.imageset import ImageSet, ReadReport
from galforge.errors import ConfigError, DataError
from galforge.fitsheader import units_from_header

RASTER_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
FITS_EXT = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
HDF5_EXT = (".h5", ".hdf5", ".hdf", ".he5")
NPY_EXT = (".npy",)
NPZ_EXT = (".npz",)
SUPPORTED = RASTER_EXT + FITS_EXT + HDF5_EXT + NPY_EXT + NPZ_EXT

NAN_POLICIES = ("fill", "reject")
LAYOUTS = ("HW", "HWC", "CHW", "NHW", "NHWC", "NCHW")

# Wavelength order of common filter names, used to order bands found by a filename pattern.
_BAND_ORDER = [
    "FUV", "NUV", "u", "U", "B", "g", "G", "V", "r", "R", "i", "I", "z", "Z", "y", "Y",
    "J", "H", "K", "Ks", "W1", "W2", "W3", "W4",
]


def band_sort_key(name: str):
    """Sort key putting filter names in wavelength order (HST ``F606W`` by its number)."""
    if name in _BAND_ORDER:
        return (0, _BAND_ORDER.index(name), name)
    m = re.fullmatch(r"[Ff](\d{3,4})[A-Za-z]*", name)
    if m:
        return (1, int(m.group(1)), name)
    return (2, 0, name)


def file_kind(path) -> str | None:
    """``"raster"``, ``"fits"``, ``"hdf5"``, ``"npy"``, ``"npz"`` from the file name, or None."""
    name = Path(path).name.lower()
    for kind, exts in (
        ("fits", FITS_EXT),
        ("raster", RASTER_EXT),
        ("hdf5", HDF5_EXT),
        ("npy", NPY_EXT),
        ("npz", NPZ_EXT),
    ):
        if name.endswith(exts):
            return kind
    return None


def natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class RawImage:
    """One image from a file, before the set-level steps: float32 ``C×H×W``."""

    data: np.ndarray
    bands: tuple[str, ...]
    units: str
    meta: dict = field(default_factory=dict)
    label: str = ""  # file or file[index], used in messages
    weight: np.ndarray | None = None  # inverse variance C×H×W (0 = no information), if known
    warnings: list[str] = field(default_factory=list)  # what the reader guessed


def default_bands(c: int, rgb: bool = False) -> tuple[str, ...]:
    if rgb and c == 3:
        return ("R", "G", "B")
    if c == 1:
        return ("grey",) if rgb else ("band0",)
    return tuple(f"band{i}" for i in range(c))


def _units_for_dtype(dtype, fallback: str = "adu") -> str:
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return "8-bit level"
    if dt == np.uint16:
        return "16-bit level"
    return fallback


# ------------------------------------------------------------------------------ PNG (16 bit)


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG IHDR chunk, or None when not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def decode_png16(path) -> np.ndarray:
    """Decode a 16-bit-per-sample PNG (grey, grey+alpha, RGB, RGBA) to uint16 ``H×W×S``.

    Pillow reduces 16-bit colour PNGs to 8 bits; this decoder keeps every bit. Interlaced
    files are not supported (re-save them without interlacing).
    """
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise DataError(f"{path}: not a PNG file")
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            raise DataError(f"{path}: truncated PNG (chunk {ctype!r} cut short); re-export the file")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if ihdr is None or not idat:
        raise DataError(f"{path}: PNG without image data; re-export the file")
    width, height, depth, ctype_, _, _, interlace = ihdr
    if depth != 16:
        raise DataError(f"{path}: decode_png16 needs a 16-bit PNG, this one has {depth} bits")
    if interlace:
        raise DataError(f"{path}: interlaced 16-bit PNG is not supported; re-save it without interlacing")
    samples = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype_)
    if samples is None:
        raise DataError(f"{path}: unsupported 16-bit PNG colour type {ctype_}")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt PNG data ({exc}); re-export the file") from exc
    bpp = 2 * samples
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise DataError(f"{path}: truncated PNG data; re-export the file")
    rows = np.frombuffer(raw, dtype=np.uint8)[: height * (stride + 1)].reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        ftype = rows[y, 0]
        line = rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 1:
            cur = line.copy()
            lanes = cur[: (stride // bpp) * bpp].reshape(-1, bpp)
            cur = (np.cumsum(lanes, axis=0) % 256).reshape(-1)
        elif ftype == 2:
            cur = (line + prev) % 256
        elif ftype == 3:
            cur = line.copy()
            for x in range(stride):
                left = cur[x - bpp] if x >= bpp else 0
                cur[x] = (cur[x] + ((left + prev[x]) >> 1)) % 256
        elif ftype == 4:
            cur = line.copy()
            zero = np.zeros(bpp, dtype=np.int32)
            for x0 in range(0, stride, bpp):
                a = cur[x0 - bpp : x0] if x0 else zero
                c = prev[x0 - bpp : x0] if x0 else zero
                cur[x0 : x0 + bpp] = (cur[x0 : x0 + bpp] + _paeth(a, prev[x0 : x0 + bpp], c)) % 256
        else:
            raise DataError(f"{path}: corrupt PNG (unknown row filter {ftype})")
        out[y] = cur
        prev = cur
    u8 = out.astype(np.uint8).reshape(height, width, samples, 2)
    return (u8[..., 0].astype(np.uint16) << 8) | u8[..., 1].astype(np.uint16)


# ------------------------------------------------------------------------------- raster


def read_raster(path) -> Iterator[RawImage]:
    """PNG/JPEG/TIFF: 8 or 16 bit, grey (one band ``grey``) or colour (bands R, G, B; alpha
    dropped). Units ``"8-bit level"`` or ``"16-bit level"`` (float TIFF: ``"adu"``)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); remove it or re-export the image")
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        arr = _read_tiff(path)
        units = _units_for_dtype(arr.dtype)
    else:
        hdr = _png_header(path) if name.endswith(".png") else None
        if hdr is not None and hdr[0] == 16 and hdr[1] in (2, 4, 6):
            arr = decode_png16(path)
            if arr.shape[-1] in (2, 4):
                arr = arr[..., :-1]
            units = "16-bit level"
        else:
            arr, units = _read_pil(path, hdr)
    if arr.ndim == 2:
        chw = arr[None]
    elif arr.ndim == 3:
        chw = np.moveaxis(arr, -1, 0) if arr.shape[-1] <= 4 else arr
    else:
        raise DataError(f"{path}: unsupported image array shape {arr.shape}")
    c = chw.shape[0]
    yield RawImage(
        data=np.ascontiguousarray(chw, dtype=np.float32),
        bands=default_bands(c, rgb=True),
        units=units,
        meta={"file": str(path)},
        label=str(path),
    )


def _read_pil(path: Path, hdr) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                if mode in ("1", "LA"):
                    im = im.convert("L")
                elif mode in ("P", "PA"):
                    im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
                elif mode not in ("L", "RGB", "RGBA"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
                if arr.ndim == 3 and arr.shape[-1] == 4:
                    arr = arr[..., :3]
                return arr, "8-bit level"
            if mode.startswith("I;16") or mode == "I":
                arr = np.asarray(im).astype(np.int64)
                sixteen = mode.startswith("I;16") or (hdr is not None and hdr[0] == 16) or arr.max() > 255
                return arr.astype(np.uint16 if sixteen else np.uint8), (
                    "16-bit level" if sixteen else "8-bit level"
                )
            if mode == "F":
                return np.asarray(im, dtype=np.float32), "adu"
            raise DataError(f"{path}: unsupported image mode {mode!r}; convert it to RGB or grey")
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image (corrupt or wrong extension)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc}); re-export it") from exc


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            arr = tf.asarray()
            photometric = tf.pages[0].photometric
    except Exception as exc:
        raise DataError(f"{path}: corrupt or unreadable TIFF ({exc}); re-export it") from exc
    arr = np.asarray(arr)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (2, 4) and arr.shape[0] > 4:
        arr = arr[..., :-1] if arr.shape[-1] == 4 or int(photometric) == 1 else arr
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    return arr


# --------------------------------------------------------------------------------- FITS

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
        "RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")

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
                raise ConfigError(f"{path}: band_axis must be 0 (first) or -1 (last), got {band_axis}")
            chw = data if ax == 0 else np.moveaxis(data, -1, 0)
            bands = _cube_bands(header, chw.shape[0]) or _cube_bands(primary_header, chw.shape[0])
            bands = bands or default_bands(chw.shape[0])
        elif data.ndim == 4:
            # a stamp cube (galforge generate --format fits-cube): N galaxies x C bands x H x W
            bands = _cube_bands(header, data.shape[1]) or _cube_bands(primary_header,
                                                                      data.shape[1])
            bands = bands or default_bands(data.shape[1])
            for k in range(data.shape[0]):
                yield RawImage(np.ascontiguousarray(data[k]), tuple(bands), units_of(header),
                               {**meta, "plane": k}, f"{path}[{k}]")
            return
        else:
            raise DataError(f"{path}: FITS data of {data.ndim} dimensions {data.shape}; "
                            "expected 2-D, 3-D or a 4-D stamp cube")
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
        if not b and name and name.upper() not in ("PRIMARY", "SCI", "IMAGE", "COMPRESSED_IMAGE", ""):
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
    yield RawImage(np.ascontiguousarray(chw), tuple(bands), units_of(items[0][2]), meta,
                   str(path), warnings=warned)


# Roles of the image extensions of a science + mask + variance file (HSC/LSST ``IMAGE``,
# ``MASK``, ``VARIANCE``; HST ``SCI``, ``ERR``, ``DQ``, ``WHT``), by EXTTYPE, else EXTNAME.
_ROLES = {
    "IMAGE": "science", "SCI": "science", "SCIENCE": "science",
    "MASK": "mask", "DQ": "mask", "BPM": "mask", "FLAGS": "mask",
    "VARIANCE": "variance", "VAR": "variance",
    "ERR": "error", "SIGMA": "error", "RMS": "error", "NOISE": "error",
    "WHT": "weight", "WEIGHT": "weight", "IVAR": "weight", "INVVAR": "weight",
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
    planes = {k[3:]: int(v) for k, v in header.items()
              if k.startswith("MP_") and isinstance(v, int) and not isinstance(v, bool)}
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
        weight = np.where(np.isfinite(err) & (err > 0), 1.0 / np.where(err > 0, err, 1.0) ** 2,
                          0.0)
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
        warned.append(f"{path}: extensions {names} are not science, mask or variance planes "
                      "and were not read")
    return RawImage(
        np.ascontiguousarray(data[None]), (band,) if band else default_bands(1), units, meta,
        str(path), weight=None if weight is None else weight[None].astype(np.float32),
        warnings=warned,
    )


# ------------------------------------------------------------------------- HDF5 / NumPy


def infer_layout(shape, layout: str | None = None) -> str:
    """Axis layout of an array of images: HW, HWC, CHW, NHW, NHWC or NCHW.

    Defaults: 2-D → HW; 3-D → HWC when the last axis is ≤ 4 and the others longer, else NHW
    (a stack of one-band images); 4-D → NCHW when the last two axes are equal and the
    second is ≤ 16, NHWC when the middle two are equal and the last ≤ 16 (else NHWC when the
    last axis is ≤ 16 and the second longer, else NCHW). Give ``layout`` to override.
    """
    if layout is not None:
        lay = str(layout).upper()
        if lay not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if len(lay) != len(shape):
            raise ConfigError(f"layout {lay} does not fit an array of shape {tuple(shape)}")
        return lay
    nd = len(shape)
    if nd == 2:
        return "HW"
    if nd == 3:
        return "HWC" if (shape[-1] <= 4 and shape[0] > 4 and shape[1] > 4) else "NHW"
    if nd == 4:
        if shape[2] == shape[3] and shape[1] <= 16:
            return "NCHW"
        if shape[1] == shape[2] and shape[3] <= 16:
            return "NHWC"
        return "NHWC" if (shape[-1] <= 16 and shape[1] > 16) else "NCHW"
    raise DataError(f"array of shape {tuple(shape)}: expected 2 to 4 dimensions")


def _to_nchw(arr: np.ndarray, layout: str) -> np.ndarray:
    if layout == "HW":
        return arr[None, None]
    if layout == "HWC":
        return np.moveaxis(arr, -1, 0)[None]
    if layout == "CHW":
        return arr[None]
    if layout == "NHW":
        return arr[:, None]
    if layout == "NHWC":
        return np.moveaxis(arr, -1, 1)
    return arr


def _array_images(path, arr, layout, bands, units, extra_cols, limit) -> Iterator[RawImage]:
    lay = infer_layout(arr.shape, layout)
    n = 1 if lay in ("HW", "HWC", "CHW") else int(arr.shape[0])
    if limit is not None:
        n = min(n, int(limit))
    c = {"HW": 1, "NHW": 1, "HWC": arr.shape[-1], "NHWC": arr.shape[-1], "CHW": arr.shape[0], "NCHW": arr.shape[1]}[lay]
    rgb = np.dtype(arr.dtype) in (np.uint8, np.uint16) and int(c) == 3
    names = tuple(bands) if bands is not None and len(bands) == int(c) else default_bands(int(c), rgb=rgb)
    chunk = 256
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = np.asarray(arr[start:stop]) if lay.startswith("N") else np.asarray(arr)
        nchw = _to_nchw(block, lay).astype(np.float32)
        for k in range(nchw.shape[0]):
            idx = start + k
            meta = {"file": str(path), "index": idx}
            for col, values in extra_cols.items():
                v = values[idx]
                meta[col] = v.item() if hasattr(v, "item") else v
            yield RawImage(np.ascontiguousarray(nchw[k]), names, units, meta, f"{path}[{idx}]")


def _decode_names(values) -> tuple[str, ...]:
    out = []
    for v in np.atleast_1d(values):
        out.append(v.decode() if isinstance(v, bytes) else str(v))
    return tuple(out)


def hdf5_dataset_name(fh, dataset, path) -> tuple[str, dict]:
    """The image dataset of an open HDF5 file (``dataset``, else ``images``, else the only
    dataset of 3+ dimensions) and a {name: shape} map of every dataset."""
    import h5py

    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = obj.shape

    fh.visititems(visit)
    listing = ", ".join(f"{k} {v}" for k, v in found.items()) or "none"
    if dataset is None:
        if "images" in fh:
            dataset = "images"
        else:
            cands = [k for k, s in found.items() if len(s) >= 3]
            if len(cands) != 1:
                raise DataError(
                    f"{path}: no 'images' dataset; choose one with dataset=/--dataset "
                    f"(datasets: {listing})"
                )
            dataset = cands[0]
    if dataset not in fh or not isinstance(fh[dataset], h5py.Dataset):
        raise DataError(f"{path}: no dataset {dataset!r}; available: {listing}")
    return dataset, found


def read_hdf5(path, *, dataset=None, layout=None, limit=None) -> Iterator[RawImage]:
    """HDF5 (h5py): the ``images`` dataset (or ``dataset``), e.g. Galaxy10's N×H×W×C uint8.

    1-D datasets of the same length (labels such as Galaxy10's ``ans``, ``ra``, ``dec``) are
    copied into each image's meta. Band names from a ``bands`` attribute when present;
    units from a ``units``/``BUNIT`` attribute, else from the dtype (uint8 → 8-bit level).
    """
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except Exception as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with fh:
        dataset, found = hdf5_dataset_name(fh, dataset, path)
        ds = fh[dataset]
        lay = infer_layout(ds.shape, layout)
        n = int(ds.shape[0]) if lay.startswith("N") else 1
        extra = {}
        for k, s in found.items():
            if k != dataset and len(s) == 1 and s[0] == n and n > 1:
                vals = fh[k][()]
                if vals.dtype.kind in "biuf":
                    extra[k.split("/")[-1]] = vals
                elif vals.dtype.kind in "SUO":
                    extra[k.split("/")[-1]] = np.array(_decode_names(vals))
        bands = _decode_names(ds.attrs["bands"]) if "bands" in ds.attrs else None
        units = ds.attrs.get("units", ds.attrs.get("BUNIT"))
        units = units.decode() if isinstance(units, bytes) else units
        units = str(units) if units else _units_for_dtype(ds.dtype)
        yield from _array_images(path, ds, lay, bands, units, extra, limit)


def read_numpy(path, *, dataset=None, layout=None, limit=None) -> Iterator[RawImage]:
    """``.npy`` (one array, memory-mapped) or ``.npz`` (the ``images`` array, or ``dataset``,
    or the only array of 2+ dimensions; a ``bands`` string array names the bands; other 1-D
    arrays of length N go into the meta). Never unpickles anything."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    extra, bands, units = {}, None, None
    try:
        if path.name.lower().endswith(".npy"):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            z = np.load(path, allow_pickle=False)
            keys = list(z.keys())
            if dataset is None:
                if "images" in keys:
                    dataset = "images"
                else:
                    cands = [k for k in keys if z[k].ndim >= 2]
                    if len(cands) != 1:
                        raise DataError(
                            f"{path}: no 'images' array; choose one with dataset=/--dataset "
                            f"(arrays: {', '.join(keys)})"
                        )
                    dataset = cands[0]
            if dataset not in keys:
                raise DataError(f"{path}: no array {dataset!r}; available: {', '.join(keys)}")
            arr = z[dataset]
            if "bands" in keys:
                bands = _decode_names(z["bands"])
            if "units" in keys:
                units = str(np.asarray(z["units"]).reshape(-1)[0])
            lay0 = infer_layout(arr.shape, layout)
            n0 = arr.shape[0] if lay0.startswith("N") else 1
            for k in keys:
                if k not in (dataset, "bands", "units") and z[k].ndim == 1 and z[k].shape[0] == n0 and n0 > 1:
                    extra[k] = z[k]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable NumPy file ({type(exc).__name__}: {exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: array of dtype {arr.dtype} is not numeric image data")
    units = units or _units_for_dtype(arr.dtype)
    yield from _array_images(path, arr, layout, bands, units, extra, limit)


def read_file(path, *, dataset=None, hdu=None, band_axis=None, layout=None, limit=None) -> Iterator[RawImage]:
    """Yield the images of one file, chosen by its extension. Raises DataError for a file
    that cannot be read or has an unsupported extension."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "raster":
        return read_raster(path)
    if kind == "fits":
        return read_fits(path, hdu=hdu, band_axis=band_axis)
    if kind == "hdf5":
        return read_hdf5(path, dataset=dataset, layout=layout, limit=limit)
    if kind in ("npy", "npz"):
        return read_numpy(path, dataset=dataset, layout=layout, limit=limit)
    raise DataError(
        f"{path}: unsupported file type; supported extensions: {', '.join(SUPPORTED)}"
    )


# ------------------------------------------------------------------------- non-finite


def background_median(plane: np.ndarray) -> float:
    """Median of the finite pixels after two 3σ clips (an estimate of the sky level)."""
    v = plane[np.isfinite(plane)].astype(np.float64)
    for _ in range(2):
        if v.size < 10:
            break
        med = np.median(v)
        sig = 1.4826 * np.median(np.abs(v - med))
        if sig <= 0:
            break
        v = v[np.abs(v - med) <= 3 * sig]
    return float(np.median(v)) if v.size else 0.0


class _Rejected(Exception):
    def __init__(self, reason: str, nan_pixels: int):
        super().__init__(reason)
        self.reason = reason
        self.nan_pixels = nan_pixels


def apply_nan_policy(data: np.ndarray, policy: str, label: str) -> tuple[np.ndarray, int]:
    """Fill non-finite pixels with each band's background median (``"fill"``) or reject the
    image (``"reject"``). All-non-finite bands are always rejected. Returns (data, count)."""
    bad = ~np.isfinite(data)
    nbad = int(bad.sum())
    if nbad == 0:
        return data, 0
    per_band = bad.reshape(data.shape[0], -1).all(axis=1)
    if per_band.any():
        which = "image" if per_band.all() else f"band(s) {np.flatnonzero(per_band).tolist()}"
        raise _Rejected(f"all pixels are NaN/inf in the {which}", nbad)
    if policy == "reject":
        raise _Rejected(f"{nbad} NaN/inf pixels (nan_policy='reject')", nbad)
    out = data.copy()
    for c in range(data.shape[0]):
        if bad[c].any():
            out[c][bad[c]] = background_median(data[c])
    return out, nbad


# ------------------------------------------------------------------------------ sources


def compile_template(template: str) -> re.Pattern:
    """Regex for a filename template with ``{name}`` placeholders (``{id}_{band}.fits``)."""
    parts = re.split(r"\{(\w+)\}", template)
    rx = []
    seen = set()
    for k, part in enumerate(parts):
        if k % 2 == 0:
            rx.append(re.escape(part))
        else:
            if part in seen:
                rx.append(f"(?P={part})")
            else:
                seen.add(part)
                rx.append(f"(?P<{part}>[^/]+?)" if part != "band" else "(?P<band>[^/_.]+?)")
    return re.compile("".join(rx) + r"\Z")


@dataclass
class Item:
    """One image to read: a single file, or one file per band joined by a pattern."""

    key: str
    paths: list[Path]
    band_names: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict)


def list_folder(folder: Path, report: ReadReport, recursive: bool = False) -> list[Path]:
    """Image files of a folder (natural order); other entries are recorded as skipped."""
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir(), key=lambda p: natural_key(str(p)))
    if not entries:
        raise DataError(f"{folder}: the folder is empty; point to a folder with images")
    files, others = [], []
    for p in entries:
        if p.is_dir():
            if not recursive:
                report.skip(p, "sub-folder (not read; pass recursive=True to read sub-folders)")
            continue
        if file_kind(p) is None:
            others.append(p)
            report.skip(p, f"not an image file (extension {''.join(p.suffixes) or 'none'})")
            continue
        if p.name.lower().endswith(".png") and is_preview_png(p):
            others.append(p)
            report.skip(p, "a galforge grid/preview picture, not data")
            continue
        files.append(p)
    if not files:
        names = ", ".join(p.name for p in others[:8]) + (" ..." if len(others) > 8 else "")
        raise DataError(
            f"{folder}: no image files in the folder (found: {names or 'only sub-folders'}); "
            f"supported extensions: {', '.join(SUPPORTED)}"
        )
    return files


def guess_band_pattern(files: list[Path]) -> str | None:
    """A ``{id}<sep>{band}<ext>`` pattern the file names follow when a folder holds one file
    per band (``obj1_g.fits``, ``obj1_r.fits``, ...), or None.

    The names must all match, give 2 to 12 distinct bands and ids with more than one band.
    """
    if len(files) < 2:
        return None
    exts = {"".join(p.suffixes[-2:]) if p.name.lower().endswith((".gz", ".fz")) else p.suffix
            for p in files}
    if len(exts) != 1:
        return None
    ext = exts.pop()
    for sep in ("_", "-", "."):
        pattern = "{id}" + sep + "{band}" + ext
        rx = compile_template(pattern)
        groups: dict[str, set] = {}
        for p in files:
            m = rx.match(p.name)
            if not m:
                break
            groups.setdefault(m.group("id"), set()).add(m.group("band"))
        else:
            bands = set().union(*groups.values())
            multi = sum(len(b) > 1 for b in groups.values())
            if 2 <= len(bands) <= 12 and multi >= max(1, len(groups) // 2):
                return pattern
    return None


def pattern_items(files: list[Path], folder: Path, pattern: str, bands, report: ReadReport) -> list[Item]:
    """Group one-file-per-band files by the ``{id}`` of ``pattern`` (needs ``{band}``)."""
    from galforge.data.builtin import parse_bands

    if "{band}" not in pattern:
        raise ConfigError(f"pattern {pattern!r} must contain {{band}} (e.g. '{{id}}_{{band}}.fits')")
    rx = compile_template(pattern)
    groups: dict[str, dict[str, Path]] = {}
    for p in files:
        rel = p.relative_to(folder).as_posix()
        m = rx.match(rel) or rx.match(p.name)
        if not m:
            report.skip(p, f"file name does not match pattern {pattern!r}")
            continue
        gd = m.groupdict()
        band = gd.pop("band")
        key = "|".join(f"{v}" for _, v in sorted(gd.items())) or "0"
        groups.setdefault(key, {})[band] = p
    if not groups:
        raise DataError(f"{folder}: no file name matches pattern {pattern!r}")
    wanted = parse_bands(bands) if bands else tuple(
        sorted({b for g in groups.values() for b in g}, key=band_sort_key)
    )
    items = []
    for key in sorted(groups, key=natural_key):
        g = groups[key]
        missing = [b for b in wanted if b not in g]
        if missing:
            report.skip(folder / key, f"id {key!r}: missing band file(s) for {missing} (pattern {pattern!r})")
            continue
        items.append(Item(key=key, paths=[g[b] for b in wanted], band_names=tuple(wanted), meta={"id": key}))
    if not items:
        raise DataError(
            f"{folder}: no id has a file for every band {list(wanted)} with pattern {pattern!r}"
        )
    return items


def _iter_item(item: Item, opts: dict) -> Iterator[RawImage]:
    kw = {k: opts.get(k) for k in ("dataset", "hdu", "band_axis", "layout")}
    if len(item.paths) == 1 and item.band_names is None:
        for raw in read_file(item.paths[0], limit=opts.get("limit"), **kw):
            raw.meta.update(item.meta)
            yield raw
        return
    planes, units = [], None
    for p, b in zip(item.paths, item.band_names, strict=True):
        imgs = list(read_file(p, **kw))
        if len(imgs) != 1 or imgs[0].data.shape[0] != 1:
            got = imgs[0].data.shape[0] if len(imgs) == 1 else f"{len(imgs)} images"
            raise DataError(f"{p}: band file for {b!r} must hold one single-band image, found {got} bands")
        planes.append(imgs[0].data[0])
        units = units or imgs[0].units
    shapes = {pl.shape for pl in planes}
    if len(shapes) != 1:
        raise DataError(
            f"band files of {item.key!r} have different sizes ({', '.join(f'{p.name} {pl.shape}' for p, pl in zip(item.paths, planes, strict=True))})"
        )
    meta = {"file": str(item.paths[0]), "files": [str(p) for p in item.paths]}
    meta.update(item.meta)
    yield RawImage(np.stack(planes), tuple(item.band_names), units or "adu", meta, str(item.paths[0]))


def collect(items: list[Item], opts: dict, report: ReadReport, source: str, single: bool) -> ImageSet:
    """Read ``items`` into an ImageSet with the set-level policies (see module docstring)."""
    policy = opts.get("nan_policy") or "fill"
    if policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be 'fill' or 'reject', got {policy!r}")
    strict = bool(opts.get("strict"))
    limit = opts.get("limit")
    crop, size = opts.get("crop"), opts.get("size")
    method = opts.get("resize_method") or "nearest"
    arrays, metas, weights = [], [], []
    stats = {"resized": 0, "from": {}}
    first = None
    progress = task = None
    if opts.get("progress") and len(items) > 1:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task(f"reading {source}", total=len(items))
    try:
        first = _collect_items(items, opts, report, single, policy, strict, limit, crop, size,
                               method, arrays, metas, progress, task, weights, stats)
    finally:
        if progress is not None:
            progress.stop()
    if not arrays:
        reasons = "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in report.skipped[:5])
        raise DataError(
            f"{source}: no image could be read ({len(report.skipped)} skipped"
            + (f": {reasons}" if reasons else "")
            + ")"
        )
    images = np.stack(arrays).astype(np.float32, copy=False)
    bands = first[1]
    report.n_read = len(arrays)
    extra = set_level_extra(metas, stats, size, method)
    stack = None
    if all(w is not None for w in weights):
        stack = np.stack(weights).astype(np.float32, copy=False)
    elif any(w is not None for w in weights):
        report.warn(f"{source}: only {sum(w is not None for w in weights)} of {len(weights)} "
                    "images have a variance plane; the weights were dropped")
    iset = ImageSet(images=images, bands=bands, meta=metas, units=first[2], report=report,
                    source=source, extra=extra, weights=stack)
    return select_bands(iset, opts.get("bands"))


def set_level_extra(metas: list[dict], stats: dict, size, method) -> dict:
    """``extra`` of a read set: the common ``pixel_scale`` (arcsec/pixel, after any resize),
    the common ``zeropoint`` (FITS ``MAGZP``/``ZEROPT``) and, when images were resized on
    reading, what the resize did."""
    extra: dict = {}
    scales = [m.get("pixel_scale") for m in metas]
    if scales and all(isinstance(v, (int, float)) for v in scales):
        if max(scales) - min(scales) <= 1e-6 * max(abs(max(scales)), 1e-12):
            extra["pixel_scale"] = float(scales[0])
    zps = [m.get("magzp", m.get("zeropt")) for m in metas]
    if zps and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in zps):
        if max(zps) - min(zps) <= 1e-6:
            extra["zeropoint"] = float(zps[0])  # one zero point (FITS MAGZP/ZEROPT) for all
    if stats.get("resized"):
        h, w = (int(size), int(size)) if np.isscalar(size) else (int(v) for v in size)
        extra["resize"] = {"images": int(stats["resized"]), "from": dict(stats["from"]),
                           "to": [h, w], "method": method}
    return extra


def skip_entry(item: Item, exc: Exception) -> tuple[str, str]:
    """(path, reason) recording an unreadable item: the file the message names (or the
    item's first file), and the message without that leading path."""
    msg = str(exc)
    for p in item.paths:
        if msg.startswith(f"{p}: "):
            reason = strip_path(msg, p)
            if len(item.paths) > 1:
                reason = f"{reason} (id {item.key!r} skipped)"
            return str(p), reason
    return str(item.paths[0]), msg


def strip_path(message: str, path) -> str:
    """The reason part of a ``"PATH: reason"`` message (the path is recorded beside it)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


class _SetLevelError(DataError):
    """A problem of the input as a whole (never turned into a skip)."""


class SizeMismatch(_SetLevelError):
    """Images of one input with different sizes; ``detail`` says which, without the fix
    (the option to pass depends on the command)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


class _BandMismatch(_SetLevelError):
    """Files of one folder with different band names."""


def _is_set_level(exc: Exception) -> bool:
    return isinstance(exc, _SetLevelError)


def _collect_items(items, opts, report, single, policy, strict, limit, crop, size, method,
                   arrays, metas, progress, task, weights, stats):
    """The reading loop of :func:`collect`; appends to ``arrays``/``metas`` and returns the
    (label, bands, units, shape) of the first image kept."""
    from galforge.data import transforms

    first = None  # (label, bands, units, shape)
    for item in items:
        if progress is not None:
            progress.advance(task)
        if limit is not None and len(arrays) >= int(limit):
            break
        try:
            for raw in _iter_item(item, opts):
                if limit is not None and len(arrays) >= int(limit):
                    break
                for message in raw.warnings:
                    report.warn(message)
                try:
                    data, nbad = apply_nan_policy(raw.data, policy, raw.label)
                except _Rejected as rej:
                    if single and not raw.label.endswith("]"):
                        raise DataError(f"{raw.label}: {rej.reason}; the image cannot be used") from None
                    report.skip(raw.label, rej.reason, nan_pixels=rej.nan_pixels)
                    continue
                if nbad:
                    report.nan_pixels += nbad
                    report.nan_filled_images += 1
                    raw.meta["nan_filled"] = nbad
                weight = raw.weight
                if crop is not None:
                    data = _crop(data, crop)
                    weight = None if weight is None else _crop(weight, crop)
                if size is not None:
                    hc, wc = data.shape[-2:]
                    data = transforms.resize(data, size, method)
                    if weight is not None:
                        weight = np.maximum(transforms.resize(weight, size, method), 0.0)
                    if data.shape[-2:] != (hc, wc):
                        key = f"{hc}×{wc}"
                        stats["resized"] += 1
                        stats["from"][key] = stats["from"].get(key, 0) + 1
                        if isinstance(raw.meta.get("pixel_scale"), float):
                            raw.meta["pixel_scale"] *= float(np.sqrt(
                                hc * wc / (data.shape[-2] * data.shape[-1])))
                if first is None:
                    first = (raw.label, raw.bands, raw.units, data.shape)
                else:
                    _check_consistent(first, raw, data, crop, size)
                arrays.append(data)
                metas.append(raw.meta)
                weights.append(weight)
        except DataError as exc:
            if single or strict or _is_set_level(exc):
                raise
            report.skip(*skip_entry(item, exc))
    return first


def _crop(data: np.ndarray, crop):
    from galforge.data import transforms

    if isinstance(crop, float) and crop <= 1.0:
        return transforms.center_crop(data, fraction=crop)
    if isinstance(crop, (int, np.integer)) or (isinstance(crop, float) and crop > 1):
        return transforms.center_crop(data, pixels=int(crop))
    return transforms.center_crop(data, pixels=crop)


def _check_consistent(first, raw: RawImage, data: np.ndarray, crop, size) -> None:
    label0, bands0, units0, shape0 = first
    if data.shape[0] != shape0[0]:
        raise _SetLevelError(
            f"{raw.label} has {data.shape[0]} band(s) {raw.bands} but {label0} has {shape0[0]} "
            f"{bands0}; every file must have the same bands (select them with bands=/--bands or "
            "split the folder)"
        )
    if data.shape[1:] != shape0[1:]:
        detail = (f"images of different sizes: {raw.label} is {data.shape[1]}×{data.shape[2]} "
                  f"but {label0} is {shape0[1]}×{shape0[2]}")
        raise SizeMismatch(
            f"{detail}; pass resize=/--size N (with --resize-method) or crop=/--crop to bring "
            "every image to one size", detail=detail)
    if raw.bands != bands0 and not all(b.startswith(("band", "grey")) for b in raw.bands + bands0):
        raise _BandMismatch(
            f"{raw.label} has bands {raw.bands} but {label0} has {bands0}; to join one file per "
            "band use pattern=/--pattern '{id}_{band}.fits'"
        )
    if raw.units != units0:
        raise _SetLevelError(
            f"{raw.label} is in units {raw.units!r} but {label0} in {units0!r}; read them separately"
        )


def select_bands(iset: ImageSet, bands) -> ImageSet:
    """Select/reorder bands by name, or rename them when ``bands`` has as many new names."""
    if not bands:
        return iset
    from galforge.data.builtin import parse_bands

    want = parse_bands(bands)
    if all(b in iset.bands for b in want):
        idx = [iset.bands.index(b) for b in want]
        if idx == list(range(len(iset.bands))):
            return iset
        return ImageSet(
            images=np.ascontiguousarray(iset.images[:, idx]), bands=want, meta=iset.meta,
            units=iset.units, report=iset.report, source=iset.source, extra=iset.extra,
            weights=None if iset.weights is None else np.ascontiguousarray(iset.weights[:, idx]),
        )
    if len(want) == len(iset.bands):
        iset.bands = want
        return iset
    raise ConfigError(
        f"bands {list(want)} not found in {iset.source} (its bands: {list(iset.bands)}); give "
        f"names among those to select, or {len(iset.bands)} names to rename"
    )


def read_source(source, **opts) -> ImageSet:
    """Read a folder or a single file (see :func:`galforge.data.load_images` for options)."""
    path = Path(source).expanduser()
    report = ReadReport()
    if not path.exists():
        raise DataError(f"{source}: no such file or folder; check the path")
    if path.is_dir():
        files = list_folder(path, report, recursive=bool(opts.get("recursive")))
        if opts.get("pattern"):
            items = pattern_items(files, path, opts["pattern"], opts.get("bands"), report)
        else:
            items = [Item(key=p.name, paths=[p]) for p in files]
        try:
            return collect(items, opts, report, str(source), single=False)
        except _BandMismatch as exc:
            guess = None if opts.get("pattern") else guess_band_pattern(files)
            if guess is None:
                raise
            raise DataError(
                f"{source}: the files hold one band each ({exc.args[0].split(';')[0]}); they "
                f"look like one file per band: join them with --pattern '{guess}' (train: "
                f"--set data.options.pattern='{guess}'; Python: pattern=)"
            ) from None
    if file_kind(path) is None:
        raise DataError(
            f"{path}: unsupported file type; supported extensions: {', '.join(SUPPORTED)}"
        )
    return collect([Item(key=path.name, paths=[path])], opts, report, str(source), single=True)
