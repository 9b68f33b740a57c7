"""Checkpoint files: safetensors + JSON, atomic writes, optimiser and RNG round trips."""

from __future__ import annotations

import json

import pytest
import torch

from galforge.errors import TrainingError
from galforge.training import checkpoint as ck


def _tensors(v: float) -> dict:
    return {"module.G.w": torch.full((3, 2), v), "module.G.n": torch.tensor(7)}


def test_write_and_read(tmp_path):
    d = ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 5})
    assert sorted(p.name for p in d.iterdir()) == ["sha256.json", "state.json", "state.safetensors"]
    t, meta = ck.read_checkpoint(d)
    assert meta == {"step": 5}
    assert torch.equal(t["module.G.w"], torch.ones(3, 2)) and int(t["module.G.n"]) == 7
    # state.json is plain JSON, state.safetensors is not a pickle
    json.loads((d / "state.json").read_text())
    raw = (d / "state.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert set(json.loads(raw[8 : 8 + n])) == {"module.G.w", "module.G.n"}


def test_overwrite_leaves_no_temporary_files(tmp_path):
    for v in range(3):
        ck.write_checkpoint(tmp_path / "latest", _tensors(float(v)), {"step": v})
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
    t, meta = ck.read_checkpoint(tmp_path / "latest")
    assert meta["step"] == 2 and float(t["module.G.w"][0, 0]) == 2.0


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save", broken)
    with pytest.raises(OSError):
        ck.write_checkpoint(tmp_path / "latest", _tensors(2.0), {"step": 2})
    t, meta = ck.read_checkpoint(tmp_path / "latest")
    assert meta["step"] == 1 and float(t["module.G.w"][0, 0]) == 1.0


def test_interrupted_swap_falls_back_to_old_copy(tmp_path):
    ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 1})
    (tmp_path / "latest").rename(tmp_path / ".latest.old")  # crash between the two renames
    t, meta = ck.read_checkpoint(tmp_path / "latest")
    assert meta["step"] == 1


def test_missing_checkpoint_is_a_training_error(tmp_path):
    with pytest.raises(TrainingError, match="without --resume"):
        ck.read_checkpoint(tmp_path / "latest")


def test_optimizer_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, meta = ck.pack_optimizers({"G": opt})
    meta = json.loads(json.dumps(meta))  # must survive JSON
    opt2 = torch.optim.Adam(net.parameters(), lr=5.0)
    ck.unpack_optimizers({"G": opt2}, tensors, meta)
    a, b = opt.state_dict(), opt2.state_dict()
    assert b["param_groups"][0]["lr"] == 1e-3 and tuple(b["param_groups"][0]["betas"]) == (
        0.5,
        0.999,
    )
    for k in a["state"]:
        for name, v in a["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][k][name]))
