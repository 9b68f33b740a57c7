"""StyleGAN2 generator and discriminator in plain PyTorch (no compiled extension).

The networks follow Karras et al. (2020, "Analyzing and Improving the Image Quality of
StyleGAN", configuration F: section 2 and appendix B) with the settings of the ADA paper
(Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data",
appendix D):

* **mapping network** — ``z`` (normalised to unit second moment) through ``mapping_layers``
  fully connected layers (leaky ReLU, learning-rate multiplier 0.01) to ``w``; the mean
  ``w_avg`` is tracked during training with β = 0.995 and is what truncation pulls toward;
* **synthesis network** — a learned 4×4 constant, then per resolution ``r`` = 8 … R one
  modulated 3×3 convolution that doubles the size and one at that size; every convolution
  is modulated by an affine map of ``w`` and demodulated, gets per-pixel noise with a
  learned strength, a bias and leaky ReLU (gain √2);
* **skip generator** — a 1×1 modulated (not demodulated) ``toRGB`` per resolution; the
  images are upsampled and summed;
* **residual discriminator** — ``fromRGB`` at the top, per resolution two 3×3 convolutions
  (the second halves the size) plus a 1×1 downsampling skip, both scaled by √½; at 4×4 the
  minibatch standard deviation (group 4, one feature), a 3×3 convolution and two fully
  connected layers;
* **equalised learning rate** everywhere: weights stored ~ N(0, 1) / lr_mul and multiplied by
  ``lr_mul / sqrt(fan_in)`` when used;
* **FIR resampling** with the ``[1, 3, 3, 1]`` filter (:func:`upfirdn2d`: zero insertion,
  padding, depthwise convolution, decimation — ordinary ``torch`` ops with double backward).

Channels at resolution ``r`` are ``min(channel_base // r, channel_max)``: config F is
``channel_base = 32768``, ``channel_max = 512``; the ADA paper's ``paper256`` halves the base.
Any resolution ``2^k`` from 16 to 1024 and any number of image bands.

**Non-square images** (a departure from the paper, as its NVlabs forks do it): ``image_width``
different from ``image_size`` (the height) — both powers of 2 from 16 to 1024 — gives the learned
constant the image's aspect (``4×8`` for 64×128, ``8×4`` for 128×64). Every level of the
synthesis network is then ``r·a_h × r·a_w`` for ``r`` = 4 … min(H, W) and ``(a_h, a_w)`` the
aspect reduced to its short side (``(1, 2)``), the channels at a level are those of its short side
``r``; the discriminator mirrors it down to the same ``4·a_h × 4·a_w`` epilogue, whose fully
connected layer reads ``c₄ · 16 · a_h · a_w`` features. A square model (the default) is built and
initialised exactly as before.

The per-layer noise is drawn from torch's global generator while the module is in training
mode (the trainer seeds it per step). ``synthesis(w, noise=[...])`` takes the noise maps
explicitly (one ``N×1×r×r`` or ``1×1×r×r`` map per convolution, :meth:`noise_shapes`); in
evaluation mode without them the generator uses the fixed maps stored with its weights
(``noise_const``). Sampling a bundle draws a fresh map per sample from the sample's own seeded
stream (``galforge generate --noise-mode``).

**Mixed precision by resolution** (ADA paper, appendix D: fp16 in the 4 highest resolutions,
activations clamped to ±256): :meth:`StyleGAN2Generator.set_mixed_precision` (and the
discriminator's) runs the highest ``levels`` resolutions under ``torch.autocast`` with a
reduced-precision dtype and clamps their activations to ``±clamp``; the coarser resolutions,
the mapping network and D's 4×4 epilogue stay in float32. Off (None) by default, and not part
of the spec: a bundle always samples in float32.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galforge.errors import ModelError
from galforge.models.layers import (  # noqa: F401 (minibatch_stddev re-exported)
    GroupSpread,
    RadialProfile,
    ShapeMoments,
    SkyNoise,
    minibatch_stddev,
)
from galforge.models.registry import register_generator
from galforge.models.stylebase import freeze_leading
from galforge.seeding import seeded_global

SQRT2 = math.sqrt(2.0)
SQRT_HALF = math.sqrt(0.5)
MIN_RES, MAX_RES = 16, 1024


# ----------------------------------------------------------------------------- FIR resampling


def fir_filter(taps=(1, 3, 3, 1)) -> Tensor:
    """The separable 2-D FIR filter of ``taps`` (outer product), normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: Tensor,
    f: Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> Tensor:
    """Upsample by zero insertion, pad ``(x0, x1, y0, y1)``, filter with ``f``, decimate.

    The filter is applied as a true convolution (flipped), per channel.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, list(pad))
    k = (f * gain).flip(0, 1).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, k, stride=down, groups=c)


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """×2 upsampling with the FIR filter (gain 4 keeps the mean)."""
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0)


def downsample2d(x: Tensor, f: Tensor) -> Tensor:
    """÷2 downsampling with the FIR filter."""
    fw = f.shape[-1]
    p0, p1 = (fw - 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, down=2, pad=(p0, p1, p0, p1))


# ----------------------------------------------------------------------------- layers


#: the sky-noise level MLP: hidden width and learning-rate multiplier
SKY_HIDDEN, SKY_LR_MUL = 64, 0.1


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate, optional leaky ReLU (gain √2)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate; ``down=2`` blurs then strides (FIR)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        activation: bool = True,
        down: int = 1,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.activation, self.down, self.kernel_size = activation, int(down), kernel_size
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = self.weight * self.weight_gain
        k = self.kernel_size
        if self.down > 1:
            fw = self.fir.shape[-1]
            p = (fw - 2 + k - 1) // 2 if k > 1 else 0
            if k > 1:
                x = upfirdn2d(x, self.fir, pad=(p, p, p, p))
                x = F.conv2d(x, w, stride=2)
            else:
                x = F.conv2d(downsample2d(x, self.fir), w)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        if self.activation:
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x * gain if gain != 1.0 else x


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    *,
    demodulate: bool = True,
    up: int = 1,
    fir: Tensor | None = None,
) -> Tensor:
    """Convolution of each sample with ``weight`` modulated by its ``styles`` (per input
    channel) and, with ``demodulate``, rescaled to unit output variance.

    Computed as scale-input, shared convolution, scale-output (equal to convolving each sample
    with its own weights ``w'_oi = s_i w_oi / sqrt(Σ_ik (s_i w_oik)² + 1e-8)``). ``up=2``: a
    stride-2 transposed convolution followed by the FIR filter.
    """
    n = x.shape[0]
    out_c, in_c, k, _ = weight.shape
    x = x * styles.to(x.dtype)[:, :, None, None]
    if up > 1:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        fw = fir.shape[-1]
        p0 = (fw + up - 1) // 2 - (k - 1) + k // 2
        p1 = (fw - up) // 2 - (k - up) + k // 2
        x = upfirdn2d(x, fir, pad=(p0, p1, p0, p1), gain=up**2)
    else:
        x = F.conv2d(x, weight, padding=k // 2)
    if demodulate:
        w = weight[None] * styles[:, None, :, None, None]
        dcoefs = (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt()
        x = x * dcoefs.reshape(n, out_c, 1, 1).to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3×3 convolution + noise + bias + leaky ReLU (one w per layer)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution, up: int = 1):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        #: ``(h, w)`` of the output (``resolution``: a side, or ``(h, w)``)
        self.size = _hw(resolution)
        self.register_buffer("noise_const", torch.randn(*self.size))
        self.register_buffer("fir", fir_filter(), persistent=False)
        self.up, self.resolution = int(up), self.size[0]

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, fir=self.fir)
        if noise is not None:
            noise = noise.to(x.dtype)
        elif self.training:
            noise = torch.randn((x.shape[0], 1, *self.size), device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength.to(x.dtype) + self.bias.to(x.dtype)[None, :, None, None]
        return F.leaky_relu(x, 0.2) * SQRT2


class ToRGB(nn.Module):
    """1×1 modulated convolution to the image bands (no demodulation), plus a bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias.to(x.dtype)[None, :, None, None]


def noise_list(noise, n: int) -> list:
    """``noise`` as a list of ``n`` entries (None: every layer's default)."""
    if noise is None:
        return [None] * n
    noise = list(noise)
    if len(noise) != n:
        raise ModelError(f"{len(noise)} noise maps given; this generator has {n} noise inputs")
    return noise


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at ``resolution``: ``min(channel_base // resolution, channel_max)``."""
    return max(1, min(int(channel_base) // int(resolution), int(channel_max)))


def _check_resolution(resolution: int, what: str = "image size") -> int:
    r = int(resolution)
    if r < MIN_RES or r > MAX_RES or r & (r - 1):
        raise ModelError(
            f"StyleGAN2 {what} {resolution} is not supported: use a power of 2 "
            f"from {MIN_RES} to {MAX_RES} (resize the data with data.resize)"
        )
    return r


def image_shape(image_size: int, image_width: int | None = None) -> tuple[int, int]:
    """``(height, width)`` checked: each side a power of 2 from 16 to 1024."""
    h = _check_resolution(image_size)
    w = h if image_width is None else _check_resolution(image_width, "image width")
    return h, w


def aspect_of(height: int, width: int) -> tuple[int, int]:
    """The aspect ``(a_h, a_w)`` reduced to the short side: ``(1, 2)`` for 64×128."""
    short = min(int(height), int(width))
    return int(height) // short, int(width) // short


def _hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


class MixedPrecision:
    """Reduced precision in the highest resolutions of a network (see the module docstring).

    A network with ``n_levels`` resolution levels, level 0 the finest, asks
    :meth:`_reduced` whether a level runs reduced and wraps it in :meth:`_precision`.
    """

    _mixed: tuple[torch.dtype, int, float | None] | None = None

    def set_mixed_precision(
        self, dtype: torch.dtype | None, levels: int = 4, clamp: float | None = 256.0
    ) -> None:
        """Run the ``levels`` highest resolutions in ``dtype`` (``torch.bfloat16`` or
        ``torch.float16``) with activations clamped to ``±clamp`` (None: no clamp); ``dtype``
        None or ``levels`` 0 turns it off."""
        if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
            raise ModelError(f"mixed precision dtype {dtype}: use torch.bfloat16 or float16")
        if int(levels) < 0:
            raise ModelError(f"mixed precision levels={levels} must be >= 0")
        on = dtype is not None and int(levels) > 0
        self._mixed = (dtype, int(levels), None if clamp is None else float(clamp)) if on else None

    def _reduced(self, finest_first: int) -> bool:
        """Whether the level ``finest_first`` steps below the top runs in reduced precision."""
        return self._mixed is not None and finest_first < self._mixed[1]

    def _precision(self, reduced: bool, device: torch.device):
        if not reduced:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self._mixed[0])

    def _clamp(self, x: Tensor, reduced: bool) -> Tensor:
        if reduced and self._mixed[2] is not None:
            return x.clamp(-self._mixed[2], self._mixed[2])
        return x


class MappingNetwork(nn.Module):
    """z -> w: second-moment normalisation, ``layers`` FC layers (lr multiplier ``lr_mul``)."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        layers: int = 8,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ):
        super().__init__()
        if int(layers) < 1:
            raise ModelError(f"model.mapping_layers={layers} must be >= 1")
        dims = [int(z_dim)] + [int(w_dim)] * int(layers)
        self.fcs = nn.ModuleList(
            EqualLinear(a, b, lr_mul=lr_mul, activation=True)
            for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.w_avg_beta = float(w_avg_beta)
        self.register_buffer("w_avg", torch.zeros(int(w_dim)))

    def forward(self, z: Tensor, update_w_avg: bool | None = None) -> Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for fc in self.fcs:
            x = fc(x)
        if self.training if update_w_avg is None else update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return x


class StyleGAN2Generator(MixedPrecision, nn.Module):
    """StyleGAN2 (config F) skip generator: mapping + synthesis.

    Parameters
    ----------
    image_size: output height (and width, unless ``image_width``), a power of 2 from 16 to 1024.
    channels: image bands produced.
    z_dim, w_dim: latent and intermediate latent lengths (512 in the paper).
    mapping_layers: depth of the mapping network (8 in config F, 2 in the ADA ``auto``).
    channel_base, channel_max: feature maps ``min(channel_base // res, channel_max)``.
    mapping_lr_mul: learning-rate multiplier of the mapping network (0.01).
    init_seed: seed of the weight initialisation.
    image_width: output width when it differs from the height (a power of 2 from 16 to 1024;
        None: square); the constant takes the aspect (see the module docstring).
    sky_noise: None, or the data's normaliser description: the synthesis network then draws
        the noiseless scene and a :class:`~galforge.models.layers.SkyNoise` layer adds pixel
        noise of a learned per-image, per-band level (a function of the last layer's w) in
        physical units; its unit maps are the last ``channels`` noise inputs.
    """

    CAPABILITIES = frozenset({"latent", "intermediate", "noise"})

    def __init__(
        self,
        image_size: int = 256,
        channels: int = 3,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_lr_mul: float = 0.01,
        init_seed: int = 0,
        image_width: int | None = None,
        sky_noise: dict | None = None,
    ):
        super().__init__()
        self.image_size, self.image_width = image_shape(image_size, image_width)
        if int(channels) < 1:
            raise ModelError(f"the data have {channels} bands: a StyleGAN2 needs at least one")
        self.channels, self.z_dim, self.w_dim = int(channels), int(z_dim), int(w_dim)
        self.mapping_layers, self.mapping_lr_mul = int(mapping_layers), float(mapping_lr_mul)
        self.channel_base, self.channel_max = int(channel_base), int(channel_max)
        ah, aw = self.aspect = aspect_of(self.image_size, self.image_width)
        log2 = int(math.log2(min(self.image_size, self.image_width)))
        #: the short side at each level, coarse to fine (the level's maps are r·a_h × r·a_w)
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        with seeded_global(int(init_seed)):
            self.mapping_net = MappingNetwork(
                self.z_dim, self.w_dim, self.mapping_layers, self.mapping_lr_mul
            )
            self.const = nn.Parameter(torch.randn(ch[4], 4 * ah, 4 * aw))
            convs, torgbs = (
                [SynthesisLayer(ch[4], ch[4], self.w_dim, (4 * ah, 4 * aw))],
                [ToRGB(ch[4], self.channels, self.w_dim)],
            )
            for r in self.resolutions[1:]:
                hw = (r * ah, r * aw)
                convs.append(SynthesisLayer(ch[r // 2], ch[r], self.w_dim, hw, up=2))
                convs.append(SynthesisLayer(ch[r], ch[r], self.w_dim, hw))
                torgbs.append(ToRGB(ch[r], self.channels, self.w_dim))
            self.convs = nn.ModuleList(convs)
            self.torgbs = nn.ModuleList(torgbs)
            self.sky = None
            if sky_noise is not None:
                # equalised lr at a tenth of the rate: StyleGAN2's lr (0.0025, β1 = 0) on a
                # plain MLP moves log σ by tenths per step and D wins within a few hundred
                head = EqualLinear(SKY_HIDDEN, self.channels, lr_mul=SKY_LR_MUL)
                with torch.no_grad():
                    head.weight.zero_()  # σ starts at the data's noise scale
                level = nn.Sequential(
                    EqualLinear(self.w_dim, SKY_HIDDEN, lr_mul=SKY_LR_MUL, activation=True), head
                )
                self.sky = SkyNoise(self.w_dim, self.channels, sky_noise, level=level)
                self.register_buffer(
                    "sky_const", torch.randn(1, self.channels, self.image_size, self.image_width)
                )
        self.register_buffer("fir", fir_filter(), persistent=False)
        #: number of w inputs of the synthesis network (one per convolution, plus the last toRGB)
        self.num_ws = len(self.convs) + 1

    def spec(self) -> dict:
        out = {
            "image_size": self.image_size,
            "channels": self.channels,
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "mapping_layers": self.mapping_layers,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "mapping_lr_mul": self.mapping_lr_mul,
        }
        if self.image_width != self.image_size:  # square specs stay as they were
            out["image_width"] = self.image_width
        if self.sky is not None:
            out["sky_noise"] = dict(self.sky.description)
        return out

    def latent_shape(self, n: int) -> tuple[int, ...]:
        return (int(n), self.z_dim)

    def mapping(self, z: Tensor, update_w_avg: bool | None = None) -> Tensor:
        """``w = mapping(z)``, one ``w_dim`` vector per sample (``N×w_dim``)."""
        return self.mapping_net(z, update_w_avg)

    def mean_w(self) -> Tensor:
        """The tracked mean of w (truncation pulls toward it)."""
        return self.mapping_net.w_avg

    def broadcast_w(self, w: Tensor) -> Tensor:
        """``N×w_dim`` -> ``N×num_ws×w_dim``; per-layer ws (style mixing) pass through."""
        if w.dim() == 2:
            return w[:, None, :].expand(w.shape[0], self.num_ws, w.shape[1])
        if w.dim() != 3 or w.shape[1] != self.num_ws:
            raise ModelError(
                f"w of shape {tuple(w.shape)}: give N×{self.w_dim} or N×{self.num_ws}×{self.w_dim}"
            )
        return w

    def noise_shapes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of each noise input, one per convolution from coarse to fine, then
        (with sky noise) one image-sized map per band."""
        sky = [(self.image_size, self.image_width)] * (self.channels if self.sky else 0)
        return [c.size for c in self.convs] + sky

    def const_noise(self) -> list[Tensor]:
        """The fixed noise maps stored with the weights, ``1×1×h×w`` each."""
        sky = (
            [self.sky_const[:, c : c + 1] for c in range(self.channels)]
            if self.sky is not None
            else []
        )
        return [c.noise_const[None, None] for c in self.convs] + sky

    def synthesis(self, w: Tensor, noise: list | None = None) -> Tensor:
        """Images from ``w`` (``N×w_dim``, or ``N×num_ws×w_dim`` for per-layer styles).

        ``noise``: one map per convolution (:meth:`noise_shapes`; ``N×1×h×w`` or ``1×1×h×w``,
        an entry None = the layer's default); None = the defaults (fresh draws in training,
        the stored maps in evaluation).
        """
        ws = self.broadcast_w(w)
        n_sky = self.channels if self.sky is not None else 0
        nz = noise_list(noise, len(self.convs) + n_sky)
        nz, sky_maps = nz[: len(self.convs)], nz[len(self.convs) :]
        x = self.const[None].expand(ws.shape[0], *self.const.shape)
        levels = len(self.resolutions)
        img = None
        for b in range(levels):
            reduced = self._reduced(levels - 1 - b)
            with self._precision(reduced, x.device):
                if b == 0:
                    x = self._clamp(self.convs[0](x, ws[:, 0], nz[0]), reduced)
                    y = self.torgbs[0](x, ws[:, 1])
                else:
                    i = 2 * b - 1
                    x = self._clamp(self.convs[i](x, ws[:, i], nz[i]), reduced)
                    x = self._clamp(self.convs[i + 1](x, ws[:, i + 1], nz[i + 1]), reduced)
                    y = self.torgbs[b](x, ws[:, i + 2])
            if reduced:
                y = self._clamp(y, True).float()
            img = y if img is None else upsample2d(img, self.fir) + y
        if self.sky is not None:
            img = self._add_sky(img.float(), ws[:, -1].float(), sky_maps)
        return img

    def _add_sky(self, clean: Tensor, w_last: Tensor, maps: list) -> Tensor:
        """The noiseless image plus sky noise (:meth:`SkyNoise.unit_noise` maps)."""
        eps = self.sky.unit_noise(clean, maps, self.sky_const, self.training)
        return self.sky(clean, w_last, eps)

    def forward(self, z: Tensor, noise: list | None = None) -> Tensor:
        return self.synthesis(self.mapping(z), noise)

    def synthesis_layers(self) -> list[list[nn.Module]]:
        """The synthesis layers from coarse to fine, each with what belongs to it (the constant
        with the first convolution; a resolution's toRGB with its second convolution)."""
        layers: list[list[nn.Module]] = [[self.convs[0], self.torgbs[0]]]
        for b in range(1, len(self.resolutions)):
            layers.append([self.convs[2 * b - 1]])
            layers.append([self.convs[2 * b], self.torgbs[b]])
        return layers

    def freeze(self, n_layers: int) -> list[nn.Parameter]:
        """Stop training the first ``n_layers`` synthesis layers (the constant with the
        first); return their parameters."""
        groups: list[list] = self.synthesis_layers()
        groups[0] = [self.const, *groups[0]]
        return freeze_leading(groups, n_layers, "--freeze-g", "generator", "synthesis layers")

    def permute_image_channels(self, perm: list[int]) -> None:
        """Reorder the image bands produced (``--band-map``)."""
        idx = torch.as_tensor(perm)
        with torch.no_grad():
            for t in self.torgbs:
                t.weight.copy_(t.weight.index_select(0, idx))
                t.bias.copy_(t.bias.index_select(0, idx))
            if self.sky is not None:
                self.sky.permute_bands(perm)
                self.sky_const.copy_(self.sky_const.index_select(1, idx))


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3×3 convolutions (the second halves the size) + 1×1 skip, × √½."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=2)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activation=False, down=2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.skip(x, gain=SQRT_HALF)
        return y + self.conv1(self.conv0(x), gain=SQRT_HALF)


#: hidden width of the discriminator's summary heads
HEAD_HIDDEN = 64


class SummaryHead(nn.Module):
    """A side path of the discriminator (not in the paper): a fixed summary of each image
    (``front``: ``N×C×H×W`` -> ``N×F``, optionally with its spread over groups of ``group``
    images), then two equalised-lr fully connected layers to one logit, added to the trunk's.
    """

    def __init__(self, front: nn.Module, features: int, group: int = 0):
        super().__init__()
        self.front, self.spread = front, GroupSpread(int(group))
        self.fc = EqualLinear(features * (2 if group else 1), HEAD_HIDDEN, activation=True)
        self.out = EqualLinear(HEAD_HIDDEN, 1)

    def forward(self, img: Tensor) -> Tensor:
        return self.out(self.fc(self.spread(self.front(img.float())))).reshape(-1)


class StyleGAN2Discriminator(MixedPrecision, nn.Module):
    """Residual discriminator of StyleGAN2 config F; returns one logit per image.

    Optional **summary heads** (not in the paper; the DCGAN's ``cpu`` config has the same
    pair): ``profile`` reads each band's azimuthally averaged light profile
    (:class:`~galforge.models.layers.RadialProfile`), ``moments`` each band's windowed size
    and ellipticity (:class:`~galforge.models.layers.ShapeMoments`, whose ``e1``, ``e2`` carry
    the position angle); with ``head_group`` = g > 0 each head also sees the spread of its
    features over groups of g images, so a batch of galaxies that all lean one way, or all
    have one profile, is told apart by that spread. Each head is a two-layer MLP whose logit
    is added to the trunk's; square images only. Built after the trunk, so a discriminator
    without heads is initialised exactly as before.
    """

    def __init__(
        self,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_features: int = 1,
        init_seed: int = 1,
        image_width: int | None = None,
        profile: bool = False,
        moments: bool = False,
        head_group: int = 0,
    ):
        super().__init__()
        self.image_size, self.image_width = image_shape(image_size, image_width)
        self.channels = int(channels)
        self.mbstd_group, self.mbstd_features = int(mbstd_group), int(mbstd_features)
        if (profile or moments) and self.image_width != self.image_size:
            raise ModelError(
                "the discriminator's profile and moments heads (model.d_profile, "
                "model.d_moments) need square images"
            )
        if int(head_group) < 0 or (int(head_group) and not (profile or moments)):
            raise ModelError(
                f"model.d_head_group={head_group}: a group size (2 or more to be of use) "
                "needs model.d_profile or model.d_moments; 0 turns it off"
            )
        ah, aw = self.aspect = aspect_of(self.image_size, self.image_width)
        log2 = int(math.log2(min(self.image_size, self.image_width)))
        res = [2**i for i in range(log2, 1, -1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in res}
        with seeded_global(int(init_seed)):
            self.fromrgb = EqualConv2d(self.channels, ch[res[0]], 1)
            self.blocks = nn.ModuleList(DiscriminatorBlock(ch[r], ch[r // 2]) for r in res[:-1])
            c4 = ch[4]
            self.conv = EqualConv2d(c4 + self.mbstd_features, c4, 3)
            self.fc = EqualLinear(c4 * 16 * ah * aw, c4, activation=True)
            self.out = EqualLinear(c4, 1)
            self.profile = self.moments = None
            if profile:
                radial = RadialProfile(self.image_size)
                self.profile = SummaryHead(radial, self.channels * radial.n_annuli, int(head_group))
            if moments:
                self.moments = SummaryHead(
                    nn.Sequential(ShapeMoments(self.image_size), nn.Flatten(1)),
                    self.channels * ShapeMoments.N_FEATURES,
                    int(head_group),
                )

    def forward(self, img: Tensor) -> Tensor:
        if tuple(img.shape[-2:]) != (self.image_size, self.image_width):
            raise ModelError(
                f"the discriminator reads {self.image_size}×{self.image_width} "
                f"images, not {img.shape[-2]}×{img.shape[-1]}"
            )
        reduced = self._reduced(0)
        with self._precision(reduced, img.device):
            x = self._clamp(self.fromrgb(img), reduced)
        for j, block in enumerate(self.blocks):
            with self._precision(reduced, x.device):
                x = self._clamp(block(x), reduced)
            if reduced and not self._reduced(j + 1):
                x = x.float()  # the coarser levels run in float32
            reduced = self._reduced(j + 1)
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_features)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        logits = self.out(x).reshape(-1)
        for head in (self.profile, self.moments):
            if head is not None:
                logits = logits + head(img)
        return logits

    def freeze(self, n_blocks: int) -> list[nn.Parameter]:
        """Stop training ``fromRGB`` and the first ``n_blocks`` blocks (from the highest
        resolution); return their parameters."""
        groups = [[self.fromrgb, b] if i == 0 else [b] for i, b in enumerate(self.blocks)]
        return freeze_leading(groups, n_blocks, "--freeze-d", "discriminator", "blocks")

    def permute_image_channels(self, perm: list[int]) -> None:
        """Reorder the image bands read (``--band-map``)."""
        with torch.no_grad():
            w = self.fromrgb.weight
            w.copy_(w.index_select(1, torch.as_tensor(perm)))


def build_stylegan2_pair(
    image_size: int,
    channels: int,
    *,
    z_dim: int = 512,
    w_dim: int = 512,
    mapping_layers: int = 8,
    channel_base: int = 32768,
    channel_max: int = 512,
    mbstd_group: int = 4,
    seed: int = 0,
    image_width: int | None = None,
    sky_noise: dict | None = None,
    d_heads: dict | None = None,
) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """A matching generator and discriminator, initialised from ``seed`` (``image_width``:
    non-square images, ``image_size`` then being the height; ``d_heads``: the
    discriminator's ``profile``, ``moments`` and ``head_group``)."""
    g = StyleGAN2Generator(
        image_size,
        channels,
        z_dim,
        w_dim,
        mapping_layers,
        channel_base,
        channel_max,
        init_seed=2 * int(seed),
        image_width=image_width,
        sky_noise=sky_noise,
    )
    d = StyleGAN2Discriminator(
        image_size,
        channels,
        channel_base,
        channel_max,
        mbstd_group,
        init_seed=2 * int(seed) + 1,
        image_width=image_width,
        **(d_heads or {}),
    )
    return g, d


@register_generator("stylegan2")
def build_stylegan2_generator(spec: dict) -> StyleGAN2Generator:
    """Rebuild a StyleGAN2 generator from its bundle spec (weights loaded separately)."""
    known = {
        "image_size",
        "channels",
        "z_dim",
        "w_dim",
        "mapping_layers",
        "channel_base",
        "channel_max",
        "mapping_lr_mul",
        "image_width",
        "sky_noise",
    }
    unknown = set(spec) - known
    if unknown:
        raise ModelError(
            f"StyleGAN2 spec has unknown keys {sorted(unknown)}; known keys: {sorted(known)}"
        )
    return StyleGAN2Generator(**spec)


def n_parameters(module: nn.Module) -> int:
    """Number of parameters."""
    return int(np.sum([p.numel() for p in module.parameters()]))
