"""The generic training loop: run folder, exact resume, non-finite stop, CLI, DDP."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from galforge.cli import main
from galforge.errors import ConfigError, TrainingError
from galforge.runfolder import RunFolder
from galforge.training.pipeline import StampBatches
from galforge.training.recipes import RECIPES
from galforge.training.trainer import Trainer

MODEL = {"width": 4, "dropout": 0.3, "label_smoothing": 0.1, "dropout_until_epoch": 1}
TRAIN = {
    "batch": 4,
    "seed": 5,
    "ema": 0.9,
    "lr_schedule": "step",
    "lr_step_epochs": 1,
    "lr_gamma": 0.5,
    "sample_every": 2,
    "n_samples": 4,
    "checkpoint_every": 2,
    "log_every": 1,
    "progress": False,
}
OUTPUT = {"export_bundle": False, "tensorboard": False}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=10, c=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def _trainer(run, steps=None, epochs=None, resume=False, model=None, recipe_cls=None, **train):
    cls = recipe_cls or RECIPES["dcgan64"]
    recipe = cls(
        {**MODEL, **(model or {})}, channels=3, image_size=64, device="cpu", seed=TRAIN["seed"]
    )
    cfg = {**TRAIN, **train, "steps": steps, "epochs": epochs}
    return Trainer(
        recipe,
        _data(),
        run,
        cfg,
        bands=("g", "r", "i"),
        units="counts",
        data_fingerprint="abc",
        model_name="dcgan64",
        output=OUTPUT,
        resume=resume,
    )


def test_run_folder_layout(tmp_path):
    run = tmp_path / "run"
    summary = _trainer(run, steps=4, snapshot_every=2).fit()
    assert summary["step"] == 4
    for rel in [
        "config.yaml",
        "run.json",
        "generator.safetensors",
        "log.jsonl",
        "loss.png",
        "checkpoints/latest/state.safetensors",
        "checkpoints/latest/state.json",
        "checkpoints/step-00000002/state.json",
        "checkpoints/step-00000004/state.json",
        "samples/step-00000002.png",
        "samples/step-00000004.png",
    ]:
        assert (run / rel).is_file(), rel
    info = RunFolder(run).read_info()
    assert info.family == "dcgan" and info.step == 4 and info.bands == ["g", "r", "i"]
    assert info.units == "counts" and info.data_fingerprint == "abc" and info.model == "dcgan64"
    assert info.output_range == [-1.0, 1.0] and info.epoch == 2
    assert info.parts["generator"]["module"] == "galforge.models.dcgan"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"loss_d", "loss_g", "time_step_s", "lr_G"} <= set(log[0])
    # step schedule: lr halves every epoch (2 steps per epoch here)
    assert log[0]["lr_G"] == pytest.approx(2e-4) and log[2]["lr_G"] == pytest.approx(1e-4)
    state = json.loads((run / "checkpoints/latest/state.json").read_text())
    assert {"step", "epoch", "optimizers", "schedule", "config", "augment"} <= set(state)
    assert "rng" not in state  # every draw is keyed by (seed, step): no generator state
    # the generator weights rebuild through the registry
    from galforge.models import build_generator

    g = build_generator(info.parts["generator"]["family"], info.parts["generator"]["spec"])
    g.load_state_dict(load_file(str(run / "generator.safetensors")))


def test_resume_is_exact(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _trainer(a, steps=6).fit()
    _trainer(b, steps=3).fit()
    t = _trainer(b, steps=6, resume=True)
    t.fit()
    assert (a / "generator.safetensors").read_bytes() == (b / "generator.safetensors").read_bytes()
    assert (a / "samples/step-00000006.png").read_bytes() == (
        b / "samples/step-00000006.png"
    ).read_bytes()
    sa = load_file(str(a / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the log of the resumed run matches the uninterrupted one (losses, lr)
    la = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_d"], r["lr_D"]) for r in la] == [
        (r["step"], r["loss_d"], r["lr_D"]) for r in lb
    ]
    # dropout was switched off after epoch 1 and stays off after resume
    assert not t.recipe.dropout_active()


def test_epochs_and_batches_are_deterministic(tmp_path):
    summary = _trainer(tmp_path / "r", epochs=2).fit()
    assert summary["step"] == 4 and summary["epoch"] == 2  # 10 images, batch 4: 2 steps/epoch
    src1 = StampBatches(_data(), 4, seed=1)
    src2 = StampBatches(_data(), 4, seed=1)
    assert torch.equal(src1.batch(7), src2.batch(7))
    assert not torch.equal(src1.indices(0), src1.indices(2))  # new permutation per epoch


def test_existing_run_needs_resume(tmp_path):
    _trainer(tmp_path / "r", steps=2).fit()
    with pytest.raises(TrainingError, match="--resume"):
        _trainer(tmp_path / "r", steps=4).fit()
    with pytest.raises(TrainingError, match="no checkpoint"):
        _trainer(tmp_path / "other", steps=4, resume=True).fit()
    with pytest.raises(ConfigError, match="--steps N or --epochs E"):
        _trainer(tmp_path / "x").fit()


class _NanAtStep4(RECIPES["dcgan64"]):
    def train_step(self, real, step, rng):
        out = super().train_step(real, step, rng)
        if step == 3:
            out["loss_d"] = float("nan")
        return out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(TrainingError) as e:
        _trainer(run, steps=8, recipe_cls=_NanAtStep4).fit()
    assert "step 4" in str(e.value) and "loss_d=nan" in str(e.value)
    state = json.loads((run / "checkpoints/latest/state.json").read_text())
    assert state["step"] == 2
    assert json.loads((run / "run.json").read_text())["step"] == 2
    # resuming with a healthy recipe continues from the kept checkpoint
    summary = _trainer(run, steps=4, resume=True).fit()
    assert summary["step"] == 4


def test_amp_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="--amp needs a CUDA"):
        _trainer(tmp_path / "r", steps=1, amp=True).fit()


def test_cli_train_on_npy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arr = (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8)  # Galaxy10-like N×H×W×C
    np.save(tmp_path / "gal.npy", arr)
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            str(tmp_path / "gal.npy"),
            "--model",
            "dcgan64",
            "--out",
            str(run),
            "--steps",
            "2",
            "--batch",
            "3",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--set",
            "model.width=4",
            "--set",
            "train.progress=false",
            "--set",
            "output.tensorboard=false",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert str(run) in out and "samples" in out
    for rel in [
        "config.yaml",
        "run.json",
        "generator.safetensors",
        "log.jsonl",
        "checkpoints/latest/state.json",
        "samples/step-00000002.png",
    ]:
        assert (run / rel).is_file(), rel
    info = RunFolder(run).read_info()
    spec = info.parts["generator"]["spec"]
    assert spec["image_size"] == 64 and spec["channels"] == 3
    assert info.normalizer is not None and info.data_fingerprint
    assert (run / "bundle" / "bundle.json").is_file()
    # resume to a longer run through the CLI
    rc = main(
        [
            "train",
            str(tmp_path / "gal.npy"),
            "--out",
            str(run),
            "--steps",
            "3",
            "--resume",
            "--device",
            "cpu",
            "--set",
            "train.progress=false",
        ]
    )
    assert rc == 0
    assert json.loads((run / "run.json").read_text())["step"] == 3
    # changing the architecture on resume is refused
    rc = main(
        [
            "train",
            str(tmp_path / "gal.npy"),
            "--out",
            str(run),
            "--steps",
            "4",
            "--resume",
            "--set",
            "model.width=8",
        ]
    )
    assert rc == 2 and "model.width" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, run, result_dir):
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    t = _trainer(run, steps=2, model={"dropout": 0.0}, ema=0.0)
    t.fit()
    sd = {k: v for k, v in t.recipe.G.state_dict().items()}
    torch.save(sd, os.path.join(result_dir, f"g{rank}.pt"))


def test_two_process_gloo(tmp_path):
    import torch.multiprocessing as mp

    run = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, _free_port(), run, str(tmp_path)), nprocs=2, join=True)
    g0 = torch.load(tmp_path / "g0.pt", weights_only=True)
    g1 = torch.load(tmp_path / "g1.pt", weights_only=True)
    # parameters stay in sync across processes (gradients are averaged)
    for k, v in g0.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(v, g1[k], atol=1e-6), k
    assert (run / "checkpoints/latest/state.json").is_file()
    assert json.loads((run / "checkpoints/latest/state.json").read_text())["world_size"] == 2


def test_tensorboard_scalars_when_available(tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    class Writer:
        def __init__(self, logdir):
            calls.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def add_image(self, tag, img, step, dataformats="CHW"):
            calls.append((tag, step))

        def close(self):
            calls.append(("closed", None))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    t = _trainer(tmp_path / "r", steps=2)
    t.output.tensorboard = True
    t.fit()
    assert ("loss_d", 1) in calls and ("loss_g", 2) in calls and calls[-1][0] == "closed"
    assert calls[0] == ("dir", str(tmp_path / "r" / "tensorboard"))


def test_metric_hook_logs_and_keeps_the_best_checkpoint(tmp_path):
    from galforge.training.trainer import MetricHook

    values = iter([3.0, 1.0, 2.0])
    seen = []

    def metric(trainer):
        seen.append(trainer.sample_physical(2).shape)
        return next(values)

    t = _trainer(tmp_path / "r", steps=6)
    t.metrics = [MetricHook("score", metric, every=2, mode="min")]
    summary = t.fit()
    assert seen == [(2, 3, 64, 64)] * 3
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["metric_score"]) for r in log if "metric_score" in r] == [
        (2, 3.0),
        (4, 1.0),
        (6, 2.0),
    ]
    best = json.loads((tmp_path / "r" / "checkpoints" / "best" / "best.json").read_text())
    assert best == {"metric": "score", "value": 1.0, "step": 4, "mode": "min"}
    assert (
        json.loads((tmp_path / "r" / "checkpoints" / "best" / "state.json").read_text())["step"]
        == 4
    )
    assert summary["metric_best"]["score"]["step"] == 4
    with pytest.raises(ConfigError, match="mode"):
        MetricHook("x", metric, every=1, mode="best")


def test_cli_in_training_galaxy_metrics(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gal.npy", rng.gamma(2.0, 5.0, (8, 2, 64, 64)).astype(np.float32))
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            str(tmp_path / "gal.npy"),
            "--model",
            "dcgan64",
            "--out",
            str(run),
            "--steps",
            "4",
            "--batch",
            "4",
            "--device",
            "cpu",
            "--set",
            "model.width=2",
            "--set",
            "train.progress=false",
            "--set",
            "output.tensorboard=false",
            "--metric-every",
            "2",
            "--metric-n",
            "6",
            "--keep-best",
            "kid",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    fgd = [(r["step"], r["metric_fgd"]) for r in log if "metric_fgd" in r]
    kid = [(r["step"], r["metric_kid"]) for r in log if "metric_kid" in r]
    assert [s for s, _ in fgd] == [s for s, _ in kid] == [2, 4]
    assert all(v > 0 and np.isfinite(v) for _, v in fgd)
    best = json.loads((run / "checkpoints" / "best" / "best.json").read_text())
    assert best["metric"] == "kid" and best["value"] == min(v for _, v in kid)
    assert (
        main(
            [
                "train",
                str(tmp_path / "gal.npy"),
                "--model",
                "dcgan64",
                "--out",
                str(tmp_path / "r2"),
                "--steps",
                "1",
                "--metric-every",
                "1",
                "--keep-best",
                "fid",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--keep-best" in err and "'fid'" in err


def test_metric_samples_of_a_noise_generator_get_their_own_noise(tmp_path):
    from galforge.training.recipes import get_recipe

    cls = get_recipe("stylegan2")
    tiny = {
        "image_size": 16,
        "z_dim": 8,
        "w_dim": 8,
        "mapping_layers": 2,
        "channel_base": 64,
        "channel_max": 8,
        "config": "small",
    }
    recipe = cls(tiny, channels=3, image_size=16, device="cpu", seed=0)
    t = Trainer(
        recipe,
        _data(size=16),
        tmp_path / "r",
        {**TRAIN, "steps": 1},
        bands=("g", "r", "i"),
        units="counts",
        data_fingerprint="abc",
        model_name="stylegan2",
        output=OUTPUT,
    )
    gen = t.export_generator()
    with torch.no_grad():
        for c in gen.convs:
            c.noise_strength.fill_(1.0)
        for p in gen.mapping_net.parameters():
            p.zero_()  # every sample has the same w: only the noise tells them apart
    a = t.sample_physical(2)
    assert not np.allclose(a[0], a[1])
    np.testing.assert_array_equal(a, t.sample_physical(2))


def test_export_of_a_kept_snapshot_is_the_model_of_that_step(tmp_path, capsys):
    """`galforge export RUN --step N` writes the generator (EMA copy, batch-norm statistics
    of its own weights) that a run stopped at step N exports; a missing step says which
    steps are kept."""
    torch.set_num_threads(1)
    long_run, short_run = tmp_path / "long", tmp_path / "short"
    _trainer(long_run, steps=4, snapshot_every=2, ema=0.5).fit()
    _trainer(short_run, steps=2, ema=0.5).fit()
    assert main(["export", str(long_run), "--step", "2"]) == 0
    out = long_run / "bundle-step-00000002"
    assert capsys.readouterr().out.strip() == str(out)
    got = load_file(str(out / "generator.safetensors"))
    want = load_file(str(short_run / "generator.safetensors"))
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert json.loads((out / "bundle.json").read_text())["source"]["step"] == 2
    # the run's own bundle still follows its present weights (step 4)
    assert RunFolder(long_run).bundle_file().meta["source"]["step"] == 4
    assert main(["export", str(long_run), "--step", "3"]) == 2
    err = capsys.readouterr().err
    assert "no kept snapshot of step 3" in err and "kept steps: 2, 4" in err
