"""Building blocks shared by the generator and discriminator architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import ModelError
from galforge.seeding import seeded_global


def init_normal_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise every convolution of ``module`` with weights ~ N(0, std) and zero biases.

    Batch-norm scales are drawn from N(1, std) and their shifts set to zero, the usual DCGAN
    convention.  Draws use the global torch generator: seed it (``torch.manual_seed``) or
    wrap the call in :func:`seeded_init` to make the weights reproducible.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def seeded_init(module: nn.Module, seed: int, std: float = 0.02) -> nn.Module:
    """Initialise ``module`` as :func:`init_normal_` does, from its own seeded generator.

    The global torch RNG state is saved and restored around the draws, so building a model
    never disturbs other random streams.
    """
    with seeded_global(int(seed)):
        init_normal_(module, std)
    return module


def same_size_padding(kernel_size: int) -> int:
    """Padding that makes a stride-2 (transposed) convolution halve (double) the size exactly.

    For a kernel ``k`` the output of a stride-2 transposed convolution is
    ``2 * in - 2 * p + k - 2``, hence ``p = (k - 2) / 2``: the kernel must be even and >= 2.
    """
    k = int(kernel_size)
    if k < 2 or k % 2:
        raise ModelError(
            f"model.kernel_size={kernel_size} is not usable: stride-2 layers need an even "
            "kernel size >= 2 (the paper uses 4)"
        )
    return (k - 2) // 2


class ScheduledDropout(nn.Module):
    """Dropout that can be switched off for good during training (e.g. after epoch 200).

    ``active`` is a persistent buffer, so whether the layer is still on is saved in every
    checkpoint and restored on resume.  ``spatial=True`` drops whole feature maps
    (``dropout2d``) instead of single activations.  Like ``nn.Dropout`` it does nothing in
    ``eval()`` mode.
    """

    def __init__(self, p: float = 0.5, spatial: bool = False):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ModelError(f"dropout rate {p} must be in [0, 1)")
        self.p = float(p)
        self.spatial = bool(spatial)
        self.register_buffer("active", torch.tensor(True))
        self._on = True  # host-side copy of ``active``: no device sync in forward

    def switch_off(self) -> None:
        """Remove the layer from the network from now on (it becomes the identity)."""
        self.active.fill_(False)
        self._on = False

    @property
    def is_on(self) -> bool:
        return self._on

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._on = bool(self.active)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or not self._on:
            return x
        if self.spatial:
            return F.dropout2d(x, self.p, training=True)
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, spatial={self.spatial}"
