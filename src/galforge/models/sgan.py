"""Spatial GAN for deep fields (Smith & Geach 2019, MNRAS 490, 4985, section 2.3).

The generator is fully convolutional: spatial noise ``z`` of shape ``[B, 50, h, w]`` (standard
normal) goes through one transposed convolution (kernel 4, stride 2) and three sets of {one
stride-2 and two stride-1 transposed convolutions, kernel 4}, each followed by an ELU, with
channel widths 256 -> 128 -> 64 -> 32; a final kernel-3 stride-1 transposed convolution maps
to the bands and a sigmoid bounds the output to (0, 1).  The output is ``16 h x 16 w``.

Every layer pads as "same": the full transposed-convolution output is cropped by a fixed
amount on the leading edge so that the output is exactly ``stride x`` the input.  The network
is therefore shift-equivariant (moving the latent by one pixel moves the image by 16 pixels),
which is what makes tiling exact: a tile computed from its latent window plus a margin that
covers the receptive field equals the matching part of the whole image.
:meth:`SGANGenerator.plan_window` works out those margins from the layer list and
:meth:`SGANGenerator.forward_window` computes one tile.

The discriminator is five kernel-4 stride-2 convolutions with LeakyReLU, global average
pooling and a linear layer to one logit, applied to packed inputs (PacGAN, Lin et al. 2018:
``pack`` images concatenated on the channel axis).  The recipe trains them with the
relativistic average GAN loss (:mod:`galforge.training.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import ModelError
from galforge.models.layers import FieldNoise
from galforge.models.registry import register_generator

LATENT_CHANNELS = 50
UPSCALE = 16
DEFAULT_WIDTHS = (256, 128, 64, 32)


@dataclass(frozen=True)
class LayerGeometry:
    """Geometry of one "same" transposed convolution.

    The full transposed output of ``n`` inputs has ``(n - 1) * stride + kernel`` pixels; the
    "same" output keeps ``stride * n`` of them starting at ``crop`` (input ``i`` feeds the
    full-output pixels ``stride * i ... stride * i + kernel - 1``).
    """

    kernel: int
    stride: int

    @property
    def crop(self) -> int:
        return (self.kernel - self.stride) // 2

    def needed_inputs(self, start: int, stop: int) -> tuple[int, int]:
        """Input range ``[a, b)`` that feeds the "same" outputs ``[start, stop)``."""
        a = -((-(start + self.crop - self.kernel + 1)) // self.stride)  # ceil division
        b = (stop - 1 + self.crop) // self.stride + 1
        return a, b


class SameConvTranspose2d(nn.Module):
    """Transposed convolution whose output is exactly ``stride x`` its input, for any size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.geometry = LayerGeometry(kernel, stride)
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding=0)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """The uncropped transposed output (``(n - 1) * stride + kernel`` pixels a side)."""
        return F.conv_transpose2d(x, self.conv.weight, self.conv.bias, self.geometry.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        h, w = x.shape[-2] * g.stride, x.shape[-1] * g.stride
        y = self.full(x)
        return y[..., g.crop : g.crop + h, g.crop : g.crop + w]


@dataclass(frozen=True)
class WindowPlan:
    """How to compute output pixels ``[0, out_size)`` (per axis) of a tile.

    ``latent_start`` is the offset of the latent window relative to the tile's own latent
    origin (negative: the margin before it), ``latent_size`` its length.  Layer ``l`` runs
    with the symmetric transposed-convolution padding ``paddings[l]`` and yields ``sizes[l]``
    pixels, the first at ``starts[l]`` (in that layer's "same" coordinates, relative to the
    tile origin); the tile is the last layer's pixels ``[final_offset, final_offset +
    out_size)``.
    """

    out_size: int
    latent_start: int
    latent_size: int
    paddings: tuple[int, ...]
    starts: tuple[int, ...]
    sizes: tuple[int, ...]
    final_offset: int

    @property
    def margin_before(self) -> int:
        return -self.latent_start

    @property
    def margin_after(self) -> int:
        return self.latent_start + self.latent_size - self.out_size // UPSCALE


class SGANGenerator(nn.Module):
    """The Spatial GAN generator: ``[B, 50, h, w]`` noise -> ``[B, C, 16h, 16w]`` in (0, 1)."""

    family = "sgan"
    CAPABILITIES = frozenset({"latent", "windowed"})
    #: output pixels per latent pixel, per axis
    upscale = UPSCALE

    def __init__(
        self,
        channels: int = 3,
        widths: tuple[int, ...] | list[int] = DEFAULT_WIDTHS,
        latent_channels: int = LATENT_CHANNELS,
        image_size: int = 64,
        sky_noise: dict | None = None,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ModelError(
                f"sgan: 'widths' must be four positive channel counts (got {list(widths)}); "
                "the default is [256, 128, 64, 32]"
            )
        if channels < 1 or latent_channels < 1:
            raise ModelError("sgan: 'channels' and 'latent_channels' must be positive")
        if image_size % UPSCALE:
            raise ModelError(f"sgan: 'image_size' must be a multiple of 16 (got {image_size})")
        self.channels = int(channels)
        self.widths = widths
        self.latent_channels = int(latent_channels)
        self.image_size = int(image_size)
        layers: list[SameConvTranspose2d] = [SameConvTranspose2d(latent_channels, widths[0], 4, 2)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(SameConvTranspose2d(c_in, c_out, 4, 2))
            layers.append(SameConvTranspose2d(c_out, c_out, 4, 1))
            layers.append(SameConvTranspose2d(c_out, c_out, 4, 1))
        layers.append(SameConvTranspose2d(widths[-1], channels, 3, 1))
        self.layers = nn.ModuleList(layers)
        self._plans: dict[int, WindowPlan] = {}
        #: the field's sky noise (None: the network paints it itself, as in the paper).
        #: ``forward`` and ``forward_window`` give the noiseless field; whoever renders a
        #: field adds ``sky(clean, eps)`` with position-seeded ``eps`` (generation.field).
        self.sky = FieldNoise(self.channels, sky_noise) if sky_noise is not None else None

    # ------------------------------------------------------------------ description
    def spec(self) -> dict:
        """JSON description; ``build_generator("sgan", spec)`` rebuilds this network."""
        return {
            "channels": self.channels,
            "widths": list(self.widths),
            "latent_channels": self.latent_channels,
            "image_size": self.image_size,
            **({"sky_noise": dict(self.sky.description)} if self.sky is not None else {}),
        }

    def latent_shape(
        self,
        n: int,
        image_size: int | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
    ) -> tuple[int, int, int, int]:
        """Latent shape for ``n`` images of ``height x width`` pixels (multiples of 16).

        ``image_size`` sets both sides; by default the training crop size is used.
        """
        side = self.image_size if image_size is None else int(image_size)
        h = side if height is None else int(height)
        w = side if width is None else int(width)
        if h <= 0 or w <= 0 or h % UPSCALE or w % UPSCALE:
            raise ModelError(
                f"sgan: image size {h}x{w} is not a positive multiple of 16; the generator "
                "makes 16 output pixels per latent pixel"
            )
        return (int(n), self.latent_channels, h // UPSCALE, w // UPSCALE)

    @property
    def geometries(self) -> list[LayerGeometry]:
        return [layer.geometry for layer in self.layers]

    def flops_per_pixel(self) -> float:
        """Multiply-add FLOPs (2 per MAC) per output pixel of an unbounded field.

        A transposed convolution does ``c_in * c_out * k^2`` MACs per input pixel; the input
        of a layer has ``1 / (stride product after it)^2`` pixels per output pixel.
        """
        total = 0.0
        scale = 1  # product of strides of the layers so far
        for layer in self.layers:
            g = layer.geometry
            conv = layer.conv
            macs_per_input = conv.in_channels * conv.out_channels * g.kernel * g.kernel
            total += 2.0 * macs_per_input * scale * scale
            scale *= g.stride
        return total / (scale * scale)

    def receptive_field(self) -> tuple[int, int]:
        """Latent margin ``(before, after)`` a tile needs so that its pixels are exact."""
        plan = self.plan_window(UPSCALE)
        return plan.margin_before, plan.margin_after

    def plan_window(self, out_size: int) -> WindowPlan:
        """Work out the latent window and per-layer crops for a tile of ``out_size`` pixels.

        The ranges are propagated backwards through the layers: the outputs a tile keeps need
        a range of inputs at each layer, down to the latent.  Because every layer is
        shift-equivariant the same plan serves every tile of that size.
        """
        if out_size <= 0 or out_size % UPSCALE:
            raise ModelError(f"sgan: tile size {out_size} is not a positive multiple of 16")
        if out_size in self._plans:
            return self._plans[out_size]
        needed = [(0, out_size)]  # "same" ranges, last layer first
        for g in reversed(self.geometries):
            needed.append(g.needed_inputs(*needed[-1]))
        needed.reverse()  # needed[0]: latent, needed[l + 1]: output of layer l
        # Forward: each layer keeps its full output less a symmetric padding p, as large as
        # keeps every needed pixel.  Kept pixels beyond the needed ones are wrong near the
        # window edge but feed only pixels that are not needed either; the symmetric crop is
        # done by the convolution itself (no copy).
        a, b = needed[0]
        paddings, starts, sizes = [], [], []
        for li, g in enumerate(self.geometries):
            full_start = g.stride * a - g.crop
            full_stop = g.stride * (b - 1) - g.crop + g.kernel
            start, stop = needed[li + 1]
            p = min(start - full_start, full_stop - stop)
            a, b = full_start + p, full_stop - p
            paddings.append(p)
            starts.append(a)
            sizes.append(b - a)
        plan = WindowPlan(
            out_size=out_size,
            latent_start=needed[0][0],
            latent_size=needed[0][1] - needed[0][0],
            paddings=tuple(paddings),
            starts=tuple(starts),
            sizes=tuple(sizes),
            final_offset=-starts[-1],
        )
        self._plans[out_size] = plan
        return plan

    def window_masks(
        self, plan: WindowPlan, origin: tuple[int, int], latent_hw: tuple[int, int], device=None
    ):
        """Masks of the hidden layers of a tile at latent ``origin`` (see :func:`same_window_masks`)."""
        return same_window_masks(plan, self, origin, latent_hw, device=device)

    # ------------------------------------------------------------------ forward passes
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Whole image for latent ``z`` ``[B, latent_channels, h, w]`` -> ``[B, C, 16h, 16w]``."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ModelError(
                f"sgan: latent must be [B, {self.latent_channels}, h, w], got {tuple(z.shape)}"
            )
        x = z
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = torch.sigmoid(x) if i == last else F.elu(x)
        return x

    def forward_window(
        self,
        z: torch.Tensor,
        plan: WindowPlan,
        masks: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """One tile of ``plan.out_size`` pixels from its latent window (margins included).

        ``z`` is ``[B, latent_channels, plan.latent_size, plan.latent_size]``.  Each layer
        computes only the pixels the next layers need (give or take a pixel), so the margin
        costs little.  ``masks`` (one ``(rows, cols)`` pair of 0/1 vectors per hidden layer)
        zero the positions that lie outside the field, which reproduces the edges of a
        whole-field pass exactly.
        """
        x = z
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            conv = layer.conv
            x = F.conv_transpose2d(
                x, conv.weight, conv.bias, layer.geometry.stride, padding=plan.paddings[i]
            )
            if i == last:
                off, n = plan.final_offset, plan.out_size
                x = torch.sigmoid(x[..., off : off + n, off : off + n])
            else:
                x = F.elu(x, inplace=True)
                if masks is not None:
                    rows, cols = masks[i]
                    x = x.mul_(rows[:, None] * cols[None, :])
        return x


def same_window_masks(
    plan: WindowPlan,
    generator: SGANGenerator,
    origin: tuple[int, int],
    latent_hw: tuple[int, int],
    device=None,
    dtype=torch.float32,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """0/1 masks of the hidden layers of a tile whose latent origin is ``origin`` (y, x).

    A pixel of layer ``l`` is kept when it lies inside the field (``latent_hw`` latent pixels
    times the stride product up to that layer).
    """
    masks = []
    scale = 1
    for li, g in enumerate(generator.geometries[:-1]):
        scale *= g.stride
        size = plan.sizes[li]
        pair = []
        for axis in range(2):
            first = origin[axis] * scale + plan.starts[li]
            idx = torch.arange(first, first + size, device=device)
            inside = (idx >= 0) & (idx < latent_hw[axis] * scale)
            pair.append(inside.to(dtype))
        masks.append((pair[0], pair[1]))
    return masks


class SGANDiscriminator(nn.Module):
    """Five (by default) kernel-4 stride-2 convolutions, LeakyReLU, global mean, one logit.

    The input is ``[B, C, H, W]`` with ``B`` a multiple of ``pack``; groups of ``pack``
    consecutive images are concatenated on the channel axis (:func:`pack_images`) and the
    network returns one logit per group, shape ``[B / pack]``.
    """

    def __init__(
        self,
        channels: int = 3,
        widths: tuple[int, ...] | list[int] = (64, 128, 256, 512, 512),
        pack: int = 2,
        slope: float = 0.2,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ModelError("sgan: discriminator 'd_widths' must be positive channel counts")
        if pack < 1:
            raise ModelError(f"sgan: 'pack' must be >= 1 (got {pack})")
        self.pack = int(pack)
        blocks: list[nn.Module] = []
        c_in = channels * self.pack
        for c_out in widths:
            blocks += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(slope)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(pack_images(x, self.pack))
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


def pack_images(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN packing: ``[B, C, H, W]`` -> ``[B / pack, pack * C, H, W]``.

    Images ``pack * j ... pack * j + pack - 1`` form group ``j``, their channels in that order.
    """
    b, c, h, w = x.shape
    if b % pack:
        raise ModelError(
            f"sgan: batch size {b} is not a multiple of the pack size {pack}; choose a batch "
            "size divisible by 'pack'"
        )
    return x.reshape(b // pack, pack * c, h, w)


@register_generator("sgan")
def build_sgan_generator(spec: dict) -> SGANGenerator:
    """Rebuild a Spatial GAN generator from its JSON spec (see :meth:`SGANGenerator.spec`)."""
    known = {"channels", "widths", "latent_channels", "image_size", "sky_noise"}
    unknown = set(spec) - known
    if unknown:
        raise ModelError(f"sgan: unknown spec keys {sorted(unknown)}; expected {sorted(known)}")
    return SGANGenerator(**spec)
