"""StackGAN stage II training recipe (Fussell & Moews 2019, §2.3 and appendix B).

``galforge train DATA --model stackgan2 --stage1 RUN_OR_BUNDLE --out RUN`` trains the
64×64 → 128×128 stage-II generator on pairs made from the same images (DATA at least
128 px): each image nearest-downscaled to 128 and to 64 pixels, with the same flips and
quarter turns at both sizes (:class:`galforge.training.pipeline.PairedStamps`). The
stage-I model (``--stage1``: a ``dcgan64`` run or bundle, or ``pretrained:NAME``) is frozen:
it is not trained here, but it is stored in the run and in the exported bundle, whose
sampler chains ``z -> stage I -> [0, 1] -> stage II``.

Each step updates the discriminator once (binary cross-entropy on real 128 px images
against stage II's outputs for the real 64 px inputs), then the generator once on
``L_G = 0.001 · L_adv + 1 · L_P``, ``L_adv`` the non-saturating loss and ``L_P`` the mean
squared difference of the band sum per pixel between the real and the generated 128 px
image. Adam, lr 2e-4 · 0.5^⌊epoch/80⌋, β = (0.5, 0.999), weights ~ N(0, 0.02); the paper
trains with batches of 64 for 150 epochs (``--epochs 150``; they saw mode collapse beyond).

**Which normaliser.** The run fits its normaliser on the 128 px data (the targets), and the
exported bundle turns stage II's output into physical units with it. The 64 px inputs are
mapped to model space with *stage I's* normaliser, then rescaled from ``[-1, 1]`` to
``[0, 1]``: stage II thus trains on exactly the kind of input stage I produces (a 64 px
image in stage I's model space), and at generation stage I's output is handed over with
the paper's rescaling alone, no conversion through physical units inside the sampler.
Stage I's normaliser is recorded in the run (``model.stage1_normalizer``) and the bundle's
hyper-parameters, so that ``galforge generate --stage 1`` writes the 64 px intermediate in
physical units too.

Named configs (``model.config``): ``paper`` (the default: W = 128, U = 512, D width 128),
``cpu`` (W = 32, U = 64, D width 16: about 20× cheaper per step than ``paper``, and the
pixel loss per band, ``model.pixel_loss=bands``: with the band sum, the first 500 steps of a
g r i run made blue-green galaxies out of orange ones; the config of
``pretrained:galsim-stackgan128``) and ``small`` (W = 16, U = 32, D width 8: for tests and
quick looks).

Three options, not in the paper, are on in ``cpu`` (off in ``paper`` and ``small``):
``model.upsample=bilinear`` (bilinear ×2 + 3×3 convolution instead of nearest ×2: no
pixel-scale pattern for the network to cancel; the nearest path left red/green striped
cores), ``model.sky_noise=true`` (stage II draws the noiseless scene and adds learned sky
noise in physical units, the data's normaliser, as stage I's ``cpu`` config does) and
``model.pixel_pool=2``: the pixel loss compares the 2×2-averaged images (a band limit at
the 64 px input's resolution, leaving the finer detail to D) and, with sky noise, the
*noiseless* scene against the noisy target, so that the noise averages out of it instead of
being painted as its mean: the sky noise comes from the noise layer alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galforge import pretrained
from galforge.errors import ConfigError, GalforgeError, TrainingError
from galforge.models.dcgan import DCGANGenerator
from galforge.models.stackgan import (
    HIGH_SIZE,
    LOW_SIZE,
    STAGE2_UPSAMPLE,
    ChainedStackGAN,
    build_stage2_pair,
    stage_to_unit,
)
from galforge.training.losses import discriminator_loss, generator_loss_nonsaturating
from galforge.training.pipeline import PairedStamps
from galforge.training.recipe import PairRecipe, Phase, StepContext
from galforge.training.recipes import register_recipe

__all__ = [
    "PIXEL_LOSSES",
    "StackGAN2Recipe",
    "StackGAN2Settings",
    "band_pixel_loss",
    "band_sum_pixel_loss",
    "load_stage1",
    "stage1_description",
]


@dataclass
class StackGAN2Settings:
    """Hyper-parameters of stage II; the defaults are the paper's (appendix B)."""

    stage1: str | None = None  # the stage-I dcgan64 run, bundle or pretrained:NAME
    width: int = 128  # W: bottleneck and residual-block channels
    up_width: int = 512  # U: channels of the first upsampling stage
    n_res: int = 6  # residual blocks
    d_width: int = 128  # width of the (DCGAN) discriminator
    conditional_d: bool = False  # D also sees the upsampled 64 px input
    adv_weight: float = 0.001  # weight of the adversarial term of L_G
    pixel_weight: float = 1.0  # weight of the pixel loss L_P
    pixel_loss: str = "band_sum"  # band_sum (paper: colour left to D) | bands
    pixel_pool: int = 1  # the pixel loss compares images averaged over p×p pixels (1: paper)
    upsample: str = "nearest"  # nearest (paper) | bilinear (no pixel-scale pattern)
    sky_noise: bool = False  # G draws the noiseless scene + learned sky noise level
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay: float = 0.5  # lr × lr_decay every lr_decay_epochs epochs
    lr_decay_epochs: int = 80
    stage1_normalizer: dict | None = None  # stage I's normaliser: filled in from stage1

    def __post_init__(self):
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ConfigError(
                f"model.pixel_loss={self.pixel_loss!r} must be one of {', '.join(PIXEL_LOSSES)}"
            )
        if int(self.lr_decay_epochs) < 1:
            raise ConfigError(f"model.lr_decay_epochs={self.lr_decay_epochs} must be >= 1")
        if not float(self.lr) > 0:
            raise ConfigError(f"model.lr={self.lr} must be > 0")
        if int(self.pixel_pool) < 1 or HIGH_SIZE % int(self.pixel_pool):
            raise ConfigError(
                f"model.pixel_pool={self.pixel_pool} must be a divisor of {HIGH_SIZE} "
                "(1: the paper's per-pixel loss)"
            )
        if self.upsample not in STAGE2_UPSAMPLE:
            raise ConfigError(
                f"model.upsample={self.upsample!r} must be one of {', '.join(STAGE2_UPSAMPLE)}"
            )


STACKGAN2_CONFIGS = {
    "paper": {"width": 128, "up_width": 512, "d_width": 128},
    "cpu": {
        "width": 32,
        "up_width": 64,
        "d_width": 16,
        "pixel_loss": "bands",
        "upsample": "bilinear",
        "sky_noise": True,
        "pixel_pool": 2,
    },
    "small": {"width": 16, "up_width": 32, "d_width": 8},
}


def band_sum_pixel_loss(real: Tensor, fake: Tensor) -> Tensor:
    """``L_P``: mean over images and pixels of ``(Σ_c real - Σ_c fake)²``."""
    return (real.sum(dim=1) - fake.sum(dim=1)).pow(2).mean()


def band_pixel_loss(real: Tensor, fake: Tensor) -> Tensor:
    """``L_P`` per band: mean over images and pixels of ``Σ_c (real_c - fake_c)²``.  The
    band sum leaves the colours to the adversarial term alone (weight 0.001); on multi-band
    data this keeps each band, hence the colours, tied to the real image."""
    return (real - fake).pow(2).sum(dim=1).mean()


#: ``model.pixel_loss`` -> the function
PIXEL_LOSSES = {"band_sum": band_sum_pixel_loss, "bands": band_pixel_loss}


# ----------------------------------------------------------------------------- stage I
def _locate(source: str) -> tuple[Path, str]:
    """(folder, "bundle" | "run") of a stage-I source; ConfigError when it is neither."""
    from galforge.bundle import BUNDLE_JSON
    from galforge.runfolder import RunFolder

    try:
        path = Path(pretrained.resolve(str(source))).expanduser()
    except GalforgeError as exc:
        raise ConfigError(f"--stage1 {source}: {exc}") from exc
    if path.is_file() and path.name in (BUNDLE_JSON, "run.json"):
        path = path.parent
    if (path / BUNDLE_JSON).is_file():
        return path, "bundle"
    if RunFolder(path).is_run():
        return path, "run"
    if (path / "bundle" / BUNDLE_JSON).is_file():
        return path / "bundle", "bundle"
    raise ConfigError(
        f"--stage1 {source}: not a run folder, bundle folder or pretrained:NAME; "
        "give the dcgan64 run or bundle that makes the 64 px images"
    )


def stage1_description(source: str) -> dict:
    """What the run needs to know of a stage-I model without its weights (JSON only):
    ``{"path", "kind", "family", "spec", "normalizer", "bands", "units", "output_range"}``."""
    from galforge.bundle import read_bundle
    from galforge.runfolder import RunFolder

    path, kind = _locate(source)
    if kind == "run":
        info = RunFolder(path).read_info()
        specs = {name: p.get("spec") or {} for name, p in info.parts.items()}
        family = info.family
        meta = {
            "normalizer": info.normalizer,
            "bands": info.bands,
            "units": info.units,
            "output_range": info.output_range,
        }
    else:
        bundle = read_bundle(path)
        specs = {name: p.spec for name, p in bundle.parts.items()}
        family, meta = bundle.family, bundle.meta
    parts = list(specs)
    spec = specs.get("generator") or {}
    if family != "dcgan" or parts != ["generator"] or int(spec.get("image_size", 0)) != LOW_SIZE:
        what = f"a {family!r} model" + (
            f" of {spec['image_size']} px" if "image_size" in spec else ""
        )
        raise ConfigError(
            f"--stage1 {source}: {what}; stage II chains a dcgan64 run or bundle (64×64 DCGAN)"
        )
    if not meta.get("normalizer"):
        raise ConfigError(
            f"--stage1 {source}: the model has no normaliser, so its output has "
            "no physical units; train stage I with galforge train"
        )
    if [float(v) for v in meta.get("output_range", (-1, 1))] != [-1.0, 1.0]:
        raise ConfigError(f"--stage1 {source}: stage I must output [-1, 1] (tanh)")
    return {
        "path": str(path),
        "kind": kind,
        "family": family,
        "spec": dict(spec),
        "normalizer": meta["normalizer"],
        "bands": list(meta.get("bands") or []),
        "units": meta.get("units"),
    }


def load_stage1(source: str) -> tuple[DCGANGenerator, dict]:
    """The stage-I generator (weights loaded: a run's present export weights, EMA when on)
    and :func:`stage1_description` with its ``bundle_id``."""
    from galforge.bundle import read_bundle
    from galforge.runfolder import RunFolder

    desc = stage1_description(source)
    path = Path(desc["path"])
    bundle = RunFolder(path).bundle_file() if desc["kind"] == "run" else read_bundle(path)
    _, nets = bundle.sampler("cpu")
    net = nets["generator"]
    desc["bundle_id"] = bundle.meta.get("bundle_id")
    return net, desc


# ----------------------------------------------------------------------------- recipe
class _TrainingChain(ChainedStackGAN):
    """The chain as trained: stage I frozen and always in eval mode (its batch norm keeps
    the statistics it was trained with)."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.stage1.eval()
        return self


@register_recipe("stackgan2")
class StackGAN2Recipe(PairRecipe):
    """Stage II of the chained StackGAN of Fussell & Moews (2019) as a training recipe."""

    family = "stackgan2"
    Settings = StackGAN2Settings
    CONFIGS = STACKGAN2_CONFIGS
    PHASES = (Phase("adversarial"),)
    # data parallelism: D only (stage II of G is called as G.stage2, past G's forward; its
    # gradients are averaged after the backward pass)
    DDP_NETWORKS = ("D",)

    @classmethod
    def data_need(cls, settings) -> PairedStamps:
        if not settings.stage1:
            raise ConfigError(
                "--model stackgan2 needs the stage-I model: --stage1 RUN_OR_BUNDLE "
                "(a dcgan64 run or bundle, or pretrained:NAME; model.stage1)"
            )
        desc = stage1_description(settings.stage1)
        return PairedStamps(
            (LOW_SIZE, HIGH_SIZE),
            method="nearest",
            normalizers=((LOW_SIZE, desc["normalizer"]),),
            bands=tuple(desc["bands"]) or None,
        )

    def __init__(
        self,
        config,
        channels: int,
        image_size: int | None,
        device,
        seed: int = 0,
        normalizer: dict | None = None,
    ):
        super().__init__(config, channels, image_size, device, seed, normalizer)
        s = self.settings
        if image_size is not None and int(image_size) != HIGH_SIZE:
            raise ConfigError(
                f"stage II makes {HIGH_SIZE} px images; the data are {image_size} px (data.resize)"
            )
        if not s.stage1:
            raise ConfigError("--model stackgan2 needs --stage1 RUN_OR_BUNDLE (model.stage1)")
        stage1, desc = load_stage1(s.stage1)
        if stage1.channels != self.channels:
            raise ConfigError(
                f"--stage1 {s.stage1}: stage I makes {stage1.channels} bands "
                f"{desc['bands']} but the data have {self.channels}"
            )
        if s.stage1_normalizer is not None and s.stage1_normalizer != desc["normalizer"]:
            raise ConfigError(
                f"--stage1 {s.stage1}: its normaliser is not model."
                "stage1_normalizer; leave that key unset (it is recorded)"
            )
        s.stage1_normalizer = desc["normalizer"]
        self.config["stage1_normalizer"] = desc["normalizer"]
        self.stage1_info = {
            k: desc[k] for k in ("kind", "bundle_id", "bands", "units", "normalizer")
        }
        self.stage1_spec = dict(desc["spec"])
        for p in stage1.parameters():
            p.requires_grad_(False)
        g2, self.D = build_stage2_pair(
            self.channels,
            width=int(s.width),
            up_width=int(s.up_width),
            n_res=int(s.n_res),
            d_width=int(s.d_width),
            conditional_d=bool(s.conditional_d),
            seed=self.seed,
            upsample=str(s.upsample),
            sky_noise=self.sky_description(self.channels) if s.sky_noise else None,
        )
        self.G = _TrainingChain(stage1, g2).to(self.device)
        self.G.train()
        self.D.to(self.device)
        betas = (float(s.beta1), float(s.beta2))
        self.opt_g = torch.optim.Adam(self.G.stage2.parameters(), lr=float(s.lr), betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(s.lr), betas=betas)
        self.epoch = 0

    # ------------------------------------------------------------------ contract
    def generator_spec(self) -> dict:
        return self.G.stage2.spec()

    def export_parts(self, generator: nn.Module) -> dict[str, tuple[str, dict, nn.Module]]:
        return {
            "stage1": ("dcgan", dict(self.stage1_spec), generator.stage1),
            "stage2": ("stackgan2_stage2", generator.stage2.spec(), generator.stage2),
        }

    def ema_batchnorm_layers(self, ema: nn.Module) -> list[nn.Module]:
        """Only stage II's layers: stage I is frozen and keeps its own statistics."""
        from galforge.training.ema import batchnorm_layers

        return batchnorm_layers(ema.stage2)

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    # ------------------------------------------------------------------ the step
    def adversarial(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        """One D update (BCE), then one G update on 0.001 · L_adv + 1 · L_P."""
        s = self.settings
        low = stage_to_unit(batch[LOW_SIZE])
        real = batch[HIGH_SIZE]
        cond = low if s.conditional_d else None
        g2 = self.G.stage2
        with self.autocast():
            fake, scene = g2.render(low)
            real_logits = self.D(real, cond)
            fake_logits = self.D(fake.detach(), cond)
            loss_real, loss_fake = discriminator_loss(real_logits, fake_logits)
            loss_d = loss_real + loss_fake
        self.optimize("D", loss_d)
        with self.autocast():
            adv = generator_loss_nonsaturating(self.D(fake, cond))
            pixel = self._pixel_loss(real, fake, scene)
            loss_g = float(s.adv_weight) * adv + float(s.pixel_weight) * pixel
        self.optimize("G", loss_g)
        with torch.no_grad():
            stats = torch.stack(
                [
                    loss_d.detach().float(),
                    loss_g.detach().float(),
                    adv.detach().float(),
                    pixel.detach().float(),
                    torch.sigmoid(real_logits.detach().float()).mean(),
                    torch.sigmoid(fake_logits.detach().float()).mean(),
                ]
            ).tolist()
        return {
            "loss_d": stats[0],
            "loss_g": stats[1],
            "loss_adv": stats[2],
            "loss_pixel": stats[3],
            "d_real": stats[4],
            "d_fake": stats[5],
        }

    def _pixel_loss(self, real: Tensor, fake: Tensor, scene: Tensor | None) -> Tensor:
        """``L_P`` on what it should compare: with sky noise the noiseless scene (physical
        units) against the noisy target, both averaged over ``pixel_pool``² pixels in
        physical units and then stretched to model space; without it the images themselves
        (pooled in model space)."""
        p = int(self.settings.pixel_pool)
        loss = PIXEL_LOSSES[self.settings.pixel_loss]
        if scene is None:
            if p > 1:
                real, fake = F.avg_pool2d(real, p), F.avg_pool2d(fake, p)
            return loss(real, fake)
        sky = self.G.stage2.sky
        target = sky.to_physical(real.to(scene.dtype))
        if p > 1:
            target, scene = F.avg_pool2d(target, p), F.avg_pool2d(scene, p)
        return loss(sky.to_model(target), sky.to_model(scene))

    # ------------------------------------------------------------------ schedule, state
    def _apply_lr(self) -> None:
        s = self.settings
        lr = float(s.lr) * float(s.lr_decay) ** math.floor(self.epoch / int(s.lr_decay_epochs))
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    def on_epoch_end(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._apply_lr()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "stage1": self.stage1_info}

    def load_state_dict(self, state: dict) -> None:
        if "epoch" not in state:
            raise TrainingError("the checkpoint has no stage-II recipe state (epoch)")
        recorded = (state.get("stage1") or {}).get("normalizer")
        if recorded is not None and recorded != self.stage1_info["normalizer"]:
            raise TrainingError(
                f"--resume: the stage-I model {self.settings.stage1} now has another normaliser "
                "than when the run started, so the 64 px inputs would change; resume with the "
                "stage-I model the run was started with"
            )
        self.epoch = int(state["epoch"])
        self._apply_lr()
