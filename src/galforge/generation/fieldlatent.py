"""The conceptual latent of a deep field, drawn chunk by chunk, and the noise fields beside it.

Part of the field engine (:mod:`galforge.generation.field`): chunk ``(i, j)`` of the latent
comes from its own generator (:func:`galforge.seeding.field_chunk_generator`), so any window
can be drawn on its own and its values do not depend on the tile size or the field size.
"""

from __future__ import annotations

import torch
from torch import nn

from galforge.seeding import check_seed, derive_seed, field_chunk_generator

LATENT_CHUNK = 64


class FieldLatent:
    """The conceptual latent ``[channels, h, w]`` of a field, drawn chunk by chunk."""

    def __init__(
        self, seed: int, latent_hw: tuple[int, int], channels: int = 50, chunk: int = LATENT_CHUNK
    ):
        self.seed = check_seed(seed)
        self.h, self.w = int(latent_hw[0]), int(latent_hw[1])
        self.channels = int(channels)
        self.chunk = int(chunk)

    def _chunk(self, i: int, j: int) -> torch.Tensor:
        rng = field_chunk_generator(self.seed, i, j)
        return torch.randn((self.channels, self.chunk, self.chunk), generator=rng)

    def window(self, y0: int, x0: int, h: int, w: int) -> torch.Tensor:
        """Latent pixels ``[y0, y0 + h) x [x0, x0 + w)``; zero outside the field."""
        out = torch.zeros((self.channels, h, w))
        ys, ye = max(y0, 0), min(y0 + h, self.h)
        xs, xe = max(x0, 0), min(x0 + w, self.w)
        if ys >= ye or xs >= xe:
            return out
        c = self.chunk
        for i in range(ys // c, (ye - 1) // c + 1):
            for j in range(xs // c, (xe - 1) // c + 1):
                block = self._chunk(i, j)
                cy0, cy1 = max(ys, i * c), min(ye, (i + 1) * c)
                cx0, cx1 = max(xs, j * c), min(xe, (j + 1) * c)
                out[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = block[
                    :, cy0 - i * c : cy1 - i * c, cx0 - j * c : cx1 - j * c
                ]
        return out

    def whole(self) -> torch.Tensor:
        """The whole latent ``[1, channels, h, w]`` (for fields small enough to hold)."""
        return self.window(0, 0, self.h, self.w)[None]


def add_sky_noise(
    generator: nn.Module, y: torch.Tensor, seed: int, field_hw, y0: int, x0: int
) -> torch.Tensor:
    """Pixels ``y`` (model space, ``1×C×h×w``, at ``(y0, x0)`` of a field of ``field_hw``
    pixels) with the generator's learned sky noise added (unchanged for generators without).

    The unit noise is a field of its own, drawn chunk by chunk from ``seed`` like the
    latent, so a field rendered tile by tile equals the one rendered whole.
    """
    sky = getattr(generator, "sky", None)
    if sky is None:
        return y
    h, w = y.shape[-2:]
    noise = FieldLatent(derive_seed(seed, "sky-noise"), field_hw, sky.channels)
    eps = noise.window(y0 - 1, x0 - 1, h + 2, w + 2)[None].to(y.device, y.dtype)
    return sky(y, eps)


def ensemble_index(ty: int, tx: int, k: int, seed: int = 0) -> int:
    """Generator used by tile ``(ty, tx)`` in a ``k``-member self-ensemble (module docstring)."""
    return (ty + 2 * tx + seed) % k
