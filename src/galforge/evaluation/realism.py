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

from galforge.errors import ConfigError, DataError, EvaluationError

# The features, the trees and the ladder live beside this module (the scorer and its files);
# their names are re-exported here, the module's public API before the split.
from galforge.evaluation.realism_features import (  # noqa: F401
    DEFAULT_FEATURES,
    FEATURE_SETS,
    HIST_BINS,
    HOG_CELL,
    HOG_SIZE,
    LBP_POINTS,
    WINDOW,
    FeatureSpec,
    as_planes,
    band_count,
    fft_row,
    galaxy_statistics,
    hog_lbp,
    label_galaxies,
    parse_feature_sets,
    pixel_histogram,
    summed_power_spectrum,
)
from galforge.evaluation.realism_ladder import (  # noqa: F401
    DEFAULT_LADDER,
    Rung,
    _blur,
    check_zero_background,
    degradation_ladder,
    degrade,
)
from galforge.evaluation.realism_trees import TreeEnsemble

#: hyper-parameters of the gradient-boosted trees (``random_state`` is the fit's seed)
DEFAULT_PARAMS = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "max_depth": 3,
    "min_samples_leaf": 1,
    "subsample": 1.0,
}
DEFAULT_FOLDS = 5
FORMAT = 1
SCORER_JSON = "scorer.json"
TREES_NPZ = "trees.npz"
SCORER_FILES = (SCORER_JSON, TREES_NPZ)


# ---------------------------------------------------------------------------- the scorer


def _check_scores(scores, n: int) -> np.ndarray:
    y = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != n:
        raise EvaluationError(f"{n} images but {len(y)} scores; give one score per image")
    if not np.all(np.isfinite(y)):
        raise EvaluationError(
            "the scores hold NaN or infinite values; give a number for every image"
        )
    return y


def _regressor(params: dict, seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(loss="squared_error", random_state=seed, **params)


def cross_validate(
    features,
    scores,
    *,
    groups=None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    params: dict | None = None,
) -> dict:
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
            "add images or lower --folds"
        )
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
    return {
        "folds": folds,
        "grouped": groups is not None,
        "n": len(y),
        "mae": float(np.mean(np.abs(pred - y))),
        "mae_std": float(np.std(maes)),
        "mae_folds": maes,
        "baseline_mae": float(np.mean(base)),
        "predictions": pred.tolist(),
    }


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
        return {
            "kind": "galforge-realism-scorer",
            "format": FORMAT,
            "features": self.spec.to_dict(),
            "regressor": "GradientBoostingRegressor",
            "params": dict(self.params),
            "seed": self.seed,
            "init": self.trees.init,
            "n_trees": int(len(self.trees.roots)),
            "n_features": self.trees.n_features,
            "cv": cv,
            "training": dict(self.training),
        }

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
                "`galforge score fit`"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvaluationError(
                f"{meta_path}: not valid JSON ({exc}); fit the scorer again"
            ) from exc
        if not isinstance(meta, dict) or meta.get("kind") != "galforge-realism-scorer":
            raise EvaluationError(f"{meta_path}: not a galforge realism scorer")
        if meta.get("format") != FORMAT:
            raise EvaluationError(
                f"{meta_path}: scorer format {meta.get('format')!r} is not "
                f"{FORMAT}; fit the scorer again with this galforge"
            )
        trees_path = folder / meta.get("trees", {}).get("file", TREES_NPZ)
        if not trees_path.is_file():
            raise EvaluationError(
                f"{trees_path}: missing; the scorer folder is incomplete, fit it again"
            )
        data = trees_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("trees", {}).get("sha256"):
            raise EvaluationError(
                f"{trees_path}: checksum differs from {SCORER_JSON}; the "
                "scorer files do not belong together, fit it again"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in TreeEnsemble.ARRAYS}
        trees = TreeEnsemble(
            init=float(meta["init"]),
            learning_rate=float(meta["params"]["learning_rate"]),
            n_features=int(meta["n_features"]),
            **arrays,
        )
        return cls(
            spec=FeatureSpec.from_dict(meta["features"]),
            trees=trees,
            params=dict(meta["params"]),
            seed=int(meta.get("seed", 0)),
            cv=dict(meta.get("cv", {})),
            training=dict(meta.get("training", {})),
        )


def fit_scorer(
    features,
    scores,
    spec: FeatureSpec,
    *,
    groups=None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    params: dict | None = None,
    training: dict | None = None,
) -> RealismScorer:
    """Cross-validate (:func:`cross_validate`), then fit the regressor on all ``features``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.n_features:
        raise EvaluationError(
            f"expected N×{spec.n_features} features for {spec.sets}, got {x.shape}"
        )
    y = _check_scores(scores, len(x))
    params = {**DEFAULT_PARAMS, **(params or {})}
    cv = cross_validate(x, y, groups=groups, folds=folds, seed=seed, params=params)
    model = _regressor(params, seed).fit(x, y)
    info = {
        "n_images": len(y),
        "score_min": float(y.min()),
        "score_max": float(y.max()),
        **(training or {}),
    }
    return RealismScorer(
        spec=spec,
        trees=TreeEnsemble.from_sklearn(model),
        params=params,
        seed=seed,
        cv=cv,
        training=info,
    )


def fit_images(
    images,
    scores,
    *,
    features: Sequence[str] | str = DEFAULT_FEATURES,
    groups=None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    params: dict | None = None,
) -> RealismScorer:
    """Fit a scorer on arrays: the feature spec from ``images``, then :func:`fit_scorer`."""
    spec = FeatureSpec.fit(images, features)
    return fit_scorer(
        spec.extract(images), scores, spec, groups=groups, folds=folds, seed=seed, params=params
    )


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
                raise DataError(
                    f"--scores {path}: needs the columns file,score (found "
                    f"{','.join(header) or 'no header'})"
                )
            rows = []
            for line, rec in enumerate(reader, start=2):
                name = (rec.get("file") or "").strip()
                raw = (rec.get("score") or "").strip()
                if not name:
                    raise DataError(f"--scores {path}: line {line} has no file name")
                try:
                    score = float(raw)
                except ValueError:
                    raise DataError(
                        f"--scores {path}: line {line}: score {raw!r} is not a number"
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
        raise DataError(
            f"--scores {path}: {len(missing)} listed file(s) do not exist: "
            f"{shown}{more} (names are relative to {base} or absolute)"
        )
    return rows


def read_image(path, **read_options) -> np.ndarray:
    """The one image of ``path`` (any format galforge reads) as ``1×C×H×W``."""
    from galforge.data import load_images

    iset = load_images(path, **read_options)
    if len(iset) != 1:
        raise DataError(f"{path}: holds {len(iset)} images; the scorer takes one image per file")
    return np.asarray(iset.images)


def read_plane(path, **read_options) -> np.ndarray:
    """The one image of ``path`` (any format galforge reads) as a float64 ``H×W`` band mean."""
    return as_planes(read_image(path, **read_options))[0]


def fit_files(
    images_dir,
    scores_csv,
    *,
    features=DEFAULT_FEATURES,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    params: dict | None = None,
    progress=None,
) -> RealismScorer:
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
        raise EvaluationError(
            f"--scores {scores_csv}: {len(rows)} images are too few for "
            f"{folds}-fold cross-validation; list at least {folds} or lower --folds"
        )
    lo, hi, shape, bands = np.inf, -np.inf, None, None
    for r in rows:
        image = read_image(r.path)
        p = as_planes(image)[0]
        if bands is None:
            bands = band_count(image)
        elif band_count(image) != bands:
            raise DataError(
                f"{r.path}: {band_count(image)} band(s), but {rows[0].path} has "
                f"{bands}; the scorer needs images with the same bands"
            )
        if shape is None:
            shape = p.shape
        elif p.shape != shape:
            raise DataError(
                f"{r.path}: {p.shape[0]}×{p.shape[1]} pixels, but {rows[0].path} is "
                f"{shape[0]}×{shape[1]}; the scorer needs images of one size"
            )
        lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
    spec = FeatureSpec.from_range(sets, shape, lo, hi, channels=bands)
    feats = []
    for i, r in enumerate(rows):
        feats.append(spec.extract(read_image(r.path), what=str(r.path))[0])
        if progress is not None:
            progress(i + 1, len(rows))
    groups = [r.group or r.file for r in rows] if any(r.group for r in rows) else None
    return fit_scorer(
        np.stack(feats),
        [r.score for r in rows],
        spec,
        groups=groups,
        folds=folds,
        seed=seed,
        params=params,
        training={"images": str(images_dir), "scores": str(scores_csv)},
    )


def iter_image_files(source) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, N×C×H×W images)`` of every image file of a folder (names relative to it), or
    of one file / ``builtin:`` spec / prepared set read whole (one name per image)."""
    from galforge.data import load_images
    from galforge.data.imageset import ReadReport
    from galforge.data.readers import list_folder

    path = Path(str(source)).expanduser()
    if path.is_dir() and not (path / "manifest.json").is_file():
        for f in list_folder(path, ReadReport()):
            yield f.name, np.asarray(load_images(f).images)
        return
    iset = load_images(source)
    images = np.asarray(iset.images)
    for k, meta in enumerate(iset.meta):
        name = meta.get("file", meta.get("id"))
        yield (f"image-{k}" if name is None else str(name)), images[k : k + 1]


def predict_files(scorer: RealismScorer, source) -> list[dict]:
    """Score every image of ``source``: rows ``{"file", "index", "score"}`` (``index`` is the
    image's place in a file that holds several, else 0)."""
    rows = []
    for name, images in iter_image_files(source):
        scores = scorer.predict(images, what=name)
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
