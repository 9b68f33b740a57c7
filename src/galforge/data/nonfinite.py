"""The non-finite pixel policy of the readers: fill with the band's background median, or
reject the image."""

from __future__ import annotations

import numpy as np


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
