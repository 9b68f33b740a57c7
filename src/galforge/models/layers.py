"""Building blocks shared by the generator and discriminator architectures."""

from __future__ import annotations

import math

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


def group_std(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """Standard deviation of every feature of ``x`` (``N×…``) over groups of samples.

    The group size ``g`` is the largest divisor of ``N`` up to ``group_size``; sample ``i``
    belongs to the group of samples ``i mod N/g``.  Returns ``(std, g)`` with ``std`` of shape
    ``(N/g, …)``: repeat it ``g`` times along the first axis to line it up with ``x``.
    """
    n = x.shape[0]
    g = max(d for d in range(1, min(int(group_size), n) + 1) if n % d == 0)
    y = x.reshape(g, n // g, *x.shape[1:])
    return ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt(), g


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, features: int = 1) -> torch.Tensor:
    """Append the standard deviation over groups of samples as ``features`` extra maps."""
    n, c, h, w = x.shape
    f = int(features)
    std, g = group_std(x.reshape(n, f, c // f, h, w), group_size)
    y = std.mean(dim=(2, 3, 4))  # [n/g, f]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class MinibatchStd(nn.Module):
    """:func:`minibatch_stddev` as a layer (one extra map), for ``nn.Sequential`` networks."""

    def __init__(self, group: int):
        super().__init__()
        self.group = int(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_stddev(x, self.group)


class GroupSpread(nn.Module):
    """``N×…`` features, flattened to ``N×F``, -> ``N×2F``: each row followed by the
    standard deviation of every feature over its group (:func:`group_std`); ``group`` 0
    only flattens."""

    def __init__(self, group: int = 0):
        super().__init__()
        self.group = int(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if not self.group:
            return x
        std, g = group_std(x, self.group)
        return torch.cat([x, std.repeat(g, 1)], dim=1)


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


def annulus_edges(size: int) -> list[float]:
    """Radii (pixels) bounding the annuli of :class:`RadialProfile` for a ``size``-pixel
    stamp: one pixel wide near the centre, widening by 20 % per annulus outwards, the last
    one reaching the corners."""
    half = float(size) / 2.0
    edges = [0.0]
    while edges[-1] < half:
        edges.append(min(half, max(edges[-1] + 1.0, float(round(edges[-1] * 1.2)))))
    edges.append(half * 2.0**0.5 + 1.0)
    return edges


class RadialProfile(nn.Module):
    """Azimuthally averaged light profile of each band about the stamp centre.

    ``N×C×H×W`` images -> ``N×C×K``: the mean pixel value in each of ``K`` annuli
    (:func:`annulus_edges`).  An annulus of radius ``r`` averages ~``2πr`` pixels, so light
    far below the pixel noise (a faint outer disk) stands out in the profile ``~√(2πr)``
    times more clearly than in any one pixel.
    """

    def __init__(self, size: int):
        super().__init__()
        edges = annulus_edges(int(size))
        c = (int(size) - 1) / 2.0
        yy, xx = torch.meshgrid(torch.arange(int(size)), torch.arange(int(size)), indexing="ij")
        r = torch.sqrt((yy - c) ** 2 + (xx - c) ** 2).flatten()
        rows = [
            ((r >= lo) & (r < hi)).float() for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        weights = torch.stack([w / w.sum() for w in rows if w.sum() > 0])
        self.register_buffer("weights", weights, persistent=False)  # K × H·W

    @property
    def n_annuli(self) -> int:
        return int(self.weights.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2) @ self.weights.to(x.dtype).T


class ShapeMoments(nn.Module):
    """Gaussian-windowed moments of each band about the stamp centre: size and ellipticity.

    ``N×C×H×W`` images -> ``N×C×8``: with ``I`` the band minus its mean beyond radius
    ``H/2`` (the corners: the sky) and ``w`` a Gaussian window of ``sigma`` pixels
    (``H/8`` by default) normalised to unit sum, ``m0 = Σ w I``, ``mr = Σ w (x²+y²)/σ² I``,
    ``m1 = Σ w (x²−y²)/σ² I``, ``m2 = Σ w 2xy/σ² I``, then the ellipticity
    ``e = (m1, m2) / (|mr| + eps)`` (clamped to ±3), its modulus and ``mr / (|m0| + eps)``
    (a size, clamped to ±10): ``[m0, mr, m1, m2, e1, e2, |e|, size]``.  A galaxy's shape is
    one number pair spread over hundreds of noisy pixels; here it is given whole.
    """

    N_FEATURES = 8

    def __init__(self, size: int, sigma: float | None = None, eps: float = 0.01):
        super().__init__()
        size = int(size)
        sigma = float(sigma) if sigma else size / 8.0
        c = (size - 1) / 2.0
        yy, xx = torch.meshgrid(
            torch.arange(size, dtype=torch.float64) - c,
            torch.arange(size, dtype=torch.float64) - c,
            indexing="ij",
        )
        r2 = (xx**2 + yy**2) / sigma**2
        w = torch.exp(-0.5 * r2)
        w = w / w.sum()
        basis = torch.stack(
            [w, w * r2, w * (xx**2 - yy**2) / sigma**2, w * 2 * xx * yy / sigma**2]
        ).flatten(1)
        sky = (r2.flatten() * sigma**2 > (size / 2.0) ** 2).double()
        self.register_buffer("basis", basis.float(), persistent=False)  # 4 × H·W
        self.register_buffer("sky", (sky / sky.sum()).float(), persistent=False)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        flat = flat - (flat @ self.sky.to(x.dtype))[..., None]
        m0, mr, m1, m2 = (flat @ self.basis.to(x.dtype).T).unbind(-1)
        den = mr.abs() + self.eps
        e1, e2 = (m1 / den).clamp(-3, 3), (m2 / den).clamp(-3, 3)
        mod = torch.sqrt(e1 * e1 + e2 * e2 + 1e-8)
        size = (mr / (m0.abs() + self.eps)).clamp(-10, 10)
        return torch.stack([m0, mr, m1, m2, e1, e2, mod, size], dim=-1)


class PhysicalStretch(nn.Module):
    """The data normaliser's maths (clip, optional asinh, min–max) as a torch module.

    Built from :meth:`galforge.data.Normalizer.to_dict`'s description, so that models can work
    in physical units without importing the data layer; it has no weights (its buffers are
    rebuilt from the description, which a generator's spec carries).
    """

    def __init__(self, channels: int, normalizer: dict):
        super().__init__()
        c = int(channels)
        try:
            lo, hi = (torch.tensor(normalizer[k], dtype=torch.float32) for k in ("lo", "hi"))
            offset = torch.tensor(normalizer.get("offset") or [0.0] * c, dtype=torch.float32)
            soft = torch.tensor(normalizer.get("softening") or [1.0] * c, dtype=torch.float32)
            t0, t1 = (float(t) for t in normalizer.get("target", (-1.0, 1.0)))
            stretch = str(normalizer.get("stretch", "linear"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"sky_noise needs a normaliser description (lo, hi, ...): {exc}"
            ) from None
        if not all(t.numel() == c for t in (lo, hi, offset, soft)):
            raise ModelError(
                f"sky_noise: the normaliser describes {lo.numel()} bands, the generator makes {c}"
            )
        if stretch not in ("linear", "asinh") or bool((soft <= 0).any()):
            raise ModelError(
                f"sky_noise: unusable normaliser (stretch {stretch!r}, softening {soft.tolist()})"
            )
        self.channels = c
        self.stretch = stretch
        self.target = (t0, t1)
        self.description = dict(normalizer)
        for name, t in (("lo", lo), ("hi", hi), ("offset", offset), ("softening", soft)):
            self.register_buffer(name, t.reshape(1, c, 1, 1), persistent=False)
        smin, smax = self._stretch(self.lo), self._stretch(self.hi)
        span = smax - smin
        self.register_buffer("smin", smin, persistent=False)
        self.register_buffer(
            "span", torch.where(span > 0, span, torch.ones_like(span)), persistent=False
        )

    def _stretch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh((x - self.offset) / self.softening) if self.stretch == "asinh" else x

    def to_physical(self, y: torch.Tensor) -> torch.Tensor:
        """Model space → physical units (the normaliser's inverse).

        Values more than one model range beyond the range are held there: a generator
        without a bounded output (StyleGAN2) can stray far enough that ``sinh`` overflows,
        and the ``inf`` turns into NaN losses (``cosh · 0`` in the backward pass).  Such
        values map far beyond the clip range of :meth:`to_model`, which gives them no
        gradient anyway, so nothing a model learns changes.
        """
        t0, t1 = self.target
        s = (y - t0) / (t1 - t0) * self.span + self.smin
        s = torch.clamp(s, self.smin - self.span, self.smin + 2 * self.span)
        return torch.sinh(s) * self.softening + self.offset if self.stretch == "asinh" else s

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Physical units → model space (clip, stretch, min–max: the normaliser's forward)."""
        t0, t1 = self.target
        y = self._stretch(torch.minimum(torch.maximum(x, self.lo), self.hi))
        return (y - self.smin) / self.span * (t1 - t0) + t0


class SkyNoise(PhysicalStretch):
    """Adds the sky's pixel noise to a generator's noiseless image, in physical units.

    Survey images are a noiseless, PSF-convolved scene plus pixel noise whose level changes
    from image to image. A generator that must paint that noise pixel by pixel spends most of
    its capacity on it and leaves a texture (a checkerboard, blotches, a coloured sheen) that
    a classifier and the morphology statistics see at once. This layer lets the network
    draw only the noiseless scene and learn the *level* of the noise instead:

    ``out = stretch(unstretch(clean) + σ(z) · ε)``,  ``log σ_c(z) = log s_c + MLP(z)_c``

    where ``stretch`` is the data's own normaliser (:class:`PhysicalStretch`), ``s_c`` the
    normaliser's robust noise scale of band ``c`` (its asinh softening, the pixel MAD of the
    training set) and ``ε`` unit Gaussian maps, one per band. The noise is added in physical
    units, so its statistics are exact after any stretch. ``ε`` is the generator's noise
    input (capability ``noise``): fresh maps during training, per-sample seeded maps when
    sampling, zero maps for the noiseless scene.

    ``blur`` > 0 band-limits the scene before the noise is added: a Gaussian of that σ
    (pixels) in physical units, the way a telescope's PSF limits every real image. Real
    stamps hold no detail finer than their PSF; a generator free to paint such detail leaves
    pixel-scale speckle that the smoothness and asymmetry statistics and a classifier pick
    up. Keep σ below the data's PSF (σ_PSF = FWHM / 2.355 pixels) so that every real image
    stays within reach: the network then draws the scene deconvolved by this Gaussian.

    ``floor=True`` reads the network's output on a range that starts at the empty sky: the
    bottom of its range (tanh's −1) is 0 physical units (the normaliser's ``lo`` when 0 is
    outside ``[lo, hi]``), not the clip ``lo`` of noisy pixels, which lies below 0. A noiseless
    galaxy is never negative, and its background is then the saturated end of the output,
    a flat attractor: without it the network must hold the background at one exact inner value,
    which the pixel noise hides from the discriminator, and it leaves blocky patterns there
    (about a count RMS in the noiseless galaxies of a DCGAN trained on ``builtin:galsim``).
    """

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        normalizer: dict,
        hidden: int = 64,
        level: nn.Module | None = None,
        blur: float = 0.0,
        floor: bool = False,
    ):
        super().__init__(channels, normalizer)
        self.floor = bool(floor)
        if self.floor:
            zero = torch.minimum(torch.maximum(torch.zeros_like(self.lo), self.lo), self.hi)
            s0 = self._stretch(zero)
            span = self._stretch(self.hi) - s0
            self.register_buffer("scene_smin", s0, persistent=False)
            self.register_buffer(
                "scene_span", torch.where(span > 0, span, torch.ones_like(span)), persistent=False
            )
        self.blur = float(blur)
        if not self.blur >= 0:
            raise ModelError(f"scene blur σ={blur} must be >= 0 (pixels; 0: off)")
        if self.blur > 0:
            radius = max(1, math.ceil(3.0 * self.blur))
            t = torch.arange(-radius, radius + 1, dtype=torch.float64)
            k = torch.exp(-0.5 * (t / self.blur) ** 2)
            self.register_buffer("blur_kernel", (k / k.sum()).float(), persistent=False)
        #: latent -> per-band log level (a network's own MLP may be given, e.g. one with
        #: an equalised learning rate; its last module must be the linear head)
        self.level = (
            level
            if level is not None
            else nn.Sequential(
                nn.Linear(int(latent_dim), hidden),
                nn.LeakyReLU(0.2),
                nn.Linear(hidden, self.channels),
            )
        )

    def permute_bands(self, perm) -> None:
        """Reorder the bands of the learned level (``--band-map``)."""
        idx = torch.as_tensor(perm)
        head = self.level[-1]
        with torch.no_grad():
            head.weight.copy_(head.weight.index_select(0, idx))
            head.bias.copy_(head.bias.index_select(0, idx))

    def unit_noise(
        self, clean: torch.Tensor, maps, stored: torch.Tensor, training: bool
    ) -> torch.Tensor:
        """The ``N×C×H×W`` unit noise for ``clean``: one given map per band (``1×1×H×W`` or
        ``N×1×H×W``; a None entry, or ``maps`` None, takes the default), the default being
        fresh Gaussian noise in training and the ``stored`` ``1×C×H×W`` maps otherwise."""
        n, hw = clean.shape[0], clean.shape[-2:]
        maps = [None] * self.channels if maps is None else list(maps)
        eps = []
        for c, m in enumerate(maps):
            if m is None:
                m = (
                    torch.randn((n, 1, *hw), device=clean.device)
                    if training
                    else stored[:, c : c + 1]
                )
            eps.append(m.to(clean.device, clean.dtype).expand(n, 1, *hw))
        return torch.cat(eps, dim=1)

    def sigma(self, z: torch.Tensor) -> torch.Tensor:
        """Per-band noise σ (physical units) of each latent: ``N×C``."""
        return torch.exp(self.level(z.flatten(1))) * self.softening.flatten()

    def band_limit(self, phys: torch.Tensor) -> torch.Tensor:
        """The separable Gaussian ``blur`` of an image in physical units (edges replicated,
        so a flat sky stays flat); the image itself when ``blur`` is 0."""
        if self.blur <= 0:
            return phys
        c, r = phys.shape[1], self.blur_kernel.numel() // 2
        k = self.blur_kernel.to(phys.dtype)
        x = F.pad(phys, (r, r, r, r), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def scene_physical(self, raw: torch.Tensor) -> torch.Tensor:
        """A network's raw output as the noiseless scene in physical units, before the band
        limit: the normaliser's inverse, or with ``floor`` the range from the empty sky up."""
        if not self.floor:
            return self.to_physical(raw)
        t0, t1 = self.target
        s = (raw - t0) / (t1 - t0) * self.scene_span + self.scene_smin
        s = torch.clamp(s, self.scene_smin - self.scene_span, self.scene_smin + 2 * self.scene_span)
        return torch.sinh(s) * self.softening + self.offset if self.stretch == "asinh" else s

    def scene(self, raw: torch.Tensor) -> torch.Tensor:
        """The noiseless scene in model space of a network's raw output (its band limit)."""
        if self.blur <= 0 and not self.floor:
            return raw
        return self.to_model(self.band_limit(self.scene_physical(raw)))

    def forward(self, raw: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma(z).to(raw.dtype)[:, :, None, None]
        return self.to_model(self.band_limit(self.scene_physical(raw)) + sigma * eps.to(raw.dtype))


class FieldNoise(PhysicalStretch):
    """The sky noise of a deep field: one learned level per band and a learned 3×3
    correlation kernel (drizzled images have correlated pixel noise), in physical units.

    ``out = stretch(unstretch(clean) + σ_c · (k_c ⋆ ε))`` with ``k_c`` normalised to unit
    L2 norm (so σ stays the per-pixel standard deviation) and ``ε`` unit Gaussian noise with
    a one-pixel margin around the image (``N×C×(h+2)×(w+2)``), so that a field rendered tile
    by tile from position-seeded noise equals the one rendered whole.
    """

    def __init__(self, channels: int, normalizer: dict):
        super().__init__(channels, normalizer)
        self.log_level = nn.Parameter(torch.zeros(self.channels))
        kernel = torch.zeros(self.channels, 1, 3, 3)
        kernel[:, :, 1, 1] = 1.0
        self.kernel = nn.Parameter(kernel)

    def sigma(self) -> torch.Tensor:
        """Per-band noise σ in physical units, ``C``."""
        return torch.exp(self.log_level) * self.softening.flatten()

    def correlated(self, eps: torch.Tensor) -> torch.Tensor:
        """Unit-variance correlated noise from ``eps`` with its one-pixel margin."""
        k = self.kernel / self.kernel.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]
        return F.conv2d(eps, k.to(eps.dtype), groups=self.channels)

    def forward(self, clean: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        h, w = clean.shape[-2:]
        if tuple(eps.shape[-2:]) != (h + 2, w + 2):
            raise ModelError(
                f"field noise: eps must be {h + 2}×{w + 2} for a {h}×{w} image "
                f"(a one-pixel margin), got {tuple(eps.shape[-2:])}"
            )
        noise = self.correlated(eps.to(clean.dtype)) * self.sigma().to(clean.dtype)[:, None, None]
        return self.to_model(self.to_physical(clean) + noise)
