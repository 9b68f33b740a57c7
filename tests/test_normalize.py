"""Normalizer: fit, exact inverse inside the clip range, numpy/torch, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError


def _data():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 10.0, size=(20, 3, 16, 16)).astype(np.float32)
    x[:, 1] *= 100  # channels on very different scales
    return x


@pytest.mark.parametrize("stretch", ["linear", "asinh"])
@pytest.mark.parametrize("target", [(-1.0, 1.0), (0.0, 1.0)])
def test_round_trip_inside_clip_range(stretch, target):
    x = _data()
    n = Normalizer.fit(x, stretch=stretch, target=target)
    y = n.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= target[0] - 1e-6 and y.max() <= target[1] + 1e-6
    for c in range(3):  # each channel spans the target range
        assert y[:, c].min() == pytest.approx(target[0], abs=1e-5)
        assert y[:, c].max() == pytest.approx(target[1], abs=1e-5)
    inside = np.clip(x, n.lo.reshape(3, 1, 1), n.hi.reshape(3, 1, 1))
    back = n.inverse(y)
    np.testing.assert_allclose(back, inside, rtol=1e-4, atol=1e-3 * float(x.std()))
    # values beyond the clip range are clipped by forward
    assert (x > n.hi.reshape(3, 1, 1)).any()


def test_torch_and_chw_match_numpy():
    x = _data()
    n = Normalizer.fit(x, stretch="asinh")
    t = n.forward(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), n.forward(x), atol=1e-5)
    np.testing.assert_allclose(n.forward(x[3]), n.forward(x)[3], atol=1e-6)
    inv = n.inverse(t)
    np.testing.assert_allclose(inv.numpy(), n.inverse(n.forward(x)), rtol=1e-4, atol=1e-2)


def test_dict_round_trip_json_safe():
    n = Normalizer.fit(_data(), stretch="asinh", clip_percentile=99.0, target=(0, 1))
    d = json.loads(json.dumps(n.to_dict()))
    m = Normalizer.from_dict(d)
    assert m == n
    x = _data()[:2]
    np.testing.assert_array_equal(m.forward(x), n.forward(x))
    with pytest.raises(ConfigError):
        Normalizer.from_dict({"kind": "something else"})
    with pytest.raises(ConfigError, match="lo"):
        Normalizer.from_dict({"kind": "galforge.Normalizer", "hi": [1.0]})


def test_constant_channel_and_channel_mismatch():
    x = np.zeros((4, 2, 8, 8), np.float32)
    x[:, 0] = np.random.default_rng(0).normal(size=(4, 8, 8))
    n = Normalizer.fit(x)
    y = n.forward(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(n.inverse(y)[:, 1], 0.0)
    with pytest.raises(ConfigError, match="channels"):
        n.forward(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.parametrize("stretch", ["linear", "asinh"])
def test_large_sets_are_normalised_in_blocks_with_the_same_values(monkeypatch, stretch):
    import galforge.data.normalize as nm

    x = _data()
    n = Normalizer.fit(x, stretch=stretch)
    whole_f, whole_i = n.forward(x), n.inverse(n.forward(x))
    # blocks of 3 images (20 images: the last block is short); same bits, float32 out
    monkeypatch.setattr(nm, "_BLOCK_VALUES", 3 * 3 * 16 * 16)
    f = n.forward(x)
    assert f.dtype == np.float32 and f.shape == x.shape
    np.testing.assert_array_equal(f, whole_f)
    np.testing.assert_array_equal(n.inverse(f), whole_i)
    # a block smaller than one image still works, one image at a time
    monkeypatch.setattr(nm, "_BLOCK_VALUES", 10)
    np.testing.assert_array_equal(n.forward(x), whole_f)
