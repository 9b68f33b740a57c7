"""What every file reader of :mod:`galforge.data.readers` shares: the file kinds by extension,
band names (defaults, wavelength order) and :class:`RawImage`, one decoded image before the
set-level steps."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    "FUV",
    "NUV",
    "u",
    "U",
    "B",
    "g",
    "G",
    "V",
    "r",
    "R",
    "i",
    "I",
    "z",
    "Z",
    "y",
    "Y",
    "J",
    "H",
    "K",
    "Ks",
    "W1",
    "W2",
    "W3",
    "W4",
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
