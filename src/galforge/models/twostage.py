"""The two-stage GAN of sparse galaxy fields: positions, then galaxies (de Fremond et al.).

A sparse field (one band, background exactly 0, galaxies as connected clusters of non-zero
pixels; :mod:`galforge.data.sparse`) is made in two stages:

1. **Positions.** A DCGAN-like generator draws a ``grid×grid`` occupancy map (32×32): a cell
   is occupied when a galaxy's centre lies in it. ``z`` (``latent_dim``) → transposed
   convolutions 4×4 (stride 1 to 4×4, then stride 2 up to the grid), batch norm + ReLU,
   channel widths ``4W, 2W, W``; output channel 0 is a logit, the cell's occupancy
   probability ``p = σ(logit)``. The conditional version adds three channels, the size class
   (small, medium, large) of each cell as ``softmax``. A grid reads ``[2·occ − 1,
   classes · occ]`` (:func:`grid_view`; real grids: ``occ`` ∈ {0, 1} and one-hot classes),
   so the discriminator sees real and generated grids the same way. Its discriminator is the
   mirror image (strided 4×4 convolutions, LeakyReLU 0.2, logits).
2. **Galaxies.** The default (``model.config=eigen``) draws each galaxy from a density over
   eigen-galaxies fitted on the data's patches (:class:`EigenGalaxies`), kept to its central
   cluster (:func:`keep_central_cluster`). The study's stage (``paper``): a BEGAN
   (Berthelot et al. 2017, §3–4) draws ``patch×patch`` (32×32) galaxy
   patches from ``h`` uniform in ``[−1, 1]``: the generator is the BEGAN decoder (a fully
   connected layer to ``n×8×8``, then per scale two 3×3 convolutions with ELU and a nearest
   ×2 upsampling, a last 3×3 convolution) with a ``tanh`` head (a departure: it keeps the
   output in the data normaliser's range); the discriminator is an autoencoder (encoder: 3×3
   convolutions with ELU, a strided 3×3 convolution per scale widening by ``n``, a fully
   connected layer to ``h``; decoder as the generator's, without the ``tanh``). The
   conditional version feeds the size class as a one-hot vector beside ``h`` (generator and
   decoder) and as three constant maps beside the image (encoder).

**Composition** (:class:`TwoStageSampler`): one patch per occupied cell, its centre pixel
(index ``patch // 2``) placed at the cell's centre plus a sub-cell offset drawn from the
training data's offsets (stored with the weights), rounded to a whole pixel; patches are
mapped to physical units with the data's normaliser, pixels below the data's faintest
non-zero value are set to 0 (the background stays exactly 0), and overlapping patches add.
The output is the full-size field in physical units (capability ``physical``).

**Binary grids from the probability map** (:func:`occupied_cells`, the part's
``sampling``): ``threshold`` — occupied where ``p > ½``; ``bernoulli`` — each cell
independently with probability ``p`` (the number per field then spreads like a sum of
Bernoulli draws); ``count`` — the number ``K`` of galaxies drawn from the training data's
numbers of occupied cells per field (stored with the weights, like the offsets), then ``K``
cells drawn one after another without replacement, each with probability proportional to
``p`` among the cells left (Gumbel top-``K`` on ``log p``): the GAN decides where, the data
how many.

The latent of one field is one vector: ``latent_dim`` Gaussian numbers for the positions,
then ``h`` per cell for its galaxy (mapped to ``[−1, 1]`` by ``2Φ(z) − 1``), then one per
cell choosing its offset (``⌊Φ(z)·K⌋`` of the ``K`` stored offsets), then one per cell
drawing its occupancy (``u = Φ(z)``), then one choosing the count (``count`` sampling), then — conditional models with
``class_sampling=draw`` — one per cell drawing its size class from the cell's class
probabilities (``argmax``, the first version, takes the most probable class, which gives
the most frequent class far too often).
Sample ``i`` of a seed is therefore one field, whatever the batch.

Bundle family ``twostage``: parts ``positions`` (:class:`PositionsPart`: the stage-1
generator, the field size, the offsets, the counts and the sampling rule) and ``galaxies`` (:class:`GalaxiesPart`: the
stage-2 generator, the normaliser and the faintest value).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import ModelError
from galforge.models.layers import PhysicalStretch, seeded_init
from galforge.models.registry import register_family, register_generator

__all__ = [
    "N_CLASSES",
    "BEGANDiscriminator",
    "CLASS_SAMPLING",
    "EIGEN_DENSITIES",
    "EigenGalaxies",
    "GALAXY_STAGES",
    "GalaxiesPart",
    "PatchGenerator",
    "PositionsDiscriminator",
    "PositionsGenerator",
    "PositionsPart",
    "TwoStageSampler",
    "SAMPLING",
    "began_k_update",
    "convergence_measure",
    "grid_input",
    "grid_view",
    "keep_central_cluster",
    "occupied_cells",
    "reconstruction_loss",
]

#: size classes of the conditional model (small, medium, large)
N_CLASSES = 3
#: the rules turning an occupancy probability map into a binary grid (see the module doc)
SAMPLING = ("threshold", "bernoulli", "count")
#: how a conditional model gives an occupied cell its size class: the most probable one
#: (the first version) or one drawn from the cell's class probabilities
CLASS_SAMPLING = ("argmax", "draw")
#: the galaxy stages: the study's BEGAN, or a Gaussian mixture over eigen-galaxies
GALAXY_STAGES = ("began", "eigen")
#: the eigen stage's densities: a fitted Gaussian mixture, or a kernel density estimate
EIGEN_DENSITIES = ("gmm", "kde")


def _levels(size: int, base: int, what: str) -> int:
    """Number of ×2 steps from ``base`` to ``size`` (a power-of-two multiple of ``base``)."""
    size = int(size)
    k = round(math.log2(size / base)) if size >= base else -1
    if k < 0 or base * 2**k != size:
        raise ModelError(
            f"{what}={size}: must be {base} × a power of two ({base}, {2 * base}, {4 * base}, ...)"
        )
    return k


def began_k_update(
    k: float, loss_real: float, loss_fake: float, gamma: float, lambda_k: float
) -> float:
    """BEGAN's equilibrium term: ``k ← clip(k + λ_k (γ L(x) − L(G(z))), 0, 1)``."""
    return float(
        min(
            max(
                float(k) + float(lambda_k) * (float(gamma) * float(loss_real) - float(loss_fake)),
                0.0,
            ),
            1.0,
        )
    )


def convergence_measure(loss_real: float, loss_fake: float, gamma: float) -> float:
    """BEGAN's convergence measure ``M = L(x) + |γ L(x) − L(G(z))|``."""
    return float(loss_real) + abs(float(gamma) * float(loss_real) - float(loss_fake))


def grid_view(occupancy: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
    """A grid as the positions discriminator sees it: ``N×1×G×G`` with ``2·occ − 1`` and, for a
    conditional model, three more channels ``class_probs · occ`` (``occupancy``: ``N×G×G``
    in [0, 1]; ``class_probs``: ``N×3×G×G``)."""
    occ = occupancy.float()[:, None]
    out = [occ * 2.0 - 1.0]
    if class_probs is not None:
        out.append(class_probs.float() * occ)
    return torch.cat(out, dim=1)


def grid_input(occupancy: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """A real grid as the positions discriminator sees it (:func:`grid_view` with one-hot
    classes; ``classes``: ``N×G×G`` integers 0, 1, 2, ignored where empty)."""
    onehot = None
    if classes is not None:
        onehot = F.one_hot(classes.long().clamp(0, N_CLASSES - 1), N_CLASSES).permute(0, 3, 1, 2)
    return grid_view(occupancy, onehot)


def occupied_cells(
    prob: torch.Tensor,
    u: torch.Tensor,
    sampling: str = "threshold",
    counts: torch.Tensor | None = None,
    count_u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary grids (``N×G×G`` bool) from occupancy probabilities ``prob`` (``N×G×G``) and one
    uniform number per cell ``u`` (same shape, in (0, 1)); see the module docstring.

    ``count`` sampling also needs ``counts`` (the data's numbers of occupied cells per field,
    one is picked per field as ``counts[⌊count_u · len(counts)⌋]``) and ``count_u`` (``N``).
    """
    if sampling == "threshold":
        return prob > 0.5
    if sampling == "bernoulli":
        return u < prob
    if sampling != "count":
        raise ModelError(f"occupancy sampling {sampling!r}: use one of {', '.join(SAMPLING)}")
    if counts is None or counts.numel() == 0 or count_u is None:
        raise ModelError(
            "count sampling needs the training data's counts per field (a model "
            "trained by galforge stores them; or use threshold/bernoulli)"
        )
    n, cells = prob.shape[0], prob[0].numel()
    pick = torch.clamp((count_u.reshape(-1) * counts.numel()).long(), 0, counts.numel() - 1)
    k = counts.reshape(-1)[pick].round().long().clamp(0, cells)
    uu = u.reshape(n, cells).double().clamp(1e-12, 1.0 - 1e-12)
    keys = torch.log(prob.reshape(n, cells).double().clamp_min(1e-30)) - torch.log(-torch.log(uu))
    rank = torch.empty_like(keys, dtype=torch.long)
    order = torch.argsort(keys, dim=1, descending=True, stable=True)
    rank.scatter_(1, order, torch.arange(cells, device=prob.device).expand(n, cells).contiguous())
    return (rank < k[:, None]).reshape(prob.shape)


# ----------------------------------------------------------------------------- stage 1
class PositionsGenerator(nn.Module):
    """Stage 1: ``z`` (``N×latent_dim``) → ``N×(1 [+3])×grid×grid`` occupancy probability (and
    class probabilities) as :func:`grid_view` shows them to the discriminator."""

    def __init__(
        self,
        latent_dim: int = 100,
        width: int = 64,
        grid: int = 32,
        conditional: bool = False,
        init_seed: int = 0,
    ):
        super().__init__()
        self.latent_dim, self.width, self.grid = int(latent_dim), int(width), int(grid)
        self.conditional = bool(conditional)
        if self.latent_dim < 1 or self.width < 1:
            raise ModelError(
                f"positions generator: latent_dim={latent_dim} and width={width} must be >= 1"
            )
        ups = _levels(self.grid, 4, "model.grid")
        self.out_channels = 1 + (N_CLASSES if self.conditional else 0)
        widths = [self.width * 2 ** max(ups - 1 - i, 0) for i in range(ups)]
        first = widths[0] if ups else self.width
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.latent_dim, first, 4, 1, 0, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(inplace=True),
        ]
        for i in range(ups):
            cin = widths[i]
            last = i == ups - 1
            cout = self.out_channels if last else widths[i + 1]
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if not ups:
            layers.append(nn.Conv2d(first, self.out_channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)
        seeded_init(self, init_seed)

    def spec(self) -> dict:
        return {
            "latent_dim": self.latent_dim,
            "width": self.width,
            "grid": self.grid,
            "conditional": self.conditional,
        }

    def set_occupancy_prior(self, rate: float) -> None:
        """Start the occupancy logits at the log-odds of ``rate`` (the data's fraction of
        occupied cells): the output bias, so that untrained draws already hold about as many
        galaxies as the data (the prior-probability start of sparse detection heads)."""
        r = min(max(float(rate), 1e-6), 1.0 - 1e-6)
        last = self.net[-1]
        with torch.no_grad():
            last.bias[0] = math.log(r / (1.0 - r))

    def maps(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Occupancy probabilities ``N×G×G`` and class probabilities ``N×3×G×G`` (or None)."""
        raw = self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))
        prob = torch.sigmoid(raw[:, 0])
        return prob, (torch.softmax(raw[:, 1:], dim=1) if self.conditional else None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return grid_view(*self.maps(z))


class PositionsDiscriminator(nn.Module):
    """Stage-1 discriminator: ``N×C×grid×grid`` → ``N`` logits (strided 4×4 convolutions)."""

    def __init__(self, channels: int = 1, width: int = 64, grid: int = 32, init_seed: int = 1):
        super().__init__()
        downs = _levels(grid, 4, "model.grid")
        layers: list[nn.Module] = []
        cin = int(channels)
        for i in range(downs):
            cout = int(width) * 2**i
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=i == 0))
            if i:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        seeded_init(self, init_seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# ----------------------------------------------------------------------------- stage 2
class _Decoder(nn.Module):
    """BEGAN's decoder: ``h`` (+ class one-hot) → fc → ``n×8×8`` → [conv3 ELU ×2, up ×2]… → conv3."""

    def __init__(self, latent_dim: int, width: int, patch: int, channels: int, extra: int):
        super().__init__()
        ups = _levels(patch, 8, "model.patch")
        self.width = int(width)
        self.fc = nn.Linear(int(latent_dim) + int(extra), self.width * 64)
        blocks: list[nn.Module] = []
        for i in range(ups + 1):
            blocks += [
                nn.Conv2d(self.width, self.width, 3, 1, 1),
                nn.ELU(inplace=True),
                nn.Conv2d(self.width, self.width, 3, 1, 1),
                nn.ELU(inplace=True),
            ]
            if i < ups:
                blocks.append(nn.Upsample(scale_factor=2, mode="nearest"))
        blocks.append(nn.Conv2d(self.width, int(channels), 3, 1, 1))
        self.body = nn.Sequential(*blocks)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(h).reshape(h.shape[0], self.width, 8, 8))


def _onehot(classes: torch.Tensor | None, n: int, device, dtype) -> torch.Tensor | None:
    if classes is None:
        return None
    c = classes.reshape(-1).long().clamp(0, N_CLASSES - 1)
    if c.shape[0] != n:
        raise ModelError(f"{c.shape[0]} size classes for {n} galaxies")
    return F.one_hot(c, N_CLASSES).to(device=device, dtype=dtype)


class PatchGenerator(nn.Module):
    """Stage 2: ``h`` (``N×latent_dim``, uniform in [−1, 1]) [+ size class] → patches in [−1, 1]."""

    def __init__(
        self,
        latent_dim: int = 64,
        width: int = 64,
        patch: int = 32,
        channels: int = 1,
        conditional: bool = False,
        init_seed: int = 2,
    ):
        super().__init__()
        self.latent_dim, self.width, self.patch = int(latent_dim), int(width), int(patch)
        self.channels, self.conditional = int(channels), bool(conditional)
        if self.latent_dim < 1 or self.width < 1:
            raise ModelError(
                f"galaxy generator: latent_dim={latent_dim} and width={width} must be >= 1"
            )
        self.decoder = _Decoder(
            self.latent_dim,
            self.width,
            self.patch,
            self.channels,
            N_CLASSES if self.conditional else 0,
        )
        seeded_init(self, init_seed)

    def spec(self) -> dict:
        return {
            "latent_dim": self.latent_dim,
            "width": self.width,
            "patch": self.patch,
            "channels": self.channels,
            "conditional": self.conditional,
        }

    def forward(self, h: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            if classes is None:
                raise ModelError("the conditional galaxy generator needs the size classes")
            h = torch.cat([h, _onehot(classes, h.shape[0], h.device, h.dtype)], dim=1)
        return torch.tanh(self.decoder(h))


class BEGANDiscriminator(nn.Module):
    """BEGAN's autoencoder discriminator: patches [+ size class] → their reconstruction."""

    def __init__(
        self,
        latent_dim: int = 64,
        width: int = 64,
        patch: int = 32,
        channels: int = 1,
        conditional: bool = False,
        init_seed: int = 3,
    ):
        super().__init__()
        downs = _levels(patch, 8, "model.patch")
        self.conditional = bool(conditional)
        n = int(width)
        extra = N_CLASSES if self.conditional else 0
        layers: list[nn.Module] = [
            nn.Conv2d(int(channels) + extra, n, 3, 1, 1),
            nn.ELU(inplace=True),
        ]
        cin = n
        for i in range(downs + 1):
            layers += [
                nn.Conv2d(cin, cin, 3, 1, 1),
                nn.ELU(inplace=True),
                nn.Conv2d(cin, cin, 3, 1, 1),
                nn.ELU(inplace=True),
            ]
            if i < downs:
                cout = n * (i + 2)
                layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.ELU(inplace=True)]
                cin = cout
        self.encoder = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * 64, int(latent_dim))
        self.decoder = _Decoder(int(latent_dim), n, int(patch), int(channels), extra)
        seeded_init(self, init_seed)

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        onehot = _onehot(classes, x.shape[0], x.device, x.dtype) if self.conditional else None
        if self.conditional and onehot is None:
            raise ModelError("the conditional BEGAN discriminator needs the size classes")
        inp = (
            x
            if onehot is None
            else torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)
        )
        h = self.fc(self.encoder(inp).flatten(1))
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        return self.decoder(h)


def reconstruction_loss(
    d: BEGANDiscriminator, x: torch.Tensor, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """BEGAN's ``L(v) = mean |v − D(v)|`` (L1 reconstruction error of the autoencoder)."""
    return (x - d(x, classes)).abs().mean()


class EigenGalaxies(nn.Module):
    """Galaxy stage ``eigen``: a Gaussian mixture over eigen-galaxies, drawing patches in
    physical units.

    Fitted on the data's patches (:func:`galforge.training.recipes.twostage.fit_eigen_galaxies`):
    each patch ``x`` (physical units) is seen as ``a = asinh(x / s)`` (``s``: the data's
    faintest non-zero value, so the truncation edge and the brightest cores both count),
    ``a`` is projected onto the ``components`` leading principal components of the data's
    patches (with their flips and quarter turns about the centre pixel), and the projections
    are modelled by a density of ``mixture`` Gaussian components (one set per size class in
    the conditional model): ``density="gmm"``, a fitted full-covariance mixture; ``"kde"``, a
    kernel density estimate — ``mixture`` of the data's projections as centres, one shared
    kernel (a bandwidth times the projections' spread), i.e. a smoothed resampling of the
    data's galaxies. A patch is drawn as ``x = s · sinh(mean + (μ_j + L_j ε) · basis)``:
    ``j`` chosen by the weights, ``ε`` standard normal. Everything is stored in buffers (no
    trainable parameter).

    Latent ``h`` (``N×(components + 1)``, uniform in [−1, 1] as the sampler gives it):
    ``h[:, 0]`` chooses the mixture component (``u = (h + 1)/2`` against the cumulative
    weights, among the size class's components when conditional), ``h[:, 1:]`` become the
    normal ``ε = √2 erfinv(h)``.
    """

    def __init__(
        self,
        patch: int = 64,
        components: int = 48,
        mixture: int = 8,
        conditional: bool = False,
        channels: int = 1,
        density: str = "gmm",
    ):
        super().__init__()
        self.patch, self.channels = int(patch), int(channels)
        self.components, self.mixture = int(components), int(mixture)
        self.conditional, self.density = bool(conditional), str(density)
        if self.patch < 8 or self.components < 1 or self.mixture < 1 or self.channels != 1:
            raise ModelError(
                f"eigen galaxy stage: patch={patch} (>= 8), components={components} and "
                f"mixture={mixture} (>= 1), one band (got {channels})"
            )
        if self.density not in EIGEN_DENSITIES:
            raise ModelError(
                f"eigen galaxy stage: density {density!r}: use one of {', '.join(EIGEN_DENSITIES)}"
            )
        self.latent_dim = self.components + 1
        groups = N_CLASSES if self.conditional else 1
        total = self.mixture * groups
        n_chol = total if self.density == "gmm" else groups
        d = self.patch * self.patch
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("basis", torch.zeros((self.components, d)))
        self.register_buffer("softening", torch.ones(1))
        self.register_buffer("weights", torch.full((total,), 1.0 / total))
        self.register_buffer("centres", torch.zeros((total, self.components)))
        self.register_buffer("chol", torch.eye(self.components).repeat(n_chol, 1, 1))
        mix_class = torch.arange(total) // self.mixture
        self.register_buffer("mix_class", mix_class if self.conditional else mix_class * 0)
        # which Cholesky factor each component uses: its own (gmm) or its group's (kde)
        self.register_buffer(
            "chol_index", torch.arange(total) if self.density == "gmm" else mix_class
        )

    def spec(self) -> dict:
        return {
            "stage": "eigen",
            "patch": self.patch,
            "channels": self.channels,
            "conditional": self.conditional,
            "components": self.components,
            "mixture": self.mixture,
            "density": self.density,
        }

    def set_fit(self, fit: dict) -> None:
        """Load a fit (arrays ``mean``, ``basis``, ``softening``, ``weights``, ``centres``,
        ``chol``, ``mix_class`` of this stage's shapes)."""
        names = ("mean", "basis", "softening", "weights", "centres", "chol", "mix_class")
        for name in names:
            buf = getattr(self, name)
            val = torch.as_tensor(fit[name]).to(device=buf.device, dtype=buf.dtype)
            if val.shape != buf.shape:
                raise ModelError(
                    f"eigen galaxy stage: {name} of shape {tuple(val.shape)}, "
                    f"expected {tuple(buf.shape)}"
                )
            buf.copy_(val)

    def forward(self, h: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        n = h.shape[0]
        if h.dim() != 2 or h.shape[1] != self.latent_dim:
            raise ModelError(
                f"eigen galaxy stage: latent N×{self.latent_dim}, got {tuple(h.shape)}"
            )
        h = h.to(self.mean.dtype)
        u = ((h[:, 0] + 1.0) * 0.5).clamp(0.0, 1.0)
        eps = math.sqrt(2.0) * torch.erfinv(h[:, 1:].clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        w = self.weights[None].expand(n, -1)
        if self.conditional:
            if classes is None:
                raise ModelError("the conditional galaxy stage needs the size classes")
            c = classes.reshape(-1).long().clamp(0, N_CLASSES - 1).to(w.device)
            w = w * (self.mix_class[None] == c[:, None]).to(w.dtype)
        cw = torch.cumsum(w, dim=1)
        cw = cw / cw[:, -1:].clamp_min(1e-30)
        pick = (cw < u[:, None]).sum(dim=1).clamp(max=w.shape[1] - 1)
        chol = self.chol[self.chol_index[pick]]
        coef = self.centres[pick] + torch.einsum("nij,nj->ni", chol, eps)
        a = self.mean + coef @ self.basis
        x = self.softening * torch.sinh(a)
        return x.reshape(n, 1, self.patch, self.patch)


def keep_central_cluster(x: torch.Tensor) -> torch.Tensor:
    """Patches (``N×C×P×P``) with only the 8-connected cluster of non-zero pixels holding the
    centre pixel (index ``P // 2``) kept — the largest cluster where the centre is 0 — and
    every other pixel exactly 0: one galaxy, one cluster."""
    from scipy import ndimage

    if x.shape[0] == 0:
        return x
    nz = (x != 0).any(dim=1).cpu().numpy()
    keep = np.zeros_like(nz)
    c = x.shape[-1] // 2
    for i, m in enumerate(nz):
        labels, k = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
        if k == 0:
            continue
        lab = labels[c, c]
        if lab == 0:
            lab = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        keep[i] = labels == lab
    mask = torch.from_numpy(keep).to(x.device)[:, None]
    return torch.where(mask, x, torch.zeros_like(x))


# ----------------------------------------------------------------------------- parts
class PositionsPart(nn.Module):
    """Bundle part ``positions``: the stage-1 generator, the field size, the data's sub-cell
    offsets (``offsets``: ``K×2`` ``(dx, dy)`` pixels), numbers of occupied cells per field
    (``counts``), size-class limits and the rule ``sampling`` making binary grids
    (:data:`SAMPLING`; ``threshold``, the first rule, for specs written without one)."""

    CAPABILITIES = frozenset()

    def __init__(
        self,
        latent_dim: int = 100,
        width: int = 64,
        grid: int = 32,
        conditional: bool = False,
        image_height: int = 1000,
        image_width: int = 1000,
        n_offsets: int = 0,
        size_thresholds=None,
        init_seed: int = 0,
        sampling: str = "threshold",
        n_counts: int = 0,
        class_sampling: str = "argmax",
    ):
        super().__init__()
        if class_sampling not in CLASS_SAMPLING:
            raise ModelError(
                f"class sampling {class_sampling!r}: use one of {', '.join(CLASS_SAMPLING)}"
            )
        self.class_sampling = str(class_sampling)
        if sampling not in SAMPLING:
            raise ModelError(f"model.pos_sampling={sampling!r}: use one of {', '.join(SAMPLING)}")
        self.sampling = str(sampling)
        if int(image_height) < int(grid) or int(image_width) < int(grid):
            raise ModelError(
                f"fields of {image_height}×{image_width} pixels are smaller than "
                f"the {grid}×{grid} grid"
            )
        self.net = PositionsGenerator(latent_dim, width, grid, conditional, init_seed)
        self.image_height, self.image_width = int(image_height), int(image_width)
        self.size_thresholds = (
            None if size_thresholds is None else [float(v) for v in size_thresholds]
        )
        self.register_buffer("offsets", torch.zeros((int(n_offsets), 2)))
        self.register_buffer("counts", torch.zeros(int(n_counts)))

    def set_layout(
        self,
        height: int,
        width: int,
        offsets: torch.Tensor,
        size_thresholds=None,
        counts: torch.Tensor | None = None,
    ) -> None:
        """Field size, offsets, size-class limits and counts per field learnt from the data."""
        if int(height) < self.net.grid or int(width) < self.net.grid:
            raise ModelError(
                f"fields of {height}×{width} pixels are smaller than the "
                f"{self.net.grid}×{self.net.grid} grid (model.grid)"
            )
        self.image_height, self.image_width = int(height), int(width)
        self.offsets = (
            torch.as_tensor(offsets, dtype=torch.float32)
            .reshape(-1, 2)
            .to(self.offsets.device)
            .clone()
        )
        self.size_thresholds = (
            None if size_thresholds is None else [float(v) for v in size_thresholds]
        )
        if counts is not None:
            self.counts = (
                torch.as_tensor(counts, dtype=torch.float32)
                .reshape(-1)
                .to(self.counts.device)
                .clone()
            )

    def spec(self) -> dict:
        return {
            **self.net.spec(),
            "image_height": self.image_height,
            "image_width": self.image_width,
            "n_offsets": int(self.offsets.shape[0]),
            "size_thresholds": self.size_thresholds,
            "sampling": self.sampling,
            "n_counts": int(self.counts.shape[0]),
            "class_sampling": self.class_sampling,
        }

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class GalaxiesPart(nn.Module):
    """Bundle part ``galaxies``: the stage-2 generator, the normaliser mapping its patches to
    physical units and ``floor`` (the data's faintest non-zero value: less is background).

    ``stage``: ``began`` (:class:`PatchGenerator`, in model space, mapped to physical units
    by the normaliser) or ``eigen`` (:class:`EigenGalaxies`, physical units directly;
    ``components``, ``mixture``). ``single_cluster``: keep only each patch's central
    cluster (:func:`keep_central_cluster`), so that a placed galaxy is one cluster."""

    CAPABILITIES = frozenset()

    def __init__(
        self,
        latent_dim: int = 64,
        width: int = 64,
        patch: int = 32,
        channels: int = 1,
        conditional: bool = False,
        normalizer: dict | None = None,
        init_seed: int = 2,
        stage: str = "began",
        components: int = 48,
        mixture: int = 8,
        single_cluster: bool = False,
        density: str = "gmm",
    ):
        super().__init__()
        if stage not in GALAXY_STAGES:
            raise ModelError(f"galaxy stage {stage!r}: use one of {', '.join(GALAXY_STAGES)}")
        self.stage, self.single_cluster = str(stage), bool(single_cluster)
        if self.stage == "eigen":
            self.net = EigenGalaxies(patch, components, mixture, conditional, channels, density)
        else:
            self.net = PatchGenerator(latent_dim, width, patch, channels, conditional, init_seed)
        desc = dict(normalizer) if normalizer else _identity(channels)
        self.units = PhysicalStretch(channels, desc)
        self.register_buffer("floor", torch.zeros(1))

    def spec(self) -> dict:
        out = {**self.net.spec(), "normalizer": dict(self.units.description)}
        if self.stage == "eigen" or self.single_cluster:
            out.update(stage=self.stage, single_cluster=self.single_cluster)
        return out

    def physical(self, model: torch.Tensor) -> torch.Tensor:
        """Model-space patches → physical units, below ``floor`` set to 0."""
        x = self.units.to_physical(model.clamp(-1.0, 1.0))
        return torch.where(x >= self.floor, x, torch.zeros_like(x))

    def forward(self, h: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if self.stage == "eigen":
            x = self.net(h, classes)
            x = torch.where(x >= self.floor, x, torch.zeros_like(x))
        else:
            x = self.physical(self.net(h, classes))
        return keep_central_cluster(x) if self.single_cluster else x


def _identity(channels: int) -> dict:
    """A normaliser description mapping [-1, 1] onto itself (a model built without data)."""
    c = int(channels)
    return {
        "stretch": "linear",
        "target": [-1.0, 1.0],
        "lo": [-1.0] * c,
        "hi": [1.0] * c,
        "offset": [0.0] * c,
        "softening": [1.0] * c,
    }


def _phi(z: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF."""
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


class TwoStageSampler(nn.Module):
    """The ``twostage`` sampler: a latent vector → a full-size field in physical units."""

    CAPABILITIES = frozenset({"latent", "physical"})

    def __init__(self, positions: PositionsPart, galaxies: GalaxiesPart):
        super().__init__()
        if positions.net.conditional != galaxies.net.conditional:
            raise ModelError(
                "the positions and galaxies parts of a twostage model must both be "
                "conditional or both unconditional"
            )
        self.positions, self.galaxies = positions, galaxies

    @property
    def conditional(self) -> bool:
        return self.positions.net.conditional

    @property
    def channels(self) -> int:
        return self.galaxies.net.channels

    @property
    def cells(self) -> int:
        return self.positions.net.grid**2

    @property
    def _class_draws(self) -> int:
        """Latent numbers drawing the cells' size classes (``class_sampling=draw``)."""
        return self.cells if self.conditional and self.positions.class_sampling == "draw" else 0

    def latent_shape(self, n: int) -> tuple[int, int]:
        l1, l2 = self.positions.net.latent_dim, self.galaxies.net.latent_dim
        return (int(n), l1 + self.cells * (l2 + 2) + 1 + self._class_draws)

    def _split(self, z: torch.Tensor):
        n = z.shape[0]
        l1, l2, cells = self.positions.net.latent_dim, self.galaxies.net.latent_dim, self.cells
        size = self.latent_shape(n)[1]
        if z.dim() != 2 or z.shape[1] != size:
            raise ModelError(f"a twostage latent is N×{size}, got {tuple(z.shape)}")
        a = l1 + cells * l2
        b = a + 2 * cells
        return (
            z[:, :l1],
            z[:, l1:a].reshape(n, cells, l2),
            z[:, a : a + cells],
            z[:, a + cells : b],
            z[:, b],
            z[:, b + 1 :],
        )

    def layout(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Occupied cells (``N×G×G`` bool) and their size classes (``N×G×G`` long, or None):
        the most probable class of each cell (``class_sampling=argmax``) or one drawn from the
        cell's class probabilities (``draw``: ``u = Φ(z)`` against their cumulative sum)."""
        zp, _, _, zu, zk, zc = self._split(z)
        prob, class_probs = self.positions.net.maps(zp)
        part = self.positions
        occ = occupied_cells(
            prob, _phi(zu).reshape(prob.shape), part.sampling, part.counts, _phi(zk)
        )
        if not self.conditional:
            return occ, None
        if not self._class_draws:
            return occ, class_probs.argmax(dim=1)
        cum = torch.cumsum(class_probs, dim=1)
        u = _phi(zc).reshape(prob.shape)[:, None] * cum[:, -1:]
        return occ, (cum < u).sum(dim=1).clamp(max=N_CLASSES - 1)

    def place(
        self,
        patches: torch.Tensor,
        image: torch.Tensor,
        cell: torch.Tensor,
        offsets: torch.Tensor,
        n: int,
    ) -> torch.Tensor:
        """Fields ``N×C×H×W``: patch ``m`` added with its centre pixel at the centre of cell
        ``cell[m]`` (flat index) of field ``image[m]`` plus ``offsets[m]`` ``(dx, dy)``."""
        grid = self.positions.net.grid
        h, w = self.positions.image_height, self.positions.image_width
        c, p = patches.shape[1], patches.shape[-1]
        out = torch.zeros((n, c, h, w), dtype=patches.dtype, device=patches.device)
        if patches.shape[0] == 0:
            return out
        row, col = cell // grid, cell % grid
        cy = (row.to(torch.float64) + 0.5) * h / grid - 0.5 + offsets[:, 1].double()
        cx = (col.to(torch.float64) + 0.5) * w / grid - 0.5 + offsets[:, 0].double()
        py, px = torch.floor(cy + 0.5).long(), torch.floor(cx + 0.5).long()
        ar = torch.arange(p, device=patches.device) - p // 2
        yy, xx = py[:, None] + ar[None], px[:, None] + ar[None]
        valid = ((yy >= 0) & (yy < h))[:, :, None] & ((xx >= 0) & (xx < w))[:, None, :]
        for ch in range(c):
            flat = ((image[:, None, None] * c + ch) * h + yy[:, :, None]) * w + xx[:, None, :]
            out.view(-1).index_add_(0, flat[valid], patches[:, ch][valid])
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.compose(z, *self.layout(z))

    def compose(
        self,
        z: torch.Tensor,
        occ: torch.Tensor,
        classes: torch.Tensor | None = None,
        order: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fields from a latent and a layout: one galaxy per occupied cell of ``occ``
        (``N×G×G`` bool; :meth:`layout` draws it from ``z``, a caller may give another, e.g.
        uniform positions), drawn with the cell's size class when conditional. ``order``
        (a permutation of the occupied cells, in ``nonzero`` order) re-pairs the drawn
        galaxies with the cells: galaxy ``order[m]`` goes to cell ``m``."""
        n = z.shape[0]
        _, zg, zo, _, _, _ = self._split(z)
        image, cell = occ.reshape(n, -1).nonzero(as_tuple=True)
        h = 2.0 * _phi(zg[image, cell]) - 1.0
        cls = None if classes is None else classes.reshape(n, -1)[image, cell]
        if image.numel():
            patches = self.galaxies(h, cls)
        else:
            p = self.galaxies.net.patch
            patches = torch.zeros((0, self.channels, p, p), dtype=z.dtype, device=z.device)
        if order is not None:
            patches = patches[order.to(patches.device)]
        k = self.positions.offsets.shape[0]
        if k:
            pick = torch.clamp((_phi(zo[image, cell]) * k).long(), 0, k - 1)
            off = self.positions.offsets[pick]
        else:
            off = torch.zeros((image.numel(), 2), dtype=z.dtype, device=z.device)
        return self.place(patches, image, cell, off, n)


@register_generator("twostage_positions")
def build_positions(spec: dict) -> PositionsPart:
    """Rebuild the ``positions`` part from its bundle spec."""
    return PositionsPart(**spec)


@register_generator("twostage_galaxies")
def build_galaxies(spec: dict) -> GalaxiesPart:
    """Rebuild the ``galaxies`` part from its bundle spec."""
    spec = dict(spec)
    if spec.get("stage") == "eigen":
        spec.pop("latent_dim", None)
    return GalaxiesPart(**spec)


@register_family("twostage", parts=("positions", "galaxies"))
def compose_twostage(parts: dict[str, nn.Module]) -> TwoStageSampler:
    """The sampler of a ``twostage`` bundle from its two parts."""
    if not isinstance(parts["positions"], PositionsPart) or not isinstance(
        parts["galaxies"], GalaxiesPart
    ):
        raise ModelError(
            "a twostage bundle is made of a twostage_positions and a twostage_galaxies part"
        )
    return TwoStageSampler(parts["positions"], parts["galaxies"])
