"""Spatial GAN training recipe (Smith & Geach 2019, MNRAS 490, 4985, section 2.3).

The networks see random crops of one or more large fields: every batch draws one crop size
from ``crop_sizes`` (64, 128 or 256 pixels by default, so the latent is 4, 8 or 16 pixels a
side), then one random position and random horizontal/vertical flips per crop
(:class:`FieldCrops`).  The data stay float32 with their full dynamic range: the trainer's
Normalizer clips each channel at its 99.99th percentile and maps it linearly to the sigmoid
range (0, 1), and that Normalizer is saved with the model so fields come back in the
input's units.

Each step updates the packed discriminator once and the generator once with the
relativistic average GAN loss; Adam with lr = 2e-4 and betas (0.5, 0.999) for both.
Snapshots for a self-ensemble are kept every 500 steps (``--set train.snapshot_every=K``
to change it, 0 to keep none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from galforge.errors import ConfigError, DataError
from galforge.models.sgan import (
    DEFAULT_WIDTHS,
    LATENT_CHANNELS,
    UPSCALE,
    SGANDiscriminator,
    SGANGenerator,
)
from galforge.seeding import global_scope, step_generator
from galforge.training.losses import ragan_d_loss, ragan_g_loss
from galforge.training.pipeline import BatchSource, Fields
from galforge.training.recipe import PairRecipe, Phase, StepContext
from galforge.training.recipes import register_recipe


@dataclass
class SGANSettings:
    """Hyper-parameters of the Spatial GAN recipe; the defaults are the paper's."""

    widths: list = field(default_factory=lambda: list(DEFAULT_WIDTHS))  # G widths per set
    d_widths: list = field(default_factory=lambda: [64, 128, 256, 512, 512])  # k4 s2 convs
    pack: int = 2  # PacGAN pack size
    crop_sizes: list = field(default_factory=lambda: [64, 128, 256])  # crop size per batch
    flips: bool = True  # random horizontal/vertical flips per crop
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    leaky_slope: float = 0.2
    sample_size: int = 64  # side of the sample-grid images
    sky_noise: bool = False  # G paints the noiseless field; learned sky noise

    def __post_init__(self):
        sizes = [int(s) for s in self.crop_sizes]
        if not sizes or any(s <= 0 or s % UPSCALE for s in sizes):
            raise ConfigError(
                f"model.crop_sizes={self.crop_sizes}: crop sizes must be positive multiples of 16"
            )
        if int(self.sample_size) % UPSCALE:
            raise ConfigError(f"model.sample_size={self.sample_size} must be a multiple of 16")


class FieldCrops(BatchSource):
    """Random crops of a stack of fields, one crop size per batch.

    Batch ``step`` draws, from a generator seeded with ``(seed, "sgan-crops", step)``: the crop
    size (uniform over the sizes that fit in the fields), then for each crop the field, the
    top-left corner and two flips.  ``steps_per_epoch`` is the number of batches whose crops
    cover the fields' area once at the mean crop size.
    """

    def __init__(
        self, data: Tensor, batch_size: int, seed: int, sizes=(64, 128, 256), flips: bool = True
    ):
        if data.dim() != 4 or data.shape[0] == 0:
            raise DataError(f"sgan: training data must be N×C×H×W fields, got {tuple(data.shape)}")
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flips = bool(flips)
        h, w = data.shape[-2:]
        self.sizes = sorted(int(s) for s in sizes if int(s) <= min(h, w))
        if not self.sizes:
            raise DataError(
                f"sgan: the field is {h}×{w} pixels, smaller than every crop size "
                f"{sorted(int(s) for s in sizes)}; give smaller model.crop_sizes"
            )
        mean_area = sum(s * s for s in self.sizes) / len(self.sizes)
        area = data.shape[0] * h * w
        self.steps_per_epoch = max(1, round(area / (self.batch_size * mean_area)))

    def batch(self, step: int) -> Tensor:
        g = step_generator(self.seed, "sgan-crops", int(step))
        n, _, h, w = self.data.shape
        size = self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]
        idx = torch.randint(n, (self.batch_size,), generator=g)
        ys = torch.randint(h - size + 1, (self.batch_size,), generator=g)
        xs = torch.randint(w - size + 1, (self.batch_size,), generator=g)
        flips = torch.randint(2, (self.batch_size, 2), generator=g)
        crops = []
        for i in range(self.batch_size):
            c = self.data[idx[i], :, ys[i] : ys[i] + size, xs[i] : xs[i] + size]
            if self.flips and flips[i, 0]:
                c = c.flip(-1)
            if self.flips and flips[i, 1]:
                c = c.flip(-2)
            crops.append(c)
        return torch.stack(crops).contiguous()


@register_recipe("sgan")
class SGANRecipe(PairRecipe):
    """The Spatial GAN of Smith & Geach (2019) as a training recipe."""

    family = "sgan"
    Settings = SGANSettings
    #: ``small``: a quarter of the paper's widths, for CPU-sized runs
    CONFIGS = {"small": {"widths": [64, 32, 16, 8], "d_widths": [16, 32, 64, 128, 128]}}
    PHASES = (Phase("discriminator"), Phase("generator_update"))
    # data parallelism: both called through their forward (G's sky noise, called beside it,
    # is a part of G whose gradients DDP's hooks average with the rest)
    DDP_NETWORKS = ("G", "D")
    # the paper's self-ensemble drew on 21 generators saved along the run
    SNAPSHOT_EVERY = 500

    def __init__(
        self,
        config: dict,
        channels: int,
        image_size: int | None,
        device,
        seed: int = 0,
        normalizer: dict | None = None,
    ):
        super().__init__(config, channels, image_size, device, seed, normalizer)
        s = self.settings
        with global_scope(self.seed, "sgan-init"):  # torch's default initialisation
            sky = None
            if s.sky_noise:
                sky = self.sky_description(channels)
            self.G = SGANGenerator(
                channels, s.widths, LATENT_CHANNELS, image_size=int(s.sample_size), sky_noise=sky
            ).to(self.device)
            self.D = SGANDiscriminator(
                channels, s.d_widths, pack=int(s.pack), slope=float(s.leaky_slope)
            ).to(self.device)
        betas = (float(s.beta1), float(s.beta2))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=float(s.lr_g), betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(s.lr_d), betas=betas)

    @classmethod
    def data_need(cls, settings) -> Fields:
        """Whole fields: the recipe crops them (any size; the networks are convolutional)."""
        return Fields()

    @classmethod
    def output_range_for(cls, settings) -> tuple[float, float]:
        return (0.0, 1.0)  # sigmoid head

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    def make_batches(self, data: Tensor, batch_size: int, seed: int) -> BatchSource:
        pack = int(self.settings.pack)
        if batch_size % pack:
            raise ConfigError(
                f"train.batch={batch_size} is not a multiple of model.pack={pack}; the "
                "discriminator sees packs of images"
            )
        return FieldCrops(
            data, batch_size, seed, self.settings.crop_sizes, flips=bool(self.settings.flips)
        )

    def _latent_like(self, real: Tensor, rng: torch.Generator) -> Tensor:
        b, _, h, w = real.shape
        if h % UPSCALE or w % UPSCALE:
            raise ConfigError(f"sgan: crop {h}×{w} is not a multiple of 16")
        return torch.randn(
            (b, LATENT_CHANNELS, h // UPSCALE, w // UPSCALE), generator=rng, device=rng.device
        ).to(self.device)

    def _fake(self, real: Tensor, rng: torch.Generator) -> Tensor:
        """Generated crops like ``real``: the noiseless field plus, with ``sky_noise``, the
        learned sky noise (unit noise drawn with a one-pixel margin for its kernel)."""
        fake = self.G(self._latent_like(real, rng))
        if self.G.sky is None:
            return fake
        b, c, h, w = fake.shape
        eps = torch.randn((b, c, h + 2, w + 2), generator=rng, device=rng.device)
        return self.G.sky(fake, eps.to(self.device))

    def discriminator(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        """One update of the packed discriminator with the RaGAN loss."""
        real = real.to(self.device)
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self._fake(real, ctx.rng)
        with self.autocast():
            loss_d = ragan_d_loss(self.D(real), self.D(fake))
        self.optimize("D", loss_d)
        return {"loss_d": float(loss_d.detach())}

    def generator_update(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        """One update of the generator with the RaGAN loss (D frozen)."""
        real = real.to(self.device)
        self.D.requires_grad_(False)
        with self.autocast():
            fake = self._fake(real, ctx.rng)
            with torch.no_grad():
                real_logits = self.D(real)
            loss_g = ragan_g_loss(real_logits, self.D(fake))
        self.optimize("G", loss_g)
        self.D.requires_grad_(True)
        return {"loss_g": float(loss_g.detach()), "crop": float(real.shape[-1])}
