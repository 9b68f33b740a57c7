"""Tests of galforge.evaluation.stats: two-sample statistics and catalogue comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from galforge.errors import EvaluationError
from galforge.evaluation import stats


def test_ks_and_wasserstein_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1.2, 200)
    stat, p = stats.ks_2samp(a, b)
    ref = sps.ks_2samp(a, b)
    assert stat == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
    assert stats.wasserstein(a, b) == pytest.approx(sps.wasserstein_distance(a, b))


def test_non_finite_values_are_ignored():
    a = np.array([1.0, 2.0, np.nan, 3.0, np.inf])
    b = np.array([1.5, 2.5, 3.5])
    assert stats.ks_2samp(a, b) == pytest.approx(tuple(sps.ks_2samp([1, 2, 3], b)))
    assert stats.wasserstein(a, b) == pytest.approx(0.5)


def test_empty_sample_raises_evaluation_error():
    with pytest.raises(EvaluationError, match="finite"):
        stats.ks_2samp([np.nan], [1.0, 2.0])
    with pytest.raises(EvaluationError):
        stats.wasserstein([], [1.0])


def test_same_distribution_passes_and_shifted_fails():
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    assert stats.ks_2samp(x[:200], x[200:])[1] > 0.05
    assert stats.ks_2samp(x[:200], x[200:] + 1.0)[1] < 1e-6


def test_compare_columns_skips_failed_rows_and_applies_limits():
    real = [{"ok": True, "e": v, "m": 20 + v} for v in np.linspace(0, 1, 50)]
    fake = [{"ok": True, "e": v, "m": 20 + v} for v in np.linspace(0, 1, 40)]
    fake += [{"ok": False, "e": 99.0, "m": 99.0}] * 5  # failed fits must not enter
    res = stats.compare_columns(real, fake, ["e", "m"], limits={"m": (None, 20.5)})
    assert res["e"]["n_real"] == 50 and res["e"]["n_fake"] == 40
    assert res["e"]["ks_p"] > 0.5
    assert res["e"]["median_diff"] == pytest.approx(0.0, abs=1e-12)
    assert res["m"]["n_real"] == 25 and res["m"]["n_fake"] == 20
    # without only_ok the failed rows count and shift the distribution
    res_all = stats.compare_columns(real, fake, ["e"], only_ok=False)
    assert res_all["e"]["n_fake"] == 45
    assert res_all["e"]["wasserstein"] > res["e"]["wasserstein"]


def test_compare_columns_reports_missing_side():
    real = [{"flux": 1.0}, {"flux": 2.0}]
    res = stats.compare_columns(real, [], ["flux"])
    assert res["flux"]["ks_p"] is None and res["flux"]["n_fake"] == 0
    assert "fake" in res["flux"]["note"]


def test_column_turns_missing_into_nan():
    col = stats.column([{"a": 1}, {"a": None}, {}], "a")
    assert col[0] == 1 and math.isnan(col[1]) and math.isnan(col[2])


def test_plot_histograms_writes_png(tmp_path):
    rng = np.random.default_rng(2)
    real = [{"x": v, "y": -v} for v in rng.normal(size=50)]
    fake = [{"x": v, "y": -v} for v in rng.normal(size=30)]
    out = stats.plot_histograms(real, fake, ["x", "y"], tmp_path / "h" / "hist.png")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
