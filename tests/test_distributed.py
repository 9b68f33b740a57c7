"""Data-parallel training: torchrun, DistributedDataParallel, equivalence with one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from galforge.cli import main
from galforge.errors import ConfigError
from galforge.training import distributed as ddp
from galforge.training.recipe import Phase, StepContext

# a tiny DCGAN whose step is the same function of the global batch on 1 or 2 processes:
# no batch norm (per-process statistics), no minibatch statistics of D, no sky-noise draws;
# label smoothing and a lazy R1 penalty (double backward through DDP) on
TINY = [
    "--model",
    "dcgan64",
    "--steps",
    "4",
    "--batch",
    "8",
    "--seed",
    "3",
    "--device",
    "cpu",
    "--set",
    "model.width=4",
    "--set",
    "model.batch_norm=false",
    "--set",
    "model.sky_noise=false",
    "--set",
    "model.d_profile=false",
    "--set",
    "model.d_mbstd_group=0",
    "--set",
    "model.d_moments=false",
    "--set",
    "model.label_smoothing=0.1",
    "--set",
    "model.r1_gamma=0.5",
    "--set",
    "model.r1_interval=2",
    "--set",
    "train.ema=0",
    "--set",
    "train.threads=1",
    "--set",
    "train.progress=false",
    "--set",
    "output.tensorboard=false",
    "--set",
    "output.export_bundle=false",
    "--set",
    "output.loss_plot=false",
]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_torchrun_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    """Same global batch, same latents and labels: the same weights (and resume is exact)."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gal.npy", (rng.random((16, 64, 64, 3)) * 255).astype(np.uint8))
    one, two = tmp_path / "one", tmp_path / "two"
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "galforge",
        "train",
        str(tmp_path / "gal.npy"),
    ]
    # two processes: 2 steps, then resumed to 4; one process (this one): 4 steps in one go
    for extra in (["--steps", "2"], ["--resume"]):
        res = subprocess.run(
            [*launch, "--out", str(two), *TINY, *extra],
            env=_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr[-3000:]
    assert main(["train", str(tmp_path / "gal.npy"), "--out", str(one), *TINY]) == 0
    notes = [json.loads(line).get("note", "") for line in (two / "log.jsonl").open()]
    assert any("DistributedDataParallel wraps G, D" in n for n in notes)
    assert json.loads((two / "checkpoints/latest/state.json").read_text())["world_size"] == 2
    a = load_file(one / "checkpoints/latest/state.safetensors")
    b = load_file(two / "checkpoints/latest/state.safetensors")
    nets = [k for k in a if k.startswith("module.")]
    assert nets and sorted(nets) == sorted(k for k in b if k.startswith("module."))
    # Adam moves each weight by up to ~lr = 2e-4 a step: a different batch split, latent or
    # gradient shows up at that scale; the same computation summed in another order at 1e-7
    for k in nets:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-5), k
    # the exported weights are G's own state dict, without DDP's "module." prefix
    g = load_file(two / "generator.safetensors")
    assert sorted(g) == sorted(k[len("module.G.") :] for k in nets if k.startswith("module.G."))
    assert all(torch.equal(v, b[f"module.G.{k}"]) for k, v in g.items())


def test_rows_of_the_global_draw():
    def draw(m, g):
        return torch.randn(m, 2, generator=g)

    def ctx(rank, world):
        rng = torch.Generator().manual_seed(7)
        shared = torch.Generator().manual_seed(7) if world > 1 else None
        return StepContext(0, rng, Phase("p"), rank=rank, world_size=world, shared_rng=shared)

    whole = ctx(0, 1).rows(draw, 6)
    parts = [ctx(r, 3).rows(draw, 2) for r in range(3)]
    for r in range(3):
        assert torch.equal(parts[r], whole[r::3])


def test_sync_batchnorm_needs_cuda():
    with pytest.raises(ConfigError, match="train.sync_bn"):
        ddp.wrap(torch.nn.Sequential(torch.nn.BatchNorm2d(2)), torch.device("cpu"), sync_bn=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sgan_worker(rank, world, port, run, result_dir):
    from galforge.training.recipes import get_recipe
    from galforge.training.trainer import Trainer

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
    model = {
        "widths": [8, 8, 4, 4],
        "d_widths": [4, 4, 4, 4, 4],
        "crop_sizes": [32],
        "sky_noise": True,
    }
    recipe = get_recipe("sgan")(model, channels=3, image_size=None, device="cpu", seed=2)
    data = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    Trainer(
        recipe,
        data,
        run,
        {
            "steps": 3,
            "batch": 4,
            "seed": 2,
            "progress": False,
            "sample_every": 100,
            "n_samples": 2,
            "log_every": 1,
        },
        output={"export_bundle": False, "tensorboard": False, "loss_plot": False},
    ).fit()
    torch.save(
        {f"{m}.{k}": v for m, net in recipe.modules().items() for k, v in net.state_dict().items()},
        os.path.join(result_dir, f"w{rank}.pt"),
    )


def test_sgan_trains_under_ddp_and_processes_stay_in_step(tmp_path):
    """SGAN's D is frozen during G's update (no D gradients in that backward) and G's sky
    layer may be called beside G's forward: DDP must keep both processes' weights equal."""
    import torch.multiprocessing as mp

    run = tmp_path / "run"
    mp.spawn(_sgan_worker, args=(2, _free_port(), run, str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "w0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "w1.pt", weights_only=True)
    for k, v in w0.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(v, w1[k], rtol=0, atol=1e-6), k
    notes = [json.loads(line).get("note", "") for line in (run / "log.jsonl").open()]
    assert any("DistributedDataParallel wraps G, D" in n for n in notes)


def test_the_wrapper_answers_the_networks_own_attributes(tmp_path):
    """In a one-process gloo group: the DDP wrapper is transparent to a recipe's calls."""
    import torch.distributed as dist

    from galforge.models.dcgan import DCGANGenerator

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        g = DCGANGenerator(64, 3, width=2, init_seed=1)
        w = ddp.wrap(g, torch.device("cpu"))
        assert w.latent_shape(3) == g.latent_shape(3)
        with pytest.raises(AttributeError):
            w.no_such_attribute  # noqa: B018
        z = torch.randn(g.latent_shape(2), generator=torch.Generator().manual_seed(0))
        assert torch.equal(w(z), g(z))
    finally:
        dist.destroy_process_group()


def _ada_worker(rank, world, port, result_dir):
    import torch.distributed as dist

    from galforge.training.augment import AdaptiveAugment

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        ada = AdaptiveAugment(p=0.5, target=0.6, interval=2, speed_images=100)
        sign = 1.0 if rank == 0 else -1.0  # D sure of the reals on one process only
        for _ in range(2):
            ada.observe(torch.full((4, 1), sign))
        torch.save(ada.state_dict(), os.path.join(result_dir, f"ada{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ada_adjusts_p_from_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ada_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"ada{r}.pt", weights_only=False) for r in range(2)]
    # global r_t = 0 over 16 images: p steps down by 16/100 on both processes
    assert states[0]["p"] == states[1]["p"] == pytest.approx(0.5 - 16 / 100)


def _stylegan2_worker(rank, world, port, run, result_dir):
    from galforge.training.recipes import get_recipe
    from galforge.training.trainer import Trainer

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
    model = {
        "config": "small",
        "image_size": 16,
        "z_dim": 8,
        "w_dim": 8,
        "mapping_layers": 2,
        "channel_base": 64,
        "channel_max": 8,
        "r1_interval": 2,
        "pl_interval": 2,
        "ada_target": 0.0,
        "ada_interval": 1,
        "ada_kimg": 0.02,
    }
    recipe = get_recipe("stylegan2")(model, channels=2, image_size=16, device="cpu", seed=3)
    data = torch.rand(8, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    Trainer(
        recipe,
        data,
        run,
        {
            "steps": 4,
            "batch": 4,
            "seed": 3,
            "progress": False,
            "sample_every": 100,
            "n_samples": 2,
            "log_every": 1,
        },
        output={"export_bundle": False, "tensorboard": False, "loss_plot": False},
    ).fit()
    # parameters (buffers such as w_avg, running means of each process's own draws, may
    # differ: rank 0's are saved)
    state = {
        f"{m}.{k}": v.detach()
        for m, net in recipe.modules().items()
        for k, v in net.named_parameters()
    }
    state["ada_p"] = torch.tensor(recipe.augment.p)
    torch.save(state, os.path.join(result_dir, f"s{rank}.pt"))


def test_stylegan2_with_ada_r1_and_path_length_stays_in_step_under_ddp(tmp_path):
    """D in DDP (R1's double backward included), G's mapping and synthesis averaged after
    the backward pass, ADA's p from the global batch: both processes end identical."""
    import torch.multiprocessing as mp

    run = tmp_path / "run"
    mp.spawn(_stylegan2_worker, args=(2, _free_port(), run, str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "s0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "s1.pt", weights_only=True)
    assert float(s0["ada_p"]) > 0  # p moved, by the same steps on both
    for k, v in s0.items():
        assert torch.allclose(v.float(), s1[k].float(), rtol=0, atol=1e-6), k
    notes = [json.loads(line).get("note", "") for line in (run / "log.jsonl").open()]
    assert any("DistributedDataParallel wraps D" in n for n in notes)
