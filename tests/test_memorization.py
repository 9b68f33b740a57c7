"""Memorisation: nearest neighbours on the central crop and the NN-ratio summary."""

from __future__ import annotations

import numpy as np
import pytest

from galforge.errors import EvaluationError
from galforge.evaluation.memorization import (
    central_crop,
    memorization,
    nearest_neighbours,
    split_holdout,
)
from galforge.evaluation.report import build_summary


def blobs(n, size=16, seed=0, bands=2, flux=(300.0, 400.0)):
    """Noisy elliptical Gaussian galaxies (a homogeneous set: NN ratios scatter little)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, bands, size, size), np.float32)
    for i in range(n):
        q, th, r = rng.uniform(0.3, 1), rng.uniform(0, np.pi), rng.uniform(1.5, 3)
        xr = x * np.cos(th) + y * np.sin(th)
        yr = -x * np.sin(th) + y * np.cos(th)
        prof = np.exp(-0.5 * (xr**2 + (yr / q) ** 2) / r**2)
        prof *= rng.uniform(*flux) / prof.sum()
        for b in range(bands):
            out[i, b] = prof * (0.7 + 0.3 * b) + rng.normal(0, 1.0, (size, size))
    return out


def test_central_crop_takes_the_middle_half():
    x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(1, 2, 8, 8)
    c = central_crop(x, 0.5)
    assert c.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(c[0, 0], x[0, 0, 2:6, 2:6])
    with pytest.raises(EvaluationError, match="nn-crop"):
        central_crop(x, 0.0)


def test_split_holdout_is_seeded_disjoint_and_complete():
    tr, ho = split_holdout(50, 0.2, seed=3)
    tr2, ho2 = split_holdout(50, 0.2, seed=3)
    np.testing.assert_array_equal(ho, ho2)
    assert len(ho) == 10 and len(tr) == 40
    assert set(tr).isdisjoint(ho) and set(tr) | set(ho) == set(range(50))
    assert not np.array_equal(split_holdout(50, 0.2, seed=4)[1], ho)
    with pytest.raises(EvaluationError, match="at least 4"):
        split_holdout(3)


def test_nearest_neighbour_finds_the_copy():
    ref = blobs(30, seed=1)
    query = ref[[7, 3]] + 0.0
    for metric in ("l1", "mse"):
        d, i = nearest_neighbours(query, ref, metric=metric, k=2)
        assert i[:, 0].tolist() == [7, 3]
        assert np.allclose(d[:, 0], 0.0)
        assert np.all(d[:, 1] > 0)
    # L1 is the mean absolute difference per pixel
    d, _ = nearest_neighbours(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 3.0), metric="l1")
    assert d[0, 0] == pytest.approx(3.0)
    d, _ = nearest_neighbours(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 3.0), metric="mse")
    assert d[0, 0] == pytest.approx(9.0)


def test_duplicated_set_is_caught_and_disjoint_halves_pass():
    x = blobs(400, seed=11)
    real, other = x[:200], x[200:]
    dup = memorization(real, real.copy(), seed=0)
    assert dup["nn_ratio_l1"] < 0.2 and dup["nn_ratio_mse"] < 0.2
    halves = memorization(real, other, seed=0)
    assert 0.9 < halves["nn_ratio_l1"] < 1.2
    assert dup["n_holdout"] == 40 and dup["n_train"] == 160
    # each fake lists k training indices (never a held-out one), sorted by distance
    idx = np.asarray(halves["fake_nn_l1"]["index"])
    dist = np.asarray(halves["fake_nn_l1"]["distance"])
    assert idx.shape == (200, 3)
    assert set(idx.ravel()).isdisjoint(halves["holdout_indices"])
    assert np.all(np.diff(dist, axis=1) >= 0)
    rows = {r["measure"]: r for r in build_summary({"memorization": dup}, {})}
    assert rows["memorisation NN ratio (L1)"]["passed"] is False
    rows = {r["measure"]: r for r in build_summary({"memorization": halves}, {})}
    assert rows["memorisation NN ratio (L1)"]["passed"] is True
    # the verdict uses the upper confidence bound of the ratio
    row = rows["memorisation NN ratio (L1)"]
    assert row["upper_bound"] > row["value"] and row["upper_bound"] > 0.9
    assert 0 < row["threshold"] < 0.9


def test_brightness_normalisation_keeps_copies_at_zero():
    x = blobs(60, seed=2)
    fake = x[:20] * 1.0
    res = memorization(x, fake, normalize=True, seed=0)
    train = set(range(60)) - set(res["holdout_indices"])
    d = np.asarray(res["fake_nn_l1"]["distance"])[:, 0]
    for i in range(20):
        if i in train:
            assert d[i] == pytest.approx(0.0, abs=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(EvaluationError, match="differ"):
        memorization(blobs(10, size=16), blobs(10, size=12))
