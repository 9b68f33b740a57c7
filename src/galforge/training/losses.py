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
