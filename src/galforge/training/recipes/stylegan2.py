"""StyleGAN2 with adaptive discriminator augmentation (Karras et al. 2020a, 2020b).

The update of the ADA paper (its appendix B and D), as four phases:

* ``g_main`` — non-saturating generator loss on augmented fakes, with style mixing
  (p = 0.9: the ws of a batch switch to a second latent's from a random layer on);
* ``g_pl`` — path-length regularisation every 4 steps (weight 2, running mean decay 0.01,
  half the batch), scaled by its interval (lazy regularisation);
* ``d_main`` — non-saturating discriminator loss on augmented reals and fakes; the signs of
  D(real) feed ADA's ``p``;
* ``d_r1`` — R1 on augmented reals every 16 steps, ``γ / 2 · 16 · E‖∇D‖²``, the gradient
  taken through the augmentation (every op of the ``galaxy`` pipeline is an exact pixel
  permutation; every optional stage is linear in the image through gathers: all have a
  double backward).

Adam with β = (0, 0.99), ε = 1e-8, lr = 0.0025; each network's lr and βs are corrected for
its lazy regulariser (``c = k / (k + 1)``: ``lr · c``, ``β ** c``).  The exported generator
is an EMA of G whose half-life is ``ema_kimg`` thousand images (the trainer's warm-up
``(1 + t) / (10 + t)`` stands for the paper's ramp-up).

The path-length penalty uses :func:`galforge.training.losses.path_length_penalty`, which
measures ``‖Jᵀy‖`` over all the per-layer ws; that length is ``√num_ws`` times the paper's
(which averages the squared lengths over the layers), so the weight is divided by ``num_ws``
to give exactly the paper's term.

Named configs (``model.config``):

* ``paper`` — config F: channel base 32768, γ = 10, 8 mapping layers, EMA 10 kimg;
* ``paper256`` — the ADA paper's 256² config: half the channel base (16384), γ = 1,
  8 mapping layers, EMA 20 kimg (train it with --batch 64);
* ``auto`` — the ADA heuristic: γ = 0.0002 · res² / batch, 2 mapping layers, EMA
  batch · 10/32 kimg, channel base 16384;
* ``small`` — a CPU-sized 64² network: channel base 1024 (16 maps at 64², 128 from 8² down),
  at most 128 maps, z and w of 256, 2 mapping layers, γ and the EMA from the heuristic, and
  ADA's p free to move by 1 in 100k images instead of 500k (a CPU run sees a few hundred
  thousand images in all: at the paper's speed p could not follow D's overfitting), and sky
  noise (``model.sky_noise``, as the DCGAN's ``cpu`` config: the synthesis network draws the
  noiseless galaxy and a learned per-image, per-band noise level, a function of the last
  layer's w, adds pixel noise in physical units; the per-layer noise inputs stay);
* ``cpu`` — ``small`` with the discriminator's summary heads (``d_profile``, ``d_moments``,
  ``d_head_group=4``): ``small``'s trunk discriminator lets every galaxy lean one way (the
  shipped ``galsim-stylegan2-64``: 80 % of position angles within 48-74°) although its
  untrained generator draws them uniformly; the moments head sees each galaxy's ``e1``, ``e2``
  and their spread over groups of four, as the DCGAN's ``cpu`` config does.

Discriminator summary heads (not in the papers; the DCGAN's ``cpu`` config has the same pair):
``d_profile`` (each band's radial light profile), ``d_moments`` (each band's windowed size and
ellipticity, whose ``e1``, ``e2`` carry the position angle) and ``d_head_group`` (their spread
over groups of that many images): a small MLP each, its logit added to D's. Off by default.

``image_width``: images wider (or taller) than ``image_size`` (the height), e.g. ``image_size=64``
and ``image_width=128`` for 64×128 stamps: the generator's constant and the discriminator's
epilogue take the aspect (:mod:`galforge.models.stylegan2`); the data are read (resized) to
that shape. Both sides are powers of 2 from 16 to 1024; None (default) is square.

CUDA options (no effect on the CPU): with ``train.amp`` the ``amp_res`` highest resolutions
of G and D (4, as the ADA paper) run in ``train.amp_dtype`` with activations clamped to
``±conv_clamp`` (256) and the rest in float32 (``amp_res=0``: the whole networks under
autocast); ``channels_last`` puts G and D in that memory format; ``compile`` wraps G's
synthesis and D in ``torch.compile`` for the main phases (the regularisers need a double
backward and run eagerly).

``augment``: ``ada`` (default), ``diffaugment`` (fixed translation + cutout on reals and
fakes) or ``none``; ``ada_pipeline``: ADA's stages (:mod:`galforge.training.augment`) —
``galaxy`` (default: x-flip, quarter turns, integer translation, exact pixel permutations),
``galaxy+geom`` (plus isotropic scale, arbitrary rotation, fractional translation, resampled
with reflection padding), ``galaxy+geom+noise`` (plus sky offset, Gaussian noise, cutout), or
any stage names joined by ``+``; the ``ada_*_std``/``ada_cutout`` options size them; ``loss``: ``nonsaturating`` (default) or ``wgan_gp`` (λ = 10, drift
0.001; no R1 phase).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from galforge.errors import ConfigError
from galforge.models.stylebase import mixed_styles
from galforge.models.stylegan2 import build_stylegan2_pair
from galforge.training.augment import AdaptiveAugment, Augment, DiffAugment, parse_pipeline
from galforge.training.losses import (
    gradient_penalty,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    path_length_penalty,
    r1_penalty,
    wgan_d_loss,
    wgan_g_loss,
)
from galforge.training.pipeline import Stamps
from galforge.training.recipe import PairRecipe, Phase, StepContext
from galforge.training.recipes import register_recipe

AUGMENTS = ("ada", "diffaugment", "none")
LOSSES = ("nonsaturating", "wgan_gp")


@dataclass
class StyleGAN2Settings:
    """Hyper-parameters; the defaults are config F of Karras et al. (2020a) with ADA."""

    image_size: int = 256  # the height (and the width unless image_width)
    image_width: int | None = None  # non-square images: their width (None: square)
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768  # maps at resolution r: min(base // r, max)
    channel_max: int = 512
    mbstd_group: int = 4
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8
    loss: str = "nonsaturating"  # nonsaturating | wgan_gp
    r1_gamma: float | None = 10.0  # None: the ADA heuristic 0.0002 · res² / batch
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing: float = 0.9
    gp_lambda: float = 10.0  # wgan_gp
    drift: float = 0.001  # wgan_gp: ε · E[D(x)²]
    ema_kimg: float | None = 10.0  # EMA half-life in thousands of images (None: auto)
    augment: str = "ada"  # ada | diffaugment | none
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0  # images (thousands) for p to move by 1
    ada_max_shift: float = 0.125  # largest integer translation, fraction of the side
    ada_pipeline: str = "galaxy"  # stages/groups joined by +: galaxy | galaxy+geom |
    # galaxy+geom+noise | e.g. galaxy+rotate+sky
    ada_scale_std: float = 0.2  # scale: log2 of the factor ~ N(0, std)
    ada_xfrac_std: float = 0.125  # xfrac: shift ~ N(0, std) × side
    ada_sky_std: float = 0.2  # sky: offset ~ N(0, std) per image and band (model units)
    ada_noise_std: float = 0.1  # gauss: noise level ~ |N(0, std)| per image
    ada_cutout: float = 0.5  # cutout: rectangle side, fraction of each side
    amp_res: int = 4  # with train.amp (CUDA): the highest N resolutions
    # of G and D in reduced precision (0: all of them)
    conv_clamp: float | None = 256.0  # ... their activations clamped to ±conv_clamp
    channels_last: bool = False  # CUDA: G and D in channels_last memory format
    compile: bool = False  # CUDA: torch.compile G's synthesis and D (main phases)
    sky_noise: bool = False  # G draws the noiseless scene + learned sky noise level
    d_profile: bool = False  # D also judges each band's radial light profile
    d_moments: bool = False  # D also judges each band's windowed size and ellipticity
    d_head_group: int = 0  # ... and their spread over groups of this many images (0: off)

    def __post_init__(self):
        if self.augment not in AUGMENTS:
            raise ConfigError(
                f"model.augment={self.augment!r} must be one of {', '.join(AUGMENTS)}"
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"model.loss={self.loss!r} must be one of {', '.join(LOSSES)}")
        if not 0.0 <= float(self.style_mixing) <= 1.0:
            raise ConfigError(f"model.style_mixing={self.style_mixing} must be in [0, 1]")
        for key in ("r1_interval", "pl_interval", "ada_interval", "pl_batch_shrink"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be >= 1")
        heads = bool(self.d_profile) or bool(self.d_moments)
        if int(self.d_head_group) < 0 or (int(self.d_head_group) and not heads):
            raise ConfigError(
                f"model.d_head_group={self.d_head_group}: a group size (2 or more to be of "
                "use) needs model.d_profile=true or model.d_moments=true; 0 turns it off"
            )
        if heads and self.image_width not in (None, self.image_size):
            raise ConfigError(
                "model.d_profile and model.d_moments need square images (leave "
                "model.image_width unset)"
            )
        parse_pipeline(self.ada_pipeline)
        if int(self.amp_res) < 0:
            raise ConfigError(f"model.amp_res={self.amp_res} must be >= 0")
        if self.conv_clamp is not None and not float(self.conv_clamp) > 0:
            raise ConfigError(f"model.conv_clamp={self.conv_clamp} must be > 0 (or null: none)")
        for key in ("image_size", "image_width"):
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v > 1024 or v & (v - 1):
                raise ConfigError(f"model.{key}={v!r} must be a power of 2 from 16 to 1024")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the images."""
        return int(self.image_size), int(self.image_width or self.image_size)


STYLEGAN2_CONFIGS = {
    "paper256": {
        "channel_base": 16384,
        "channel_max": 512,
        "mapping_layers": 8,
        "r1_gamma": 1.0,
        "ema_kimg": 20.0,
    },
    "auto": {
        "channel_base": 16384,
        "channel_max": 512,
        "mapping_layers": 2,
        "r1_gamma": None,
        "ema_kimg": None,
    },
    "small": {
        "image_size": 64,
        "z_dim": 256,
        "w_dim": 256,
        "channel_base": 1024,
        "channel_max": 128,
        "mapping_layers": 2,
        "r1_gamma": None,
        "ema_kimg": None,
        "ada_kimg": 100.0,
        "sky_noise": True,
    },
    "cpu": {
        "image_size": 64,
        "z_dim": 256,
        "w_dim": 256,
        "channel_base": 1024,
        "channel_max": 128,
        "mapping_layers": 2,
        "r1_gamma": None,
        "ema_kimg": None,
        "ada_kimg": 100.0,
        "sky_noise": True,
        "d_profile": True,
        "d_moments": True,
        "d_head_group": 4,
    },
}


def _lazy(interval: int, on: bool) -> float:
    """The lazy-regularisation correction ``k / (k + 1)`` (1 when the regulariser is off)."""
    return interval / (interval + 1.0) if on else 1.0


@register_recipe("stylegan2")
class StyleGAN2Recipe(PairRecipe):
    """StyleGAN2 + ADA as a training recipe (see the module docstring)."""

    family = "stylegan2"
    Settings = StyleGAN2Settings
    CONFIGS = STYLEGAN2_CONFIGS
    DEFAULT_CONFIG = "paper256"
    DDP_NETWORKS = ("D",)  # see wrap_data_parallel

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
        h, w = s.shape
        got = (
            (h, w)
            if image_size is None
            else (
                (int(image_size), int(image_size))
                if isinstance(image_size, int)
                else tuple(int(v) for v in image_size)
            )
        )
        if got != (h, w):
            raise ConfigError(
                f"the model makes {h}×{w} images (model.image_size, "
                f"model.image_width) but the data are {got[0]}×{got[1]}: set "
                "data.resize or the model's size"
            )
        self.G, self.D = build_stylegan2_pair(
            h,
            channels,
            z_dim=s.z_dim,
            w_dim=s.w_dim,
            mapping_layers=s.mapping_layers,
            channel_base=s.channel_base,
            channel_max=s.channel_max,
            mbstd_group=s.mbstd_group,
            seed=self.seed,
            image_width=None if w == h else w,
            sky_noise=self.sky_description(channels) if s.sky_noise else None,
            d_heads={
                "profile": bool(s.d_profile),
                "moments": bool(s.d_moments),
                "head_group": int(s.d_head_group),
            },
        )
        self.G.to(self.device)
        self.D.to(self.device)
        wgan = s.loss == "wgan_gp"
        cg = _lazy(int(s.pl_interval), float(s.pl_weight) > 0)
        cd = _lazy(int(s.r1_interval), not wgan and (s.r1_gamma is None or s.r1_gamma > 0))

        def adam(params, c):
            return torch.optim.Adam(
                params,
                lr=float(s.lr) * c,
                eps=float(s.eps),
                betas=(float(s.beta1) ** c, float(s.beta2) ** c),
            )

        self.opt_g = adam(self.G.parameters(), cg)
        self.opt_d = adam(self.D.parameters(), cd)
        self.pl_mean = torch.zeros([], device=self.device)
        self.images_seen = 0
        self.batch_size: int | None = None
        self._frozen: set[int] = set()
        self.augment: Augment | None = None
        self._synthesis, self._critic = self.G.synthesis, self.D
        self.cuda_options = {"amp_res": 0, "channels_last": False, "compile": False}
        if s.augment == "ada":
            self.augment = AdaptiveAugment(
                target=float(s.ada_target),
                interval=int(s.ada_interval),
                speed_images=int(round(float(s.ada_kimg) * 1000)),
                max_shift=float(s.ada_max_shift),
                stages=s.ada_pipeline,
                scale_std=float(s.ada_scale_std),
                xfrac_std=float(s.ada_xfrac_std),
                sky_std=float(s.ada_sky_std),
                noise_std=float(s.ada_noise_std),
                cutout_size=float(s.ada_cutout),
            )
        elif s.augment == "diffaugment":
            self.augment = DiffAugment()

    # ------------------------------------------------------------------ CUDA options
    def setup(self, *, amp_dtype: torch.dtype | None = None, world_size: int = 1) -> None:
        """The trainer's AMP dtype and world size, and the CUDA options: with AMP and
        ``amp_res`` > 0 only the highest ``amp_res`` resolutions run reduced (clamped to
        ``±conv_clamp``) instead of the whole networks; ``channels_last`` and ``compile`` on a
        CUDA device. On the CPU (where the trainer refuses AMP) they change nothing."""
        super().setup(amp_dtype=amp_dtype, world_size=world_size)
        s = self.settings
        cuda = self.device.type == "cuda"
        by_res = amp_dtype is not None and int(s.amp_res) > 0
        clamp = None if s.conv_clamp is None else float(s.conv_clamp)
        for net in (self.G, self.D):
            net.set_mixed_precision(amp_dtype if by_res else None, int(s.amp_res), clamp)
        if cuda and s.channels_last:
            for net in (self.G, self.D):
                net.to(memory_format=torch.channels_last)
        self._synthesis, self._critic = self.G.synthesis, self.D
        if cuda and s.compile:
            # the regularisers (R1, path length, WGAN-GP) need a double backward, which
            # compiled graphs do not give: they run the eager networks
            self._synthesis, self._critic = torch.compile(self.G.synthesis), torch.compile(self.D)
        #: what the CUDA options do on this device (recorded for the user and the tests)
        self.cuda_options = {
            "amp_res": int(s.amp_res) if by_res else 0,
            "channels_last": bool(cuda and s.channels_last),
            "compile": bool(cuda and s.compile),
        }

    def autocast(self):
        """Autocast over the whole step only when AMP covers the whole networks (with
        ``amp_res`` the networks switch precision per resolution themselves)."""
        if self.amp_dtype is not None and int(self.settings.amp_res) > 0:
            return contextlib.nullcontext()
        return super().autocast()

    def _images(self, x: Tensor) -> Tensor:
        """Images in D's memory format."""
        return (
            x.contiguous(memory_format=torch.channels_last)
            if self.cuda_options["channels_last"]
            else x
        )

    # ------------------------------------------------------------------ contract
    @classmethod
    def data_need(cls, settings) -> Stamps:
        """Stamps of the model's ``(height, width)`` (a side when square)."""
        h, w = settings.shape
        return Stamps(h if h == w else (h, w))

    def phases(self) -> tuple[Phase, ...]:
        s = self.settings
        out = [Phase("g_main")]
        if float(s.pl_weight) > 0:
            out.append(Phase("g_pl", interval=int(s.pl_interval)))
        out.append(Phase("d_main"))
        if s.loss != "wgan_gp" and (s.r1_gamma is None or float(s.r1_gamma) > 0):
            out.append(Phase("d_r1", interval=int(s.r1_interval)))
        return tuple(out)

    def augmentations(self) -> dict[str, Augment]:
        return {"ada": self.augment} if isinstance(self.augment, AdaptiveAugment) else {}

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    def make_batches(self, data, batch_size: int, seed: int):
        """Record the batch size (γ and the EMA half-life of ``auto`` depend on it); the
        pipeline's default batches are used."""
        self.batch_size = int(batch_size) * self.world_size
        return None

    def r1_gamma(self) -> float:
        """γ: the setting, or the ADA heuristic ``0.0002 · res² / batch`` (``res²`` the pixel
        count ``H · W`` for non-square images)."""
        s = self.settings
        if s.r1_gamma is not None:
            return float(s.r1_gamma)
        h, w = s.shape
        return 0.0002 * h * w / float(self.batch_size or 32)

    def ema_kimg(self) -> float:
        s = self.settings
        return float(s.ema_kimg) if s.ema_kimg is not None else (self.batch_size or 32) * 10 / 32

    def default_ema(self) -> float:
        """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images."""
        return 0.5 ** (float(self.batch_size or 32) / (self.ema_kimg() * 1000.0))

    def freeze(self, g_layers: int = 0, d_blocks: int = 0) -> None:
        """Keep the first ``g_layers`` synthesis layers of G (coarse first) and the first
        ``d_blocks`` blocks of D (from the highest resolution, with fromRGB) fixed."""
        params = self.G.freeze(int(g_layers)) + self.D.freeze(int(d_blocks))
        self._frozen |= {id(p) for p in params}

    def state_dict(self) -> dict:
        return {"pl_mean": float(self.pl_mean), "images_seen": int(self.images_seen)}

    def load_state_dict(self, state: dict) -> None:
        self.pl_mean = torch.tensor(float(state.get("pl_mean", 0.0)), device=self.device)
        self.images_seen = int(state.get("images_seen", 0))

    # ------------------------------------------------------------------ helpers
    def wrap_data_parallel(self, wrap) -> None:
        """D in DDP (G's mapping and synthesis networks are called one by one, past G's
        forward: their gradients are averaged after the backward pass). The main phases'
        critic is the same wrapper, compiled when ``compile`` is on."""
        if "D" in self._ddp:
            return
        wrapped = wrap(self.D)
        self._ddp["D"] = wrapped
        self._ddp_params.update(id(p) for p in self.D.parameters() if p.requires_grad)
        critic = self._critic
        self._ddp["_critic"] = torch.compile(wrapped) if critic is not self.D else wrapped

    def _trainable(self, net: nn.Module, flag: bool) -> None:
        for p in net.parameters():
            p.requires_grad_(flag and id(p) not in self._frozen)

    def _aug(self, x: Tensor, rng: torch.Generator) -> Tensor:
        return x if self.augment is None else self.augment(x, rng)

    def _ws(self, n: int, rng: torch.Generator) -> Tensor:
        """Per-layer ws of ``n`` samples with style mixing (probability ``style_mixing``)."""
        s = self.settings
        return mixed_styles(self.G, n, self.sample_latent, rng, s.style_mixing, self.device)

    # ------------------------------------------------------------------ phases
    def g_main(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        self._trainable(self.G, True)
        self._trainable(self.D, False)
        with self.autocast():
            fake = self._synthesis(self._ws(real.shape[0], ctx.rng))
            logits = self._critic(self._images(self._aug(fake, ctx.rng)))
            loss = (
                wgan_g_loss(logits)
                if self.settings.loss == "wgan_gp"
                else nonsaturating_g_loss(logits)
            )
        self.optimize("G", loss)
        return {"loss_g": loss.item()}

    def g_pl(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        s = self.settings
        self._trainable(self.G, True)
        n = max(1, real.shape[0] // int(s.pl_batch_shrink))
        ws = self._ws(n, ctx.rng)
        images = self.G.synthesis(ws)
        penalty, self.pl_mean = path_length_penalty(
            images.float(), ws, self.pl_mean, ctx.rng, decay=float(s.pl_decay)
        )
        loss = penalty * (float(s.pl_weight) / self.G.num_ws) * ctx.gain
        self.optimize("G", loss)
        return {
            "pl_penalty": penalty.item() / self.G.num_ws,
            "pl_mean": float(self.pl_mean) / math.sqrt(self.G.num_ws),
        }

    def d_main(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        s = self.settings
        self._trainable(self.G, False)
        self._trainable(self.D, True)
        n = real.shape[0]
        with torch.no_grad(), self.autocast():
            fake = self._synthesis(self._ws(n, ctx.rng))
        with self.autocast():
            real_aug = self._images(self._aug(real, ctx.rng))
            fake_aug = self._images(self._aug(fake, ctx.rng))
            real_logits, fake_logits = self._critic(real_aug), self._critic(fake_aug)
            if s.loss == "wgan_gp":
                gp = gradient_penalty(self.D, real_aug, fake_aug, ctx.rng)
                loss = (
                    wgan_d_loss(real_logits, fake_logits)
                    + float(s.gp_lambda) * gp
                    + float(s.drift) * real_logits.float().square().mean()
                )
            else:
                loss = nonsaturating_d_loss(real_logits, fake_logits)
        self.optimize("D", loss)
        if isinstance(self.augment, AdaptiveAugment):
            self.augment.observe(real_logits)
        self.images_seen += n * self.world_size
        out = {
            "loss_d": loss.item(),
            "d_real": real_logits.detach().float().mean().item(),
            "d_fake": fake_logits.detach().float().mean().item(),
            "kimg": self.images_seen / 1000.0,
        }
        if s.loss == "wgan_gp":
            out["gp"] = gp.item()
        return out

    def d_r1(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        self._trainable(self.D, True)
        x = real.detach().requires_grad_(True)
        with self.autocast():
            logits = self.D(self._aug(x, ctx.rng))
        penalty = r1_penalty(logits.float(), x)
        # + 0 · logits: every parameter of D gets a gradient (∇ₓD does not reach the last
        # bias), as DDP expects of a backward pass
        self.optimize(
            "D", penalty * (0.5 * self.r1_gamma() * ctx.gain) + 0.0 * logits.float().sum()
        )
        return {"r1": penalty.item()}
