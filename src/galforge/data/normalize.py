"""The :class:`Normalizer`: a fitted, invertible map from physical units to model space.

Chain (per channel): clip to ``[lo, hi]`` (percentiles of the training data) → optional
asinh stretch ``asinh((x − offset)/softening)`` → min–max to the target range (``(-1, 1)``
for tanh generators, ``(0, 1)`` for sigmoid ones). ``inverse`` undoes each step exactly, so
for any ``x`` inside the clip range ``inverse(forward(x)) == x`` (to float rounding), and a
generator's output maps back to the training data's units.
"""

from __future__ import annotations

import math

import numpy as np

from galforge.errors import ConfigError

_KIND = "galforge.Normalizer"
_MAX_FIT_VALUES = 8_000_000  # per channel; larger sets are subsampled by whole images
#: values per block of the NumPy forward/inverse: the float64 working copies of a whole
#: training set (8192 × 3 × 128² pixels) would need ~10 GB; blocks keep them at ~50 MB
_BLOCK_VALUES = 1 << 21


#: Units of display-ready integer images: linear stretch by default.
LEVEL_UNITS = ("8-bit level", "16-bit level")


def default_stretch(units: str | None) -> str:
    """The stretch for data in ``units`` when none is asked for: ``linear`` for 8/16-bit
    levels (already display images), ``asinh`` for physical units (counts, nanomaggies, ...),
    where a linear map would leave the sky noise at ~1e-4 of the model range."""
    return "linear" if str(units) in LEVEL_UNITS else "asinh"


def _blockwise(fn, arr: np.ndarray) -> np.ndarray:
    """``fn(arr).astype(float32)``, computed image by image block for an N×C×H×W ``arr`` so
    the float64 temporaries stay small (the values are the same: ``fn`` is elementwise)."""
    per_image = int(np.prod(arr.shape[1:])) if arr.ndim == 4 else 0
    if arr.ndim != 4 or arr.size <= _BLOCK_VALUES or per_image == 0:
        return np.asarray(fn(arr), dtype=np.float32)
    out = np.empty(arr.shape, np.float32)
    step = max(1, _BLOCK_VALUES // per_image)
    for a in range(0, len(arr), step):
        out[a : a + step] = fn(arr[a : a + step])
    return out


def _is_torch(x) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(x, torch.Tensor)


def _channel_values(images: np.ndarray, c: int) -> np.ndarray:
    arr = images
    if arr.ndim == 3:
        arr = arr[None]
    n = arr.shape[0]
    per = arr.shape[2] * arr.shape[3]
    if n * per > _MAX_FIT_VALUES:
        step = math.ceil(n * per / _MAX_FIT_VALUES)
        arr = arr[::step]
    v = np.asarray(arr[:, c], dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


class Normalizer:
    """Per-channel clip → (asinh) → min–max, fitted on data, with an exact inverse.

    Build with :meth:`fit`; save with :meth:`to_dict` (JSON-safe) and restore with
    :meth:`from_dict`. ``forward``/``inverse`` take numpy arrays or torch tensors shaped
    ``N×C×H×W`` or ``C×H×W`` and return the same type (float32 for numpy).
    """

    def __init__(
        self,
        *,
        lo,
        hi,
        target=(-1.0, 1.0),
        stretch="linear",
        offset=None,
        softening=None,
        clip_percentile=99.99,
        clip_low_percentile=None,
    ):
        self.lo = np.asarray(lo, dtype=np.float64).reshape(-1)
        self.hi = np.asarray(hi, dtype=np.float64).reshape(-1)
        c = self.lo.size
        if self.hi.size != c or c == 0:
            raise ConfigError("Normalizer: lo and hi need one value per channel")
        if np.any(self.hi < self.lo):
            raise ConfigError("Normalizer: hi must be >= lo in every channel")
        if stretch not in ("linear", "asinh"):
            raise ConfigError(f"Normalizer stretch must be 'linear' or 'asinh', got {stretch!r}")
        t0, t1 = (float(t) for t in target)
        if not t1 > t0:
            raise ConfigError(
                f"Normalizer target must be (low, high) with high > low, got {target}"
            )
        self.target = (t0, t1)
        self.stretch = stretch
        self.offset = (
            np.zeros(c) if offset is None else np.asarray(offset, dtype=np.float64).reshape(-1)
        )
        self.softening = (
            np.ones(c) if softening is None else np.asarray(softening, dtype=np.float64).reshape(-1)
        )
        if np.any(self.softening <= 0):
            raise ConfigError("Normalizer: asinh softening must be positive")
        self.clip_percentile = float(clip_percentile) if clip_percentile is not None else None
        self.clip_low_percentile = (
            float(clip_low_percentile) if clip_low_percentile is not None else None
        )
        self.smin = self._stretch_np(self.lo)
        self.smax = self._stretch_np(self.hi)
        span = self.smax - self.smin
        self.span = np.where(span > 0, span, 1.0)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        images,
        *,
        clip_percentile=99.99,
        stretch="linear",
        asinh_softening=None,
        target=(-1.0, 1.0),
        clip_low_percentile=None,
    ) -> Normalizer:
        """Fit on ``images`` (N×C×H×W or C×H×W, numpy or torch).

        ``clip_percentile`` sets each channel's upper clip (99.99 by default; 100 = the
        maximum); the lower clip is ``clip_low_percentile`` (default ``100 −
        clip_percentile``). ``stretch="asinh"`` stretches ``(x − median)/softening``, with
        ``asinh_softening`` per channel (a number or one per channel; default: the robust
        pixel noise, 1.4826·MAD, or 1 % of the clip range when that is zero).
        """
        if _is_torch(images):
            images = images.detach().cpu().numpy()
        arr = np.asarray(images)
        if arr.ndim not in (3, 4):
            raise ConfigError(f"Normalizer.fit expects N×C×H×W or C×H×W, got shape {arr.shape}")
        c = arr.shape[-3]
        if clip_percentile is None:
            clip_percentile = 100.0
        if not 50 < float(clip_percentile) <= 100:
            raise ConfigError(f"clip_percentile must be in (50, 100], got {clip_percentile}")
        low_p = (
            100.0 - float(clip_percentile)
            if clip_low_percentile is None
            else float(clip_low_percentile)
        )
        lo, hi, med, soft = [], [], [], []
        for ch in range(c):
            v = _channel_values(arr, ch)
            if v.size == 0:
                raise ConfigError(f"Normalizer.fit: channel {ch} has no finite values")
            lo_c, hi_c = np.percentile(v, [low_p, float(clip_percentile)])
            lo.append(lo_c)
            hi.append(hi_c)
            m = float(np.median(v))
            med.append(m)
            mad = 1.4826 * float(np.median(np.abs(v - m)))
            soft.append(mad if mad > 0 else max((hi_c - lo_c) * 0.01, 1e-12))
        if asinh_softening is not None:
            s = np.asarray(asinh_softening, dtype=np.float64).reshape(-1)
            soft = np.broadcast_to(s, (c,)).copy() if s.size in (1, c) else None
            if soft is None:
                raise ConfigError(f"asinh_softening needs 1 or {c} values")
        return cls(
            lo=lo,
            hi=hi,
            target=target,
            stretch=stretch,
            offset=med,
            softening=soft,
            clip_percentile=clip_percentile,
            clip_low_percentile=clip_low_percentile,
        )

    @property
    def channels(self) -> int:
        return int(self.lo.size)

    # ------------------------------------------------------------------ maths
    def _stretch_np(self, x):
        if self.stretch == "asinh":
            return np.arcsinh((x - self.offset) / self.softening)
        return x

    def _params(self, x, ndim, lib):
        c = self.channels
        shape = (c, 1, 1)
        if ndim == 4:
            pass
        elif ndim != 3:
            raise ConfigError(f"Normalizer expects N×C×H×W or C×H×W, got {ndim} dimensions")
        cx = x.shape[-3]
        if cx != c:
            raise ConfigError(f"Normalizer fitted on {c} channels, got data with {cx}")
        names = ("lo", "hi", "offset", "softening", "smin", "span")
        if lib == "np":
            return {k: getattr(self, k).reshape(shape) for k in names}
        import torch

        dt = x.dtype if x.is_floating_point() else torch.float32
        return {
            k: torch.as_tensor(
                getattr(self, k),
                dtype=torch.float64 if dt == torch.float64 else dt,
                device=x.device,
            ).reshape(shape)
            for k in names
        }

    def forward(self, x):
        """Physical units → model space (clip, stretch, min–max to the target range)."""
        t0, t1 = self.target
        if _is_torch(x):
            import torch

            if not x.is_floating_point():
                x = x.float()
            p = self._params(x, x.ndim, "torch")
            y = torch.minimum(torch.maximum(x, p["lo"]), p["hi"])
            if self.stretch == "asinh":
                y = torch.asinh((y - p["offset"]) / p["softening"])
            return (y - p["smin"]) / p["span"] * (t1 - t0) + t0
        arr = np.asarray(x)
        p = self._params(arr, arr.ndim, "np")

        def block(a):
            y = np.clip(a.astype(np.float64), p["lo"], p["hi"])
            if self.stretch == "asinh":
                y = np.arcsinh((y - p["offset"]) / p["softening"])
            return (y - p["smin"]) / p["span"] * (t1 - t0) + t0

        return _blockwise(block, arr)

    __call__ = forward

    def inverse(self, y):
        """Model space → physical units; exact inverse of :meth:`forward` inside the clip
        range (values outside the target range map outside the clip range)."""
        t0, t1 = self.target
        if _is_torch(y):
            import torch

            if not y.is_floating_point():
                y = y.float()
            p = self._params(y, y.ndim, "torch")
            s = (y - t0) / (t1 - t0) * p["span"] + p["smin"]
            if self.stretch == "asinh":
                s = torch.sinh(s) * p["softening"] + p["offset"]
            return s
        arr = np.asarray(y)
        p = self._params(arr, arr.ndim, "np")

        def block(a):
            s = (a.astype(np.float64) - t0) / (t1 - t0) * p["span"] + p["smin"]
            if self.stretch == "asinh":
                s = np.sinh(s) * p["softening"] + p["offset"]
            return s

        return _blockwise(block, arr)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        """JSON-safe description (plain floats and lists)."""
        return {
            "kind": _KIND,
            "version": 1,
            "stretch": self.stretch,
            "target": [self.target[0], self.target[1]],
            "clip_percentile": self.clip_percentile,
            "clip_low_percentile": self.clip_low_percentile,
            "lo": [float(v) for v in self.lo],
            "hi": [float(v) for v in self.hi],
            "offset": [float(v) for v in self.offset],
            "softening": [float(v) for v in self.softening],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """Rebuild from :meth:`to_dict` output (ConfigError for a malformed dict)."""
        if not isinstance(d, dict) or d.get("kind", _KIND) != _KIND:
            raise ConfigError(f"not a galforge Normalizer description: {str(d)[:120]}")
        try:
            return cls(
                lo=d["lo"],
                hi=d["hi"],
                target=tuple(d.get("target", (-1.0, 1.0))),
                stretch=d.get("stretch", "linear"),
                offset=d.get("offset"),
                softening=d.get("softening"),
                clip_percentile=d.get("clip_percentile"),
                clip_low_percentile=d.get("clip_low_percentile"),
            )
        except KeyError as exc:
            raise ConfigError(f"Normalizer description lacks {exc.args[0]!r}") from None

    def __repr__(self) -> str:
        return (
            f"Normalizer(channels={self.channels}, stretch={self.stretch!r}, target={self.target}, "
            f"clip_percentile={self.clip_percentile})"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, Normalizer) and self.to_dict() == other.to_dict()
