"""Fitted gradient-boosted trees as plain arrays (:class:`TreeEnsemble`): predictions equal to
scikit-learn's, saved and loaded without pickle (the realism scorer's regressor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galforge.errors import EvaluationError


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
        return cls(
            init=init,
            learning_rate=float(model.learning_rate),
            roots=np.asarray(roots, dtype=np.int64),
            left=np.concatenate(left),
            right=np.concatenate(right),
            feature=np.concatenate(feature),
            threshold=np.concatenate(threshold),
            value=np.concatenate(value),
            n_features=int(model.n_features_in_),
        )

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
