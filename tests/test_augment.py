"""Augmentations: stateless flips/rotations and the adaptive probability with its state."""

from __future__ import annotations

import json

import pytest
import torch

from galforge.errors import ConfigError
from galforge.training.augment import AdaptiveAugment, DiffAugment, FlipRotate


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
        assert 4 * 4 <= zero <= 8 * 8 + 2 * 2 * 16   # the square (maybe clipped), the shift
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    assert g.requires_grad and (g != 0).any()
