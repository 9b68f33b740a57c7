"""What the two StyleGAN generations share beyond layers: style mixing and layer freezing.

:func:`mixed_styles` is the style-mixing regularisation of Karras et al. (2019, §3.1), used
by both training recipes. :func:`freeze_leading` stops training the first groups of a
network's layers (``--freeze-g`` / ``--freeze-d``): each generation's networks only say
which layers form a group, in the order they are frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from galforge.errors import ModelError

__all__ = ["freeze_leading", "mixed_styles"]


def mixed_styles(
    G: nn.Module,
    n: int,
    sample_latent: Callable[[int, torch.Generator], Tensor],
    rng: torch.Generator,
    probability: float,
    device,
) -> Tensor:
    """Per-layer ws (``n×num_ws×w_dim``) of ``n`` samples with style mixing.

    Every layer takes ``w = G.mapping(z)``; with probability ``probability`` the layers from
    a random cutoff (1 to ``num_ws - 1``) on take the w of a second latent instead. The draws
    come from ``rng`` in a fixed order: the latents, the mixing decision, the cutoff, the
    second latents (drawn whether mixing happens or not, so the step's later draws never
    depend on the decision). ``G`` has ``mapping`` and ``num_ws``.
    """
    num_ws = int(G.num_ws)
    z = sample_latent(n, rng).to(device)
    ws = G.mapping(z)[:, None, :].repeat(1, num_ws, 1)
    draw = torch.rand((), generator=rng, device=rng.device).item()
    cutoff = int(torch.randint(1, num_ws, (), generator=rng, device=rng.device))
    z2 = sample_latent(n, rng).to(device)
    if draw < float(probability):
        second = G.mapping(z2)[:, None, :].expand(n, num_ws - cutoff, -1)
        ws = torch.cat([ws[:, :cutoff], second], dim=1)
    return ws


def freeze_leading(
    groups: Sequence[Sequence[nn.Module | nn.Parameter]],
    n: int,
    option: str,
    network: str,
    unit: str,
) -> list[nn.Parameter]:
    """Stop training the parameters of the first ``n`` of ``groups`` (modules or single
    parameters each) and return them; ``n`` outside ``0..len(groups)`` is a ModelError
    naming ``option`` ("--freeze-g 9: this generator has 8 synthesis layers")."""
    if not 0 <= int(n) <= len(groups):
        raise ModelError(f"{option} {n}: this {network} has {len(groups)} {unit}")
    params: list[nn.Parameter] = []
    for group in groups[: int(n)]:
        for part in group:
            params.extend(part.parameters() if isinstance(part, nn.Module) else [part])
    for p in params:
        p.requires_grad_(False)
    return params
