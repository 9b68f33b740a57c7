"""``galforge score ladder|fit|predict`` on files the test writes."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from galforge.cli import main
from galforge.evaluation.realism import RealismScorer, read_plane


def blobs(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    """Truncated Gaussian galaxies (2-6 per image) on an exactly-zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), dtype=np.float32)
    for i in range(n):
        for _ in range(rng.integers(2, 7)):
            cy, cx = rng.uniform(3, size - 3, 2)
            sig = rng.uniform(0.8, 2.5)
            g = rng.uniform(20, 100) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig**2))
            out[i] += np.where(g > 1, g, 0).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    for i, img in enumerate(blobs(6)):
        np.save(d / f"field{i}.npy", img)
    return d


@pytest.fixture(scope="module")
def ladder_dir(real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("work") / "ladder"
    assert main(["score", "ladder", str(real_dir), "--out", str(out), "--seed", "3"]) == 0
    return out


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_ladder_writes_scored_fits_images(ladder_dir, capsys):
    rows = _csv(ladder_dir / "scores.csv")
    assert len(rows) == 6 * 9 and set(rows[0]) == {"file", "score", "group", "rung"}
    assert {float(r["score"]) for r in rows} == set(range(9))
    real = [r for r in rows if r["rung"] == "real"]
    np.testing.assert_array_equal(read_plane(ladder_dir / real[0]["file"]), blobs(6)[0])
    assert (ladder_dir / "ladder.json").is_file()
    from astropy.io import fits

    head = fits.getheader(ladder_dir / real[0]["file"])
    assert head["RSCORE"] == 8 and head["SOURCE"] == "field0.npy" and head["LADSEED"] == 3
    # the folder is refused a second time unless --overwrite
    assert main(["score", "ladder", str(ladder_dir.parent / "nope"), "--out", str(ladder_dir)]) == 2


def test_fit_then_predict_round_trip(ladder_dir, real_dir, tmp_path, capsys):
    scorer_dir = tmp_path / "scorer"
    assert (
        main(
            [
                "score",
                "fit",
                str(ladder_dir),
                "--scores",
                str(ladder_dir / "scores.csv"),
                "--out",
                str(scorer_dir),
                "--folds",
                "3",
                "--trees",
                "40",
                "--learning-rate",
                "0.2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "cross-validated MAE" in out and "3-fold, grouped" in out
    scorer = RealismScorer.load(scorer_dir)
    assert scorer.cv["folds"] == 3 and scorer.cv["mae"] < scorer.cv["baseline_mae"]
    assert f"MAE {scorer.cv['mae']:.3f}" in out

    pred_csv = tmp_path / "pred.csv"
    assert (
        main(
            [
                "score",
                "predict",
                str(ladder_dir),
                "--scorer",
                str(scorer_dir),
                "--out",
                str(pred_csv),
            ]
        )
        == 0
    )
    pred = {r["file"]: float(r["score"]) for r in _csv(pred_csv)}
    rows = _csv(ladder_dir / "scores.csv")
    assert set(pred) == {r["file"] for r in rows}
    # the written scores are the reloaded scorer's predictions, exactly
    for r in rows[:9]:
        assert pred[r["file"]] == scorer.predict(read_plane(ladder_dir / r["file"]))[0]
    real = np.mean([pred[r["file"]] for r in rows if r["rung"] == "real"])
    worst = np.mean([pred[r["file"]] for r in rows if r["rung"] == "fixed-diamonds-uniform"])
    assert real > worst + 3

    # a folder of the real images scores too (other file names, same scorer)
    assert (
        main(
            [
                "score",
                "predict",
                str(real_dir),
                "--scorer",
                str(scorer_dir),
                "--out",
                str(tmp_path / "real.csv"),
            ]
        )
        == 0
    )
    assert [r["file"] for r in _csv(tmp_path / "real.csv")] == [f"field{i}.npy" for i in range(6)]

    # the same fit again: the same scorer; a used --out needs --overwrite
    again = tmp_path / "again"
    args = [
        "score",
        "fit",
        str(ladder_dir),
        "--scores",
        str(ladder_dir / "scores.csv"),
        "--folds",
        "3",
        "--trees",
        "40",
        "--learning-rate",
        "0.2",
    ]
    assert main([*args, "--out", str(again)]) == 0
    assert (again / "trees.npz").read_bytes() == (scorer_dir / "trees.npz").read_bytes()
    assert main([*args, "--out", str(again)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(again), "--overwrite", "--features", "galaxies"]) == 0
    assert RealismScorer.load(again).spec.sets == ("galaxies",)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_errors_are_one_line_with_exit_2(ladder_dir, real_dir, tmp_path, capsys):
    fit = ["score", "fit", str(ladder_dir), "--out", str(tmp_path / "s")]
    assert main([*fit, "--scores", str(tmp_path / "none.csv")]) == 2
    err = _err(capsys)
    assert "--scores" in err and "none.csv" in err and "no such file" in err

    bad = tmp_path / "bad.csv"
    bad.write_text("file,score\n00000_s8_real.fits,eight\n")
    assert main([*fit, "--scores", str(bad)]) == 2
    assert "line 2: score 'eight' is not a number" in _err(capsys)

    bad.write_text("file,score\n00000_s8_real.fits,8\nmissing.fits,1\n")
    assert main([*fit, "--scores", str(bad)]) == 2
    assert "missing.fits" in _err(capsys)

    bad.write_text("file,score\n00000_s8_real.fits,8\n00000_s0_fixed-diamonds-uniform.fits,0\n")
    assert main([*fit, "--scores", str(bad)]) == 2
    assert "too few for 5-fold cross-validation" in _err(capsys)

    assert main([*fit, "--scores", str(ladder_dir / "scores.csv"), "--features", "colour"]) == 2
    assert "unknown feature set 'colour'" in _err(capsys)

    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "a.npy", blobs(1, size=40)[0])
    np.save(other / "b.npy", blobs(1, size=32)[0])
    (other / "s.csv").write_text("file,score\na.npy,1\nb.npy,2\n")
    assert (
        main(
            [
                "score",
                "fit",
                str(other),
                "--scores",
                str(other / "s.csv"),
                "--folds",
                "2",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "b.npy: 32×32 pixels" in _err(capsys)

    assert (
        main(
            [
                "score",
                "predict",
                str(real_dir),
                "--scorer",
                str(tmp_path / "nothing"),
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 2
    )
    assert "no scorer.json" in _err(capsys)

    noisy = tmp_path / "noisy"
    noisy.mkdir()
    np.save(noisy / "n.npy", np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32))
    assert main(["score", "ladder", str(noisy), "--out", str(tmp_path / "lad")]) == 2
    assert "--threshold" in _err(capsys)
    assert not (tmp_path / "lad").exists()


def test_ladder_and_predict_take_a_builtin_spec(tmp_path, capsys):
    spec = "builtin:sparse?n=2&size=64&count=3&stamp=24&seed=4"
    assert main(["score", "ladder", spec, "--out", str(tmp_path / "lad")]) == 0
    rows = _csv(tmp_path / "lad" / "scores.csv")
    assert len(rows) == 18 and {r["group"] for r in rows} == {"00000", "00001"}
    from astropy.io import fits

    assert fits.getheader(tmp_path / "lad" / rows[-1]["file"])["SOURCE"] == "1"
    assert (
        main(
            [
                "score",
                "fit",
                str(tmp_path / "lad"),
                "--scores",
                str(tmp_path / "lad" / "scores.csv"),
                "--folds",
                "2",
                "--trees",
                "10",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "score",
                "predict",
                spec,
                "--scorer",
                str(tmp_path / "s"),
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    assert [r["file"] for r in _csv(tmp_path / "p.csv")] == ["0", "1"]
