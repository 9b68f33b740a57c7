"""Corrupt or incomplete state never passes silently: checksums, fallback, non-finite weights,
full disks and atomic outputs give one line (exit 2) and leave nothing half-written."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from galforge.cli import main
from galforge.errors import DiskFullError, TrainingError
from galforge.training import checkpoint as ck

TINY = ["--model", "dcgan64", "--batch", "3", "--seed", "1", "--device", "cpu",
        "--set", "model.width=4", "--set", "train.progress=false",
        "--set", "output.tensorboard=false", "--set", "output.loss_plot=false",
        "--set", "train.sample_every=100"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _stderr_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1] if err else ""


@pytest.fixture(scope="module")
def npy_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    np.save(d / "gal.npy", (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8))
    return d / "gal.npy"


def _train(data, run, *extra):
    return main(["train", str(data), "--out", str(run), *TINY, *extra])


def _temporaries(folder):
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]


# ----------------------------------------------------------------------------- checkpoints


def _tensors(v: float) -> dict:
    return {"module.G.w": torch.full((3, 2), v), "module.G.n": torch.tensor(7)}


def test_checkpoint_checksum_catches_one_changed_float(tmp_path):
    d = ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 5})
    raw = bytearray((d / "state.safetensors").read_bytes())
    raw[-3] ^= 0x01   # one bit of one float: still a valid safetensors file
    (d / "state.safetensors").write_bytes(bytes(raw))
    with pytest.raises(TrainingError, match="sha256"):
        ck.read_checkpoint(d)


def test_checkpoint_with_nan_weights_is_refused(tmp_path):
    bad = _tensors(1.0)
    bad["module.G.w"][0, 0] = float("nan")
    d = ck.write_checkpoint(tmp_path / "latest", bad, {"step": 5})
    with pytest.raises(TrainingError, match="NaN or infinity"):
        ck.read_checkpoint(d)


def test_old_checkpoints_without_checksums_still_load(tmp_path):
    d = ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 5})
    (d / ck.SUMS).unlink()
    _, meta = ck.read_checkpoint(d)
    assert meta["step"] == 5


def test_newest_intact_checkpoint_is_chosen(tmp_path):
    latest = ck.write_checkpoint(tmp_path / "latest", _tensors(4.0), {"step": 4})
    snap = ck.write_checkpoint(tmp_path / "step-2", _tensors(2.0), {"step": 2})
    ck.write_checkpoint(tmp_path / "step-1", _tensors(1.0), {"step": 1})
    found, _, meta, problems = ck.read_newest_intact([latest, snap, tmp_path / "step-1"])
    assert found == latest and not problems
    (latest / "state.safetensors").write_bytes(b"\0" * 10)
    found, _, meta, problems = ck.read_newest_intact([latest, snap, tmp_path / "step-1"])
    assert found == snap and meta["step"] == 2 and len(problems) == 1


def test_disk_full_while_checkpointing_leaves_no_temporary(tmp_path, monkeypatch):
    ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 1})
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and ".tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(DiskFullError, match="disk full while writing"):
        ck.write_checkpoint(tmp_path / "latest", _tensors(2.0), {"step": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
    assert ck.read_checkpoint(tmp_path / "latest")[1]["step"] == 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_resume_falls_back_to_newest_intact_checkpoint(npy_data, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "3", "--set", "train.snapshot_every=2",
                  "--set", "train.checkpoint_every=1") == 0
    state = run / "checkpoints/latest/state.safetensors"
    if damage == "flip":
        raw = bytearray(state.read_bytes())
        raw[-5] ^= 0x40
        state.write_bytes(bytes(raw))
    else:
        with open(state, "r+b") as fh:
            fh.truncate(state.stat().st_size // 2)
    capsys.readouterr()
    assert _train(npy_data, run, "--steps", "4", "--resume") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    notes = [x for x in err.splitlines() if "newest intact checkpoint" in x]
    assert len(notes) == 1 and "step-00000002" in notes[0]
    assert ck.read_checkpoint(run / "checkpoints/latest")[1]["step"] == 4   # intact again
    assert json.loads((run / "run.json").read_text())["step"] == 4


def test_resume_with_no_intact_checkpoint_is_one_line(npy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "2") == 0
    (run / "checkpoints/latest/state.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert _train(npy_data, run, "--steps", "3", "--resume") == 2
    line = _stderr_line(capsys)
    assert "no intact checkpoint" in line


def test_resume_below_current_step_is_refused(npy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "3") == 0
    capsys.readouterr()
    assert _train(npy_data, run, "--steps", "2", "--resume") == 2
    assert "--steps 2 is below the run's step 3" in _stderr_line(capsys)


def test_disk_full_during_train_is_one_line(npy_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and "checkpoints" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)
    assert _train(npy_data, run, "--steps", "2") == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: disk full while writing") and "--resume" in line
    assert _temporaries(run) == []
