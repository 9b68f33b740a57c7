"""Spatial GAN: shape arithmetic, receptive field, packing, capabilities, recipe and crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galforge.errors import ConfigError, DataError, ModelError
from galforge.models.registry import build_generator
from galforge.models.sgan import (
    SGANDiscriminator,
    SGANGenerator,
    pack_images,
)

TINY = (8, 8, 4, 4)


def tiny_generator(channels=3, seed=0):
    torch.manual_seed(seed)
    return SGANGenerator(channels, TINY).eval()


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (2, 3), (4, 4), (7, 2), (9, 13)])
def test_output_is_sixteen_times_latent(hw):
    g = tiny_generator(channels=2)
    z = torch.randn(2, 50, *hw)
    with torch.no_grad():
        y = g(z)
    assert y.shape == (2, 2, 16 * hw[0], 16 * hw[1])
    assert float(y.min()) > 0.0 and float(y.max()) < 1.0  # sigmoid head


def test_default_architecture_matches_paper():
    g = SGANGenerator(3)
    kinds = [
        (m.conv.in_channels, m.conv.out_channels, m.geometry.kernel, m.geometry.stride)
        for m in g.layers
    ]
    assert kinds[0] == (50, 256, 4, 2)
    assert kinds[1:4] == [(256, 128, 4, 2), (128, 128, 4, 1), (128, 128, 4, 1)]
    assert kinds[4:7] == [(128, 64, 4, 2), (64, 64, 4, 1), (64, 64, 4, 1)]
    assert kinds[7:10] == [(64, 32, 4, 2), (32, 32, 4, 1), (32, 32, 4, 1)]
    assert kinds[10] == (32, 3, 3, 1)
    # FLOPs per output pixel, counted by hand: 2 * c_in * c_out * k^2 / (pixels per input)
    by_hand = 2 * (
        50 * 256 * 16 / 256
        + 256 * 128 * 16 / 64
        + 2 * 128 * 128 * 16 / 16
        + 128 * 64 * 16 / 16
        + 2 * 64 * 64 * 16 / 4
        + 64 * 32 * 16 / 4
        + 2 * 32 * 32 * 16
        + 32 * 3 * 9
    )
    assert g.flops_per_pixel() == pytest.approx(by_hand)


def test_latent_shape_and_bad_sizes():
    g = tiny_generator()
    assert g.latent_shape(5) == (5, 50, 4, 4)
    assert g.latent_shape(2, height=48, width=160) == (2, 50, 3, 10)
    with pytest.raises(ModelError, match="multiple of 16"):
        g.latent_shape(1, 40)
    with pytest.raises(ModelError, match="latent must be"):
        g(torch.randn(1, 10, 2, 2))
    with pytest.raises(ModelError, match="widths"):
        SGANGenerator(3, (8, 8))


def test_registry_rebuilds_from_spec():
    g = tiny_generator(channels=4)
    g2 = build_generator("sgan", g.spec())
    g2.load_state_dict(g.state_dict())
    z = torch.randn(1, 50, 3, 2)
    with torch.no_grad():
        assert torch.equal(g(z), g2.eval()(z))
    with pytest.raises(ModelError):
        build_generator("sgan", {**g.spec(), "bogus": 1})


def test_receptive_field_matches_measured_influence():
    """Changing one latent pixel changes exactly the output pixels the plan predicts."""
    g = tiny_generator(channels=1)
    before, after = g.receptive_field()
    z = torch.randn(1, 50, 12, 12)
    with torch.no_grad():
        base = g(z)
        z2 = z.clone()
        z2[0, :, 6, 6] += 3.0
        diff = (g(z2) - base).abs()[0, 0].sum(dim=1)  # per output row
    rows = torch.nonzero(diff > 0).flatten()
    first_tile, last_tile = int(rows.min()) // 16, int(rows.max()) // 16
    # output rows of latent row r need latent rows r - before ... r + after
    assert first_tile == 6 - after
    assert last_tile == 6 + before


@pytest.mark.parametrize("tile", [16, 32, 48, 128])
def test_plan_window_is_shift_equivariant(tile):
    g = tiny_generator()
    plan = g.plan_window(tile)
    assert plan.sizes[-1] >= tile and plan.starts[-1] <= 0
    assert plan.sizes[-1] + plan.starts[-1] >= tile
    assert plan.latent_size == tile // 16 + plan.margin_before + plan.margin_after
    assert (plan.margin_before, plan.margin_after) == g.receptive_field()
    with pytest.raises(ModelError):
        g.plan_window(40)


def test_packing_shapes_and_order():
    x = torch.arange(6 * 2 * 1 * 1, dtype=torch.float32).reshape(6, 2, 1, 1)
    p = pack_images(x, 2)
    assert p.shape == (3, 4, 1, 1)
    # group j holds images 2j and 2j+1, channels of the first image first
    assert p[1, :, 0, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert pack_images(x, 3).shape == (2, 6, 1, 1)
    with pytest.raises(ModelError, match="pack size"):
        pack_images(x, 4)


def test_discriminator_one_logit_per_pack():
    d = SGANDiscriminator(3, (8, 8, 8, 8, 8), pack=2)
    for size in (64, 128):
        out = d(torch.rand(6, 3, size, size))
        assert out.shape == (3,)
    assert d.features[0].in_channels == 6
    assert sum(isinstance(m, torch.nn.Conv2d) for m in d.features) == 5


# --------------------------------------------------------------------------- recipe
def test_field_crops_deterministic_sizes_and_flips():
    from galforge.training.recipes.sgan import FieldCrops

    data = torch.rand(2, 3, 260, 270)
    src = FieldCrops(data, 4, seed=7, sizes=(64, 128, 256))
    sizes = set()
    for step in range(20):
        b = src.batch(step)
        assert b.shape[0] == 4 and b.shape[1] == 3 and b.shape[2] == b.shape[3]
        sizes.add(b.shape[-1])
        assert torch.equal(b, src.batch(step))
    assert sizes == {64, 128, 256}
    assert not torch.equal(src.batch(0), FieldCrops(data, 4, seed=8).batch(0))
    # every crop is a (possibly flipped) window of one of the fields
    small = torch.rand(2, 3, 80, 72)
    b = FieldCrops(small, 1, seed=1, sizes=(64,)).batch(3)[0]
    found = False
    for img in small:
        for cand in (b, b.flip(-1), b.flip(-2), b.flip(-1).flip(-2)):
            hits = (img[0].unfold(0, 64, 1).unfold(1, 64, 1) == cand[0]).all(-1).all(-1)
            found |= bool(hits.any())
    assert found
    with pytest.raises(DataError, match="crop_sizes"):
        FieldCrops(torch.rand(1, 3, 50, 50), 2, 0, sizes=(64,))


def test_recipe_trains_on_variable_crops():
    from galforge.training.recipes import get_recipe

    cls = get_recipe("sgan")
    assert cls.image_size_for(cls.default_config()) is None
    recipe = cls(
        {"widths": [8, 8, 4, 4], "d_widths": [4, 4, 4, 4, 4], "crop_sizes": [32, 64]},
        channels=3,
        image_size=None,
        device="cpu",
        seed=0,
    )
    assert recipe.output_range() == (0.0, 1.0)
    opt = recipe.optimizers()["G"]
    assert opt.defaults["lr"] == pytest.approx(2e-4) and opt.defaults["betas"] == (0.5, 0.999)
    data = torch.rand(1, 3, 70, 70)
    src = recipe.make_batches(data, 4, seed=0)
    before = [p.clone() for p in recipe.G.parameters()]
    for step in range(3):
        real = src.batch(step)
        out = recipe.train_step(real, step, torch.Generator().manual_seed(step))
        assert np.isfinite(out["loss_d"]) and np.isfinite(out["loss_g"])
    assert any(not torch.equal(a, b) for a, b in zip(before, recipe.G.parameters(), strict=True))
    z = recipe.sample_latent(2, torch.Generator().manual_seed(0))
    assert recipe.generator()(z).shape == (2, 3, 64, 64)
    with pytest.raises(ConfigError, match="pack"):
        recipe.make_batches(data, 3, seed=0)
    with pytest.raises(ConfigError, match="crop_sizes"):
        cls({"crop_sizes": [40]}, channels=3, image_size=None, device="cpu")
