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

:class:`AdaptiveAugment` also takes **optional stages** for float multi-band science data
(``stages``, the recipe's ``model.ada_pipeline``), each applied to an image with the same
probability ``p`` and acting on every band alike (none mixes bands or inverts brightness):

* ``scale`` — isotropic scaling by ``2^N(0, scale_std)``; ``rotate`` — rotation by an angle
  uniform in [-π, π); ``xfrac`` — fractional translation by ``N(0, xfrac_std)`` of the side
  (the values of the ADA paper, its appendix B.2).  The three are composed into one affine map
  per image and resampled once, bilinearly, with **reflection** padding: what enters the frame
  is mirrored sky with its own noise texture, whereas zero fill would paint a sharp-edged flat
  region of one model-space value that no real stamp has and that D would learn to use.
  Images that draw none of the three are passed through untouched (exactly);
* ``sky`` — an additive offset per image and band, ``N(0, sky_std)`` in model units (a sky
  subtraction error; ADA's brightness std 0.2 is the default);
* ``gauss`` — Gaussian pixel noise of a per-image level ``|N(0, noise_std)|`` (0.1 in ADA);
* ``cutout`` — a rectangle of ``cutout`` × each side, centred uniformly, set to the image's
  median per band (the sky level of a galaxy stamp; zero in model space is not sky).

All of them are gathers, products and sums of the input with weights that depend only on the
random draws, so they have a double backward and R1 can be taken through them.  Resampling
smooths the pixel noise and the PSF a little, which is why the default pipeline (``galaxy``:
``xflip``, ``rot90``, ``xint``) has none of them.  Pipelines are written as stage names and
groups joined by ``+`` or ``,``: ``galaxy`` (xflip, rot90, xint), ``geom`` (scale, rotate,
xfrac), ``noise`` (sky, gauss, cutout); e.g. ``galaxy+geom``, ``galaxy+geom+noise``,
``galaxy,rotate,sky``.  Stages run in one fixed order whatever the order written.

:class:`DiffAugment` is the fixed, differentiable alternative (Zhao et al. 2020): integer
translation with zero fill and cutout, applied to reals and fakes alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from galforge.data.transforms import augment_batch
from galforge.errors import ConfigError

__all__ = [
    "ADA_GROUPS",
    "ADA_STAGES",
    "AdaptiveAugment",
    "Augment",
    "DiffAugment",
    "FlipRotate",
    "affine_resample",
    "cutout",
    "gaussian_noise",
    "geometric_matrix",
    "parse_pipeline",
    "sky_offset",
]

#: the stages of :class:`AdaptiveAugment`, in the order they are applied
ADA_STAGES = ("xflip", "rot90", "xint", "scale", "rotate", "xfrac", "sky", "gauss", "cutout")
#: names standing for several stages
ADA_GROUPS = {
    "galaxy": ("xflip", "rot90", "xint"),
    "geom": ("scale", "rotate", "xfrac"),
    "noise": ("sky", "gauss", "cutout"),
}
GALAXY = ADA_GROUPS["galaxy"]


def parse_pipeline(spec, option: str = "model.ada_pipeline") -> tuple[str, ...]:
    """The stages of a pipeline written as names and groups joined by ``+`` or ``,`` (or a
    list of them), in the order they are applied."""
    tokens = spec if isinstance(spec, (list, tuple)) else str(spec).replace(",", "+").split("+")
    chosen: set[str] = set()
    for token in (str(t).strip() for t in tokens):
        if token in ADA_GROUPS:
            chosen.update(ADA_GROUPS[token])
        elif token in ADA_STAGES:
            chosen.add(token)
        else:
            raise ConfigError(
                f"{option}={spec!r}: unknown stage {token!r}; use stages "
                f"{', '.join(ADA_STAGES)} or groups {', '.join(ADA_GROUPS)} joined by + "
                "(e.g. galaxy+geom)"
            )
    if not chosen:
        raise ConfigError(f"{option}={spec!r} names no stage; the default is galaxy")
    return tuple(s for s in ADA_STAGES if s in chosen)


# ----------------------------------------------------------------------------- stages
def geometric_matrix(h: int, w: int, scale: Tensor, angle: Tensor, shift: Tensor) -> Tensor:
    """``N×2×3`` maps from output to input pixel coordinates ``(x, y)`` (pixel indices) of
    the image transform "scale by ``scale``, rotate by ``angle`` (radians, from +x toward +y),
    translate by ``shift`` (``N×2`` pixels, x then y)" about the image centre."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    cos, sin = torch.cos(angle), torch.sin(angle)
    inv = 1.0 / scale
    # input = R(-angle) · (output - centre - shift) / scale + centre
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    a = a * inv[:, None, None]
    off = torch.stack([-(cx + shift[:, 0]), -(cy + shift[:, 1])], -1)
    t = (a @ off[:, :, None])[:, :, 0] + torch.tensor([cx, cy], dtype=a.dtype, device=a.device)
    return torch.cat([a, t[:, :, None]], dim=2)


def _reflect(c: Tensor, size: int) -> Tensor:
    """Continuous pixel coordinates folded into ``[-0.5, size - 0.5]`` by reflection."""
    period = 2.0 * size
    c = torch.remainder(c + 0.5, period)
    c = torch.where(c > size, period - c, c)
    return c - 0.5


def affine_resample(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear resampling of ``x`` (``N×C×H×W``) at ``theta`` (``N×2×3``, output pixel ->
    input pixel coordinates) with reflection padding. Linear in ``x`` through gathers (weights
    from ``theta`` only), so every order of derivative with respect to ``x`` exists."""
    n, c, h, w = x.shape
    dev = x.device
    theta = theta.to(device=dev, dtype=torch.float32)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=dev, dtype=torch.float32),
        torch.arange(w, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.ones(h * w, device=dev)], 0)
    src = theta @ pts  # N×2×HW
    sx, sy = _reflect(src[:, 0], w), _reflect(src[:, 1], h)
    x0, y0 = torch.floor(sx), torch.floor(sy)
    fx, fy = (sx - x0).to(x.dtype), (sy - y0).to(x.dtype)
    x0, y0 = x0.long(), y0.long()
    # a neighbour outside the frame is its mirror image about the edge: the edge pixel
    xs = (x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1))
    ys = (y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1))
    flat = x.reshape(n, c, h * w)
    out = 0
    for yi, wy in ((ys[0], 1 - fy), (ys[1], fy)):
        for xi, wx in ((xs[0], 1 - fx), (xs[1], fx)):
            idx = (yi * w + xi)[:, None, :].expand(n, c, h * w)
            out = out + flat.gather(2, idx) * (wy * wx)[:, None, :]
    return out.reshape(n, c, h, w)


def sky_offset(x: Tensor, offset: Tensor) -> Tensor:
    """``x`` plus a constant per image and band (``offset``: ``N×C``)."""
    return x + offset.to(x.dtype)[:, :, None, None]


def gaussian_noise(x: Tensor, sigma: Tensor, unit_noise: Tensor) -> Tensor:
    """``x`` plus ``sigma`` (one level per image, ``N``) times unit Gaussian noise."""
    return x + sigma.to(x.dtype)[:, None, None, None] * unit_noise.to(x.dtype)


def cutout(x: Tensor, centre: Tensor, size: float) -> Tensor:
    """``x`` with a ``size`` × side rectangle centred at ``centre`` (``N×2``, fractions of
    the height and width) set to each image's median per band."""
    n, c, h, w = x.shape
    ch, cw = size * h, size * w
    cy, cx = centre[:, 0:1] * h, centre[:, 1:2] * w
    yy = torch.arange(h, device=x.device, dtype=torch.float32)[None] + 0.5
    xx = torch.arange(w, device=x.device, dtype=torch.float32)[None] + 0.5
    my = ((yy - cy.to(x.device)).abs() < ch / 2).to(x.dtype)
    mx = ((xx - cx.to(x.device)).abs() < cw / 2).to(x.dtype)
    cut = my[:, None, :, None] * mx[:, None, None, :]
    fill = x.flatten(2).median(dim=2).values[:, :, None, None]
    return x * (1 - cut) + fill * cut


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
    """Flips, quarter turns and translations (and the optional stages) applied with an
    adaptive probability ``p``.

    ``target``: the mean sign of D(real) to hold (0.6 in the ADA paper); ``interval``:
    observations between adjustments; ``speed_images``: images for ``p`` to move by 1;
    ``max_shift``: largest translation as a fraction of the image side (wrapped around);
    ``stages``: the pipeline (:func:`parse_pipeline`; default ``galaxy``); ``scale_std``,
    ``xfrac_std``, ``sky_std``, ``noise_std``, ``cutout_size``: the optional stages' sizes
    (see the module docstring).
    """

    def __init__(
        self,
        p: float = 0.0,
        target: float = 0.6,
        interval: int = 4,
        speed_images: int = 500_000,
        max_shift: float = 0.125,
        stages="galaxy",
        scale_std: float = 0.2,
        xfrac_std: float = 0.125,
        sky_std: float = 0.2,
        noise_std: float = 0.1,
        cutout_size: float = 0.5,
    ):
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"augment p={p} must be in [0, 1]")
        if int(interval) < 1 or int(speed_images) < 1:
            raise ConfigError("augment interval and speed_images must be >= 1")
        self.p = float(p)
        self.target = float(target)
        self.interval = int(interval)
        self.speed_images = int(speed_images)
        self.max_shift = float(max_shift)
        self.stages = parse_pipeline(stages, "augment stages")
        self.scale_std, self.xfrac_std = float(scale_std), float(xfrac_std)
        self.sky_std, self.noise_std = float(sky_std), float(noise_std)
        self.cutout_size = float(cutout_size)
        if not 0.0 < self.cutout_size <= 1.0:
            raise ConfigError(f"augment cutout size {cutout_size} must be in (0, 1]")
        for name in ("scale_std", "xfrac_std", "sky_std", "noise_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment {name}={getattr(self, name)} must be >= 0")
        self._sign_sum = 0.0
        self._images = 0
        self._calls = 0

    def __call__(self, x: Tensor, rng: torch.Generator) -> Tensor:
        if self.stages == GALAXY:
            return self._galaxy(x, rng, True, True, True)
        x = self._galaxy(x, rng, *(s in self.stages for s in GALAXY))
        return self._optional(x, rng)

    def _galaxy(
        self, x: Tensor, rng: torch.Generator, xflip: bool, rot90: bool, xint: bool
    ) -> Tensor:
        """The exact stages (drawn as they always were, then used when enabled)."""
        n, _, h, w = x.shape
        dev = rng.device
        draws = torch.rand((n, 3), generator=rng, device=dev).cpu()
        flips = torch.randint(0, 2, (n, 2), generator=rng, device=dev).cpu()
        turns = torch.randint(1, 4, (n,), generator=rng, device=dev).cpu()
        sy = max(1, int(round(self.max_shift * h)))
        sx = max(1, int(round(self.max_shift * w)))
        shifts = torch.stack(
            [
                torch.randint(-sy, sy + 1, (n,), generator=rng, device=dev),
                torch.randint(-sx, sx + 1, (n,), generator=rng, device=dev),
            ],
            1,
        ).cpu()
        if self.p <= 0.0 or not (xflip or rot90 or xint):
            return x
        out = []
        for i in range(n):
            img = x[i]
            if xflip and draws[i, 0] < self.p:
                if flips[i, 0]:
                    img = img.flip(-1)
                if flips[i, 1]:
                    img = img.flip(-2)
            if rot90 and draws[i, 1] < self.p and h == w:
                img = torch.rot90(img, int(turns[i]), dims=(-2, -1))
            if xint and draws[i, 2] < self.p:
                img = torch.roll(img, (int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
            out.append(img)
        return torch.stack(out)

    def _optional(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """The optional stages, each image's each stage with probability ``p``; every draw is
        made whatever ``p`` (the stream of draws depends on the pipeline only)."""
        n, c, h, w = x.shape
        dev = rng.device
        on = set(self.stages)

        def gate() -> Tensor:
            return torch.rand((n,), generator=rng, device=dev).to(x.device) < self.p

        if on & {"scale", "rotate", "xfrac"}:
            ones = torch.ones(n, device=x.device)
            scale, angle, shift = ones, ones * 0.0, torch.zeros(n, 2, device=x.device)
            moved = torch.zeros(n, dtype=torch.bool, device=x.device)
            if "scale" in on:
                g = gate()
                draw = torch.randn((n,), generator=rng, device=dev).to(x.device)
                scale = torch.where(g, torch.exp2(draw * self.scale_std), scale)
                moved |= g
            if "rotate" in on:
                g = gate()
                draw = torch.rand((n,), generator=rng, device=dev).to(x.device)
                angle = torch.where(g, (draw * 2 - 1) * math.pi, angle)
                moved |= g
            if "xfrac" in on:
                g = gate()
                draw = torch.randn((n, 2), generator=rng, device=dev).to(x.device)
                size = torch.tensor([w, h], dtype=torch.float32, device=x.device)
                shift = torch.where(g[:, None], draw * self.xfrac_std * size, shift)
                moved |= g
            if bool(moved.any()):
                moved_x = affine_resample(x, geometric_matrix(h, w, scale, angle, shift))
                x = torch.where(moved[:, None, None, None], moved_x, x)
        if "sky" in on:
            g = gate()
            draw = torch.randn((n, c), generator=rng, device=dev).to(x.device)
            x = sky_offset(x, torch.where(g[:, None], draw * self.sky_std, 0.0))
        if "gauss" in on:
            g = gate()
            level = torch.randn((n,), generator=rng, device=dev).to(x.device).abs()
            unit = torch.randn((n, c, h, w), generator=rng, device=dev).to(x.device)
            x = gaussian_noise(x, torch.where(g, level * self.noise_std, 0.0), unit)
        if "cutout" in on:
            g = gate()
            centre = torch.rand((n, 2), generator=rng, device=dev).to(x.device)
            x = torch.where(g[:, None, None, None], cutout(x, centre, self.cutout_size), x)
        return x

    def observe(self, real_logits: Tensor) -> None:
        """Feed the discriminator's outputs on real images; adjusts ``p`` every ``interval``.

        In a data-parallel run the signs are summed over every process at each adjustment, so
        all processes take the same step from the global batch (and ``p`` stays one value)."""
        signs = torch.sign(real_logits.detach().float())
        self._sign_sum += float(signs.sum())
        self._images += int(signs.numel())
        self._calls += 1
        if self._calls % self.interval == 0:
            sign_sum, images = _summed_over_processes(
                self._sign_sum, self._images, real_logits.device
            )
            if images:
                rt = sign_sum / images
                step = math.copysign(images / self.speed_images, rt - self.target)
                self.p = min(1.0, max(0.0, self.p + step))
            self._sign_sum, self._images = 0.0, 0

    def state_dict(self) -> dict:
        return {
            "p": self.p,
            "sign_sum": self._sign_sum,
            "images": self._images,
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state.get("p", self.p))
        self._sign_sum = float(state.get("sign_sum", 0.0))
        self._images = int(state.get("images", 0))
        self._calls = int(state.get("calls", 0))


def _summed_over_processes(sign_sum: float, images: int, device) -> tuple[float, int]:
    """``(sign_sum, images)`` summed over the processes of a data-parallel run (as they are
    in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return sign_sum, images
    if dist.get_backend() != "nccl":  # gloo reduces CPU tensors
        device = "cpu"
    t = torch.tensor([sign_sum, float(images)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t[0]), int(round(float(t[1])))


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
        iy = torch.arange(h, device=x.device)[None] - ty + sy  # n×h
        ix = torch.arange(w, device=x.device)[None] - tx + sx  # n×w
        b = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[b, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)
        # cutout: a ch×cw square with its top-left corner at (cy, cx) set to zero
        yy = torch.arange(h, device=x.device)[None]
        xx = torch.arange(w, device=x.device)[None]
        my = ((yy >= cy) & (yy < cy + ch)).to(x.dtype)
        mx = ((xx >= cx) & (xx < cx + cw)).to(x.dtype)
        keep = 1.0 - my[:, None, :, None] * mx[:, None, None, :]
        return x * keep
