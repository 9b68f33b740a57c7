"""GAN losses and label smoothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galforge.errors import ConfigError
from galforge.training.losses import (
    bce_logits,
    discriminator_loss,
    generator_loss_nonsaturating,
    ragan_d_loss,
    ragan_g_loss,
    smooth_real_labels,
)


def test_label_smoothing_range_and_determinism():
    rng = torch.Generator().manual_seed(4)
    y = smooth_real_labels(20000, 0.1, rng)
    assert float(y.min()) >= 0.9 and float(y.max()) <= 1.1
    assert float(y.min()) < 0.91 and float(y.max()) > 1.09  # fills the whole interval
    assert float(y.mean()) == pytest.approx(1.0, abs=0.005)
    y2 = smooth_real_labels(20000, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(y, y2)


def test_label_smoothing_clip_and_off():
    rng = torch.Generator().manual_seed(0)
    y = smooth_real_labels(5000, 0.2, rng, clip=1.0)
    assert float(y.max()) == 1.0 and float(y.min()) >= 0.8
    assert torch.equal(smooth_real_labels(7, 0.0, rng), torch.ones(7))
    with pytest.raises(ConfigError, match="label_smoothing"):
        smooth_real_labels(3, 1.5, rng)


def test_bce_with_logits_matches_sigmoid_and_stays_finite():
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    p = torch.sigmoid(x)
    assert float(bce_logits(x, 1.0)) == pytest.approx(float(-torch.log(p).mean()), rel=1e-6)
    assert float(bce_logits(x, 0.0)) == pytest.approx(float(-torch.log(1 - p).mean()), rel=1e-6)
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(bce_logits(big, 1.0)) and torch.isfinite(bce_logits(big, 0.0))


def test_discriminator_and_nonsaturating_generator_loss():
    real = torch.tensor([1.0, 2.0])
    fake = torch.tensor([-1.0, 0.5])
    lr, lf = discriminator_loss(real, fake)
    assert float(lr) == pytest.approx(float(-torch.log(torch.sigmoid(real)).mean()), rel=1e-6)
    assert float(lf) == pytest.approx(float(-torch.log(1 - torch.sigmoid(fake)).mean()), rel=1e-6)
    g = generator_loss_nonsaturating(fake)
    assert float(g) == pytest.approx(float(-torch.log(torch.sigmoid(fake)).mean()), rel=1e-6)


def test_ragan_loss_hand_computed():
    real = torch.tensor([1.0, 3.0])
    fake = torch.tensor([0.0, -2.0])
    # mean real = 2, mean fake = -1
    # D: -mean log s(real - (-1)) - mean log(1 - s(fake - 2))
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731  softplus
    d_expected = (sp(-2.0) + sp(-4.0)) / 2 + (sp(-2.0) + sp(-4.0)) / 2
    g_expected = (sp(2.0) + sp(4.0)) / 2 + (sp(2.0) + sp(4.0)) / 2
    assert float(ragan_d_loss(real, fake)) == pytest.approx(d_expected, rel=1e-6)
    assert float(ragan_g_loss(real, fake)) == pytest.approx(g_expected, rel=1e-6)
    # indistinguishable logits: both losses are 2 log 2
    same = torch.zeros(4)
    assert float(ragan_d_loss(same, same)) == pytest.approx(2 * math.log(2))
    assert float(ragan_g_loss(same, same)) == pytest.approx(2 * math.log(2))


def test_nonsaturating_and_wgan_by_hand():
    from galforge.training.losses import (
        nonsaturating_d_loss,
        nonsaturating_g_loss,
        wgan_d_loss,
        wgan_g_loss,
    )

    real = torch.tensor([2.0, -0.5])
    fake = torch.tensor([0.5, -3.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731  softplus
    assert float(nonsaturating_d_loss(real, fake)) == pytest.approx(
        (sp(-2.0) + sp(0.5)) / 2 + (sp(0.5) + sp(-3.0)) / 2, rel=1e-6
    )
    assert float(nonsaturating_g_loss(fake)) == pytest.approx((sp(-0.5) + sp(3.0)) / 2, rel=1e-6)
    # the BCE form of the same loss agrees
    a, b = discriminator_loss(real, fake)
    assert float(a + b) == pytest.approx(float(nonsaturating_d_loss(real, fake)), rel=1e-6)
    assert float(wgan_d_loss(real, fake)) == pytest.approx(-1.25 - 0.75)
    assert float(wgan_g_loss(fake)) == pytest.approx(1.25)


def test_gradient_penalty_and_r1_of_a_linear_critic():
    from galforge.training.losses import gradient_penalty, r1_penalty

    a = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])  # |a| = 5

    def critic(x):
        return (x * a).flatten(1).sum(1)

    real = torch.rand(3, 1, 2, 2)
    fake = torch.rand(3, 1, 2, 2)
    gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert float(gp) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-6)
    x = real.clone().requires_grad_(True)
    assert float(r1_penalty(critic(x), x)) == pytest.approx(25.0, rel=1e-6)
    # a quadratic critic D = sum x^2: the gradient is 2x, so R1 = E[4 |x|^2]
    x = real.clone().requires_grad_(True)
    r1 = r1_penalty((x**2).flatten(1).sum(1), x)
    expected = float((2 * real).flatten(1).pow(2).sum(1).mean())
    assert float(r1.detach()) == pytest.approx(expected, rel=1e-5)
    r1.backward()  # create_graph: the penalty itself is differentiable
    assert x.grad is not None


def test_path_length_penalty_matches_a_hand_computation():
    from galforge.training.losses import path_length_penalty

    torch.manual_seed(0)
    A = torch.randn(1 * 2 * 2, 3)  # images = reshape(A w)
    w = torch.randn(4, 3, requires_grad=True)
    images = (w @ A.T).reshape(4, 1, 2, 2)
    pen, mean = path_length_penalty(images, w, 0.5, torch.Generator().manual_seed(7), decay=0.1)
    y = torch.randn((4, 1, 2, 2), generator=torch.Generator().manual_seed(7)) / 2.0
    lengths = (y.reshape(4, 4) @ A).norm(dim=1)  # J^T y for a linear map
    expected_mean = 0.5 + 0.1 * (float(lengths.mean()) - 0.5)
    assert float(mean) == pytest.approx(expected_mean, rel=1e-5)
    assert float(pen) == pytest.approx(float(((lengths - expected_mean) ** 2).mean()), rel=1e-5)


# --- condition consistency ---------------------------------------------------------------


def _galsim_scenes(params, scale=0.2, size=48):
    """Pre-PSF bulge + disk galaxies drawn by GalSim (no PSF), ``N×1×H×W`` float64."""
    galsim = pytest.importorskip("galsim")
    from galforge.data.builtin import composite_hlr_factor

    out = []
    for flux, hlr, q, bf in params:
        rd = hlr / composite_hlr_factor(bf, 0.5, 4.0)
        shear = galsim.Shear(q=q, beta=35 * galsim.degrees)
        gal = galsim.Exponential(half_light_radius=rd, flux=(1 - bf) * flux).shear(shear)
        if bf > 0:
            gal = gal + galsim.Sersic(n=4, half_light_radius=0.5 * rd, flux=bf * flux).shear(shear)
        out.append(gal.drawImage(nx=size, ny=size, scale=scale).array)
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float64)


def test_condition_consistency_is_zero_for_a_galsim_galaxy_of_that_flux_and_size():
    from galforge.training.losses import aperture_fraction, condition_consistency

    params = [
        (2e3, 0.3, 1.0, 0.0),
        (2e4, 0.6, 0.5, 0.3),
        (8e4, 0.9, 0.3, 0.0),
        (5e3, 0.45, 0.25, 0.5),
    ]
    scene = _galsim_scenes(params)
    cond = torch.tensor([[f, h] for f, h, _, _ in params], dtype=torch.float64)
    frac, aim = aperture_fraction(scene[:, 0], cond[:, 1] / 0.2)
    # the light inside the asked half-light radius is half, within 1.5 % of the light
    assert (frac - aim).abs().max() < 0.015
    kw = dict(pixel_scale=0.2, bands=["r"], ref_band=0)
    right = condition_consistency(scene, ["flux", "hlr"], cond, **kw)
    # each error well inside a quarter of its tolerance (0.1 mag, 10 % in size)
    assert float(right) < 0.1
    # a catalogue column of no known meaning costs nothing
    assert float(condition_consistency(scene, ["q", "pa"], cond, **kw)) == 0.0
    # the same galaxies asked for at 1.3× their size, or at 1.5× their flux, are far off
    big = cond * torch.tensor([1.0, 1.3], dtype=torch.float64)
    bright = cond * torch.tensor([1.5, 1.0], dtype=torch.float64)
    assert float(condition_consistency(scene, ["flux", "hlr"], big, **kw)) > 1.5
    assert float(condition_consistency(scene, ["flux", "hlr"], bright, **kw)) > 2.0


def test_condition_consistency_gradient_brings_a_galaxy_to_the_asked_flux_and_size():
    from galforge.training.losses import condition_consistency

    size, scale = 48, 0.2
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float64) - 23.5,
        torch.arange(size, dtype=torch.float64) - 23.5,
        indexing="ij",
    )
    log_flux = torch.tensor(math.log(1e3), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(math.log(1.5), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[3e4, 0.8]], dtype=torch.float64)  # counts, arcsec
    opt = torch.optim.Adam([log_flux, log_sigma], lr=0.05)
    for _ in range(300):
        sigma = log_sigma.exp()
        g = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        img = (log_flux.exp() * g / g.sum())[None, None]
        loss = condition_consistency(
            img, ["flux", "hlr"], target, pixel_scale=scale, bands=["r"], ref_band=0
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    # a circular Gaussian's half-light radius is σ √(2 ln 2)
    hlr = float(log_sigma.detach().exp()) * math.sqrt(2 * math.log(2)) * scale
    assert hlr == pytest.approx(0.8, rel=0.05)
    assert 2.5 * abs(math.log10(float(log_flux.detach().exp()) / 3e4)) < 0.03
