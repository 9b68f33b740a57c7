"""Tests of galforge.evaluation.photometry: detection, fluxes, magnitudes, tiled fields."""

from __future__ import annotations

import math

import numpy as np
import pytest

from galforge.errors import EvaluationError
from galforge.evaluation import photometry as phot

BANDS = ("g", "r", "i")


def gaussian(shape, x0, y0, flux, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return flux * g / (2 * math.pi * sigma**2)


def make_field(shape, sources, noise, rng):
    """sources: list of (x, y, (flux_g, flux_r, flux_i), sigma) -> C×H×W float32."""
    img = np.zeros((len(BANDS), *shape))
    for x, y, fluxes, sigma in sources:
        for c, f in enumerate(fluxes):
            img[c] += gaussian(shape, x, y, f, sigma)
    img += rng.normal(0.0, noise, img.shape)
    return img.astype(np.float32)


def test_recovers_injected_fluxes_and_magnitudes():
    rng = np.random.default_rng(0)
    fluxes = (2000.0, 4000.0, 6000.0)
    stamps = np.stack(
        [make_field((48, 48), [(23.5, 23.5, fluxes, 2.0)], 1.0, rng) for _ in range(3)]
    )
    rows = phot.detect_and_measure(stamps, BANDS, zeropoint=27.0)
    assert [r["image"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert row["x"] == pytest.approx(23.5, abs=0.2)
        assert row["y"] == pytest.approx(23.5, abs=0.2)
        for band, f in zip(BANDS, fluxes, strict=True):
            # a Kron aperture of 2.5 r1 holds >= 94 % of a Gaussian's light
            assert 0.93 * f < row[f"flux_{band}"] < 1.04 * f
            assert row[f"mag_{band}"] == pytest.approx(
                27.0 - 2.5 * math.log10(row[f"flux_{band}"]), abs=1e-9
            )
            assert row[f"flux_err_{band}"] > 0
        # colours are measured through one aperture: g - r is exact up to noise
        assert row["mag_g"] - row["mag_r"] == pytest.approx(2.5 * math.log10(2.0), abs=0.03)


def test_zeropoint_shifts_magnitudes():
    rng = np.random.default_rng(1)
    stamp = make_field((40, 40), [(20, 20, (500, 500, 500), 1.5)], 0.5, rng)
    a = phot.detect_and_measure(stamp, BANDS, zeropoint=22.5)
    b = phot.detect_and_measure(stamp, BANDS, zeropoint=30.0)
    assert b[0]["mag_r"] - a[0]["mag_r"] == pytest.approx(7.5)


def test_noise_only_gives_almost_no_detections():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 1, (8, 3, 64, 64)).astype(np.float32)
    assert len(phot.detect_and_measure(noise, BANDS)) <= 1


def test_detection_threshold_and_minarea_are_honoured():
    rng = np.random.default_rng(3)
    # one bright and one faint source
    field = make_field((64, 96), [(20, 30, (3000,) * 3, 2.0), (70, 30, (60,) * 3, 2.0)], 1.0, rng)

    def has_faint(rows):
        return any(abs(r["x"] - 70) < 2 and abs(r["y"] - 30) < 2 for r in rows)

    assert has_faint(phot.detect_and_measure(field, BANDS, thresh=2.5))
    bright_only = phot.detect_and_measure(field, BANDS, thresh=5.0)
    assert len(bright_only) == 1 and not has_faint(bright_only)
    assert len(phot.detect_and_measure(field, BANDS, thresh=5.0, minarea=5000)) == 0


def test_bad_input_raises_evaluation_error():
    with pytest.raises(EvaluationError, match="band name"):
        phot.detect_and_measure(np.zeros((2, 3, 16, 16), np.float32), ("g", "r"))
    with pytest.raises(EvaluationError, match="N×C×H×W"):
        phot.detect_and_measure(np.zeros((16, 16), np.float32), ("g",))
    with pytest.raises(EvaluationError, match="thresh"):
        phot.detect_and_measure(np.zeros((1, 1, 16, 16), np.float32), ("g",), thresh=0)


def test_non_finite_pixels_are_masked():
    rng = np.random.default_rng(4)
    stamp = make_field((48, 48), [(24, 24, (1000,) * 3, 2.0)], 1.0, rng)
    stamp[:, 2:6, 2:6] = np.nan
    rows = phot.detect_and_measure(stamp, BANDS)
    assert len(rows) == 1 and np.isfinite(rows[0]["flux_r"])


def _field_with_sources(rng, shape=(300, 340), n=40):
    sources = []
    # one source exactly on the midline of the first tile overlap (tile 128, overlap 40)
    sources.append((108.0, 150.0, (800.0, 900.0, 1000.0), 1.5))
    while len(sources) < n:
        x, y = rng.uniform(8, shape[1] - 8), rng.uniform(8, shape[0] - 8)
        if all((x - s[0]) ** 2 + (y - s[1]) ** 2 > 15**2 for s in sources):
            f = rng.uniform(200, 2000)
            sources.append((x, y, (f, 1.2 * f, 1.5 * f), rng.uniform(1.0, 2.0)))
    return make_field(shape, sources, 1.0, rng), sources


def test_tiled_field_equals_untiled_and_deduplicates():
    rng = np.random.default_rng(5)
    field, sources = _field_with_sources(rng)
    whole = phot.detect_and_measure(field, BANDS)
    tiled = phot.measure_field(field, BANDS, tile=128, overlap=40)
    assert len(tiled) == len(whole) >= len(sources) - 2
    key = sorted((round(r["x"], 3), round(r["y"], 3), round(r["flux_r"], 3)) for r in whole)
    key_t = sorted((round(r["x"], 3), round(r["y"], 3), round(r["flux_r"], 3)) for r in tiled)
    assert key == key_t
    # the source on the tile boundary is there exactly once
    near = [r for r in tiled if abs(r["x"] - 108) < 2 and abs(r["y"] - 150) < 2]
    assert len(near) == 1
    assert sorted(r["id"] for r in tiled) == list(range(1, len(tiled) + 1))
    assert len({r["tile"] for r in tiled}) > 1


def test_measure_field_rejects_bad_tiling():
    field = np.zeros((3, 64, 64), np.float32)
    with pytest.raises(EvaluationError, match="overlap"):
        phot.measure_field(field, BANDS, tile=32, overlap=32)
    with pytest.raises(EvaluationError, match="one field"):
        phot.measure_field(np.zeros((2, 3, 64, 64), np.float32), BANDS)


def test_number_counts():
    mags = np.array([18.1, 18.2, 19.7, 20.0, np.nan, 21.4])
    nc = phot.number_counts(mags, [18, 19, 20, 21, 22], area_deg2=0.5)
    assert nc["counts"] == [2, 1, 1, 1] and nc["n"] == 5
    assert nc["density"] == [4.0, 2.0, 2.0, 2.0]
    auto = phot.number_counts(mags)
    assert sum(auto["counts"]) == 5 and np.allclose(np.diff(auto["edges"]), 0.5)


def test_plots_write_png(tmp_path):
    real = [{"mag_g": 20 + 0.1 * i, "mag_r": 19 + 0.1 * i} for i in range(30)]
    fake = [{"mag_g": 20.2 + 0.1 * i, "mag_r": 19.1 + 0.1 * i} for i in range(20)]
    p1 = phot.plot_magnitudes(real, fake, ("g", "r"), tmp_path / "mags.png")
    p2 = phot.plot_number_counts(real, fake, "r", tmp_path / "nc.png", n_images=(3, 2))
    for p in (p1, p2):
        assert p.read_bytes()[:4] == b"\x89PNG"


def test_builtin_galsim_fluxes_are_recovered():
    from galforge.data.builtin import galsim_galaxies

    imgset, truth = galsim_galaxies(6, size=48, seed=2, snr=(80, 200), hlr=(0.3, 0.6))
    rows = phot.detect_and_measure(imgset.images, imgset.bands, zeropoint=30.0)
    central = {}
    for r in rows:
        t = truth[r["image"]]
        if abs(r["x"] - t["x"]) < 2 and abs(r["y"] - t["y"]) < 2:
            central[r["image"]] = r
    assert len(central) == 6
    for i, r in central.items():
        for band in imgset.bands:
            # Kron apertures hold ~90-100 % of a galaxy's light
            assert 0.85 < r[f"flux_{band}"] / truth[i][f"flux_{band}"] < 1.05
