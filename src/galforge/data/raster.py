"""PNG, JPEG and TIFF files: 8 or 16 bit, grey or colour (a reader of
:mod:`galforge.data.readers`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from galforge.data.png16 import decode_png16, png_header
from galforge.data.rawimage import (
    RawImage,
    _units_for_dtype,
    default_bands,
)
from galforge.errors import DataError


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
        hdr = png_header(path) if name.endswith(".png") else None
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
            if mode in (
                "1",
                "L",
                "P",
                "LA",
                "PA",
                "RGB",
                "RGBA",
                "CMYK",
                "YCbCr",
                "LAB",
                "HSV",
                "RGBX",
            ):
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
                sixteen = (
                    mode.startswith("I;16") or (hdr is not None and hdr[0] == 16) or arr.max() > 255
                )
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
