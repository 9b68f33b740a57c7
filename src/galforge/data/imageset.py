"""The in-memory form of a data set: :class:`ImageSet` (pixels + band names + metadata) and the
:class:`ReadReport` that says what happened while reading it (skipped files, non-finite pixels).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from galforge.errors import DataError


@dataclass
class ReadReport:
    """What a read did: images returned, files/images skipped (with reasons), non-finite pixels.

    ``skipped`` holds one ``{"path": str, "reason": str}`` dict per skipped file or image.
    ``nan_pixels`` counts the non-finite pixels met in the images that were returned (and
    filled); ``nan_filled_images`` how many returned images had at least one such pixel.
    ``catalog`` carries the catalogue-matching summary when a catalogue selected the files
    (rows, selected, matched, unmatched ids and unmatched files).
    """

    n_read: int = 0
    skipped: list[dict] = field(default_factory=list)
    nan_pixels: int = 0
    nan_filled_images: int = 0
    catalog: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record something the read guessed or could not honour (each message once)."""
        if message not in self.warnings:
            self.warnings.append(str(message))

    def skip(self, path, reason: str, **extra) -> None:
        """Record one skipped file or image."""
        entry = {"path": str(path), "reason": str(reason)}
        entry.update(extra)
        self.skipped.append(entry)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict:
        """JSON-safe summary."""
        out = {
            "n_read": int(self.n_read),
            "n_skipped": len(self.skipped),
            "skipped": [dict(s) for s in self.skipped],
            "nan_pixels": int(self.nan_pixels),
            "nan_filled_images": int(self.nan_filled_images),
        }
        if self.catalog is not None:
            out["catalog"] = dict(self.catalog)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ReadReport:
        return cls(
            n_read=int(d.get("n_read", 0)),
            skipped=[dict(s) for s in d.get("skipped", [])],
            nan_pixels=int(d.get("nan_pixels", 0)),
            nan_filled_images=int(d.get("nan_filled_images", 0)),
            catalog=dict(d["catalog"]) if d.get("catalog") is not None else None,
            warnings=list(d.get("warnings", [])),
        )


@dataclass
class ImageSet:
    """A stack of images in physical units with named bands.

    ``images`` is float32 ``N×C×H×W`` (a memory map for prepared data sets); ``bands`` names
    the ``C`` channels; ``meta`` holds one JSON-safe dict per image (``file``, ``id``, and for
    simulated sets the truth values); ``units`` names the pixel unit (``"8-bit level"``,
    ``"adu"``, ``"counts"``, ...); ``report`` says what the read skipped or repaired;
    ``source`` is what the set was read from; ``extra`` holds set-level information (for
    instance the list of truth columns of a simulated set, ``pixel_scale`` in arcsec/pixel,
    ``resize``: what a resize on reading did).  ``weights`` is ``None`` or an inverse-variance
    weight per pixel, the shape of ``images`` (from the variance plane of a science + mask +
    variance file; 0 where a pixel carries no information, e.g. masked).
    """

    images: np.ndarray
    bands: tuple[str, ...]
    meta: list[dict] = field(default_factory=list)
    units: str = "adu"
    report: ReadReport = field(default_factory=ReadReport)
    source: str = ""
    extra: dict = field(default_factory=dict)
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        imgs = self.images
        if not isinstance(imgs, np.ndarray):
            imgs = np.asarray(imgs)
        if imgs.ndim == 3:
            imgs = imgs[None]
        if imgs.ndim != 4:
            raise DataError(
                f"ImageSet from {self.source or 'memory'}: images must be N×C×H×W, got shape "
                f"{tuple(imgs.shape)}"
            )
        if imgs.dtype != np.float32:
            imgs = imgs.astype(np.float32)
        self.images = imgs
        self.bands = tuple(str(b) for b in self.bands)
        if len(self.bands) != imgs.shape[1]:
            raise DataError(
                f"ImageSet from {self.source or 'memory'}: {imgs.shape[1]} channels but "
                f"{len(self.bands)} band names {self.bands}"
            )
        if not self.meta:
            self.meta = [{"index": i} for i in range(imgs.shape[0])]
        elif len(self.meta) != imgs.shape[0]:
            raise DataError(
                f"ImageSet from {self.source or 'memory'}: {imgs.shape[0]} images but "
                f"{len(self.meta)} metadata entries"
            )
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float32)
            if w.shape != imgs.shape:
                raise DataError(
                    f"ImageSet from {self.source or 'memory'}: weights of shape {w.shape} for "
                    f"images of shape {imgs.shape}"
                )
            self.weights = w
        if self.report.n_read == 0 and imgs.shape[0]:
            self.report.n_read = int(imgs.shape[0])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.images.shape)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, index) -> ImageSet:
        """A new ImageSet with the images selected by ``index`` (slice, int array or mask)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return ImageSet(
            images=np.ascontiguousarray(self.images[idx]),
            bands=self.bands,
            meta=[self.meta[int(i)] for i in idx],
            units=self.units,
            report=ReadReport.from_dict(self.report.to_dict()),
            source=self.source,
            extra=dict(self.extra),
            weights=None if self.weights is None else np.ascontiguousarray(self.weights[idx]),
        )

    def with_images(self, images: np.ndarray, weights: np.ndarray | None = None) -> ImageSet:
        """Same bands/meta/units/report/source with new pixel data (same N and C) and
        ``weights`` (the old weights are dropped: they belong to the old pixels)."""
        return ImageSet(
            images=images,
            bands=self.bands,
            meta=self.meta,
            units=self.units,
            report=self.report,
            source=self.source,
            extra=self.extra,
            weights=weights,
        )

    def fingerprint(self) -> str:
        """sha256 of the pixel values (float32, C order), the shape and the band names.

        The "training data fingerprint" recorded in prepared data sets and bundles: two sets
        with the same pixels and bands have the same fingerprint, whatever files they came
        from.
        """
        h = hashlib.sha256()
        h.update(("galforge-imageset-v1|" + "|".join(self.bands) + "|").encode())
        h.update(np.asarray(self.images.shape, dtype=np.int64).tobytes())
        n = len(self)
        per = max(1, (64 << 20) // max(1, self.images[0].nbytes if n else 1))
        for start in range(0, n, per):
            chunk = np.ascontiguousarray(self.images[start : start + per], dtype="<f4")
            h.update(chunk.tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"ImageSet(n={len(self)}, bands={self.bands}, size={self.size}, "
            f"units={self.units!r}, source={self.source!r})"
        )
