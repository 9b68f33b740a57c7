"""The image features of the realism scorer (:mod:`galforge.evaluation.realism`): pixel
histograms, power spectra, galaxy statistics, HOG + LBP and row spectra of single-band sparse
fields, and the :class:`FeatureSpec` that combines them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from galforge.data.sparse import label_clusters
from galforge.errors import ConfigError, EvaluationError

FEATURE_SETS = ("histogram", "spectrum", "galaxies", "hog_lbp", "fft_row")
DEFAULT_FEATURES = ("histogram", "spectrum")
HIST_BINS = 256
WINDOW = "hann"
HOG_SIZE = 128
HOG_CELL = 16
LBP_POINTS = 8
_LOG_FLOOR = 1e-30


def as_planes(images) -> np.ndarray:
    """``H×W``, ``N×H×W`` or ``N×C×H×W`` images as float64 ``N×H×W`` planes (band mean)."""
    x = np.asarray(images)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4:
        x = x.astype(np.float64).mean(axis=1)
    if x.ndim != 3:
        raise EvaluationError(f"images must be H×W, N×H×W or N×C×H×W (got shape {x.shape})")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise EvaluationError("images hold NaN or infinite pixels; fill or drop them first")
    return x


def parse_feature_sets(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Feature set names from ``"histogram,spectrum"`` or a sequence; None gives the default."""
    if value is None:
        return DEFAULT_FEATURES
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if item not in FEATURE_SETS:
            raise ConfigError(
                f"--features: unknown feature set {item!r}; choose from "
                f"{', '.join(FEATURE_SETS)} (comma separated)"
            )
        if item not in names:
            names.append(item)
    if not names:
        raise ConfigError(f"--features: give at least one of {', '.join(FEATURE_SETS)}")
    return tuple(n for n in FEATURE_SETS if n in names)


def pixel_histogram(planes, lo: float, hi: float, bins: int = HIST_BINS) -> np.ndarray:
    """Fraction of the pixels of each plane in ``bins`` equal bins on ``[lo, hi]`` (``N×bins``,
    rows sum to 1); values outside the range are counted in the end bins."""
    x = as_planes(planes)
    if not hi > lo:
        raise EvaluationError(f"the histogram range must have hi > lo (got {lo}, {hi})")
    n = len(x)
    idx = np.floor((x.reshape(n, -1) - lo) / (hi - lo) * bins).astype(np.int64)
    idx = np.clip(idx, 0, bins - 1)
    out = np.stack([np.bincount(row, minlength=bins) for row in idx]).astype(np.float64)
    return out / x[0].size


def summed_power_spectrum(planes) -> np.ndarray:
    """``log10`` of the azimuthally summed power spectrum of each Hann-windowed plane
    (``N×K``, ``K = min(H, W) // 2``, ring 1 first)."""
    from galforge.evaluation.features import power_spectra

    x = as_planes(planes)
    _, p = power_spectra(x[:, None], window=WINDOW, statistic="sum", subtract_mean=False)
    return np.log10(p[:, 0] + _LOG_FLOOR)


def _summary(values: np.ndarray) -> list[float]:
    if values.size == 0:
        return [0.0] * 7
    q = np.percentile(values, [25, 50, 75])
    return [
        float(values.mean()),
        float(values.std()),
        float(values.min()),
        *map(float, q),
        float(values.max()),
    ]


#: Connected (8-neighbour) clusters of the non-zero pixels of a plane: ``(labels, n)`` (the one
#: labelling of sparse fields, :func:`galforge.data.sparse.label_clusters`).
label_galaxies = label_clusters


def galaxy_statistics(planes) -> np.ndarray:
    """Per plane: cluster count, non-zero fraction, total flux, and the summaries (mean, std,
    min, quartiles, max) of the clusters' areas, fluxes and peaks (``N×24``)."""
    rows = []
    for p in as_planes(planes):
        lab, n = label_galaxies(p)
        flat = lab.ravel()
        area = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
        flux = np.bincount(flat, weights=p.ravel(), minlength=n + 1)[1:]
        peak = np.full(n + 1, -np.inf)
        np.maximum.at(peak, flat, p.ravel())
        rows.append(
            [
                float(n),
                float(np.mean(p != 0)),
                float(p.sum()),
                *_summary(area),
                *_summary(flux),
                *_summary(peak[1:]),
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def _to_uint8(planes: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.round(np.clip((planes - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)


def hog_lbp(planes, lo: float, hi: float) -> np.ndarray:
    """HOG (9 orientations, 16-px cells, 2×2 blocks) + uniform LBP histogram (P=8, R=1, 10
    bins) of each plane area-resampled to 128×128 and mapped to 8 bits on ``[lo, hi]``."""
    from skimage.feature import hog, local_binary_pattern

    from galforge.data.transforms import resize

    x = as_planes(planes)
    if not hi > lo:
        raise EvaluationError(f"the HOG/LBP range must have hi > lo (got {lo}, {hi})")
    method = "area" if min(x.shape[1:]) >= HOG_SIZE else "bicubic"
    small = _to_uint8(resize(x, HOG_SIZE, method).astype(np.float64), lo, hi)
    rows = []
    for img in small:
        h = hog(
            img,
            orientations=9,
            pixels_per_cell=(HOG_CELL, HOG_CELL),
            cells_per_block=(2, 2),
            feature_vector=True,
        )
        codes = local_binary_pattern(img, LBP_POINTS, 1, method="uniform").astype(np.int64)
        lbp = np.bincount(codes.ravel(), minlength=LBP_POINTS + 2) / codes.size
        rows.append(np.concatenate([h, lbp]))
    return np.asarray(rows, dtype=np.float64)


def fft_row(planes) -> np.ndarray:
    """``log10`` of the mean over rows of each row's power spectrum (row × Hann window,
    ``|rfft|² / W``): ``N×(W//2 + 1)``."""
    x = as_planes(planes)
    w = x.shape[2]
    power = np.abs(np.fft.rfft(x * np.hanning(w), axis=2)) ** 2 / w
    return np.log10(power.mean(axis=1) + _LOG_FLOOR)


def band_count(images) -> int:
    """Bands of ``N×C×H×W`` images (``H×W`` and ``N×H×W`` planes are one band)."""
    x = np.asarray(images)
    return int(x.shape[1]) if x.ndim == 4 else 1


@dataclass(frozen=True)
class FeatureSpec:
    """What a scorer computes from an image: the feature sets, the image size and the pixel
    range of the histogram (and of the 8-bit image HOG/LBP see), fixed at fit time."""

    sets: tuple[str, ...]
    shape: tuple[int, int]
    lo: float
    hi: float
    channels: int | None = None  # bands of the fitting images (None: not recorded)

    @classmethod
    def fit(cls, images, sets: Sequence[str] = DEFAULT_FEATURES) -> FeatureSpec:
        """The spec for ``images``: their size, bands and lowest and highest pixel."""
        x = as_planes(images)
        return cls.from_range(
            sets, x.shape[1:], float(x.min()), float(x.max()), channels=band_count(images)
        )

    @classmethod
    def from_range(
        cls, sets, shape, lo: float, hi: float, channels: int | None = None
    ) -> FeatureSpec:
        sets = parse_feature_sets(sets)
        if not hi > lo:
            raise EvaluationError(
                f"the training images are constant (every pixel is {lo}); a scorer needs images "
                "that differ"
            )
        return cls(
            sets=sets,
            shape=(int(shape[0]), int(shape[1])),
            lo=float(lo),
            hi=float(hi),
            channels=None if channels is None else int(channels),
        )

    def sizes(self) -> dict[str, int]:
        h, w = self.shape
        hog_cells = HOG_SIZE // HOG_CELL - 1
        per_set = {
            "histogram": HIST_BINS,
            "spectrum": min(h, w) // 2,
            "galaxies": 24,
            "hog_lbp": hog_cells * hog_cells * 4 * 9 + LBP_POINTS + 2,
            "fft_row": w // 2 + 1,
        }
        return {s: per_set[s] for s in self.sets}

    @property
    def n_features(self) -> int:
        return sum(self.sizes().values())

    def extract(self, images, *, what: str = "images") -> np.ndarray:
        """The feature vectors of ``images`` (``N×n_features`` float64)."""
        bands = band_count(images)
        if self.channels is not None and bands != self.channels:
            raise EvaluationError(
                f"{what} have {bands} band(s) but the scorer was fitted on images of "
                f"{self.channels}; score images with the bands it was fitted on"
            )
        x = as_planes(images)
        if tuple(x.shape[1:]) != self.shape:
            raise EvaluationError(
                f"{what} are {x.shape[1]}×{x.shape[2]} pixels but the scorer was fitted on "
                f"{self.shape[0]}×{self.shape[1]} images; score images of the training size"
            )
        parts = []
        for s in self.sets:
            if s == "histogram":
                parts.append(pixel_histogram(x, self.lo, self.hi))
            elif s == "spectrum":
                parts.append(summed_power_spectrum(x))
            elif s == "galaxies":
                parts.append(galaxy_statistics(x))
            elif s == "hog_lbp":
                parts.append(hog_lbp(x, self.lo, self.hi))
            else:
                parts.append(fft_row(x))
        return np.concatenate(parts, axis=1)

    def to_dict(self) -> dict:
        out = {
            "sets": list(self.sets),
            "shape": list(self.shape),
            "lo": self.lo,
            "hi": self.hi,
            "window": WINDOW,
            "histogram_bins": HIST_BINS,
            "sizes": self.sizes(),
        }
        if self.channels is not None:
            out["channels"] = self.channels
        return out

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls.from_range(d["sets"], d["shape"], d["lo"], d["hi"], d.get("channels"))
