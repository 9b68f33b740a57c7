"""Augmentations: stateless flips/rotations and the adaptive probability with its state."""

from __future__ import annotations

import json

import pytest
import torch

from galforge.errors import ConfigError
from galforge.training.augment import AdaptiveAugment, FlipRotate


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
