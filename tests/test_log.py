"""galforge.log and the trainer's progress: lines when redirected, a bar on a terminal,
the TensorBoard notice once, sample grids in TensorBoard."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import torch

from galforge import log as glog
from galforge.cli import main
from galforge.training import trainer as trainer_mod
from galforge.training.recipes import RECIPES
from galforge.training.trainer import Trainer

TRAIN = {
    "batch": 4,
    "seed": 1,
    "ema": 0.0,
    "sample_every": 2,
    "n_samples": 4,
    "checkpoint_every": 100,
    "log_every": 2,
    "progress": True,
    "threads": 1,
}


@pytest.fixture(autouse=True)
def _no_cli_handler():
    """The CLI adds its stderr handler to the galforge logger: take it off afterwards."""
    yield
    logger = logging.getLogger("galforge")
    for h in [h for h in logger.handlers if isinstance(h, glog._StderrHandler)]:
        logger.removeHandler(h)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer(run, steps=4, tensorboard=False, **train):
    recipe = RECIPES["dcgan64"]({"width": 4}, channels=3, image_size=64, device="cpu", seed=1)
    data = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return Trainer(
        recipe,
        data,
        run,
        {**TRAIN, **train, "steps": steps},
        bands=("g", "r", "i"),
        model_name="dcgan64",
        output={"export_bundle": False, "tensorboard": tensorboard, "loss_plot": False},
    )


def _progress_records(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "galforge.train" and r.getMessage().startswith("step ")
    ]


def test_redirected_training_logs_one_line_per_interval(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="galforge")
    assert not glog.interactive()  # pytest captures stdout: not a terminal
    _trainer(tmp_path / "run", steps=4).fit()
    lines = _progress_records(caplog)
    assert [m.split(" ")[1] for m in lines] == ["2/4", "4/4"]
    assert all("\n" not in m and "loss_d" in m and "eta" in m for m in lines)


def test_cli_train_prints_progress_lines_not_a_bar(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gal.npy", (rng.random((6, 64, 64, 3)) * 255).astype(np.uint8))
    rc = main(
        [
            "train",
            str(tmp_path / "gal.npy"),
            "--model",
            "dcgan64",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "4",
            "--batch",
            "3",
            "--device",
            "cpu",
            "--set",
            "model.width=4",
            "--set",
            "train.log_every=2",
            "--set",
            "output.tensorboard=false",
            "--set",
            "output.export_bundle=false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    steps = [line for line in err.splitlines() if line.startswith("step ")]
    assert [s.split(" ")[1] for s in steps] == ["2/4", "4/4"]
    assert "\r" not in err and "it/s" not in err and "step/s" not in err


def test_a_terminal_gets_a_bar_and_no_progress_lines(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="galforge")
    monkeypatch.setattr(trainer_mod, "interactive", lambda: True)
    t = _trainer(tmp_path / "run", steps=2)
    assert t._progress(2, 0) is not None
    t.fit()
    assert _progress_records(caplog) == []
    # --no-progress: no bar even on a terminal, progress goes to the log
    t = _trainer(tmp_path / "run2", steps=2, progress=False)
    assert t._progress(2, 0) is None
    t.fit()
    assert len(_progress_records(caplog)) == 1


def test_tensorboard_missing_is_said_once(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="galforge")
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    real_find = trainer_mod.importlib.util.find_spec
    monkeypatch.setattr(
        trainer_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real_find(name, *a),
    )
    monkeypatch.setattr(trainer_mod, "_TENSORBOARD_NOTICE_SAID", False)
    _trainer(tmp_path / "a", steps=2, tensorboard=True).fit()
    _trainer(tmp_path / "b", steps=2, tensorboard=True).fit()
    said = [r for r in caplog.records if "TensorBoard is not installed" in r.getMessage()]
    assert len(said) == 1
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_sample_grids_go_to_tensorboard(tmp_path, monkeypatch):
    images = []

    class Writer:
        def __init__(self, logdir):
            pass

        def add_scalar(self, tag, value, step):
            pass

        def add_image(self, tag, img, step, dataformats="CHW"):
            images.append((tag, step, img.shape, img.dtype, dataformats))

        def close(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    _trainer(tmp_path / "r", steps=4, tensorboard=True).fit()
    assert [(tag, step) for tag, step, *_ in images] == [("samples", 2), ("samples", 4)]
    _, _, shape, dtype, fmt = images[0]
    assert fmt == "HWC" and shape[2] == 3 and shape[0] >= 64 and dtype == np.uint8
