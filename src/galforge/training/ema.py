"""The generator EMA: its update, and batch-norm statistics that match its own weights.

An EMA copy of a generator averages the *weights* of the raw generator over the last
``1 / (1 - decay)`` steps.  Batch-norm running statistics are not weights: copied from the
raw generator they describe the raw generator's activations, not the averaged network's, and
a DCGAN sampled in eval mode with such statistics draws visibly worse images than the raw
generator.  :func:`recalibrate_batchnorm` recomputes them for the EMA copy itself: it runs
the copy on fresh latents with only its batch-norm layers in training mode (each normalises
with its batch's statistics, exactly as in a training step) and sets every running mean and
variance to the plain average over those batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["batchnorm_layers", "ema_update", "recalibrate_batchnorm"]


def ema_update(ema: nn.Module, gen: nn.Module, decay: float) -> None:
    """``ema ← decay · ema + (1 - decay) · gen`` for the parameters; buffers are copied."""
    with torch.no_grad():
        e_params = list(ema.parameters())
        g_params = [p.detach() for p in gen.parameters()]
        torch._foreach_lerp_(e_params, g_params, 1.0 - float(decay))
        for eb, gb in zip(ema.buffers(), gen.buffers(), strict=True):
            eb.copy_(gb)


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    """The batch-norm layers of ``module`` that keep running statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


@torch.no_grad()
def recalibrate_batchnorm(
    gen: nn.Module,
    layers: Sequence[_BatchNorm],
    draw: Callable[[int], tuple[tuple, dict]],
    batches: int,
) -> int:
    """Recompute the running statistics of ``layers`` (batch-norm layers inside ``gen``).

    ``draw(i)`` returns the ``(args, kwargs)`` of ``gen``'s ``i``-th forward call.  Every
    other module of ``gen`` stays in eval mode (no dropout, no random noise drawn), so the
    only randomness is what ``draw`` supplies.  Returns the number of layers recalibrated;
    ``gen`` is left in eval mode.
    """
    layers = list(layers)
    if not layers or batches < 1:
        return 0
    momenta = [m.momentum for m in layers]
    gen.eval()
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        for i in range(int(batches)):
            args, kwargs = draw(i)
            gen(*args, **kwargs)
    finally:
        for m, mom in zip(layers, momenta, strict=True):
            m.momentum = mom
            m.eval()
    return len(layers)
