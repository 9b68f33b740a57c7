"""Reading a prepared data set back (the folder ``galforge data prepare`` writes).

:mod:`galforge.data.datasets` writes it (``prepare``); :func:`galforge.data.load_images` reads it
through :func:`load_prepared` (images memory-mapped).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from galforge.data.imageset import ImageSet, ReadReport
from galforge.errors import DataError

__all__ = ["FORMAT", "FORMAT_VERSION", "is_prepared", "load_prepared", "read_manifest"]

FORMAT = "galforge-prepared"
FORMAT_VERSION = 1


def is_prepared(path) -> bool:
    """True when ``path`` is a folder written by :func:`prepare`."""
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.is_file():
        return False
    try:
        return json.loads(mf.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_manifest(path) -> dict:
    p = Path(path)
    mf = p / "manifest.json" if p.is_dir() else p
    try:
        man = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{mf}: unreadable manifest ({exc}); run galforge data prepare again"
        ) from exc
    if man.get("format") != FORMAT:
        raise DataError(f"{mf}: not a galforge prepared data set manifest")
    return man


def load_prepared(path, mmap: bool = True) -> ImageSet:
    """Read a prepared data set (images memory-mapped by default)."""
    p = Path(path)
    man = read_manifest(p)
    img_path = p / man.get("files", {}).get("images", "images.npy")
    try:
        images = np.load(img_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{img_path}: cannot read the prepared images ({exc}); prepare again"
        ) from exc
    if images.dtype != np.float32 or images.ndim != 4 or list(images.shape[1:]) != man["shape"]:
        raise DataError(
            f"{img_path}: array {images.dtype} {images.shape} does not match the manifest "
            f"({man['count']}×{man['shape']}); prepare the data set again"
        )
    if images.shape[0] != man["count"]:
        raise DataError(
            f"{img_path}: {images.shape[0]} images but the manifest says {man['count']}"
        )
    meta = []
    meta_path = p / man.get("files", {}).get("meta", "meta.jsonl")
    if meta_path.is_file():
        with open(meta_path, encoding="utf-8") as fh:
            meta = [json.loads(line) for line in fh if line.strip()]
        if len(meta) != images.shape[0]:
            meta = []
    report = ReadReport(
        n_read=int(man["count"]),
        skipped=list(man.get("skipped", [])),
        nan_pixels=int(man.get("nan_pixels", 0)),
        nan_filled_images=int(man.get("nan_filled_images", 0)),
        catalog=man.get("catalog"),
        warnings=list(man.get("warnings", [])),
    )
    extra = dict(man.get("extra") or {})
    extra.pop("resize", None)  # done when the set was prepared, not when it is read back
    extra["manifest"] = {
        k: man[k] for k in ("fingerprint", "normalizer", "galforge_version") if k in man
    }
    if man.get("normalizer"):
        # The Normalizer fitted at prepare time (dict). Its target range is the one chosen at
        # prepare time ((-1, 1) by default): reuse it only for a model with that output range.
        extra["prepared_normalizer"] = man["normalizer"]
    return ImageSet(
        images=images,
        bands=tuple(man["bands"]),
        meta=meta,
        units=man["units"],
        report=report,
        source=str(p),
        extra=extra,
    )
