"""FID/KID through torchmetrics with galforge feature extractors; the realism classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from galforge.errors import EvaluationError
from galforge.evaluation import features
from galforge.evaluation.metrics import features_fid_kid, fid_kid, realism_classifier


def blobs(n, size=32, seed=0, bands=2):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, bands, size, size), np.float32)
    for i in range(n):
        q, th, r = rng.uniform(0.3, 1), rng.uniform(0, np.pi), rng.uniform(1.5, 4)
        xr = x * np.cos(th) + y * np.sin(th)
        yr = -x * np.sin(th) + y * np.cos(th)
        prof = np.exp(-0.5 * (xr**2 + (yr / q) ** 2) / r**2)
        prof *= 10 ** rng.uniform(2.5, 3) / prof.sum()
        for b in range(bands):
            out[i, b] = prof * (0.7 + 0.3 * b) + rng.normal(0, 1.0, (size, size))
    return out


def blur(x, sigma):
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma)).astype(np.float32)


@pytest.fixture(scope="module")
def real():
    return blobs(96, seed=1)


def test_fid_of_identical_sets_is_zero_and_grows_with_blur(real):
    enc = features.load_galaxy_encoder()
    scale = features.set_scale(real)
    xr = features.encoder_inputs(real, scale)
    same = fid_kid(xr, xr.clone(), enc, kid_subset_size=50, kid_subsets=10)
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert same["num_features"] == enc.num_features
    fids, kids = [], []
    for sigma in (1.0, 2.5):
        xb = features.encoder_inputs(blur(real, sigma), scale)
        res = fid_kid(xr, xb, enc, kid_subset_size=50, kid_subsets=10)
        fids.append(res["fid"])
        kids.append(res["kid_mean"])
    assert 0.0 < fids[0] < fids[1]
    assert kids[1] > kids[0] > same["kid_mean"]


def test_independent_draws_score_small_compared_with_blur(real):
    enc = features.load_galaxy_encoder()
    scale = features.set_scale(real)
    xr = features.encoder_inputs(real, scale)
    other = fid_kid(xr, features.encoder_inputs(blobs(96, seed=2), scale), enc, kid_subset_size=50)
    blurred = fid_kid(xr, features.encoder_inputs(blur(real, 2.5), scale), enc, kid_subset_size=50)
    assert other["fid"] < 0.5 * blurred["fid"]
    # KID is unbiased: independent draws of one population give 0 within its scatter
    assert abs(other["kid_mean"]) < 3 * other["kid_std"] + 1e-6
    assert blurred["kid_mean"] > 3 * blurred["kid_std"]


def test_kid_is_reproducible_with_a_seed_and_caps_the_subset():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 8))
    b = rng.normal(loc=0.5, size=(30, 8))
    r1 = features_fid_kid(a, b, kid_subsets=5, kid_subset_size=1000, seed=3)
    r2 = features_fid_kid(a, b, kid_subsets=5, kid_subset_size=1000, seed=3)
    assert r1["kid_mean"] == r2["kid_mean"]
    assert r1["kid_subset_size"] == 30
    assert r1["kid_mean"] > 0 and r1["kid_std"] >= 0
    # Fréchet distance of Gaussians with shifted means ≈ squared shift
    big_a = rng.normal(size=(4000, 4))
    big_b = rng.normal(loc=1.0, size=(4000, 4))
    assert features_fid_kid(big_a, big_b, kid_subset_size=100)["fid"] == pytest.approx(4.0, rel=0.1)


def test_fid_needs_two_images():
    with pytest.raises(EvaluationError, match="at least 2"):
        features_fid_kid(np.zeros((1, 3)), np.zeros((5, 3)))


def _realism(real, fake, seed=0):
    edges = features.histogram_edges(real)
    return realism_classifier(
        features.realism_features(real, edges),
        features.realism_features(fake, edges),
        folds=4,
        seed=seed,
    )


def test_realism_classifier_halves_vs_broken(real):
    other = blobs(96, seed=3)
    halves = _realism(real, other)
    assert halves["auc"] < 0.7
    assert len(halves["auc_folds"]) == 4 and halves["n_per_class"] == 96
    rng = np.random.default_rng(0)
    flat = other.reshape(96, 2, -1).copy()
    for i in range(96):
        flat[i] = flat[i][:, rng.permutation(flat.shape[2])]
    shuffled = _realism(real, flat.reshape(other.shape))
    assert shuffled["auc"] > 0.9
    noise = rng.normal(0, 1.0, size=other.shape).astype(np.float32)
    assert _realism(real, noise)["auc"] > 0.9


def test_realism_classifier_needs_enough_images():
    with pytest.raises(EvaluationError, match="evaluate -n"):
        realism_classifier(np.zeros((3, 2)), np.zeros((3, 2)), folds=5)


def test_custom_extractor_module_without_num_features():
    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = torch.rand(10, 3, 8, 8)
    res = fid_kid(x, x + 1.0, Pool(), kid_subset_size=5, kid_subsets=3)
    assert res["num_features"] == 3
    assert res["fid"] == pytest.approx(3.0, rel=1e-3)
