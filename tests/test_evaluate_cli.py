"""``galforge evaluate``: exit 0 with failing measures, exit 2 on bad input naming the path."""

from __future__ import annotations

import json

import numpy as np

from galforge.cli import main


def _stamps(n, seed, size=16):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 2, size, size), np.float32)
    for i in range(n):
        r = rng.uniform(1.5, 3)
        prof = np.exp(-0.5 * (x**2 + y**2) / r**2) * rng.uniform(20, 30)
        out[i] = prof + rng.normal(0, 1.0, (2, size, size))
    return out


FAST = ["--measures", "memorization,power_spectrum", "--no-progress",
        "--holdout-fraction", "0.25"]


def test_failing_measures_still_exit_zero(tmp_path, capsys):
    real = _stamps(40, 0)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", real.copy())  # the same set: memorised
    out = tmp_path / "ev"
    code = main(["evaluate", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"),
                 "--out", str(out), *FAST])
    text = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["measure"]: r for r in metrics["summary"]}
    assert rows["memorisation NN ratio (L1)"]["passed"] is False
    assert "FAIL" in text and "report:" in text
    assert (out / "report.html").is_file()
    last = json.loads(text.strip().splitlines()[-1])
    assert last["measures"] == len(metrics["summary"])


def test_thresholds_from_the_command_line(tmp_path, capsys):
    real = _stamps(40, 0)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", _stamps(40, 1))
    out = tmp_path / "ev"
    code = main(["evaluate", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"),
                 "--out", str(out), *FAST, "--threshold", "auc=0.99",
                 "--threshold", "nn_ratio=0.01"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["thresholds"]["auc"] == 0.99 and metrics["thresholds"]["nn_ratio"] == 0.01
    assert all(r["passed"] for r in metrics["summary"])


def test_bad_input_exits_two_and_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "real.npy"
    code = main(["evaluate", str(missing), "builtin:galsim?n=4&size=16", "--out",
                 str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    np.save(tmp_path / "real.npy", _stamps(8, 0))
    code = main(["evaluate", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"), "--out",
                 str(tmp_path / "o"), "--measures", "bogus"])
    assert code == 2
    assert "bogus" in capsys.readouterr().err
    code = main(["evaluate", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"), "--out",
                 str(tmp_path / "o"), "--threshold", "auc"])
    assert code == 2
    assert "--threshold" in capsys.readouterr().err


def test_a_model_folder_as_real_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    np.save(tmp_path / "fake.npy", _stamps(8, 0))
    code = main(["evaluate", str(tmp_path / "run"), str(tmp_path / "fake.npy"), "--out",
                 str(tmp_path / "o")])
    assert code == 2
    assert "REAL" in capsys.readouterr().err


def test_a_bundle_as_fake_is_sampled_with_n_and_seed(tmp_path, capsys):
    import torch

    from galforge.bundle import save_bundle
    from galforge.data.normalize import Normalizer
    from galforge.models.registry import build_generator

    spec = {"image_size": 64, "channels": 2, "latent_dim": 8, "width": 4}
    torch.manual_seed(0)
    gen = build_generator("dcgan", spec)
    real = np.stack([np.pad(s, ((0, 0), (24, 24), (24, 24))) for s in _stamps(24, 0)])
    real += np.random.default_rng(1).normal(0, 1.0, real.shape).astype(np.float32)
    save_bundle(tmp_path / "bundle", family="dcgan", spec=spec, state_dict=gen.state_dict(),
                normalizer=Normalizer.fit(real), bands=("band0", "band1"), units="adu",
                output_range=(-1.0, 1.0), config={}, data_fingerprint="0" * 64)
    np.save(tmp_path / "real.npy", real)
    out = tmp_path / "ev"
    code = main(["evaluate", str(tmp_path / "real.npy"), str(tmp_path / "bundle"), "-n", "12",
                 "--seed", "3", "--out", str(out), "--measures", "memorization",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fake"]["n"] == 12 and "seed=3" in metrics["fake"]["source"]
    assert metrics["fake"]["shape"] == [2, 64, 64]
