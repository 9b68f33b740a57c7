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
fast enough to go from 0 to 1 in ``speed_images`` images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from galforge.data.transforms import augment_batch
from galforge.errors import ConfigError

__all__ = ["AdaptiveAugment", "Augment", "FlipRotate"]


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
