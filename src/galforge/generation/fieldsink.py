"""Where a deep field's tiles go: a chunked zarr array, a FITS file written section by section,
or a memory-mapped ``.npy`` (:class:`FieldSink`); reading a field back; the FITS copy and the
PNG preview streamed from a finished field.  Part of :mod:`galforge.generation.field`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from galforge import fitsheader
from galforge.errors import ConfigError
from galforge.fileio import atomic_file, atomic_write_json, reserve_space
from galforge.generation import fieldio

#: the zarr specification fields are written in by default, and the names of their axes
ZARR_FORMAT = 3
DIMENSIONS = ("band", "y", "x")
_FITS_BLOCK = 2880


def _fits_header(shape: tuple[int, int, int], meta: dict):
    from astropy.io import fits

    c, h, w = shape
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = -32
    hdr["NAXIS"] = 3
    hdr["NAXIS1"] = w
    hdr["NAXIS2"] = h
    hdr["NAXIS3"] = c
    hdr["EXTEND"] = True
    fitsheader.unit_cards(hdr, meta.get("units"))
    fitsheader.band_cards(hdr, list(meta.get("bands", [])), filter_card=False)
    hdr["SEED"] = (int(meta.get("seed", 0)), "latent seed of the field")
    hdr["BUNDLE"] = (str(meta.get("bundle_id", "")), "galforge bundle id of the generator")
    hdr["TILE"] = (int(meta.get("tile", 0)), "tile size used to generate the field")
    hdr["ENSEMBLE"] = (int(meta.get("ensemble", 1)), "generators in the self-ensemble")
    hdr["ORIGIN"] = "galforge"
    fieldio.provenance_cards(hdr, meta)
    return hdr


class FieldSink:
    """Where tiles go: the output file, opened lazily in every process that writes."""

    def __init__(self, path: Path, fmt: str, shape: tuple[int, int, int], tile: int):
        self.path, self.fmt, self.shape, self.tile = Path(path), fmt, shape, tile
        self.data_offset = 0

    def create(self, meta: dict) -> None:
        c, h, w = self.shape
        if self.fmt == "zarr":
            import zarr

            version = int(meta.get("zarr_format", ZARR_FORMAT))
            # zarr v3 names the dimensions in the array's metadata; v2 has no such field, so
            # the names go where xarray looks for them (the _ARRAY_DIMENSIONS attribute)
            names = {"dimension_names": DIMENSIONS} if version == 3 else {}
            arr = zarr.open_array(
                str(self.path),
                mode="w",
                shape=self.shape,
                chunks=(c, self.tile, self.tile),
                dtype="float32",
                fill_value=float("nan"),
                zarr_format=version,
                **names,
            )
            arr.attrs.update(meta)
            if version == 2:
                arr.attrs["_ARRAY_DIMENSIONS"] = list(DIMENSIONS)
        elif self.fmt == "npy":
            np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)
            reserve_space(self.path)  # a full disk now, not a crash when a tile is written
            atomic_write_json(self.path.with_name(self.path.name + ".json"), meta)
        else:
            header = _fits_header(self.shape, meta).tostring().encode("ascii")
            nbytes = c * h * w * 4
            total = len(header) + -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK
            with open(self.path, "wb") as fh:
                fh.write(header)
                fh.truncate(total)

    def open(self) -> None:
        if self.fmt == "fits":
            from astropy.io import fits

            with open(self.path, "rb") as fh:
                hdr = fits.Header.fromfile(fh)
                self.data_offset = fh.tell()
            if (hdr["NAXIS3"], hdr["NAXIS2"], hdr["NAXIS1"]) != self.shape:
                raise ConfigError(f"{self.path}: existing FITS has another shape; remove it")

    def write(self, y0: int, x0: int, data: np.ndarray) -> None:
        c, h, w = data.shape
        if self.fmt == "zarr":
            import zarr

            arr = zarr.open_array(str(self.path), mode="r+")
            arr[:, y0 : y0 + h, x0 : x0 + w] = data
        elif self.fmt == "npy":
            mm = np.load(self.path, mmap_mode="r+")
            mm[:, y0 : y0 + h, x0 : x0 + w] = data
            mm.flush()
            del mm
        else:
            _, fh_h, fh_w = self.shape
            big = np.ascontiguousarray(data.astype(">f4"))
            fd = os.open(self.path, os.O_WRONLY)
            try:
                for ci in range(c):
                    for r in range(h):
                        off = self.data_offset + ((ci * fh_h + y0 + r) * fh_w + x0) * 4
                        os.pwrite(fd, big[ci, r].tobytes(), off)
            finally:
                os.close(fd)

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` of every band, ``C x rows x W`` float32."""
        if self.fmt == "zarr":
            import zarr

            return np.asarray(zarr.open_array(str(self.path), mode="r")[:, y0:y1, :])
        if self.fmt == "npy":
            return np.array(np.load(self.path, mmap_mode="r")[:, y0:y1, :])
        c, h, w = self.shape
        mm = np.memmap(self.path, dtype=">f4", mode="r", offset=self.data_offset, shape=(c, h, w))
        return np.asarray(mm[:, y0:y1, :], dtype=np.float32)


def read_field(path) -> tuple[np.ndarray, dict]:
    """Read a whole field written by :func:`generate_field` -> ``(C x H x W array, metadata)``.

    Meant for fields that fit in memory (tests, small fields); large fields are better read
    lazily, e.g. with ``zarr.open_array`` or ``astropy.io.fits.open(memmap=True)``.
    """
    path = Path(path)
    if path.is_dir():
        import zarr

        arr = zarr.open_array(str(path), mode="r")
        return np.asarray(arr[...]), dict(arr.attrs)
    if path.suffix == ".npy":
        meta_path = path.with_name(path.name + ".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return np.load(path), meta
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        # the primary HDU, or the image extension of a tile-compressed field
        hdu = next((h for h in hdul if h.is_image and h.data is not None), hdul[0])
        hdr = hdu.header
        data = np.asarray(hdu.data, dtype=np.float32)
        meta = {
            "bands": [b for b in str(hdr.get("BANDS", "")).split(",") if b],
            "units": fitsheader.units_from_header(hdr, default=""),
            "seed": hdr.get("SEED"),
            "bundle_id": hdr.get("BUNDLE", ""),
        }
    return data, meta


def write_fits_from(sink: FieldSink, path: Path, meta: dict, rows: int | None = None) -> Path:
    """Stream a zarr/npy field into a FITS cube, a band of rows at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fits_sink = FieldSink(tmp, "fits", sink.shape, sink.tile)
        fits_sink.create(meta)
        fits_sink.open()
        rows = rows or sink.tile
        _, h, _ = sink.shape
        for y0 in range(0, h, rows):
            fits_sink.write(y0, 0, sink.read(y0, min(h, y0 + rows)))
    return path


def write_preview(sink: FieldSink, path: Path, bands, units, max_side: int = 1024) -> Path:
    """RGB PNG of the field block-averaged so that its longer side is at most ``max_side``."""
    from PIL import Image

    from galforge.data.display import lupton_rgb, preview_png_info

    c, h, w = sink.shape
    f = max(1, math.ceil(max(h, w) / max_side))
    ph, pw = h // f, w // f
    if ph == 0 or pw == 0:
        raise ConfigError(f"preview: the field is too small for a {max_side} pixel preview")
    small = np.zeros((c, ph, pw), np.float32)
    step = max(f, (sink.tile // f) * f)
    for y0 in range(0, ph * f, step):
        y1 = min(ph * f, y0 + step)
        block = sink.read(y0, y1)[:, :, : pw * f]
        small[:, y0 // f : y1 // f] = block.reshape(c, (y1 - y0) // f, f, pw, f).mean(axis=(2, 4))
    rgb = lupton_rgb(small, list(bands), units)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(
            tmp, format="PNG", pnginfo=preview_png_info()
        )
    return path
