"""``--device auto`` everywhere networks run: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fits_validity import _bundle

import galforge
from galforge.bundle import resolve_device
from galforge.cli import main
from galforge.errors import ConfigError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps", "tpu", "gpu0"])
def test_devices_not_here_are_one_line_errors(no_gpu, name):
    with pytest.raises(ConfigError, match="--device") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_load_and_commands_default_to_auto(tmp_path, no_gpu, capsys):
    path = _bundle(tmp_path / "b")
    bundle = galforge.load(path)
    assert bundle.device == resolve_device("auto") == torch.device("cpu")
    out = tmp_path / "o"
    assert main(["generate", str(path), "-n", "1", "--out", str(out), "--no-progress"]) == 0
    assert (
        main(
            [
                "generate",
                str(path),
                "-n",
                "1",
                "--out",
                str(tmp_path / "c"),
                "--device",
                "cuda",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--device cuda" in err and "CUDA is not available" in err
    assert len(err.splitlines()) == 1
    for command in ("generate", "field", "evaluate", "mix", "interpolate", "project"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--device" in text and "auto" in text and "MPS" in text, command


def test_train_resolves_devices_like_every_other_command(tmp_path, no_gpu, capsys):
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((4, 3, 64, 64), np.float32))
    rc = main(
        [
            "train",
            str(data),
            "--model",
            "dcgan64",
            "--steps",
            "1",
            "--batch",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "mps",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--device mps" in err and "MPS is not available" in err
    assert len(err.splitlines()) == 1
