"""Augmentation of training images, with state where the method needs it.

An :class:`Augment` maps a batch to an augmented batch with draws from a given generator
(seeded from ``(seed, step)`` by its caller, so a resumed run draws the same). Its
``state_dict()`` is JSON and goes into every checkpoint; ``load_state_dict`` restores it on
resume. A recipe lists its augmentations in :meth:`galforge.training.recipe.Recipe.augmentations`
and the trainer checkpoints them.

:class:`FlipRotate` is stateless (random flips, quarter turns and optional free rotation of
each image). :class:`AdaptiveAugment` applies flips, quarter turns and integer translations
each with a probability ``p`` that it adapts to the discriminator's overfitting, in the
spirit of adaptive discriminator augmentation (Karras et al. 2020): the recipe feeds it the
sign of the discriminator's outputs on real images (:meth:`AdaptiveAugment.observe`), and
every ``interval`` observations ``p`` moves toward keeping the mean sign at ``target``,
fast enough to go from 0 to 1 in ``speed_images`` images. Its operations are exact pixel
permutations (no interpolation: the noise spectrum and the PSF are untouched) and have a double
backward, so R1 can be taken through them.

:class:`DiffAugment` is the fixed, differentiable alternative (Zhao et al. 2020): integer
translation with zero fill and cutout, applied to reals and fakes alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from galforge.data.transforms import augment_batch
from galforge.errors import ConfigError

__all__ = ["AdaptiveAugment", "Augment", "DiffAugment", "FlipRotate"]


class Augment:
    """Base of augmentations: identity, no state."""

    def __call__(self, x: Tensor, rng: torch.Generator) -> Tensor:
        return x

    def state_dict(self) -> dict:
        """JSON-safe state saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


class FlipRotate(Augment):
    """Per-image random flips (p = 0.5 per axis), quarter turns and optional free rotation."""

    def __init__(self, flips: bool = True, rot90: bool = True, rotate: str | None = None):
        self.flips, self.rot90, self.rotate = bool(flips), bool(rot90), rotate

    def __call__(self, x: Tensor, rng: torch.Generator) -> Tensor:
        if not (self.flips or self.rot90 or self.rotate):
            return x
        return augment_batch(x, rng, flips=self.flips, rot90=self.rot90, rotate=self.rotate)


class AdaptiveAugment(Augment):
    """Flips, quarter turns and translations applied with an adaptive probability ``p``.

    ``target``: the mean sign of D(real) to hold (0.6 in the ADA paper); ``interval``:
    observations between adjustments; ``speed_images``: images for ``p`` to move by 1;
    ``max_shift``: largest translation as a fraction of the image side (wrapped around).
    """

    def __init__(self, p: float = 0.0, target: float = 0.6, interval: int = 4,
                 speed_images: int = 500_000, max_shift: float = 0.125):
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"augment p={p} must be in [0, 1]")
        if int(interval) < 1 or int(speed_images) < 1:
            raise ConfigError("augment interval and speed_images must be >= 1")
        self.p = float(p)
        self.target = float(target)
        self.interval = int(interval)
        self.speed_images = int(speed_images)
        self.max_shift = float(max_shift)
        self._sign_sum = 0.0
        self._images = 0
        self._calls = 0

    def __call__(self, x: Tensor, rng: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        dev = rng.device
        draws = torch.rand((n, 3), generator=rng, device=dev).cpu()
        flips = torch.randint(0, 2, (n, 2), generator=rng, device=dev).cpu()
        turns = torch.randint(1, 4, (n,), generator=rng, device=dev).cpu()
        sy = max(1, int(round(self.max_shift * h)))
        sx = max(1, int(round(self.max_shift * w)))
        shifts = torch.stack([torch.randint(-sy, sy + 1, (n,), generator=rng, device=dev),
                              torch.randint(-sx, sx + 1, (n,), generator=rng, device=dev)], 1).cpu()
        if self.p <= 0.0:
            return x
        out = []
        for i in range(n):
            img = x[i]
            if draws[i, 0] < self.p:
                if flips[i, 0]:
                    img = img.flip(-1)
                if flips[i, 1]:
                    img = img.flip(-2)
            if draws[i, 1] < self.p and h == w:
                img = torch.rot90(img, int(turns[i]), dims=(-2, -1))
            if draws[i, 2] < self.p:
                img = torch.roll(img, (int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
            out.append(img)
        return torch.stack(out)

    def observe(self, real_logits: Tensor) -> None:
        """Feed the discriminator's outputs on real images; adjusts ``p`` every ``interval``."""
        signs = torch.sign(real_logits.detach().float())
        self._sign_sum += float(signs.sum())
        self._images += int(signs.numel())
        self._calls += 1
        if self._calls % self.interval == 0 and self._images:
            rt = self._sign_sum / self._images
            step = math.copysign(self._images / self.speed_images, rt - self.target)
            self.p = min(1.0, max(0.0, self.p + step))
            self._sign_sum, self._images = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self._sign_sum, "images": self._images,
                "calls": self._calls}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state.get("p", self.p))
        self._sign_sum = float(state.get("sign_sum", 0.0))
        self._images = int(state.get("images", 0))
        self._calls = int(state.get("calls", 0))


class DiffAugment(Augment):
    """Per-image integer translation (zero fill) and cutout, always on, differentiable.

    ``translation``: largest shift as a fraction of the side (1/8 in Zhao et al. 2020);
    ``cutout``: side of the zeroed square as a fraction of the image side (1/2).
    """

    def __init__(self, translation: float = 0.125, cutout: float = 0.5):
        self.translation, self.cutout = float(translation), float(cutout)

    def __call__(self, x: Tensor, rng: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        dev = rng.device
        sy, sx = int(round(self.translation * h)), int(round(self.translation * w))
        ty = torch.randint(-sy, sy + 1, (n, 1), generator=rng, device=dev).to(x.device)
        tx = torch.randint(-sx, sx + 1, (n, 1), generator=rng, device=dev).to(x.device)
        ch, cw = int(round(self.cutout * h)), int(round(self.cutout * w))
        cy = torch.randint(0, h, (n, 1), generator=rng, device=dev).to(x.device) - ch // 2
        cx = torch.randint(0, w, (n, 1), generator=rng, device=dev).to(x.device) - cw // 2
        # translation: output pixel (i, j) reads input (i - ty, j - tx), zero outside
        padded = torch.nn.functional.pad(x, (sx, sx, sy, sy))
        iy = torch.arange(h, device=x.device)[None] - ty + sy          # n×h
        ix = torch.arange(w, device=x.device)[None] - tx + sx          # n×w
        b = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[b, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)
        # cutout: a ch×cw square with its top-left corner at (cy, cx) set to zero
        yy = torch.arange(h, device=x.device)[None]
        xx = torch.arange(w, device=x.device)[None]
        my = ((yy >= cy) & (yy < cy + ch)).to(x.dtype)
        mx = ((xx >= cx) & (xx < cx + cw)).to(x.dtype)
        keep = 1.0 - my[:, None, :, None] * mx[:, None, None, :]
        return x * keep
