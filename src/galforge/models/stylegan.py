"""StyleGAN (v1) with progressive growing, in plain PyTorch.

The generator of Karras et al. (2019, "A Style-Based Generator Architecture for Generative
Adversarial Networks", section 2 and appendix C) as the sim→real thesis trained it on galaxies:

* the mapping network of :mod:`galforge.models.stylegan2` (``z`` normalised, 8 fully
  connected layers, lr multiplier 0.01, ``w_avg`` tracked with β = 0.995);
* a learned 4×4 constant; per resolution two 3×3 convolutions (the first after a nearest
  ×2 upsampling and the ``[1, 2, 1]`` blur), each followed by per-pixel noise with learned
  per-channel strength, a bias, leaky ReLU and **AdaIN**: instance normalisation, then a
  per-channel scale and shift from an affine map of that layer's ``w``;
* one ``toRGB`` (1×1 convolution) per resolution for progressive growing: at resolution
  ``r`` with fade-in ``alpha`` the image is ``lerp(up(toRGB_{r/2}), toRGB_r, alpha)``.

The discriminator mirrors it (Karras et al. 2018, progressive growing): ``fromRGB`` per
resolution, per resolution two 3×3 convolutions and a blur + 2×2 average pooling, the new
top block faded in from the downsampled image, minibatch standard deviation and two layers
at 4×4.  Equalised learning rate throughout.

The networks carry their stage (``resolution``, ``alpha``) as buffers; the generator's
``forward``/``synthesis`` return images at the full ``image_size`` (the current stage's
image upsampled by pixel replication while growing), so bundles, sampling and the latent
tools see one shape whatever the stage.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galforge.errors import ModelError
from galforge.models.registry import register_generator
from galforge.models.stylebase import freeze_leading
from galforge.models.stylegan2 import (
    SQRT2,
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    channels_at,
    minibatch_stddev,
    noise_list,
    upfirdn2d,
)
from galforge.seeding import seeded_global

MIN_RES, MAX_RES = 8, 1024


def blur(x: Tensor) -> Tensor:
    """The ``[1, 2, 1]`` (outer product, normalised) blur of StyleGAN v1, same size."""
    f = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    return upfirdn2d(x, torch.outer(f, f) / 16.0, pad=(1, 1, 1, 1))


def _check(resolution: int, start: int) -> tuple[int, int]:
    r, s = int(resolution), int(start)
    for v in (r, s):
        if v < 4 or v > MAX_RES or v & (v - 1):
            raise ModelError(
                f"StyleGAN size {v} is not supported: use powers of 2 from 8 to "
                f"{MAX_RES} (resize the data with data.resize)"
            )
    if r < MIN_RES or s > r:
        raise ModelError(
            f"StyleGAN: image size {r} must be >= 8 and >= the start resolution "
            f"{s} (model.start_resolution)"
        )
    return r, s


class StyleLayer(nn.Module):
    """(conv) + noise + bias + leaky ReLU + AdaIN."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        *,
        conv: bool = True,
        up: bool = False,
    ):
        super().__init__()
        self.conv = (
            EqualConv2d(in_channels, out_channels, 3, bias=False, activation=False)
            if conv
            else None
        )
        self.up = up
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = EqualLinear(w_dim, 2 * out_channels)
        with torch.no_grad():  # AdaIN starts as the identity: scale 1 + 0, shift 0
            self.style.bias.zero_()
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.resolution = int(resolution)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.conv is not None:
            x = self.conv(x)
        if self.up:
            x = blur(x)
        if noise is not None:
            noise = noise.to(x.dtype)
        elif self.training:
            noise = torch.randn((x.shape[0], 1, *x.shape[-2:]), device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength[None, :, None, None] + self.bias[None, :, None, None]
        x = F.leaky_relu(x, 0.2) * SQRT2
        x = F.instance_norm(x, eps=1e-8)
        scale, shift = self.style(w).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class StyleGANGenerator(nn.Module):
    """StyleGAN v1 generator with progressive growing (see the module docstring)."""

    CAPABILITIES = frozenset({"latent", "intermediate", "noise"})

    def __init__(
        self,
        image_size: int = 256,
        channels: int = 3,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 8192,
        channel_max: int = 512,
        start_resolution: int = 8,
        init_seed: int = 0,
    ):
        super().__init__()
        self.image_size, self.start_resolution = _check(image_size, start_resolution)
        if int(channels) < 1:
            raise ModelError(f"the data have {channels} bands: a StyleGAN needs at least one")
        self.channels, self.z_dim, self.w_dim = int(channels), int(z_dim), int(w_dim)
        self.mapping_layers = int(mapping_layers)
        self.channel_base, self.channel_max = int(channel_base), int(channel_max)
        self.resolutions = [2**i for i in range(2, int(math.log2(self.image_size)) + 1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        with seeded_global(int(init_seed)):
            self.mapping_net = MappingNetwork(self.z_dim, self.w_dim, self.mapping_layers)
            self.const = nn.Parameter(torch.ones(ch[4], 4, 4))
            layers = [
                StyleLayer(ch[4], ch[4], self.w_dim, 4, conv=False),
                StyleLayer(ch[4], ch[4], self.w_dim, 4),
            ]
            for r in self.resolutions[1:]:
                layers.append(StyleLayer(ch[r // 2], ch[r], self.w_dim, r, up=True))
                layers.append(StyleLayer(ch[r], ch[r], self.w_dim, r))
            self.layers = nn.ModuleList(layers)
            self.torgbs = nn.ModuleList(
                EqualConv2d(ch[r], self.channels, 1, activation=False) for r in self.resolutions
            )
        self.num_ws = len(self.layers)
        self.register_buffer("resolution", torch.tensor(self.start_resolution))
        self.register_buffer("alpha", torch.tensor(1.0))

    def spec(self) -> dict:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "mapping_layers": self.mapping_layers,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "start_resolution": self.start_resolution,
        }

    def set_stage(self, resolution: int, alpha: float) -> None:
        self.resolution.fill_(int(resolution))
        self.alpha.fill_(float(alpha))

    def latent_shape(self, n: int) -> tuple[int, ...]:
        return (int(n), self.z_dim)

    def mapping(self, z: Tensor, update_w_avg: bool | None = None) -> Tensor:
        return self.mapping_net(z, update_w_avg)

    def mean_w(self) -> Tensor:
        return self.mapping_net.w_avg

    def noise_shapes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of each noise input, one per style layer from coarse to fine."""
        return [(s.resolution, s.resolution) for s in self.layers]

    def const_noise(self) -> list[Tensor]:
        """The fixed noise maps stored with the weights, ``1×1×h×w`` each."""
        return [s.noise_const[None, None] for s in self.layers]

    def synthesis_at(
        self, w: Tensor, resolution: int, alpha: float, noise: list | None = None
    ) -> Tensor:
        """Images at ``resolution`` (the stage's), the newest toRGB faded in by ``alpha``."""
        ws = w[:, None, :].expand(w.shape[0], self.num_ws, w.shape[1]) if w.dim() == 2 else w
        if ws.dim() != 3 or ws.shape[1] != self.num_ws:
            raise ModelError(
                f"w of shape {tuple(w.shape)}: give N×{self.w_dim} or N×{self.num_ws}×{self.w_dim}"
            )
        nz = noise_list(noise, self.num_ws)
        n_blocks = self.resolutions.index(int(resolution)) + 1
        x = self.const[None].expand(ws.shape[0], *self.const.shape)
        prev = None
        for b in range(n_blocks):
            if b == n_blocks - 1 and b > 0 and alpha < 1:
                prev = F.interpolate(self.torgbs[b - 1](x), scale_factor=2, mode="nearest")
            x = self.layers[2 * b](x, ws[:, 2 * b], nz[2 * b])
            x = self.layers[2 * b + 1](x, ws[:, 2 * b + 1], nz[2 * b + 1])
        img = self.torgbs[n_blocks - 1](x)
        return img if prev is None else torch.lerp(prev, img, float(alpha))

    def synthesis(self, w: Tensor, noise: list | None = None) -> Tensor:
        """Full-size images from ``w`` (``N×w_dim`` or ``N×num_ws×w_dim``) at the stage;
        ``noise`` as for :meth:`StyleGAN2Generator.synthesis` (one map per style layer)."""
        r = int(self.resolution)
        img = self.synthesis_at(w, r, float(self.alpha), noise)
        if r < self.image_size:
            img = F.interpolate(img, scale_factor=self.image_size // r, mode="nearest")
        return img

    def forward(self, z: Tensor, noise: list | None = None) -> Tensor:
        return self.synthesis(self.mapping(z), noise)

    def synthesis_layers(self) -> list[list[nn.Module | nn.Parameter]]:
        """The style layers from coarse to fine, each with what belongs to it (the constant
        with the first; a resolution's toRGB with its second)."""
        return [
            [*([self.const] if i == 0 else []), layer, *([self.torgbs[i // 2]] if i % 2 else [])]
            for i, layer in enumerate(self.layers)
        ]

    def freeze(self, n_layers: int) -> list[nn.Parameter]:
        """Stop training the first ``n_layers`` style layers (coarse first); return their
        parameters."""
        return freeze_leading(
            self.synthesis_layers(), n_layers, "--freeze-g", "generator", "synthesis layers"
        )

    def permute_image_channels(self, perm: list[int]) -> None:
        """Reorder the image bands produced (``--band-map``)."""
        idx = torch.as_tensor(perm)
        with torch.no_grad():
            for t in self.torgbs:
                t.weight.copy_(t.weight.index_select(0, idx))
                t.bias.copy_(t.bias.index_select(0, idx))


class StyleGANDiscriminator(nn.Module):
    """Progressive-growing discriminator (fromRGB per resolution, fade-in); returns logits."""

    def __init__(
        self,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 8192,
        channel_max: int = 512,
        mbstd_group: int = 4,
        init_seed: int = 1,
    ):
        super().__init__()
        self.image_size = int(image_size)
        self.mbstd_group = int(mbstd_group)
        self.resolutions = [2**i for i in range(2, int(math.log2(self.image_size)) + 1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        with seeded_global(int(init_seed)):
            self.fromrgbs = nn.ModuleList(
                EqualConv2d(int(channels), ch[r], 1) for r in self.resolutions
            )
            # blocks[i] takes resolution resolutions[i + 1] down to resolutions[i]
            self.blocks = nn.ModuleList(
                nn.ModuleList([EqualConv2d(ch[r], ch[r], 3), EqualConv2d(ch[r], ch[r // 2], 3)])
                for r in self.resolutions[1:]
            )
            c4 = ch[4]
            self.conv = EqualConv2d(c4 + 1, c4, 3)
            self.fc = EqualLinear(c4 * 16, c4, activation=True)
            self.out = EqualLinear(c4, 1)

    def forward(self, img: Tensor, alpha: float = 1.0) -> Tensor:
        r = img.shape[-1]
        i = self.resolutions.index(r)
        x = self.fromrgbs[i](img)
        for j in range(i, 0, -1):
            conv0, conv1 = self.blocks[j - 1]
            x = F.avg_pool2d(blur(conv1(conv0(x))), 2)
            if j == i and alpha < 1:
                skip = self.fromrgbs[j - 1](F.avg_pool2d(img, 2))
                x = torch.lerp(skip, x, float(alpha))
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1))).reshape(-1)

    def freeze(self, n_blocks: int) -> list[nn.Parameter]:
        """Stop training the top ``fromRGB`` and the ``n_blocks`` blocks of the highest
        resolutions; return their parameters."""
        blocks = list(reversed(self.blocks))  # from the image side
        groups = [[self.fromrgbs[-1], b] if i == 0 else [b] for i, b in enumerate(blocks)]
        return freeze_leading(groups, n_blocks, "--freeze-d", "discriminator", "blocks")

    def permute_image_channels(self, perm: list[int]) -> None:
        """Reorder the image bands read (``--band-map``)."""
        idx = torch.as_tensor(perm)
        with torch.no_grad():
            for f in self.fromrgbs:
                f.weight.copy_(f.weight.index_select(1, idx))


def build_stylegan_pair(
    image_size: int,
    channels: int,
    *,
    z_dim: int = 512,
    w_dim: int = 512,
    mapping_layers: int = 8,
    channel_base: int = 8192,
    channel_max: int = 512,
    start_resolution: int = 8,
    mbstd_group: int = 4,
    seed: int = 0,
) -> tuple[StyleGANGenerator, StyleGANDiscriminator]:
    g = StyleGANGenerator(
        image_size,
        channels,
        z_dim,
        w_dim,
        mapping_layers,
        channel_base,
        channel_max,
        start_resolution,
        init_seed=2 * int(seed),
    )
    d = StyleGANDiscriminator(
        image_size, channels, channel_base, channel_max, mbstd_group, init_seed=2 * int(seed) + 1
    )
    return g, d


@register_generator("stylegan")
def build_stylegan_generator(spec: dict) -> StyleGANGenerator:
    """Rebuild a StyleGAN (v1) generator from its bundle spec."""
    known = {
        "image_size",
        "channels",
        "z_dim",
        "w_dim",
        "mapping_layers",
        "channel_base",
        "channel_max",
        "start_resolution",
    }
    unknown = set(spec) - known
    if unknown:
        raise ModelError(
            f"StyleGAN spec has unknown keys {sorted(unknown)}; known keys: {sorted(known)}"
        )
    return StyleGANGenerator(**spec)
