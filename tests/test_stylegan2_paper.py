"""The StyleGAN2 layers against the paper's equations, on inputs built by hand.

Karras et al. (2020), "Analyzing and Improving the Image Quality of StyleGAN": modulation and
demodulation (section 2.2, eq. 1-3), noise inputs whose strength starts at zero, the
equalised learning rate with the mapping network's multiplier 0.01 (appendix B), the
minibatch standard deviation, the skip generator and the residual discriminator (figure 7);
and the resampling filters, which must not prefer a direction: flips and quarter turns
commute with every up/down-sampling layer, so no orientation is built into the network.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from galforge.errors import ModelError
from galforge.models.stylegan2 import (
    EqualConv2d,
    EqualLinear,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    downsample2d,
    fir_filter,
    minibatch_stddev,
    modulated_conv2d,
    upsample2d,
)

TINY = {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 128, "channel_max": 8}
SQRT2 = math.sqrt(2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_modulation_and_demodulation_follow_equations_1_to_3():
    # two input channels, one output, 1×1 kernel: w = [3, 4], styles s = [2, 0.5]
    weight = torch.tensor([[[[3.0]], [[4.0]]]])
    styles = torch.tensor([[2.0, 0.5]])
    x = torch.tensor([[[[1.0]], [[10.0]]]])  # inputs 1 and 10
    # eq. 1: w' = s_i w_i = [6, 2]; without demodulation y = 6·1 + 2·10 = 26
    plain = modulated_conv2d(x, weight, styles, demodulate=False)
    assert plain.item() == pytest.approx(26.0)
    # eq. 3: w'' = w' / sqrt(6² + 2² + 1e-8) = w' / sqrt(40)
    demod = modulated_conv2d(x, weight, styles)
    assert demod.item() == pytest.approx(26.0 / math.sqrt(40.0), rel=1e-6)
    # a 3×3 kernel: the sum in eq. 3 runs over input channels and every tap
    weight = torch.zeros(1, 2, 3, 3)
    weight[0, 0, 1, 1], weight[0, 0, 0, 2], weight[0, 1, 2, 0] = 1.0, 2.0, 2.0
    x = torch.ones(1, 2, 5, 5)
    out = modulated_conv2d(x, weight, torch.tensor([[1.0, 1.0]]))
    # interior pixel: every tap sees a 1, so y = (1 + 2 + 2) / sqrt(1 + 4 + 4)
    assert out[0, 0, 2, 2].item() == pytest.approx(5.0 / 3.0, rel=1e-6)
    # demodulation removes any common scale of the styles
    twice = modulated_conv2d(x, weight, torch.tensor([[3.0, 3.0]]))
    torch.testing.assert_close(twice, out)


def test_styles_start_at_one_and_the_affine_layer_has_the_full_learning_rate():
    g = StyleGAN2Generator(16, 1, **TINY)
    for layer in [*g.convs, *g.torgbs]:
        assert layer.affine.bias.detach().eq(1.0).all()  # bias_init 1: s = 1 + A·w
        assert layer.affine.weight_gain == pytest.approx(1.0 / math.sqrt(8))
        # w = 0 gives styles of exactly 1
        torch.testing.assert_close(
            layer.affine(torch.zeros(1, 8)), torch.ones(1, layer.weight.shape[1])
        )
    # toRGB's styles carry the 1/sqrt(fan_in) of its (not demodulated) 1×1 convolution
    t = g.torgbs[-1]
    assert t.weight_gain == pytest.approx(1.0 / math.sqrt(t.weight.shape[1]))


def test_noise_strength_starts_at_zero_and_noise_is_added_before_bias_and_activation():
    g = StyleGAN2Generator(16, 1, **TINY)
    assert all(c.noise_strength.item() == 0.0 for c in g.convs)  # the paper's init
    layer = g.convs[2]  # a 16×16 layer at full resolution
    torch.manual_seed(0)
    x = torch.randn(2, layer.weight.shape[1], 16, 16)
    w = torch.randn(2, 8)
    noise = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.copy_(torch.linspace(-1, 1, layer.bias.numel()))
        got = layer(x, w, noise)
        conv = modulated_conv2d(x, layer.weight, layer.affine(w), fir=layer.fir)
        pre = conv + 0.7 * noise + layer.bias[None, :, None, None]
    # out = lrelu(conv + strength · noise + bias, 0.2) · sqrt(2): one noise map for all channels
    torch.testing.assert_close(got, F.leaky_relu(pre, 0.2) * SQRT2)
    # with strength 0 the noise changes nothing
    with torch.no_grad():
        layer.noise_strength.zero_()
        torch.testing.assert_close(layer(x, w, noise), layer(x, w, 5 * noise))


def test_equalised_learning_rate_of_the_mapping_network():
    g = StyleGAN2Generator(16, 1, **{**TINY, "w_dim": 64, "z_dim": 64})
    fcs = list(g.mapping_net.fcs)
    assert len(fcs) == 2
    for fc in fcs:
        # stored weights ~ N(0, 1/0.01²), used × 0.01/sqrt(fan_in): effective N(0, 1/fan_in)
        assert fc.weight_gain == pytest.approx(0.01 / 8.0) and fc.bias_gain == 0.01
        assert abs(fc.weight.std().item() - 100.0) < 5.0
        assert abs((fc.weight * fc.weight_gain).std().item() - 1 / 8.0) < 0.01
    # one Adam step moves every stored weight by about lr whatever its gradient's scale;
    # the effective weights of the mapping then move 100× less than the affine layers'
    affine = EqualLinear(64, 64).double()
    fc = fcs[1].double()  # float64: a step of 1e-3 on a stored weight of ~100 is exact enough
    opt = torch.optim.Adam([fc.weight, affine.weight], lr=1e-3, betas=(0.0, 0.99))
    x = torch.randn(4, 64, dtype=torch.float64)
    (fc(x).square().sum() + affine(x).square().sum()).backward()
    before = (fc.weight * fc.weight_gain).detach(), (affine.weight * affine.weight_gain).detach()
    opt.step()
    d_map = ((fc.weight * fc.weight_gain).detach() - before[0]).abs().max().item()
    d_aff = ((affine.weight * affine.weight_gain).detach() - before[1]).abs().max().item()
    assert d_map / d_aff == pytest.approx(0.01, rel=1e-3)
    # z is normalised to unit second moment first: mapping(z) = mapping(3z)
    g.float()
    z = torch.randn(3, 64)
    torch.testing.assert_close(g.mapping(z, False), g.mapping(3 * z, False))


def test_minibatch_stddev_groups_sample_i_with_i_plus_n_over_g():
    # 4 samples, groups of 2: samples {0, 2} and {1, 3} (the reference's reshape(G, -1, ...))
    x = torch.zeros(4, 1, 1, 2)
    x[:, 0, 0, 0] = torch.tensor([0.0, 10.0, 2.0, 10.0])  # group {0,2}: std 1; {1,3}: 0
    x[:, 0, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 4.0])  # group {0,2}: 0; {1,3}: std 2
    out = minibatch_stddev(x, group_size=2)
    eps = math.sqrt(1e-8)
    a = (math.sqrt(1 + 1e-8) + eps) / 2  # mean over the two pixels of the group's std
    b = (eps + math.sqrt(4 + 1e-8)) / 2
    torch.testing.assert_close(out[:, 1, 0, 0], torch.tensor([a, b, a, b]))
    torch.testing.assert_close(out[:, :1], x)


def test_skip_generator_sums_the_upsampled_torgb_outputs():
    g = StyleGAN2Generator(32, 2, **TINY).eval()
    torch.manual_seed(1)
    outs: list[torch.Tensor] = []
    hooks = [t.register_forward_hook(lambda m, i, o: outs.append(o)) for t in g.torgbs]
    with torch.no_grad():
        img = g(torch.randn(3, 8))
    for h in hooks:
        h.remove()
    assert [o.shape[-1] for o in outs] == [4, 8, 16, 32]
    f = fir_filter()
    ref = outs[0]
    for o in outs[1:]:
        ref = upsample2d(ref, f) + o  # y_r = up(y_{r/2}) + toRGB_r(x_r)
    torch.testing.assert_close(img, ref)
    # the image's mean follows the lower resolutions' (the FIR upsampling keeps the mean)
    torch.testing.assert_close(
        upsample2d(torch.full((1, 1, 4, 4), 2.0), f)[..., 2:-2, 2:-2], torch.full((1, 1, 4, 4), 2.0)
    )


def test_residual_discriminator_block_and_epilogue_by_hand():
    d = StyleGAN2Discriminator(16, 2, channel_base=64, channel_max=4)
    torch.manual_seed(2)
    img = torch.randn(4, 2, 16, 16)
    with torch.no_grad():
        x = d.fromrgb(img)
        for block in d.blocks:
            # (skip(x) + conv1(conv0(x))) / sqrt(2): the paper's residual block
            x = (block.skip(x) + block.conv1(block.conv0(x))) * math.sqrt(0.5)
        x = minibatch_stddev(x, 4, 1)
        x = d.conv(x)
        ref = d.out(d.fc(x.flatten(1))).reshape(-1)
        torch.testing.assert_close(d(img), ref)
        # the skip path alone: FIR ÷2 then a 1×1 convolution, no bias, no activation
        block = d.blocks[0]
        skip = F.conv2d(downsample2d(d.fromrgb(img), fir_filter()), block.skip.weight)
        torch.testing.assert_close(block.skip(d.fromrgb(img)), skip * block.skip.weight_gain)


@pytest.mark.parametrize("turn", ["flip_x", "flip_y", "rot90"])
def test_resampling_layers_have_no_preferred_direction(turn):
    """Every up/down-sampling layer commutes with flips and quarter turns (kernels turned
    with the image): the FIR paddings put no half-pixel offset on one side."""

    def t(a):
        if turn == "flip_x":
            return a.flip(-1)
        if turn == "flip_y":
            return a.flip(-2)
        return torch.rot90(a, 1, dims=(-2, -1))

    torch.manual_seed(3)
    f = fir_filter()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(upsample2d(t(x), f), t(upsample2d(x, f)))
    torch.testing.assert_close(downsample2d(t(x), f), t(downsample2d(x, f)))
    weight, styles = torch.randn(4, 3, 3, 3), torch.rand(2, 3) + 0.5
    for up in (1, 2):
        a = modulated_conv2d(t(x), t(weight), styles, up=up, fir=f)
        b = t(modulated_conv2d(x, weight, styles, up=up, fir=f))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for k in (1, 3):
        conv = EqualConv2d(3, 4, k, down=2)
        turned = EqualConv2d(3, 4, k, down=2)
        with torch.no_grad():
            turned.weight.copy_(t(conv.weight))
            turned.bias.copy_(conv.bias)
        torch.testing.assert_close(turned(t(x)), t(conv(x)), rtol=1e-5, atol=1e-5)


def test_summary_heads_add_their_logits_and_see_a_batch_that_leans_one_way():
    """The optional profile and moments heads (not in the paper): built after the trunk
    (which keeps its initial weights), their logits added to the trunk's; with a group, the
    moments head's input tells a batch of galaxies leaning one way from one of every way."""
    plain = StyleGAN2Discriminator(16, 2, channel_base=64, channel_max=4)
    d = StyleGAN2Discriminator(
        16, 2, channel_base=64, channel_max=4, profile=True, moments=True, head_group=4
    )
    for k, v in plain.state_dict().items():
        assert torch.equal(d.state_dict()[k], v)
    torch.manual_seed(4)
    img = torch.randn(8, 2, 16, 16)
    with torch.no_grad():
        trunk = plain(img)
        torch.testing.assert_close(d(img), trunk + d.profile(img) + d.moments(img))
    # elongated Gaussians: all at 45°, or at 0°, 45°, 90°, 135° in every group of 4
    yy, xx = torch.meshgrid(torch.arange(16.0) - 7.5, torch.arange(16.0) - 7.5, indexing="ij")

    def blob(angle):
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * xx + s * yy, -s * xx + c * yy
        return torch.exp(-0.5 * (u**2 / 9.0 + v**2 / 2.0)).expand(2, 16, 16)

    leaning = torch.stack([blob(math.pi / 4)] * 8)
    every_way = torch.stack([blob(k * math.pi / 4) for k in (0, 1, 2, 3) * 2])
    front = d.moments.front
    spread = d.moments.spread
    n = front(leaning).shape[1]
    lean_std = spread(front(leaning))[:, n:].abs().max()
    every_std = spread(front(every_way))[:, n:]
    assert lean_std < 1e-3 < every_std.abs().max()  # e1, e2 spread: none when all lean alike
    with pytest.raises(ModelError, match="square"):
        StyleGAN2Discriminator(16, 2, 64, 4, image_width=32, moments=True)
    with pytest.raises(ModelError, match="d_head_group"):
        StyleGAN2Discriminator(16, 2, 64, 4, head_group=4)
