"""Style mixing and layer freezing, shared by the two StyleGAN generations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from galforge.errors import ModelError
from galforge.models.stylebase import freeze_leading, mixed_styles
from galforge.models.stylegan import StyleGANGenerator
from galforge.models.stylegan2 import StyleGAN2Generator

TINY = {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 64, "channel_max": 8}


def _latent(g):
    return lambda n, rng: torch.randn(g.latent_shape(n), generator=rng, device=rng.device)


@pytest.mark.parametrize("make", [StyleGANGenerator, StyleGAN2Generator])
def test_style_mixing_switches_to_a_second_latent_after_the_cutoff(make):
    g = make(16, 1, **TINY).eval()
    latent = _latent(g)
    rng = torch.Generator().manual_seed(3)
    z = latent(5, rng)
    rng.manual_seed(3)
    with torch.no_grad():
        plain = mixed_styles(g, 5, latent, rng, 0.0, "cpu")
        next_plain = torch.rand((), generator=rng)
        assert plain.shape == (5, g.num_ws, 8)
        assert torch.equal(plain, g.mapping(z)[:, None, :].expand(5, g.num_ws, 8))
        rng.manual_seed(3)
        mixed = mixed_styles(g, 5, latent, rng, 1.0, "cpu")
        next_mixed = torch.rand((), generator=rng)
    # the same draws whether or not the styles are mixed: the step's later draws agree
    assert torch.equal(next_plain, next_mixed)
    same = (mixed == plain).all(dim=2).all(dim=0)  # per layer: the first latent's w
    cutoff = int(same.sum())
    assert 1 <= cutoff < g.num_ws and bool(same[:cutoff].all()) and not bool(same[cutoff:].any())
    assert torch.equal(mixed[:, cutoff], mixed[:, -1])  # one second w for the rest


def test_freeze_leading_freezes_whole_groups_in_order():
    a, b, c = nn.Linear(2, 2), nn.Linear(2, 3), nn.Linear(3, 1)
    const = nn.Parameter(torch.zeros(2))
    groups = [[const, a], [b], [c]]
    frozen = freeze_leading(groups, 2, "--freeze-g", "generator", "synthesis layers")
    assert {id(p) for p in frozen} == {
        id(const),
        *(id(p) for p in [*a.parameters(), *b.parameters()]),
    }
    assert not const.requires_grad and not b.weight.requires_grad and c.weight.requires_grad
    assert freeze_leading(groups, 0, "--freeze-d", "discriminator", "blocks") == []
    for bad in (4, -1):
        with pytest.raises(ModelError, match=rf"--freeze-d {bad}: this discriminator has 3 blocks"):
            freeze_leading(groups, bad, "--freeze-d", "discriminator", "blocks")
