"""Two-stage GAN of sparse galaxy fields: a positions GAN and a galaxy BEGAN, trained together.

``galforge train DATA --model twostage [--set model.conditional=true]`` reads DATA whole
(single-band fields with a background of exactly 0, e.g. ``builtin:sparse``), finds the
galaxies (:mod:`galforge.data.sparse`: 8-connected clusters of non-zero pixels, size = pixel
count) and trains, at every step:

* phase ``positions`` — the stage-1 DCGAN on ``grid×grid`` occupancy grids (one per field;
  flips and quarter turns): one discriminator update (binary cross-entropy) then one
  generator update (non-saturating), Adam lr ``pos_lr``, β = (0.5, 0.999). Conditional: the
  grids carry each occupied cell's size class (small/medium/large from the data's size
  terciles, or ``model.size_thresholds``). The generator draws a probability map; with
  ``pos_train=bernoulli`` (default) the discriminator sees binary grids drawn from it
  (each cell occupied with probability ``p``; the gradient passes straight through the
  draw, ``occ = b + p − sg(p)``), so real and generated grids are both exactly 0/1 and the
  discriminator cannot win on "binary or not" alone (``pos_train=map`` shows it the
  continuous map, the first version, which collapses: D loss → 0.01, empty fields). With
  ``pos_prior=true`` (default) the occupancy logits start at the data's log-odds of an
  occupied cell. ``pos_sampling`` (``count``, ``bernoulli`` or ``threshold``; see
  :mod:`galforge.models.twostage`) is how the exported model turns maps into grids.
* phase ``galaxies`` — the stage-2 BEGAN on ``patch×patch`` patches cut around every galaxy
  (``patch_batch`` per step, drawn by epochs of their own; flips and quarter turns):
  ``L_D = L(x) − k_t L(G(h))``, ``L_G = L(G(h))``, ``k_{t+1} = clip(k_t + λ_k (γ L(x) −
  L(G(h))), 0, 1)`` with ``L`` the autoencoder's mean L1 reconstruction error; Adam lr
  ``gal_lr``. The log has ``k_t`` and the convergence measure ``M = L(x) + |γ L(x) −
  L(G(h))|``. ``k_t`` is part of the checkpointed recipe state, so resume is exact.
  Conditional: the patches' size classes condition generator and discriminator.

The patches are in the run's model space (the normaliser fitted on the fields; with the
default 99.99th-percentile clip the brightest galaxy cores are clipped: ``--set
data.clip_percentile=100`` keeps them). The exported bundle (family ``twostage``, parts
``positions`` and ``galaxies``) also stores the field size, the data's sub-cell offsets and
the faintest non-zero pixel value; its sampler composes full-size fields in physical units
(:mod:`galforge.models.twostage`).

Named configs: ``eigen`` (the default: the positions GAN of ``cpu`` and the eigen galaxy
stage, ``model.galaxy_stage=eigen`` — a kernel density over the 48 leading principal
components of the data's 64-pixel patches in an asinh stretch, fitted once when the
batches are made (:func:`fit_eigen_galaxies`), no galaxy phase; each drawn patch cut at the
data's faintest value and kept to its central cluster, ``model.single_cluster``), ``paper``
(positions: latent 100, width 64; BEGAN: h = 64, n = 64, lr 1e-4, γ = 0.5, λ_k = 0.001, the
values of Berthelot et al. 2017), ``small`` (widths 8, latents 16: sized for tests) and
``cpu`` (``small`` with BEGAN lr 5e-4 and λ_k = 0.01: what learns galaxy profiles in a CPU
run of ~1000 steps; figures in docs/twostage.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from galforge.errors import ConfigError, DataError, TrainingError
from galforge.models.twostage import (
    CLASS_SAMPLING,
    EIGEN_DENSITIES,
    GALAXY_STAGES,
    N_CLASSES,
    SAMPLING,
    BEGANDiscriminator,
    GalaxiesPart,
    PositionsDiscriminator,
    PositionsPart,
    TwoStageSampler,
    began_k_update,
    convergence_measure,
    grid_input,
    grid_view,
    keep_central_cluster,
    reconstruction_loss,
)
from galforge.seeding import derive_seed
from galforge.training.losses import discriminator_loss, generator_loss_nonsaturating
from galforge.training.pipeline import BatchSource, Fields, StampBatches
from galforge.training.recipe import Phase, Recipe, StepContext
from galforge.training.recipes import register_recipe

__all__ = [
    "MAX_EIGEN_PATCHES",
    "MAX_OFFSETS",
    "TwoStageBatches",
    "TwoStageRecipe",
    "TwoStageSettings",
    "dihedral",
    "fit_eigen_galaxies",
]

#: at most this many sub-cell offsets are stored with the model (an even subsample)
MAX_OFFSETS = 4096
#: the eigen galaxy stage is fitted on at most this many of the data's galaxies (an even
#: subsample; with their 8 flips and turns, 16384 patches)
MAX_EIGEN_PATCHES = 2048


@dataclass
class TwoStageSettings:
    """Hyper-parameters of the two-stage model (defaults: the paper values, see module doc)."""

    conditional: bool = False  # size class per cell (stage 1) and patch (stage 2)
    galaxy_stage: str = "began"  # began (the study) | eigen (mixture over eigen-galaxies)
    eigen_components: int = 48  # eigen: principal components kept
    eigen_mixture: int = 8  # eigen: Gaussian mixture components / kde centres (per class)
    eigen_density: str = "gmm"  # eigen: gmm (fitted mixture) | kde (kernel density)
    eigen_bandwidth: float = 0.2  # eigen kde: kernel = bandwidth × the coefficients' spread
    single_cluster: bool = False  # keep only each patch's central cluster
    pos_train: str = "bernoulli"  # what D sees of G: bernoulli (0/1 draws) | map
    pos_prior: bool = True  # occupancy logits start at the data's log-odds
    pos_sampling: str = "count"  # exported grids: count | bernoulli | threshold
    class_sampling: str = "draw"  # conditional: a cell's class drawn from its probabilities
    grid: int = 32  # occupancy grid cells a side
    patch: int = 32  # galaxy patch pixels a side
    size_thresholds: list | None = None  # small/medium and medium/large limits (pixels)
    pos_latent_dim: int = 100
    pos_width: int = 64  # W: stage-1 widths 4W-2W-W
    pos_lr: float = 2e-4
    pos_beta1: float = 0.5
    gal_latent_dim: int = 64  # h: BEGAN's latent and embedding size
    gal_width: int = 64  # n: BEGAN's filters
    gal_lr: float = 1e-4
    gal_beta1: float = 0.5
    gamma: float = 0.5  # BEGAN's diversity ratio γ
    lambda_k: float = 0.001  # BEGAN's proportional gain λ_k
    k0: float = 0.0  # k_0
    patch_batch: int = 64  # galaxy patches per step
    ema: float = 0.0

    def __post_init__(self):
        if not 0.0 < float(self.gamma) <= 1.0:
            raise ConfigError(f"model.gamma={self.gamma} must be in (0, 1]")
        if float(self.lambda_k) < 0:
            raise ConfigError(f"model.lambda_k={self.lambda_k} must be >= 0")
        if not 0.0 <= float(self.k0) <= 1.0:
            raise ConfigError(f"model.k0={self.k0} must be in [0, 1]")
        if int(self.patch_batch) < 1:
            raise ConfigError(f"model.patch_batch={self.patch_batch} must be >= 1")
        if not float(self.pos_lr) > 0 or not float(self.gal_lr) > 0:
            raise ConfigError("model.pos_lr and model.gal_lr must be > 0")
        if self.class_sampling not in CLASS_SAMPLING:
            raise ConfigError(
                f"model.class_sampling={self.class_sampling!r}: use one of "
                f"{', '.join(CLASS_SAMPLING)}"
            )
        if self.galaxy_stage not in GALAXY_STAGES:
            raise ConfigError(
                f"model.galaxy_stage={self.galaxy_stage!r}: use one of {', '.join(GALAXY_STAGES)}"
            )
        if int(self.eigen_components) < 1 or int(self.eigen_mixture) < 1:
            raise ConfigError(
                f"model.eigen_components={self.eigen_components} and "
                f"model.eigen_mixture={self.eigen_mixture} must be >= 1"
            )
        if self.eigen_density not in EIGEN_DENSITIES:
            raise ConfigError(
                f"model.eigen_density={self.eigen_density!r}: use one of "
                f"{', '.join(EIGEN_DENSITIES)}"
            )
        if not float(self.eigen_bandwidth) >= 0:
            raise ConfigError(f"model.eigen_bandwidth={self.eigen_bandwidth} must be >= 0")
        if not isinstance(self.single_cluster, bool):
            raise ConfigError(f"model.single_cluster={self.single_cluster!r} must be true or false")
        if self.pos_train not in ("bernoulli", "map"):
            raise ConfigError(f"model.pos_train={self.pos_train!r}: use bernoulli or map")
        if self.pos_sampling not in SAMPLING:
            raise ConfigError(
                f"model.pos_sampling={self.pos_sampling!r}: use one of {', '.join(SAMPLING)}"
            )
        if not isinstance(self.pos_prior, bool):
            raise ConfigError(f"model.pos_prior={self.pos_prior!r} must be true or false")
        if not isinstance(self.conditional, bool):
            raise ConfigError(f"model.conditional={self.conditional!r} must be true or false")
        if self.size_thresholds is not None:
            t = self.size_thresholds
            if isinstance(t, str):
                t = [v for v in t.replace(",", " ").split() if v]
            try:
                t1, t2 = (float(v) for v in t)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"model.size_thresholds={self.size_thresholds!r}: give two "
                    "pixel counts [SMALL_MAX, MEDIUM_MAX]"
                ) from None
            if not t1 < t2:
                raise ConfigError(
                    f"model.size_thresholds={self.size_thresholds!r}: the first "
                    "must be below the second"
                )
            self.size_thresholds = [t1, t2]


TWOSTAGE_CONFIGS = {
    "paper": {
        "pos_width": 64,
        "gal_width": 64,
        "gal_latent_dim": 64,
        "pos_latent_dim": 100,
        "gal_lr": 1e-4,
        "gamma": 0.5,
        "lambda_k": 0.001,
        "patch_batch": 64,
    },
    "small": {
        "pos_width": 8,
        "gal_width": 8,
        "gal_latent_dim": 16,
        "pos_latent_dim": 16,
        "patch_batch": 16,
    },
    # "small" networks with a BEGAN that learns within ~1000 CPU steps (docs/twostage.md):
    # at lr 1e-4 and λ_k = 0.001 k_t hardly moves from 0 in such a run and the patches are
    # flat backgrounds with bright borders; 5× the learning rate and 10× λ_k give centred
    # galaxy profiles
    "cpu": {
        "pos_width": 8,
        "gal_width": 8,
        "gal_latent_dim": 16,
        "pos_latent_dim": 16,
        "patch_batch": 16,
        "gal_lr": 5e-4,
        "lambda_k": 0.01,
    },
    # the default: the positions GAN of "cpu" and the eigen galaxy stage on 64-pixel patches
    # (the data's galaxies reach 40 pixels across; 32-pixel patches cut a third of them),
    # each patch kept to its central cluster (docs/twostage.md has the figures)
    "eigen": {
        "pos_width": 8,
        "pos_latent_dim": 16,
        "galaxy_stage": "eigen",
        "patch": 64,
        "eigen_components": 48,
        "eigen_density": "kde",
        "eigen_mixture": 2048,
        "eigen_bandwidth": 0.2,
        "single_cluster": True,
    },
}


def dihedral(patches: np.ndarray) -> np.ndarray:
    """The 8 flips and quarter turns of ``M×P×P`` patches about their centre pixel (index
    ``P // 2``), as ``8M×P×P`` (the untouched patches first). A flip of an even side moves
    index ``P // 2`` to ``P // 2 − 1``; a roll by one puts it back (the wrapped row is the
    patch's far edge)."""
    p = np.asarray(patches)
    even = p.shape[-1] % 2 == 0
    out = []
    for t in (False, True):
        q = np.swapaxes(p, -1, -2) if t else p
        for fy in (False, True):
            for fx in (False, True):
                r = q
                if fy:
                    r = r[:, ::-1, :]
                    r = np.roll(r, 1, axis=1) if even else r
                if fx:
                    r = r[:, :, ::-1]
                    r = np.roll(r, 1, axis=2) if even else r
                out.append(r)
    return np.ascontiguousarray(np.concatenate(out))


def fit_eigen_galaxies(
    patches,
    classes,
    *,
    components: int,
    mixture: int,
    conditional: bool,
    softening: float,
    seed: int,
    density: str = "gmm",
    bandwidth: float = 0.2,
) -> dict[str, np.ndarray]:
    """Fit the eigen galaxy stage (:class:`galforge.models.twostage.EigenGalaxies`) on the
    data's patches (``M×P×P``, physical units, background 0) and their size classes.

    ``a = asinh(x / softening)`` of the patches and their 8 flips and quarter turns; the mean
    and the ``components`` leading principal directions (a randomised SVD seeded with
    ``seed``: 4 power iterations); then a full-covariance Gaussian mixture of ``mixture``
    components (scikit-learn, ``random_state=seed``, covariance floor 1e-4) on the
    projections — per size class when ``conditional``, the class's share of the galaxies
    multiplying its components' weights. ``density="kde"``: a kernel density estimate
    instead, ``mixture`` centres (per class) drawn without replacement from the projections
    (seeded), each with weight ``1/mixture`` (times the class's share) and the Gaussian kernel
    ``bandwidth`` × the Cholesky factor of the (class's) projections' covariance."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(patches, dtype=np.float64)
    m, size = x.shape[0], x.shape[-1]
    cls = np.asarray(classes, dtype=np.int64).reshape(-1)
    k, mix = int(components), int(mixture)
    groups = range(N_CLASSES) if conditional else (None,)
    for g in groups:
        have = 8 * (m if g is None else int((cls == g).sum()))
        if have < max(k + 1, 2 * mix if density == "gmm" else 2):
            what = "galaxies" if g is None else f"galaxies of size class {g}"
            raise DataError(
                f"the eigen galaxy stage needs more {what}: {have // 8} found for "
                f"model.eigen_components={k} and model.eigen_mixture={mix} (lower them, or "
                "train on more fields)"
            )
    a = np.arcsinh(dihedral(x.astype(np.float32)) / np.float32(softening)).reshape(8 * m, -1)
    mean = a.mean(axis=0)
    a -= mean
    rng = np.random.default_rng([int(seed), 27])
    y = a @ rng.standard_normal((a.shape[1], k + 10))
    for _ in range(4):
        q, _ = np.linalg.qr(y)
        y = a @ (a.T @ q)
    q, _ = np.linalg.qr(y)
    _, _, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    basis = vt[:k]
    sign = np.sign(basis[np.arange(k), np.abs(basis).argmax(axis=1)])
    basis *= sign[:, None]
    coef = a @ basis.T
    cls8 = np.tile(cls, 8)
    weights, centres, chol, mix_class = [], [], [], []
    for g in groups:
        sel = np.ones(len(coef), bool) if g is None else cls8 == g
        share = 1.0 if g is None else float(sel.mean())
        if density == "kde":
            own = coef[sel]
            used = min(mix, len(own))  # fewer patches than centres: the rest weigh 0
            w = np.zeros(mix)
            w[:used] = share / used
            c = np.zeros((mix, k))
            c[:used] = own[rng.permutation(len(own))[:used]]
            weights.append(w)
            centres.append(c)
            cov = np.cov(own.T).reshape(k, k) + 1e-6 * np.eye(k)
            chol.append(float(bandwidth) * np.linalg.cholesky(cov)[None])
        else:
            gm = GaussianMixture(
                mix, covariance_type="full", reg_covar=1e-4, random_state=int(seed), max_iter=200
            ).fit(coef[sel])
            weights.append(gm.weights_ * share)
            centres.append(gm.means_)
            chol.append(np.linalg.cholesky(gm.covariances_))
        mix_class.append(np.full(mix, 0 if g is None else g, dtype=np.int64))
    return {
        "mean": mean.astype(np.float32),
        "basis": basis.astype(np.float32),
        "softening": np.asarray([softening], dtype=np.float32),
        "weights": np.concatenate(weights).astype(np.float32),
        "centres": np.concatenate(centres).astype(np.float32),
        "chol": np.concatenate(chol).astype(np.float32),
        "mix_class": np.concatenate(mix_class),
        "size": np.asarray(size),
    }


class TwoStageBatches(BatchSource):
    """``{"grids", "patches", "classes"}`` per step: grids by epochs over the fields, patches
    by epochs of their own (seed ``(seed, "patches")``); both a pure function of the step."""

    def __init__(
        self,
        grids: Tensor,
        patches: Tensor,
        classes: Tensor,
        batch_size: int,
        patch_batch: int,
        seed: int,
    ):
        self.grids = StampBatches(grids, batch_size, seed)
        self.patches = StampBatches(
            patches, patch_batch, derive_seed(seed, "patches"), conditions=classes
        )
        self.steps_per_epoch = self.grids.steps_per_epoch

    def batch(self, step: int) -> dict[str, Tensor]:
        p = self.patches.batch(step)
        return {"grids": self.grids.batch(step), "patches": p["images"], "classes": p["conditions"]}


@register_recipe("twostage")
class TwoStageRecipe(Recipe):
    """The two-stage GAN of sparse fields (positions DCGAN + galaxy BEGAN)."""

    family = "twostage"
    Settings = TwoStageSettings
    CONFIGS = TWOSTAGE_CONFIGS
    DEFAULT_CONFIG = "eigen"
    PHASES = (Phase("positions"), Phase("galaxies"))

    @classmethod
    def data_need(cls, settings) -> Fields:
        return Fields()

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
        if self.channels != 1:
            raise ConfigError(
                f"--model twostage learns single-band sparse fields; the data "
                f"have {self.channels} bands (select one with "
                "--set data.options.bands=[NAME])"
            )
        cond = bool(s.conditional)
        side = int(image_size) if image_size else max(int(s.grid), int(s.patch))
        positions = PositionsPart(
            int(s.pos_latent_dim),
            int(s.pos_width),
            int(s.grid),
            cond,
            side,
            side,
            0,
            None,
            init_seed=4 * self.seed,
            sampling=str(s.pos_sampling),
            class_sampling=str(s.class_sampling),
        )
        self.eigen = s.galaxy_stage == "eigen"
        galaxies = GalaxiesPart(
            int(s.gal_latent_dim),
            int(s.gal_width),
            int(s.patch),
            1,
            cond,
            normalizer,
            init_seed=4 * self.seed + 1,
            stage=str(s.galaxy_stage),
            components=int(s.eigen_components),
            mixture=int(s.eigen_mixture),
            single_cluster=bool(s.single_cluster),
            density=str(s.eigen_density),
        )
        self.G = TwoStageSampler(positions, galaxies).to(self.device)
        self.G.train()
        self.D_pos = PositionsDiscriminator(
            1 + (N_CLASSES if cond else 0),
            int(s.pos_width),
            int(s.grid),
            init_seed=4 * self.seed + 2,
        ).to(self.device)
        pb, gb = (float(s.pos_beta1), 0.999), (float(s.gal_beta1), 0.999)
        self.opt_g_pos = torch.optim.Adam(positions.parameters(), lr=float(s.pos_lr), betas=pb)
        self.opt_d_pos = torch.optim.Adam(self.D_pos.parameters(), lr=float(s.pos_lr), betas=pb)
        if not self.eigen:  # the eigen stage is fitted, not trained: no BEGAN
            self.D_gal = BEGANDiscriminator(
                int(s.gal_latent_dim),
                int(s.gal_width),
                int(s.patch),
                1,
                cond,
                init_seed=4 * self.seed + 3,
            ).to(self.device)
            self.opt_g_gal = torch.optim.Adam(galaxies.parameters(), lr=float(s.gal_lr), betas=gb)
            self.opt_d_gal = torch.optim.Adam(self.D_gal.parameters(), lr=float(s.gal_lr), betas=gb)
        self.k = float(s.k0)
        self.data_notes: list[str] = []

    # ------------------------------------------------------------------ data
    def make_batches(self, data, batch_size: int, seed: int) -> TwoStageBatches:
        """Detect the galaxies of the (model-space) fields and make grids, patches, offsets."""
        from galforge.data.sparse import analyse

        s = self.settings
        x = torch.as_tensor(data, dtype=torch.float32)
        if x.dim() != 4 or x.shape[1] != 1:
            raise TrainingError(
                f"--model twostage trains on single-band fields, got data of shape {tuple(x.shape)}"
            )
        units = self.G.galaxies.units
        with torch.no_grad():
            physical = units.to_physical(x.double().to(units.lo.device)).cpu()
            scale = float(max(units.lo.abs().max(), units.hi.abs().max(), 1e-30))
            physical[physical.abs() <= 1e-6 * scale] = 0.0  # the exact-0 background
        phys = physical.float().numpy()
        h, w = phys.shape[-2:]
        if h < int(s.grid) or w < int(s.grid):
            raise DataError(
                f"fields of {h}×{w} pixels are smaller than the {s.grid}×{s.grid} grid (model.grid)"
            )
        ana = analyse(
            phys,
            grid=int(s.grid),
            patch=int(s.patch),
            thresholds=s.size_thresholds,
            source="the training data (--model twostage)",
        )
        self.data_notes = list(ana.notes)
        occ = torch.from_numpy(ana.grids)
        classes = torch.from_numpy(ana.class_grids.astype(np.int64) - 1).clamp(min=0)
        grids = grid_input(occ, classes if s.conditional else None)
        patches = units.to_model(torch.from_numpy(ana.patches)[:, None].to(units.lo.device)).cpu()
        patch_classes = torch.from_numpy(ana.catalogue["size_class"].astype(np.float32))[:, None]
        offsets = ana.offsets.astype(np.float32)
        if len(offsets) > MAX_OFFSETS:
            offsets = offsets[np.linspace(0, len(offsets) - 1, MAX_OFFSETS).round().astype(int)]
        nonzero = np.abs(phys[phys != 0])
        counts = ana.grids.reshape(len(ana.grids), -1).sum(axis=1).astype(np.float32)
        if len(counts) > MAX_OFFSETS:
            counts = counts[np.linspace(0, len(counts) - 1, MAX_OFFSETS).round().astype(int)]
        self.G.positions.set_layout(
            h, w, torch.from_numpy(offsets), ana.thresholds, torch.from_numpy(counts)
        )
        if s.pos_prior:
            self.G.positions.net.set_occupancy_prior(float(ana.grids.mean()))
        floor = float(nonzero.min())
        self.G.galaxies.floor.fill_(floor)
        if self.eigen:
            pick = np.arange(len(ana.patches))
            if len(pick) > MAX_EIGEN_PATCHES:
                pick = np.linspace(0, len(pick) - 1, MAX_EIGEN_PATCHES).round().astype(int)
            own = keep_central_cluster(torch.from_numpy(ana.patches[pick][:, None])).numpy()
            fit = fit_eigen_galaxies(
                own[:, 0],
                ana.catalogue["size_class"][pick],
                components=int(s.eigen_components),
                mixture=int(s.eigen_mixture),
                conditional=bool(s.conditional),
                softening=floor,
                seed=derive_seed(self.seed, "eigen") % 2**32,
                density=str(s.eigen_density),
                bandwidth=float(s.eigen_bandwidth),
            )
            self.G.galaxies.net.set_fit(fit)
        self.G.to(self.device)
        return TwoStageBatches(
            grids, patches.float(), patch_classes, batch_size, int(s.patch_batch), seed
        )

    # ------------------------------------------------------------------ contract
    def modules(self) -> dict[str, nn.Module]:
        if self.eigen:
            return {"G": self.G, "D_pos": self.D_pos}
        return {"G": self.G, "D_pos": self.D_pos, "D_gal": self.D_gal}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out = {"G_pos": self.opt_g_pos, "D_pos": self.opt_d_pos}
        if not self.eigen:
            out.update(G_gal=self.opt_g_gal, D_gal=self.opt_d_gal)
        return out

    def phases(self) -> tuple[Phase, ...]:
        """Both phases; the positions phase alone with the eigen galaxy stage (fitted once
        on the data's patches when the batches are made)."""
        return (Phase("positions"),) if self.eigen else tuple(self.PHASES)

    def generator(self) -> nn.Module:
        return self.G

    def generator_spec(self) -> dict:
        return {"positions": self.G.positions.spec(), "galaxies": self.G.galaxies.spec()}

    def export_parts(self, generator: nn.Module) -> dict[str, tuple[str, dict, nn.Module]]:
        return {
            "positions": ("twostage_positions", generator.positions.spec(), generator.positions),
            "galaxies": ("twostage_galaxies", generator.galaxies.spec(), generator.galaxies),
        }

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    # ------------------------------------------------------------------ the step
    def positions(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        """Stage 1: one D update (BCE) and one G update (non-saturating) on the grids."""
        real = batch["grids"].to(self.device)
        gen = self.G.positions.net
        z = torch.randn(
            (real.shape[0], gen.latent_dim), generator=ctx.rng, device=ctx.rng.device
        ).to(self.device)
        u = torch.rand(
            (real.shape[0], gen.grid, gen.grid), generator=ctx.rng, device=ctx.rng.device
        ).to(self.device)
        with self.autocast():
            prob, class_probs = gen.maps(z)
            prob = prob.float()
            if self.settings.pos_train == "bernoulli":
                occ = (u < prob).to(prob.dtype) + prob - prob.detach()  # straight through
            else:
                occ = prob
            fake = grid_view(occ, class_probs)
            real_logits = self.D_pos(real)
            fake_logits = self.D_pos(fake.detach())
            loss_real, loss_fake = discriminator_loss(real_logits, fake_logits)
            loss_d = loss_real + loss_fake
        self.optimize("D_pos", loss_d)
        with self.autocast():
            loss_g = generator_loss_nonsaturating(self.D_pos(fake))
        self.optimize("G_pos", loss_g)
        with torch.no_grad():
            stats = torch.stack(
                [
                    loss_d.detach().float(),
                    loss_g.detach().float(),
                    prob.detach().sum(dim=(1, 2)).mean().float(),
                    ((real[:, 0] + 1.0) * 0.5).sum(dim=(1, 2)).mean(),
                ]
            ).tolist()
        # cells_fake: the expected number of occupied cells of a generated grid (sum of p)
        return {
            "loss_d_pos": stats[0],
            "loss_g_pos": stats[1],
            "cells_fake": stats[2],
            "cells_real": stats[3],
        }

    def galaxies(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        """Stage 2: one BEGAN update of D and G, then the k_t update."""
        s = self.settings
        real = batch["patches"].to(self.device)
        cls = batch["classes"][:, 0].long().to(self.device) if s.conditional else None
        gen = self.G.galaxies.net
        h = (
            torch.rand(
                (real.shape[0], gen.latent_dim), generator=ctx.rng, device=ctx.rng.device
            ).to(self.device)
            * 2.0
            - 1.0
        )
        with self.autocast():
            fake = gen(h, cls)
            loss_real = reconstruction_loss(self.D_gal, real, cls)
            loss_fake_d = reconstruction_loss(self.D_gal, fake.detach(), cls)
            loss_d = loss_real - self.k * loss_fake_d
        self.optimize("D_gal", loss_d)
        with self.autocast():
            loss_g = reconstruction_loss(self.D_gal, fake, cls)
        self.optimize("G_gal", loss_g)
        lr_, lg = (
            float(v)
            for v in torch.stack([loss_real.detach().float(), loss_g.detach().float()]).tolist()
        )
        self.k = began_k_update(self.k, lr_, lg, float(s.gamma), float(s.lambda_k))
        return {
            "loss_d_gal": float(loss_d.detach()),
            "loss_g_gal": lg,
            "loss_real_gal": lr_,
            "k_t": self.k,
            "convergence_M": convergence_measure(lr_, lg, float(s.gamma)),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        if "k" not in state:
            raise TrainingError("the checkpoint has no two-stage recipe state (BEGAN's k_t)")
        self.k = float(state["k"])
