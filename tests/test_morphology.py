"""Tests of galforge.evaluation.morphology: isophotes, moments, statmorph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from galforge.errors import EvaluationError
from galforge.evaluation import morphology as morph
from galforge.evaluation import stats


def sersic_stamp(size=48, flux=2000.0, hlr=4.0, q=0.5, pa_deg=30.0, n=1.0, sub=3):
    """Analytic elliptical Sérsic profile (sub-pixel integrated), PA from +x towards +y."""
    c = (size - 1) / 2.0
    g = (np.arange(size * sub) + 0.5) / sub - 0.5
    xx, yy = np.meshgrid(g, g)
    t = math.radians(pa_deg)
    u = (xx - c) * math.cos(t) + (yy - c) * math.sin(t)
    v = -(xx - c) * math.sin(t) + (yy - c) * math.cos(t)
    r = np.sqrt(u**2 * q + v**2 / q)
    bn = 2 * n - 1 / 3 + 4 / (405 * n)
    img = np.exp(-bn * (r / hlr) ** (1 / n)).reshape(size, sub, size, sub).mean(axis=(1, 3))
    return flux * img / img.sum()


def galaxy_set(n, rng, size=40, noise=0.5):
    """A small GalSim-like set: exponential discs, PA in [0, 90) (not uniform), noise."""
    out = []
    for _ in range(n):
        img = sersic_stamp(
            size,
            flux=rng.uniform(1500, 4000),
            hlr=rng.uniform(2.5, 4.0),
            q=rng.uniform(0.3, 0.7),
            pa_deg=rng.uniform(0, 90),
            sub=2,
        )
        out.append(img[None] + rng.normal(0, noise, (1, size, size)))
    return np.stack(out).astype(np.float32)


def test_moments_recover_known_shape():
    rng = np.random.default_rng(0)
    truth = [(0.5, 30.0), (0.7, 120.0), (0.35, 170.0)]
    stamps = np.stack([sersic_stamp(q=q, pa_deg=pa)[None] for q, pa in truth])
    stamps = stamps + rng.normal(0, 0.3, stamps.shape)
    rows = morph.measure_moments(stamps.astype(np.float32), ("r",))
    for row, (q, pa) in zip(rows, truth, strict=True):
        assert row["ok"]
        assert row["ellipticity"] == pytest.approx(1 - q, abs=0.05)
        d = abs((row["pa_deg"] - pa + 90) % 180 - 90)
        assert d < 3.0
        assert 0.9 * 2000 < row["flux"] < 1.02 * 2000


def test_isophotes_recover_known_shape_native():
    rng = np.random.default_rng(1)
    truth = [(0.5, 30.0), (0.3, 150.0)]
    stamps = np.stack([sersic_stamp(q=q, pa_deg=pa)[None] for q, pa in truth])
    stamps = (stamps + rng.normal(0, 0.2, stamps.shape)).astype(np.float32)
    rows = morph.measure_isophotes(stamps, ("r",), upscale=None)
    for row, (q, pa) in zip(rows, truth, strict=True):
        assert row["ok"], row["reason"]
        assert row["ellipticity"] == pytest.approx(1 - q, abs=0.03)
        assert abs((row["pa_deg"] - pa + 90) % 180 - 90) < 2.0
        assert 0.9 * 2000 < row["flux"] < 1.05 * 2000
        assert 0 < row["half_light_sma"] < row["sma"] <= 24
        # the half-light semi-major axis of the profile is hlr / sqrt(q)
        assert row["half_light_sma"] == pytest.approx(4.0 / math.sqrt(q), rel=0.15)


def test_isophotes_upscaled_results_in_native_units():
    stamp = sersic_stamp(size=32, flux=1000.0, hlr=3.0, q=0.5, pa_deg=60.0)[None, None]
    stamp = stamp.astype(np.float32)
    native = morph.measure_isophotes(stamp, ("r",), upscale=None)[0]
    up = morph.measure_isophotes(stamp, ("r",), upscale=96)[0]
    assert native["ok"] and up["ok"]
    assert up["flux"] == pytest.approx(native["flux"], rel=0.03)
    assert up["half_light_sma"] == pytest.approx(native["half_light_sma"], rel=0.08)
    assert up["ellipticity"] == pytest.approx(0.5, abs=0.03)
    assert abs(up["pa_deg"] - 60.0) < 2.0
    assert up["x"] == pytest.approx(15.5, abs=0.3) and up["y"] == pytest.approx(15.5, abs=0.3)


def test_failed_fits_are_counted_not_dropped():
    rng = np.random.default_rng(2)
    good = sersic_stamp(size=32, hlr=3.0)[None]
    blank = rng.normal(0, 1.0, (1, 32, 32))
    stamps = np.stack([good, blank, np.zeros((1, 32, 32))]).astype(np.float32)
    rows = morph.measure_isophotes(stamps, ("r",), upscale=None)
    assert len(rows) == 3
    assert rows[0]["ok"] and not rows[2]["ok"]
    assert rows[2]["reason"] and math.isnan(rows[2]["ellipticity"])
    summary = morph.failure_summary(rows)
    assert summary["n"] == 3 and summary["n_failed"] == sum(not r["ok"] for r in rows) >= 1
    assert summary["failure_rate"] == pytest.approx(summary["n_failed"] / 3)
    assert sum(summary["reasons"].values()) == summary["n_failed"]


def test_band_selection():
    img = np.zeros((1, 2, 32, 32), np.float32)
    img[0, 1] = sersic_stamp(size=32, hlr=3.0, q=0.6)
    assert morph.measure_moments(img, ("g", "r"), band="r")[0]["ok"]
    assert not morph.measure_moments(img, ("g", "r"), band="g")[0]["ok"]
    assert morph.measure_moments(img, ("g", "r"), band="sum")[0]["ok"]
    with pytest.raises(EvaluationError, match="band"):
        morph.measure_moments(img, ("g", "r"), band="z")
    with pytest.raises(EvaluationError, match="upscale"):
        morph.measure_isophotes(img, ("g", "r"), upscale=4)


def test_statmorph_on_exponential_disc():
    rng = np.random.default_rng(3)
    stamp = sersic_stamp(size=48, flux=5000.0, hlr=4.0, q=0.7, pa_deg=10.0, n=1.0)
    stamp = (stamp + rng.normal(0, 0.2, stamp.shape))[None, None].astype(np.float32)
    row = morph.measure_statmorph(stamp, ("r",))[0]
    assert row["ok"], row["reason"]
    assert row["sersic_n"] == pytest.approx(1.0, abs=0.3)
    assert 0.3 < row["gini"] < 0.7
    assert -2.5 < row["m20"] < -1.0
    assert 2.0 < row["concentration"] < 3.5
    assert abs(row["asymmetry"]) < 0.1
    empty = morph.measure_statmorph(np.zeros((1, 1, 48, 48), np.float32), ("r",))[0]
    assert not empty["ok"] and empty["reason"]


def test_half_turn_matches_skimage_rotate():
    from skimage.transform import rotate

    rng = np.random.default_rng(4)
    for k in range(30):
        ny, nx = rng.integers(9, 40, 2)
        img = rng.normal(size=(ny, nx))
        xc, yc = rng.uniform(-2, nx + 2), rng.uniform(-2, ny + 2)
        if k % 5 == 0:  # whole and half pixels
            xc, yc = float(round(xc)), round(yc) + 0.5
        np.testing.assert_allclose(
            morph._rotate180(img, xc, yc), rotate(img, 180.0, center=(xc, yc)), atol=1e-12
        )


def test_lean_statmorph_gives_statmorph_numbers():
    rng = np.random.default_rng(5)
    stamps = galaxy_set(3, rng, size=40, noise=0.5)
    # a neighbour in one stamp: the masked branch of the asymmetry
    stamps[1, 0, 3:9, 3:9] += 40.0
    lean = morph.measure_statmorph(stamps, ("r",))
    full = morph.measure_statmorph(stamps, ("r",), lean=False)
    for a, b in zip(lean, full, strict=True):
        assert a["ok"] == b["ok"] and a["flag"] == b["flag"]
        for key in morph._STATMORPH_QUANTITIES:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


def test_real_vs_real_passes_rotated_and_blurred_fail():
    rng = np.random.default_rng(4)
    real = galaxy_set(80, rng)
    a, b = real[:40], real[40:]
    rows_a = morph.measure_moments(a, ("r",))
    rows_b = morph.measure_moments(b, ("r",))
    same = stats.compare_columns(rows_a, rows_b, ["ellipticity", "pa_deg", "a", "flux"])
    for col in same.values():
        assert col["ks_p"] > 0.05
    rotated = np.rot90(b, k=1, axes=(2, 3)).copy()
    rows_rot = morph.measure_moments(rotated, ("r",))
    rot = stats.compare_columns(rows_a, rows_rot, ["pa_deg", "ellipticity"])
    assert rot["pa_deg"]["ks_p"] < 0.01
    assert rot["ellipticity"]["ks_p"] > 0.05  # rotation keeps shapes
    blurred = np.stack([[gaussian_filter(img[0], 2.5)] for img in b]).astype(np.float32)
    blurred += rng.normal(0, 0.5 / 4, blurred.shape).astype(np.float32)
    rows_blur = morph.measure_moments(blurred, ("r",))
    blur = stats.compare_columns(rows_a, rows_blur, ["a", "ellipticity"])
    assert blur["a"]["ks_p"] < 0.01
    assert blur["ellipticity"]["ks_p"] < 0.01


def test_plot_shapes_and_isophotes(tmp_path):
    stamp = sersic_stamp(size=32, hlr=3.0)[None, None].astype(np.float32)
    row = morph.measure_isophotes(stamp, ("r",), upscale=None)[0]
    p1 = morph.plot_shapes([row], [row], tmp_path / "shapes.png")
    p2 = morph.plot_isophotes(stamp[0, 0], row, tmp_path / "iso.png")
    for p in (p1, p2):
        assert p.read_bytes()[:4] == b"\x89PNG"


def test_conventions_agree_with_builtin_galsim_truth():
    from galforge.data.builtin import galsim_galaxies

    imgset, truth, noiseless = galsim_galaxies(
        4, size=48, seed=3, q=(0.3, 0.6), hlr=(0.8, 1.2), return_noiseless=True
    )
    rows = morph.measure_isophotes(noiseless, imgset.bands, upscale=None)
    moments = morph.measure_moments(imgset.images, imgset.bands)
    for row, mom, t in zip(rows, moments, truth, strict=True):
        assert row["ok"], row["reason"]
        assert abs((row["pa_deg"] - t["pa_deg"] + 90) % 180 - 90) < 3.0
        assert abs((mom["pa_deg"] - t["pa_deg"] + 90) % 180 - 90) < 10.0
        # the PSF rounds galaxies: measured ellipticity at most the intrinsic one
        assert row["ellipticity"] < t["ellipticity"] + 0.03
        assert row["ellipticity"] > 0.5 * t["ellipticity"]
        assert row["x"] == pytest.approx(t["x"], abs=0.5)


def test_moments_of_a_degenerate_source_fail_that_stamp_only(monkeypatch):
    """sep can give non-finite moments for a degenerate footprint (early GAN samples): that
    stamp is a failed measurement with its reason, the others are measured as before."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :32]
    good = (100 * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 8.0)).astype(np.float32)
    stamps = np.stack([good, good])[:, None] + rng.normal(0, 0.1, (2, 1, 32, 32)).astype(np.float32)
    real_detect = morph._detect_central
    calls = []

    def detect(sub, rms, thresh, minarea):
        found = real_detect(sub, rms, thresh, minarea)
        calls.append(1)
        if len(calls) == 1 and found is not None:
            objs, segmap, i = found
            objs = objs.copy()
            objs["a"][i] = np.nan
            return objs, segmap, i
        return found

    monkeypatch.setattr(morph, "_detect_central", detect)
    rows = morph.measure_moments(stamps, ("r",))
    assert not rows[0]["ok"] and "degenerate" in rows[0]["reason"]
    assert rows[1]["ok"] and 0.0 <= rows[1]["ellipticity"] < 0.2
