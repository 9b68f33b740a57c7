"""Per-galaxy comparison of sparse fields (galforge.evaluation.sparse_galaxies)."""

from __future__ import annotations

import numpy as np
import pytest

from galforge.errors import DataError
from galforge.evaluation.sparse_galaxies import (
    QUANTITIES,
    compare_galaxies,
    format_comparison,
    galaxy_table,
)


def _field(rng, n=6, size=64, q=1.0):
    """A field of Gaussian galaxies elongated along x by 1/q, cut at 1 count."""
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size))
    for _ in range(n):
        cy, cx = rng.uniform(8, size - 8, 2)
        s = rng.uniform(1.0, 2.0)
        img += rng.uniform(50, 200) * np.exp(
            -0.5 * (((xx - cx) * q / s) ** 2 + ((yy - cy) / s) ** 2)
        )
    return np.where(img >= 1.0, img, 0.0).astype(np.float32)


def test_ellipticity_of_round_and_elongated_galaxies():
    img = np.zeros((1, 40, 40), np.float32)
    yy, xx = np.mgrid[:40, :40]
    round_ = 100 * np.exp(-0.5 * ((xx - 10) ** 2 + (yy - 10) ** 2) / 4)
    # σx = 2/0.5 = 4, σy = 2: e = (16 − 4) / (16 + 4) = 0.6
    long_ = 100 * np.exp(-0.5 * (((xx - 28) * 0.5) ** 2 + (yy - 28) ** 2) / 4)
    img[0] = np.where(round_ + long_ >= 1e-3, round_ + long_, 0)
    cols, counts = galaxy_table(img)
    assert counts.tolist() == [2] and set(cols) == {"image", *QUANTITIES}
    assert cols["ellipticity"][0] == pytest.approx(0.0, abs=1e-3)
    assert cols["ellipticity"][1] == pytest.approx(0.6, abs=0.01)


def test_compare_passes_for_one_population_and_fails_for_another():
    rng = np.random.default_rng(0)
    real = np.stack([_field(rng) for _ in range(8)])[:, None]
    same = np.stack([_field(rng) for _ in range(8)])[:, None]
    other = np.stack([_field(rng, q=0.4) for _ in range(8)])[:, None]
    ok = compare_galaxies(real, same, placed=[6] * 8)
    assert ok["total"] == 5 and ok["quantities"]["ellipticity"]["passed"]
    assert ok["zero_background"] and ok["clusters_per_field"]["real"] <= 6
    assert 0.5 < ok["clusters_per_placed"] <= 1.0
    bad = compare_galaxies(real, other)
    assert not bad["quantities"]["ellipticity"]["passed"]
    assert bad["clusters_per_placed"] is None
    text = format_comparison(bad)
    assert "ellipticity" in text and "FAIL" in text
    with pytest.raises(DataError, match="one band"):
        compare_galaxies(real, np.zeros((2, 3, 8, 8)))
