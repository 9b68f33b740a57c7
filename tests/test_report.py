"""evaluate(): metrics.json, the summary table, report.html and its figures, caching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from galforge.data import ImageSet
from galforge.errors import EvaluationError
from galforge.evaluation import evaluate
from galforge.evaluation.report import DEFAULT_THRESHOLDS, write_csv


def blobs(n, size=24, seed=0, bands=("g", "r")):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, len(bands), size, size), np.float32)
    for i in range(n):
        q, th, r = rng.uniform(0.3, 1), rng.uniform(0, np.pi), rng.uniform(1.5, 3)
        xr = x * np.cos(th) + y * np.sin(th)
        yr = -x * np.sin(th) + y * np.cos(th)
        prof = np.exp(-0.5 * (xr**2 + (yr / q) ** 2) / r**2)
        prof *= rng.uniform(300, 400) / prof.sum()
        for b in range(len(bands)):
            out[i, b] = prof * (0.7 + 0.3 * b) + rng.normal(0, 1.0, (size, size))
    return ImageSet(images=out, bands=tuple(bands), units="counts", source=f"blobs seed={seed}")


MEASURES = ["moments", "memorization", "power_spectrum", "fid"]
FAST = {
    "progress": False,
    "classifier_folds": 3,
    "kid_subsets": 5,
    "kid_subset_size": 20,
    "chunk_size": 32,
    "holdout_fraction": 0.25,
}


@pytest.fixture(scope="module")
def sets():
    a = blobs(64, seed=1)
    b = blobs(64, seed=2)
    return a, b


def test_metrics_json_summary_and_report(tmp_path, sets):
    real, fake = sets
    m = evaluate(real, fake, tmp_path, measures=MEASURES, **FAST)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "summary",
        "results",
        "settings",
        "thresholds",
        "real",
        "fake",
        "bands",
        "cache",
        "files",
        "galforge_version",
    ):
        assert key in on_disk, key
    assert on_disk["summary"] == m["summary"]
    assert on_disk["thresholds"] == DEFAULT_THRESHOLDS
    measures = {r["measure"]: r for r in on_disk["summary"]}
    for row in on_disk["summary"]:
        assert set(row) >= {"measure", "value", "threshold", "passed"}
        assert isinstance(row["passed"], bool)
    assert {
        "moments ellipticity KS p",
        "memorisation NN ratio (L1)",
        "realism classifier ROC AUC",
        "Fréchet galaxy distance",
    } <= set(measures)
    # two independent draws of the same population pass these measures
    assert measures["memorisation NN ratio (L1)"]["passed"]
    assert measures["realism classifier ROC AUC"]["passed"]
    assert measures["Fréchet galaxy distance"]["passed"]
    # the AUC threshold is widened by z standard errors of the fold mean
    clf = on_disk["results"]["power_spectrum"]["classifier"]
    assert measures["realism classifier ROC AUC"]["threshold"] == pytest.approx(
        0.6 + 2.0 * clf["auc_std"] / np.sqrt(clf["folds"])
    )
    for row in on_disk["summary"]:
        assert row["n_real"] and row["n_fake"]
    html = (tmp_path / "report.html").read_text()
    for fig in on_disk["files"]["figures"]:
        assert fig["file"] in html
        assert (tmp_path / fig["file"]).is_file()
    for name in (
        "samples_real.png",
        "samples_fake.png",
        "nn_grid.png",
        "power_spectra.png",
        "hist_moments.png",
    ):
        assert name in html
    for csv in on_disk["files"]["csv"]:
        assert (tmp_path / csv).is_file()
    assert "catalogue_moments_real.csv" in on_disk["files"]["csv"]
    assert "FAIL" not in html.split("<h2>Summary</h2>")[1].split("</table>")[0] or not all(
        r["passed"] for r in on_disk["summary"]
    )


def test_timings_per_measure_in_metrics_and_report(tmp_path, sets, caplog):
    real, fake = sets
    with caplog.at_level("INFO", logger="galforge"):
        m = evaluate(real, fake, tmp_path, measures=["moments", "fid"], **FAST)
    t = m["timings"]
    # moments: 64 images per set in chunks of 32 -> 2 tasks per set; fid: one set task
    assert t["measures"]["moments"]["tasks"] == 4 and t["measures"]["fid"]["tasks"] == 1
    for v in t["measures"].values():
        assert v["reused"] == 0 and v["cpu_s"] >= 0 and v["finished_after_s"] >= 0
    assert t["total_s"] >= t["compute_s"] >= 0
    done = [r.getMessage() for r in caplog.records if "done after" in r.getMessage()]
    assert sorted(msg.split()[1] for msg in done) == ["fid", "moments"]
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Timings</h2>" in html and "figures and CSVs" in html
    # a second run reuses everything and says so
    again = evaluate(real, fake, tmp_path, measures=["moments", "fid"], **FAST)["timings"]
    assert again["measures"]["moments"] == {
        "tasks": 0,
        "reused": 4,
        "task_wall_s": 0,
        "cpu_s": 0,
        "finished_after_s": None,
    }


def test_broken_fake_fails_and_thresholds_are_configurable(tmp_path, sets):
    real, _ = sets
    rng = np.random.default_rng(0)
    noise = real.with_images(rng.normal(0, 1, real.images.shape).astype(np.float32))
    m = evaluate(real, noise, tmp_path, measures=["power_spectrum"], **FAST)
    row = m["summary"][0]
    assert row["measure"] == "realism classifier ROC AUC"
    assert row["value"] > 0.9 and row["passed"] is False
    m2 = evaluate(
        real, noise, tmp_path, measures=["power_spectrum"], thresholds={"auc": 1.01}, **FAST
    )
    assert m2["summary"][0]["passed"] is True and m2["summary"][0]["threshold"] >= 1.01
    # changing a threshold reuses the cached measure
    assert m2["cache"]["computed"] == [] and len(m2["cache"]["reused"]) == 1
    dup = evaluate(real, real, tmp_path / "dup", measures=["memorization"], **FAST)
    assert all(not r["passed"] for r in dup["summary"])


def test_second_run_reuses_the_cache_and_adds_only_new_measures(tmp_path, sets):
    real, fake = sets
    first = evaluate(real, fake, tmp_path, measures=["moments", "memorization"], **FAST)
    assert first["cache"]["reused"] == []
    n_first = len(first["cache"]["computed"])
    assert n_first == 2 * 2 + 1  # two chunks per set for moments, one memorisation task
    second = evaluate(
        real, fake, tmp_path, measures=["moments", "memorization", "power_spectrum"], **FAST
    )
    assert sorted(second["cache"]["reused"]) == sorted(first["cache"]["computed"])
    assert len(second["cache"]["computed"]) == 1
    assert second["cache"]["computed"][0].startswith("power_spectrum-")
    assert second["results"]["memorization"] == first["results"]["memorization"]
    # a different fake set recomputes the fake chunks only
    third = evaluate(real, blobs(64, seed=5), tmp_path, measures=["moments"], **FAST)
    assert len(third["cache"]["computed"]) == 2 and len(third["cache"]["reused"]) == 2
    off = evaluate(real, fake, tmp_path, measures=["memorization"], cache=False, **FAST)
    assert len(off["cache"]["computed"]) == 1


def test_schedulers_give_the_same_numbers(tmp_path, sets):
    from distributed import LocalCluster

    real, fake = sets
    a = evaluate(real, fake, tmp_path / "a", measures=["moments"], **FAST)
    b = evaluate(
        real, fake, tmp_path / "b", measures=["moments"], **{**FAST, "scheduler": "synchronous"}
    )
    assert a["summary"] == b["summary"]
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        c = evaluate(
            real,
            fake,
            tmp_path / "c",
            measures=["moments"],
            **{**FAST, "scheduler": cluster.scheduler_address},
        )
    assert c["summary"] == a["summary"]
    # 64 + 64 images on two workers: "auto" starts worker processes, with the same numbers
    d = evaluate(
        real,
        fake,
        tmp_path / "d",
        measures=["moments"],
        **{**FAST, "workers": 2, "scheduler": "auto"},
    )
    assert d["settings"]["scheduler_used"] == "processes"
    assert d["summary"] == a["summary"]


def test_auto_scheduler_picks_processes_only_where_they_pay(sets):
    from galforge.evaluation import registry
    from galforge.evaluation.runner import (
        AUTO_PROCESS_IMAGES,
        _object_task,
        _set_task,
        choose_scheduler,
    )

    real, _ = sets
    moments = next(m for m in registry.measures() if m.name == "moments")
    images = real.images[:16]

    def plan(n_chunks, measure=moments):
        tasks = {
            f"m{i}": (_object_task, (measure, images, real.bands, None)) for i in range(n_chunks)
        }
        tasks["set"] = (_set_task, (measure, images, images, None))
        return tasks

    big = plan(-(-AUTO_PROCESS_IMAGES // len(images)))
    assert choose_scheduler(big, {"scheduler": "auto", "workers": 2}) == "processes"
    assert choose_scheduler(big, {"scheduler": None, "workers": 2}) == "processes"
    # one worker, or too few images to repay starting processes: threads
    assert choose_scheduler(big, {"scheduler": "auto", "workers": 1}) == "threads"
    assert choose_scheduler(plan(1), {"scheduler": "auto", "workers": 8}) == "threads"
    # an explicit choice is kept
    assert choose_scheduler(big, {"scheduler": "synchronous", "workers": 2}) == "synchronous"

    # a measure a worker process cannot import (defined in a function, or holding a
    # notebook's lambda) keeps auto in threads
    class Local:
        name = "local"

    holder = type(moments).__new__(type(moments))
    holder.__dict__.update(vars(moments))
    holder.fn = lambda rows: rows
    for odd in (Local(), holder):
        tasks = {**big, "x": (_object_task, (odd, images, real.bands, None))}
        assert choose_scheduler(tasks, {"scheduler": "auto", "workers": 2}) == "threads"


def test_bad_inputs_raise_evaluation_errors(tmp_path, sets):
    real, fake = sets
    with pytest.raises(EvaluationError, match="unknown measure"):
        evaluate(real, fake, tmp_path, measures=["nope"], **FAST)
    with pytest.raises(EvaluationError, match="bands"):
        evaluate(
            real,
            ImageSet(images=fake.images, bands=("x", "y")),
            tmp_path,
            measures=["memorization"],
            **FAST,
        )
    with pytest.raises(EvaluationError, match="unknown evaluate option"):
        evaluate(real, fake, tmp_path, colour_band="g")


def test_write_csv_handles_nan_and_ragged_rows(tmp_path):
    path = write_csv(tmp_path / "c.csv", [{"a": 1.0, "b": float("nan")}, {"a": 2, "c": [1, 2]}])
    text = open(path).read().splitlines()
    assert text[0] == "a,b,c"
    assert text[1] == "1.0,nan,"
    assert text[2] == '2,,"[1, 2]"'


def test_inception_measure_plumbing(tmp_path, sets):
    import torch

    real, fake = sets

    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    path = tmp_path / "feat.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(
        torch.export.export(
            Pool(), (torch.zeros(2, 3, 299, 299),), dynamic_shapes={"x": {0: batch}}
        ),
        str(path),
    )
    m = evaluate(
        real, fake, tmp_path / "with", measures=["inception"], inception_weights=str(path), **FAST
    )
    assert m["results"]["inception"]["num_features"] == 12
    assert m["results"]["inception"]["fid"] >= 0
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        m = evaluate(real, fake, tmp_path / "without", measures=["inception"], **FAST)
        assert "inception" not in m["results"]
        assert any("unavailable: pass --inception-weights" in n for n in m["notes"])
        html = (tmp_path / "without" / "report.html").read_text()
        assert "unavailable" in html


def test_summary_marks_uncomputable_values_as_failed_with_a_note():
    from galforge.evaluation.report import build_summary

    results = {
        "moments": {
            "comparison": {
                "ellipticity": {"ks_p": None, "note": "no finite values in fake set"},
                "flux": {"ks_p": 0.5},
            }
        }
    }
    rows = {r["measure"]: r for r in build_summary(results, {"ks_p": 0.6})}
    bad = rows["moments ellipticity KS p"]
    assert bad["value"] is None and bad["passed"] is False
    assert bad["note"] == "no finite values in fake set"
    # the KS level is family-wise: ks_p over the number of KS rows (Bonferroni)
    flux = rows["moments flux KS p"]
    assert flux["threshold"] == pytest.approx(0.3) and flux["passed"] is True
    assert "note" not in flux
