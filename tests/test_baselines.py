"""Sparse-field baselines B1 and B2: fitted distributions, the draws, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from galforge.cli import main
from galforge.data.builtin import sparse_fields
from galforge.data.sparse import detect_sources
from galforge.generation.baselines import (
    diamond,
    draw_galaxies,
    fit_baseline,
    radius_of,
    sample_baseline,
)

LIKE = "builtin:sparse?n=3&size=200&count=6&seed=2&stamp=24"


@pytest.fixture(scope="module")
def data():
    return sparse_fields(n=3, size=200, count=6, seed=2, stamp=24)[0].images


def test_diamond_shape_and_radius():
    d = diamond(2, 6.0)
    assert d.shape == (5, 5) and d[2, 2] == 6.0 and (d > 0).sum() == 2 * 4 + 2 * 2 + 1
    assert d[0, 2] == pytest.approx(2.0) and d[0, 0] == 0.0
    assert radius_of([1, 5, 13, 25]) == pytest.approx([0, 1, 2, 3])


def test_b1_draws_from_the_fitted_normals(data):
    fit = fit_baseline("b1", data)
    found = [detect_sources(img[0]) for img in data]
    r = radius_of(np.concatenate([f["npix"] for f in found]))
    peak = np.concatenate([f["peak"] for f in found])
    assert fit.radius_mean == pytest.approx(r.mean()) and fit.radius_std == pytest.approx(r.std())
    assert fit.intensity_mean == pytest.approx(peak.mean())
    assert sorted(fit.counts) == sorted(len(f["x"]) for f in found)
    rr, ii = draw_galaxies(fit, 20000, np.random.default_rng(0))
    # radii: the normal rounded to whole pixels (its mean survives rounding within 0.05)
    assert rr.mean() == pytest.approx(fit.radius_mean, abs=0.05)
    assert rr.std() == pytest.approx(np.sqrt(fit.radius_std**2 + 1 / 12), rel=0.03)
    above = ii[ii > fit.intensity_min]  # intensities below the data's faintest are raised
    z = (fit.intensity_min - fit.intensity_mean) / fit.intensity_std
    from scipy.stats import norm

    assert above.size / ii.size == pytest.approx(norm.sf(z), abs=0.01)


def test_b2_fits_geometric_groups_to_the_data(data):
    fit = fit_baseline("b2", data)
    found = [detect_sources(img[0]) for img in data]
    r = np.rint(radius_of(np.concatenate([f["npix"] for f in found])))
    large = r > fit.split_radius
    assert fit.split_radius == np.median(r) and fit.p_large == pytest.approx(large.mean())
    for name, sel in (("small", ~large), ("large", large)):
        g = fit.groups[name]
        assert g["r_min"] == r[sel].min()
        assert g["p_r"] == pytest.approx(1 / (1 + (r[sel] - r[sel].min()).mean()))


def test_b2_draws_from_its_geometric_distributions():
    from galforge.generation.baselines import BaselineFit

    groups = {
        "small": {"r_min": 0.0, "p_r": 0.8, "k_min": 10.0, "p_i": 0.3},
        "large": {"r_min": 20.0, "p_r": 0.25, "k_min": 100.0, "p_i": 0.05},
    }
    fit = BaselineFit(
        "b2", (64, 64), [5], split_radius=10.0, p_large=0.3, groups=groups, intensity_step=0.5
    )
    rr, ii = draw_galaxies(fit, 40000, np.random.default_rng(1))
    big = rr >= 20  # the small group never reaches 20 (P = 0.2^20)
    assert big.mean() == pytest.approx(0.3, abs=0.01)
    k = ii / 0.5
    for sel, g in ((~big, groups["small"]), (big, groups["large"])):
        excess_r, excess_k = rr[sel] - g["r_min"], k[sel] - g["k_min"]
        assert excess_r.min() == 0 and excess_k.min() == 0
        # geometric on 0, 1, 2, ...: mean (1 − p)/p and P(0) = p
        assert excess_r.mean() == pytest.approx((1 - g["p_r"]) / g["p_r"], rel=0.05)
        assert (excess_k == 0).mean() == pytest.approx(g["p_i"], abs=0.015)
        assert excess_k.mean() == pytest.approx((1 - g["p_i"]) / g["p_i"], rel=0.05)


def test_sample_baseline_draws_fields_of_diamonds(data):
    fit = fit_baseline("b1", data)
    a, b = sample_baseline(fit, 3, seed=4), sample_baseline(fit, 3, seed=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 1, 200, 200) and (a == 0).mean() > 0.5 and a.min() == 0
    with pytest.raises(Exception, match="choose one of"):
        fit_baseline("b3", data)


def test_baseline_command_writes_fits_and_a_preview(tmp_path, capsys):
    out = tmp_path / "b2"
    assert main(["baseline", "b2", "--like", LIKE, "-n", "3", "--out", str(out)]) == 0
    files = sorted(out.glob("baseline_*.fits"))
    assert len(files) == 3 and (out / "grid.png").is_file()
    with fits.open(files[0]) as hdul:
        assert hdul[0].data.shape == (200, 200) and hdul[0].header["BASELINE"] == "B2"
    info = json.loads((out / "baseline.json").read_text())
    assert info["kind"] == "b2" and info["fit"]["shape"] == [200, 200]
    assert main(["baseline", "b2", "--like", LIKE, "-n", "3", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    noisy = tmp_path / "noisy.npy"
    np.save(noisy, np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32))
    assert (
        main(["baseline", "b1", "--like", str(noisy), "-n", "1", "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "exactly 0" in err and len(err.splitlines()) == 1
    assert main(["baseline", "b9", "--like", LIKE, "--out", str(tmp_path / "y")]) == 2
