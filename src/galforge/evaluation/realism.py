"""The realism scorer: a regressor of a realism score (0 = unrealistic … 8 = real) from image
features, for sparse galaxy fields (single band, background exactly 0, a galaxy = a connected
cluster of non-zero pixels).

Features (:class:`FeatureSpec`, any combination of the sets below, in this order):

* ``histogram`` -- the fraction of pixels in each of 256 equal bins between the lowest and
  the highest pixel value of the training images (values outside go to the end bins; for
  8-bit images ``0…255`` every level has its own bin);
* ``spectrum`` -- ``log10`` of the 1-D azimuthally *summed* power spectrum of the image
  multiplied by a 2-D Hann window (:func:`galforge.evaluation.features.power_spectra` with
  ``window="hann"``, ``statistic="sum"``, no mean subtraction), rings 1 … min(H, W)/2;
* ``galaxies`` -- galaxy statistics: the number of connected (8-neighbour) clusters of
  non-zero pixels, the non-zero fraction and the total flux, then mean, standard deviation,
  minimum, quartiles and maximum of the clusters' areas, fluxes and peak values (24 values);
* ``hog_lbp`` -- a histogram of oriented gradients (9 orientations, 16-pixel cells, 2×2
  blocks) and the 10-bin histogram of uniform local binary patterns (8 neighbours, radius
  1) of the image area-resampled to 128×128 and mapped to 8 bits on the histogram's range;
* ``fft_row`` -- ``log10`` of the mean over the image rows of the power spectrum of each
  row (1-D FFT of the row times a Hann window), W/2 + 1 frequencies.

``histogram`` + ``spectrum`` is the default (the best set of the sparse-field study, whose
XGBoost regressor on them reached an MAE of 0.094 on scores 0–8).  Multi-band images are
reduced to their band mean.  All images of a scorer have one size (the spectra's length
depends on it).

The regressor is scikit-learn's :class:`~sklearn.ensemble.GradientBoostingRegressor`
(squared error, hyper-parameters in :data:`DEFAULT_PARAMS`, ``random_state`` = the seed).
:func:`fit_scorer` reports its K-fold cross-validated mean absolute error (folds shuffled
with the seed; grouped folds, :class:`~sklearn.model_selection.GroupKFold`, when the images
carry a group such as the real image a ladder rung was made from, so that versions of one
image never sit on both sides of a split), beside the MAE of always predicting the training
folds' mean score.  The fitted trees are copied into plain arrays (:class:`TreeEnsemble`)
that predict with the same comparisons and the same order of additions as scikit-learn, so
predictions are identical to the fitted model's; a scorer is saved as ``scorer.json`` (feature
spec, hyper-parameters, cross-validation) and ``trees.npz`` (the arrays, read with
``allow_pickle=False``) -- no pickle, and predictions after reloading equal those before.

The degradation ladder (:data:`DEFAULT_LADDER`, :func:`degradation_ladder`) turns real
images into degraded versions with known scores, so the whole fit → predict path runs on
data made offline.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galforge.data.sparse import check_zero_background as check_sparse_background
from galforge.data.sparse import label_clusters
from galforge.errors import ConfigError, DataError, EvaluationError

FEATURE_SETS = ("histogram", "spectrum", "galaxies", "hog_lbp", "fft_row")
DEFAULT_FEATURES = ("histogram", "spectrum")
HIST_BINS = 256
WINDOW = "hann"
HOG_SIZE = 128
HOG_CELL = 16
LBP_POINTS = 8
_LOG_FLOOR = 1e-30

#: hyper-parameters of the gradient-boosted trees (``random_state`` is the fit's seed)
DEFAULT_PARAMS = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 3,
                  "min_samples_leaf": 1, "subsample": 1.0}
DEFAULT_FOLDS = 5
FORMAT = 1
SCORER_JSON = "scorer.json"
TREES_NPZ = "trees.npz"
SCORER_FILES = (SCORER_JSON, TREES_NPZ)


# ---------------------------------------------------------------------------- features


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
            raise ConfigError(f"--features: unknown feature set {item!r}; choose from "
                              f"{', '.join(FEATURE_SETS)} (comma separated)")
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
    return [float(values.mean()), float(values.std()), float(values.min()), *map(float, q),
            float(values.max())]


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
        rows.append([float(n), float(np.mean(p != 0)), float(p.sum()), *_summary(area),
                     *_summary(flux), *_summary(peak[1:])])
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
        h = hog(img, orientations=9, pixels_per_cell=(HOG_CELL, HOG_CELL), cells_per_block=(2, 2),
                feature_vector=True)
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


@dataclass(frozen=True)
class FeatureSpec:
    """What a scorer computes from an image: the feature sets, the image size and the pixel
    range of the histogram (and of the 8-bit image HOG/LBP see), fixed at fit time."""

    sets: tuple[str, ...]
    shape: tuple[int, int]
    lo: float
    hi: float

    @classmethod
    def fit(cls, images, sets: Sequence[str] = DEFAULT_FEATURES) -> FeatureSpec:
        """The spec for ``images``: their size and their lowest and highest pixel."""
        x = as_planes(images)
        return cls.from_range(sets, x.shape[1:], float(x.min()), float(x.max()))

    @classmethod
    def from_range(cls, sets, shape, lo: float, hi: float) -> FeatureSpec:
        sets = parse_feature_sets(sets)
        if not hi > lo:
            raise EvaluationError(
                f"the training images are constant (every pixel is {lo}); a scorer needs images "
                "that differ")
        return cls(sets=sets, shape=(int(shape[0]), int(shape[1])), lo=float(lo), hi=float(hi))

    def sizes(self) -> dict[str, int]:
        h, w = self.shape
        hog_cells = HOG_SIZE // HOG_CELL - 1
        per_set = {"histogram": HIST_BINS, "spectrum": min(h, w) // 2, "galaxies": 24,
                   "hog_lbp": hog_cells * hog_cells * 4 * 9 + LBP_POINTS + 2,
                   "fft_row": w // 2 + 1}
        return {s: per_set[s] for s in self.sets}

    @property
    def n_features(self) -> int:
        return sum(self.sizes().values())

    def extract(self, images, *, what: str = "images") -> np.ndarray:
        """The feature vectors of ``images`` (``N×n_features`` float64)."""
        x = as_planes(images)
        if tuple(x.shape[1:]) != self.shape:
            raise EvaluationError(
                f"{what} are {x.shape[1]}×{x.shape[2]} pixels but the scorer was fitted on "
                f"{self.shape[0]}×{self.shape[1]} images; score images of the training size")
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
        return {"sets": list(self.sets), "shape": list(self.shape), "lo": self.lo, "hi": self.hi,
                "window": WINDOW, "histogram_bins": HIST_BINS, "sizes": self.sizes()}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls.from_range(d["sets"], d["shape"], d["lo"], d["hi"])


# ---------------------------------------------------------------------------- the trees


@dataclass
class TreeEnsemble:
    """Fitted gradient-boosted regression trees as plain arrays.

    Node arrays of all trees are concatenated (``roots[t]`` is tree ``t``'s first node,
    children are absolute indices, ``-1`` marks a leaf).  :meth:`predict` casts the features
    to float32, goes left when ``x[feature] <= threshold`` and adds ``learning_rate × leaf
    value`` tree after tree to the initial constant -- scikit-learn's own arithmetic, so the
    result is bit-identical to ``GradientBoostingRegressor.predict``.
    """

    init: float
    learning_rate: float
    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    n_features: int

    ARRAYS = ("roots", "left", "right", "feature", "threshold", "value")

    @classmethod
    def from_sklearn(cls, model) -> TreeEnsemble:
        init = float(np.asarray(model.init_.constant_, dtype=np.float64).ravel()[0])
        roots, left, right, feature, threshold, value = [], [], [], [], [], []
        offset = 0
        for est in model.estimators_[:, 0]:
            t = est.tree_
            lc = t.children_left.astype(np.int64)
            rc = t.children_right.astype(np.int64)
            roots.append(offset)
            left.append(np.where(lc >= 0, lc + offset, -1))
            right.append(np.where(rc >= 0, rc + offset, -1))
            feature.append(t.feature.astype(np.int64))
            threshold.append(t.threshold.astype(np.float64))
            value.append(t.value.reshape(t.node_count, -1)[:, 0].astype(np.float64))
            offset += t.node_count
        return cls(init=init, learning_rate=float(model.learning_rate),
                   roots=np.asarray(roots, dtype=np.int64), left=np.concatenate(left),
                   right=np.concatenate(right), feature=np.concatenate(feature),
                   threshold=np.concatenate(threshold), value=np.concatenate(value),
                   n_features=int(model.n_features_in_))

    def predict(self, features) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise EvaluationError(f"expected N×{self.n_features} features, got shape {x.shape}")
        rows = np.arange(len(x))
        out = np.full(len(x), self.init, dtype=np.float64)
        for root in self.roots:
            node = np.full(len(x), root, dtype=np.int64)
            while True:
                inner = self.left[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, np.where(inner, self.feature[node], 0)] <= self.threshold[node]
                node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
            out += self.learning_rate * self.value[node]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.ARRAYS}


# ---------------------------------------------------------------------------- the scorer


def _check_scores(scores, n: int) -> np.ndarray:
    y = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != n:
        raise EvaluationError(f"{n} images but {len(y)} scores; give one score per image")
    if not np.all(np.isfinite(y)):
        raise EvaluationError("the scores hold NaN or infinite values; give a number for every image")
    return y


def _regressor(params: dict, seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(loss="squared_error", random_state=seed, **params)


def cross_validate(features, scores, *, groups=None, folds: int = DEFAULT_FOLDS, seed: int = 0,
                   params: dict | None = None) -> dict:
    """K-fold cross-validated mean absolute error of the regressor on ``features``.

    Folds are shuffled with ``seed``; with ``groups`` (one label per image) they are
    :class:`~sklearn.model_selection.GroupKFold` folds, so a group never sits on both sides.
    Returns ``{"folds", "grouped", "n", "mae", "mae_std", "mae_folds", "baseline_mae",
    "predictions"}`` (``baseline_mae``: always predicting the training folds' mean score;
    ``predictions``: each image's out-of-fold prediction).
    """
    from sklearn.model_selection import GroupKFold, KFold

    x = np.asarray(features, dtype=np.float64)
    y = _check_scores(scores, len(x))
    params = {**DEFAULT_PARAMS, **(params or {})}
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2 for cross-validation, got {folds}")
    if groups is not None:
        groups = np.asarray([str(g) for g in groups])
        n_units, unit = len(np.unique(groups)), "groups (source images)"
    else:
        n_units, unit = len(y), "images"
    if n_units < folds:
        raise EvaluationError(
            f"{folds}-fold cross-validation needs at least {folds} {unit}, got {n_units}; "
            "add images or lower --folds")
    if groups is not None:
        splits = GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y, groups)
    else:
        splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y)
    pred = np.zeros_like(y)
    maes, base = [], []
    for k, (tr, te) in enumerate(splits):
        model = _regressor(params, seed + k).fit(x[tr], y[tr])
        pred[te] = TreeEnsemble.from_sklearn(model).predict(x[te])
        maes.append(float(np.mean(np.abs(pred[te] - y[te]))))
        base.append(float(np.mean(np.abs(y[tr].mean() - y[te]))))
    return {"folds": folds, "grouped": groups is not None, "n": len(y),
            "mae": float(np.mean(np.abs(pred - y))), "mae_std": float(np.std(maes)),
            "mae_folds": maes, "baseline_mae": float(np.mean(base)),
            "predictions": pred.tolist()}


@dataclass
class RealismScorer:
    """A fitted realism scorer: feature spec + trees + how well it cross-validated."""

    spec: FeatureSpec
    trees: TreeEnsemble
    params: dict
    seed: int = 0
    cv: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def predict_features(self, features) -> np.ndarray:
        return self.trees.predict(features)

    def predict(self, images, *, what: str = "images") -> np.ndarray:
        """Realism scores of ``images`` (``H×W``, ``N×H×W`` or ``N×C×H×W``)."""
        return self.predict_features(self.spec.extract(images, what=what))

    def describe(self) -> dict:
        """The JSON part of the saved scorer (without the tree arrays)."""
        cv = {k: v for k, v in self.cv.items() if k != "predictions"}
        return {"kind": "galforge-realism-scorer", "format": FORMAT,
                "features": self.spec.to_dict(), "regressor": "GradientBoostingRegressor",
                "params": dict(self.params), "seed": self.seed, "init": self.trees.init,
                "n_trees": int(len(self.trees.roots)), "n_features": self.trees.n_features,
                "cv": cv, "training": dict(self.training)}

    def save(self, folder) -> Path:
        """Write ``scorer.json`` and ``trees.npz`` into ``folder`` (created if missing)."""
        from galforge import __version__
        from galforge.fileio import atomic_write_bytes, atomic_write_json

        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **self.trees.arrays())
        data = buf.getvalue()
        meta = self.describe()
        meta["galforge_version"] = __version__
        meta["trees"] = {"file": TREES_NPZ, "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_bytes(folder / TREES_NPZ, data)
        atomic_write_json(folder / SCORER_JSON, meta)
        return folder

    @classmethod
    def load(cls, folder) -> RealismScorer:
        """Read a scorer written by :meth:`save` (a folder, or its ``scorer.json``)."""
        folder = Path(folder).expanduser()
        if folder.name == SCORER_JSON and folder.is_file():
            folder = folder.parent
        meta_path = folder / SCORER_JSON
        if not meta_path.is_file():
            raise EvaluationError(
                f"--scorer {folder}: no {SCORER_JSON} there; give a folder written by "
                "`galforge score fit`")
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvaluationError(f"{meta_path}: not valid JSON ({exc}); fit the scorer again") from exc
        if not isinstance(meta, dict) or meta.get("kind") != "galforge-realism-scorer":
            raise EvaluationError(f"{meta_path}: not a galforge realism scorer")
        if meta.get("format") != FORMAT:
            raise EvaluationError(f"{meta_path}: scorer format {meta.get('format')!r} is not "
                                  f"{FORMAT}; fit the scorer again with this galforge")
        trees_path = folder / meta.get("trees", {}).get("file", TREES_NPZ)
        if not trees_path.is_file():
            raise EvaluationError(f"{trees_path}: missing; the scorer folder is incomplete, fit it again")
        data = trees_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("trees", {}).get("sha256"):
            raise EvaluationError(f"{trees_path}: checksum differs from {SCORER_JSON}; the "
                                  "scorer files do not belong together, fit it again")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in TreeEnsemble.ARRAYS}
        trees = TreeEnsemble(init=float(meta["init"]),
                             learning_rate=float(meta["params"]["learning_rate"]),
                             n_features=int(meta["n_features"]), **arrays)
        return cls(spec=FeatureSpec.from_dict(meta["features"]), trees=trees,
                   params=dict(meta["params"]), seed=int(meta.get("seed", 0)),
                   cv=dict(meta.get("cv", {})), training=dict(meta.get("training", {})))


def fit_scorer(features, scores, spec: FeatureSpec, *, groups=None, folds: int = DEFAULT_FOLDS,
               seed: int = 0, params: dict | None = None, training: dict | None = None,
               ) -> RealismScorer:
    """Cross-validate (:func:`cross_validate`), then fit the regressor on all ``features``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.n_features:
        raise EvaluationError(f"expected N×{spec.n_features} features for {spec.sets}, got {x.shape}")
    y = _check_scores(scores, len(x))
    params = {**DEFAULT_PARAMS, **(params or {})}
    cv = cross_validate(x, y, groups=groups, folds=folds, seed=seed, params=params)
    model = _regressor(params, seed).fit(x, y)
    info = {"n_images": len(y), "score_min": float(y.min()), "score_max": float(y.max()),
            **(training or {})}
    return RealismScorer(spec=spec, trees=TreeEnsemble.from_sklearn(model), params=params,
                         seed=seed, cv=cv, training=info)


def fit_images(images, scores, *, features: Sequence[str] | str = DEFAULT_FEATURES, groups=None,
               folds: int = DEFAULT_FOLDS, seed: int = 0, params: dict | None = None
               ) -> RealismScorer:
    """Fit a scorer on arrays: the feature spec from ``images``, then :func:`fit_scorer`."""
    spec = FeatureSpec.fit(images, features)
    return fit_scorer(spec.extract(images), scores, spec, groups=groups, folds=folds, seed=seed,
                      params=params)


# ---------------------------------------------------------------------------- files


@dataclass
class ScoreRow:
    file: str
    path: Path
    score: float
    group: str | None = None


def read_scores_csv(path, images_dir) -> list[ScoreRow]:
    """Rows of a ``file,score[,group]`` CSV; names relative to ``images_dir`` or absolute.

    Raises :class:`DataError` naming the CSV (missing, no ``file``/``score`` column, a score
    that is not a number, no rows) or the image files that do not exist.
    """
    path = Path(path).expanduser()
    base = Path(images_dir).expanduser()
    if not path.is_file():
        raise DataError(f"--scores {path}: no such file; give a CSV with columns file,score")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            if "file" not in header or "score" not in header:
                raise DataError(f"--scores {path}: needs the columns file,score (found "
                                f"{','.join(header) or 'no header'})")
            rows = []
            for line, rec in enumerate(reader, start=2):
                name = (rec.get("file") or "").strip()
                raw = (rec.get("score") or "").strip()
                if not name:
                    raise DataError(f"--scores {path}: line {line} has no file name")
                try:
                    score = float(raw)
                except ValueError:
                    raise DataError(f"--scores {path}: line {line}: score {raw!r} is not a number"
                                    ) from None
                if not np.isfinite(score):
                    raise DataError(f"--scores {path}: line {line}: score {raw!r} is not finite")
                group = (rec.get("group") or "").strip() or None if "group" in header else None
                p = Path(name).expanduser()
                rows.append(ScoreRow(name, p if p.is_absolute() else base / p, score, group))
    except UnicodeDecodeError as exc:
        raise DataError(f"--scores {path}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"--scores {path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"--scores {path}: no rows; give one line file,score per image")
    missing = [r for r in rows if not r.path.is_file()]
    if missing:
        shown = ", ".join(str(r.path) for r in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(f"--scores {path}: {len(missing)} listed file(s) do not exist: "
                        f"{shown}{more} (names are relative to {base} or absolute)")
    return rows


def read_plane(path, **read_options) -> np.ndarray:
    """The one image of ``path`` (any format galforge reads) as a float64 ``H×W`` band mean."""
    from galforge.data import load_images

    iset = load_images(path, **read_options)
    if len(iset) != 1:
        raise DataError(f"{path}: holds {len(iset)} images; the scorer takes one image per file")
    return as_planes(iset.images)[0]


def fit_files(images_dir, scores_csv, *, features=DEFAULT_FEATURES, folds: int = DEFAULT_FOLDS,
              seed: int = 0, params: dict | None = None, progress=None) -> RealismScorer:
    """Fit a scorer on the files a ``file,score[,group]`` CSV lists (see :func:`read_scores_csv`).

    Files are read twice (first the size and pixel range that fix the features, then the
    features), so the images never need to be in memory together.  Groups, when the CSV has
    a ``group`` column, make the cross-validation folds grouped.
    """
    sets = parse_feature_sets(features)
    rows = read_scores_csv(scores_csv, images_dir)
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2 for cross-validation, got {folds}")
    if len(rows) < folds:
        raise EvaluationError(f"--scores {scores_csv}: {len(rows)} images are too few for "
                              f"{folds}-fold cross-validation; list at least {folds} or lower --folds")
    lo, hi, shape = np.inf, -np.inf, None
    for r in rows:
        p = read_plane(r.path)
        if shape is None:
            shape = p.shape
        elif p.shape != shape:
            raise DataError(f"{r.path}: {p.shape[0]}×{p.shape[1]} pixels, but {rows[0].path} is "
                            f"{shape[0]}×{shape[1]}; the scorer needs images of one size")
        lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
    spec = FeatureSpec.from_range(sets, shape, lo, hi)
    feats = []
    for i, r in enumerate(rows):
        feats.append(spec.extract(read_plane(r.path), what=str(r.path))[0])
        if progress is not None:
            progress(i + 1, len(rows))
    groups = [r.group or r.file for r in rows] if any(r.group for r in rows) else None
    return fit_scorer(np.stack(feats), [r.score for r in rows], spec, groups=groups, folds=folds,
                      seed=seed, params=params,
                      training={"images": str(images_dir), "scores": str(scores_csv)})


def iter_image_files(source) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, N×H×W planes)`` of every image file of a folder (names relative to it), or of
    one file / ``builtin:`` spec / prepared set read whole (one name per image)."""
    from galforge.data import load_images
    from galforge.data.imageset import ReadReport
    from galforge.data.readers import list_folder

    path = Path(str(source)).expanduser()
    if path.is_dir() and not (path / "manifest.json").is_file():
        for f in list_folder(path, ReadReport()):
            yield f.name, as_planes(load_images(f).images)
        return
    iset = load_images(source)
    planes = as_planes(iset.images)
    for k, meta in enumerate(iset.meta):
        name = meta.get("file", meta.get("id"))
        yield (f"image-{k}" if name is None else str(name)), planes[k:k + 1]


def predict_files(scorer: RealismScorer, source) -> list[dict]:
    """Score every image of ``source``: rows ``{"file", "index", "score"}`` (``index`` is the
    image's place in a file that holds several, else 0)."""
    rows = []
    for name, planes in iter_image_files(source):
        scores = scorer.predict(planes, what=name)
        for k, s in enumerate(scores):
            rows.append({"file": name, "index": k, "score": float(s)})
    if not rows:
        raise DataError(f"{source}: no images to score")
    return rows


def scores_csv_text(rows: Sequence[dict]) -> str:
    """``file,score`` CSV text (``file,index,score`` when a file holds several images)."""
    multi = any(r.get("index", 0) for r in rows)
    cols = ["file", "index", "score"] if multi else ["file", "score"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([r[c] if c != "score" else repr(float(r[c])) for c in cols])
    return buf.getvalue()


# ---------------------------------------------------------------------------- the ladder


@dataclass(frozen=True)
class Rung:
    """One step of the degradation ladder: its score, a name, and the damage done, in order.

    Damage steps (``(kind, options)``):

    * ``("blur", {"sigma": s})`` -- Gaussian blur of ``s`` pixels (zero outside the image);
    * ``("noise", {"sigma_ln": s})`` -- every non-zero pixel times a log-normal factor
      ``exp(s·N(0,1) − s²/2)`` (mean 1, positive, zero background kept);
    * ``("shuffle", {})`` -- each galaxy's pixel values permuted among its own pixels;
    * ``("diamonds", {"fraction": f, "fixed": b})`` -- a fraction ``f`` of the galaxies
      (chosen at random; ``f·n`` rounded half up, at least one) replaced by a flat diamond ``|dx| + |dy| ≤ r`` at their flux-weighted
      centre (moved inward when the diamond would cross the image border), with the galaxy's
      area and total flux, or (``fixed``) every diamond with the image's median galaxy area
      and median flux;
    * ``("move", {"fraction": f})`` -- a fraction ``f`` of the galaxies cut out and pasted at
      uniformly drawn positions (overlaps add).
    """

    score: float
    name: str
    steps: tuple[tuple[str, dict], ...] = ()

    def to_dict(self) -> dict:
        return {"score": self.score, "name": self.name,
                "steps": [[kind, dict(opts)] for kind, opts in self.steps]}


#: the default ladder: 8 = real, down to 0 = fixed diamonds at uniform positions
DEFAULT_LADDER = (
    Rung(8, "real"),
    Rung(7, "blur1", (("blur", {"sigma": 1.0}),)),
    Rung(6, "blur2", (("blur", {"sigma": 2.0}),)),
    Rung(5, "noise", (("noise", {"sigma_ln": 0.5}),)),
    Rung(4, "shuffled", (("shuffle", {}),)),
    Rung(3, "half-diamonds", (("diamonds", {"fraction": 0.5, "fixed": False}),)),
    Rung(2, "diamonds", (("diamonds", {"fraction": 1.0, "fixed": False}),)),
    Rung(1, "diamonds-uniform", (("diamonds", {"fraction": 1.0, "fixed": False}),
                                 ("move", {"fraction": 1.0}))),
    Rung(0, "fixed-diamonds-uniform", (("diamonds", {"fraction": 1.0, "fixed": True}),
                                       ("move", {"fraction": 1.0}))),
)

def _clusters(plane: np.ndarray):
    """``(slices, masks)`` of the galaxies (connected non-zero clusters) of ``plane``."""
    from scipy import ndimage

    lab, n = label_galaxies(plane)
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            out.append((sl, lab[sl] == k))
    return out


def _diamond(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (np.abs(yy) + np.abs(xx)) <= radius


def _radius_for_area(area: float) -> int:
    # a diamond of radius r covers 2r² + 2r + 1 pixels
    r = (-2 + np.sqrt(4 - 8 * (1 - area))) / 4 if area > 1 else 0.0
    return int(max(0, round(r)))


def _paste(out: np.ndarray, stamp: np.ndarray, y0: int, x0: int) -> None:
    """Add ``stamp`` with its top-left corner at ``(y0, x0)``, clipped to ``out``."""
    h, w = stamp.shape
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(out.shape[0], y0 + h), min(out.shape[1], x0 + w)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] += stamp[ys - y0:ye - y0, xs - x0:xe - x0]


def _pick(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    # half up, and at least one galaxy when the fraction is positive
    k = min(n, max(int(np.floor(float(fraction) * n + 0.5)), int(fraction > 0 and n > 0)))
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.permutation(n)[:k]] = True
    return chosen


def _diamonds(plane, rng, fraction: float = 1.0, fixed: bool = False) -> np.ndarray:
    cl = _clusters(plane)
    if not cl:
        return plane
    areas = np.array([m.sum() for _, m in cl], dtype=np.float64)
    fluxes = np.array([plane[sl][m].sum() for sl, m in cl])
    chosen = _pick(len(cl), fraction, rng)
    out = plane.copy()
    for k, (sl, m) in enumerate(cl):
        if not chosen[k]:
            continue
        sub = plane[sl] * m
        out[sl][m] -= plane[sl][m]
        area, flux = (np.median(areas), np.median(fluxes)) if fixed else (areas[k], fluxes[k])
        r = _radius_for_area(area)
        shape = _diamond(r)
        wsum = sub.sum()
        yy, xx = np.mgrid[sl]
        if wsum > 0:
            cy, cx = (yy * sub).sum() / wsum, (xx * sub).sum() / wsum
        else:
            cy, cx = yy[m].mean(), xx[m].mean()
        # centred on the galaxy, moved inward just enough to lie inside the image
        cy = int(np.clip(round(cy), r, max(r, plane.shape[0] - 1 - r)))
        cx = int(np.clip(round(cx), r, max(r, plane.shape[1] - 1 - r)))
        _paste(out, shape * (flux / shape.sum()), cy - r, cx - r)
    return out


def _move(plane, rng, fraction: float = 1.0) -> np.ndarray:
    cl = _clusters(plane)
    chosen = _pick(len(cl), fraction, rng)
    out = plane.copy()
    for k, (sl, m) in enumerate(cl):
        if not chosen[k]:
            continue
        stamp = plane[sl] * m
        out[sl][m] -= plane[sl][m]
        h, w = stamp.shape
        y0 = int(rng.integers(0, max(1, plane.shape[0] - h + 1)))
        x0 = int(rng.integers(0, max(1, plane.shape[1] - w + 1)))
        _paste(out, stamp, y0, x0)
    out[np.abs(out) < 1e-12 * max(1.0, float(np.abs(plane).max()))] = 0.0
    return out


def _shuffle(plane, rng) -> np.ndarray:
    out = plane.copy()
    for sl, m in _clusters(plane):
        vals = out[sl][m]
        out[sl][m] = vals[rng.permutation(vals.size)]
    return out


def _blur(plane, rng, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(plane, float(sigma), mode="constant")


def _noise(plane, rng, sigma_ln: float) -> np.ndarray:
    s = float(sigma_ln)
    factor = np.exp(s * rng.standard_normal(plane.shape) - s * s / 2)
    return np.where(plane != 0, plane * factor, 0.0)


_DAMAGE = {"blur": _blur, "noise": _noise, "shuffle": _shuffle, "diamonds": _diamonds,
           "move": _move}


def degrade(plane, steps: Sequence[tuple[str, dict]], rng: np.random.Generator) -> np.ndarray:
    """Apply the damage ``steps`` (see :class:`Rung`) to one ``H×W`` plane, in order."""
    out = np.asarray(plane, dtype=np.float64)
    for kind, opts in steps:
        if kind not in _DAMAGE:
            raise ConfigError(f"unknown ladder damage {kind!r}; use one of {', '.join(_DAMAGE)}")
        out = _DAMAGE[kind](out, rng, **opts)
    return out


def check_zero_background(planes, *, what: str = "the images") -> None:
    """Raise :class:`DataError` unless the planes (band means) look like galaxies on an
    exactly-0 sky: the rule of :func:`galforge.data.sparse.check_zero_background` (finite, a
    fifth of the pixels 0, no image without a 0), and no image without a galaxy."""
    x = as_planes(planes)
    check_sparse_background(
        x, what, fix="the ladder needs galaxies on a zero background (pass --threshold T to set "
                     "pixels with |value| <= T to 0)")
    blank = [i for i, p in enumerate(x) if not np.any(p)]
    if blank:
        raise DataError(f"{what}: image(s) {blank[:5]} hold no galaxy (every pixel is 0); "
                        "leave them out")


def degradation_ladder(images, *, rungs: Sequence[Rung] = DEFAULT_LADDER, seed: int = 0,
                       threshold: float = 0.0, what: str = "the images"
                       ) -> Iterator[tuple[int, Rung, np.ndarray]]:
    """Degraded versions of every image, with known scores: yields ``(source index, rung,
    H×W float32 plane)`` for each image and each rung (the source's band mean; pixels with
    ``|value| <= threshold`` set to 0 first).  The draws of image ``i``, rung ``j`` come from
    ``numpy.random.default_rng([seed, i, j])``, so the ladder is reproducible from the seed.
    """
    x = as_planes(images)
    if threshold > 0:
        x = np.where(np.abs(x) <= threshold, 0.0, x)
    check_zero_background(x, what=what)
    for i, plane in enumerate(x):
        for j, rung in enumerate(rungs):
            rng = np.random.default_rng([int(seed), i, j])
            yield i, rung, degrade(plane, rung.steps, rng).astype(np.float32)
