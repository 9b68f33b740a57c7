"""GAN losses on discriminator logits, and label smoothing.

The discriminator networks return logits; the sigmoid of the papers is folded into
binary cross-entropy with logits, which equals ``BCE(sigmoid(x), t)`` without overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from galforge.errors import ConfigError


def smooth_real_labels(n: int, delta: float, rng: torch.Generator, *,
                       clip: float | None = None, device=None) -> Tensor:
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


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor,
                       real_targets: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
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
