"""Transforms: crop, resize, value transforms and torch augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galforge.data.transforms import (
    asinh_stretch,
    augment_batch,
    center_crop,
    minmax_scale,
    percentile_clip,
    resize,
)
from galforge.errors import ConfigError


def test_center_crop_fraction_and_pixels():
    a = np.arange(2 * 3 * 10 * 10, dtype=np.float32).reshape(2, 3, 10, 10)
    c = center_crop(a, fraction=0.6)
    assert c.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(c, a[..., 2:8, 2:8])
    p = center_crop(a[0], pixels=(4, 2))
    np.testing.assert_array_equal(p, a[0, :, 3:7, 4:6])
    with pytest.raises(ConfigError):
        center_crop(a, pixels=12)
    with pytest.raises(ConfigError):
        center_crop(a, fraction=0.5, pixels=3)


def test_resize_nearest_area_bicubic():
    a = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    n = resize(a, 2, "nearest")
    np.testing.assert_array_equal(n[0, 0], [[5, 7], [13, 15]])
    up = resize(a, 8)  # nearest upsampling repeats pixels, no new values
    np.testing.assert_array_equal(up[0, 0, ::2, ::2], a[0, 0])
    ar = resize(a, 2, "area")
    np.testing.assert_allclose(ar[0, 0], [[2.5, 4.5], [10.5, 12.5]])  # block means
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 12, 9)).astype(np.float32)
    np.testing.assert_allclose(
        resize(img, (5, 7), "area").mean(axis=(1, 2)), img.mean(axis=(1, 2)), rtol=1e-5
    )
    smooth = np.fromfunction(lambda y, x: np.sin(x / 5) + np.cos(y / 7), (32, 32)).astype(
        np.float32
    )
    bc = resize(smooth, 16, "bicubic")
    assert bc.shape == (16, 16)
    assert np.abs(bc - resize(smooth, 16, "area")).max() < 0.05
    with pytest.raises(ConfigError, match="method"):
        resize(a, 2, "lanczos")


def test_percentile_clip_minmax_asinh():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2, 16, 16)).astype(np.float32)
    x[0, 1, 0, 0] = 1e6
    c = percentile_clip(x, 99.0)
    assert c[:, 1].max() == pytest.approx(np.percentile(x[:, 1], 99.0), rel=1e-5)
    assert c[:, 0].max() == pytest.approx(np.percentile(x[:, 0], 99.0), rel=1e-5)
    assert c[:, 0].min() == x[:, 0].min()
    m = minmax_scale(c, target=(-1, 1))
    for ch in range(2):
        assert m[:, ch].min() == pytest.approx(-1) and m[:, ch].max() == pytest.approx(1)
    s = asinh_stretch(x[:1], 2.0)
    np.testing.assert_allclose(asinh_stretch(s, 2.0, inverse=True), x[:1], rtol=1e-4, atol=1e-4)
    assert s.max() < 20  # the 1e6 outlier is compressed


def test_augment_batch_is_seeded_and_a_symmetry():
    x = torch.arange(4 * 2 * 8 * 8, dtype=torch.float32).reshape(4, 2, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    # flips and 90° rotations permute pixels: every image keeps its values
    for i in range(4):
        assert torch.equal(a[i].flatten().sort().values, x[i].flatten().sort().values)
    outs = {
        tuple(augment_batch(x[:1], torch.Generator().manual_seed(s))[0, 0, 0, :2].tolist())
        for s in range(40)
    }
    assert len(outs) == 8  # the 8 elements of the dihedral group all occur
    none = augment_batch(x, torch.Generator().manual_seed(0), flips=False, rot90=False)
    assert torch.equal(none, x) and none is not x


def test_augment_arbitrary_rotation_fills():
    x = torch.zeros(2, 1, 17, 17)
    x[:, :, 6:11, 6:11] = 1.0
    x += 5.0  # sky level 5
    g = torch.Generator().manual_seed(1)
    const = augment_batch(x, g, flips=False, rot90=False, rotate="constant")
    corner = const[:, :, 0, 0]
    assert torch.allclose(corner, torch.full_like(corner, 5.0))  # sky fill, not zero
    assert const[:, :, 8, 8].min() > 5.5  # centre stays bright
    refl = augment_batch(
        x, torch.Generator().manual_seed(1), flips=False, rot90=False, rotate="reflect"
    )
    assert refl.min() >= 5.0 - 1e-5 and torch.isfinite(refl).all()
    fixed = augment_batch(
        x,
        torch.Generator().manual_seed(1),
        flips=False,
        rot90=False,
        rotate="constant",
        fill_value=-1.0,
    )
    assert fixed.min() < 0
    with pytest.raises(ConfigError):
        augment_batch(x, g, rotate="wrap")
