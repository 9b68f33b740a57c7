"""StackGAN stage II: 64×64 → 128×128 super-resolution chained after a 64 px DCGAN.

The networks follow Fussell & Moews (2019, MNRAS 485, 3203), §2.3 and appendix B. The
stage-II generator sees only the 64×64 image (no latent, no text embedding), in ``[0, 1]``,
and returns a 128×128 image in ``[-1, 1]``::

    C (64×64) -> conv 4×4 s2 p1 -> W (32×32), ReLU              (bottleneck, no batch norm)
    6 residual blocks: conv 3×3 - BN - ReLU - conv 3×3 - BN, + block input, ReLU
    conv 3×3 - BN, + output of the first layer, ReLU
    nearest ×2 -> conv 3×3 W -> U (64×64), BN, ReLU
    nearest ×2 -> conv 3×3 U -> C (128×128), tanh

with ``W = 128`` and ``U = 512`` at the paper's widths. The appendix prose lists the two
upsampling widths the other way round; only ``W -> U`` then ``U -> C`` ends in ``C``
image channels, which is what is built here. ``C`` follows the data (any number of bands).

The discriminator is the 64×64 DCGAN discriminator of appendix A with one stride-2
convolution in front for 128×128 inputs (the pattern of appendix C):
:class:`galforge.models.dcgan.DCGANDiscriminator` at ``image_size=128``. It returns logits.
An optional conditional variant reads the 128 px image stacked with the upsampled 64 px
input (``2C`` channels).

Two options (not in the paper; both on in the recipe's ``cpu`` config) make stage II draw
what real stamps hold. ``upsample="bilinear"``: each nearest ×2 becomes a bilinear ×2 and
its 3×3 convolution pads by replicating the border; a nearest ×2 copies every feature into
a 2×2 block that the following 3×3 convolution sees at two phases, which leaves a
pixel-scale pattern (striped cores) the network must learn to cancel. ``sky_noise`` (the
128 px data's normaliser description): the network draws the noiseless scene, its tanh range
starting at the empty sky (:class:`galforge.models.layers.SkyNoise` with ``floor``), and
adds pixel noise of a learned per-image, per-band level in physical units, read from the
pooled bottleneck features (the 64 px input carries stage I's noise level). Without it a
pixel loss against noisy targets makes stage II paint the average of the noise: a faint,
blurred grain. Such a generator has the ``noise`` capability: one 128×128 noise map per
band, zero maps giving the noiseless scene.

The bundle family ``stackgan2`` is made of the parts ``stage1`` (a DCGAN 64×64 generator)
and ``stage2`` (this generator). Its sampler draws ``z``, runs stage I (output in
``[-1, 1]``, stage I's model space), rescales to ``[0, 1]`` and runs stage II: a 128×128
image in the stage-II model space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import ModelError
from galforge.models.dcgan import DCGANDiscriminator
from galforge.models.layers import SkyNoise, seeded_init
from galforge.models.registry import register_family, register_generator

__all__ = [
    "ChainedStackGAN",
    "ResidualBlock",
    "StackGANStage2Generator",
    "build_stage2_pair",
    "stage_to_unit",
]

#: input and output sizes of stage II
LOW_SIZE, HIGH_SIZE = 64, 128
#: how stage II doubles its resolution: the paper's nearest ×2, or bilinear ×2 (no pattern)
STAGE2_UPSAMPLE = ("nearest", "bilinear")


def stage_to_unit(images: torch.Tensor) -> torch.Tensor:
    """Stage I's ``[-1, 1]`` output as stage II's ``[0, 1]`` input (the paper's rescaling)."""
    return (images + 1.0) * 0.5


class ResidualBlock(nn.Module):
    """conv 3×3 - BN - ReLU - conv 3×3 - BN, the block input added before the final ReLU."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class StackGANStage2Generator(nn.Module):
    """Stage-II generator (appendix B): 64×64 image in ``[0, 1]`` -> 128×128 in ``[-1, 1]``.

    Parameters
    ----------
    channels: image bands (input and output).
    width: ``W``, channels of the 32×32 bottleneck and residual blocks (128 in the paper).
    up_width: ``U``, channels of the first upsampling stage (512 in the paper).
    n_res: number of residual blocks (6 in the paper).
    init_seed: seed of the N(0, 0.02) weight initialisation.
    upsample: ``"nearest"`` (paper) or ``"bilinear"`` (bilinear ×2, 3×3 convolution with
        replicated borders).
    sky_noise: None (paper) or the 128 px data's normaliser description: the network draws
        the noiseless scene (range from the empty sky up) and adds learned sky noise.
    """

    CAPABILITIES = frozenset()

    def __init__(
        self,
        channels: int = 3,
        width: int = 128,
        up_width: int = 512,
        n_res: int = 6,
        init_seed: int = 0,
        upsample: str = "nearest",
        sky_noise: dict | None = None,
    ):
        super().__init__()
        if upsample not in STAGE2_UPSAMPLE:
            raise ModelError(
                f"model.upsample={upsample!r} is not one of {', '.join(STAGE2_UPSAMPLE)}"
            )
        if int(channels) < 1:
            raise ModelError(f"the data have {channels} bands: stage II needs at least one")
        if int(width) < 1 or int(up_width) < 1:
            raise ModelError(f"model.width={width} and model.up_width={up_width} must be >= 1")
        if int(n_res) < 0:
            raise ModelError(f"model.n_res={n_res} must be >= 0")
        rng_before = torch.get_rng_state()
        self.channels, self.width = int(channels), int(width)
        self.up_width, self.n_res = int(up_width), int(n_res)
        w, u, c = self.width, self.up_width, self.channels
        self.encode = nn.Sequential(nn.Conv2d(c, w, 4, 2, 1, bias=True), nn.ReLU(inplace=True))
        self.residual = nn.Sequential(*[ResidualBlock(w) for _ in range(self.n_res)])
        self.merge = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w))
        self.upsample = upsample
        pad = "replicate" if upsample == "bilinear" else "zeros"
        self.up1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode=upsample),
            nn.Conv2d(w, u, 3, 1, 1, bias=False, padding_mode=pad),
            nn.BatchNorm2d(u),
            nn.ReLU(inplace=True),
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode=upsample),
            nn.Conv2d(u, c, 3, 1, 1, bias=True, padding_mode=pad),
            nn.Tanh(),
        )
        self.sky = None
        if sky_noise is not None:
            # built last: the paper layers' initial weights are the same with or without it
            self.sky = SkyNoise(w, c, sky_noise, floor=True)
            const = torch.randn(
                (1, c, HIGH_SIZE, HIGH_SIZE),
                generator=torch.Generator().manual_seed(int(init_seed) + 7919),
            )
            self.register_buffer("noise_const", const)
            self.CAPABILITIES = frozenset({"noise"})
        torch.set_rng_state(rng_before)  # torch's default init drew from the global RNG
        seeded_init(self, init_seed)

    def spec(self) -> dict:
        """The bundle spec (``upsample`` and ``sky_noise`` only when not the paper's, so
        paper models keep the spec earlier versions wrote)."""
        spec = {
            "channels": self.channels,
            "width": self.width,
            "up_width": self.up_width,
            "n_res": self.n_res,
        }
        if self.upsample != "nearest":
            spec["upsample"] = self.upsample
        if self.sky is not None:
            spec["sky_noise"] = dict(self.sky.description)
        return spec

    def noise_shapes(self) -> list[tuple[int, int]]:
        """One 128×128 noise input per band (with ``sky_noise``; none without)."""
        return [(HIGH_SIZE, HIGH_SIZE)] * (self.channels if self.sky is not None else 0)

    def const_noise(self) -> list[torch.Tensor]:
        """The fixed noise maps stored with the weights, ``1×1×128×128`` each."""
        if self.sky is None:
            return []
        return [self.noise_const[:, c : c + 1] for c in range(self.channels)]

    def _draw(self, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw tanh output and the pooled bottleneck features of ``low``."""
        if (
            low.dim() != 4
            or low.shape[1] != self.channels
            or low.shape[-2:] != (LOW_SIZE, LOW_SIZE)
        ):
            raise ModelError(
                f"stage II takes N×{self.channels}×{LOW_SIZE}×{LOW_SIZE} images, "
                f"got {tuple(low.shape)}"
            )
        first = self.encode(low)
        h = torch.relu(self.merge(self.residual(first)) + first)
        return self.up2(self.up1(h)), h.mean(dim=(2, 3))

    def noise_sigma(self, low: torch.Tensor) -> torch.Tensor:
        """Per-band sky noise σ (physical units) for each 64 px input, ``N×C``."""
        if self.sky is None:
            raise ModelError("this stage-II generator has no sky noise (model.sky_noise)")
        return self.sky.sigma(self._draw(low)[1])

    def render(
        self, low: torch.Tensor, noise: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(image, scene)``: the model-space image and, with ``sky_noise``, the noiseless
        scene in physical units (None without). ``noise``: one map per band (``1×1×h×w`` or
        ``N×1×h×w``); by default fresh Gaussian maps in training, the stored ones otherwise."""
        raw, feat = self._draw(low)
        if self.sky is None:
            if noise is not None:
                raise ModelError("this stage-II generator has no noise inputs (no sky_noise)")
            return raw, None
        if noise is not None and len(noise) != self.channels:
            raise ModelError(f"noise: give {self.channels} maps (one per band), got {len(noise)}")
        eps = self.sky.unit_noise(raw, noise, self.noise_const, self.training)
        scene = self.sky.scene_physical(raw)
        sigma = self.sky.sigma(feat).to(raw.dtype)[:, :, None, None]
        return self.sky.to_model(scene + sigma * eps), scene

    def clean(self, low: torch.Tensor) -> torch.Tensor:
        """The noiseless 128 px scene in model space (the image itself without sky noise)."""
        raw, _ = self._draw(low)
        return raw if self.sky is None else self.sky.to_model(self.sky.scene_physical(raw))

    def forward(self, low: torch.Tensor, noise: list | None = None) -> torch.Tensor:
        return self.render(low, noise)[0]


@register_generator("stackgan2_stage2")
def build_stage2_generator(spec: dict) -> StackGANStage2Generator:
    """Rebuild a stage-II generator from its bundle spec (weights are loaded separately)."""
    known = {"channels", "width", "up_width", "n_res", "upsample", "sky_noise"}
    unknown = set(spec) - known
    if unknown:
        raise ModelError(
            f"stage-II spec has unknown keys {sorted(unknown)}; known keys: {sorted(known)}"
        )
    return StackGANStage2Generator(**spec)


class ConditionalInput(nn.Module):
    """The 128 px image stacked with the nearest-upsampled 64 px input (mapped to [-1, 1])."""

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(low * 2.0 - 1.0, size=high.shape[-2:], mode="nearest")
        return torch.cat([high, up], dim=1)


class Stage2Discriminator(nn.Module):
    """128 px DCGAN discriminator (logits); conditional: also sees the upsampled input."""

    def __init__(
        self, channels: int = 3, width: int = 128, conditional: bool = False, init_seed: int = 1
    ):
        super().__init__()
        self.conditional = bool(conditional)
        self.net = DCGANDiscriminator(
            HIGH_SIZE,
            int(channels) * (2 if conditional else 1),
            width=int(width),
            init_seed=init_seed,
        )
        self.stack = ConditionalInput()

    def forward(self, high: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            if low is None:
                raise ModelError("the conditional stage-II discriminator needs the 64 px input")
            high = self.stack(high, low)
        return self.net(high)


def build_stage2_pair(
    channels: int,
    *,
    width: int = 128,
    up_width: int = 512,
    n_res: int = 6,
    d_width: int = 128,
    conditional_d: bool = False,
    seed: int = 0,
    upsample: str = "nearest",
    sky_noise: dict | None = None,
) -> tuple[StackGANStage2Generator, Stage2Discriminator]:
    """A stage-II generator and its discriminator, initialised from ``seed``."""
    g = StackGANStage2Generator(
        channels,
        width,
        up_width,
        n_res,
        init_seed=2 * int(seed),
        upsample=upsample,
        sky_noise=sky_noise,
    )
    d = Stage2Discriminator(channels, d_width, conditional_d, init_seed=2 * int(seed) + 1)
    return g, d


class ChainedStackGAN(nn.Module):
    """The ``stackgan2`` sampler: ``z -> stage I -> [0, 1] -> stage II`` (128×128).

    :meth:`stage_output` gives the intermediate: ``stage=1`` the 64×64 stage-I images in
    stage I's model space, ``stage=2`` the final images.
    """

    CAPABILITIES = frozenset({"latent", "staged"})
    stages = ("stage1", "stage2")

    def __init__(self, stage1: nn.Module, stage2: StackGANStage2Generator):
        super().__init__()
        out_c = getattr(stage1, "channels", None)
        if out_c is not None and int(out_c) != stage2.channels:
            raise ModelError(f"stage I makes {out_c} bands but stage II takes {stage2.channels}")
        size = getattr(stage1, "image_size", LOW_SIZE)
        if int(size) != LOW_SIZE:
            raise ModelError(
                f"stage I makes {size}×{size} images; stage II needs {LOW_SIZE}×{LOW_SIZE}"
            )
        self.stage1 = stage1
        self.stage2 = stage2
        self._n1 = (
            len(stage1.noise_shapes()) if "noise" in getattr(stage1, "CAPABILITIES", ()) else 0
        )
        self._n2 = len(stage2.noise_shapes())
        if self._n1 or self._n2:
            # stage I's noise inputs (a DCGAN with sky noise), then stage II's
            self.CAPABILITIES = frozenset({"latent", "staged", "noise"})

    def latent_shape(self, n: int) -> tuple[int, ...]:
        return tuple(self.stage1.latent_shape(n))

    def noise_shapes(self) -> list[tuple[int, int]]:
        """Stage I's noise inputs (64×64), then stage II's (128×128); none when neither has."""
        first = list(self.stage1.noise_shapes()) if self._n1 else []
        return first + list(self.stage2.noise_shapes())

    def const_noise(self) -> list[torch.Tensor]:
        first = list(self.stage1.const_noise()) if self._n1 else []
        return first + list(self.stage2.const_noise())

    def stage_output(self, z: torch.Tensor, stage: int, noise: list | None = None) -> torch.Tensor:
        """Model-space images of stage ``stage`` (1 or 2) for latents ``z`` (``noise``: the
        maps of :meth:`noise_shapes`, stage I's first)."""
        if noise is not None and len(noise) != self._n1 + self._n2:
            raise ModelError(
                f"noise: give {self._n1 + self._n2} maps ({self._n1} for stage I, "
                f"{self._n2} for stage II), got {len(noise)}"
            )
        n1, n2 = (
            (None, None) if noise is None else (list(noise[: self._n1]), list(noise[self._n1 :]))
        )
        low = self.stage1(z, noise=n1) if n1 else self.stage1(z)
        if int(stage) == 1:
            return low
        if int(stage) != 2:
            raise ModelError(f"--stage {stage}: a stackgan2 model has stages 1 and 2")
        return self.stage2(stage_to_unit(low), noise=n2) if n2 else self.stage2(stage_to_unit(low))

    def forward(self, z: torch.Tensor, noise: list | None = None) -> torch.Tensor:
        return self.stage_output(z, 2, noise=noise)


@register_family("stackgan2", parts=("stage1", "stage2"))
def compose_stackgan2(parts: dict[str, nn.Module]) -> ChainedStackGAN:
    """Chain a bundle's ``stage1`` and ``stage2`` parts."""
    if not isinstance(parts["stage2"], StackGANStage2Generator):
        raise ModelError(
            "the stage2 part of a stackgan2 bundle must be a stackgan2_stage2 generator"
        )
    return ChainedStackGAN(parts["stage1"], parts["stage2"])
