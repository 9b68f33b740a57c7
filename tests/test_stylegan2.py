"""The StyleGAN2 networks: shapes, modulation, equalised learning rate, FIR filters, w."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from galforge.errors import ModelError
from galforge.models.capabilities import capabilities
from galforge.models.registry import build_generator
from galforge.models.stylegan2 import (
    EqualConv2d,
    EqualLinear,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    build_stylegan2_pair,
    downsample2d,
    fir_filter,
    minibatch_stddev,
    modulated_conv2d,
    upfirdn2d,
    upsample2d,
)

TINY = {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 128, "channel_max": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("bands", [1, 3, 5])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_for_bands_and_sizes(bands, size):
    g, d = build_stylegan2_pair(size, bands, **TINY)
    z = torch.randn(3, 8)
    img = g(z)
    assert img.shape == (3, bands, size, size) and torch.isfinite(img).all()
    assert d(img).shape == (3,)
    assert g.num_ws == 2 * int(math.log2(size)) - 2
    assert capabilities(g) == {"latent", "intermediate", "noise"}


def test_256_shape_and_bad_sizes():
    g = StyleGAN2Generator(256, 2, **{**TINY, "channel_base": 256, "channel_max": 4})
    assert g.eval()(torch.randn(1, 8)).shape == (1, 2, 256, 256)
    for bad in (8, 48, 2048):
        with pytest.raises(ModelError, match="power of 2"):
            StyleGAN2Generator(bad, 1, **TINY)


def test_modulated_convolution_equals_a_convolution_per_sample():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    fir = fir_filter()
    for demod in (True, False):
        for up in (1, 2):
            got = modulated_conv2d(x, weight, styles, demodulate=demod, up=up, fir=fir)
            for i in range(3):
                w = weight * styles[i][None, :, None, None]
                if demod:
                    w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
                if up == 1:
                    ref = F.conv2d(x[i : i + 1], w, padding=1)
                else:  # transposed stride-2 convolution of the sample's own weights, then FIR
                    ref = F.conv_transpose2d(x[i : i + 1], w.transpose(0, 1), stride=2)
                    ref = upfirdn2d(ref, fir, pad=(1, 1, 1, 1), gain=4)
                assert ref.shape[-1] == 6 * up
                torch.testing.assert_close(got[i : i + 1], ref, rtol=1e-5, atol=1e-5)
    # demodulation gives unit-variance outputs for unit-variance inputs
    x = torch.randn(8, 64, 16, 16)
    out = modulated_conv2d(x, torch.randn(32, 64, 3, 3), torch.rand(8, 64) + 0.5)
    assert abs(out[..., 1:-1, 1:-1].std().item() - 1.0) < 0.05


def test_equalised_learning_rate_by_hand():
    torch.manual_seed(0)
    fc = EqualLinear(4, 2, bias_init=1.0, lr_mul=0.01)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[100.0, 0, 0, 0], [0, 200.0, 0, -100.0]]))
        fc.bias.copy_(torch.tensor([100.0, 0.0]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # effective weight = stored × 0.01 / sqrt(4); effective bias = stored × 0.01
    torch.testing.assert_close(fc(x), torch.tensor([[0.5 + 1.0, 2.0 - 2.0]]))
    big = EqualLinear(512, 512, lr_mul=0.01)  # stored ~ N(0, 1/lr_mul²): large steps of Adam
    assert abs(big.weight.std().item() - 100.0) < 2.0
    conv = EqualConv2d(2, 1, 3, activation=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.ones(1, 2, 5, 5)
    # 18 taps of weight 1 / sqrt(2 · 9) at an interior pixel
    assert conv(x)[0, 0, 2, 2].item() == pytest.approx(18 / math.sqrt(18))
    act = EqualConv2d(1, 1, 1)
    with torch.no_grad():
        act.weight.fill_(1.0)
    y = act(torch.tensor([[[[2.0, -2.0]]]]))  # leaky ReLU(0.2) × sqrt(2)
    torch.testing.assert_close(y, torch.tensor([[[[2 * math.sqrt(2), -0.4 * math.sqrt(2)]]]]))


def test_fir_filters_by_hand():
    f = fir_filter()
    assert f.shape == (4, 4) and f.sum().item() == pytest.approx(1.0)
    assert f[0, 0].item() == pytest.approx(1 / 64) and f[1, 1].item() == pytest.approx(9 / 64)
    assert f[0, 1].item() == pytest.approx(3 / 64)
    # ×2 of a 2×2 block of ones: per axis [0.75, 1, 1, 0.75] (zero outside the image)
    up = upsample2d(torch.ones(1, 1, 2, 2), f)[0, 0]
    a = torch.tensor([0.75, 1.0, 1.0, 0.75])
    torch.testing.assert_close(up, torch.outer(a, a))
    # ÷2 of a 4×4 block of ones: each output sees taps 3+3+1 of 8 per axis
    down = downsample2d(torch.ones(1, 1, 4, 4), f)[0, 0]
    torch.testing.assert_close(down, torch.full((2, 2), 49 / 64))
    # an impulse comes out as the filter
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1
    torch.testing.assert_close(upfirdn2d(x, f, pad=(1, 2, 1, 2))[0, 0, :4, :4], f)


def test_downsampling_convolution_halves_the_size():
    conv = EqualConv2d(3, 4, 3, down=2)
    skip = EqualConv2d(3, 4, 1, bias=False, activation=False, down=2)
    x = torch.randn(2, 3, 16, 16)
    assert conv(x).shape == skip(x).shape == (2, 4, 8, 8)


def test_mapping_tracks_w_avg_only_in_training():
    g = StyleGAN2Generator(16, 1, **TINY)
    z = torch.randn(6, 8)
    g.train()
    w = g.mapping(z)
    torch.testing.assert_close(g.mean_w(), w.detach().mean(0) * (1 - 0.995))
    before = g.mean_w().clone()
    g.eval()
    g.mapping(z)
    assert torch.equal(g.mean_w(), before)


def test_evaluation_is_deterministic_and_per_sample():
    g = StyleGAN2Generator(16, 2, **TINY).eval()
    with torch.no_grad():
        g.convs[0].noise_strength.fill_(0.5)
        z = torch.randn(4, 8)
        a = g(z)
        torch.testing.assert_close(g(z[2:]), a[2:])
        assert torch.equal(g(z), a)
        g.train()
        assert not torch.equal(g(z), a)  # training draws fresh noise
        # per-layer ws: the same w everywhere is the plain synthesis
        g.eval()
        w = g.mapping(z)
        torch.testing.assert_close(g.synthesis(w[:, None].repeat(1, g.num_ws, 1)), a)


def test_minibatch_stddev_by_hand():
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([0.0, 2.0, 0.0, 2.0])  # std 1 in channel 0, 0 in channel 1
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (4, 3, 1, 1)
    torch.testing.assert_close(
        out[:, 2, 0, 0], torch.full((4,), (1 + 1e-8) ** 0.5 / 2 + (1e-8) ** 0.5 / 2)
    )
    assert minibatch_stddev(torch.randn(6, 2, 4, 4), 4).shape == (6, 3, 4, 4)  # group 3


def test_freezing_and_spec_round_trip():
    g, d = build_stylegan2_pair(32, 3, **TINY)
    assert len(g.synthesis_layers()) == 7
    frozen = g.freeze(2)
    assert g.const in frozen and not g.const.requires_grad
    assert not any(p.requires_grad for p in g.convs[1].parameters())
    assert all(p.requires_grad for p in g.convs[2].parameters())
    d.freeze(1)
    assert not d.fromrgb.weight.requires_grad and not d.blocks[0].conv0.weight.requires_grad
    assert d.blocks[1].conv0.weight.requires_grad
    with pytest.raises(ModelError, match="--freeze-g 9"):
        g.freeze(9)
    with pytest.raises(ModelError, match="--freeze-d 4"):
        StyleGAN2Discriminator(32, 3, 128, 8).freeze(4)
    again = build_generator("stylegan2", g.spec())
    assert again.spec() == g.spec()
    with pytest.raises(ModelError, match="unknown keys"):
        build_generator("stylegan2", {**g.spec(), "tanh": True})


@pytest.mark.parametrize("hw", [(16, 32), (64, 16)])
def test_non_square_generator_and_discriminator(hw):
    h, w = hw
    g, d = build_stylegan2_pair(h, 2, image_width=w, **TINY)
    ah, aw = (1, 2) if w > h else (4, 1)
    assert g.const.shape[1:] == (4 * ah, 4 * aw)  # the constant's aspect
    img = g(torch.randn(3, 8))
    assert img.shape == (3, 2, h, w) and torch.isfinite(img).all()
    assert d(img).shape == (3,)
    assert d.fc.weight.shape[1] == d.conv.weight.shape[0] * 16 * ah * aw  # sized epilogue
    assert g.noise_shapes()[0] == (4 * ah, 4 * aw) and g.noise_shapes()[-1] == (h, w)
    g.eval()
    explicit = [torch.zeros(1, 1, *s) for s in g.noise_shapes()]
    assert g.synthesis(g.mapping(torch.randn(1, 8)), explicit).shape == (1, 2, h, w)
    assert g.num_ws == 2 * int(math.log2(min(h, w))) - 2
    again = build_generator("stylegan2", g.spec())
    assert again.spec() == g.spec() and g.spec()["image_width"] == w
    again.load_state_dict(g.state_dict())
    with pytest.raises(ModelError, match=f"reads {h}×{w}"):
        d(torch.zeros(3, 2, h, h if h != w else 2 * w))


def test_square_spec_has_no_width_and_bad_widths_are_refused():
    g = StyleGAN2Generator(16, 1, **TINY, image_width=16)
    assert "image_width" not in g.spec() and g.const.shape[1:] == (4, 4)
    for bad in (24, 8, 2048):
        with pytest.raises(ModelError, match="image width"):
            StyleGAN2Generator(16, 1, **TINY, image_width=bad)


def test_mixed_precision_runs_only_the_highest_resolutions_reduced_and_clamps():
    g, d = build_stylegan2_pair(32, 2, **TINY)
    g.eval()
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    ref, ref_d = g(z), d(g(z))
    seen = {}
    for name in ("convs.2", "torgbs.1", "convs.3", "torgbs.3"):
        g.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.dtype)
        )
    g.set_mixed_precision(torch.bfloat16, 2, 256.0)  # 16² and 32² (CPU autocast here)
    d.set_mixed_precision(torch.bfloat16, 2, 256.0)
    out = g(z)
    assert seen == {
        "convs.2": torch.float32,
        "torgbs.1": torch.float32,
        "convs.3": torch.bfloat16,
        "torgbs.3": torch.bfloat16,
    }
    assert out.dtype == torch.float32 and d(out).dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05 * ref.detach().abs().max().item(), rtol=0)
    torch.testing.assert_close(d(ref), ref_d, atol=0.05, rtol=0.05)
    # every level reduced, activations clamped to ±1e-3: the image is a sum of 4 such layers
    g.set_mixed_precision(torch.bfloat16, 4, 1e-3)
    assert g(z).detach().abs().max().item() <= 4 * 1e-3 * 1.01
    g.set_mixed_precision(None)  # off: float32 bit for bit again
    d.set_mixed_precision(torch.float16, 0)
    assert torch.equal(g(z), ref) and torch.equal(d(ref), ref_d)
    with pytest.raises(ModelError, match="bfloat16"):
        g.set_mixed_precision(torch.float64, 2)


def test_sky_noise_generator_noise_inputs_and_noiseless_scene():
    """With sky noise the last `channels` noise inputs are the per-band unit maps: zero maps
    give the noiseless scene, the stored maps are used in eval mode, the spec rebuilds it."""
    from galforge.models.stylegan2 import build_stylegan2_generator

    desc = {
        "stretch": "linear",
        "target": [-1.0, 1.0],
        "lo": [-1.0] * 3,
        "hi": [1.0] * 3,
        "offset": [0.0] * 3,
        "softening": [0.05] * 3,
    }
    g = StyleGAN2Generator(
        16, 3, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=16, sky_noise=desc
    ).eval()
    shapes = g.noise_shapes()
    assert shapes[-3:] == [(16, 16)] * 3 and len(shapes) == len(g.convs) + 3
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    conv_const = [m for m in g.const_noise()[:-3]]
    zeros = [torch.zeros(1, 1, 16, 16)] * 3
    clean = g(z, noise=conv_const + zeros)
    noisy = g(z, noise=conv_const + [torch.ones(1, 1, 16, 16)] * 3)
    # unit maps add exactly σ per band (linear normaliser: model units = physical here,
    # inside the model range the stretch clips to)
    sigma = g.sky.sigma(g.broadcast_w(g.mapping(z))[:, -1])
    inside = (clean.abs() < 0.8) & (noisy.abs() < 0.8)
    assert inside.float().mean() > 0.5
    want = sigma[:, :, None, None].expand_as(clean)
    assert torch.allclose((noisy - clean)[inside], want[inside], atol=1e-5)
    assert torch.equal(g(z), g(z, noise=g.const_noise()))  # eval: the stored maps
    h = build_stylegan2_generator(g.spec())
    h.load_state_dict(g.state_dict())
    assert torch.equal(h.eval()(z), g(z))
    # --band-map: the sky level and maps follow the bands
    before = sigma.detach().clone()
    g.permute_image_channels([2, 0, 1])
    after = g.sky.sigma(g.broadcast_w(g.mapping(z))[:, -1])
    assert torch.allclose(after, before[:, [2, 0, 1]])
