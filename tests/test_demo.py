"""The demo's step sizing: measured on this machine, bounded, and recorded in the config."""

from __future__ import annotations

import torch

from galforge.cli import demo_cmd, main
from galforge.cli.train_cmd import resolve_train_config


def _tiny_cfg(tmp_path):
    return resolve_train_config(
        "builtin:galsim?n=8&size=64",
        model="dcgan64",
        out=str(tmp_path / "run"),
        batch=4,
        steps=1,
        device="cpu",
        sets=["model.width=4"],
    )


def test_size_steps_fits_the_budget_within_bounds(tmp_path):
    threads_before = torch.get_num_threads()
    cfg = _tiny_cfg(tmp_path)
    steps, per_step = demo_cmd._size_steps(cfg, seconds=1e6, family="dcgan")
    assert per_step > 0
    assert steps == cfg.train.steps == demo_cmd._MAX_STEPS["dcgan"]
    assert cfg.train.threads in {1, threads_before}
    assert torch.get_num_threads() == threads_before  # the measurement leaves torch as it was

    cfg = _tiny_cfg(tmp_path)
    steps, _ = demo_cmd._size_steps(cfg, seconds=0.0, family="dcgan")
    assert steps == demo_cmd._MIN_STEPS["dcgan"]


def test_demo_help_lists_its_options(capsys):
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--minutes" in out and "--out" in out


def test_demo_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "galaxies").mkdir()  # an earlier demo's output
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "galaxies").is_dir()
