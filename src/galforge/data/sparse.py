"""Sparse fields: galaxies on a background of exactly 0, seen as positions and patches.

The two-stage model of sparse fields (``galforge train DATA --model twostage``) and its
baselines read single-band images whose background is exactly 0 and where a galaxy is a
connected cluster of non-zero pixels (``builtin:sparse``, or a user's own images of that
kind). This module turns such images into what the two stages learn:

* :func:`check_zero_background` — the one rule of a zero background: finite pixels, at least
  a fifth of the set's pixels exactly 0, and no image without an exactly-0 pixel (a sky with
  noise has none; a crowded field on a zero sky has some), used by the two-stage model, its baselines and the
  realism ladder (:mod:`galforge.evaluation.realism`).
* :func:`label_clusters` — the galaxies of one image as labels: 8-connected clusters of
  non-zero pixels (also what the realism statistics and the ``builtin:sparse`` maker count).
* :func:`detect_sources` — the 8-connected clusters of non-zero pixels of one image; for each,
  the flux-weighted centroid ``x`` (column) and ``y`` (row), ``flux`` (sum), ``npix`` (pixel
  count), ``peak`` and ``hlr`` (half-light radius in pixels: the distance from the centroid
  within which the brightest-first... no, the nearest pixels hold half the flux).
  The **size** of a galaxy is its pixel count ``npix``.
* :func:`occupancy_grid` — a ``grid×grid`` map (32×32 by default) whose cell is 1 when a
  galaxy's centre lies in it. Cell ``(r, c)`` covers rows ``[r H/grid, (r+1) H/grid)`` and
  columns ``[c W/grid, (c+1) W/grid)`` of the pixel grid, pixel ``i`` spanning
  ``[i − ½, i + ½)``; its centre is at ``((r + ½) H/grid − ½, (c + ½) W/grid − ½)``.
* :func:`class_grid` — the conditional grid: 0 for an empty cell, ``1 + size class`` for an
  occupied one (classes 0, 1, 2 = small, medium, large by :func:`size_thresholds`, the
  terciles of the data's sizes unless thresholds are given). A cell holding several
  centres takes the class of its largest galaxy.
* :func:`extract_patches` — ``patch×patch`` cut-outs (32×32) centred on each galaxy: the
  pixel nearest the centroid lands at index ``patch // 2`` of both axes; outside the image
  is 0.
* :func:`cell_offsets` — the sub-cell offset of each centre from its cell's centre (pixels).
* :func:`compose` — the inverse: patches added onto a zero image at given centre pixels
  (overlaps add).

:func:`analyse` does all of it for a stack and returns a :class:`SparseAnalysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from galforge.errors import ConfigError, DataError

__all__ = [
    "SIZE_CLASSES",
    "SparseAnalysis",
    "analyse",
    "cell_centres",
    "cell_index",
    "field_stack",
    "cell_offsets",
    "check_zero_background",
    "class_grid",
    "compose",
    "detect_sources",
    "extract_patches",
    "label_clusters",
    "MIN_ZERO_FRACTION",
    "occupancy_grid",
    "size_class",
    "size_thresholds",
]

#: the size classes of the conditional model, in order (class index 0, 1, 2)
SIZE_CLASSES = ("small", "medium", "large")
_EIGHT = np.ones((3, 3), dtype=bool)
#: fewest exactly-0 pixels (fraction of all pixels of a set) that make a zero background
MIN_ZERO_FRACTION = 0.2
_COLUMNS = ("x", "y", "flux", "npix", "peak", "hlr")


def field_stack(images, source: str = "the data") -> np.ndarray:
    """Single-band fields as an N×H×W array (from N×1×H×W, N×H×W or one H×W image)."""
    arr = np.asarray(images)
    if arr.ndim == 4:
        if arr.shape[1] != 1:
            raise DataError(
                f"{source}: {arr.shape[1]} bands; sparse fields have one band "
                "(select it with --set data.options.bands=[NAME] or data.bands)"
            )
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DataError(
            f"{source}: expected single-band images N×H×W, got shape {np.shape(images)}"
        )
    return arr


_ZERO_FIX = (
    "the two-stage model and the baselines need sparse fields whose background is "
    "exactly 0 (subtract the sky and set every pixel below your detection threshold to 0)"
)


def check_zero_background(
    images,
    source: str = "the data",
    *,
    min_zero_fraction: float = MIN_ZERO_FRACTION,
    fix: str = _ZERO_FIX,
) -> None:
    """DataError unless the images are sparse fields (galaxies on a background of exactly 0):
    every pixel finite, at least ``min_zero_fraction`` (a fifth) of all the pixels exactly 0,
    and every image with some exactly-0 pixels (a sky left in one image is named).

    The one-line message names ``source`` and the share of zeros (of the set, or of the image
    without any), then ``fix`` (what the caller's user can do about it)."""
    arr = field_stack(images, source)
    if not np.all(np.isfinite(arr)):
        raise DataError(
            f"{source}: non-finite pixels; sparse fields need a background of "
            "exactly 0 and finite galaxies (read with data.options.nan_policy=fill)"
        )
    zero = (arr == 0).reshape(arr.shape[0], -1).mean(axis=1)
    total = float(zero.mean())
    if total < float(min_zero_fraction):
        raise DataError(f"{source}: only {100 * total:.1f}% of the pixels are exactly 0; " + fix)
    worst = int(np.argmin(zero))
    if zero[worst] == 0:
        raise DataError(f"{source}: image {worst} has no pixel exactly 0; " + fix)


def label_clusters(image) -> tuple[np.ndarray, int]:
    """The galaxies of one ``H×W`` image: ``(labels, n)``, the 8-connected clusters of its
    non-zero pixels numbered 1..n in scan order (rows first), 0 on the background."""
    from scipy import ndimage

    return ndimage.label(np.asarray(image) != 0, structure=_EIGHT)


def detect_sources(image) -> dict[str, np.ndarray]:
    """The galaxies of one image (H×W): 8-connected clusters of non-zero pixels.

    Returns arrays ``x``, ``y`` (flux-weighted centroid, 0-based column/row), ``flux``,
    ``npix``, ``peak`` and ``hlr`` (pixels), one entry per cluster, in label order (rows
    first). Pixels are weighted by their absolute value.
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise DataError(f"detect_sources takes one H×W image, got shape {img.shape}")
    labels, k = label_clusters(img)
    if k == 0:
        return {c: np.zeros(0, dtype=np.float64) for c in _COLUMNS}
    idx = np.arange(1, k + 1)
    w = np.abs(img)
    rows, cols = np.indices(img.shape)
    wsum = ndimage.sum(w, labels, idx)
    y = ndimage.sum(w * rows, labels, idx) / wsum
    x = ndimage.sum(w * cols, labels, idx) / wsum
    flux = ndimage.sum(img, labels, idx)
    npix = ndimage.sum(np.ones_like(img), labels, idx)
    peak = ndimage.maximum(img, labels, idx)
    hlr = np.zeros(k)
    objects = ndimage.find_objects(labels)
    for j, sl in enumerate(objects):
        mask = labels[sl] == j + 1
        vals = w[sl][mask]
        r = np.hypot(rows[sl][mask] - y[j], cols[sl][mask] - x[j])
        order = np.argsort(r, kind="stable")
        cum = np.cumsum(vals[order])
        hlr[j] = float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])
    return {
        "x": np.asarray(x),
        "y": np.asarray(y),
        "flux": np.asarray(flux),
        "npix": np.asarray(npix),
        "peak": np.asarray(peak),
        "hlr": hlr,
    }


def _check_grid(shape, grid: int) -> tuple[int, int, int]:
    h, w = (int(v) for v in shape[-2:])
    grid = int(grid)
    if grid < 1 or grid > min(h, w):
        raise ConfigError(f"grid={grid}: must be between 1 and the image side ({min(h, w)})")
    return h, w, grid


def cell_index(x, y, shape, grid: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(row, col)`` of the cell holding each centre ``(x, y)`` (see the module docstring)."""
    h, w, grid = _check_grid(shape, grid)
    r = np.floor((np.asarray(y, dtype=np.float64) + 0.5) * grid / h).astype(np.int64)
    c = np.floor((np.asarray(x, dtype=np.float64) + 0.5) * grid / w).astype(np.int64)
    return np.clip(r, 0, grid - 1), np.clip(c, 0, grid - 1)


def cell_centres(shape, grid: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the cell centres: ``(y of each row, x of each column)``."""
    h, w, grid = _check_grid(shape, grid)
    k = np.arange(grid, dtype=np.float64) + 0.5
    return k * h / grid - 0.5, k * w / grid - 0.5


def cell_offsets(x, y, shape, grid: int = 32) -> np.ndarray:
    """``M×2`` offsets ``(dx, dy)`` in pixels of each centre from its cell's centre."""
    r, c = cell_index(x, y, shape, grid)
    cy, cx = cell_centres(shape, grid)
    return np.stack(
        [np.asarray(x, dtype=np.float64) - cx[c], np.asarray(y, dtype=np.float64) - cy[r]], axis=1
    )


def occupancy_grid(x, y, shape, grid: int = 32) -> np.ndarray:
    """``grid×grid`` float32: 1 where a galaxy's centre lies in the cell, else 0."""
    out = np.zeros((int(grid), int(grid)), dtype=np.float32)
    if np.size(x):
        r, c = cell_index(x, y, shape, grid)
        out[r, c] = 1.0
    return out


def size_thresholds(sizes, thresholds=None) -> tuple[float, float]:
    """The small/medium and medium/large size limits: ``thresholds`` when given (two
    increasing numbers), else the terciles of ``sizes``."""
    if thresholds is not None:
        try:
            t1, t2 = (float(v) for v in thresholds)
        except (TypeError, ValueError):
            raise ConfigError(
                f"size thresholds {thresholds!r}: give two numbers SMALL_MAX,"
                "MEDIUM_MAX (pixel counts)"
            ) from None
        if not t1 < t2:
            raise ConfigError(f"size thresholds {thresholds!r}: the first must be below the second")
        return t1, t2
    s = np.asarray(sizes, dtype=np.float64)
    if s.size == 0:
        raise DataError("no galaxies found: the size classes need at least one galaxy")
    t1, t2 = np.percentile(s, [100.0 / 3.0, 200.0 / 3.0])
    return float(t1), float(t2)


def size_class(sizes, thresholds) -> np.ndarray:
    """Class index of each size: 0 (small, ≤ t1), 1 (medium, ≤ t2), 2 (large)."""
    t1, t2 = thresholds
    s = np.asarray(sizes, dtype=np.float64)
    return (s > t1).astype(np.int64) + (s > t2).astype(np.int64)


def class_grid(x, y, classes, shape, grid: int = 32, sizes=None) -> np.ndarray:
    """``grid×grid`` int8: 0 for an empty cell, ``1 + class`` for an occupied one (the class
    of the cell's largest galaxy by ``sizes``, or of the last listed without sizes)."""
    out = np.zeros((int(grid), int(grid)), dtype=np.int8)
    if not np.size(x):
        return out
    r, c = cell_index(x, y, shape, grid)
    order = np.argsort(np.asarray(sizes), kind="stable") if sizes is not None else np.arange(len(r))
    out[r[order], c[order]] = 1 + np.asarray(classes, dtype=np.int8)[order]
    return out


def _centre_pixels(x, y) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.floor(np.asarray(y, dtype=np.float64) + 0.5).astype(np.int64),
        np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64),
    )


def extract_patches(image, x, y, patch: int = 32) -> np.ndarray:
    """``M×patch×patch`` float32 cut-outs of ``image`` (H×W), the pixel nearest each centre
    at index ``patch // 2``; pixels outside the image are 0."""
    img = np.asarray(image, dtype=np.float32)
    patch = int(patch)
    if patch < 2:
        raise ConfigError(f"patch={patch}: must be at least 2 pixels")
    h, w = img.shape
    half = patch // 2
    pad = np.zeros((h + 2 * patch, w + 2 * patch), dtype=np.float32)
    pad[patch : patch + h, patch : patch + w] = img
    cy, cx = _centre_pixels(x, y)
    out = np.zeros((len(cy), patch, patch), dtype=np.float32)
    for k, (py, px) in enumerate(zip(cy, cx, strict=True)):
        y0, x0 = py - half + patch, px - half + patch
        if -patch < py < h + patch and -patch < px < w + patch:
            out[k] = pad[y0 : y0 + patch, x0 : x0 + patch]
    return out


def compose(patches, x, y, shape) -> np.ndarray:
    """An H×W float32 image: each patch added with its index ``patch // 2`` at the pixel
    nearest ``(x, y)``; overlaps add, what falls outside is dropped."""
    h, w = (int(v) for v in shape[-2:])
    p = np.asarray(patches, dtype=np.float32)
    out = np.zeros((h, w), dtype=np.float32)
    if p.size == 0:
        return out
    size = p.shape[-1]
    half = size // 2
    cy, cx = _centre_pixels(x, y)
    for k, (py, px) in enumerate(zip(cy, cx, strict=True)):
        y0, x0 = py - half, px - half
        fy0, fx0 = max(y0, 0), max(x0, 0)
        fy1, fx1 = min(y0 + size, h), min(x0 + size, w)
        if fy1 > fy0 and fx1 > fx0:
            out[fy0:fy1, fx0:fx1] += p[k, fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return out


@dataclass
class SparseAnalysis:
    """What :func:`analyse` finds in a stack of sparse fields."""

    shape: tuple[int, int]  # H, W of the fields
    grid: int
    patch: int
    thresholds: tuple[float, float]  # size-class limits (pixel counts)
    grids: np.ndarray  # N×grid×grid float32 occupancy
    class_grids: np.ndarray  # N×grid×grid int8: 0 empty, 1 + size class
    catalogue: dict[str, np.ndarray]  # per galaxy: image, x, y, flux, npix, peak, hlr,
    # row, col, dx, dy, size_class
    patches: np.ndarray  # M×patch×patch float32, one per galaxy of the catalogue
    counts: np.ndarray  # galaxies per image
    notes: list[str] = field(default_factory=list)

    @property
    def offsets(self) -> np.ndarray:
        """``M×2`` sub-cell offsets ``(dx, dy)`` in pixels."""
        return np.stack([self.catalogue["dx"], self.catalogue["dy"]], axis=1)


def analyse(
    images, *, grid: int = 32, patch: int = 32, thresholds=None, source: str = "the data"
) -> SparseAnalysis:
    """Detect the galaxies of every field (N×1×H×W or N×H×W, background exactly 0) and
    make the occupancy and class grids, patches and offsets (see the module docstring)."""
    arr = field_stack(images, source)
    check_zero_background(arr, source)
    shape = (int(arr.shape[1]), int(arr.shape[2]))
    _check_grid(shape, grid)
    cols: dict[str, list] = {k: [] for k in ("image", *_COLUMNS)}
    patches, counts = [], []
    for i, img in enumerate(arr):
        src = detect_sources(img)
        counts.append(len(src["x"]))
        cols["image"].append(np.full(len(src["x"]), i, dtype=np.int64))
        for k in _COLUMNS:
            cols[k].append(src[k])
        patches.append(extract_patches(img, src["x"], src["y"], patch))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    if len(cat["x"]) == 0:
        raise DataError(f"{source}: no galaxy (non-zero pixel) in any image")
    t = size_thresholds(cat["npix"], thresholds)
    cat["size_class"] = size_class(cat["npix"], t)
    cat["row"], cat["col"] = cell_index(cat["x"], cat["y"], shape, grid)
    off = cell_offsets(cat["x"], cat["y"], shape, grid)
    cat["dx"], cat["dy"] = off[:, 0], off[:, 1]
    grids = np.zeros((len(arr), grid, grid), dtype=np.float32)
    cgrids = np.zeros((len(arr), grid, grid), dtype=np.int8)
    for i in range(len(arr)):
        sel = cat["image"] == i
        grids[i] = occupancy_grid(cat["x"][sel], cat["y"][sel], shape, grid)
        cgrids[i] = class_grid(
            cat["x"][sel],
            cat["y"][sel],
            cat["size_class"][sel],
            shape,
            grid,
            sizes=cat["npix"][sel],
        )
    notes = []
    shared = int(len(cat["x"]) - grids.sum())
    if shared:
        notes.append(
            f"{shared} of {len(cat['x'])} galaxies share a grid cell with another; "
            "an occupancy grid keeps one galaxy per cell"
        )
    return SparseAnalysis(
        shape,
        int(grid),
        int(patch),
        t,
        grids,
        cgrids,
        cat,
        np.concatenate(patches).astype(np.float32),
        np.asarray(counts),
        notes,
    )
