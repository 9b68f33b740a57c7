"""Tests of galforge.evaluation.isophote_fit, galforge's batched isophote fitter, and of the
isophote engines of measure_isophotes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from galforge.errors import EvaluationError
from galforge.evaluation import morphology as morph
from galforge.evaluation.isophote_fit import ellipse_flux, fit_isophotes

X0, Y0 = 31.7, 32.2
# (ε, PA in degrees, Sérsic n, effective radius in pixels); n = 0.5 is a Gaussian
SHAPES = [
    (0.4, 30.0, 1.0, 10.0),
    (0.2, 135.0, 0.5, 8.0),
    (0.6, 80.0, 0.5, 8.0),
    (0.5, 160.0, 1.0, 8.0),
]


def sersic_stamp(eps, pa_deg, n, re, size=64, x0=X0, y0=Y0):
    """A noiseless elliptical Sérsic profile sampled at the pixel centres."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    t = math.radians(pa_deg)
    dx, dy = xx - x0, yy - y0
    major = dx * math.cos(t) + dy * math.sin(t)
    minor = -dx * math.sin(t) + dy * math.cos(t)
    r = np.hypot(major, minor / (1.0 - eps))
    b = 2.0 * n - 1.0 / 3.0
    return 1000.0 * np.exp(-b * ((r / re) ** (1.0 / n) - 1.0))


def _pa_diff(a_deg, b_deg):
    d = np.abs(np.asarray(a_deg) - b_deg) % 180.0
    return np.minimum(d, 180.0 - d)


@pytest.fixture(scope="module")
def stamps():
    return np.stack([sersic_stamp(*s) for s in SHAPES])


def test_fitter_recovers_known_shapes(stamps):
    # all stamps in one batch, each from its own (slightly wrong) start
    fits = fit_isophotes(
        stamps,
        X0 - 0.5,
        Y0 + 0.4,
        6.0,
        [s[0] + 0.05 for s in SHAPES],
        [math.radians(s[1] + 5) for s in SHAPES],
        minsma=1.0,
        maxsma=28.0,
    )
    assert len(fits) == len(SHAPES)
    for fit, (eps, pa, _, _) in zip(fits, SHAPES, strict=True):
        assert np.all(np.diff(fit.sma) > 0)
        good = np.isin(fit.stop_code, (0, 1, 2)) & (fit.sma >= 4) & (fit.sma <= 20)
        assert good.sum() >= 10
        assert np.median(np.abs(fit.eps[good] - eps)) < 0.01
        assert np.median(_pa_diff(np.degrees(fit.pa[good]), pa)) < 1.0
        assert np.median(np.abs(fit.x0[good] - X0)) < 0.05
        assert np.median(np.abs(fit.y0[good] - Y0)) < 0.05


def test_measure_isophotes_recovers_known_shapes(stamps):
    rows = morph.measure_isophotes(stamps[:, None].astype(np.float32), ("r",), upscale=None)
    for row, (eps, pa, _, _) in zip(rows, SHAPES, strict=True):
        assert row["ok"], row["reason"]
        assert abs(row["ellipticity"] - eps) < 0.01
        assert _pa_diff(row["pa_deg"], pa) < 1.0
        assert abs(row["x"] - X0) < 0.05 and abs(row["y"] - Y0) < 0.05


def test_centre_offset_is_recovered_unless_fixed():
    img = sersic_stamp(0.3, 60.0, 1.0, 8.0)[None]
    free = fit_isophotes(
        img, X0 + 2.0, Y0 - 1.5, 8.0, 0.3, math.radians(60), minsma=1.0, maxsma=28.0
    )[0]
    good = np.isin(free.stop_code, (0, 1, 2)) & (free.sma >= 4) & (free.sma <= 20)
    assert good.sum() >= 10
    assert np.median(np.hypot(free.x0[good] - X0, free.y0[good] - Y0)) < 0.1
    # with the centre held, only ε and PA move
    fixed = fit_isophotes(
        img, X0, Y0, 8.0, 0.2, math.radians(40), minsma=1.0, maxsma=28.0, fix_center=True
    )[0]
    assert len(fixed.sma) >= 10 and np.all(fixed.x0 == X0) and np.all(fixed.y0 == Y0)
    good = np.isin(fixed.stop_code, (0, 1, 2)) & (fixed.sma >= 4) & (fixed.sma <= 20)
    assert np.median(np.abs(fixed.eps[good] - 0.3)) < 0.01


def test_ellipse_flux_counts_the_pixels_inside():
    img = np.ones((40, 40))
    # a circle of radius 10 holds about π·100 pixel centres; an ellipse of ε = 0.5 half that
    assert abs(ellipse_flux(img, 19.5, 19.5, 10.0, 0.0, 0.0) - math.pi * 100) < 12
    assert abs(ellipse_flux(img, 19.5, 19.5, 10.0, 0.5, 0.7) - math.pi * 50) < 10


def test_engines_agree_on_noisy_galaxies():
    rng = np.random.default_rng(11)
    stack = []
    for _ in range(4):
        eps, pa, n, re = rng.uniform(0.05, 0.6), rng.uniform(0, 180), rng.uniform(0.5, 2), 4.0
        img = sersic_stamp(
            eps, pa, n, re, size=32, x0=15.5 + rng.uniform(-1, 1), y0=15.5 + rng.uniform(-1, 1)
        )
        stack.append(img / img.max() * 200.0 + rng.normal(0.0, 1.0, img.shape))
    stack = np.stack(stack)[:, None].astype(np.float32)
    g = morph.measure_isophotes(stack, ("r",), upscale=None, engine="galforge")
    p = morph.measure_isophotes(stack, ("r",), upscale=None, engine="photutils")
    assert [r["ok"] for r in g] == [r["ok"] for r in p]
    both = [(a, b) for a, b in zip(g, p, strict=True) if a["ok"] and b["ok"]]
    assert len(both) >= 3
    d_eps = [abs(a["ellipticity"] - b["ellipticity"]) for a, b in both]
    assert np.median(d_eps) <= 0.005
    d_pa = [_pa_diff(a["pa_deg"], b["pa_deg"]) for a, b in both if b["ellipticity"] > 0.1]
    assert np.median(d_pa) <= 1.0
    for key in ("flux", "half_light_sma"):
        rel = [abs(a[key] - b[key]) / abs(b[key]) for a, b in both]
        assert np.median(rel) <= 0.01


@pytest.mark.parametrize("engine", ["galforge", "photutils"])
def test_blank_and_noise_stamps_fail_in_both_engines(engine):
    rng = np.random.default_rng(4)
    stack = np.concatenate(
        [
            np.zeros((1, 1, 48, 48), np.float32),
            rng.normal(0.0, 1.0, (3, 1, 48, 48)).astype(np.float32),
        ]
    )
    rows = morph.measure_isophotes(stack, ("r",), upscale=None, engine=engine)
    assert [r["ok"] for r in rows] == [False] * 4
    assert all(r["reason"] for r in rows)
    assert all(math.isnan(r["ellipticity"]) for r in rows)


def test_fitter_finds_no_isophotes_in_noise():
    rng = np.random.default_rng(5)
    fits = fit_isophotes(
        rng.normal(0.0, 1.0, (2, 48, 48)), 23.5, 23.5, 6.0, 0.2, 0.5, minsma=1.0, maxsma=20.0
    )
    for fit in fits:
        assert np.isin(fit.stop_code, (0, 1, 2)).sum() < 3


def test_engine_and_options_are_checked(stamps):
    img = stamps[:1, None].astype(np.float32)
    with pytest.raises(EvaluationError, match="engine"):
        morph.measure_isophotes(img, ("r",), upscale=None, engine="iraf")
    with pytest.raises(EvaluationError, match="photutils"):
        morph.measure_isophotes(img, ("r",), upscale=None, fit_options={"sclip": 2.0})
    row = morph.measure_isophotes(img, ("r",), upscale=None, fit_options={"maxit": 30})[0]
    assert row["ok"]


def test_evaluate_takes_the_engine_option(tmp_path, stamps):
    from galforge.evaluation import evaluate

    rng = np.random.default_rng(6)
    imgs = (stamps[:, None] + rng.normal(0.0, 1.0, (len(stamps), 1, 64, 64))).astype(np.float32)
    with pytest.raises(EvaluationError, match="isophote_engine"):
        evaluate(
            imgs,
            imgs,
            tmp_path / "bad",
            bands=("r",),
            measures=["isophotes"],
            isophote_engine="iraf",
            progress=False,
        )
    metrics = evaluate(
        imgs,
        imgs,
        tmp_path / "ok",
        bands=("r",),
        measures=["isophotes"],
        upscale=None,
        scheduler="synchronous",
        progress=False,
    )
    assert metrics["settings"]["isophote_engine"] == "galforge"
    rows = [r for r in metrics["summary"] if r["measure"].startswith("isophote")]
    assert rows and all(r["failure_rate_real"] == 0.0 for r in rows)
