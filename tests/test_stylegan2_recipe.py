"""The StyleGAN2 + ADA recipe: configs, phases, R1 through ADA, path length, ADA's p,
exact resume, the exported bundle, truncation in w and fine-tuning with frozen layers."""

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
from galforge.training.losses import path_length_penalty, r1_penalty
from galforge.training.recipe import Phase, StepContext
from galforge.training.recipes import get_recipe

TINY = {
    "image_size": 16,
    "z_dim": 8,
    "w_dim": 8,
    "mapping_layers": 2,
    "channel_base": 64,
    "channel_max": 8,
    "r1_interval": 2,
    "pl_interval": 2,
}
CLI_TINY = [f"--set=model.{k}={v}" for k, v in TINY.items()] + [
    "--set=model.config=small",
    "--set=train.progress=false",
    "--set=output.tensorboard=false",
    "--set=train.log_every=1",
    "--set=train.sample_every=1000",
    "--set=train.n_samples=4",
    "--set=train.threads=1",
    "--batch",
    "4",
    "--seed",
    "3",
    "--device",
    "cpu",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _recipe(**over):
    cls = get_recipe("stylegan2")
    return cls({"config": "small", **TINY, **over}, channels=2, image_size=16, device="cpu", seed=0)


def _ctx(name, step=0, seed=0, interval=1):
    return StepContext(step, torch.Generator().manual_seed(seed), Phase(name, interval))


def test_configs_and_lazy_regularisation_settings():
    cls = get_recipe("stylegan2")
    paper256 = cls.make_settings({"config": "paper256"})
    assert (paper256.channel_base, paper256.mapping_layers, paper256.r1_gamma) == (16384, 8, 1.0)
    assert cls.make_settings({}).channel_base == 16384  # paper256 is the default
    assert cls.make_settings({"config": "paper"}).channel_base == 32768
    r = _recipe(r1_interval=16)
    r.make_batches(None, 16, 0)
    assert r.r1_gamma() == pytest.approx(0.0002 * 16**2 / 16)  # the auto heuristic
    assert r.default_ema() == pytest.approx(0.5 ** (16 / 5000))  # 16 · 10 / 32 kimg
    assert [p.name for p in r.phases()] == ["g_main", "g_pl", "d_main", "d_r1"]
    c = 16 / 17  # D: R1 every 16 steps
    g = r.opt_d.param_groups[0]
    assert g["lr"] == pytest.approx(0.0025 * c) and g["betas"][1] == pytest.approx(0.99**c)
    assert r.opt_g.param_groups[0]["lr"] == pytest.approx(0.0025 * 2 / 3)  # pl every 2
    assert [p.name for p in _recipe(loss="wgan_gp").phases()] == ["g_main", "g_pl", "d_main"]
    with pytest.raises(ConfigError, match="model.augment"):
        _recipe(augment="hue")


def test_r1_through_ada_equals_r1_on_the_augmented_images():
    r = _recipe()
    r.augment.p = 1.0  # every image flipped, turned and shifted
    real = torch.randn(4, 2, 16, 16)
    out = r.d_r1(real.clone(), _ctx("d_r1", seed=5))
    # the augmentation is a pixel permutation: the gradient norm at x equals the one at
    # aug(x); a fresh recipe (the same initial D) with the same draws gives the reference
    r2 = _recipe()
    r2.augment.p = 1.0
    aug = r2.augment(real, torch.Generator().manual_seed(5)).requires_grad_(True)
    assert not torch.equal(aug, real)
    assert out["r1"] == pytest.approx(r1_penalty(r2.D(aug), aug).item(), rel=1e-4)


def test_path_length_weight_gives_the_paper_term():
    r = _recipe()
    G = r.G
    ws = G.mapping(torch.randn(3, 8))[:, None].repeat(1, G.num_ws, 1)
    images = G.synthesis(ws)
    pen, mean = path_length_penalty(images, ws, torch.tensor(0.7), torch.Generator().manual_seed(1))
    # the paper: lengths = sqrt(mean over layers of the squared per-layer norms)
    y = torch.randn(images.shape, generator=torch.Generator().manual_seed(1)) / 16
    (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(2).mean(1).sqrt()
    k = G.num_ws**0.5
    paper_mean = (0.7 / k) + 0.01 * (lengths.mean() - 0.7 / k)
    torch.testing.assert_close(mean / k, paper_mean.detach())
    torch.testing.assert_close(pen / G.num_ws, ((lengths - paper_mean.detach()) ** 2).mean())
    out = r.g_pl(torch.zeros(4, 2, 16, 16), _ctx("g_pl", interval=2))
    assert out["pl_penalty"] >= 0 and float(r.pl_mean) > 0


@pytest.mark.parametrize("overfit", [True, False])
def test_ada_p_follows_the_discriminator(overfit):
    r = _recipe(ada_kimg=0.04)  # p moves by 1 in 40 images
    r.augment.p = 0.5
    with torch.no_grad():  # a D sure that everything is real (or fake)
        r.D.out.bias.fill_(1e3 if overfit else -1e3)
    real = torch.randn(4, 2, 16, 16)
    for step in range(4):
        r.d_main(real, _ctx("d_main", step=step))
    assert r.augment.p == pytest.approx(0.9 if overfit else 0.1)
    assert r.images_seen == 16


def test_discriminator_heads_train_and_r1_reaches_them():
    r = _recipe(d_profile=True, d_moments=True, d_head_group=2)
    assert r.D.profile is not None and r.D.moments is not None
    before = {k: v.clone() for k, v in r.D.moments.state_dict().items()}
    for step in range(2):  # R1 every 2 steps: d_r1 runs at step 0
        out = r.train_step(torch.randn(4, 2, 16, 16), step, torch.Generator().manual_seed(step))
        assert all(np.isfinite(v) for v in out.values())
    assert any(not torch.equal(before[k], v) for k, v in r.D.moments.state_dict().items())
    assert _recipe().D.moments is None  # off by default
    cpu = get_recipe("stylegan2").make_settings({"config": "cpu"})
    assert (cpu.d_profile, cpu.d_moments, cpu.d_head_group) == (True, True, 4)
    assert (cpu.channel_base, cpu.image_size, cpu.sky_noise) == (1024, 64, True)  # small's
    with pytest.raises(ConfigError, match="d_head_group"):
        _recipe(d_head_group=4)
    with pytest.raises(ConfigError, match="square"):
        _recipe(d_moments=True, image_width=32)


def test_wgan_gp_and_diffaugment_options_step():
    for over in ({"loss": "wgan_gp"}, {"augment": "diffaugment"}, {"augment": "none"}):
        r = _recipe(**over)
        out = r.train_step(torch.randn(4, 2, 16, 16), 0, torch.Generator().manual_seed(0))
        assert all(np.isfinite(v) for v in out.values())
        assert ("gp" in out) == (over.get("loss") == "wgan_gp")
        assert ("r1" in out) == (over.get("loss") != "wgan_gp")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "stamps.npz"
    np.savez(
        path,
        images=rng.gamma(2.0, 5.0, (12, 2, 16, 16)).astype(np.float32),
        bands=np.array(["g", "r"]),
        units=np.array(["counts"]),
    )
    return str(path)


def _train(data, run, steps, *extra):
    return main(
        [
            "train",
            data,
            "--model",
            "stylegan2",
            "--out",
            str(run),
            "--steps",
            str(steps),
            *CLI_TINY,
            *extra,
        ]
    )


# ADA's p moves at every step (target below any mean sign), so resume must restore it
ADA = ["--set=model.ada_target=-2", "--set=model.ada_interval=1", "--set=model.ada_kimg=0.02"]


@pytest.fixture(scope="module", autouse=True)
def _ada_target_below_any_sign():
    """A user's ada_target lies in [0, 1]; these tests lift that range for the module so that
    p grows at every step whatever D says (the mean sign r_t is never below -1)."""
    from galforge.config import MODEL_RANGES

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(MODEL_RANGES, "ada_target", "[-2, 1]")
        yield


@pytest.fixture(scope="module")
def run4(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "a"
    assert _train(data, run, 4, *ADA) == 0
    return run


def test_resume_with_ada_is_exact(data, run4, tmp_path):
    b = tmp_path / "b"
    assert _train(data, b, 2, *ADA) == 0
    assert _train(data, b, 4, "--resume", *ADA) == 0
    sa = load_file(str(run4 / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ja = json.loads((run4 / "checkpoints/latest/state.json").read_text())
    jb = json.loads((b / "checkpoints/latest/state.json").read_text())
    assert ja["augment"] == jb["augment"] and ja["augment"]["ada"]["p"] == pytest.approx(0.8)
    assert ja["recipe"] == jb["recipe"] and ja["recipe"]["images_seen"] == 16
    assert ja["recipe"]["pl_mean"] > 0
    assert (run4 / "generator.safetensors").read_bytes() == (
        b / "generator.safetensors"
    ).read_bytes()


def test_bundle_samples_without_training_code_and_truncates_in_w(run4):
    code = (
        "import sys, numpy as np\n"
        "from galforge.generation import load_bundle\n"
        f"b = load_bundle({str(run4 / 'bundle')!r})\n"
        "a = b.sample(5, seed=1, batch=2)\n"
        "assert np.array_equal(a, b.sample(5, seed=1, batch=2))\n"
        "s = float(np.abs(a).max())\n"
        "assert np.allclose(a, b.sample(5, seed=1, batch=5), rtol=1e-5, atol=1e-5 * s)\n"
        "assert np.allclose(a[3:], b.sample(2, seed=1, start=3), rtol=1e-5, atol=1e-5 * s)\n"
        "t = b.sample(3, seed=7, truncation=0, noise_mode='const')\n"  # stored noise maps
        "m = b.generate_from_w(b.generator.mean_w()[None].detach())\n"
        "assert np.allclose(t, m, rtol=1e-5, atol=1e-5 * s) and not np.allclose(a[0], a[1])\n"
        "assert np.allclose(t[0], t[2], rtol=1e-5, atol=1e-5 * s)\n"
        "assert not [m for m in sys.modules if m.startswith('galforge.training')]\n"
        "print(a.shape, sorted(b.capabilities))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "(5, 2, 16, 16) ['intermediate', 'latent', 'noise']" in res.stdout


def test_fine_tuning_keeps_frozen_layers_bit_identical(data, run4, tmp_path):
    child = tmp_path / "child"
    assert (
        _train(data, child, 2, "--init", str(run4), "--freeze-g", "3", "--freeze-d", "1", *ADA) == 0
    )
    p = load_file(str(run4 / "checkpoints/latest/state.safetensors"))
    c = load_file(str(child / "checkpoints/latest/state.safetensors"))
    frozen = [
        "module.G.const",
        "module.G.convs.0.weight",
        "module.G.convs.0.affine.weight",
        "module.G.torgbs.0.weight",
        "module.G.convs.2.weight",
        "module.G.torgbs.1.bias",
        "module.D.fromrgb.weight",
        "module.D.blocks.0.conv1.weight",
    ]
    trained = [
        "module.G.convs.3.weight",
        "module.G.mapping_net.fcs.0.weight",
        "module.D.blocks.1.conv0.weight",
        "module.D.out.weight",
    ]
    for k in frozen:
        assert torch.equal(p[k], c[k]), k
    for k in trained:
        assert not torch.equal(p[k], c[k]), k
    info = json.loads((child / "run.json").read_text())
    assert info["parent"]["kind"] == "run"
    # a family without frozen layers says so
    assert (
        main(
            [
                "train",
                data,
                "--model",
                "dcgan64",
                "--out",
                str(tmp_path / "d"),
                "--steps",
                "1",
                "--freeze-g",
                "1",
                "--set=model.width=2",
                "--set=train.progress=false",
                "--set=output.tensorboard=false",
                "--batch",
                "4",
            ]
        )
        == 2
    )


def test_init_from_a_bundle_maps_bands_through_every_torgb(run4, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "xy.npz"
    np.savez(
        data,
        images=rng.gamma(2.0, 5.0, (8, 2, 16, 16)).astype(np.float32),
        bands=np.array(["x", "y"]),
        units=np.array(["counts"]),
    )
    child = tmp_path / "child"
    assert (
        _train(
            str(data),
            child,
            1,
            "--init",
            str(run4 / "bundle"),
            "--band-map",
            "x=r,y=g",
            "--set=model.lr=0",
        )
        == 0
    )
    src = load_file(str(run4 / "bundle" / "generator.safetensors"))
    got = load_file(str(child / "checkpoints/latest/state.safetensors"))
    for k in ("torgbs.0.weight", "torgbs.2.bias"):
        torch.testing.assert_close(got[f"module.G.{k}"], src[k].flip(0))
    torch.testing.assert_close(got["module.G.convs.1.weight"], src["convs.1.weight"])


def test_non_square_model_trains_exports_and_generates(tmp_path):
    rng = np.random.default_rng(2)
    data = tmp_path / "wide.npz"
    np.savez(
        data,
        images=rng.gamma(2.0, 5.0, (8, 2, 16, 32)).astype(np.float32),
        bands=np.array(["g", "r"]),
        units=np.array(["counts"]),
    )
    run = tmp_path / "wide"
    assert _train(str(data), run, 2, "--set=model.image_width=32") == 0
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    assert meta["image_shape"] == [2, 16, 32]
    assert meta["config"]["model"]["image_width"] == 32
    out = tmp_path / "gen"
    assert main(["generate", str(run / "bundle"), "-n", "2", "--out", str(out)]) == 0
    from astropy.io import fits

    assert fits.getdata(out / "galaxy_000000.fits").shape == (2, 16, 32)
    from galforge.generation import load_bundle
    from galforge.projection import interpolation, project, style_mix

    b = load_bundle(run / "bundle")
    assert style_mix(b, [1, 2], [3], "0-1").images.shape == (2, 1, 2, 16, 32)
    assert interpolation(b, [1, 2], frames=3)[1].shape == (3, 2, 16, 32)
    target = fits.getdata(out / "galaxy_000001.fits").astype(np.float32)
    fit = project(b, target, steps=2, wplus=True, noise=True, progress=False)
    assert fit.reconstruction.shape == (2, 16, 32) and np.isfinite(fit.chi2_per_pixel)
    # square data for a wide model: the data are resized to the model's shape on reading
    sq = tmp_path / "square.npz"
    np.savez(
        sq,
        images=rng.gamma(2.0, 5.0, (8, 2, 32, 32)).astype(np.float32),
        bands=np.array(["g", "r"]),
        units=np.array(["counts"]),
    )
    assert _train(str(sq), tmp_path / "sq", 1, "--set=model.image_width=32") == 0
    assert (
        main(
            [
                "train",
                str(sq),
                "--model",
                "stylegan2",
                "--out",
                str(tmp_path / "bad"),
                "--steps",
                "1",
                *CLI_TINY,
                "--set=model.image_width=24",
            ]
        )
        == 2
    )


def test_resume_is_exact_with_the_optional_ada_stages(data, run4, tmp_path):
    stages = [*ADA, "--set=model.ada_pipeline=galaxy+geom+noise"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(data, a, 4, *stages) == 0
    assert _train(data, b, 2, *stages) == 0
    assert _train(data, b, 4, "--resume", *stages) == 0
    sa = load_file(str(a / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (a / "generator.safetensors").read_bytes() == (b / "generator.safetensors").read_bytes()
    # the stages changed what D saw: the run differs from the default pipeline's
    assert (a / "generator.safetensors").read_bytes() != (
        run4 / "generator.safetensors"
    ).read_bytes()
    assert (
        json.loads((a / "run.json").read_text())["config"]["model"]["ada_pipeline"]
        == "galaxy+geom+noise"
    )
    with pytest.raises(ConfigError, match="ada_pipeline"):
        _recipe(ada_pipeline="galaxy+hue")


def test_cuda_options_parse_and_leave_cpu_training_unchanged(data, run4, tmp_path):
    cls = get_recipe("stylegan2")
    s = cls.make_settings({})
    assert (s.amp_res, s.conv_clamp, s.channels_last, s.compile) == (4, 256.0, False, False)
    for bad in ({"amp_res": -1}, {"conv_clamp": 0}):
        with pytest.raises(ConfigError, match="model."):
            _recipe(**bad)
    r = _recipe(channels_last=True, compile=True, amp_res=2)
    r.setup()
    assert r.cuda_options == {"amp_res": 0, "channels_last": False, "compile": False}
    assert r._critic is r.D  # not compiled on the CPU
    # mixed precision per resolution, with a double backward through R1 and path length
    # (bf16 autocast exists on the CPU too; the trainer itself allows AMP on CUDA only)
    r.setup(amp_dtype=torch.bfloat16)
    assert r.cuda_options["amp_res"] == 2 and r.G._mixed[1] == 2
    r.augment.p = 1.0
    out = r.train_step(torch.randn(4, 2, 16, 16), 0, torch.Generator().manual_seed(0))
    assert {"r1", "pl_penalty", "loss_d"} <= set(out) and all(np.isfinite(v) for v in out.values())
    # the options set on a CPU run: the same training, bit for bit
    run = tmp_path / "opts"
    assert (
        _train(
            data,
            run,
            4,
            *ADA,
            "--set=model.channels_last=true",
            "--set=model.compile=true",
            "--set=model.amp_res=2",
        )
        == 0
    )
    assert (run / "generator.safetensors").read_bytes() == (
        run4 / "generator.safetensors"
    ).read_bytes()
