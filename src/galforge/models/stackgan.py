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
from galforge.models.layers import seeded_init
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
    """

    CAPABILITIES = frozenset()

    def __init__(
        self,
        channels: int = 3,
        width: int = 128,
        up_width: int = 512,
        n_res: int = 6,
        init_seed: int = 0,
    ):
        super().__init__()
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
        self.up1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(w, u, 3, 1, 1, bias=False),
            nn.BatchNorm2d(u),
            nn.ReLU(inplace=True),
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(u, c, 3, 1, 1, bias=True),
            nn.Tanh(),
        )
        torch.set_rng_state(rng_before)  # torch's default init drew from the global RNG
        seeded_init(self, init_seed)

    def spec(self) -> dict:
        return {
            "channels": self.channels,
            "width": self.width,
            "up_width": self.up_width,
            "n_res": self.n_res,
        }

    def forward(self, low: torch.Tensor) -> torch.Tensor:
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
        return self.up2(self.up1(h))


@register_generator("stackgan2_stage2")
def build_stage2_generator(spec: dict) -> StackGANStage2Generator:
    """Rebuild a stage-II generator from its bundle spec (weights are loaded separately)."""
    known = {"channels", "width", "up_width", "n_res"}
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
) -> tuple[StackGANStage2Generator, Stage2Discriminator]:
    """A stage-II generator and its discriminator, initialised from ``seed``."""
    g = StackGANStage2Generator(channels, width, up_width, n_res, init_seed=2 * int(seed))
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
        if "noise" in getattr(stage1, "CAPABILITIES", ()):
            # a stage I with noise inputs (a DCGAN with sky noise): the chain takes them
            self.CAPABILITIES = frozenset({"latent", "staged", "noise"})

    def latent_shape(self, n: int) -> tuple[int, ...]:
        return tuple(self.stage1.latent_shape(n))

    def noise_shapes(self) -> list[tuple[int, int]]:
        """Stage I's noise inputs (none when stage I has none)."""
        return list(self.stage1.noise_shapes()) if "noise" in self.CAPABILITIES else []

    def const_noise(self) -> list[torch.Tensor]:
        return list(self.stage1.const_noise()) if "noise" in self.CAPABILITIES else []

    def stage_output(self, z: torch.Tensor, stage: int, noise: list | None = None) -> torch.Tensor:
        """Model-space images of stage ``stage`` (1 or 2) for latents ``z`` (``noise``: stage
        I's noise maps, for a stage I with noise inputs)."""
        low = self.stage1(z) if noise is None else self.stage1(z, noise=noise)
        if int(stage) == 1:
            return low
        if int(stage) != 2:
            raise ModelError(f"--stage {stage}: a stackgan2 model has stages 1 and 2")
        return self.stage2(stage_to_unit(low))

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
