"""HDF5 and NumPy files: arrays of images in any axis layout, with band names and per-image
columns (a reader of :mod:`galforge.data.readers`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from galforge.data.rawimage import (
    LAYOUTS,
    RawImage,
    _units_for_dtype,
    default_bands,
)
from galforge.errors import ConfigError, DataError


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
    c = {
        "HW": 1,
        "NHW": 1,
        "HWC": arr.shape[-1],
        "NHWC": arr.shape[-1],
        "CHW": arr.shape[0],
        "NCHW": arr.shape[1],
    }[lay]
    rgb = np.dtype(arr.dtype) in (np.uint8, np.uint16) and int(c) == 3
    names = (
        tuple(bands)
        if bands is not None and len(bands) == int(c)
        else default_bands(int(c), rgb=rgb)
    )
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
                if (
                    k not in (dataset, "bands", "units")
                    and z[k].ndim == 1
                    and z[k].shape[0] == n0
                    and n0 > 1
                ):
                    extra[k] = z[k]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable NumPy file ({type(exc).__name__}: {exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: array of dtype {arr.dtype} is not numeric image data")
    units = units or _units_for_dtype(arr.dtype)
    yield from _array_images(path, arr, layout, bands, units, extra, limit)
