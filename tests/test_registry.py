"""The measure registry: a measure of one's own, registered with a decorator in this module,
runs through ``galforge evaluate`` and appears in metrics.json and report.html like the
built-ins; the runner and the report know no measure by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from galforge.cli import main
from galforge.errors import EvaluationError
from galforge.evaluation import measure, object_measure, registry

CALLS = {"set": 0}


def _toy_figure(out_dir, real, fake, result, ctx):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.subplots().bar(["real", "fake"], [result["mean_real"], result["mean_fake"]])
    fig.savefig(out_dir / "toy_mean_flux.png")
    return [("toy_mean_flux.png", f"Mean flux per image in {ctx.units}.")]


@measure(
    "toy_flux_ratio",
    statistic="ratio",
    rule="<",
    threshold=("toy_ratio_max", 1.2),
    title="toy mean-flux ratio",
    default=False,
    figure=_toy_figure,
)
def toy_flux_ratio(real, fake, ctx):
    CALLS["set"] += 1
    r = float(real.sum(axis=(1, 2, 3)).mean())
    f = float(fake.sum(axis=(1, 2, 3)).mean())
    return {
        "ratio": max(r, f) / min(r, f),
        "mean_real": r,
        "mean_fake": f,
        "n_real": len(real),
        "n_fake": len(fake),
        "bands": list(ctx.bands),
    }


@object_measure("toy_peak", columns=("peak",), fitted=True, default=False)
def toy_peak(images, bands, ctx):
    rows = []
    for img in images:
        peak = float(img.max())
        rows.append({"ok": peak > 0, "reason": "" if peak > 0 else "blank", "peak": peak})
    return rows


def _stamps(n, seed, size=16, scale=1.0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 2, size, size), np.float32)
    for i in range(n):
        prof = np.exp(-0.5 * (x**2 + y**2) / rng.uniform(1.5, 3) ** 2) * rng.uniform(20, 30)
        out[i] = scale * prof + rng.normal(0, 1.0, (2, size, size))
    return out


def test_a_measure_of_ones_own_runs_and_is_reported(tmp_path, capsys):
    np.save(tmp_path / "real.npy", _stamps(24, 0))
    np.save(tmp_path / "fake.npy", _stamps(24, 1, scale=2.0))
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "fake.npy"),
            "--out",
            str(out),
            "--measures",
            "toy_flux_ratio,toy_peak",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["measure"]: r for r in metrics["summary"]}
    toy = rows["toy mean-flux ratio (ratio)"]
    assert toy["value"] == pytest.approx(metrics["results"]["toy_flux_ratio"]["ratio"])
    assert toy["value"] > 1.2 and toy["passed"] is False and toy["threshold"] == 1.2
    assert toy["n_real"] == 24 and toy["n_fake"] == 24
    assert metrics["thresholds"]["toy_ratio_max"] == 1.2
    peak = rows["toy_peak peak KS p"]
    assert peak["n_real"] == 24 and peak["failure_rate_fake"] == 0.0
    assert "catalogue_toy_peak_real.csv" in metrics["files"]["csv"]
    html = (out / "report.html").read_text()
    assert "toy mean-flux ratio (ratio)" in html and "toy_mean_flux.png" in html
    assert (out / "toy_mean_flux.png").is_file() and "hist_toy_peak.png" in html
    details = html.split("<h2>Details</h2>")[1]
    assert "mean_real" in details.split("<h2>")[0]
    assert "toy mean-flux ratio" in text
    # its threshold is set like the built-ins'; the cached result is reused (--overwrite keeps
    # the cache)
    calls = CALLS["set"]
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "fake.npy"),
            "--out",
            str(out),
            "--measures",
            "toy_flux_ratio",
            "--no-progress",
            "--threshold",
            "toy_ratio_max=5",
            "--overwrite",
        ]
    )
    assert code == 0 and CALLS["set"] == calls
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"][0]["passed"] is True and metrics["summary"][0]["threshold"] == 5


def test_registry_lists_builtins_in_report_order_and_refuses_clashes():
    names = registry.names()
    assert names[:9] == (
        "isophotes",
        "moments",
        "morphology",
        "photometry",
        "colour",
        "memorization",
        "power_spectrum",
        "fid",
        "inception",
    )
    assert "toy_flux_ratio" in names
    from galforge.evaluation import DEFAULT_MEASURES, MEASURES

    assert "toy_flux_ratio" in MEASURES and "toy_flux_ratio" not in DEFAULT_MEASURES
    with pytest.raises(EvaluationError, match="already registered"):
        measure("toy_flux_ratio")(lambda r, f, c: {})
    with pytest.raises(EvaluationError, match="threshold name"):
        measure("toy_other", statistic="x", threshold=("auc", 0.7))(lambda r, f, c: {})
    with pytest.raises(EvaluationError, match="rule"):
        measure("toy_bad_rule", statistic="x", rule="!=", threshold=("t_x", 1.0))
    measure("toy_tmp", statistic="x", threshold=("t_tmp", 1.0), default=False)(
        lambda r, f, c: {"x": 0.0}
    )
    assert "toy_tmp" in registry.names()
    registry.unregister("toy_tmp")
    assert "toy_tmp" not in registry.names()


def test_unknown_threshold_names_are_refused(tmp_path):
    from galforge.evaluation import evaluate

    real = _stamps(8, 0)
    with pytest.raises(EvaluationError, match="unknown threshold"):
        evaluate(
            real,
            real,
            tmp_path,
            measures=["toy_flux_ratio"],
            progress=False,
            thresholds={"nope": 1.0},
        )
