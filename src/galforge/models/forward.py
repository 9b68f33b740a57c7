"""The physical forward model of a generator: the galaxy before the telescope, then its PSF.

A generator with a forward model draws the scene *before* the PSF, in the data's physical
units, on the data's pixel grid; :class:`PSFConvolution` convolves it with the known PSF of
each band (an image rendered with the pixel response, summing to one: flux is kept) as a
fixed, differentiable linear convolution (by FFT, zero padded: the sky of the pre-PSF scene is
zero); the sky noise comes after.  The discriminator only ever sees the observation, and the
pre-PSF scene can be re-observed through any other PSF (capability ``prepsf``).

:func:`prepsf_physical` maps a tanh head to the pre-PSF scene with more headroom than the
observation has: a galaxy before the PSF is more concentrated, its peak brighter than any
observed pixel (``headroom`` × the stretched range of the data's normaliser).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import ModelError

__all__ = ["PREPSF_HEADROOM", "PSFConvolution", "fft_convolve", "prepsf_physical"]

#: the pre-PSF scene spans this many times the stretched range of the observed images
PREPSF_HEADROOM = 1.5


def fft_convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Linear ("same"-size, zero padded) convolution of ``N×C×H×W`` images with one odd
    ``k×k`` kernel per band (``C×k×k``), centred on its middle pixel."""
    h, w = x.shape[-2:]
    k = kernel.shape[-1]
    r = k // 2
    shape = (h + k - 1, w + k - 1)
    xf = torch.fft.rfft2(x.float(), s=shape)
    kf = torch.fft.rfft2(kernel.float(), s=shape)
    full = torch.fft.irfft2(xf * kf[None], s=shape)
    return full[..., r : r + h, r : r + w].to(x.dtype)


class PSFConvolution(nn.Module):
    """Convolution with one fixed PSF image per band (a buffer, saved with the weights).

    ``describe`` lists each band's PSF as text (:mod:`galforge.data.psf`), ``pixel_scale``
    the arcsec per pixel of the observations; the kernel itself is set with :meth:`set_kernel`
    (a delta until then) and travels in the weights, so a bundle alone can re-observe.

    ``oversample`` = o > 1: the scene is drawn on a grid o times finer (``pixel_scale / o``),
    the kernel is the PSF alone sampled on that grid, and the pixel response is the sum over
    each o×o block (the observation's pixel integrates the light falling on it).
    """

    def __init__(self, channels: int, size: int, describe, pixel_scale: float, oversample: int = 1):
        super().__init__()
        size, channels = int(size), int(channels)
        if size < 1 or size % 2 == 0:
            raise ModelError(f"model.psf: the PSF kernel size {size} must be odd")
        describe = [str(d) for d in (describe or [])]
        if len(describe) != channels:
            raise ModelError(f"model.psf: {len(describe)} PSF descriptions for {channels} bands")
        if not float(pixel_scale) > 0:
            raise ModelError(f"model.psf: pixel scale {pixel_scale} must be > 0 (arcsec)")
        self.oversample = int(oversample)
        if self.oversample < 1:
            raise ModelError(f"model.oversample={oversample} must be >= 1")
        self.channels, self.size = channels, size
        self.describe = describe
        self.pixel_scale = float(pixel_scale)
        delta = torch.zeros(channels, size, size)
        delta[:, size // 2, size // 2] = 1.0
        self.register_buffer("kernel", delta)

    def set_kernel(self, kernel) -> None:
        """Use ``kernel`` (``C×k×k``, each band summing to one) from now on."""
        t = torch.as_tensor(kernel, dtype=torch.float32)
        if tuple(t.shape) != tuple(self.kernel.shape):
            raise ModelError(
                f"PSF kernel of shape {tuple(t.shape)}; the model expects "
                f"{tuple(self.kernel.shape)}"
            )
        with torch.no_grad():
            self.kernel.copy_(t.to(self.kernel.device))

    def spec(self) -> dict:
        """The JSON description a generator's spec carries."""
        spec = {"psf": list(self.describe), "pixel_scale": self.pixel_scale, "size": self.size}
        if self.oversample > 1:
            spec["oversample"] = self.oversample
        return spec

    def forward(self, scene: torch.Tensor) -> torch.Tensor:
        """The observation (the data's pixels) of a pre-PSF ``scene`` (the fine grid)."""
        out = fft_convolve(scene, self.kernel)
        o = self.oversample
        return out if o == 1 else F.avg_pool2d(out, o) * float(o * o)


def prepsf_physical(
    stretch: nn.Module, raw: torch.Tensor, headroom: float = PREPSF_HEADROOM
) -> torch.Tensor:
    """The pre-PSF scene in physical units from a head's model-space output ``raw``, through
    the normaliser maths of ``stretch`` (:class:`galforge.models.layers.PhysicalStretch`) with
    ``headroom`` times its stretched range (from the empty sky up where ``stretch`` has a
    ``floor``: :class:`galforge.models.layers.SkyNoise`)."""
    t0, t1 = stretch.target
    floor = bool(getattr(stretch, "floor", False))
    smin = stretch.scene_smin if floor else stretch.smin
    span = stretch.scene_span if floor else stretch.span
    s = (raw - t0) / (t1 - t0) * (span * float(headroom)) + smin
    if stretch.stretch == "asinh":
        return torch.sinh(s) * stretch.softening + stretch.offset
    return s
