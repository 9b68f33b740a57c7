"""DCGAN generator and discriminator for 64×64 and 128×128 galaxy images.

The networks follow Fussell & Moews (2019, MNRAS 485, 3203), appendix A (64×64) and
appendix C (128×128):

64×64 generator, ``z ∈ R^100`` seen as a 100×1×1 map, transposed convolutions with
kernel 4, strides 1,2,2,2,2 and paddings 0,1,1,1,1::

    z 100 -> 1024 (4×4) -> 512 (8×8) -> 256 (16×16) -> 128 (32×32) -> C (64×64), tanh

ReLU after every hidden layer, batch norm on every layer except the first and the last.

64×64 discriminator, convolutions with kernel 4, strides 2,2,2,2,1 and paddings 1,1,1,1,0::

    C (64×64) -> 128 (32×32) -> 256 (16×16) -> 512 (8×8) -> 1024 (4×4) -> 1 (1×1), sigmoid

LeakyReLU(0.2) after every hidden layer, batch norm on every layer except the first and
the last.

The 128×128 networks add one up/down-sampling stage at the high-resolution end (64
channels at paper width, ``W/2`` in general) and a dropout layer just before the
discriminator's last convolution, which the training recipe removes after a given epoch
(200 in the paper).

``upsample="resize"`` replaces each stride-2 transposed convolution by a nearest-neighbour
×2 upsampling and a 3×3 convolution with the same channel counts.  A transposed convolution
whose kernel is not a multiple of its stride writes some output pixels from more kernel taps
than their neighbours, which leaves a checkerboard on faint backgrounds; resize-then-convolve
cannot produce one (Odena et al. 2016, "Deconvolution and checkerboard artifacts").  Its
convolutions pad by replicating the border pixels: zero padding at every resolution leaves
nested square frames on the sky that the generator must first learn to cancel.

``width`` (``W``, 128 in the paper) is the channel count of the layer next to the 64×64
image stage: the other hidden layers have ``2W``, ``4W``, ``8W`` channels.  The image
channel count ``channels`` follows the data (1..N bands).

The discriminator returns **logits** (one number per image) rather than sigmoid
probabilities: the sigmoid of the paper is folded into a binary cross-entropy with
logits, which is the same loss computed without overflow.  Use
:meth:`DCGANDiscriminator.probability` for the sigmoid output of the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from galforge.errors import ModelError
from galforge.models.forward import PSFConvolution, prepsf_physical
from galforge.models.layers import (  # noqa: F401 (GroupSpread, MinibatchStd re-exported)
    GroupSpread,
    MinibatchStd,
    RadialProfile,
    ScheduledDropout,
    ShapeMoments,
    SkyNoise,
    init_normal_,
    same_size_padding,
    seeded_init,
)
from galforge.models.registry import register_generator
from galforge.seeding import derive_seed, seeded_global

SUPPORTED_SIZES = (64, 128)
DROPOUT_PLACES = ("none", "G", "D", "both")
#: how the generator doubles its resolution: the paper's stride-2 transposed convolutions, or
#: nearest-neighbour ×2 followed by a 3×3 convolution (no checkerboard artefacts)
UPSAMPLE_MODES = ("transposed", "resize", "bilinear")
#: the discriminator's heads (its paths beside the paper's network), by attribute name, in the
#: order their logits are added
D_HEADS = ("embed", "profile", "moments")


def _stage_widths(image_size: int, width: int) -> list[int]:
    """Hidden channel counts of the generator, from the 4×4 layer up to the last hidden one."""
    if image_size not in SUPPORTED_SIZES:
        raise ModelError(
            f"DCGAN image size {image_size} is not supported: use one of {SUPPORTED_SIZES} "
            "(resize the data with data.resize)"
        )
    if int(width) < 2 or (image_size == 128 and int(width) % 2):
        raise ModelError(f"model.width={width} must be >= 2 (and even for 128×128 images)")
    w = int(width)
    widths = [8 * w, 4 * w, 2 * w, w]
    if image_size == 128:
        widths.append(w // 2)
    return widths


def _check_channels(channels: int) -> int:
    if int(channels) < 1:
        raise ModelError(f"the data has {channels} bands: a DCGAN needs at least one")
    return int(channels)


class DCGANGenerator(nn.Module):
    """DCGAN generator (Fussell & Moews 2019, appendices A and C).

    Parameters
    ----------
    image_size: 64 or 128.
    channels: number of image bands produced.
    latent_dim: length of the latent vector z (100 in the paper).
    width: channel multiplier W (128 in the paper).
    kernel_size: kernel of the stride-2 transposed convolutions (4 in the paper); the first
        layer always maps the 1×1 latent to 4×4 with a 4×4 kernel.
    batch_norm: batch norm on the hidden layers except the first (paper: on).
    dropout: dropout rate of a layer placed before the last convolution (0: no layer).
    spatial_dropout: drop whole feature maps instead of single activations.
    init_seed: seed of the N(0, 0.02) weight initialisation.
    upsample: ``"transposed"`` (paper) or ``"resize"`` (nearest ×2 + 3×3 convolution).
    sky_noise: None (paper) or the data's normaliser description: the network then draws
        the noiseless scene and a :class:`galforge.models.layers.SkyNoise` layer adds pixel
        noise of a learned, per-image level in physical units. Such a generator has the
        ``noise`` capability: one noise input per band, zero maps giving the noiseless
        galaxy.
    scene_blur: with ``sky_noise``, σ (pixels) of the Gaussian band limit of the scene
        (:class:`galforge.models.layers.SkyNoise`; 0: none).
    scene_floor: with ``sky_noise``, the tanh output's range starts at the empty sky (0
        physical units) rather than at the normaliser's clip of noisy pixels: the background
        of the noiseless scene is the saturated end of the tanh (``SkyNoise(floor=True)``).
    psf: with ``sky_noise``, the physical forward model (:mod:`galforge.models.forward`):
        ``{"psf": [one description per band], "pixel_scale": arcsec, "size": k}``. The
        network then draws the galaxy before the PSF in physical units (:meth:`scene`), a
        fixed convolution with each band's PSF image (a buffer, in the weights) and the sky
        noise make the observation. Such a generator has the ``prepsf`` capability.
    conditions: continuous conditions (capability ``conditional``): ``{"names": [...],
        "log": [bool, ...], "mean": [...], "std": [...], "sample": [[...], ...]}``; each
        condition is standardised (log10 first where ``log``) and joins the latent vector.
        ``sample`` is a sample of the training catalogue's rows, drawn from when a galaxy is
        asked for without conditions.
    """

    CAPABILITIES = frozenset({"latent"})

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        latent_dim: int = 100,
        width: int = 128,
        kernel_size: int = 4,
        batch_norm: bool = True,
        dropout: float = 0.0,
        spatial_dropout: bool = False,
        init_seed: int = 0,
        upsample: str = "transposed",
        sky_noise: dict | None = None,
        scene_blur: float = 0.0,
        psf: dict | None = None,
        conditions: dict | None = None,
        scene_floor: bool = False,
    ):
        super().__init__()
        rng_before = torch.get_rng_state()
        channels = _check_channels(channels)
        self.oversample = int((psf or {}).get("oversample", 1)) if isinstance(psf, dict) else 1
        if self.oversample != 1 and (self.oversample != 2 or int(image_size) != 64):
            raise ModelError(
                f"model.oversample={self.oversample}: the DCGAN draws 64 or 128 "
                "pixels; use 1, or 2 with 64×64 data (a 128-pixel pre-PSF scene)"
            )
        widths = _stage_widths(int(image_size) * self.oversample, width)
        caps = {"latent"}
        self.condition_names: tuple[str, ...] = ()
        n_cond = self._init_conditions(conditions) if conditions is not None else 0
        if n_cond:
            caps.add("conditional")
        pad = same_size_padding(kernel_size)
        if upsample not in UPSAMPLE_MODES:
            raise ModelError(
                f"model.upsample={upsample!r} is not one of {', '.join(UPSAMPLE_MODES)}"
            )
        self.image_size = int(image_size)
        self.channels = channels
        self.upsample = upsample
        self.latent_dim = int(latent_dim)
        if self.latent_dim < 1:
            raise ModelError(f"model.latent_dim={latent_dim} must be >= 1")
        # the first layer has no batch norm (paper), so it keeps its bias
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.latent_dim + n_cond, widths[0], 4, 1, 0, bias=True),
            nn.ReLU(inplace=True),
        ]

        def up(c_in: int, c_out: int, bias: bool) -> list[nn.Module]:
            if upsample in ("resize", "bilinear"):
                mode = "nearest" if upsample == "resize" else "bilinear"
                return [
                    nn.Upsample(scale_factor=2, mode=mode),
                    nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias, padding_mode="replicate"),
                ]
            return [nn.ConvTranspose2d(c_in, c_out, kernel_size, 2, pad, bias=bias)]

        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.extend(up(c_in, c_out, not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(ScheduledDropout(dropout, spatial_dropout))
        layers.extend(up(widths[-1], channels, True))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.sky = None
        if float(scene_blur) > 0 and sky_noise is None:
            raise ModelError(
                "model.scene_blur needs model.sky_noise=true: the band limit "
                "applies to the noiseless scene, before the sky noise"
            )
        if bool(scene_floor) and sky_noise is None:
            raise ModelError(
                "model.scene_floor needs model.sky_noise=true: the floor is the empty sky "
                "of the noiseless scene, in physical units"
            )
        if sky_noise is not None:
            self.sky = SkyNoise(
                self.latent_dim,
                channels,
                sky_noise,
                blur=float(scene_blur),
                floor=bool(scene_floor),
            )
            size = self.image_size
            const = torch.randn(
                (1, channels, size, size),
                generator=torch.Generator().manual_seed(int(init_seed) + 7919),
            )
            self.register_buffer("noise_const", const)
            caps.add("noise")
        self.psf = None
        if psf is not None:
            if self.sky is None or float(scene_blur) > 0:
                raise ModelError(
                    "model.psf needs model.sky_noise=true and model.scene_blur=0: "
                    "the PSF acts on the pre-PSF scene in physical units"
                )
            try:
                self.psf = PSFConvolution(
                    channels,
                    int(psf["size"]),
                    psf["psf"],
                    float(psf["pixel_scale"]),
                    self.oversample,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(
                    f"model.psf: a spec with psf, pixel_scale and size; {exc}"
                ) from None
            caps.add("prepsf")
        self.CAPABILITIES = frozenset(caps)
        torch.set_rng_state(rng_before)  # torch's default init drew from the global RNG
        seeded_init(self, init_seed)

    def _init_conditions(self, spec: dict) -> int:
        try:
            names = tuple(str(n) for n in spec["names"])
            k = len(names)
            log = torch.tensor(
                [bool(v) for v in spec.get("log") or [False] * k], dtype=torch.float32
            )
            mean = torch.tensor([float(v) for v in spec.get("mean") or [0.0] * k])
            std = torch.tensor([float(v) for v in spec.get("std") or [1.0] * k])
            sample = [[float(v) for v in row] for row in spec.get("sample") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"DCGAN conditions spec: names, log, mean, std, sample; {exc}"
            ) from None
        if (
            not k
            or any(t.numel() != k for t in (log, mean, std))
            or any(len(row) != k for row in sample)
            or bool((std <= 0).any())
        ):
            raise ModelError(
                f"DCGAN conditions spec: {k} names need as many log, mean, std "
                "(> 0) values and sample rows of that length"
            )
        self.condition_names = names
        self.condition_sample = sample
        self.register_buffer("cond_log", log)
        self.register_buffer("cond_mean", mean)
        self.register_buffer("cond_std", std)
        return k

    def set_condition_scaling(self, log, mean, std, sample) -> None:
        """Set the standardisation of the conditions (fitted on the training catalogue) and
        the catalogue sample drawn from for galaxies asked for without conditions."""
        with torch.no_grad():
            for buf, v in ((self.cond_log, log), (self.cond_mean, mean), (self.cond_std, std)):
                buf.copy_(torch.as_tensor(v, dtype=torch.float32))
        self.condition_sample = [[float(v) for v in row] for row in sample]

    def conditions_spec(self) -> dict:
        """The ``conditions`` entry of this generator's spec."""
        return {
            "names": list(self.condition_names),
            "log": [bool(v) for v in self.cond_log.tolist()],
            "mean": [float(v) for v in self.cond_mean.tolist()],
            "std": [float(v) for v in self.cond_std.tolist()],
            "sample": [list(row) for row in self.condition_sample],
        }

    def standardise(self, conditions: torch.Tensor) -> torch.Tensor:
        """Physical conditions (``N×K``) → the network's standardised inputs."""
        c = torch.as_tensor(conditions, dtype=torch.float32).to(self.cond_mean.device)
        if c.dim() != 2 or c.shape[1] != len(self.condition_names):
            raise ModelError(
                f"conditions of shape {tuple(c.shape)}: give N×"
                f"{len(self.condition_names)} ({', '.join(self.condition_names)})"
            )
        logged = torch.log10(c.clamp_min(1e-30))
        t = torch.where(self.cond_log.bool(), logged, c)
        return (t - self.cond_mean) / self.cond_std

    def latent_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the latent input for ``n`` images: ``(n, latent_dim, 1, 1)``."""
        return (int(n), self.latent_dim, 1, 1)

    def noise_shapes(self) -> list[tuple[int, int]]:
        """One noise input per band (generators with ``sky_noise``)."""
        return [(self.image_size, self.image_size)] * (self.channels if self.sky is not None else 0)

    def const_noise(self) -> list[torch.Tensor]:
        """The fixed noise maps stored with the weights, ``1×1×h×w`` each."""
        if self.sky is None:
            return []
        return [self.noise_const[:, c : c + 1] for c in range(self.channels)]

    def permute_image_channels(self, perm: list[int]) -> None:
        """Reorder the bands this generator makes (``--init ... --band-map``): the last
        convolution's output channels and, with sky noise, the per-band noise level and maps."""
        idx = torch.as_tensor(perm)
        last = [m for m in self.net if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
        with torch.no_grad():
            dim = 1 if isinstance(last, nn.ConvTranspose2d) else 0
            last.weight.copy_(last.weight.index_select(dim, idx))
            if last.bias is not None:
                last.bias.copy_(last.bias.index_select(0, idx))
            if self.sky is not None:
                self.sky.permute_bands(perm)
                self.noise_const.copy_(self.noise_const.index_select(1, idx))

    def _raw(self, z: torch.Tensor, conditions=None) -> torch.Tensor:
        if self.condition_names:
            if conditions is None:
                raise ModelError(
                    f"this DCGAN generator is conditioned on "
                    f"{', '.join(self.condition_names)}: give their values"
                )
            c = self.standardise(conditions).to(z.device, z.dtype)
            z = torch.cat([z.flatten(1), c], dim=1)
        elif conditions is not None:
            raise ModelError("this DCGAN generator takes no conditions")
        return self.net(z[:, :, None, None] if z.dim() == 2 else z)

    def clean(self, z: torch.Tensor, conditions=None) -> torch.Tensor:
        """The noiseless scene in model space (the image itself without ``sky_noise``;
        through the PSF with a forward model)."""
        out = self._raw(z, conditions)
        if self.psf is not None:
            return self.sky.to_model(self.psf(self._prepsf(out)))
        return out if self.sky is None else self.sky.scene(out)

    def scene(self, z: torch.Tensor, conditions=None) -> torch.Tensor:
        """The galaxy before the PSF, in the data's physical units (capability ``prepsf``)."""
        if self.psf is None:
            raise ModelError("this DCGAN generator has no forward model (model.psf)")
        return self._prepsf(self._raw(z, conditions))

    def _prepsf(self, raw: torch.Tensor) -> torch.Tensor:
        # on an oversampled grid each fine pixel holds 1/o² of what a data pixel would
        return prepsf_physical(self.sky, raw) / float(self.oversample**2)

    def observe(self, scene: torch.Tensor) -> torch.Tensor:
        """The noiseless observation (physical units, the data's pixels) of a pre-PSF scene:
        the PSF and the pixel response, without the normaliser's clip."""
        if self.psf is None:
            raise ModelError("this DCGAN generator has no forward model (model.psf)")
        return self.psf(scene)

    def psf_info(self) -> dict:
        """The PSF of the observations: its description per band, the data's pixel scale
        (arcsec), ``oversample`` and ``scene_pixel_scale`` (the pre-PSF grid's), and the
        ``C×k×k`` kernel on that grid (pixel response included when not oversampled)."""
        if self.psf is None:
            raise ModelError("this DCGAN generator has no forward model (model.psf)")
        return {
            **self.psf.spec(),
            "oversample": self.oversample,
            "scene_pixel_scale": self.psf.pixel_scale / self.oversample,
            "kernel": self.psf.kernel.detach().float().cpu().numpy(),
        }

    def noise_sigma(self, z: torch.Tensor) -> torch.Tensor:
        """Per-band sky noise σ (physical units) the generator gives each latent, ``N×C``."""
        if self.sky is None:
            raise ModelError("this DCGAN generator has no sky noise (model.sky_noise)")
        return self.sky.sigma(z)

    def forward(self, z: torch.Tensor, conditions=None, noise: list | None = None) -> torch.Tensor:
        out = self._raw(z, conditions)
        if self.sky is None:
            if noise is not None:
                raise ModelError("this DCGAN generator has no noise inputs (no sky_noise)")
            return out
        # with a forward model the noise goes on the observation (the data's pixels)
        observed = self.psf(self._prepsf(out)) if self.psf is not None else None
        ref = out if observed is None else observed
        if noise is not None:
            if len(noise) != self.channels:
                raise ModelError(
                    f"noise: give {self.channels} maps (one per band), got {len(noise)}"
                )
            eps = torch.cat(
                [
                    m.to(ref.device, ref.dtype).expand(ref.shape[0], 1, *ref.shape[-2:])
                    for m in noise
                ],
                dim=1,
            )
        elif self.training:
            eps = torch.randn_like(ref)
        else:
            eps = self.noise_const.to(ref.dtype).expand_as(ref)
        if observed is not None:
            sigma = self.sky.sigma(z).to(out.dtype)[:, :, None, None]
            return self.sky.to_model(observed + sigma * eps.to(out.dtype))
        return self.sky(out, z, eps)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (Fussell & Moews 2019, appendices A and C); returns logits.

    Parameters mirror :class:`DCGANGenerator`.  ``dropout`` > 0 puts a dropout layer just
    before the last convolution (appendix C); :meth:`remove_dropout` switches it off.
    ``forward`` returns one logit per image (shape ``(N,)``); :meth:`probability` applies
    the paper's sigmoid.

    The paper's network is the **trunk** (``net``: the convolutions up to the 4×4 features,
    :meth:`features`) and its last convolution, the **logit** (``net[-1]``).  Everything
    else is an optional **head** (not in the paper) whose logit is added to the trunk's.
    The trunk is initialised from ``init_seed`` exactly as the paper's network alone; each
    head from its own stream, derived from ``init_seed`` and the head's name
    (:func:`head_seed`).  Adding or removing a head therefore leaves every other weight's
    initial value as it was, whatever the order the heads are built in.  Heads start fresh
    when a run is started with ``--init`` from one without them (:data:`INIT_FRESH`).

    ``profile=True``: the ``profile`` head reads the azimuthally averaged light profile of
    each band (:class:`galforge.models.layers.RadialProfile`) through a small MLP.  Averaging
    over annuli lifts the faint outer light of a galaxy out of the pixel noise, which the
    convolutions alone see poorly: without it the generator learns disks that fade too
    early (profiles too concentrated).  With ``profile_group`` = g > 0 the head also sees,
    for every annulus and band, the spread of the profile over groups of g images of the
    batch (a minibatch standard deviation): a generator whose galaxies are too alike in size
    and profile is told apart by that spread.

    ``moments=True``: the ``moments`` head reads each band's windowed size and ellipticity
    (:class:`galforge.models.layers.ShapeMoments`) through its own small MLP.

    ``conditions`` = K > 0: the ``embed`` head makes it a projection discriminator (Miyato &
    Koyama 2018): the inner product of a linear embedding of the (standardised) conditions
    with the trunk's pooled features is added to the logit; ``forward(x, conditions)``.

    ``mbstd_group`` = g > 0 is not a head but a layer of the trunk, without weights: a
    minibatch standard deviation map over groups of g images before the logit convolution
    (as in ProGAN and StyleGAN), which then has one more input channel.
    """

    #: the heads, by attribute name; ``--init`` may leave them freshly initialised
    INIT_FRESH = D_HEADS

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        width: int = 128,
        kernel_size: int = 4,
        batch_norm: bool = True,
        dropout: float = 0.0,
        spatial_dropout: bool = False,
        init_seed: int = 1,
        profile: bool = False,
        profile_group: int = 0,
        mbstd_group: int = 0,
        moments: bool = False,
        conditions: int = 0,
    ):
        super().__init__()
        channels = _check_channels(channels)
        self.image_size = int(image_size)
        self.channels = channels
        self.mbstd_group = int(mbstd_group)
        if self.mbstd_group < 0:
            raise ModelError(f"model.d_mbstd_group={mbstd_group} must be >= 0 (0: off)")
        self.profile_group = int(profile_group)
        if self.profile_group < 0 or (self.profile_group and not profile):
            raise ModelError(
                f"model.d_profile_group={profile_group}: a group size (2 or more "
                "to be of use) needs model.d_profile=true; 0 turns it off"
            )
        self.net = _trunk_and_logit(
            self.image_size,
            channels,
            width,
            kernel_size,
            batch_norm,
            dropout,
            spatial_dropout,
            self.mbstd_group,
            int(init_seed),
        )
        features = self.net[-1].in_channels
        hidden = 4 * int(width)
        self.profile = None
        if profile:
            radial = RadialProfile(self.image_size)
            self.profile = ImageHead(
                radial,
                GroupSpread(self.profile_group),
                features=channels * radial.n_annuli * (2 if self.profile_group else 1),
                hidden=hidden,
                seed=head_seed(init_seed, "profile"),
            )
        self.moments = None
        if moments:
            self.moments = ImageHead(
                ShapeMoments(self.image_size),
                nn.Flatten(1),
                features=channels * ShapeMoments.N_FEATURES,
                hidden=hidden,
                seed=head_seed(init_seed, "moments"),
            )
        self.n_conditions = int(conditions)
        self.embed = None
        if self.n_conditions:
            self.embed = ProjectionHead(
                self.n_conditions, features, seed=head_seed(init_seed, "embed")
            )

    def heads(self) -> dict[str, nn.Module]:
        """The heads this discriminator has, by name (in the order their logits are added)."""
        return {name: getattr(self, name) for name in D_HEADS if getattr(self, name) is not None}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's 4×4 features of ``x`` (the logit convolution's input)."""
        return self.net[:-1](x)

    def forward(self, x: torch.Tensor, conditions: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None and conditions is None:
            raise ModelError("this DCGAN discriminator is conditioned: give the conditions")
        h = self.features(x)
        logits = self.net[-1](h).reshape(x.shape[0])
        for head in self.heads().values():
            logits = logits + head.logit(x, h, conditions)
        return logits

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's output: probability that each image is real, shape ``(N,)``."""
        return torch.sigmoid(self(x))

    def remove_dropout(self) -> bool:
        """Switch off the dropout layer(s) for good; return True if any was on."""
        changed = False
        for m in self.modules():
            if isinstance(m, ScheduledDropout) and m.is_on:
                m.switch_off()
                changed = True
        return changed


def _trunk_and_logit(
    image_size: int,
    channels: int,
    width: int,
    kernel_size: int,
    batch_norm: bool,
    dropout: float,
    spatial_dropout: bool,
    mbstd_group: int,
    init_seed: int,
) -> nn.Sequential:
    """The paper's discriminator as one ``Sequential`` (its last layer the logit
    convolution), initialised N(0, 0.02) from ``init_seed``; torch's global generator is
    left as it was."""
    rng_before = torch.get_rng_state()
    widths = list(reversed(_stage_widths(image_size, width)))
    pad = same_size_padding(kernel_size)
    layers: list[nn.Module] = [
        nn.Conv2d(channels, widths[0], kernel_size, 2, pad, bias=True),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        layers.append(nn.Conv2d(c_in, c_out, kernel_size, 2, pad, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    if mbstd_group:
        layers.append(MinibatchStd(mbstd_group))
    if dropout > 0:
        layers.append(ScheduledDropout(dropout, spatial_dropout))
    layers.append(nn.Conv2d(widths[-1] + (1 if mbstd_group else 0), 1, 4, 1, 0, bias=True))
    net = nn.Sequential(*layers)
    torch.set_rng_state(rng_before)  # torch's default init drew from the global generator
    return seeded_init(net, init_seed)


def head_seed(init_seed: int, name: str) -> int:
    """The seed that initialises the discriminator head ``name``: derived from D's
    ``init_seed`` and the name alone (:func:`galforge.seeding.derive_seed`)."""
    return derive_seed(int(init_seed), "dcgan-d-head", str(name))


class ImageHead(nn.Sequential):
    """A head of the DCGAN discriminator that reads the image: ``front`` (image ->
    ``N×features``), then a two-layer MLP to one logit per image (shape ``(N,)``).

    Built and initialised N(0, 0.02) inside the stream of ``seed``, which torch's global
    generator is restored from. A ``Sequential``, so its weights keep the names checkpoints
    have always had (``profile.2.weight``, ``profile.4.bias``).
    """

    def __init__(self, *front: nn.Module, features: int, hidden: int, seed: int):
        with seeded_global(seed):
            super().__init__(
                *front,
                nn.Linear(features, hidden),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(hidden, 1),
            )
            init_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).reshape(x.shape[0])

    def logit(self, x: torch.Tensor, features: torch.Tensor, conditions=None) -> torch.Tensor:
        """The head's logit in the discriminator: it reads the image ``x`` only."""
        return self(x)


class ProjectionHead(nn.Linear):
    """The projection head (Miyato & Koyama 2018): a linear embedding (no bias) of the
    standardised conditions, whose inner product with the trunk's spatially summed features
    is the head's logit (:meth:`score`). Initialised like :class:`ImageHead`."""

    def __init__(self, conditions: int, features: int, seed: int):
        with seeded_global(seed):
            super().__init__(int(conditions), int(features), bias=False)
            init_normal_(self)

    def score(self, features: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """The head's logit for the trunk's ``N×F×h×w`` features and ``N×K`` conditions."""
        return (self(conditions.to(features.dtype)) * features.sum(dim=(2, 3))).sum(dim=1)

    def logit(self, x: torch.Tensor, features: torch.Tensor, conditions=None) -> torch.Tensor:
        """The head's logit in the discriminator: :meth:`score` of the trunk's features."""
        return self.score(features, conditions)


def build_dcgan_pair(
    image_size: int,
    channels: int,
    *,
    latent_dim: int = 100,
    width: int = 128,
    kernel_size: int = 4,
    batch_norm: bool = True,
    dropout: float = 0.0,
    dropout_where: str = "D",
    spatial_dropout: bool = False,
    seed: int = 0,
    upsample: str = "transposed",
    sky_noise: dict | None = None,
    d_profile: bool = False,
    d_profile_group: int = 0,
    d_mbstd_group: int = 0,
    d_moments: bool = False,
    scene_blur: float = 0.0,
    psf: dict | None = None,
    conditions: dict | None = None,
    scene_floor: bool = False,
) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """Build a matching generator and discriminator; ``dropout_where`` in none|G|D|both;
    ``d_profile``: the discriminator's radial-profile path (``d_profile_group``: with the
    spread of the profiles over groups of that many images); ``d_mbstd_group``: a minibatch
    standard deviation map before the discriminator's last convolution; ``d_moments``: the
    discriminator's size-and-ellipticity path; ``scene_blur``: σ (pixels) of the generator's
    band limit of its noiseless scene (with ``sky_noise``); ``psf``: the generator's forward
    model; ``conditions``: the generator's conditions spec (D becomes a projection
    discriminator); ``scene_floor``: the generator's scene range starts at the empty sky."""
    if dropout_where not in DROPOUT_PLACES:
        raise ModelError(
            f"model.dropout_where={dropout_where!r} is not one of {', '.join(DROPOUT_PLACES)}"
        )
    g_drop = dropout if dropout_where in ("G", "both") else 0.0
    d_drop = dropout if dropout_where in ("D", "both") else 0.0
    g = DCGANGenerator(
        image_size,
        channels,
        latent_dim,
        width,
        kernel_size,
        batch_norm,
        g_drop,
        spatial_dropout,
        init_seed=2 * int(seed),
        upsample=upsample,
        sky_noise=sky_noise,
        scene_blur=scene_blur,
        psf=psf,
        conditions=conditions,
        scene_floor=scene_floor,
    )
    d = DCGANDiscriminator(
        image_size,
        channels,
        width,
        kernel_size,
        batch_norm,
        d_drop,
        spatial_dropout,
        init_seed=2 * int(seed) + 1,
        profile=d_profile,
        profile_group=d_profile_group,
        mbstd_group=d_mbstd_group,
        moments=d_moments,
        conditions=len(g.condition_names),
    )
    return g, d


def dcgan_generator_spec(
    g: DCGANGenerator,
    *,
    width: int,
    kernel_size: int,
    batch_norm: bool,
    dropout: float,
    spatial_dropout: bool,
) -> dict:
    """The JSON spec from which :func:`build_dcgan_generator` rebuilds ``g``.

    ``upsample`` is written only when it is not the paper's, so bundles of paper models keep
    the spec that galforge 0.1 wrote.
    """
    spec = {
        "image_size": g.image_size,
        "channels": g.channels,
        "latent_dim": g.latent_dim,
        "width": int(width),
        "kernel_size": int(kernel_size),
        "batch_norm": bool(batch_norm),
        "dropout": float(dropout),
        "spatial_dropout": bool(spatial_dropout),
    }
    if g.upsample != "transposed":
        spec["upsample"] = g.upsample
    if g.sky is not None:
        spec["sky_noise"] = dict(g.sky.description)
        if g.sky.blur > 0:
            spec["scene_blur"] = g.sky.blur
        if g.sky.floor:
            spec["scene_floor"] = True
    if g.psf is not None:
        spec["psf"] = g.psf.spec()
    if g.condition_names:
        spec["conditions"] = g.conditions_spec()
    return spec


@register_generator("dcgan")
def build_dcgan_generator(spec: dict) -> DCGANGenerator:
    """Rebuild a DCGAN generator from its bundle spec (weights are loaded separately)."""
    known = {
        "image_size",
        "channels",
        "latent_dim",
        "width",
        "kernel_size",
        "batch_norm",
        "dropout",
        "spatial_dropout",
        "upsample",
        "sky_noise",
        "scene_blur",
        "psf",
        "conditions",
        "scene_floor",
    }
    unknown = set(spec) - known
    if unknown:
        raise ModelError(
            f"DCGAN spec has unknown keys {sorted(unknown)}; known keys: {sorted(known)}"
        )
    return DCGANGenerator(**spec)


def n_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
