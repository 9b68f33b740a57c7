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

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from galforge.seeding import step_generator

__all__ = [
    "EMA_BN_IMAGES",
    "GeneratorEMA",
    "batchnorm_layers",
    "ema_update",
    "recalibrate_batchnorm",
]

#: images the EMA generator's batch-norm statistics are recomputed from
EMA_BN_IMAGES = 2048


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


class GeneratorEMA:
    """The EMA copy of a recipe's generator kept by the trainer.

    ``start_from`` is copied (the recipe's generator, or an ``--init`` model's EMA) and frozen.
    :meth:`update` takes an EMA step with a warm-up; :meth:`calibrated` returns the copy with
    batch-norm statistics of its own weights, recomputed at most once per EMA step from a
    generator of its own (``(seed, "ema-batchnorm", step)``), so training draws are untouched.
    """

    def __init__(self, start_from: nn.Module, decay: float):
        self.decay = float(decay)
        self.net = copy.deepcopy(start_from).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.fresh = False  # batch-norm statistics computed for the current weights

    def update(self, gen: nn.Module, done: int) -> None:
        """EMA step after ``done`` optimisation steps, with a warm-up: the decay is
        ``min(decay, (1 + done) / (10 + done))``, so the random initial weights are forgotten
        within the first few hundred steps instead of lingering for ``1 / (1 - decay)``."""
        ema_update(self.net, gen, min(self.decay, (1.0 + done) / (10.0 + done)))
        self.fresh = False

    def calibrated(self, recipe, batch: int, seed: int, step: int) -> nn.Module:
        """The EMA generator, its batch-norm statistics recomputed for its own weights from
        latents (and conditions) the recipe draws (:func:`recalibrate_batchnorm`)."""
        if self.fresh:
            return self.net
        layers = recipe.ema_batchnorm_layers(self.net)
        if layers:
            batch = max(2, int(batch))
            device = recipe.device
            rng = step_generator(int(seed), "ema-batchnorm", step, device=device)

            def draw(_i: int) -> tuple[tuple, dict]:
                z = recipe.sample_latent(batch, rng).to(device)
                cond = recipe.sample_conditions(batch, rng)
                return ((z,) if cond is None else (z, cond.to(device))), {}

            recalibrate_batchnorm(self.net, layers, draw, batches=-(-EMA_BN_IMAGES // batch))
        self.fresh = True
        return self.net

    def load(self, tensors: Mapping[str, torch.Tensor], fallback: nn.Module) -> None:
        """Load the ``ema.*`` tensors of a checkpoint (``fallback``'s weights when it has
        none: a checkpoint written without EMA)."""
        sd = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        self.net.load_state_dict(sd if sd else fallback.state_dict())
        self.fresh = False
