"""Array transforms (numpy, ``...×H×W``) and batch augmentation (torch).

* :func:`center_crop` — keep the central part (a fraction of the side, or a pixel size);
* :func:`resize` — nearest (the DCGAN paper's choice, the default), bicubic or area;
* :func:`percentile_clip`, :func:`minmax_scale`, :func:`asinh_stretch` — channel-wise value
  transforms (the fitted, invertible chain is :class:`galforge.data.normalize.Normalizer`);
* :func:`augment_batch` — random flips, 90° rotations and arbitrary-angle rotations of a
  ``N×C×H×W`` tensor, every draw from the ``torch.Generator`` passed in.

All numpy functions accept ``H×W``, ``C×H×W`` or ``N×C×H×W`` arrays (the last two axes are
the image plane) and return float32.
"""

from __future__ import annotations

import math

import numpy as np

from galforge.errors import ConfigError

RESIZE_METHODS = ("nearest", "bicubic", "area")
#: The smallest centre crop, in pixels, that can still hold a galaxy.
MIN_CROP_PIXELS = 8


def parse_crop(value, option: str = "--crop") -> float | int:
    """A centre crop as a fraction of the side (``0.5``, float in (0, 1]) or a size in pixels
    (``128``, a whole number >= 8).  Text with a decimal point is a fraction (``"2.0"`` is
    refused, not read as 2 pixels); ConfigError names ``option`` otherwise."""
    text = str(value).strip()
    if isinstance(value, bool):
        raise ConfigError(f"{option} {value!r}: give a fraction (0.5) or a size in pixels (128)")
    if isinstance(value, str):
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(
                f"{option} {value!r}: give a fraction (0.5) or a size in pixels (128)"
            ) from None
        is_fraction = any(ch in text for ch in ".eE")
    else:
        number = float(value)
        is_fraction = isinstance(value, (float, np.floating))
    if is_fraction:
        if not 0.0 < number <= 1.0:
            hint = (
                f"; for a size in pixels give a whole number ({int(number)})"
                if number >= MIN_CROP_PIXELS and number.is_integer()
                else ""
            )
            raise ConfigError(
                f"{option} {text}: a crop fraction must be in (0, 1] (0.5 keeps the central "
                f"half of each side){hint}"
            )
        return float(number)
    if not number.is_integer() or number < MIN_CROP_PIXELS:
        raise ConfigError(
            f"{option} {text}: a crop in pixels must be a whole number of at least "
            f"{MIN_CROP_PIXELS} (or give a fraction in (0, 1] such as 0.5)"
        )
    return int(number)


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an int or (height, width), got {value!r}") from exc
    return h, w


def center_crop(images, fraction=None, pixels=None) -> np.ndarray:
    """Keep the centre of every image.

    ``fraction`` (0 < f ≤ 1) keeps ``round(f·H) × round(f·W)`` pixels; ``pixels`` (int or
    (h, w)) keeps exactly that many. Give one of the two. When the margin is odd the extra
    pixel is dropped on the high side.
    """
    arr = np.asarray(images)
    H, W = arr.shape[-2:]
    if (fraction is None) == (pixels is None):
        raise ConfigError("center_crop: give exactly one of fraction= or pixels=")
    if fraction is not None:
        f = float(fraction)
        if not 0 < f <= 1:
            raise ConfigError(f"crop fraction must be in (0, 1], got {fraction}")
        h, w = max(1, int(round(f * H))), max(1, int(round(f * W)))
    else:
        h, w = _pair(pixels, "crop pixels")
        if not (0 < h <= H and 0 < w <= W):
            raise ConfigError(f"crop of {h}×{w} pixels does not fit in images of {H}×{W}")
    y0, x0 = (H - h) // 2, (W - w) // 2
    return np.ascontiguousarray(arr[..., y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Overlap weights (n_out × n_in) of output pixels with input pixels, rows summing to 1."""
    edges_out = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges_out[:-1, None], edges_out[1:, None]
    left, right = np.arange(n_in)[None, :], np.arange(n_in)[None, :] + 1
    overlap = np.clip(np.minimum(hi, right) - np.maximum(lo, left), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize(images, size, method: str = "nearest") -> np.ndarray:
    """Resample the image plane to ``size`` (int or (h, w)).

    ``nearest``: each output pixel takes the input pixel under its centre (no new values).
    ``bicubic``: cubic spline interpolation (``scipy.ndimage.zoom``, order 3, pixel-grid
    aligned). ``area``: every output pixel is the area-weighted mean of the input pixels it
    covers (mean surface brightness is kept; exact block means for integer factors).
    """
    arr = np.asarray(images, dtype=np.float32)
    h, w = _pair(size, "size")
    if h < 1 or w < 1:
        raise ConfigError(f"resize size must be positive, got {size!r}")
    method = str(method).lower()
    if method not in RESIZE_METHODS:
        raise ConfigError(
            f"resize method must be one of {', '.join(RESIZE_METHODS)}, got {method!r}"
        )
    H, W = arr.shape[-2:]
    if (H, W) == (h, w):
        return np.ascontiguousarray(arr)
    if method == "nearest":
        iy = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
        ix = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
        return np.ascontiguousarray(arr[..., iy[:, None], ix[None, :]])
    if method == "area":
        my = _area_matrix(H, h).astype(np.float64)
        mx = _area_matrix(W, w).astype(np.float64)
        out = np.einsum("yi,...ij,xj->...yx", my, arr.astype(np.float64), mx, optimize=True)
        return np.ascontiguousarray(out, dtype=np.float32)
    from scipy.ndimage import zoom

    lead = arr.shape[:-2]
    flat = arr.reshape((-1, H, W))
    out = np.empty((flat.shape[0], h, w), dtype=np.float32)
    for k in range(flat.shape[0]):
        out[k] = zoom(flat[k], (h / H, w / W), order=3, mode="grid-mirror", grid_mode=True)
    return out.reshape(lead + (h, w))


def _channel_view(arr: np.ndarray) -> np.ndarray:
    """C×(pixels) view of a C×H×W or N×C×H×W array (copy only when needed)."""
    if arr.ndim == 2:
        return arr.reshape(1, -1)
    if arr.ndim == 3:
        return arr.reshape(arr.shape[0], -1)
    if arr.ndim == 4:
        return np.moveaxis(arr, 1, 0).reshape(arr.shape[1], -1)
    raise ConfigError(f"expected H×W, C×H×W or N×C×H×W, got shape {arr.shape}")


def _bcast(values: np.ndarray, ndim: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v.reshape((-1, 1, 1)) if ndim >= 3 else v.reshape(())


def channel_percentiles(images, percentiles) -> np.ndarray:
    """Per-channel percentiles over all images and pixels: array ``len(percentiles) × C``."""
    arr = np.asarray(images, dtype=np.float32)
    view = _channel_view(arr)
    return np.stack([np.nanpercentile(view[c], percentiles) for c in range(view.shape[0])], axis=-1)


def percentile_clip(images, percentile: float = 99.99, low_percentile: float | None = None):
    """Clip every channel at its ``percentile`` (over all images and pixels, 99.99 % as in
    Smith & Geach) and, when ``low_percentile`` is given, from below at that percentile."""
    arr = np.asarray(images, dtype=np.float32)
    if not 0 < percentile <= 100:
        raise ConfigError(f"clip percentile must be in (0, 100], got {percentile}")
    hi = channel_percentiles(arr, [percentile])[0]
    lo = (
        channel_percentiles(arr, [low_percentile])[0]
        if low_percentile is not None
        else np.full_like(hi, -np.inf)
    )
    return np.clip(arr, _bcast(lo, arr.ndim), _bcast(hi, arr.ndim)).astype(np.float32)


def minmax_scale(images, target=(0.0, 1.0), lo=None, hi=None) -> np.ndarray:
    """Per-channel min–max scaling to ``target``; ``lo``/``hi`` (per channel) default to the
    data's own minimum and maximum. A constant channel maps to the middle of the target."""
    arr = np.asarray(images, dtype=np.float32)
    view = _channel_view(arr)
    lo = view.min(axis=1) if lo is None else np.asarray(lo, dtype=np.float32).reshape(-1)
    hi = view.max(axis=1) if hi is None else np.asarray(hi, dtype=np.float32).reshape(-1)
    span = np.where(hi > lo, hi - lo, 1.0)
    t0, t1 = float(target[0]), float(target[1])
    unit = (arr - _bcast(lo, arr.ndim)) / _bcast(span, arr.ndim)
    unit = np.where(_bcast(hi > lo, arr.ndim), unit, 0.5)
    return (t0 + unit * (t1 - t0)).astype(np.float32)


def asinh_stretch(images, softening: float = 1.0, inverse: bool = False) -> np.ndarray:
    """``asinh(x / softening)`` (or its inverse ``softening·sinh(y)``): linear for
    ``|x| ≪ softening``, logarithmic above — faint outskirts and bright cores both visible."""
    arr = np.asarray(images, dtype=np.float32)
    s = np.asarray(softening, dtype=np.float32)
    if s.ndim == 1:
        s = _bcast(s, arr.ndim)
    if np.any(s <= 0):
        raise ConfigError(f"asinh softening must be positive, got {softening}")
    if inverse:
        return (np.sinh(arr.astype(np.float64)) * s).astype(np.float32)
    return np.arcsinh(arr.astype(np.float64) / s).astype(np.float32)


# ---------------------------------------------------------------------------- augmentation


def augment_batch(x, rng, *, flips: bool = True, rot90: bool = True, rotate=None, fill_value=None):
    """Random per-image augmentation of a ``N×C×H×W`` tensor (returns a new tensor).

    * ``flips``: horizontal and vertical flips, each with p = 0.5, independently;
    * ``rot90``: rotation by k·90°, k uniform in {0, 1, 2, 3} (square images only);
    * ``rotate``: ``None`` (off), ``"constant"`` or ``"reflect"`` — a rotation by an angle
      uniform in [0°, 360°) with bilinear interpolation; pixels that come from outside the
      image are ``fill_value`` (``"constant"``; default: each image's per-channel median of
      its border pixels, i.e. the sky) or the mirror image (``"reflect"``).

    Every random number comes from ``rng`` (a ``torch.Generator``), so a batch is the same
    for the same generator state.
    """
    import torch
    import torch.nn.functional as F

    if x.ndim != 4:
        raise ConfigError(f"augment_batch expects N×C×H×W, got shape {tuple(x.shape)}")
    if rotate not in (None, "constant", "reflect"):
        raise ConfigError(f"augment rotate must be None, 'constant' or 'reflect', got {rotate!r}")
    n, _, H, W = x.shape
    gdev = rng.device
    out = x
    if flips:
        draws = torch.rand((2, n), generator=rng, device=gdev).to(x.device)
        hmask = (draws[0] < 0.5).view(n, 1, 1, 1)
        vmask = (draws[1] < 0.5).view(n, 1, 1, 1)
        out = torch.where(hmask, out.flip(-1), out)
        out = torch.where(vmask, out.flip(-2), out)
    if rot90:
        k = torch.randint(0, 4, (n,), generator=rng, device=gdev).to(x.device)
        if H == W:
            rotated = out.clone()
            for kk in (1, 2, 3):
                sel = (k == kk).nonzero(as_tuple=True)[0]
                if sel.numel():
                    rotated[sel] = torch.rot90(out[sel], kk, dims=(-2, -1))
            out = rotated
    if rotate is not None:
        ang = torch.rand((n,), generator=rng, device=gdev).to(x.device) * (2 * math.pi)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros((n, 2, 3), dtype=out.dtype, device=out.device)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        if rotate == "reflect":
            out = F.grid_sample(
                out, grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
        else:
            if fill_value is None:
                border = torch.cat(
                    [out[..., 0, :], out[..., -1, :], out[..., 1:-1, 0], out[..., 1:-1, -1]], dim=-1
                )
                fill = border.median(dim=-1).values[..., None, None]
            else:
                fill = torch.as_tensor(float(fill_value), dtype=out.dtype, device=out.device)
            shifted = F.grid_sample(
                out - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out = shifted + fill
    return out.contiguous() if out is not x else out.clone()
