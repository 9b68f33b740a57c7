"""DCGAN networks (Fussell & Moews 2019, appendices A and C) and the DCGAN recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from galforge.errors import ConfigError, ModelError
from galforge.models import build_generator
from galforge.models.dcgan import (
    DCGANDiscriminator,
    DCGANGenerator,
    build_dcgan_pair,
    dcgan_generator_spec,
    n_parameters,
)
from galforge.models.layers import ScheduledDropout
from galforge.training.recipe import StepContext
from galforge.training.recipes import RECIPES, get_recipe


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("bands", [1, 3, 5])
def test_shapes_follow_size_and_bands(size, bands):
    g, d = build_dcgan_pair(size, bands, width=4)
    z = torch.randn(g.latent_shape(3))
    assert z.shape == (3, 100, 1, 1)
    x = g(z)
    assert x.shape == (3, bands, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh head
    logits = d(x)
    assert logits.shape == (3,)
    p = d.probability(x)
    assert p.shape == (3,) and torch.all((p > 0) & (p < 1))
    assert g(torch.randn(2, 100)).shape == (2, bands, size, size)  # flat latent accepted


def _convs(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_appendix_a_layers_at_paper_width():
    g, d = build_dcgan_pair(64, 3)
    gc = _convs(g)
    assert [c.out_channels for c in gc] == [1024, 512, 256, 128, 3]
    assert [c.kernel_size for c in gc] == [(4, 4)] * 5
    assert [c.stride[0] for c in gc] == [1, 2, 2, 2, 2]
    assert [c.padding[0] for c in gc] == [0, 1, 1, 1, 1]
    dc = _convs(d)
    assert [c.out_channels for c in dc] == [128, 256, 512, 1024, 1]
    assert [c.stride[0] for c in dc] == [2, 2, 2, 2, 1]
    assert [c.padding[0] for c in dc] == [1, 1, 1, 1, 0]
    # batch norm on every layer but the first and the last
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 4
    assert isinstance(list(g.net)[-1], nn.Tanh)
    # 12.7 M + 11.0 M parameters for three bands
    assert round(n_parameters(g) / 1e6, 1) == 12.7
    assert round(n_parameters(d) / 1e6, 1) == 11.0


def test_appendix_c_has_one_more_stage_and_dropout():
    cls = get_recipe("dcgan128")
    cfg = cls.default_config()
    assert cfg["image_size"] == 128 and cfg["dropout_until_epoch"] == 200
    r = cls({"width": 4}, channels=3, image_size=128, device="cpu")
    assert len(_convs(r.G)) == 6 and len(_convs(r.D)) == 6
    layers = list(r.D.net)
    assert isinstance(layers[-2], ScheduledDropout)  # just before the last convolution
    assert not any(isinstance(m, ScheduledDropout) for m in r.G.modules())


def test_init_statistics():
    g = DCGANGenerator(64, 3, width=32, init_seed=3)
    w = torch.cat([c.weight.detach().flatten() for c in _convs(g)])
    assert abs(float(w.mean())) < 1e-3
    assert float(w.std()) == pytest.approx(0.02, rel=0.03)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert float(m.bias.detach().abs().max()) == 0.0
    # seeded: the same seed gives the same weights, the global RNG is not touched
    state = torch.get_rng_state()
    g2 = DCGANGenerator(64, 3, width=32, init_seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert all(
        torch.equal(a, b)
        for a, b in zip(g.state_dict().values(), g2.state_dict().values(), strict=True)
    )


def test_dropout_removed_after_scheduled_epoch():
    cls = get_recipe("dcgan128")
    r = cls(
        {"config": "paper", "width": 4, "dropout_until_epoch": 3},
        channels=1,
        image_size=128,
        device="cpu",
    )
    d = r.D.train()
    x = torch.randn(4, 1, 128, 128)

    def features(net):
        torch.manual_seed(0)
        a = net.net[:-1](x)
        torch.manual_seed(1)
        return a, net.net[:-1](x)

    a, b = features(d)
    assert not torch.equal(a, b)  # dropout active: two draws differ
    r.on_epoch_end(2)
    assert r.dropout_active()
    r.on_epoch_end(3)
    assert not r.dropout_active()
    a, b = features(d)
    assert torch.equal(a, b)
    # the off switch is part of the saved state
    d2 = DCGANDiscriminator(128, 1, width=4, dropout=0.5)
    d2.load_state_dict(d.state_dict())
    assert not any(m.is_on for m in d2.modules() if isinstance(m, ScheduledDropout))


def test_generator_rebuilt_from_spec():
    cls = RECIPES["dcgan64"]
    r = cls({"width": 4, "kernel_size": 6}, channels=5, image_size=64, device="cpu", seed=2)
    spec = r.generator_spec()
    g = build_generator("dcgan", spec)
    g.load_state_dict(r.G.state_dict())
    g.eval()
    r.G.eval()
    z = torch.randn(r.G.latent_shape(2))
    assert torch.equal(g(z), r.G(z))
    assert g(z).shape == (2, 5, 64, 64)


def test_options_batch_norm_off_and_bad_values():
    g, d = build_dcgan_pair(64, 3, width=4, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in list(g.modules()) + list(d.modules()))
    with pytest.raises(ModelError, match="kernel_size"):
        build_dcgan_pair(64, 3, width=4, kernel_size=5)
    with pytest.raises(ModelError, match="image size"):
        DCGANGenerator(96, 3, width=4)
    with pytest.raises(ModelError, match="dropout_where"):
        build_dcgan_pair(64, 3, width=4, dropout=0.5, dropout_where="everywhere")
    with pytest.raises(ModelError, match="unknown generator family"):
        build_generator("nosuchfamily", {})
    with pytest.raises(ConfigError, match="image_size"):
        RECIPES["dcgan64"]({"width": 4}, channels=3, image_size=128, device="cpu")


def test_dropout_in_generator_and_spatial():
    g, d = build_dcgan_pair(64, 3, width=4, dropout=0.5, dropout_where="both", spatial_dropout=True)
    assert any(isinstance(m, ScheduledDropout) and m.spatial for m in g.modules())
    assert any(isinstance(m, ScheduledDropout) and m.spatial for m in d.modules())


def test_train_step_updates_both_networks():
    r = RECIPES["dcgan64"]({"width": 4, "label_smoothing": 0.2}, 3, 64, "cpu")
    g0 = [p.clone() for p in r.G.parameters()]
    d0 = [p.clone() for p in r.D.parameters()]
    rng = torch.Generator().manual_seed(0)
    out = r.train_step(torch.rand(4, 3, 64, 64) * 2 - 1, 0, rng)
    assert set(out) >= {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(isinstance(v, float) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, r.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, r.D.parameters(), strict=True))
    opt = r.optimizers()["G"]
    assert opt.param_groups[0]["lr"] == 2e-4 and tuple(opt.param_groups[0]["betas"]) == (0.5, 0.999)


def test_resize_upsampling_generator_and_spec():
    """``upsample="resize"``: no transposed convolution after the first layer; the spec says
    so and rebuilds the same network; the paper's spec keeps the keys galforge 0.1 wrote."""
    r = RECIPES["dcgan64"](
        {"width": 4, "upsample": "resize"}, channels=3, image_size=64, device="cpu", seed=1
    )
    convt = [m for m in r.G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convt) == 1 and convt[0].kernel_size == (4, 4)  # only z -> 4×4
    assert sum(isinstance(m, nn.Upsample) for m in r.G.modules()) == 4
    spec = r.generator_spec()
    assert spec["upsample"] == "resize"
    g = build_generator("dcgan", spec)
    g.load_state_dict(r.G.state_dict())
    g.eval()
    r.G.eval()
    z = torch.randn(r.G.latent_shape(2))
    assert g(z).shape == (2, 3, 64, 64) and torch.equal(g(z), r.G(z))
    paper = RECIPES["dcgan64"]({"config": "paper", "width": 4}, 3, 64, "cpu").generator_spec()
    assert "upsample" not in paper
    with pytest.raises(ModelError, match="upsample"):
        DCGANGenerator(64, 3, width=4, upsample="bicubic")


def test_named_configs_in_the_recipe():
    paper = RECIPES["dcgan64"]({"config": "paper", "width": 4}, 3, 64, "cpu")
    assert paper.G.upsample == "transposed" and paper.default_ema() == 0.0
    cpu = RECIPES["dcgan64"]({"width": 4}, 3, 64, "cpu")
    assert cpu.config["config"] == "cpu" and cpu.G.upsample == "resize"
    assert cpu.default_ema() == 0.999
    with pytest.raises(ConfigError, match="not a configuration"):
        RECIPES["dcgan64"]({"config": "nope"}, 3, 64, "cpu")


# ---------------------------------------------------------------------------- sky noise
def _normalizer(stretch="asinh", seed=0):
    import numpy as np

    from galforge.data.normalize import Normalizer

    rng = np.random.default_rng(seed)
    imgs = rng.normal(0.0, 2.0, (6, 3, 16, 16)).astype("float32")
    imgs[:, :, 6:10, 6:10] += rng.gamma(2.0, 40.0, (6, 3, 1, 1)).astype("float32")
    return Normalizer.fit(imgs, stretch=stretch), imgs


@pytest.mark.parametrize("stretch", ["asinh", "linear"])
def test_sky_noise_works_through_the_data_normaliser(stretch):
    """The layer's stretch and its inverse are the normaliser's own (models cannot import the
    data layer, so it carries its own copy of the maths: they must agree)."""
    nm, imgs = _normalizer(stretch)
    g = DCGANGenerator(64, 3, width=4, upsample="resize", sky_noise=nm.to_dict())
    y = nm.forward(imgs)
    assert torch.allclose(g.sky.to_model(torch.from_numpy(imgs)), torch.from_numpy(y), atol=1e-5)
    back = g.sky.to_physical(torch.from_numpy(y))
    assert torch.allclose(back, torch.from_numpy(nm.inverse(y)), rtol=1e-4, atol=1e-3)


def test_sky_noise_generator_adds_noise_of_its_own_level():
    """Zero noise maps give the noiseless scene; unit maps add σ(z) per band in physical
    units, σ starting at the data's robust noise scale; the spec rebuilds the same model."""
    nm, _ = _normalizer()
    g = DCGANGenerator(64, 3, width=4, upsample="resize", sky_noise=nm.to_dict()).eval()
    assert "noise" in g.CAPABILITIES and g.noise_shapes() == [(64, 64)] * 3
    z = torch.randn(g.latent_shape(5))
    zero = [torch.zeros(1, 1, 64, 64)] * 3
    assert torch.equal(g(z, noise=zero), g.sky.to_model(g.sky.to_physical(g.clean(z))))
    eps = [torch.randn(5, 1, 64, 64) for _ in range(3)]
    clean = g.sky.to_physical(g(z, noise=zero))
    noisy = g.sky.to_physical(g(z, noise=eps))
    sigma = g.sky.sigma(z).detach()
    inside = (noisy > torch.as_tensor(nm.lo).reshape(1, 3, 1, 1)) & (
        noisy < torch.as_tensor(nm.hi).reshape(1, 3, 1, 1)
    )
    expect = clean + sigma[:, :, None, None] * torch.cat(eps, 1)
    assert torch.allclose(noisy[inside], expect[inside], rtol=1e-3, atol=1e-2)
    assert torch.allclose(
        sigma, torch.as_tensor(nm.softening, dtype=torch.float32).expand(5, 3), rtol=0.2
    )
    # eval mode without maps uses the stored ones; training mode draws fresh ones
    assert torch.equal(g(z), g(z, noise=g.const_noise()))
    g.train()
    assert not torch.equal(g(z), g(z))
    g.eval()
    spec = dcgan_generator_spec(
        g, width=4, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    assert spec["sky_noise"]["stretch"] == "asinh"
    g2 = build_generator("dcgan", spec)
    g2.load_state_dict(g.state_dict())
    assert torch.equal(g2.eval()(z), g(z))
    with pytest.raises(ModelError, match="one per band"):
        g(z, noise=zero[:2])
    with pytest.raises(ModelError, match="no noise inputs"):
        DCGANGenerator(64, 3, width=4)(z, noise=zero)
    with pytest.raises(ModelError, match="generator makes 2"):
        DCGANGenerator(64, 2, width=4, sky_noise=nm.to_dict())


def test_scene_blur_band_limits_the_noiseless_scene_only():
    """``scene_blur=σ``: the noiseless scene is the network's output blurred by a unit-sum
    Gaussian of σ pixels in physical units (a point spreads to variance σ², a flat sky stays
    flat); the sky noise is added after it, unblurred; no weights change, the spec carries
    σ, and σ without sky noise or below 0 is refused."""
    nm, _ = _normalizer()
    g0 = DCGANGenerator(64, 3, width=4, upsample="resize", sky_noise=nm.to_dict()).eval()
    g = DCGANGenerator(
        64, 3, width=4, upsample="resize", sky_noise=nm.to_dict(), scene_blur=1.5
    ).eval()
    assert all(
        torch.equal(a, b)
        for a, b in zip(g.state_dict().values(), g0.state_dict().values(), strict=True)
    )
    point = torch.zeros(1, 3, 25, 25)
    point[..., 12, 12] = 1.0
    spread = g.sky.band_limit(point)[0, 0]
    r = torch.arange(25.0) - 12
    assert spread.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (spread.sum(0) * r**2).sum().item() == pytest.approx(1.5**2, rel=0.02)
    assert torch.allclose(
        g.sky.band_limit(torch.full((2, 3, 9, 9), 7.0)), torch.full((2, 3, 9, 9), 7.0)
    )
    z = torch.randn(g.latent_shape(4))
    zero = [torch.zeros(1, 1, 64, 64)] * 3
    raw = g0.clean(z)
    expect = g.sky.to_model(g.sky.band_limit(g.sky.to_physical(raw)))
    assert torch.allclose(g.clean(z), expect, atol=1e-6)
    assert torch.allclose(g(z, noise=zero), g.clean(z), atol=1e-6)
    # the noise is not blurred: noisy minus noiseless is σ(z)·ε in physical units
    eps = [torch.randn(4, 1, 64, 64) for _ in range(3)]
    diff = g.sky.to_physical(g(z, noise=eps)) - g.sky.to_physical(g.clean(z))
    sigma = g.sky.sigma(z).detach()[:, :, None, None]
    ratio = (diff / sigma)[..., 8:-8, 8:-8]
    assert torch.allclose(ratio, torch.cat(eps, 1)[..., 8:-8, 8:-8], atol=0.05)
    spec = dcgan_generator_spec(
        g, width=4, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    assert spec["scene_blur"] == 1.5
    assert "scene_blur" not in dcgan_generator_spec(
        g0, width=4, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    g2 = build_generator("dcgan", spec)
    g2.load_state_dict(g.state_dict())
    assert torch.equal(g2.eval()(z), g(z))
    with pytest.raises(ModelError, match="needs model.sky_noise"):
        DCGANGenerator(64, 3, width=4, scene_blur=1.0)
    with pytest.raises(ModelError, match=">= 0"):
        DCGANGenerator(64, 3, width=4, sky_noise=nm.to_dict(), scene_blur=-1.0)
    with pytest.raises(ConfigError, match="needs model.sky_noise"):
        RECIPES["dcgan64"]({"width": 2, "scene_blur": 1.0, "sky_noise": False}, 3, 64, "cpu")


def test_scene_floor_makes_the_bottom_of_the_range_the_empty_sky():
    """``scene_floor=True``: tanh's −1 is 0 physical units (an empty sky) and +1 the clip
    ``hi``; the noise is added on top in physical units as without it; the weights keep their
    names (bundles without the floor load as before) and the spec says it only when on; the
    cpu config leaves it off unless asked, and without sky noise it is refused."""
    nm, _ = _normalizer()
    g0 = DCGANGenerator(64, 3, width=4, upsample="resize", sky_noise=nm.to_dict()).eval()
    g = DCGANGenerator(
        64, 3, width=4, upsample="resize", sky_noise=nm.to_dict(), scene_floor=True
    ).eval()
    assert g.state_dict().keys() == g0.state_dict().keys()
    ends = g.sky.scene_physical(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 3, 4, 4))
    assert torch.allclose(ends[0], torch.zeros(3, 4, 4), atol=1e-4)
    hi = torch.as_tensor(nm.hi, dtype=torch.float32).reshape(3, 1, 1).expand(3, 4, 4)
    assert torch.allclose(ends[1], hi, rtol=1e-4)
    # without the floor −1 is the clip lo, below the empty sky
    assert (g0.sky.to_physical(torch.full((1, 3, 1, 1), -1.0)).flatten() < 0).all()
    # the noiseless scene and the noisy image agree with the floor's physical scene
    z = torch.randn(g.latent_shape(3))
    raw = g._raw(z)
    zero = [torch.zeros(1, 1, 64, 64)] * 3
    clean = g.sky.to_model(g.sky.scene_physical(raw))
    assert torch.allclose(g.clean(z), clean, atol=1e-6)
    assert torch.allclose(g(z, noise=zero), clean, atol=1e-6)
    eps = [torch.randn(3, 1, 64, 64) for _ in range(3)]
    sigma = g.sky.sigma(z).detach()[:, :, None, None]
    expect = g.sky.to_model(g.sky.scene_physical(raw) + sigma * torch.cat(eps, 1))
    assert torch.allclose(g(z, noise=eps), expect, atol=1e-6)
    spec = dcgan_generator_spec(
        g, width=4, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    assert spec["scene_floor"] is True
    assert "scene_floor" not in dcgan_generator_spec(
        g0, width=4, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    g2 = build_generator("dcgan", spec)
    g2.load_state_dict(g.state_dict())
    assert torch.equal(g2.eval()(z), g(z))
    assert not RECIPES["dcgan64"]({"width": 4}, 3, 64, "cpu").G.sky.floor
    assert RECIPES["dcgan64"]({"width": 4, "scene_floor": True}, 3, 64, "cpu").G.sky.floor
    assert RECIPES["dcgan64"]({"config": "paper", "width": 4}, 3, 64, "cpu").G.sky is None
    with pytest.raises(ModelError, match="needs model.sky_noise"):
        DCGANGenerator(64, 3, width=4, scene_floor=True)
    with pytest.raises(ConfigError, match="needs model.sky_noise"):
        RECIPES["dcgan64"]({"width": 2, "scene_floor": True, "sky_noise": False}, 3, 64, "cpu")


def test_bilinear_upsampling_generator_and_spec():
    """``upsample="bilinear"``: bilinear ×2 then a 3×3 convolution, with the weight names of
    ``resize``; the spec rebuilds it."""
    g = DCGANGenerator(64, 3, width=4, upsample="bilinear").eval()
    ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(m.mode == "bilinear" for m in ups)
    assert (
        g.state_dict().keys()
        == DCGANGenerator(64, 3, width=4, upsample="resize").state_dict().keys()
    )
    spec = dcgan_generator_spec(
        g, width=4, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    g2 = build_generator("dcgan", spec)
    g2.load_state_dict(g.state_dict())
    z = torch.randn(g.latent_shape(2))
    assert torch.equal(g2.eval()(z), g(z))


def test_sky_noise_recipe_trains_in_the_data_units(tmp_path):
    """``model.sky_noise=true``: the recipe builds G on the run's normaliser, the noise level
    learns, and ``generate --noise-mode none`` writes the noiseless galaxies."""
    import numpy as np
    from astropy.io import fits

    from galforge.cli import main

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    imgs = rng.normal(0, 1.0, (8, 3, 64, 64)).astype(np.float32)
    imgs[:, :, 28:36, 28:36] += 30.0
    np.savez(data, images=imgs, bands=np.array(["g", "r", "i"]), units=np.array(["counts"]))
    run = tmp_path / "run"
    tiny = [
        "--set",
        "model.width=2",
        "--set",
        "model.sky_noise=true",
        "--set",
        "train.progress=false",
        "--set",
        "output.tensorboard=false",
        "--set",
        "train.sample_every=1000",
        "--set",
        "train.threads=1",
        "--batch",
        "4",
    ]
    assert (
        main(["train", str(data), "--model", "dcgan64", "--out", str(run), "--steps", "2", *tiny])
        == 0
    )
    r = RECIPES["dcgan64"]({"width": 2, "sky_noise": True}, 3, 64, "cpu")
    assert r.G.sky is not None and r.G.sky.stretch == "linear"  # no data: model space itself
    outs = {}
    for mode in ("random", "none"):
        out = tmp_path / mode
        assert (
            main(
                [
                    "generate",
                    str(run),
                    "-n",
                    "3",
                    "--out",
                    str(out),
                    "--format",
                    "fits",
                    "--noise-mode",
                    mode,
                    "--seed",
                    "4",
                ]
            )
            == 0
        )
        files = sorted(out.glob("*.fits"))
        assert len(files) == 3
        outs[mode] = np.stack([fits.getdata(f) for f in files])
    # the noiseless galaxies are smoother than the noisy ones (pixel-to-pixel differences)
    rough = {m: float(np.abs(np.diff(a, axis=-1)).mean()) for m, a in outs.items()}
    assert rough["none"] < rough["random"]


def test_radial_profile_averages_annuli_about_the_centre():
    from galforge.models.layers import RadialProfile, annulus_edges

    edges = annulus_edges(64)
    assert edges[0] == 0 and edges[-1] > 32 * 2**0.5  # the corners are covered
    assert all(b > a for a, b in zip(edges[:-1], edges[1:], strict=True))
    prof = RadialProfile(64)
    # every pixel belongs to exactly one annulus, and each annulus is a mean
    assert torch.allclose(prof.weights.sum(1), torch.ones(prof.n_annuli))
    assert torch.equal((prof.weights > 0).sum(0), torch.ones(64 * 64, dtype=torch.long))
    c = 31.5
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = torch.exp(-torch.sqrt((yy - c) ** 2 + (xx - c) ** 2) / 6.0)
    x = torch.stack([disk, 2 * disk, torch.ones(64, 64)])[None]  # 1×3×64×64
    p = prof(x)
    assert p.shape == (1, 3, prof.n_annuli)
    assert torch.all(p[0, 0, 1:] < p[0, 0, :-1])  # falls outwards
    assert torch.allclose(p[0, 1], 2 * p[0, 0]) and torch.allclose(
        p[0, 2], torch.ones(prof.n_annuli)
    )
    # the mean of an annulus of pure noise shrinks with its pixel count
    noise = prof(torch.randn(200, 1, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert noise[:, 0, -2].std() < 0.1 < noise[:, 0, 0].std()


def test_discriminator_profile_path_adds_to_the_paper_logit():
    """model.d_profile adds a radial-profile path to D; the convolutions are initialised as
    without it (same seed, same weights), and it trains in the recipe."""
    plain = DCGANDiscriminator(64, 3, width=4, init_seed=3)
    prof = DCGANDiscriminator(64, 3, width=4, init_seed=3, profile=True)
    for (k, a), (k2, b) in zip(
        plain.net.state_dict().items(), prof.net.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(5, 3, 64, 64)
    plain.eval(), prof.eval()
    with torch.no_grad():
        assert torch.allclose(prof(x), plain(x) + prof.profile(x).reshape(5))
    assert plain.profile is None
    recipe = RECIPES["dcgan64"]({"width": 4, "config": "paper", "d_profile": True}, 3, 64, "cpu")
    assert (
        recipe.D.profile is not None
        and RECIPES["dcgan64"]({"width": 4, "config": "paper"}, 3, 64, "cpu").D.profile is None
    )
    # the cpu config has all three of D's side paths on; any of them can be turned off
    cpu = RECIPES["dcgan64"]({"width": 4}, 3, 64, "cpu")
    assert cpu.D.profile is not None and cpu.D.moments is not None and cpu.D.mbstd_group == 4
    off = RECIPES["dcgan64"](
        {"width": 4, "d_profile": False, "d_moments": False, "d_mbstd_group": 0}, 3, 64, "cpu"
    )
    assert off.D.profile is None and off.D.moments is None and off.D.mbstd_group == 0
    before = recipe.D.profile[-1].weight.detach().clone()
    recipe.train_step(torch.rand(4, 3, 64, 64) * 2 - 1, 0, torch.Generator().manual_seed(0))
    assert not torch.equal(before, recipe.D.profile[-1].weight)


def test_sky_noise_stays_finite_for_a_generator_output_far_out_of_range():
    """An unbounded generator output (StyleGAN2 has no tanh) far beyond the model range
    must not overflow sinh: the loss and its gradient stay finite (they were NaN)."""
    from galforge.data.normalize import Normalizer
    from galforge.models.layers import SkyNoise

    rng = np.random.default_rng(0)
    imgs = rng.normal(0.0, 10.0, (16, 3, 16, 16)).astype(np.float32)
    imgs[:, :, 6:10, 6:10] += 500.0
    nm = Normalizer.fit(imgs, stretch="asinh")
    sky = SkyNoise(8, 3, nm.to_dict())
    y = torch.tensor([-60.0, -1.0, 0.0, 0.5, 1.0, 60.0]).reshape(1, 1, 1, 6).repeat(1, 3, 1, 1)
    y.requires_grad_(True)
    out = sky(y, torch.zeros(1, 8), torch.randn(1, 3, 1, 6))
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.isfinite(y.grad).all()
    # inside the model range nothing changes: the round trip is the identity
    inside = torch.linspace(-1, 1, 7).reshape(1, 1, 1, 7).repeat(1, 3, 1, 1)
    assert torch.allclose(sky.to_model(sky.to_physical(inside)), inside, atol=1e-5)


def test_profile_group_spread_tells_alike_batches_apart():
    """model.d_profile_group: the profile path also sees each feature's spread over groups of
    images of the batch, so a batch of identical galaxies differs from a varied one."""
    from galforge.models.dcgan import GroupSpread

    x = torch.arange(12.0).reshape(6, 2)
    out = GroupSpread(3)(x)
    assert out.shape == (6, 4) and torch.equal(out[:, :2], x)
    # groups of 3 take rows i, i+2, i+4: spread of (0, 4, 8) is sqrt(32/3)
    assert torch.allclose(out[:, 2:], torch.full((6, 2), (32 / 3) ** 0.5))
    assert torch.equal(GroupSpread(0)(x), x)
    assert GroupSpread(4)(x).shape == (6, 4)  # largest divisor of 6 up to 4: 3
    same = GroupSpread(4)(torch.ones(8, 5))
    assert same[:, 5:].max() < 1e-3
    d = DCGANDiscriminator(64, 3, width=4, profile=True, profile_group=4)
    assert d(torch.randn(8, 3, 64, 64)).shape == (8,)
    with pytest.raises(ModelError, match="d_profile_group"):
        DCGANDiscriminator(64, 3, width=4, profile_group=4)


def test_minibatch_std_in_the_convolutional_path():
    """model.d_mbstd_group: a minibatch standard deviation map before D's last convolution;
    off by default (the paper's layers untouched)."""
    from galforge.models.dcgan import MinibatchStd

    d = DCGANDiscriminator(64, 3, width=4, mbstd_group=4)
    assert any(isinstance(m, MinibatchStd) for m in d.net)
    assert d.net[-1].in_channels == 8 * 4 + 1
    assert d(torch.randn(8, 3, 64, 64)).shape == (8,)
    assert not any(isinstance(m, MinibatchStd) for m in DCGANDiscriminator(64, 3, width=4).net)
    # a batch of one image repeated has zero spread: the extra map is ~0
    feats = MinibatchStd(4)(torch.ones(8, 2, 4, 4))
    assert feats.shape == (8, 3, 4, 4) and feats[:, 2].abs().max() < 1e-3
    r = RECIPES["dcgan64"]({"width": 4, "d_mbstd_group": 4}, 3, 64, "cpu")
    assert r.train_step(torch.rand(8, 3, 64, 64) * 2 - 1, 0, torch.Generator().manual_seed(0))
    with pytest.raises(ModelError, match="d_mbstd_group"):
        DCGANDiscriminator(64, 3, width=4, mbstd_group=-1)


def test_lazy_r1_penalty_on_real_images():
    """model.r1_gamma: an R1 phase every r1_interval steps that moves only D, by the
    penalty's gradient; off by default; bad values are one-line config errors."""
    real = torch.rand(8, 3, 64, 64) * 2 - 1
    assert [p.name for p in RECIPES["dcgan64"]({"width": 4}, 3, 64, "cpu").phases()] == [
        "adversarial"
    ]
    r = RECIPES["dcgan64"]({"width": 4, "r1_gamma": 1.0, "r1_interval": 2}, 3, 64, "cpu")
    assert [(p.name, p.interval) for p in r.phases()] == [("adversarial", 1), ("d_r1", 2)]
    assert "r1" in r.train_step(real, 0, torch.Generator().manual_seed(0))
    assert "r1" not in r.train_step(real, 1, torch.Generator().manual_seed(1))
    g_before = [p.detach().clone() for p in r.G.parameters()]
    d_before = [p.detach().clone() for p in r.D.parameters()]
    out = r.d_r1(real, StepContext(2, torch.Generator().manual_seed(2), r.phases()[1]))
    assert out["r1"] > 0
    assert all(torch.equal(a, b) for a, b in zip(g_before, r.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, r.D.parameters(), strict=True))
    for bad in ({"r1_gamma": -1.0}, {"r1_interval": 0}):
        with pytest.raises(ConfigError, match="r1_"):
            RECIPES["dcgan64"]({"width": 4, **bad}, 3, 64, "cpu")


def test_shape_moments_measure_size_and_ellipticity():
    """layers.ShapeMoments: a round source has e ≈ 0, one stretched along x has e1 > 0 and
    along the diagonal e2 > 0, a wider one a larger size; a flat sky adds nothing."""
    from galforge.models.layers import ShapeMoments

    c = 31.5
    yy, xx = torch.meshgrid(torch.arange(64.0) - c, torch.arange(64.0) - c, indexing="ij")

    def gauss(sx, sy, angle=0.0):
        ca, sa = np.cos(angle), np.sin(angle)
        u, v = ca * xx + sa * yy, -sa * xx + ca * yy
        return torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))

    m = ShapeMoments(64)
    feats = m(
        torch.stack([gauss(3, 3), gauss(5, 2), gauss(5, 2, np.pi / 4), gauss(6, 6)])[:, None] + 0.3
    )  # + a flat sky
    assert feats.shape == (4, 1, ShapeMoments.N_FEATURES)
    m0, mr, m1, m2, e1, e2, mod, size = feats[:, 0].unbind(-1)
    assert abs(e1[0]) < 1e-4 and abs(e2[0]) < 1e-4 and mod[0] < 1e-3
    assert e1[1] > 0.3 and abs(e2[1]) < 1e-4
    assert e2[2] > 0.3 and abs(e1[2]) < 1e-4
    assert torch.isclose(mod[1], mod[2], rtol=1e-3)
    assert size[3] > size[0] > 0
    # the path in D: its own logit added, the other paths' initial weights unchanged
    plain = DCGANDiscriminator(64, 3, width=4, profile=True)
    both = DCGANDiscriminator(64, 3, width=4, profile=True, moments=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), list(both.state_dict().values()), strict=False)
    )
    assert both(torch.randn(4, 3, 64, 64)).shape == (4,)
    r = RECIPES["dcgan64"]({"width": 4, "d_moments": True}, 3, 64, "cpu")
    assert r.D.moments is not None
    assert r.train_step(torch.rand(8, 3, 64, 64) * 2 - 1, 0, torch.Generator().manual_seed(0))


def test_discriminator_heads_initialise_from_their_own_streams():
    """Each head of D (profile, moments, the projection embed) draws its initial weights from
    a stream of its own name: building, dropping or reordering the others changes nothing of
    it, the trunk is the paper's network as it is without heads, the global generator is left
    alone, and the weights keep the names checkpoints have."""
    everything = dict(profile=True, moments=True, conditions=2, mbstd_group=4)
    full = DCGANDiscriminator(64, 3, width=4, init_seed=7, **everything)
    assert list(full.heads()) == ["embed", "profile", "moments"]
    alone = {
        "profile": DCGANDiscriminator(64, 3, width=4, init_seed=7, profile=True),
        "moments": DCGANDiscriminator(64, 3, width=4, init_seed=7, moments=True),
        "embed": DCGANDiscriminator(64, 3, width=4, init_seed=7, conditions=2, mbstd_group=4),
    }
    for name, d in alone.items():
        assert list(d.heads()) == [name]
        own, other = d.heads()[name].state_dict(), full.heads()[name].state_dict()
        assert own.keys() == other.keys() and all(torch.equal(own[k], other[k]) for k in own)
    # the trunk and logit are the paper's network, drawn from init_seed alone
    paper = DCGANDiscriminator(64, 3, width=4, init_seed=7, mbstd_group=4)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            paper.net.state_dict().values(), full.net.state_dict().values(), strict=True
        )
    )
    # another seed, other heads; the heads differ from one another's streams
    seed8 = DCGANDiscriminator(64, 3, width=4, init_seed=8, profile=True)
    assert not torch.equal(seed8.profile[2].weight, alone["profile"].profile[2].weight)
    # building a discriminator never moves torch's global generator
    state = torch.get_rng_state()
    DCGANDiscriminator(64, 3, width=4, init_seed=7, **everything)
    assert torch.equal(state, torch.get_rng_state())
    # the checkpoint names of the heads (0.1 runs resume and --init into these)
    heads = {k for k in full.state_dict() if not k.startswith("net.")}
    assert heads == {
        "embed.weight",
        *(
            f"{h}.{i}.{p}"
            for h in ("profile", "moments")
            for i in (2, 4)
            for p in ("weight", "bias")
        ),
    }
    # the logit is the trunk's plus each head's
    x, c = torch.randn(4, 3, 64, 64), torch.randn(4, 2)
    full.eval()
    with torch.no_grad():
        h = full.features(x)
        parts = full.net[-1](h).reshape(4) + full.embed.score(h, c) + full.profile(x)
        assert torch.allclose(full(x, c), parts + full.moments(x), atol=1e-6)
    with pytest.raises(ModelError, match="conditioned"):
        full(x)
