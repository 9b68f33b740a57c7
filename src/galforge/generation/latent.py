"""Latent-space helpers: seeded latents, truncation, interpolation and vector arithmetic.

Latents are float32 tensors ``N×...`` (for a DCGAN ``N×100×1×1``). Every random latent comes
from :func:`gaussian_latents`, whose row ``k`` depends only on ``(seed, start + k)`` — the
same stream :meth:`galforge.generation.Bundle.latent` uses — so a latent picked here reproduces
the sample of that seed and index.

Typical uses with a loaded bundle ``g``::

    z = g.latent(2, seed=7)                           # samples 0 and 1 of seed 7
    path = interpolate(z[0], z[1], steps=9)            # spherical path between them
    frames = g.generate_from_latent(path)              # 9 images, physical units
    z_t = truncate(g.latent(16, seed=0), 0.7)          # more typical galaxies
    z = g.latent(500, seed=1)                          # vector arithmetic:
    direction = attribute_direction(z, with_attr=mask_big, without_attr=~mask_big)
    bigger = add_direction(z[:8], direction, scale=1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from galforge.errors import ConfigError
from galforge.seeding import sample_generator, sample_latents

__all__ = [
    "add_direction",
    "arithmetic",
    "attribute_direction",
    "gaussian_latents",
    "group_mean",
    "interpolate",
    "lerp",
    "slerp",
    "truncate",
    "truncated_gaussian_latents",
]


def gaussian_latents(
    per_sample_shape: Sequence[int], n: int, seed: int, *, start: int = 0
) -> torch.Tensor:
    """Standard normal latents for sample indices ``start..start+n-1`` of ``seed``.

    Row ``k`` depends only on ``(seed, start + k)``, never on how many rows are drawn at once.
    """
    return sample_latents(tuple(per_sample_shape), n, seed, start=start)


def truncated_gaussian_latents(
    per_sample_shape: Sequence[int],
    n: int,
    seed: int,
    threshold: float,
    *,
    start: int = 0,
    max_rounds: int = 1000,
) -> torch.Tensor:
    """Normal latents with every component inside ``[-threshold, threshold]``.

    Components outside are redrawn from the sample's own seeded stream (the "truncation
    trick" of Brock et al. 2019); as with :func:`gaussian_latents`, row ``k`` depends only
    on ``(seed, start + k)``.
    """
    threshold = float(threshold)
    if not threshold > 0:
        raise ConfigError(f"truncation threshold {threshold}: must be > 0")
    shape = tuple(int(s) for s in per_sample_shape)
    out = torch.empty((int(n), *shape), dtype=torch.float32)
    for k in range(int(n)):
        gen = sample_generator(seed, start + k)
        z = torch.randn(shape, generator=gen)
        for _ in range(max_rounds):
            outside = z.abs() > threshold
            if not bool(outside.any()):
                break
            z = torch.where(outside, torch.randn(shape, generator=gen), z)
        else:
            z = z.clamp(-threshold, threshold)
        out[k] = z
    return out


def truncate(z: torch.Tensor, psi: float, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Pull latents toward the mean latent: ``mean + psi * (z - mean)``.

    ``psi = 1`` leaves them unchanged, ``psi = 0`` gives the mean latent (the "average"
    image); values in between trade variety for typicality. ``mean`` defaults to zero, the
    mean of Gaussian latents.
    """
    psi = float(psi)
    if not np.isfinite(psi) or psi < 0:
        raise ConfigError(f"truncation psi={psi}: must be a number >= 0 (1 = no truncation)")
    z = torch.as_tensor(z, dtype=torch.float32)
    if mean is None:
        return z * psi
    mean = torch.as_tensor(mean, dtype=z.dtype, device=z.device)
    return mean + psi * (z - mean)


def _as_pair(z0, z1) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(z0, dtype=torch.float32)
    b = torch.as_tensor(z1, dtype=torch.float32)
    if a.shape != b.shape:
        raise ConfigError(f"latents of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be mixed")
    return a, b


def _as_weights(t) -> tuple[torch.Tensor, bool]:
    w = torch.as_tensor(t, dtype=torch.float32)
    return w.reshape(-1), w.dim() == 0


def lerp(z0, z1, t) -> torch.Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``; ``t`` a number or a sequence (stacked)."""
    a, b = _as_pair(z0, z1)
    w, scalar = _as_weights(t)
    shape = (-1,) + (1,) * a.dim()
    out = (1 - w).reshape(shape) * a[None] + w.reshape(shape) * b[None]
    return out[0] if scalar else out


def slerp(z0, z1, t, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (along the great circle between ``z0`` and ``z1``).

    Keeps the norm of Gaussian latents typical along the path, unlike :func:`lerp`, whose
    midpoints are shorter than any real sample. Falls back to ``lerp`` for (anti)parallel
    latents. ``t`` a number or a sequence (stacked).
    """
    a, b = _as_pair(z0, z1)
    w, scalar = _as_weights(t)
    fa, fb = a.reshape(-1).double(), b.reshape(-1).double()
    cos = torch.dot(fa, fb) / (fa.norm() * fb.norm()).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(torch.sin(omega).abs()) < eps:
        return lerp(a, b, w[0] if scalar else w)
    wd = w.double()
    ca = torch.sin((1 - wd) * omega) / torch.sin(omega)
    cb = torch.sin(wd * omega) / torch.sin(omega)
    out = ca[:, None] * fa[None] + cb[:, None] * fb[None]
    out = out.float().reshape((-1, *a.shape))
    return out[0] if scalar else out


def interpolate(z0, z1, steps: int, method: str = "slerp") -> torch.Tensor:
    """``steps`` latents from ``z0`` to ``z1`` inclusive (``method``: ``slerp`` or ``lerp``)."""
    if int(steps) < 2:
        raise ConfigError(f"interpolation steps={steps}: need at least 2")
    t = torch.linspace(0.0, 1.0, int(steps))
    if method == "slerp":
        return slerp(z0, z1, t)
    if method == "lerp":
        return lerp(z0, z1, t)
    raise ConfigError(f"interpolation method {method!r}: use slerp or lerp")


def _select(z: torch.Tensor, select) -> torch.Tensor:
    if select is None:
        return z
    sel = torch.as_tensor(np.asarray(select))
    if sel.dtype == torch.bool:
        if sel.shape[0] != z.shape[0]:
            raise ConfigError(f"selection mask has {sel.shape[0]} entries for {z.shape[0]} latents")
        return z[sel]
    return z[sel.long()]


def group_mean(z, select=None) -> torch.Tensor:
    """Mean latent of a group: all of ``z`` or the rows picked by ``select`` (mask or indices)."""
    z = torch.as_tensor(z, dtype=torch.float32)
    group = _select(z, select)
    if group.shape[0] == 0:
        raise ConfigError("the selected group of latents is empty; select at least one latent")
    return group.mean(dim=0)


def attribute_direction(z, with_attr, without_attr) -> torch.Tensor:
    """Direction from the mean latent of one group to that of another.

    ``mean(z[with_attr]) - mean(z[without_attr])``: e.g. latents whose images are large
    galaxies minus those that are small ones.
    """
    return group_mean(z, with_attr) - group_mean(z, without_attr)


def add_direction(z, direction, scale: float = 1.0) -> torch.Tensor:
    """Move latents along ``direction``: ``z + scale * direction`` (broadcast over rows)."""
    z = torch.as_tensor(z, dtype=torch.float32)
    d = torch.as_tensor(direction, dtype=torch.float32)
    return z + float(scale) * d


def arithmetic(plus: Sequence, minus: Sequence = ()) -> torch.Tensor:
    """Latent arithmetic: ``sum(plus) - sum(minus)`` (e.g. ``arithmetic([a, c], [b])``)."""
    if not plus:
        raise ConfigError("latent arithmetic needs at least one latent to add")
    total = torch.zeros_like(torch.as_tensor(plus[0], dtype=torch.float32))
    for term in plus:
        total = total + torch.as_tensor(term, dtype=torch.float32)
    for term in minus:
        total = total - torch.as_tensor(term, dtype=torch.float32)
    return total
