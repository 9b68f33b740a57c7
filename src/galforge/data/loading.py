"""The one entry point of images into galforge: :func:`load_images` (re-exported by
:mod:`galforge.data`), and the canonical names of its options (:func:`normalize_options`).

It dispatches on the source: ``builtin:`` specs (:mod:`galforge.data.builtin`), prepared sets
(:mod:`galforge.data.prepared`), catalogue selection (:mod:`galforge.data.catalog`) and files or
folders (:mod:`galforge.data.readers`).
"""

from __future__ import annotations

from pathlib import Path

from galforge.data.imageset import ImageSet
from galforge.errors import ConfigError, DataError

__all__ = ["KNOWN_OPTIONS", "load_images", "normalize_options"]

_OPTION_ALIASES = {
    "resize": "size",
    "method": "resize_method",
    "hdf5_dataset": "dataset",
    "dataset_name": "dataset",
    "id_col": "id_column",
    "catalogue": "catalog",
}

KNOWN_OPTIONS = (
    "catalog",
    "where",
    "id_column",
    "template",
    "catalog_columns",
    "nan_policy",
    "bands",
    "pattern",
    "dataset",
    "hdu",
    "band_axis",
    "layout",
    "crop",
    "size",
    "resize_method",
    "limit",
    "recursive",
    "strict",
    "progress",
)


def normalize_options(options: dict) -> dict:
    """Canonical option names (``resize``→``size``, ``hdf5_dataset``→``dataset``, ...) with
    ``None`` values dropped; unknown names raise ConfigError listing the known ones."""
    out = {}
    for k, v in options.items():
        key = _OPTION_ALIASES.get(k, k)
        if key not in KNOWN_OPTIONS:
            raise ConfigError(
                f"unknown data option {k!r}; known options: {', '.join(KNOWN_OPTIONS)}"
            )
        if v is None or (
            isinstance(v, (list, tuple)) and len(v) == 0 and key in ("where", "bands")
        ):
            continue
        out[key] = v
    if isinstance(out.get("where"), str):
        out["where"] = [out["where"]]
    if "size" in out and isinstance(out["size"], str):
        try:
            out["size"] = int(out["size"])
        except ValueError as exc:
            raise ConfigError(
                f"size/resize must be an integer number of pixels, got {out['size']!r}"
            ) from exc
    if "crop" in out:
        from galforge.data.transforms import parse_crop

        out["crop"] = parse_crop(out["crop"], "crop")
    if "limit" in out:
        out["limit"] = int(out["limit"])
        if out["limit"] < 1:
            raise ConfigError(f"limit must be >= 1, got {out['limit']}")
    if out.get("nan_policy", "fill") not in ("fill", "reject"):
        raise ConfigError(
            f"nan_policy (--nan-policy) must be fill or reject, got {out['nan_policy']!r}"
        )
    return out


def load_images(source, **options) -> ImageSet:
    """Read images from ``source`` into an :class:`ImageSet`.

    ``source`` is a folder of images, one file (PNG/JPEG/TIFF/FITS/HDF5/npy/npz), a prepared
    data set folder (``galforge data prepare``), or a ``builtin:`` spec
    (``builtin:galsim?n=5000&size=64&seed=3``, ``builtin:hdf``,
    ``builtin:hdf-stamps?size=64``).

    Options:

    * ``catalog`` (CSV path), ``where`` (list of conditions such as ``"P_EL>0.8"``, all must
      hold), ``id_column``, ``template`` (file name per catalogue id, ``"{id}.jpg"``),
      ``catalog_columns`` (extra columns copied into the meta) — select files through a
      catalogue; unmatched ids and files are listed in ``report.catalog``;
    * ``pattern`` — join one file per band, e.g. ``"{id}_{band}.fits"``; ``bands`` — the
      bands to keep (select/reorder by name) or new names for the bands;
    * ``nan_policy`` — ``"fill"`` (non-finite pixels get the band's background median) or
      ``"reject"`` (skip such images); counted in the report either way;
    * ``dataset`` (HDF5/npz array name), ``hdu`` (FITS HDU), ``band_axis`` (FITS cube),
      ``layout`` (array axes: NHWC, NCHW, ...);
    * ``crop`` (fraction ≤ 1 or pixels), ``size``/``resize`` (pixels) with
      ``resize_method`` (nearest, bicubic, area);
    * ``limit`` (read at most this many images), ``recursive`` (read sub-folders), ``strict``
      (raise on the first unreadable file instead of skipping it), ``progress`` (show a
      progress bar while reading files).

    Raises :class:`galforge.errors.DataError` (bad data) or ``ConfigError`` (bad option).
    """
    opts = normalize_options(options)
    if isinstance(source, ImageSet):
        return source
    src = str(source)
    if src.startswith("builtin:"):
        from galforge.data.builtin import from_spec

        iset = from_spec(src)
        return _post_process(iset, opts)
    path = Path(src).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():
        from galforge.data.prepared import is_prepared, load_prepared

        if is_prepared(path):
            return _post_process(load_prepared(path), opts)
    if opts.get("catalog"):
        from galforge.data.catalog import load_with_catalog

        return load_with_catalog(path, **opts)
    if not path.exists():
        raise DataError(
            f"{src}: no such file or folder (expected a folder, an image/FITS/HDF5/npy file, a "
            "prepared data set or a builtin: spec such as builtin:galsim?n=100)"
        )
    from galforge.data.readers import read_source

    return read_source(path, **opts)


def _post_process(iset: ImageSet, opts: dict) -> ImageSet:
    """Options that apply to already-decoded sets (builtin, prepared): limit, crop, resize, bands."""
    import numpy as np

    from galforge.data import transforms
    from galforge.data.readers import _crop, select_bands

    ignored = (
        "limit",
        "crop",
        "size",
        "resize_method",
        "bands",
        "nan_policy",
        "strict",
        "progress",
    )
    unsupported = [k for k in opts if k not in ignored]
    if unsupported:
        raise ConfigError(
            f"option(s) {unsupported} do not apply to {iset.source} (a built-in or prepared set)"
        )
    if opts.get("limit") is not None and opts["limit"] < len(iset):
        iset = iset.subset(slice(0, opts["limit"]))
    imgs = iset.images
    changed = False
    extra = dict(iset.extra)
    if opts.get("crop") is not None:
        imgs = _crop(np.asarray(imgs), opts["crop"])
        changed = True
    if opts.get("size") is not None:
        method = opts.get("resize_method") or "nearest"
        hc, wc = imgs.shape[-2:]
        imgs = transforms.resize(np.asarray(imgs), opts["size"], method)
        changed = True
        if imgs.shape[-2:] != (hc, wc):
            extra["resize"] = {
                "images": int(imgs.shape[0]),
                "from": {f"{hc}×{wc}": int(imgs.shape[0])},
                "to": list(imgs.shape[-2:]),
                "method": method,
            }
            if isinstance(extra.get("pixel_scale"), (int, float)):
                extra["pixel_scale"] = float(extra["pixel_scale"]) * float(
                    np.sqrt(hc * wc / (imgs.shape[-2] * imgs.shape[-1]))
                )
    if changed:
        iset = iset.with_images(imgs)
        iset.extra = extra
    return select_bands(iset, opts.get("bands"))
