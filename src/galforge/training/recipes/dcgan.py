"""DCGAN training recipe (Fussell & Moews 2019): alternating D/G Adam updates.

Each step draws a latent batch, updates the discriminator once on real and generated
images (binary cross-entropy; real targets optionally smoothed to ``U[1-δ, 1+δ]``), then
updates the generator once with the non-saturating loss ``-log D(G(z))``.  Adam with
lr = 2e-4 and β = (0.5, 0.999) for both networks, weights ~ N(0, 0.02).

Two named configurations (``model.config``):

* ``cpu`` (the default): the paper's networks made to reach the real population in the
  compute of a laptop CPU — base width W = 32 instead of 128, nearest-neighbour ×2 +
  3×3 convolution upsampling in G instead of stride-2 transposed convolutions (no
  checkerboard on faint backgrounds), and sky noise: G draws the noiseless galaxy and a
  :class:`galforge.models.layers.SkyNoise` layer adds pixel noise of a learned per-image,
  per-band level in physical units (the data's own normaliser), so no capacity goes into
  painting noise and no texture gives the fakes away.  EMA of G with decay 0.999 (a
  half-life of about 700 steps), whose batch-norm statistics are recomputed for the EMA
  weights themselves before they are exported (:mod:`galforge.training.ema`): a DCGAN's
  colours and shapes swing from snapshot to snapshot (median g−r of the raw generator 0.45,
  0.54, 0.27 at steps 2000, 4000, 6000 of the zoo run, real 0.47), and the average over the
  last thousand steps sits on the real population.  ``--set train.ema=0`` turns it off.
  And three side paths of D that give it a sense of the population's light profiles, spread
  and shapes: ``d_profile`` (radial light profile), ``d_mbstd_group=4`` (minibatch standard
  deviation) and ``d_moments`` (windowed size and ellipticity).
* ``paper``: Fussell & Moews exactly — W = 128, transposed convolutions, no sky noise, no EMA.

``model.d_profile=true`` (on in ``cpu``, off in ``paper``) gives D a second path that judges
each band's azimuthally averaged light profile, ``model.d_profile_group=g`` the spread of those
profiles over groups of g images (:class:`galforge.models.dcgan.DCGANDiscriminator`);
``model.d_mbstd_group=4`` a minibatch standard deviation map before D's last convolution;
``model.d_moments=true`` a path judging each band's windowed size and ellipticity
(:class:`galforge.models.layers.ShapeMoments`); ``model.r1_gamma`` a lazy R1 penalty on real
images (every ``model.r1_interval`` steps, off by default).  ``model.scene_blur=σ``
band-limits the noiseless scene of a sky-noise generator by a Gaussian of σ pixels in physical
units, as a PSF does (off by default: σ must stay below the data's own PSF).
``model.scene_floor=true`` (off by default: a 5000-step zoo run with it passed 14 of 22
measures against 500 held-out GalSim galaxies where the same recipe without it passes 18, its
light profiles too flat: Gini, M20, concentration, smoothness and Sérsic n) makes the bottom of G's tanh range the empty sky
(0 physical units) instead of the clip of noisy pixels below it, so the background of the
noiseless scene is the saturated end of the tanh rather than one exact inner value that the
pixel noise hides from D (without it the zoo model's noiseless galaxies carried blocky
backgrounds of about a count RMS).  What each of
these was measured to do, run by run, is in ``docs/dcgan-recipe.md``.

Any key given explicitly overrides the chosen configuration
(``--set model.config=paper --set model.width=64``).  ``benchmarks/quality_vs_time.py``
measures both.

``dcgan64`` is the 64×64 model of appendix A; ``dcgan128`` the 128×128 model of
appendix C, whose discriminator has a dropout layer before its last convolution that is
removed after epoch 200.  The dropout rate is an option (0.5 by default).

``model.psf`` (``galforge train --psf``; needs ``sky_noise``) turns on the physical forward
model (:mod:`galforge.models.forward`): G draws the galaxy before the PSF, a fixed convolution
with the PSF of the data (``moffat:fwhm=0.7,beta=3.5``, ``gaussian:fwhm=...`` in arcsec at the
data's pixel scale, or a FITS image, :mod:`galforge.data.psf`; ``auto``: what the data say of
their own PSF, as ``builtin:galsim`` does) and the sky noise make what D sees.  The rendered PSF
travels in the bundle, which can then re-observe its galaxies through another telescope.

``model.oversample=2`` (64×64 data) makes G draw the pre-PSF scene on a grid twice as fine
(128×128, the PSF sampled there without a pixel); each data pixel then sums its 2×2 block.

``model.conditions`` (``galforge train --condition-columns flux,hlr``) conditions both
networks on catalogue columns of the training images: G takes the standardised conditions
beside z (log10 first for a column whose values are all positive and span a factor of 3 or
more), D is a projection discriminator; the fake images of a step get the conditions of the
real ones. The standardisation and a sample of the catalogue (drawn from for galaxies asked
for without conditions) are stored in the generator's spec.

``model.condition_loss=w`` (on, with w = 1, when the forward model is on and a condition has a
known physical meaning: ``flux``, ``flux_<band>``, ``hlr``; 0 turns it off) adds to G's loss
``w ×`` :func:`galforge.training.losses.condition_consistency` of its pre-PSF galaxy: the total
light of the band against the asked flux (a magnitude error, in units of 0.1 mag) and the light
inside the galaxy's own elliptical aperture of circularised radius ``hlr`` against one half (in
units of 10 % in size).  The projection discriminator alone only hinted at them (a 600-step run
gave 2.6× the flux for 10× the asked flux and no change of size with ``hlr``).  Other columns
are left to the projection discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from galforge.errors import ConfigError, DataError
from galforge.models.dcgan import DROPOUT_PLACES, build_dcgan_pair, dcgan_generator_spec
from galforge.models.layers import ScheduledDropout
from galforge.training.losses import (
    discriminator_loss,
    generator_loss_nonsaturating,
    r1_penalty,
    smooth_real_labels,
)
from galforge.training.recipe import PairRecipe, Phase, StepContext
from galforge.training.recipes import register_recipe


@dataclass
class DCGANSettings:
    """Hyper-parameters of the DCGAN recipe; the defaults are the paper's (appendix A)."""

    image_size: int = 64
    latent_dim: int = 100
    width: int = 128  # W: hidden widths 8W-4W-2W-W (1024-512-256-128)
    upsample: str = "transposed"  # transposed (paper) | resize (nearest ×2 + 3×3 conv)
    ema: float = 0.0  # EMA decay of G when train.ema is not set (0: off)
    kernel_size: int = 4
    batch_norm: bool = True
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    label_smoothing: float = 0.0  # δ: real targets ~ U[1-δ, 1+δ]
    label_clip: float | None = None  # upper clip of the real targets (e.g. 1.0)
    dropout: float = 0.0  # dropout rate (0: no dropout layer)
    dropout_where: str = "D"  # none | G | D | both: before the last convolution
    spatial_dropout: bool = False  # drop whole feature maps
    dropout_until_epoch: int | None = None  # remove the dropout layers after this many epochs
    sky_noise: bool = False  # G draws the noiseless scene + learned sky noise level
    scene_blur: float = 0.0  # σ (px) of a Gaussian band limit on that scene (0: off)
    scene_floor: bool = False  # that scene's range starts at the empty sky (tanh -1 = 0)
    d_profile: bool = False  # D also judges each band's radial light profile
    d_profile_group: int = 0  # ... and its spread over groups of this many images
    d_mbstd_group: int = 0  # minibatch std map before D's last convolution (0: off)
    d_moments: bool = False  # D also judges each band's windowed size and ellipticity
    r1_gamma: float = 0.0  # γ of the R1 penalty on real images (0: off)
    r1_interval: int = 16  # lazy R1: every this many steps, with this gain
    psf: str | None = None  # forward model: the data's PSF (auto: as the data
    # describe it), None: off
    conditions: list | str | None = None  # catalogue columns G and D are conditioned on
    oversample: int = 1  # with psf: G draws the pre-PSF scene this many
    # times finer (2: 128 px for 64 px data)
    condition_loss: float | None = None  # weight of G's condition-consistency loss
    # (None: 1 with psf and a flux/hlr condition; 0: off)

    def __post_init__(self):
        if isinstance(self.conditions, str):
            self.conditions = [c.strip() for c in self.conditions.split(",") if c.strip()]
        self.conditions = [str(c) for c in (self.conditions or [])]
        if len(set(self.conditions)) != len(self.conditions):
            raise ConfigError(f"model.conditions={self.conditions}: a column is named twice")
        if self.psf is not None and not str(self.psf).strip():
            self.psf = None
        if self.condition_loss is not None and not float(self.condition_loss) >= 0:
            raise ConfigError(f"model.condition_loss={self.condition_loss} must be >= 0 (0: off)")
        if int(self.oversample) < 1 or (int(self.oversample) > 1 and self.psf is None):
            raise ConfigError(
                f"model.oversample={self.oversample} must be >= 1, and > 1 only "
                "with --psf (the pre-PSF scene is drawn on the finer grid)"
            )
        if self.psf is not None and (not self.sky_noise or float(self.scene_blur) > 0):
            raise ConfigError(
                "model.psf (--psf) needs model.sky_noise=true and "
                "model.scene_blur=0 (the PSF acts on the pre-PSF scene in physical "
                "units, before the sky noise; the cpu config has them)"
            )
        if self.dropout_where not in DROPOUT_PLACES:
            raise ConfigError(
                f"model.dropout_where={self.dropout_where!r} must be one of "
                f"{', '.join(DROPOUT_PLACES)}"
            )
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"model.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not float(self.scene_blur) >= 0:
            raise ConfigError(f"model.scene_blur={self.scene_blur} must be >= 0 (pixels; 0: off)")
        if self.scene_floor and not self.sky_noise:
            raise ConfigError(
                "model.scene_floor needs model.sky_noise=true (the floor is the empty "
                "sky of the noiseless scene)"
            )
        if float(self.scene_blur) > 0 and not self.sky_noise:
            raise ConfigError(
                "model.scene_blur needs model.sky_noise=true (it band-limits the "
                "noiseless scene, before the sky noise)"
            )
        if float(self.r1_gamma) < 0 or int(self.r1_interval) < 1:
            raise ConfigError(
                f"model.r1_gamma={self.r1_gamma} must be >= 0 and "
                f"model.r1_interval={self.r1_interval} >= 1"
            )


#: the named configurations: what each changes from the paper's values (the Settings defaults)
DCGAN_CONFIGS = {
    "paper": {"width": 128, "upsample": "transposed", "ema": 0.0},
    "cpu": {
        "width": 32,
        "upsample": "resize",
        "ema": 0.999,
        "sky_noise": True,
        "d_profile": True,
        "d_mbstd_group": 4,
        "d_moments": True,
    },
}


@register_recipe("dcgan64")
@register_recipe("dcgan128", image_size=128, dropout=0.5, dropout_until_epoch=200)
class DCGANRecipe(PairRecipe):
    """The DCGAN of Fussell & Moews (2019) as a training recipe."""

    family = "dcgan"
    Settings = DCGANSettings
    CONFIGS = DCGAN_CONFIGS
    DEFAULT_CONFIG = "cpu"
    PHASES = (Phase("adversarial"),)
    DDP_NETWORKS = ("G", "D")  # both only ever called through their forward

    def __init__(
        self,
        config: dict,
        channels: int,
        image_size: int | None,
        device,
        seed: int = 0,
        normalizer: dict | None = None,
        data_info: dict | None = None,
    ):
        super().__init__(config, channels, image_size, device, seed, normalizer)
        s = self.settings
        size = int(image_size or s.image_size)
        if size != int(s.image_size):
            raise ConfigError(
                f"model.image_size={s.image_size} but the data are {size}×{size}: set "
                "data.resize or pick the matching model"
            )
        dropout = float(s.dropout) if s.dropout_where != "none" else 0.0
        psf_spec, kernel = (
            self._psf(channels, size, data_info or {}) if s.psf is not None else (None, None)
        )
        k = len(s.conditions)
        cond_spec = (
            {
                "names": list(s.conditions),
                "log": [False] * k,
                "mean": [0.0] * k,
                "std": [1.0] * k,
                "sample": [],
            }
            if k
            else None
        )
        self._cond_sample: Tensor | None = None
        self.G, self.D = build_dcgan_pair(
            size,
            channels,
            latent_dim=int(s.latent_dim),
            width=int(s.width),
            kernel_size=int(s.kernel_size),
            batch_norm=bool(s.batch_norm),
            dropout=dropout,
            dropout_where=s.dropout_where,
            spatial_dropout=bool(s.spatial_dropout),
            seed=self.seed,
            upsample=str(s.upsample),
            sky_noise=self.sky_description(channels) if s.sky_noise else None,
            d_profile=bool(s.d_profile),
            d_profile_group=int(s.d_profile_group),
            d_mbstd_group=int(s.d_mbstd_group),
            d_moments=bool(s.d_moments),
            scene_blur=float(s.scene_blur),
            psf=psf_spec,
            conditions=cond_spec,
            scene_floor=bool(s.scene_floor),
        )
        if kernel is not None:
            self.G.psf.set_kernel(kernel)
        self._consistency = self._consistency_setup(channels, data_info or {})
        self._g = self.G  # the network itself (self.G may become a DDP wrapper)
        self._g_dropout = dropout if s.dropout_where in ("G", "both") else 0.0
        self.G.to(self.device)
        self.D.to(self.device)
        betas = (float(s.beta1), float(s.beta2))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=float(s.lr), betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(s.lr), betas=betas)

    def _psf(self, channels: int, size: int, info: dict):
        """The generator's PSF spec and rendered kernel for ``model.psf`` and the data."""
        from galforge.data.psf import kernel_size, parse_psf, render_psf

        text = self.settings.psf
        if str(text).strip().lower() == "auto":
            text = info.get("psf")
            if not text:
                raise ConfigError(
                    "--psf auto (model.psf): the training data do not describe "
                    "their PSF; give it, e.g. --psf moffat:fwhm=0.7,beta=3.5 or "
                    "--psf psf.fits"
                )
        scale = info.get("pixel_scale")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ConfigError(
                "--psf: the pixel scale of the training images is unknown; give "
                "it with --set data.pixel_scale=ARCSEC"
            )
        bands = info.get("bands") or [f"band{c}" for c in range(channels)]
        psfs = parse_psf(text, bands, "--psf")
        o = int(self.settings.oversample)
        k = kernel_size(size * o)
        spec = {"psf": [p.describe() for p in psfs], "pixel_scale": float(scale), "size": k}
        if o > 1:
            spec["oversample"] = o
        return spec, render_psf(psfs, float(scale) / o, k, pixel=o == 1)

    def _consistency_setup(self, channels: int, info: dict) -> dict | None:
        """What the condition-consistency loss needs (None when it is off): it applies to
        the conditions whose physical meaning is known (``flux``, ``flux_<band>``, ``hlr``)
        and measures them on the pre-PSF galaxy, so it needs the forward model."""
        from galforge.training.losses import CONSISTENCY_COLUMNS

        s = self.settings
        bands = list(info.get("bands") or [f"band{c}" for c in range(channels)])
        known = [
            c
            for c in s.conditions
            if c in CONSISTENCY_COLUMNS or (c.startswith("flux_") and c[5:] in bands)
        ]
        weight = s.condition_loss
        if weight is None:
            weight = 1.0 if (known and s.psf is not None) else 0.0
        weight = float(weight)
        if weight <= 0:
            return None
        if s.psf is None or not known:
            raise ConfigError(
                f"model.condition_loss={weight:g} needs the forward model (--psf) and a "
                "condition it knows (flux, flux_<band>, hlr in --condition-columns); "
                "set it to 0 for other columns"
            )
        return {
            "weight": weight,
            "bands": bands,
            "ref_band": bands.index("r") if "r" in bands else len(bands) // 2,
        }

    @classmethod
    def data_need(cls, settings):
        from galforge.training.pipeline import Stamps

        return Stamps(int(settings.image_size), conditions=tuple(settings.conditions or ()))

    def make_batches(self, data, batch_size: int, seed: int):
        """Fit the standardisation of the conditions on the training catalogue (the batches
        themselves are the pipeline's)."""
        if not self.settings.conditions:
            return None
        cond = data["conditions"] if isinstance(data, dict) else None
        if cond is None:
            raise DataError("model.conditions: the data came without their catalogue columns")
        c = torch.as_tensor(cond, dtype=torch.float64).cpu()
        positive = (c > 0).all(dim=0)
        span = c.abs().amax(dim=0) / c.abs().amin(dim=0).clamp_min(1e-300)
        log = positive & (span >= 3.0)
        t = torch.where(log, torch.log10(c.clamp_min(1e-300)), c)
        mean, std = t.mean(dim=0), t.std(dim=0) if len(t) > 1 else torch.ones(c.shape[1])
        std = torch.where(std > 0, std, torch.ones_like(std))
        pick = torch.randperm(len(c), generator=torch.Generator().manual_seed(int(seed)))[:1000]
        sample = c[pick].float()
        self._g.set_condition_scaling(log.float(), mean.float(), std.float(), sample.tolist())
        self._cond_sample = sample
        return None

    def sample_conditions(self, n: int, rng: torch.Generator) -> Tensor | None:
        """Rows of the training catalogue's sample (conditional models)."""
        if self._cond_sample is None:
            return None
        idx = torch.randint(len(self._cond_sample), (int(n),), generator=rng, device=rng.device)
        return self._cond_sample.to(rng.device)[idx]

    def generator_spec(self) -> dict:
        s = self.settings
        return dcgan_generator_spec(
            self.G,
            width=s.width,
            kernel_size=s.kernel_size,
            batch_norm=s.batch_norm,
            dropout=self._g_dropout,
            spatial_dropout=s.spatial_dropout,
        )

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    def phases(self) -> tuple[Phase, ...]:
        if float(self.settings.r1_gamma) > 0:
            return (*self.PHASES, Phase("d_r1", interval=int(self.settings.r1_interval)))
        return tuple(self.PHASES)

    def _split(self, real) -> tuple[Tensor, tuple]:
        """Images and D's extra arguments (the standardised conditions) of a batch."""
        if isinstance(real, dict):
            c = real["conditions"].to(self.device)
            return real["images"], (c, self._g.standardise(c))
        return real, ()

    def d_r1(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        """Lazy R1: ``γ / 2 · interval · E‖∇ₓD(x)‖²`` on real images, its own D update."""
        real, cond = self._split(real)
        x = real.detach().requires_grad_(True)
        with self.autocast():
            logits = self.D(x, *cond[1:])
        penalty = r1_penalty(logits.float(), x)
        # + 0 · logits: every parameter of D (its last bias too, which ∇ₓD does not see)
        # gets a gradient, as data-parallel training expects of a backward pass
        self.optimize(
            "D",
            penalty * (0.5 * float(self.settings.r1_gamma) * ctx.gain) + 0.0 * logits.float().sum(),
        )
        return {"r1": penalty.item()}

    def adversarial(self, real: Tensor, ctx: StepContext) -> dict[str, float]:
        """One D update (BCE, smoothed real labels) then one G update (non-saturating)."""
        s = self.settings
        real, cond = self._split(real)  # conditioned: fakes get the real ones' conditions
        n = real.shape[0]
        # per-image draws: this process's rows of the global batch's (StepContext.rows)
        z = ctx.rows(self.sample_latent, n).to(self.device)
        targets = ctx.rows(
            lambda m, g: smooth_real_labels(
                m, float(s.label_smoothing), g, clip=s.label_clip, device=self.device
            ),
            n,
        )
        # discriminator: real images towards the (smoothed) real label, fakes towards 0
        with self.autocast():
            fake = self.G(z, *cond[:1])
            real_logits = self.D(real, *cond[1:])
            fake_logits = self.D(fake.detach(), *cond[1:])
            loss_real, loss_fake = discriminator_loss(real_logits, fake_logits, targets)
            loss_d = loss_real + loss_fake
        self.optimize("D", loss_d)
        # generator: non-saturating loss on the same fakes
        with self.autocast():
            gen_logits = self.D(fake, *cond[1:])
            loss_g = generator_loss_nonsaturating(gen_logits)
        extra = {}
        if self._consistency is not None and cond:
            # the pre-PSF galaxy of the same latents and conditions has the flux and size
            # asked for (the network runs once more, outside D's view)
            from galforge.training.losses import condition_consistency

            g = self._g
            loss_c = condition_consistency(
                g.scene(z, cond[0]).float(),
                g.condition_names,
                cond[0],
                pixel_scale=g.psf.pixel_scale / g.oversample,
                bands=self._consistency["bands"],
                ref_band=self._consistency["ref_band"],
            )
            loss_g = loss_g + self._consistency["weight"] * loss_c
            extra["loss_cond"] = loss_c.detach().float()
        self.optimize("G", loss_g)
        with torch.no_grad():
            stats = torch.stack(
                [
                    loss_d.detach().float(),
                    loss_g.detach().float(),
                    torch.sigmoid(real_logits.detach().float()).mean(),
                    torch.sigmoid(fake_logits.detach().float()).mean(),
                ]
            ).tolist()
        out = {"loss_d": stats[0], "loss_g": stats[1], "d_real": stats[2], "d_fake": stats[3]}
        out.update({k: float(v) for k, v in extra.items()})
        return out

    def dropout_active(self) -> bool:
        return any(
            m.is_on
            for net in (self.G, self.D)
            for m in net.modules()
            if isinstance(m, ScheduledDropout)
        )

    def on_epoch_end(self, epoch: int) -> None:
        until = self.settings.dropout_until_epoch
        if until is not None and epoch >= int(until):
            for net in (self.G, self.D):
                for m in net.modules():
                    if isinstance(m, ScheduledDropout):
                        m.switch_off()

    def state_dict(self) -> dict:
        return {"dropout_active": self.dropout_active()}
