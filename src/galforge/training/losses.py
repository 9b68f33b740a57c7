"""GAN losses and regularisers as plain functions of logits, images and latents.

The discriminator networks return logits; the sigmoid of the papers is folded into
binary cross-entropy with logits, which equals ``BCE(sigmoid(x), t)`` without overflow.

Adversarial losses: standard / non-saturating (Goodfellow et al. 2014), relativistic
average (Jolicoeur-Martineau 2018), Wasserstein with gradient penalty (Gulrajani et al.
2017). Regularisers: R1 (Mescheder et al. 2018)
and path-length (Karras et al. 2020), usually run lazily (:class:`galforge.training.recipe.Phase`
with an interval; the phase's ``ctx.gain`` scales them back to their average strength).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from galforge.errors import ConfigError


def smooth_real_labels(
    n: int, delta: float, rng: torch.Generator, *, clip: float | None = None, device=None
) -> Tensor:
    """Targets for real images: ``U[1 - delta, 1 + delta]`` (all ones when ``delta`` = 0).

    ``clip`` (e.g. 1.0) caps the targets from above: targets above 1 make the
    cross-entropy unbounded below, which some prefer to avoid (one-sided smoothing then
    gives labels in ``[1 - delta, 1]``).  Draws come from ``rng``.
    """
    if delta < 0 or delta >= 1:
        raise ConfigError(f"model.label_smoothing={delta} must be in [0, 1)")
    device = rng.device if device is None else device
    if delta == 0:
        labels = torch.ones(n, device=device)
    else:
        u = torch.rand(n, generator=rng, device=rng.device).to(device)
        labels = 1.0 - delta + 2.0 * delta * u
    if clip is not None:
        labels = labels.clamp(max=float(clip))
    return labels


def bce_logits(logits: Tensor, target: Tensor | float) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``target`` (computed in fp32)."""
    logits = logits.float()
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, target.float())


def discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, real_targets: Tensor | float = 1.0
) -> tuple[Tensor, Tensor]:
    """Standard GAN discriminator loss ``-log D(x) - log(1 - D(G(z)))``: (real, fake) parts."""
    return bce_logits(real_logits, real_targets), bce_logits(fake_logits, 0.0)


def generator_loss_nonsaturating(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``-log D(G(z))`` (Goodfellow et al. 2014)."""
    return bce_logits(fake_logits, 1.0)


def ragan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic average discriminator loss (Jolicoeur-Martineau 2018).

    ``-E_r[log s(C(r) - E_f C(f))] - E_f[log(1 - s(C(f) - E_r C(r)))]`` with ``s`` the sigmoid.
    """
    d_real = real_logits - fake_logits.mean()
    d_fake = fake_logits - real_logits.mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def ragan_g_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic average generator loss (the discriminator loss with roles swapped)."""
    d_real = real_logits - fake_logits.mean()
    d_fake = fake_logits - real_logits.mean()
    return F.softplus(d_real).mean() + F.softplus(-d_fake).mean()


def nonsaturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``-log D(x) - log(1 - D(G(z)))`` as softplus of logits (StyleGAN's form)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def nonsaturating_g_loss(fake_logits: Tensor) -> Tensor:
    """``-log D(G(z))`` as a softplus of logits."""
    return F.softplus(-fake_logits.float()).mean()


def wgan_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Wasserstein critic loss ``E[C(G(z))] - E[C(x)]`` (add :func:`gradient_penalty`)."""
    return fake_scores.float().mean() - real_scores.float().mean()


def wgan_g_loss(fake_scores: Tensor) -> Tensor:
    """Wasserstein generator loss ``-E[C(G(z))]``."""
    return -fake_scores.float().mean()


def _per_sample_norm(grad: Tensor) -> Tensor:
    return grad.reshape(grad.shape[0], -1).norm(2, dim=1)


def gradient_penalty(
    critic, real: Tensor, fake: Tensor, rng: torch.Generator, target: float = 1.0
) -> Tensor:
    """WGAN-GP term ``E[(||∇C(x̂)|| - target)^2]`` at ``x̂ = ε x + (1 - ε) G(z)``.

    ``ε ~ U[0, 1]`` per sample, drawn from ``rng``. Multiply by λ (10 in the paper).
    """
    eps = torch.rand(
        (real.shape[0],) + (1,) * (real.dim() - 1), generator=rng, device=rng.device
    ).to(real.device, real.dtype)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((_per_sample_norm(grad) - float(target)) ** 2).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1 term ``E[||∇_x D(x)||^2]`` on real images (``real_images.requires_grad`` must be set).

    The loss adds ``γ / 2`` times it (γ a recipe setting), and the lazy phase's gain.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1).mean()


def path_length_penalty(
    images: Tensor,
    w: Tensor,
    mean_length: Tensor | float,
    rng: torch.Generator,
    decay: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Path-length regulariser: ``(penalty, updated mean length)``.

    ``images = G(w)`` (``w`` with ``requires_grad``); ``J^T y`` is taken for ``y ~ N(0, I) /
    sqrt(H W)`` drawn from ``rng``; each sample's length is the norm of ``J^T y`` over the
    non-batch dimensions of ``w``; the running mean ``a`` moves by ``decay`` toward the batch
    mean, and the penalty is ``E[(length - a)^2]``. Keep the returned mean (detached) as state.
    """
    h, w_ = images.shape[-2:]
    y = torch.randn(images.shape, generator=rng, device=rng.device).to(images.device, images.dtype)
    y = y / math.sqrt(h * w_)
    (grad,) = torch.autograd.grad((images * y).sum(), w, create_graph=True)
    lengths = _per_sample_norm(grad)
    mean = torch.as_tensor(mean_length, dtype=lengths.dtype, device=lengths.device)
    new_mean = (mean + float(decay) * (lengths.mean().detach() - mean)).detach()
    return ((lengths - new_mean) ** 2).mean(), new_mean


# --- condition consistency: a conditioned generator's galaxy has the flux and size asked for ---

#: catalogue columns whose physical meaning the consistency loss knows (``flux_<band>`` too)
CONSISTENCY_COLUMNS = ("flux", "hlr")


def _light_ellipse(img: Tensor, radius: Tensor, iters: int = 3) -> tuple[Tensor, ...]:
    """Centre, axis ratio and orientation of the light of ``img`` (``N×H×W``, detached): second
    moments of the positive light inside an ellipse of 3 × the half-light size, refined
    ``iters`` times from a circle of 3 ``radius`` pixels about the light centroid."""
    n, h, w = img.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=img.dtype, device=img.device),
        torch.arange(w, dtype=img.dtype, device=img.device),
        indexing="ij",
    )
    pos = img.clamp_min(0)
    tot = pos.sum(dim=(1, 2)).clamp_min(1e-30)
    cx = (pos * xx).sum(dim=(1, 2)) / tot
    cy = (pos * yy).sum(dim=(1, 2)) / tot
    q = torch.ones_like(cx)
    theta = torch.zeros_like(cx)
    for _ in range(iters):
        win = _ellipse_mask(xx, yy, cx, cy, 3.0 * radius, q, theta)
        wi = pos * win
        t = wi.sum(dim=(1, 2)).clamp_min(1e-30)
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        mxx = (wi * dx * dx).sum(dim=(1, 2)) / t
        myy = (wi * dy * dy).sum(dim=(1, 2)) / t
        mxy = (wi * dx * dy).sum(dim=(1, 2)) / t
        tr, det = mxx + myy, (mxx * myy - mxy * mxy).clamp_min(0)
        disc = (tr * tr / 4 - det).clamp_min(0).sqrt()
        lmax, lmin = tr / 2 + disc, (tr / 2 - disc).clamp_min(0)
        q = (lmin / lmax.clamp_min(1e-30)).sqrt().clamp(0.05, 1.0)
        theta = 0.5 * torch.atan2(2 * mxy, mxx - myy)
    return cx, cy, q, theta


def _ellipse_mask(xx, yy, cx, cy, radius, q, theta, soft: float = 0.0) -> Tensor:
    """1 inside the ellipse of circularised radius ``radius`` (semi-axes ``radius/√q`` and
    ``radius·√q``), 0 outside; ``soft`` > 0: a logistic edge of that width (pixels)."""
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u, v = dx * c + dy * s, -dx * s + dy * c
    sq = q.sqrt()[:, None, None]
    r = torch.sqrt((u * sq) ** 2 + (v / sq) ** 2)  # circularised radius of each point
    edge = radius[:, None, None] - r
    if soft < 0:  # the signed distance itself (radius − circularised radius)
        return edge
    return torch.sigmoid(edge / soft) if soft > 0 else (edge >= 0).to(xx.dtype)


def aperture_fraction(img: Tensor, radius: Tensor, supersample: int = 4) -> tuple[Tensor, Tensor]:
    """Fraction of each image's light (``N×H×W``) inside the elliptical aperture of
    circularised radius ``radius`` (pixels, ``N``) that follows the light's own centre, axis
    ratio and orientation (second moments, held fixed: the gradient moves the light, not the
    aperture), and the fraction a galaxy of exactly that half-light radius would give.

    Each pixel counts with the part of its area inside the aperture (``supersample``² points
    per pixel, softened by a quarter of their spacing).  A pixel's light is not spread evenly
    over it, though: near the centre of a galaxy a few pixels across it leans inwards, and such
    an aperture misses a part of it.  The second value measures that on an exponential disk of
    the same centre, shape and half-light radius (its light integrated over the supersampling
    points): ½ minus what the pixel weights miss of it, the fraction to aim at.  Differentiable
    in ``img`` (the first value)."""
    n, h, w = img.shape
    radius = radius.to(img.dtype)
    with torch.no_grad():
        cx, cy, q, theta = _light_ellipse(img.detach(), radius)
        k = int(supersample)
        offs = (torch.arange(k, dtype=img.dtype, device=img.device) + 0.5) / k - 0.5
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=img.dtype, device=img.device),
            torch.arange(w, dtype=img.dtype, device=img.device),
            indexing="ij",
        )
        weight = torch.zeros_like(img)
        disk = torch.zeros_like(img)  # the exponential, integrated over each pixel
        disk_in = torch.zeros_like(img)  # ... over the part of each pixel inside
        scale = 1.678347 / radius.clamp_min(1e-6)  # exponential: hlr = 1.678 scale lengths
        for oy in offs:
            for ox in offs:
                inside = _ellipse_mask(xx + ox, yy + oy, cx, cy, radius, q, theta, soft=0.25 / k)
                r = radius[:, None, None] - _ellipse_mask(
                    xx + ox, yy + oy, cx, cy, radius, q, theta, soft=-1.0
                )
                e = torch.exp(-r * scale[:, None, None])
                weight += inside
                disk += e
                disk_in += e * inside
        weight /= k * k
        d_tot = disk.sum(dim=(1, 2)).clamp_min(1e-30)
        missed = (disk_in.sum(dim=(1, 2)) - (disk * weight).sum(dim=(1, 2))) / d_tot
        target = 0.5 - missed
    # a scene that is mostly negative (a generator early in training) has no meaningful
    # fraction: the denominator is held at a tenth of its absolute light
    total = torch.maximum(img.sum(dim=(1, 2)), 0.1 * img.abs().sum(dim=(1, 2)).clamp_min(1e-30))
    return (img * weight).sum(dim=(1, 2)) / total, target


def condition_consistency(
    scene: Tensor,
    names,
    conditions: Tensor,
    *,
    pixel_scale: float,
    bands,
    ref_band: int,
    flux_tol: float = 0.1,
    size_tol: float = 0.1,
) -> Tensor:
    """How far a generator's pre-PSF galaxies (``scene``: ``N×C×H×W`` in the data's physical
    units on pixels of ``pixel_scale`` arcsec) are from the physical conditions they were drawn
    with (``conditions``: ``N×K`` in catalogue units, columns ``names``).

    * ``flux`` (counts in the reference band ``ref_band``) and ``flux_<band>``: the total of
      the band's pixels, as a magnitude error ``Δm = 2.5 log10(F / F_cond)``;
    * ``hlr`` (arcsec, circularised, reference band): the fraction of the band's light inside
      the galaxy's own elliptical aperture of circularised radius ``hlr`` should be ½; the
      error ``2 (f − ½)`` is about the relative size error (an exponential disk's enclosed
      light grows by 0.53 per unit of log radius at its half-light radius).

    Each error is measured in units of its tolerance (``flux_tol`` magnitudes, ``size_tol`` in
    relative size) and costs a smooth L1 (quadratic within half a tolerance, linear beyond),
    averaged over the batch and summed over the columns.  Other columns cost nothing (the
    projection discriminator alone conditions them).  0 for a galaxy that has the asked flux
    and half-light radius."""
    names = list(names)
    bands = list(bands)
    conditions = conditions.to(scene.device, scene.dtype)
    total = scene.new_zeros(())
    for k, name in enumerate(names):
        band = ref_band
        if name.startswith("flux_") and name[5:] in bands:
            band = bands.index(name[5:])
        elif name not in CONSISTENCY_COLUMNS:
            continue
        light = scene[:, band]
        target = conditions[:, k]
        if name == "hlr":
            frac, aim = aperture_fraction(light, target / float(pixel_scale))
            err = 2.0 * (frac - aim) / float(size_tol)
        else:
            ratio = light.sum(dim=(1, 2)) / target.clamp_min(1e-30)
            # below a thousandth of the asked flux (or negative) the magnitude goes on
            # linearly, so the gradient still points up
            low = 1e-3
            mag = torch.where(
                ratio > low,
                2.5 * torch.log10(ratio.clamp_min(low)),
                2.5 * (math.log10(low) + (ratio - low) / (low * math.log(10.0))),
            )
            err = mag / float(flux_tol)
        total = total + F.smooth_l1_loss(err, torch.zeros_like(err), beta=0.5)
    return total
