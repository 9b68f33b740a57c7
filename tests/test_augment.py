"""Augmentations: stateless flips/rotations and the adaptive probability with its state."""

from __future__ import annotations

import json
import math

import pytest
import torch

from galforge.errors import ConfigError
from galforge.training.augment import (
    AdaptiveAugment,
    DiffAugment,
    FlipRotate,
    affine_resample,
    cutout,
    gaussian_noise,
    geometric_matrix,
    parse_pipeline,
    sky_offset,
)


def test_flip_rotate_is_seeded_and_keeps_pixels():
    x = torch.rand(6, 2, 8, 8)
    a = FlipRotate()(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, FlipRotate()(x, torch.Generator().manual_seed(1)))
    assert torch.allclose(a.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert torch.equal(FlipRotate(False, False)(x, torch.Generator()), x)


def test_adaptive_probability_follows_the_overfitting_signal_and_resumes():
    aug = AdaptiveAugment(p=0.0, target=0.6, interval=2, speed_images=40)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(aug(x, torch.Generator().manual_seed(0)), x)  # p = 0: identity
    for _ in range(4):  # D sure that reals are real: sign 1 > target, p rises
        aug.observe(torch.ones(10))
    assert aug.p == pytest.approx(1.0)  # 2 adjustments of 20/40 each
    changed = aug(x, torch.Generator().manual_seed(0))
    assert not torch.equal(changed, x)
    aug.observe(-torch.ones(10))  # half an interval: kept as state
    state = json.loads(json.dumps(aug.state_dict()))
    again = AdaptiveAugment(interval=2, speed_images=40)
    again.load_state_dict(state)
    aug.observe(-torch.ones(10))
    again.observe(-torch.ones(10))
    assert again.p == aug.p == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        AdaptiveAugment(p=1.5)


def test_diffaugment_translates_with_zero_fill_cuts_out_and_is_differentiable():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(1, 2, 16, 16) + 1
    x = x.repeat(6, 1, 1, 1).requires_grad_(True)
    aug = DiffAugment(translation=0.125, cutout=0.5)
    y = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, aug(x, torch.Generator().manual_seed(0)))
    for i in range(6):
        kept = y[i] != 0
        # each kept pixel is an input pixel of the same band (a shift, no interpolation)
        assert set(y[i][kept].tolist()) <= set(x[i].detach().flatten().tolist())
        zero = (~kept[0]).sum().item()
        assert 4 * 4 <= zero <= 8 * 8 + 2 * 2 * 16  # the square (maybe clipped), the shift
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    assert g.requires_grad and (g != 0).any()


def _galaxy_image(h=16, w=16, bands=2):
    """A smooth off-centre blob on a sloped sky: no symmetry a wrong transform could hide in."""
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    blob = torch.exp(-((yy - 0.4 * h) ** 2 + (xx - 0.6 * w) ** 2) / (0.1 * h * w))
    return torch.stack([blob * (b + 1) + 0.01 * xx - 0.02 * yy for b in range(bands)])[None]


def test_pipelines_parse_in_one_order_and_unknown_stages_are_refused():
    assert parse_pipeline("galaxy") == ("xflip", "rot90", "xint")
    assert parse_pipeline("galaxy+geom") == ("xflip", "rot90", "xint", "scale", "rotate", "xfrac")
    assert parse_pipeline("galaxy+geom+noise")[-3:] == ("sky", "gauss", "cutout")
    assert parse_pipeline("sky,rotate") == ("rotate", "sky")
    for bad in ("galaxy+hue", "", "lumaflip"):
        with pytest.raises(ConfigError, match="ada_pipeline"):
            parse_pipeline(bad)
    with pytest.raises(ConfigError, match="cutout"):
        AdaptiveAugment(stages="cutout", cutout_size=0)


def test_arbitrary_rotation_by_a_right_angle_is_a_quarter_turn():
    x = _galaxy_image(16, 16).repeat(2, 1, 1, 1)
    n = x.shape[0]
    quarter = geometric_matrix(
        16, 16, torch.ones(n), torch.full((n,), math.pi / 2), torch.zeros(n, 2)
    )
    torch.testing.assert_close(
        affine_resample(x, quarter), torch.rot90(x, 3, dims=(-2, -1)), atol=1e-5, rtol=0
    )
    half = geometric_matrix(8, 16, torch.ones(n), torch.full((n,), math.pi), torch.zeros(n, 2))
    wide = _galaxy_image(8, 16).repeat(2, 1, 1, 1)  # non-square: a half turn
    torch.testing.assert_close(affine_resample(wide, half), wide.flip(-1, -2), atol=1e-5, rtol=0)
    none = geometric_matrix(16, 16, torch.ones(n), torch.zeros(n), torch.zeros(n, 2))
    assert torch.equal(affine_resample(x, none), x)


def test_fractional_translation_scale_and_reflection_padding():
    x = _galaxy_image(16, 16)
    one = torch.ones(1)
    # a whole-pixel shift is exact: out(x, y) = in(x - 2, y + 3)
    y = affine_resample(x, geometric_matrix(16, 16, one, one * 0, torch.tensor([[2.0, -3.0]])))
    assert torch.equal(y[..., :13, 2:], x[..., 3:, :14])
    # entering pixels are the mirror image of the frame edge (reflection padding, no zeros)
    assert torch.equal(y[..., :13, :2], x[..., 3:, :2].flip(-1))
    # half a pixel: the mean of the two neighbours
    h = affine_resample(x, geometric_matrix(16, 16, one, one * 0, torch.tensor([[0.5, 0.0]])))
    torch.testing.assert_close(h[..., 1:], (x[..., 1:] + x[..., :-1]) / 2)
    # scale 2 about the centre: the centre pixel pair stays, the image is magnified
    s = affine_resample(x, geometric_matrix(16, 16, one * 2, one * 0, torch.zeros(1, 2)))
    torch.testing.assert_close(s[..., 7:9, 7:9].mean(), x[..., 7:9, 7:9].mean(), atol=0.05, rtol=0)
    grad_in = torch.diff(x, dim=-1).abs().mean()
    assert torch.diff(s, dim=-1).abs().mean() < 0.75 * grad_in


def test_sky_offset_noise_and_cutout_do_what_they_say():
    x = _galaxy_image(16, 16).repeat(3, 1, 1, 1)
    off = torch.tensor([[0.5, -1.0], [0.0, 2.0], [0.25, 0.25]], dtype=torch.float64)
    diff = sky_offset(x, off) - x
    torch.testing.assert_close(diff, off[:, :, None, None].expand_as(x))  # constant per image
    unit = torch.randn(
        3, 2, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    noisy = gaussian_noise(
        torch.zeros(3, 2, 64, 64, dtype=torch.float64), torch.tensor([0.0, 0.1, 0.3]), unit
    )
    stds = noisy.std(dim=(1, 2, 3))
    assert stds[0] == 0 and abs(stds[1] - 0.1) < 0.005 and abs(stds[2] - 0.3) < 0.015
    cut = cutout(x, torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.5, 0.5]]), 0.5)
    median = x.flatten(2).median(dim=2).values
    torch.testing.assert_close(cut[0, :, 4:12, 4:12], median[0, :, None, None].expand(2, 8, 8))
    assert torch.equal(cut[0, :, :4], x[0, :, :4]) and torch.equal(
        cut[0, :, :, 12:], x[0, :, :, 12:]
    )
    assert (cut[1] != x[1]).sum() == 2 * 4 * 4  # clipped at the corner


@pytest.mark.parametrize(
    "stages", ["scale", "rotate", "xfrac", "sky", "gauss", "cutout", "galaxy+geom+noise"]
)
def test_each_optional_stage_has_a_double_backward_and_p0_is_identity(stages):
    x = (
        _galaxy_image(16, 32).repeat(3, 1, 1, 1) + 0.01 * torch.arange(3.0)[:, None, None, None]
    ).requires_grad_(True)
    aug = AdaptiveAugment(p=1.0, stages=stages)
    y = aug(x, torch.Generator().manual_seed(4))
    assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(y, aug(x, torch.Generator().manual_seed(4)))  # seeded
    (g,) = torch.autograd.grad((y * torch.linspace(0, 1, 32)).square().sum(), x, create_graph=True)
    assert g.requires_grad
    (gg,) = torch.autograd.grad(g.square().sum(), x)  # as R1 needs
    assert torch.isfinite(gg).all() and (gg != 0).any()
    aug.p = 0.0
    assert torch.equal(aug(x, torch.Generator().manual_seed(4)), x)


def test_optional_stages_are_applied_with_probability_p():
    x = _galaxy_image(16, 16).float().repeat(400, 1, 1, 1)
    aug = AdaptiveAugment(p=0.3, stages="sky")
    changed = (aug(x, torch.Generator().manual_seed(2)) != x).flatten(1).any(1).float().mean()
    assert abs(changed.item() - 0.3) < 0.07
    # the default pipeline draws exactly as before the optional stages existed
    plain, explicit = AdaptiveAugment(p=0.5), AdaptiveAugment(p=0.5, stages="xflip+rot90+xint")
    assert torch.equal(
        plain(x[:8], torch.Generator().manual_seed(1)),
        explicit(x[:8], torch.Generator().manual_seed(1)),
    )
