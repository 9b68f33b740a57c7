"""StackGAN stage II: the network, its loss, paired data, the chained bundle and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import galforge
from galforge.cli import main
from galforge.cli.train_cmd import resolve_train_config
from galforge.data.normalize import Normalizer
from galforge.data.transforms import resize
from galforge.models.dcgan import n_parameters
from galforge.models.stackgan import ChainedStackGAN, StackGANStage2Generator, build_stage2_pair
from galforge.training.pipeline import PairedBatches, prepare_data
from galforge.training.recipes import get_recipe
from galforge.training.recipes.stackgan import band_pixel_loss, band_sum_pixel_loss

SMALL = [
    "--set",
    "model.width=4",
    "--set",
    "model.up_width=4",
    "--set",
    "model.d_width=2",
    "--set",
    "model.n_res=1",
]
QUIET = [
    "--set",
    "train.progress=false",
    "--set",
    "output.tensorboard=false",
    "--set",
    "train.n_samples=2",
    "--set",
    "train.log_every=1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """128 px data of two bands, a tiny dcgan64 stage I on them, a stage II after it."""
    root = tmp_path_factory.mktemp("stackgan")
    rng = np.random.default_rng(0)
    data = root / "stamps128.npy"
    np.save(data, rng.gamma(2.0, 5.0, (8, 2, 128, 128)).astype(np.float32))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            main(
                [
                    "train",
                    str(data),
                    "--model",
                    "dcgan64",
                    "--out",
                    str(root / "s1"),
                    "--steps",
                    "1",
                    "--batch",
                    "4",
                    "--set",
                    "data.resize=64",
                    "--set",
                    "model.width=2",
                    *QUIET,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "train",
                    str(data),
                    "--model",
                    "stackgan2",
                    "--stage1",
                    str(root / "s1"),
                    "--out",
                    str(root / "s2"),
                    "--steps",
                    "2",
                    "--batch",
                    "4",
                    "--seed",
                    "1",
                    *SMALL,
                    *QUIET,
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(n)
    return root


def test_stage2_generator_shapes_and_paper_parameter_count():
    g, d = build_stage2_pair(3)  # paper widths: W = 128, U = 512, six residual blocks
    # 6 272 (4×4 bottleneck conv) + 6 × 295 424 (residual blocks) + 147 712 (conv + BN)
    # + 590 848 (128 -> 512 + BN) + 13 827 (512 -> 3)
    assert n_parameters(g) == 2_531_203
    g, d = build_stage2_pair(5, width=8, up_width=12, n_res=2, d_width=4)
    seen = {}
    g.encode.register_forward_hook(lambda m, i, o: seen.update(bottleneck=tuple(o.shape)))
    x = torch.rand(3, 5, 64, 64)
    y = g(x)
    assert seen["bottleneck"] == (3, 8, 32, 32)  # the deliberate 32×32 bottleneck
    assert y.shape == (3, 5, 128, 128) and y.abs().max() <= 1.0
    assert d(y).shape == (3,)
    _, dc = build_stage2_pair(5, width=8, up_width=12, d_width=4, conditional_d=True)
    assert dc(y, x).shape == (3,)
    with pytest.raises(galforge.errors.ModelError):
        g(torch.rand(1, 5, 32, 32))


def test_band_sum_pixel_loss_matches_a_hand_computation():
    real = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # 1 image, 2 bands, 1×2 pixels
    fake = torch.tensor([[[[0.5, 2.0]], [[1.0, -1.0]]]])
    # band sums: real (4, 6), fake (1.5, 1): squared differences 6.25 and 25, mean 15.625
    assert band_sum_pixel_loss(real, fake).item() == pytest.approx(15.625)
    # a swap of flux between bands at the same pixel costs nothing
    assert band_sum_pixel_loss(real, real.flip(1)).item() == 0.0
    # per band: (0.25 + 4) and (0 + 25) summed over bands, mean over pixels 14.625; a band
    # swap now costs (2² + 2²) per pixel
    assert band_pixel_loss(real, fake).item() == pytest.approx(14.625)
    assert band_pixel_loss(real, real.flip(1)).item() == pytest.approx(8.0)


def test_pixel_loss_option_is_checked_and_the_cpu_config_keeps_colours():
    from galforge.errors import ConfigError
    from galforge.training.recipes import RECIPES
    from galforge.training.recipes.stackgan import StackGAN2Settings

    with pytest.raises(ConfigError, match="pixel_loss"):
        StackGAN2Settings(pixel_loss="l1")
    cfg = RECIPES["stackgan2"].config_overrides()
    assert cfg["cpu"]["pixel_loss"] == "bands"
    assert cfg["paper"].get("pixel_loss", StackGAN2Settings().pixel_loss) == "band_sum"


def test_paired_batches_flip_and_turn_both_sizes_alike():
    rng = np.random.default_rng(1)
    low = torch.from_numpy(rng.normal(size=(6, 2, 64, 64)).astype(np.float32))
    high = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 2×2 blocks
    source = PairedBatches({64: low, 128: high}, batch_size=3, seed=4)
    changed = False
    for step in range(6):
        b = source.batch(step)
        assert b[64].shape == (3, 2, 64, 64) and b[128].shape == (3, 2, 128, 128)
        # the same images with the same flips and quarter turns at both sizes
        torch.testing.assert_close(b[128][..., ::2, ::2], b[64], rtol=0, atol=0)
        idx = source._sources[64].indices(step)
        changed |= not torch.equal(b[64], low[idx])
    assert changed  # the augmentation did something


def test_training_pairs_nearest_downscaled_with_stage1_normaliser(runs, tmp_path):
    data = runs / "stamps128.npy"
    cfg = resolve_train_config(
        str(data), model="stackgan2", out=str(tmp_path / "x"), steps=1, stage1=str(runs / "s1")
    )
    recipe = get_recipe("stackgan2")
    settings = recipe.make_settings(dict(cfg.model.params))
    prepared = prepare_data(cfg, recipe.data_need(settings), (-1.0, 1.0))
    phys = np.load(data)
    n2 = prepared.normalizer
    n1 = Normalizer.from_dict(json.loads((runs / "s1" / "run.json").read_text())["normalizer"])
    np.testing.assert_allclose(prepared.data[128], n2.forward(phys), atol=1e-6)
    np.testing.assert_allclose(
        prepared.data[64], n1.forward(resize(phys, 64, "nearest")), atol=1e-6
    )
    assert n1 != n2


def test_chained_bundle_loads_without_training_code_and_is_deterministic(runs):
    bundle = runs / "s2" / "bundle"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["family"] == "stackgan2" and sorted(meta["parts"]) == ["stage1", "stage2"]
    assert meta["parts"]["stage1"]["family"] == "dcgan"
    assert meta["image_shape"] == [2, 128, 128]
    code = (
        "import sys, numpy as np, galforge\n"
        f"b = galforge.load({str(bundle)!r})\n"
        "x = b.sample(3, seed=7)\n"
        "y = b.sample(2, seed=7, start=1, batch=1)\n"
        "assert x.shape == (3, 2, 128, 128) and np.isfinite(x).all()\n"
        "assert np.array_equal(x, b.sample(3, seed=7))\n"
        "assert np.allclose(x[1:], y, rtol=1e-4, atol=1e-4 * np.abs(x).max())\n"
        "assert not [m for m in sys.modules if m.startswith('galforge.training')], 'training'\n"
        "np.save(sys.argv[1], x)\n"
    )
    out = runs / "chained.npy"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(galforge.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=300)
    b = galforge.load(bundle)
    x = np.load(out)
    np.testing.assert_array_equal(x, b.sample(3, seed=7))
    # the chain is z -> stage I -> [0, 1] -> stage II -> the run's (128 px) normaliser
    assert isinstance(b.generator, ChainedStackGAN)
    assert isinstance(b.parts["stage2"], StackGANStage2Generator)
    z = b.latent(3, seed=7)
    # stage I (a cpu-config DCGAN) has sky noise: the chain passes its per-sample maps on
    assert "noise" in b.capabilities
    noise = b.noise(3, seed=7)
    with torch.no_grad():
        low = b.parts["stage1"](z, noise=noise)
        manual = b.parts["stage2"]((low + 1) / 2).clamp(-1, 1)
    n2 = Normalizer.from_dict(json.loads((runs / "s2" / "run.json").read_text())["normalizer"])
    np.testing.assert_allclose(x, n2.inverse(manual.numpy()), rtol=1e-5, atol=1e-5)


def test_generate_stage1_writes_the_64px_intermediate_in_physical_units(runs, tmp_path):
    assert (
        main(
            [
                "generate",
                str(runs / "s2"),
                "-n",
                "3",
                "--seed",
                "5",
                "--format",
                "npy",
                "--out",
                str(tmp_path / "st1"),
                "--stage",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "generate",
                str(runs / "s2"),
                "-n",
                "3",
                "--seed",
                "5",
                "--format",
                "npy",
                "--out",
                str(tmp_path / "st2"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "generate",
                str(runs / "s1"),
                "-n",
                "3",
                "--seed",
                "5",
                "--format",
                "npy",
                "--out",
                str(tmp_path / "dc"),
                "--no-progress",
            ]
        )
        == 0
    )
    st1 = np.load(tmp_path / "st1" / "samples.npy")
    st2 = np.load(tmp_path / "st2" / "samples.npy")
    assert st1.shape == (3, 2, 64, 64) and st2.shape == (3, 2, 128, 128)
    # the intermediate is stage I's own galaxy for the same seed, in stage I's units
    np.testing.assert_allclose(st1, np.load(tmp_path / "dc" / "samples.npy"), rtol=1e-6)
    assert (
        main(
            [
                "generate",
                str(runs / "s2"),
                "-n",
                "1",
                "--stage",
                "3",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "generate",
                str(runs / "s1"),
                "-n",
                "1",
                "--stage",
                "1",
                "--out",
                str(tmp_path / "bad2"),
            ]
        )
        == 2
    )


def test_resume_is_bit_identical(runs, tmp_path):
    data, s1 = str(runs / "stamps128.npy"), str(runs / "s1")
    common = [
        "--model",
        "stackgan2",
        "--stage1",
        s1,
        "--batch",
        "4",
        "--seed",
        "2",
        "--set",
        "model.lr_decay_epochs=1",
        *SMALL,
        *QUIET,
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", data, "--out", str(a), "--steps", "4", *common]) == 0
    assert main(["train", data, "--out", str(b), "--steps", "3", *common]) == 0
    assert main(["train", data, "--out", str(b), "--steps", "4", "--resume", *common]) == 0
    for part in ("stage1.safetensors", "stage2.safetensors"):
        assert (a / part).read_bytes() == (b / part).read_bytes()
    sa = load_file(str(a / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    log = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss_pixel" in r]
    # 8 images in batches of 4: two steps an epoch, lr halved after every epoch (a log line
    # shows the rates after its step, so after the epoch's end on steps 2 and 4)
    assert [r["lr_G"] for r in steps] == pytest.approx([2e-4, 1e-4, 1e-4, 5e-5])
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_g"]) for r in steps] == [
        (r["step"], r["loss_g"]) for r in lb if "loss_pixel" in r
    ]
    # stage I is frozen: its weights are the stage-I run's
    s1w = load_file(str(runs / "s1" / "generator.safetensors"))
    s1a = load_file(str(a / "stage1.safetensors"))
    assert s1w.keys() == s1a.keys() and all(torch.equal(s1w[k], s1a[k]) for k in s1w)


def test_stage1_must_be_a_dcgan64_model(runs, tmp_path):
    data = str(runs / "stamps128.npy")
    base = ["train", data, "--model", "stackgan2", "--steps", "1", *SMALL, *QUIET]
    assert main([*base, "--out", str(tmp_path / "none")]) == 2  # no --stage1
    assert main([*base, "--stage1", str(runs / "s2"), "--out", str(tmp_path / "x")]) == 2
    assert main([*base, "--stage1", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    assert (
        main(
            [
                "train",
                data,
                "--model",
                "dcgan64",
                "--stage1",
                str(runs / "s1"),
                "--out",
                str(tmp_path / "z"),
                "--steps",
                "1",
            ]
        )
        == 2
    )
    # pairs are never made from images smaller than 128 px, nor from other bands than stage I's
    small = tmp_path / "stamps64.npy"
    np.save(small, np.load(data)[:, :, ::2, ::2])
    assert (
        main(
            [
                "train",
                str(small),
                *base[2:],
                "--stage1",
                str(runs / "s1"),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                *base,
                "--stage1",
                str(runs / "s1"),
                "--out",
                str(tmp_path / "b"),
                "--set",
                "data.options.bands=[g,r]",
            ]
        )
        == 2
    )
    assert not (tmp_path / "s").exists() and not (tmp_path / "b" / "run.json").exists()
    # a bundle (its folder or its bundle.json) is as good as the run
    assert (
        main(
            [
                *base,
                "--stage1",
                str(runs / "s1" / "bundle" / "bundle.json"),
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    info = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert (
        info["hyperparameters"]["stage1_normalizer"]
        == json.loads((runs / "s1" / "bundle" / "bundle.json").read_text())["normalizer"]
    )


def test_conditional_discriminator_option_trains_on_the_pair(runs):
    recipe = get_recipe("stackgan2")(
        {
            "stage1": str(runs / "s1"),
            "conditional_d": True,
            "width": 4,
            "up_width": 4,
            "d_width": 2,
            "n_res": 1,
        },
        channels=2,
        image_size=128,
        device="cpu",
    )
    first = next(m for m in recipe.D.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 4  # the 128 px image and the upsampled 64 px input
    g = torch.Generator().manual_seed(0)
    batch = {
        64: torch.rand(3, 2, 64, 64, generator=g) * 2 - 1,
        128: torch.rand(3, 2, 128, 128, generator=g) * 2 - 1,
    }
    before = [p.clone() for p in recipe.G.stage2.parameters()]
    out = recipe.train_step(batch, 0, g)
    assert {"loss_d", "loss_g", "loss_adv", "loss_pixel"} <= set(out)
    assert all(np.isfinite(v) for v in out.values())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, recipe.G.stage2.parameters(), strict=True)
    )
    assert recipe.G.stage1.training is False and all(
        not p.requires_grad for p in recipe.G.stage1.parameters()
    )


def _normalizer128(bands=3):
    rng = np.random.default_rng(0)
    imgs = rng.normal(0.0, 2.0, (6, bands, 32, 32)).astype("float32")
    imgs[:, :, 12:20, 12:20] += rng.gamma(2.0, 40.0, (6, bands, 1, 1)).astype("float32")
    return Normalizer.fit(imgs, stretch="asinh")


def test_stage2_sky_noise_draws_the_scene_and_noise_in_physical_units():
    """``sky_noise``: zero maps give the noiseless scene (its range from the empty sky up);
    unit maps add σ per band in physical units, σ starting at the data's noise scale and read
    from the 64 px input; the paper layers keep their names and initial weights; the spec
    rebuilds the same network and says the options only when on; the chain takes stage I's
    noise maps, then stage II's."""
    from galforge.models import build_generator
    from galforge.models.dcgan import DCGANGenerator

    nm = _normalizer128()
    paper = StackGANStage2Generator(3, 8, 8, 1, init_seed=4)
    g = StackGANStage2Generator(
        3, 8, 8, 1, init_seed=4, upsample="bilinear", sky_noise=nm.to_dict()
    ).eval()
    assert set(paper.state_dict()) < set(g.state_dict())
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in paper.state_dict().items())
    assert paper.spec() == {"channels": 3, "width": 8, "up_width": 8, "n_res": 1}
    assert "noise" in g.CAPABILITIES and g.noise_shapes() == [(128, 128)] * 3
    low = torch.rand(4, 3, 64, 64)
    zero = [torch.zeros(1, 1, 128, 128)] * 3
    clean = g(low, noise=zero)
    assert torch.allclose(clean, g.clean(low), atol=1e-6)
    assert torch.equal(g(low), g(low, noise=g.const_noise()))  # eval: the stored maps
    ends = g.sky.scene_physical(torch.tensor([-1.0]).reshape(1, 1, 1, 1).expand(1, 3, 2, 2))
    assert torch.allclose(ends, torch.zeros(1, 3, 2, 2), atol=1e-4)
    eps = [torch.randn(4, 1, 128, 128) for _ in range(3)]
    phys_clean = g.sky.to_physical(clean)
    phys_noisy = g.sky.to_physical(g(low, noise=eps))
    sigma = g.noise_sigma(low).detach()
    assert sigma.shape == (4, 3)
    assert torch.allclose(sigma, torch.as_tensor(nm.softening).float().expand(4, 3), rtol=0.2)
    lo = torch.as_tensor(nm.lo).reshape(1, 3, 1, 1)
    hi = torch.as_tensor(nm.hi).reshape(1, 3, 1, 1)
    inside = (phys_noisy > lo) & (phys_noisy < hi) & (phys_clean > lo)
    expect = phys_clean + sigma[:, :, None, None] * torch.cat(eps, 1)
    assert torch.allclose(phys_noisy[inside], expect[inside], rtol=1e-3, atol=1e-2)
    spec = g.spec()
    assert spec["upsample"] == "bilinear" and spec["sky_noise"]["stretch"] == "asinh"
    g2 = build_generator("stackgan2_stage2", spec)
    g2.load_state_dict(g.state_dict())
    assert torch.equal(g2.eval()(low), g(low))
    # the chain: stage I's maps (64 px) then stage II's (128 px)
    s1 = DCGANGenerator(64, 3, width=2, upsample="resize", sky_noise=nm.to_dict()).eval()
    chain = ChainedStackGAN(s1, g).eval()
    assert chain.noise_shapes() == [(64, 64)] * 3 + [(128, 128)] * 3
    z = torch.randn(s1.latent_shape(2))
    zeros = [torch.zeros(1, 1, *s) for s in chain.noise_shapes()]
    expect = g.clean(torch.clamp((s1(z, noise=zeros[:3]) + 1) / 2, 0, 1))
    assert torch.allclose(chain(z, noise=zeros), expect, atol=1e-6)
    assert "noise" in ChainedStackGAN(DCGANGenerator(64, 3, width=2).eval(), g).CAPABILITIES
    with pytest.raises(galforge.errors.ModelError, match="maps"):
        chain(z, noise=zeros[:3])
    with pytest.raises(galforge.errors.ModelError, match="upsample"):
        StackGANStage2Generator(3, 8, 8, 1, upsample="bicubic")


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_stage2_upsampling_leaves_no_pattern_on_a_constant_input(upsample):
    """A constant 64 px input gives a constant 128 px scene away from the borders, band by
    band: the upsampling path adds no pixel-scale pattern of its own."""
    g = StackGANStage2Generator(3, 8, 8, 1, init_seed=0, upsample=upsample).eval()
    with torch.no_grad():
        out = g(torch.full((2, 3, 64, 64), 0.3))[..., 24:-24, 24:-24]
    spread = out.amax(dim=(-2, -1)) - out.amin(dim=(-2, -1))
    assert float(spread.max()) < 1e-6


def test_stage2_pixel_loss_on_the_noiseless_scene_pooled():
    """With sky noise the pixel loss compares the noiseless scene with the noisy target,
    both averaged over p×p pixels in physical units, then stretched: noise that averages to
    zero over each block costs nothing (the detail finer than the blocks is D's to judge), a
    scene off by a smooth amount does, and unpooled the noise costs too."""
    from galforge.training.recipes import RECIPES

    nm = _normalizer128()
    r = RECIPES["stackgan2"].__new__(RECIPES["stackgan2"])
    r.settings = type("S", (), {"pixel_pool": 2, "pixel_loss": "bands"})()
    r.G = ChainedStackGAN.__new__(ChainedStackGAN)
    torch.nn.Module.__init__(r.G)
    r.G.stage2 = StackGANStage2Generator(3, 4, 4, 0, sky_noise=nm.to_dict())
    sky = r.G.stage2.sky
    scene = torch.full((1, 3, 128, 128), 5.0)
    checker = (torch.arange(128)[:, None] + torch.arange(128)[None, :]) % 2 * 2.0 - 1.0
    real = sky.to_model(scene + 0.5 * checker)  # zero-mean noise on every 2×2 block
    assert r._pixel_loss(real, None, scene).item() == pytest.approx(0.0, abs=1e-8)
    assert r._pixel_loss(real, None, scene + 1.0).item() > 1e-4
    r.settings.pixel_pool = 1
    assert r._pixel_loss(real, None, scene).item() > 0.0


def test_stage2_cpu_options_train_and_resume_exactly(runs, tmp_path):
    """The cpu options (bilinear upsampling, sky noise, pooled pixel loss) on tiny widths:
    training learns the noise level and resumes bit for bit; the bundle makes noiseless
    galaxies with ``noise_mode="none"`` and the learned noise in physical units otherwise."""
    data, s1 = str(runs / "stamps128.npy"), str(runs / "s1")
    opts = [
        "--set",
        "model.upsample=bilinear",
        "--set",
        "model.sky_noise=true",
        "--set",
        "model.pixel_pool=2",
    ]
    common = ["--model", "stackgan2", "--stage1", s1, "--batch", "4", "--seed", "2"]
    common += [*SMALL, *QUIET, *opts]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", data, "--out", str(a), "--steps", "4", *common]) == 0
    assert main(["train", data, "--out", str(b), "--steps", "3", *common]) == 0
    assert main(["train", data, "--out", str(b), "--steps", "4", "--resume", *common]) == 0
    for part in ("stage1.safetensors", "stage2.safetensors"):
        assert (a / part).read_bytes() == (b / part).read_bytes()
    w = load_file(str(a / "stage2.safetensors"))
    assert "noise_const" in w and any(k.startswith("sky.level") for k in w)
    bundle = galforge.load(a)
    assert "noise" in bundle.capabilities
    text = (a / "bundle" / "bundle.json").read_text()
    assert '"upsample": "bilinear"' in text and '"sky_noise"' in text
    clean = bundle.sample(3, seed=1, noise_mode="none")
    noisy = bundle.sample(3, seed=1)
    assert clean.shape == noisy.shape == (3, 2, 128, 128)
    assert np.isfinite(noisy).all() and not np.allclose(clean, noisy)
