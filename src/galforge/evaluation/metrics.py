"""Set-level metrics: FID/KID on any feature network, and the realism classifier.

* :func:`fid_kid` runs torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance`
  and :class:`~torchmetrics.image.kid.KernelInceptionDistance` with a custom feature
  extractor (an ``nn.Module``; torchmetrics needs no torch-fidelity on that path).  With
  galforge's galaxy encoder (:mod:`galforge.evaluation.features`) the FID is the
  *Fréchet galaxy distance* (FGD); with a user-supplied Inception-v3 it is the usual FID.
  KID subsets are drawn from a seeded torch RNG, so the value is reproducible.
* :func:`realism_classifier` trains scikit-learn's histogram gradient boosting to tell real
  from fake on given feature vectors (power spectrum + pixel histograms by default) and
  reports the cross-validated ROC AUC: 0.5 means indistinguishable, 1 means always told apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from galforge.errors import EvaluationError


class _Identity(nn.Module):
    """Feeds precomputed feature vectors straight through (used by :func:`features_fid_kid`)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    extractor: nn.Module,
    *,
    batch: int = 128,
    kid_subsets: int = 50,
    kid_subset_size: int = 1000,
    kid_degree: int = 3,
    seed: int = 0,
) -> dict:
    """FID and KID between two sets of network inputs through ``extractor``.

    ``real``/``fake`` are tensors already in the extractor's input format.  KID's subset size
    is capped at the smaller set size.  KID is unbiased for two independent sets; a set
    against itself scores slightly below 0 (the same image can fall in both subsets).
    Returns ``{"fid", "kid_mean", "kid_std",
    "kid_subset_size", "n_real", "n_fake", "num_features"}``."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_min = min(len(real), len(fake))
    if n_min < 2:
        raise EvaluationError(f"FID/KID need at least 2 images per set (got {n_min})")
    extractor = extractor.eval()
    if not hasattr(extractor, "num_features"):
        with torch.no_grad():
            extractor.num_features = int(extractor(real[:2]).reshape(2, -1).shape[1])
    fid = FrechetInceptionDistance(feature=extractor, reset_real_features=True)
    subset = int(min(kid_subset_size, n_min))
    with warnings.catch_warnings():  # KID keeps every feature vector: that is intended here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=extractor,
            subsets=kid_subsets,
            subset_size=subset,
            degree=kid_degree,
            reset_real_features=True,
        )
    with torch.no_grad():
        for data, is_real in ((real, True), (fake, False)):
            for i in range(0, len(data), batch):
                xb = data[i : i + batch]
                fid.update(xb, real=is_real)
                kid.update(xb, real=is_real)
        fid_value = float(fid.compute())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
    return {
        "fid": max(fid_value, 0.0),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "kid_subsets": kid_subsets,
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
        "num_features": int(extractor.num_features),
    }


def features_fid_kid(real_features, fake_features, **kw) -> dict:
    """:func:`fid_kid` on precomputed feature vectors (``N×D`` arrays)."""
    r = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    return fid_kid(r, f, _Identity(r.shape[1]), **kw)


def galaxy_distances(real) -> Callable[[np.ndarray], dict[str, float]]:
    """Fréchet galaxy distance and KID (galaxy encoder features) against ``real``.

    ``real``: ``N×C×H×W`` images in physical units.  The encoder, the set's scale and
    ``real``'s features are computed once; the returned function maps generated images (the
    same units) to ``{"fgd": ..., "kid": ...}`` (the mean KID), both from one set of features.
    """
    from galforge.evaluation.features import encoder_features, load_galaxy_encoder, set_scale

    encoder = load_galaxy_encoder()
    scale = set_scale(real)
    real_features = encoder_features(encoder, real, scale)

    def measure(fake) -> dict[str, float]:
        r = features_fid_kid(real_features, encoder_features(encoder, fake, scale))
        return {"fgd": r["fid"], "kid": r["kid_mean"]}

    return measure


def realism_classifier(
    real_features,
    fake_features,
    *,
    folds: int = 5,
    seed: int = 0,
    max_iter: int = 100,
    threads: int = 1,
) -> dict:
    """Cross-validated ROC AUC of a gradient-boosting real-vs-fake classifier.

    The two sets are balanced by subsampling the larger one (seeded); each of ``folds``
    stratified folds is scored by a :class:`sklearn.ensemble.HistGradientBoostingClassifier`
    trained on the others, with at most ``threads`` OpenMP threads (1 by default: the
    evaluation runs several measures at once, and oversubscribed OpenMP pools are very slow
    on a shared CPU).  Returns ``{"auc", "auc_folds", "auc_std", "n_per_class",
    "folds", "n_features"}``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    xr = np.asarray(real_features, dtype=np.float64)
    xf = np.asarray(fake_features, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = min(len(xr), len(xf))
    if n < folds:
        raise EvaluationError(
            f"the realism classifier needs at least {folds} images per set (got {n}); "
            "pass more images (evaluate -n) or, from Python, a lower classifier_folds="
        )
    xr = xr[rng.permutation(len(xr))[:n]]
    xf = xf[rng.permutation(len(xf))[:n]]
    x = np.concatenate([xr, xf])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    x = np.nan_to_num(x, nan=0.0, posinf=1e30, neginf=-1e30)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    aucs = []
    with threadpool_limits(limits=threads):
        for k, (tr, te) in enumerate(cv.split(x, y)):
            # leaves of at most a tenth of the training fold, so small sets can still split
            leaf = int(np.clip(len(tr) // 10, 2, 20))
            clf = HistGradientBoostingClassifier(
                max_iter=max_iter,
                learning_rate=0.1,
                min_samples_leaf=leaf,
                early_stopping=False,
                random_state=seed + k,
            )
            clf.fit(x[tr], y[tr])
            aucs.append(float(roc_auc_score(y[te], clf.predict_proba(x[te])[:, 1])))
    return {
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "auc_folds": aucs,
        "n_per_class": int(n),
        "folds": folds,
        "n_features": int(x.shape[1]),
    }
