"""Tests of galforge.evaluation.colour: colour–magnitude and the median ± kσ box."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM, Planck18

from galforge.errors import EvaluationError
from galforge.evaluation import colour


def catalogue(n, rng, shift=0.0):
    g = rng.normal(20.0, 1.0, n)
    r = g - rng.normal(0.6, 0.1, n) - shift
    return [{"mag_g": a, "mag_r": b} for a, b in zip(g, r, strict=True)]


def test_colour_and_apparent_magnitude():
    cat = [{"mag_g": 20.0, "mag_r": 19.4}, {"mag_g": 21.0, "mag_r": np.nan}]
    cm = colour.colour_magnitude(cat, "g", "r", "r")
    assert cm["colour"][0] == pytest.approx(0.6)
    assert cm["mag"][0] == pytest.approx(19.4)
    assert list(cm["valid"]) == [True, False]
    assert cm["n_valid"] == 1 and not cm["absolute"]


def test_absolute_magnitude_from_redshift_matches_astropy():
    cat = [{"mag_g": 20.0, "mag_r": 19.0, "z": 0.1}, {"mag_g": 21.0, "mag_r": 20.0, "z": 0.3}]
    cm = colour.colour_magnitude(cat, "g", "r", "r", redshift="z")
    ref = FlatLambdaCDM(H0=70, Om0=0.3).distmod([0.1, 0.3]).value
    assert np.allclose(cm["mag"], [19.0 - ref[0], 20.0 - ref[1]])
    assert cm["absolute"] and cm["mag_label"] == "M_r"
    one_z = colour.colour_magnitude(
        cat, "g", "r", "r", redshift=0.1, cosmology="Planck18", k_correction=0.2
    )
    assert one_z["mag"][1] == pytest.approx(20.0 - Planck18.distmod(0.1).value - 0.2)


def test_colour_errors_name_the_problem():
    cat = [{"mag_g": 20.0, "mag_r": 19.0}]
    with pytest.raises(EvaluationError, match="mag_i"):
        colour.colour_magnitude(cat, "g", "i", "r")
    with pytest.raises(EvaluationError, match="redshift"):
        colour.colour_magnitude(cat, "g", "r", "r", redshift=[0.1, 0.2])
    with pytest.raises(EvaluationError, match="cosmology"):
        colour.colour_magnitude(cat, "g", "r", "r", redshift=0.1, cosmology="NoSuchCosmo")


def test_fraction_in_box_exact_counts():
    real = np.array([[0.0, 20.0], [1.0, 21.0], [2.0, 22.0]])  # median (1, 21), std 0.816
    fake = np.array([[1.0, 21.0], [2.4, 21.0], [1.0, 22.4], [5.0, 30.0]])
    res = colour.fraction_in_box(real, fake, k=1.75)
    half = 1.75 * np.std([0.0, 1.0, 2.0])
    assert res["box"]["colour"] == pytest.approx([1 - half, 1 + half])
    assert res["n_inside"] == 3 and res["n_fake"] == 4
    assert res["fraction"] == pytest.approx(0.75)
    assert res["fraction_real"] == pytest.approx(1.0)


def test_fraction_in_box_same_vs_shifted_population():
    rng = np.random.default_rng(0)
    real = colour.colour_magnitude(catalogue(500, rng), "g", "r", "r")
    same = colour.colour_magnitude(catalogue(500, rng), "g", "r", "r")
    shifted = colour.colour_magnitude(catalogue(500, rng, shift=1.0), "g", "r", "r")
    r_same = colour.fraction_in_box(real, same)
    assert r_same["fraction"] == pytest.approx(r_same["fraction_real"], abs=0.06)
    assert r_same["fraction"] > 0.8
    assert colour.fraction_in_box(real, shifted)["fraction"] < 0.05
    with pytest.raises(EvaluationError, match="k must be positive"):
        colour.fraction_in_box(real, same, k=0)


def test_plot_cmd_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    real = colour.colour_magnitude(catalogue(100, rng), "g", "r", "r")
    fake = colour.colour_magnitude(catalogue(80, rng), "g", "r", "r")
    out = colour.plot_cmd(real, fake, tmp_path / "cmd.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
