"""The pass/fail rules: n and failure rates in every row, failure-rate and too-few rules,
size-aware thresholds (fractions with ≥, AUC against its fold spread, NN ratio bounds),
family-wise KS level, degenerate samples never pass memorisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from galforge.evaluation.memorization import memorization
from galforge.evaluation.report import build_summary
from galforge.evaluation.stats import compare_columns
from galforge.evaluation.verdicts import (
    failure_counts,
    fisher_greater,
    median_bounds,
    ratio_upper_bound,
)


def _fits(n, n_ok, seed=0, shift=0.0):
    """Rows of a fitted measure: ``n_ok`` good fits with a column drawn from one population."""
    rng = np.random.default_rng(seed)
    rows = [
        {"ok": True, "reason": "", "ellipticity": float(v)}
        for v in rng.uniform(0, 0.8, n_ok) + shift
    ]
    rows += [
        {"ok": False, "reason": "no isophote", "ellipticity": math.nan} for _ in range(n - n_ok)
    ]
    return rows


def _isophote_result(real_rows, fake_rows):
    """The result of the isophote measure for catalogues of one column."""
    cols = ["ellipticity"]
    return {
        "columns": cols,
        "comparison": compare_columns(real_rows, fake_rows, cols),
        "failures": {"real": failure_counts(real_rows), "fake": failure_counts(fake_rows)},
    }


def test_a_shape_fitted_on_5_of_100_fakes_fails_and_shows_n_and_failure_rates():
    res = _isophote_result(_fits(100, 100, seed=1), _fits(100, 5, seed=2))
    row = build_summary({"isophotes": res}, {})[0]
    assert row["measure"] == "isophote ellipticity KS p"
    assert row["n_real"] == 100 and row["n_fake"] == 5
    assert row["failure_rate_real"] == 0.0 and row["failure_rate_fake"] == pytest.approx(0.95)
    assert row["passed"] is False
    assert "95%" in row["note"] and "too few objects" in row["note"]


def test_failure_rates_alike_pass_and_a_clear_excess_fails():
    same = _isophote_result(_fits(100, 97, seed=1), _fits(100, 94, seed=2))
    assert build_summary({"isophotes": same}, {})[0]["passed"] is True
    worse = _isophote_result(_fits(100, 98, seed=1), _fits(100, 80, seed=2))
    row = build_summary({"isophotes": worse}, {})[0]
    assert row["passed"] is False and "clearly exceeds" in row["note"]
    # the margin is a threshold like the others
    lax = build_summary({"isophotes": worse}, {"failure_margin": 0.5})[0]
    assert lax["passed"] is True


def test_too_few_objects_fail_even_with_a_high_ks_p():
    res = _isophote_result(_fits(8, 8, seed=1), _fits(8, 8, seed=1))
    row = build_summary({"isophotes": res}, {})[0]
    assert row["value"] == pytest.approx(1.0)
    assert row["passed"] is False and "too few objects" in row["note"]
    assert build_summary({"isophotes": res}, {"min_objects": 5})[0]["passed"] is True


def test_ks_level_is_family_wise_over_all_ks_rows():
    results = {
        "moments": {
            "comparison": {
                c: {"ks_p": 0.02, "n_real": 50, "n_fake": 50}
                for c in ("ellipticity", "pa_deg", "flux")
            },
            "failures": {},
        }
    }
    rows = build_summary(results, {"ks_p": 0.05})
    assert [r["threshold"] for r in rows] == pytest.approx([0.05 / 3] * 3)
    assert all(r["passed"] for r in rows)
    assert rows[0]["rule"].startswith("> ks_p / 3")


def _colour(fraction, real_fraction, n_real, n_fake):
    return {
        "colour": {
            "k": 1.75,
            "fraction_in_box": fraction,
            "real_fraction_in_box": real_fraction,
            "box": {
                "n_real": n_real,
                "n_fake": n_fake,
                "fraction": fraction,
                "fraction_real": real_fraction,
            },
        }
    }


def test_cmd_box_is_judged_with_at_least_and_sampling_noise():
    # the case of the issue: 0.800 against a real 0.800 at n = 30 passes (≥, not >)
    row = build_summary(_colour(0.8, 0.8, 30, 30), {})[0]
    assert row["passed"] is True and row["n_real"] == 30 and row["n_fake"] == 30
    se = math.sqrt(0.8 * 0.2 * (2 / 30))
    assert row["threshold"] == pytest.approx(0.8 - 2 * se)
    # at n = 500 the margin dominates; a real shortfall still fails
    big = build_summary(_colour(0.65, 0.8, 500, 500), {})[0]
    assert big["threshold"] == pytest.approx(0.7) and big["passed"] is False
    few = build_summary(_colour(0.8, 0.8, 30, 4), {})[0]
    assert few["passed"] is False and "too few" in few["note"]


def test_classifier_auc_is_judged_against_its_fold_spread():
    clf = {"auc": 0.66, "auc_std": 0.11, "folds": 5, "n_per_class": 30}
    row = build_summary({"power_spectrum": {"classifier": clf}}, {})[0]
    assert row["threshold"] == pytest.approx(0.6 + 2 * 0.11 / math.sqrt(5))
    assert row["passed"] is True and row["n_real"] == row["n_fake"] == 30
    clear = {"auc": 0.9, "auc_std": 0.03, "folds": 5, "n_per_class": 500}
    assert build_summary({"power_spectrum": {"classifier": clear}}, {})[0]["passed"] is False


def _blobs(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 2, size, size), np.float32)
    for i in range(n):
        prof = np.exp(-0.5 * (x**2 + y**2) / rng.uniform(1.5, 3) ** 2) * rng.uniform(20, 30)
        out[i] = prof + rng.normal(0, 1.0, (2, size, size))
    return out


@pytest.mark.parametrize("blank", ["constant", "noise"])
def test_memorisation_cannot_pass_on_degenerate_fakes(blank):
    from galforge.evaluation.photometry import DetectionOptions

    real = _blobs(40, seed=1)
    rng = np.random.default_rng(3)
    fake = (
        np.full((40, 2, 16, 16), 5.0, np.float32)
        if blank == "constant"
        else rng.normal(0, 1.0, (40, 2, 16, 16)).astype(np.float32)
    )
    res = memorization(real, fake, holdout_fraction=0.25, detection=DetectionOptions())
    assert res["degenerate_fake"]["n_failed"] >= 36
    rows = build_summary({"memorization": res}, {})
    for row in rows:
        assert row["passed"] is False, row
        assert row["failure_rate_fake"] >= 0.9 and row["failure_rate_real"] <= 0.1
        assert "degenerate" in row["note"]
    # the same blank set would have "passed" on its NN ratio alone
    assert res["nn_ratio_l1"] > 0.9


def test_failure_counts_and_fisher_test():
    c = failure_counts([{"ok": True}, {"ok": False, "reason": "x"}, {"ok": False}])
    assert c == {
        "n": 3,
        "n_failed": 2,
        "failure_rate": pytest.approx(2 / 3),
        "reasons": {"x": 1, "failed": 1},
    }
    assert fisher_greater(0, 30, 0, 30) == 1.0
    assert fisher_greater(20, 30, 1, 30) < 1e-5
    assert fisher_greater(1, 30, 20, 30) > 0.99


def test_median_bounds_are_order_statistics_that_widen_for_small_samples():
    x = np.arange(1, 7, dtype=float)  # n = 6: the extremes
    assert median_bounds(x, 2.0) == (1.0, 6.0)
    y = np.arange(1, 501, dtype=float)  # n = 500: near the median
    lo, hi = median_bounds(y, 2.0)
    assert 220 <= lo < 250.5 < hi <= 280
    assert ratio_upper_bound([1.0] * 10, [2.0] * 10, 2.0) == pytest.approx(0.5)
    assert ratio_upper_bound([0.0] * 10, [2.0] * 10, 2.0) == 0.0
