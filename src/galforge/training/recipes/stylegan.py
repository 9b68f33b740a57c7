"""StyleGAN (v1) with progressive growing, as the sim→real thesis trained it.

Progressive growing (Karras et al. 2018, section 2; StyleGAN 2019 appendix C) on a schedule in
images shown: ``stable_kimg`` thousand images at each resolution from ``start_resolution``,
then ``fade_kimg`` thousand images fading the next one in (``alpha`` from 0 to 1), up to the
image size.  Real images are shown at the stage's resolution (2×2 average pooling), blended
like the fakes during a fade-in.  Loss: WGAN-GP (λ = 10, drift ε = 0.001) by default, or the
non-saturating loss with R1 (``model.loss=nonsaturating``, γ = 10, every 16 steps); style
mixing with p = 0.9; Adam lr 0.001, β = (0, 0.99), ε = 1e-8; G EMA with decay 0.999.

The image counter (and hence the stage) is recipe state: it is checkpointed and a resumed run
continues on the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from galforge.errors import ConfigError
from galforge.models.stylebase import mixed_styles
from galforge.models.stylegan import build_stylegan_pair
from galforge.training.losses import (
    gradient_penalty,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
    wgan_d_loss,
    wgan_g_loss,
)
from galforge.training.recipe import PairRecipe, Phase, StepContext
from galforge.training.recipes import register_recipe

LOSSES = ("wgan_gp", "nonsaturating")


@dataclass
class StyleGANSettings:
    """Hyper-parameters; the defaults are StyleGAN's (2019) with the thesis' WGAN-GP."""

    image_size: int = 256
    start_resolution: int = 8
    stable_kimg: float = 600.0  # images (thousands) at each resolution
    fade_kimg: float = 600.0  # images (thousands) to fade the next one in
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 8192
    channel_max: int = 512
    mbstd_group: int = 4
    lr: float = 0.001
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8
    loss: str = "wgan_gp"  # wgan_gp | nonsaturating (+ lazy R1)
    gp_lambda: float = 10.0
    drift: float = 0.001
    r1_gamma: float = 10.0
    r1_interval: int = 16
    style_mixing: float = 0.9
    ema: float = 0.999

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"model.loss={self.loss!r} must be one of {', '.join(LOSSES)}")
        if float(self.stable_kimg) <= 0 or float(self.fade_kimg) <= 0:
            raise ConfigError("model.stable_kimg and model.fade_kimg must be > 0")


STYLEGAN_CONFIGS = {
    "small": {
        "image_size": 64,
        "z_dim": 256,
        "w_dim": 256,
        "mapping_layers": 4,
        "channel_base": 1024,
        "channel_max": 128,
        "stable_kimg": 60.0,
        "fade_kimg": 60.0,
    },
}


@register_recipe("stylegan")
class StyleGANRecipe(PairRecipe):
    """StyleGAN v1 with progressive growing (see the module docstring)."""

    family = "stylegan"
    Settings = StyleGANSettings
    CONFIGS = STYLEGAN_CONFIGS

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
        size = int(image_size or s.image_size)
        if size != int(s.image_size):
            raise ConfigError(
                f"model.image_size={s.image_size} but the data are {size}×{size}: "
                "set data.resize or model.image_size"
            )
        self.G, self.D = build_stylegan_pair(
            size,
            channels,
            z_dim=s.z_dim,
            w_dim=s.w_dim,
            mapping_layers=s.mapping_layers,
            channel_base=s.channel_base,
            channel_max=s.channel_max,
            start_resolution=s.start_resolution,
            mbstd_group=s.mbstd_group,
            seed=self.seed,
        )
        self.G.to(self.device)
        self.D.to(self.device)
        adam = {"lr": float(s.lr), "betas": (float(s.beta1), float(s.beta2)), "eps": float(s.eps)}
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.images_seen = 0
        self._frozen: set[int] = set()
        self._stage = self._set_stage()

    # ------------------------------------------------------------------ schedule
    def stage_at(self, images: int) -> tuple[int, float]:
        """``(resolution, alpha)`` after ``images`` images shown."""
        s = self.settings
        k = images / 1000.0
        period = float(s.stable_kimg) + float(s.fade_kimg)
        p = int(k // period)
        t = k - p * period
        res, alpha = int(s.start_resolution) * 2**p, 1.0
        if t >= float(s.stable_kimg):
            res, alpha = res * 2, (t - float(s.stable_kimg)) / float(s.fade_kimg)
        if res > int(s.image_size):
            return int(s.image_size), 1.0
        return res, alpha

    def _set_stage(self) -> tuple[int, float]:
        res, alpha = self.stage_at(self.images_seen)
        self.G.set_stage(res, alpha)
        return res, alpha

    # ------------------------------------------------------------------ contract
    def phases(self) -> tuple[Phase, ...]:
        out = [Phase("d_main")]
        if self.settings.loss == "nonsaturating":
            out.append(Phase("d_r1", interval=int(self.settings.r1_interval)))
        return (*out, Phase("g_main"))

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    def freeze(self, g_layers: int = 0, d_blocks: int = 0) -> None:
        """Keep the first ``g_layers`` style layers of G (coarse first) and the ``d_blocks``
        highest-resolution blocks of D fixed (fine-tuning, as the thesis)."""
        params = self.G.freeze(int(g_layers)) + self.D.freeze(int(d_blocks))
        self._frozen |= {id(p) for p in params}

    def state_dict(self) -> dict:
        res, alpha = self.stage_at(self.images_seen)
        return {"images_seen": int(self.images_seen), "resolution": res, "alpha": alpha}

    def load_state_dict(self, state: dict) -> None:
        self.images_seen = int(state.get("images_seen", 0))
        self._stage = self._set_stage()

    # ------------------------------------------------------------------ helpers
    def _reals(self, x: Tensor, res: int, alpha: float) -> Tensor:
        """Real images at the stage: pooled to ``res``, blended like the fakes in a fade."""
        f = x.shape[-1] // res
        x = F.avg_pool2d(x, f) if f > 1 else x
        if alpha < 1:
            x = torch.lerp(
                F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, float(alpha)
            )
        return x

    def _fakes(self, n: int, rng: torch.Generator, res: int, alpha: float) -> Tensor:
        s = self.settings
        ws = mixed_styles(self.G, n, self.sample_latent, rng, s.style_mixing, self.device)
        return self.G.synthesis_at(ws, res, alpha)

    # ------------------------------------------------------------------ phases
    def d_main(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        s = self.settings
        res, alpha = self._stage = self._set_stage()  # the step's stage (G uses it too)
        n = real.shape[0]
        with torch.no_grad():
            fake = self._fakes(n, ctx.rng, res, alpha)
        x = self._reals(real, res, alpha)
        with self.autocast():
            real_logits, fake_logits = self.D(x, alpha), self.D(fake, alpha)
            out = {}
            if s.loss == "wgan_gp":
                gp = gradient_penalty(lambda y: self.D(y, alpha), x, fake, ctx.rng)
                loss = (
                    wgan_d_loss(real_logits, fake_logits)
                    + float(s.gp_lambda) * gp
                    + float(s.drift) * real_logits.float().square().mean()
                )
                out["gp"] = gp.item()
            else:
                loss = nonsaturating_d_loss(real_logits, fake_logits)
        self.optimize("D", loss)
        self.images_seen += n * self.world_size
        return {
            **out,
            "loss_d": loss.item(),
            "resolution": float(res),
            "alpha": alpha,
            "kimg": self.images_seen / 1000.0,
        }

    def d_r1(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        res, alpha = self._stage
        x = self._reals(real, res, alpha).detach().requires_grad_(True)
        penalty = r1_penalty(self.D(x, alpha).float(), x)
        self.optimize("D", penalty * (0.5 * float(self.settings.r1_gamma) * ctx.gain))
        return {"r1": penalty.item()}

    def g_main(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        res, alpha = self._stage
        for p in self.D.parameters():
            p.requires_grad_(False)
        try:
            with self.autocast():
                logits = self.D(self._fakes(real.shape[0], ctx.rng, res, alpha), alpha)
                loss = (
                    wgan_g_loss(logits)
                    if self.settings.loss == "wgan_gp"
                    else nonsaturating_g_loss(logits)
                )
            self.optimize("G", loss)
        finally:
            for p in self.D.parameters():
                p.requires_grad_(id(p) not in self._frozen)
        return {"loss_g": loss.item()}
