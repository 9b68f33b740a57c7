"""The realism scorer: features, trees kept as arrays, cross-validated fit, files, the ladder."""

from __future__ import annotations

import numpy as np
import pytest

from galforge.errors import ConfigError, DataError, EvaluationError
from galforge.evaluation import realism as R
from galforge.evaluation.features import power_spectra


def sparse_images(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """Sérsic blobs (8-bit levels) on an exactly-zero background, 3-7 per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size))
    for i in range(n):
        for _ in range(rng.integers(3, 8)):
            cy, cx = rng.uniform(4, size - 4, 2)
            re, nser = rng.uniform(1.0, 3.0), rng.uniform(0.7, 3.0)
            q, th = rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) / q
            prof = rng.uniform(50, 200) * np.exp(
                -2 * nser * ((np.hypot(u, v) / re) ** (1 / nser) - 1)
            )
            prof[prof < 2] = 0
            out[i] += prof
    return np.round(np.clip(out, 0, 255)).astype(np.float32)


def ladder_arrays(n: int, size: int = 48, seed: int = 0):
    lad = list(R.degradation_ladder(sparse_images(n, size, seed), seed=seed))
    x = np.stack([p for _, _, p in lad])
    y = np.array([r.score for _, r, _ in lad], dtype=np.float64)
    g = [i for i, _, _ in lad]
    return x, y, g


FAST = {"n_estimators": 40, "learning_rate": 0.2}


# ---------------------------------------------------------------------------- features


def test_histogram_has_256_bins_that_sum_to_one_and_one_bin_per_8_bit_level():
    img = np.arange(256, dtype=np.float32).reshape(16, 16)
    h = R.pixel_histogram(img, 0.0, 255.0)
    assert h.shape == (1, 256)
    np.testing.assert_allclose(h.sum(axis=1), 1.0)
    np.testing.assert_allclose(h[0], 1 / 256)  # every level in its own bin
    out = R.pixel_histogram(np.array([[-5.0, 300.0]]), 0.0, 255.0)
    assert out[0, 0] == 0.5 and out[0, -1] == 0.5  # outliers go to the end bins


def test_summed_spectrum_is_the_ring_sum_of_the_hann_windowed_power():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32))
    k, p = power_spectra(img[None, None], window="hann", statistic="sum", subtract_mean=False)
    # direct computation: Hann taper, |FFT|²/(H·W), summed in integer rings
    f = np.abs(np.fft.fft2(img * np.outer(np.hanning(32), np.hanning(32)))) ** 2 / 32**2
    fy, fx = np.meshgrid(np.fft.fftfreq(32) * 32, np.fft.fftfreq(32) * 32, indexing="ij")
    ring = np.rint(np.hypot(fy, fx)).astype(int)
    expect = np.array([f[ring == r].sum() for r in range(1, 17)])
    np.testing.assert_allclose(p[0, 0], expect, rtol=1e-6)  # float32 pixels
    np.testing.assert_allclose(R.summed_power_spectrum(img)[0], np.log10(expect + 1e-30), rtol=1e-6)
    # summing = averaging × ring size; the default stays the unwindowed ring mean
    _, mean = power_spectra(img[None, None], window="hann", statistic="mean", subtract_mean=False)
    counts = np.array([(ring == r).sum() for r in range(1, 17)])
    np.testing.assert_allclose(p[0, 0], mean[0, 0] * counts, rtol=1e-12)


def test_spectrum_of_a_sinusoid_peaks_at_its_ring_and_blur_lowers_high_k():
    xx = np.mgrid[:64, :64][1]
    img = np.sin(2 * np.pi * 8 * xx / 64)
    s = R.summed_power_spectrum(img)[0]
    assert np.argmax(s) + 1 == 8
    sharp, blurred = R.summed_power_spectrum(
        np.stack([sparse_images(1)[0], R._blur(sparse_images(1)[0], None, 2.0)])
    )
    assert np.all(blurred[-8:] < sharp[-8:] - 1)


def test_galaxy_statistics_count_clusters_areas_and_fluxes():
    img = np.zeros((20, 20))
    img[2:4, 2:4] = 1.0  # area 4, flux 4
    img[10:13, 10:13] = 2.0  # area 9, flux 18
    img[10, 13] = 5.0  # touches the second: one cluster, area 10, flux 23, peak 5
    g = R.galaxy_statistics(img)[0]
    assert g.shape == (24,)
    assert g[0] == 2 and g[1] == pytest.approx(14 / 400) and g[2] == pytest.approx(27)
    area, flux, peak = g[3:10], g[10:17], g[17:24]
    assert area[0] == 7 and area[2] == 4 and area[-1] == 10  # mean, min, max
    assert flux[2] == 4 and flux[-1] == 23 and peak[-1] == 5
    assert np.all(R.galaxy_statistics(np.zeros((8, 8))) == 0)


def test_feature_spec_sizes_match_every_set_and_reject_another_image_size():
    imgs = sparse_images(3, size=48)
    spec = R.FeatureSpec.fit(imgs, R.FEATURE_SETS)
    x = spec.extract(imgs)
    assert x.shape == (3, spec.n_features)
    assert spec.sizes() == {
        "histogram": 256,
        "spectrum": 24,
        "galaxies": 24,
        "hog_lbp": 7 * 7 * 36 + 10,
        "fft_row": 25,
    }
    assert np.all(np.isfinite(x))
    assert (spec.lo, spec.hi) == (0.0, float(imgs.max()))
    # a spec knows the bands it was fitted on: another band count is refused
    with pytest.raises(EvaluationError, match="2 band"):
        spec.extract(np.stack([imgs, imgs], axis=1))
    # multi-band images are scored on their band mean
    two = R.FeatureSpec.fit(np.stack([imgs, imgs], axis=1), R.FEATURE_SETS)
    assert two.channels == 2 and R.FeatureSpec.from_dict(two.to_dict()) == two
    np.testing.assert_allclose(two.extract(np.stack([imgs, imgs], axis=1)), x)
    with pytest.raises(EvaluationError, match="fitted on 48×48"):
        spec.extract(sparse_images(1, size=32))
    with pytest.raises(ConfigError, match="unknown feature set 'hog'"):
        R.parse_feature_sets("histogram,hog")
    assert R.parse_feature_sets("spectrum, histogram") == ("histogram", "spectrum")


# ---------------------------------------------------------------------------- trees


def test_tree_arrays_predict_exactly_what_sklearn_predicts():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6))
    y = x[:, 0] * 2 + np.sin(x[:, 1]) + rng.normal(0, 0.1, 80)
    model = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    trees = R.TreeEnsemble.from_sklearn(model)
    probe = rng.normal(size=(50, 6))
    np.testing.assert_array_equal(trees.predict(probe), model.predict(probe))


# ---------------------------------------------------------------------------- fitting


def test_fit_reports_grouped_cv_mae_and_ranks_real_above_degraded(tmp_path):
    x, y, g = ladder_arrays(10)
    scorer = R.fit_images(x, y, groups=g, folds=3, params=FAST)
    cv = scorer.cv
    assert cv["folds"] == 3 and cv["grouped"] and cv["n"] == 90 and len(cv["mae_folds"]) == 3
    assert 0 < cv["mae"] < cv["baseline_mae"]  # better than predicting the mean
    held_out = sparse_images(4, seed=99)
    lad = list(R.degradation_ladder(held_out, seed=5))
    real = scorer.predict(np.stack([p for _, r, p in lad if r.score == 8]))
    worst = scorer.predict(np.stack([p for _, r, p in lad if r.score == 0]))
    assert real.mean() > worst.mean() + 3
    # saved and reloaded: identical predictions
    before = scorer.predict(held_out)
    again = R.RealismScorer.load(scorer.save(tmp_path / "scorer"))
    np.testing.assert_array_equal(again.predict(held_out), before)
    assert again.spec == scorer.spec and again.cv["mae"] == cv["mae"]


def test_fit_is_deterministic_and_refuses_too_few_images_for_the_folds():
    x, y, g = ladder_arrays(3, size=32)
    a = R.fit_images(x, y, folds=3, params=FAST)
    b = R.fit_images(x, y, folds=3, params=FAST)
    assert a.cv["mae"] == b.cv["mae"] and not a.cv["grouped"]
    np.testing.assert_array_equal(a.predict(x[:5]), b.predict(x[:5]))
    with pytest.raises(EvaluationError, match="needs at least 5 groups"):
        R.fit_images(x, y, groups=g, folds=5, params=FAST)
    with pytest.raises(EvaluationError, match="2 scores"):
        R.fit_images(x, y[:2], params=FAST)
    with pytest.raises(EvaluationError, match="constant"):
        R.fit_images(np.zeros((6, 8, 8)), np.arange(6), params=FAST)


def test_load_refuses_missing_or_tampered_files(tmp_path):
    x, y, _ = ladder_arrays(2, size=32)
    folder = R.fit_images(x, y, folds=2, params=FAST).save(tmp_path / "s")
    with pytest.raises(EvaluationError, match="no scorer.json"):
        R.RealismScorer.load(tmp_path)
    (folder / "trees.npz").write_bytes((folder / "trees.npz").read_bytes()[:-3] + b"xyz")
    with pytest.raises(EvaluationError, match="checksum"):
        R.RealismScorer.load(folder)


# ---------------------------------------------------------------------------- files


def _write(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images):
        np.save(folder / f"img{i:02d}.npy", img)
        names.append(f"img{i:02d}.npy")
    return names


def test_fit_files_reads_the_csv_with_relative_and_absolute_names(tmp_path):
    x, y, g = ladder_arrays(3, size=32)
    names = _write(tmp_path / "imgs", x)
    lines = ["file,score,group"] + [
        f"{(tmp_path / 'imgs' / n) if i % 2 else n},{s},{gr}"
        for i, (n, s, gr) in enumerate(zip(names, y, g, strict=True))
    ]
    (tmp_path / "scores.csv").write_text("\n".join(lines) + "\n")
    scorer = R.fit_files(tmp_path / "imgs", tmp_path / "scores.csv", folds=3, params=FAST)
    assert scorer.cv["grouped"] and scorer.cv["n"] == 27
    same = R.fit_images(x, y, groups=g, folds=3, params=FAST)
    assert scorer.cv["mae"] == same.cv["mae"]
    rows = R.predict_files(scorer, tmp_path / "imgs")
    assert [r["file"] for r in rows] == names
    np.testing.assert_array_equal([r["score"] for r in rows], scorer.predict(x))
    assert R.scores_csv_text(rows).splitlines()[0] == "file,score"


@pytest.mark.parametrize(
    "text,match",
    [
        ("name,value\na.npy,1\n", "needs the columns file,score"),
        ("file,score\nimg00.npy,high\n", "line 2: score 'high' is not a number"),
        ("file,score\n", "no rows"),
        ("file,score\nimg00.npy,1\nnope.npy,2\n", "1 listed file.*nope.npy"),
    ],
)
def test_scores_csv_errors_name_the_problem(tmp_path, text, match):
    _write(tmp_path, sparse_images(1, size=16))
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        R.read_scores_csv(tmp_path / "s.csv", tmp_path)


# ---------------------------------------------------------------------------- the ladder


def test_ladder_rungs_do_what_they_say():
    img = sparse_images(1, seed=3)[0].astype(np.float64)
    rungs = {r.score: p for _, r, p in R.degradation_ladder(img[None], seed=1)}
    assert sorted(rungs) == list(range(9))
    np.testing.assert_array_equal(rungs[8], img)
    for s in (4, 3, 2, 1):  # flux kept
        assert rungs[s].sum() == pytest.approx(img.sum(), rel=1e-6)
    # noise and shuffle keep the non-zero support; shuffle keeps each galaxy's values
    assert np.array_equal(rungs[5] != 0, img != 0) and np.array_equal(rungs[4] != 0, img != 0)
    np.testing.assert_allclose(np.sort(rungs[4][img != 0]), np.sort(img[img != 0]), rtol=1e-6)
    # fixed diamonds at uniform positions: all galaxies the same diamond
    lab, n = R.label_galaxies(rungs[0])
    assert n >= 1 and len(np.unique(rungs[0][rungs[0] > 0].round(6))) <= n + 1
    # reproducible from the seed
    again = {r.score: p for _, r, p in R.degradation_ladder(img[None], seed=1)}
    np.testing.assert_array_equal(again[1], rungs[1])


def test_diamonds_keep_area_flux_and_flux_weighted_centre():
    img = np.zeros((40, 40))
    img[5:10, 5:10] = np.arange(25).reshape(5, 5) + 1.0  # area 25 → r = 3 (25 pixels)
    img[30, 30] = 7.0  # area 1 → r = 0
    out = R.degrade(
        img, [("diamonds", {"fraction": 1.0, "fixed": False})], np.random.default_rng(0)
    )
    lab, n = R.label_galaxies(out)
    assert n == 2 and out.sum() == pytest.approx(img.sum())
    big = out * (lab == lab[7, 7])
    assert (big > 0).sum() == 25 and np.ptp(big[big > 0]) < 1e-12
    yy, xx = np.mgrid[:40, :40]
    w = img[:20, :20]
    cy, cx = (yy[:20, :20] * w).sum() / w.sum(), (xx[:20, :20] * w).sum() / w.sum()
    assert (yy * big).sum() / big.sum() == pytest.approx(round(cy))
    assert (xx * big).sum() / big.sum() == pytest.approx(round(cx))
    assert out[30, 30] == 7.0 and (out > 0).sum() == 26
    fixed = R.degrade(
        img, [("diamonds", {"fraction": 1.0, "fixed": True})], np.random.default_rng(0)
    )
    assert (fixed > 0).sum() == 2 * 13 and fixed.sum() == pytest.approx(2 * np.median([325, 7]))


def test_ladder_refuses_data_without_a_zero_background():
    rng = np.random.default_rng(0)
    noisy = sparse_images(2) + rng.normal(0, 1, (2, 48, 48))
    with pytest.raises(DataError, match="exactly 0.*--threshold"):
        list(R.degradation_ladder(noisy))
    assert len(list(R.degradation_ladder(noisy, threshold=5.0))) == 18
    with pytest.raises(DataError, match=r"image\(s\) \[1\] hold no galaxy"):
        list(R.degradation_ladder(np.stack([sparse_images(1)[0], np.zeros((48, 48))])))
