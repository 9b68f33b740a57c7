"""Ctrl-C and SIGTERM: `galforge train` and `galforge field` stop cleanly and resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from galforge import interrupt
from galforge.cli import main
from galforge.training.checkpoint import find_checkpoint, read_checkpoint

TINY = [
    "--model",
    "dcgan64",
    "--batch",
    "4",
    "--seed",
    "3",
    "--device",
    "cpu",
    "--set",
    "model.width=4",
    "--set",
    "train.threads=1",
    "--set",
    "train.progress=false",
    "--set",
    "train.log_every=1",
    "--set",
    "train.sample_every=100000",
    "--set",
    "train.checkpoint_every=100000",
    "--set",
    "output.tensorboard=false",
    "--set",
    "output.export_bundle=false",
    "--set",
    "output.loss_plot=false",
]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "gal.npy"
    np.save(path, (rng.random((8, 32, 32, 3)) * 255).astype(np.uint8))
    return path


def _spawn(args, tmp_path):
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen(
        [sys.executable, "-m", "galforge", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, proc, timeout=180.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"galforge ended early ({proc.returncode}): {out}\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("galforge did not start training in time")


def _logged_steps(run: Path) -> int:
    log = run / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def _finish(proc, timeout=120):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"galforge did not stop after the signal: {err}")
    return proc.returncode, out, err


def _state(run: Path) -> dict:
    return load_file(str(run / "checkpoints" / "latest" / "state.safetensors"))


def test_sigint_checkpoints_and_resume_is_exact(tmp_path, data):
    run = tmp_path / "run"
    proc = _spawn(["train", str(data), "--out", str(run), "--steps", "100000", *TINY], tmp_path)
    _wait_for(lambda: _logged_steps(run) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    rc, out, err = _finish(proc)
    assert rc == 130, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    step = json.loads((run / "checkpoints" / "latest" / "state.json").read_text())["step"]
    assert lines[-1].startswith(f"interrupted at step {step}; checkpoint written")
    assert f"continue with `galforge train {data} --out {run} --resume`" in lines[-1]
    assert "Traceback" not in err and step >= 2

    # resume it to step + 2 and compare with an uninterrupted run of step + 2 steps
    total = str(step + 2)
    torch.set_num_threads(1)
    assert main(["train", str(data), "--out", str(run), "--resume", "--steps", total]) == 0
    ref = tmp_path / "ref"
    assert main(["train", str(data), "--out", str(ref), "--steps", total, *TINY]) == 0
    resumed, straight = _state(run), _state(ref)
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k
    assert (run / "generator.safetensors").read_bytes() == (
        ref / "generator.safetensors"
    ).read_bytes()


def test_sigterm_exits_143(tmp_path, data):
    run = tmp_path / "run"
    proc = _spawn(["train", str(data), "--out", str(run), "--steps", "100000", *TINY], tmp_path)
    _wait_for(lambda: _logged_steps(run) >= 1, proc)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = _finish(proc)
    assert rc == 143, err
    assert "interrupted at step" in err and "--resume" in err
    assert find_checkpoint(run / "checkpoints" / "latest") is not None


def test_second_sigint_aborts_and_keeps_the_last_checkpoint(tmp_path, data):
    run = tmp_path / "run"
    proc = _spawn(
        [
            "train",
            str(data),
            "--out",
            str(run),
            "--steps",
            "100000",
            *TINY,
            "--set",
            "train.checkpoint_every=1",
        ],
        tmp_path,
    )
    _wait_for(
        lambda: (
            find_checkpoint(run / "checkpoints" / "latest") is not None and _logged_steps(run) >= 2
        ),
        proc,
    )
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rc, _, err = _finish(proc)
    assert rc == 130, err
    assert "Traceback" not in err
    tensors, meta = read_checkpoint(run / "checkpoints" / "latest")
    assert meta["step"] >= 1 and tensors
    # the kept checkpoint is good enough to continue from
    assert (
        main(["train", str(data), "--out", str(run), "--resume", "--steps", str(meta["step"] + 1)])
        == 0
    )


def test_stop_requests_restores_handlers():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.stop_requests():
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert interrupt.requested() == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before and interrupt.requested() is None
    assert interrupt.exit_code(signal.SIGINT) == 130
    assert interrupt.exit_code(signal.SIGTERM) == 143


def test_field_stops_on_sigint_and_resumes(tmp_path, monkeypatch, capsys):
    from galforge.bundle import save_bundle
    from galforge.data.normalize import Normalizer
    from galforge.generation import field as field_mod
    from galforge.models.sgan import SGANGenerator

    torch.manual_seed(0)
    gen = SGANGenerator(3, (8, 8, 4, 4)).eval()
    rng = np.random.default_rng(0)
    norm = Normalizer.fit(rng.gamma(2.0, 3.0, (1, 3, 32, 32)).astype(np.float32), target=(0.0, 1.0))
    bundle = tmp_path / "b"
    save_bundle(
        bundle,
        family="sgan",
        spec=gen.spec(),
        state_dict=gen.state_dict(),
        normalizer=norm,
        bands=("g", "r", "i"),
        units="nanomaggy",
        output_range=(0, 1),
        config={},
        data_fingerprint="test",
    )
    render = field_mod.FieldJob.render
    rendered = []

    def render_then_signal(self, ty, tx):
        rendered.append((ty, tx))
        if len(rendered) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the second tile renders
        return render(self, ty, tx)

    monkeypatch.setattr(field_mod.FieldJob, "render", render_then_signal)
    out = tmp_path / "f.npy"
    args = [
        "field",
        str(bundle),
        "--size",
        "64x96",
        "--out",
        str(out),
        "--tile",
        "32",
        "--no-progress",
        "--compile",
        "off",
    ]
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("interrupted with 2 of 6 tiles")
    assert "--resume" in err and "--size 64x96" in err
    assert len(list((tmp_path / "f.npy.progress").glob("*.done"))) == 2
    monkeypatch.setattr(field_mod.FieldJob, "render", render)
    assert main([*args, "--resume"]) == 0
    whole = field_mod.render_one_shot(gen, norm, "64x96")
    assert np.abs(np.load(out) - whole).max() < 1e-3
