"""``deepfield``: deep fields composed of learned sources on a learned sky, with truth.

A deep field is mostly sky; the rest is galaxies whose catalogue can be measured in the
real field. The model is made of what was measured there (``galforge.data.sources``) and of
one small network:

* **catalogue model** — the real catalogue's rows (per band flux, half-light radius,
  ellipticity) resampled with a Gaussian kernel jitter (a KDE in the coordinates
  ``asinh(flux / σ_band)``, ``log hlr``, ``logit e``, whose kernel has the catalogue's own
  covariance times Silverman's factor × ``kde_scale``², so colours stay those of real
  sources); position angles are isotropic (uniform). A calibrated model
  (:meth:`DeepFieldGenerator.set_calibration`, found by
  ``galforge.training.recipes.deepfield.calibrate_catalogue``) holds intrinsic rows drawn
  in proportion to ``row_weight``, so that its fields re-measure as the real one;
* **positions** — a Thomas (Neyman–Scott) process fitted to the real two-point correlation
  (parents of density κ per px², Poisson(μ) children each, Gaussian-scattered with σ px;
  κμ = the real source density), or a Poisson process when clustering does not describe
  the field better (``process["clustered"]``);
* **stamp generator** — a conditional DCGAN-like network drawing a *noiseless* source
  ``size×size`` from a latent and the standardised (log flux, log hlr). Its drawing is then
  made to have the catalogue's values by construction (:func:`conform`): an affine
  resampling maps its second-moment ellipse onto the asked ellipticity and position angle
  and its half-light radius onto the asked one, and each band is rescaled to the asked
  flux, so magnitudes, colours and sizes come from the catalogue model;
* **sky** — per band level and σ, a 3×3 kernel correlating the noise in space and the
  noise's correlation between bands, drawn as a field of its own (position-seeded chunks),
  then, for 8-bit composites, rounded and clipped as the real pixels were.

Capabilities: ``sources`` (``render_window`` / ``sources_window``: any window of a field of
any size from the seed alone; sources are enumerated by position-seeded cells of ``cell``
pixels, so a source straddling a tile edge is drawn whole in both tiles), ``physical`` and
``latent`` (``forward(z)`` draws catalogue galaxies on a plain background, for sample
grids and ``galforge generate``), ``conditional`` (the stamp network itself).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import ModelError
from galforge.models.registry import register_generator
from galforge.seeding import derive_seed, field_chunk_generator

__all__ = [
    "DeepFieldGenerator",
    "StampDiscriminator",
    "StampGenerator",
    "canvas_offset",
    "conform",
    "half_light_radius",
    "sky_noise",
]

CONDITIONS = ("log_flux", "log_hlr")


# ---------------------------------------------------------------------------- networks
class StampGenerator(nn.Module):
    """``(z, conditions) -> N×C×size×size``, non-negative, noiseless (DCGAN-like: a linear
    layer to ``4×4``, then nearest ×2 upsampling + 3×3 convolutions, no batch norm so that a
    stamp does not depend on the rest of its batch)."""

    CAPABILITIES = frozenset({"conditional"})
    condition_names = CONDITIONS

    def __init__(self, channels: int, latent_dim: int = 32, width: int = 32, size: int = 32):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ModelError(f"model.stamp={size}: the stamp side must be a power of 2, >= 8")
        self.channels, self.latent_dim, self.width, self.size = channels, latent_dim, width, size
        n_up = int(math.log2(size // 4))
        chans = [width * min(2 ** (n_up - 1 - i), 8) for i in range(n_up)] + [width]
        self.fc = nn.Linear(latent_dim + len(CONDITIONS), chans[0] * 16)
        self.c0 = chans[0]
        blocks = []
        for i in range(n_up):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1),
                nn.LeakyReLU(0.2),
            ]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(chans[-1], channels, 3, padding=1)
        with torch.no_grad():
            self.out.bias.fill_(-2.0)
        # a soft circular window: the source fades to exactly nothing before the stamp's edge
        ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
        r = torch.sqrt(ax[None, :] ** 2 + ax[:, None] ** 2)
        self.register_buffer("window", torch.sigmoid(size / 2.0 - 2.0 - r), persistent=False)

    def forward(self, z: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc(torch.cat([z, conditions], 1)), 0.2)
        h = self.body(h.view(-1, self.c0, 4, 4))
        return F.softplus(self.out(h), beta=2.0) * self.window


class StampDiscriminator(nn.Module):
    """Projection discriminator on asinh-stretched stamps with the (log flux, log hlr)
    conditions: strided 3×3 convolutions to ``4×4``, a linear logit plus the inner product of
    the features with an embedding of the conditions."""

    def __init__(self, channels: int, width: int = 32, size: int = 32):
        super().__init__()
        layers, c = [], channels
        for i in range(int(math.log2(size // 4))):
            nxt = width * min(2**i, 8)
            layers += [nn.Conv2d(c, nxt, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = nxt
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c * 16, 128)
        self.logit = nn.Linear(128, 1)
        self.embed = nn.Linear(len(CONDITIONS), 128)

    def forward(self, x: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc(self.body(x).flatten(1)), 0.2)
        return self.logit(h)[:, 0] + (self.embed(conditions) * h).sum(1)


# ---------------------------------------------------------------------------- by construction
def canvas_offset(size: int) -> float:
    """Where a source at the pixel ``c`` lies on a ``size``-pixel canvas whose first pixel is
    ``c − size // 2``, relative to the canvas centre ``(size − 1) / 2`` (½ for even sizes):
    the shift :func:`conform` needs besides the source's sub-pixel offset."""
    return size // 2 - (size - 1) / 2.0


_APERTURES: dict = {}


def _aperture_weights(size: int, step: float, dtype, device) -> torch.Tensor:
    """``K×P``: the fraction of each of the ``P = size²`` pixels inside circles of radius
    ``k·step`` about the centre ``(size − 1) / 2`` (each pixel sampled 8×8 times), cached."""
    key = (int(size), float(step), dtype, str(device))
    if key not in _APERTURES:
        sub = (torch.arange(8, dtype=torch.float64) + 0.5) / 8 - 0.5
        ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
        xs = (ax[:, None] + sub[None, :]).reshape(-1)  # size·8
        d = torch.sqrt(xs[None, :] ** 2 + xs[:, None] ** 2)  # (8 size)²
        d = d.reshape(size, 8, size, 8).permute(0, 2, 1, 3).reshape(size * size, 64)
        radii = torch.arange(0, int(size / 2 / step) + 2, dtype=torch.float64) * step
        w = (d[None, :, :] < radii[:, None, None]).double().mean(-1)  # K×P
        _APERTURES[key] = (w.to(device=device, dtype=dtype), radii.to(device=device, dtype=dtype))
    return _APERTURES[key]


def half_light_radius(image: torch.Tensor, step: float = 0.25) -> torch.Tensor:
    """Half-light radius (px) of ``N×H×W`` images about their centre: the enclosed fraction in
    exact-area circular apertures (8×8 sub-pixels) every ``step`` px, interpolated at one
    half, as ``sep.flux_radius`` measures it. Differentiable in the pixel values."""
    size = image.shape[-1]
    weights, radii = _aperture_weights(size, step, image.dtype, image.device)
    f = image.flatten(1)
    total = f.sum(1, keepdim=True).clamp_min(1e-12)
    frac = f @ weights.T / total  # N×K
    k = (frac < 0.5).sum(1, keepdim=True).clamp(1, radii.numel() - 1)
    c0, c1 = torch.gather(frac, 1, k - 1), torch.gather(frac, 1, k)
    t = ((0.5 - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (radii[k - 1] + t * step)[:, 0]


def _sqrt2(m: torch.Tensor) -> torch.Tensor:
    """Square root of symmetric positive 2×2 matrices ``N×2×2``."""
    det = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]).clamp_min(1e-12)
    s = torch.sqrt(det)
    t = torch.sqrt((m[:, 0, 0] + m[:, 1, 1] + 2 * s).clamp_min(1e-12))
    eye = torch.eye(2, dtype=m.dtype, device=m.device)[None]
    return (m + s[:, None, None] * eye) / t[:, None, None]


def _moments(img: torch.Tensor):
    """Centroid (x, y) about the stamp centre and covariance ``N×2×2`` of ``N×S×S`` images."""
    size = img.shape[-1]
    c = (size - 1) / 2.0
    ax = torch.arange(size, dtype=img.dtype, device=img.device) - c
    tot = img.sum((1, 2)).clamp_min(1e-12)
    mx = (img.sum(1) * ax).sum(1) / tot
    my = (img.sum(2) * ax).sum(1) / tot
    dx = ax[None, None, :] - mx[:, None, None]
    dy = ax[None, :, None] - my[:, None, None]
    xx = (img * dx * dx).sum((1, 2)) / tot
    yy = (img * dy * dy).sum((1, 2)) / tot
    xy = (img * dx * dy).sum((1, 2)) / tot
    cov = torch.stack([torch.stack([xx, xy], 1), torch.stack([xy, yy], 1)], 1)
    return mx, my, cov + 0.05 * torch.eye(2, dtype=img.dtype, device=img.device)[None]


def _resample(
    stamps: torch.Tensor, a_inv: torch.Tensor, centre_x, centre_y, shift: torch.Tensor, out: int
) -> torch.Tensor:
    """Output pixel ``u`` (about the output centre) takes input ``a_inv (u - shift) + c``."""
    n, _, s, _ = stamps.shape
    c_out = (out - 1) / 2.0
    ax = torch.arange(out, dtype=stamps.dtype, device=stamps.device) - c_out
    ux = ax[None, None, :].expand(n, out, out) - shift[:, 0, None, None]
    uy = ax[None, :, None].expand(n, out, out) - shift[:, 1, None, None]
    vx = a_inv[:, 0, 0, None, None] * ux + a_inv[:, 0, 1, None, None] * uy + centre_x[:, None, None]
    vy = a_inv[:, 1, 0, None, None] * ux + a_inv[:, 1, 1, None, None] * uy + centre_y[:, None, None]
    c_in = (s - 1) / 2.0
    # align_corners=True: -1 and 1 are the centres of the first and last input pixels
    grid = torch.stack([(vx + c_in) * 2 / (s - 1) - 1, (vy + c_in) * 2 / (s - 1) - 1], -1)
    return F.grid_sample(stamps, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def conform(
    stamps: torch.Tensor,
    flux: torch.Tensor,
    hlr: torch.Tensor,
    ellipticity,
    pa_deg,
    shift: torch.Tensor | None = None,
    out: int | None = None,
) -> torch.Tensor:
    """Noiseless ``stamps`` (``N×C×S×S``, non-negative; ``N×1×S×S``: one profile for every
    band of ``flux``) resampled onto an ``out``-pixel canvas
    so that each has the asked ellipticity ``1 − b/a``, position angle (degrees, from +x
    towards +y), half-light radius (px, of the band sum), centre (``shift`` px from the canvas
    centre) and per band flux (``N×C``; negative fluxes count as 0). Differentiable."""
    n, c, s, _ = stamps.shape
    out = int(out or s)
    dtype = stamps.dtype
    shift = stamps.new_zeros((n, 2)) if shift is None else shift.to(dtype)
    total = stamps.sum(1)
    mx, my, cov = _moments(total)
    q = 1.0 - torch.as_tensor(ellipticity, dtype=dtype).clamp(0.0, 0.95)
    th = torch.deg2rad(torch.as_tensor(pa_deg, dtype=dtype))
    ct, st = torch.cos(th), torch.sin(th)
    rot = torch.stack([torch.stack([ct, -st], 1), torch.stack([st, ct], 1)], 1)
    diag = torch.diag_embed(torch.stack([1.0 / torch.sqrt(q), torch.sqrt(q)], 1))
    target = rot @ diag @ diag @ rot.transpose(1, 2)  # det 1, axis ratio q
    root_g = _sqrt2(cov)
    det_g = torch.sqrt(root_g[:, 0, 0] * root_g[:, 1, 1] - root_g[:, 0, 1] ** 2)
    # A maps the drawn ellipse onto the target one at the same area: A = T^½ G^-½ √det G^½
    a_mat = _sqrt2(target) @ torch.linalg.inv(root_g) * torch.sqrt(det_g)[:, None, None]
    zero = stamps.new_zeros((n, 2))
    first = _resample(stamps, torch.linalg.inv(a_mat), mx, my, zero, out)
    r_now = half_light_radius(first.sum(1))
    scale = torch.as_tensor(hlr, dtype=dtype) / r_now.clamp_min(1e-3)
    a_mat = a_mat * scale[:, None, None]
    img = _resample(stamps, torch.linalg.inv(a_mat), mx, my, shift, out)
    band = img.sum((2, 3))  # N×C
    whole = img.sum(1, keepdim=True)
    prof = img + 1e-4 * whole / c  # no band left empty
    prof = prof / (band + 1e-4 * whole.sum((2, 3)) / c)[:, :, None, None].clamp_min(1e-30)
    return prof * flux.to(dtype).clamp_min(0.0)[:, :, None, None]


def sky_noise(
    eps: torch.Tensor, sigma: torch.Tensor, kernel: torch.Tensor, mix: torch.Tensor
) -> torch.Tensor:
    """Correlated sky noise ``N×C×h×w`` from unit noise ``N×C×(h+2)×(w+2)``: bands mixed by
    ``mix`` (C×C, lower triangular), then each band convolved with its 3×3 ``kernel`` and
    scaled by ``sigma``."""
    e = torch.einsum("ab,nbhw->nahw", mix, eps)
    y = F.conv2d(e, kernel[:, None], groups=kernel.shape[0])
    return y * sigma[None, :, None, None]


def output_transform(x: torch.Tensor, quantize: float, clip) -> torch.Tensor:
    """Round to ``quantize`` and clip to ``clip`` as the real pixels were (8-bit composites);
    identity for float data. The rounding passes gradients straight through."""
    if quantize:
        x = x + (torch.round(x / quantize) * quantize - x).detach()
    if clip:
        x = x.clamp(float(clip[0]), float(clip[1]))
    return x


# ---------------------------------------------------------------------------- the sampler
def _logit(e):
    e = torch.as_tensor(e).clamp(0.0, 0.95)
    return torch.log((e + 0.01) / (1.0 - e + 0.01))


def _unlogit(t):
    s = torch.sigmoid(t)
    return (1.02 * s - 0.01).clamp(0.0, 0.95)


def _phi(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


class DeepFieldGenerator(nn.Module):
    """The ``deepfield`` sampler (module docstring). ``spec`` holds the sky, the process and
    the settings; the buffer ``rows`` (``n_rows × (C + 2)``: per band flux, hlr, ellipticity)
    is the catalogue the KDE resamples; ``cond_stats`` standardises the conditions."""

    CAPABILITIES = frozenset({"sources", "physical", "latent"})
    family = "deepfield"
    upscale = 1

    def __init__(
        self,
        channels: int,
        *,
        latent_dim: int = 32,
        width: int = 32,
        stamp: int = 32,
        render: int = 64,
        cell: int = 128,
        n_rows: int = 1,
        kde_scale: float = 1.0,
        sky: dict | None = None,
        process: dict | None = None,
        zeropoint: float | None = None,
        flux_soft: list | None = None,
        achromatic: bool = False,
        weighted: bool = False,
        calibration: dict | None = None,
    ):
        super().__init__()
        c = int(channels)
        self.channels = c
        self.latent_dim, self.width, self.stamp = int(latent_dim), int(width), int(stamp)
        self.render, self.cell, self.kde_scale = int(render), int(cell), float(kde_scale)
        if self.render < self.stamp or self.cell < 8:
            raise ModelError(
                f"deepfield: render={render} must be >= stamp={stamp} and cell={cell} >= 8"
            )
        # achromatic: one profile for every band (colours then hold in any aperture)
        self.achromatic = bool(achromatic)
        self.net = StampGenerator(
            1 if self.achromatic else c, self.latent_dim, self.width, self.stamp
        )
        self.register_buffer("rows", torch.zeros((int(n_rows), c + 2)))
        # weighted: rows are drawn in proportion to ``row_weight`` (a calibrated catalogue
        # model, :meth:`set_calibration`); else uniformly
        self.weighted = bool(weighted)
        if self.weighted:
            self.register_buffer("row_weight", torch.ones(int(n_rows)))
        self.calibration = dict(calibration or {})
        self.register_buffer("cond_stats", torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        self.sky = (
            dict(sky)
            if sky
            else {
                "level": [0.0] * c,
                "sigma": [1.0] * c,
                "kernel": [[[0, 0, 0], [0, 1.0, 0], [0, 0, 0]]] * c,
                "band_corr": np.eye(c).tolist(),
                "quantize": 0.0,
                "clip": None,
            }
        )
        self.process = (
            dict(process)
            if process
            else {"density": 1e-3, "kappa": 1e-3, "mu": 1.0, "sigma": 1.0, "clustered": False}
        )
        self.zeropoint = zeropoint
        self.flux_soft = [float(v) for v in (flux_soft or [1.0] * c)]
        self._sky_tensors()

    # ------------------------------------------------------------------ setup
    def _sky_tensors(self) -> None:
        c = self.channels
        k = torch.tensor(self.sky["kernel"], dtype=torch.float32).reshape(c, 3, 3)
        k = k / k.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        corr = torch.tensor(self.sky["band_corr"], dtype=torch.float64).reshape(c, c)
        # the kernels' overlap lowers the correlation between bands: ask the mix for more
        overlap = (k.flatten(1).double() @ k.flatten(1).double().T).clamp_min(0.1)
        want = corr / overlap
        want.fill_diagonal_(1.0)
        evals, evecs = torch.linalg.eigh(want)
        want = evecs @ torch.diag(evals.clamp_min(1e-3)) @ evecs.T
        d = torch.sqrt(torch.diagonal(want))
        want = want / d[:, None] / d[None, :]
        self._kernel = k
        self._mix = torch.linalg.cholesky(want).float()
        self._sigma = torch.tensor(self.sky["sigma"], dtype=torch.float32)
        self._level = torch.tensor(self.sky["level"], dtype=torch.float32)

    def set_model(
        self,
        rows: torch.Tensor,
        cond_stats: torch.Tensor,
        sky: dict,
        process: dict,
        zeropoint: float | None,
        flux_soft,
    ) -> None:
        """What the recipe measured in the training field (buffers and spec)."""
        self.rows = rows.to(self.rows.device, torch.float32).clone()
        self.cond_stats = cond_stats.to(self.cond_stats.device, torch.float32).clone()
        self.sky, self.process = dict(sky), dict(process)
        self.zeropoint = zeropoint
        self.flux_soft = [float(v) for v in flux_soft]
        self._sky_tensors()

    def set_calibration(
        self, rows: torch.Tensor, weights: torch.Tensor, density_factor: float, record: dict
    ) -> None:
        """A calibrated catalogue model: intrinsic ``rows`` drawn in proportion to
        ``weights``, at ``density_factor`` × the process's density (a clustered process keeps
        its parents and scales its children: a random thinning keeps the correlation), and
        the ``record`` of how it was found (kept in the spec)."""
        base = self.calibration.get("base_process") or dict(self.process)
        self.rows = rows.to(self.rows.device, torch.float32).clone()
        w = weights.to(self.rows.device, torch.float32).clone()
        if w.shape != (self.rows.shape[0],) or not bool((w > 0).all()):
            raise ModelError("deepfield: one positive calibration weight per catalogue row")
        if self.weighted:
            self.row_weight = w
        else:
            self.register_buffer("row_weight", w)
            self.weighted = True
        process = dict(base)
        process["density"] = float(base["density"]) * float(density_factor)
        if process.get("clustered"):
            process["mu"] = float(base["mu"]) * float(density_factor)
        else:
            process["kappa"] = process["density"]
        self.process = process
        self.calibration = {
            **dict(record),
            "density_factor": float(density_factor),
            "base_process": base,
        }

    def spec(self) -> dict:
        return {
            "channels": self.channels,
            "latent_dim": self.latent_dim,
            "width": self.width,
            "stamp": self.stamp,
            "render": self.render,
            "cell": self.cell,
            "achromatic": self.achromatic,
            "n_rows": int(self.rows.shape[0]),
            "kde_scale": self.kde_scale,
            "sky": self.sky,
            "process": self.process,
            "zeropoint": self.zeropoint,
            "flux_soft": self.flux_soft,
            "weighted": self.weighted,
            "calibration": self.calibration,
        }

    # ------------------------------------------------------------------ catalogue model
    @property
    def n_features(self) -> int:
        return self.channels + 2

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """Catalogue rows (flux per band, hlr, e) → the KDE's coordinates."""
        c = self.channels
        soft = torch.tensor(self.flux_soft, dtype=rows.dtype, device=rows.device)
        return torch.cat(
            [
                torch.asinh(rows[:, :c] / soft),
                torch.log(rows[:, c : c + 1]),
                _logit(rows[:, c + 1 : c + 2]),
            ],
            1,
        )

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        c = self.channels
        soft = torch.tensor(self.flux_soft, dtype=f.dtype, device=f.device)
        return torch.cat(
            [
                torch.sinh(f[:, :c]) * soft,
                torch.exp(f[:, c : c + 1]),
                _unlogit(f[:, c + 1 : c + 2]),
            ],
            1,
        )

    def attributes(self, u: torch.Tensor) -> dict:
        """Source attributes from uniform/normal draws ``u`` (``N×(F + 2)``: column 0 picks a
        row (Φ of a normal), columns 1..F the kernel jitter, the last the position angle)."""
        n_rows = self.rows.shape[0]
        feats, chol, bw = self._kde()
        d = feats.shape[1]
        u = u.double()
        if self.weighted:
            cdf = torch.cumsum(self.row_weight.double(), 0)
            k = torch.searchsorted(cdf / cdf[-1], _phi(u[:, 0]).contiguous(), right=True)
            k = torch.clamp(k, 0, n_rows - 1)
        else:
            k = torch.clamp((_phi(u[:, 0]) * n_rows).long(), 0, n_rows - 1)
        f = feats[k] + bw * u[:, 1 : 1 + d] @ chol.T
        vals = self.from_features(f)
        c = self.channels
        pa = _phi(u[:, 1 + d]) * 180.0 - 90.0
        max_hlr = self.render / 4.0
        return {
            "flux": vals[:, :c].float().clamp_min(0.0),
            "hlr": vals[:, c].float().clamp(0.3, max_hlr),
            "ellipticity": vals[:, c + 1].float(),
            "pa_deg": pa.float(),
            "row": k,
        }

    def _kde(self):
        """The catalogue's KDE coordinates, their spread and the bandwidth (cached while the
        ``rows`` buffer is unchanged)."""
        key = (self.rows.data_ptr(), self.rows._version, self.rows.device, self.kde_scale)
        cached = self.__dict__.get("_kde_cache")
        if cached is None or cached[0] != key:
            n_rows = self.rows.shape[0]
            feats = self.features(self.rows.double())
            d = feats.shape[1]
            if n_rows > d:
                # the kernel has the catalogue's own covariance (fluxes of one source are
                # strongly correlated between bands: a jitter along the data keeps colours)
                cov = torch.cov(feats.T) + 1e-9 * torch.eye(d, dtype=feats.dtype)
                chol = torch.linalg.cholesky(cov)
            else:
                chol = torch.eye(d, dtype=feats.dtype)
            bw = self.kde_scale * (4.0 / (n_rows * (d + 2))) ** (1.0 / (d + 4))  # Silverman
            cached = (key, (feats, chol, bw))
            self.__dict__["_kde_cache"] = cached
        return cached[1]

    def conditions(self, flux: torch.Tensor, hlr: torch.Tensor) -> torch.Tensor:
        """Standardised (log total flux, log hlr) for the stamp network."""
        lf = torch.log(flux.sum(1).clamp_min(1e-6))
        lh = torch.log(hlr.clamp_min(1e-3))
        cs = self.cond_stats
        return torch.stack([(lf - cs[0, 0]) / cs[1, 0], (lh - cs[0, 1]) / cs[1, 1]], 1)

    def draw(
        self,
        z: torch.Tensor,
        attrs: dict,
        shift: torch.Tensor | None = None,
        out: int | None = None,
    ) -> torch.Tensor:
        """Noiseless sources (physical units, sky-subtracted) for stamp latents ``z`` and
        ``attrs``, on ``out``-pixel canvases (default ``render``)."""
        cond = self.conditions(attrs["flux"], attrs["hlr"]).to(z.dtype)
        raw = self.net(z, cond)
        return conform(
            raw,
            attrs["flux"],
            attrs["hlr"],
            attrs["ellipticity"],
            attrs["pa_deg"],
            shift,
            out or self.render,
        )

    # ------------------------------------------------------------------ latent sampling
    def latent_shape(self, n: int) -> tuple[int, int]:
        return (int(n), self.latent_dim + self.n_features + 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Catalogue-model galaxies on the sky level, ``N×C×render×render`` (physical)."""
        attrs = self.attributes(z[:, self.latent_dim :])
        img = self.draw(z[:, : self.latent_dim], attrs)
        return img + self._level.to(img.device)[None, :, None, None]

    # ------------------------------------------------------------------ sources of a window
    def _cell_sources(self, seed: int, i: int, j: int) -> dict:
        """Every source whose parent lies in cell ``(i, j)``: positions (px), latents, ids."""
        # cells left of or above the field (margins) have negative indices: offset them
        g = field_chunk_generator(
            derive_seed(seed, "deepfield-sources"), i + _CELL_OFFSET, j + _CELL_OFFSET
        )
        p = self.process
        area = float(self.cell) ** 2
        clustered = bool(p.get("clustered"))
        rate = float(p["kappa"] if clustered else p["density"]) * area
        n_par = int(torch.poisson(torch.tensor([rate], dtype=torch.float64), generator=g))
        par = torch.rand((n_par, 2), generator=g, dtype=torch.float64) * self.cell
        par[:, 0] += j * self.cell
        par[:, 1] += i * self.cell
        if clustered:
            kids = torch.poisson(
                torch.full((n_par,), float(p["mu"]), dtype=torch.float64), generator=g
            ).long()
            n = int(kids.sum())
            owner = torch.repeat_interleave(torch.arange(n_par), kids)
            off = torch.randn((n, 2), generator=g, dtype=torch.float64) * float(p["sigma"])
            # children stay within 4σ of their parent (cut at 4σ: 3e-4 of them move in), so
            # a window that enumerates the cells within 4σ of it meets all of its sources
            reach = 4.0 * float(p["sigma"])
            norm = off.norm(dim=1, keepdim=True).clamp_min(1e-12)
            pos = par[owner] + off * torch.clamp(reach / norm, max=1.0)
        else:
            n, pos = n_par, par
        z = torch.randn((n, self.latent_dim + self.n_features + 2), generator=g)
        # unique, non-negative: 21 bits for each (offset) cell index and for the source
        ids = ((np.int64(i + _CELL_OFFSET) << 42) + (np.int64(j + _CELL_OFFSET) << 21)) + np.arange(
            n, dtype=np.int64
        )
        return {"pos": pos, "z": z, "id": ids}

    def _cells_for(self, y0: int, x0: int, h: int, w: int, margin: float):
        c = self.cell
        i0, i1 = math.floor((y0 - margin) / c), math.floor((y0 + h + margin) / c)
        j0, j1 = math.floor((x0 - margin) / c), math.floor((x0 + w + margin) / c)
        return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]

    def _margin(self) -> float:
        spread = 4.0 * float(self.process["sigma"]) if self.process.get("clustered") else 0.0
        return self.render / 2.0 + 1.0 + spread

    def sources_window(self, seed: int, y0: int, x0: int, h: int, w: int, field_hw) -> dict:
        """The truth catalogue of the sources whose centre lies in the window and the field:
        ``id, x, y, flux (N×C), hlr, ellipticity, pa_deg`` and ``row`` (the catalogue row each
        was drawn about) as numpy arrays, ids ascending."""
        H, W = (int(v) for v in field_hw)
        spread = 4.0 * float(self.process["sigma"]) if self.process.get("clustered") else 0.0
        out = {
            "id": [],
            "x": [],
            "y": [],
            "flux": [],
            "hlr": [],
            "ellipticity": [],
            "pa_deg": [],
            "row": [],
        }
        for i, j in self._cells_for(y0, x0, h, w, spread + 1.0):
            s = self._cell_sources(seed, i, j)
            x, y = s["pos"][:, 0].numpy(), s["pos"][:, 1].numpy()
            keep = (
                (x >= x0 - 0.5)
                & (x < x0 + w - 0.5)
                & (y >= y0 - 0.5)
                & (y < y0 + h - 0.5)
                & (x >= -0.5)
                & (x < W - 0.5)
                & (y >= -0.5)
                & (y < H - 0.5)
            )
            if not keep.any():
                continue
            a = self.attributes(s["z"][keep][:, self.latent_dim :])
            out["id"].append(s["id"][keep])
            out["x"].append(x[keep])
            out["y"].append(y[keep])
            for k in ("flux", "hlr", "ellipticity", "pa_deg"):
                out[k].append(a[k].numpy().astype(np.float64))
            out["row"].append(a["row"].numpy().astype(np.int64))
        c = self.channels
        if not out["id"]:
            return {
                "id": np.zeros(0, np.int64),
                "x": np.zeros(0),
                "y": np.zeros(0),
                "flux": np.zeros((0, c)),
                "hlr": np.zeros(0),
                "ellipticity": np.zeros(0),
                "pa_deg": np.zeros(0),
                "row": np.zeros(0, np.int64),
            }
        cat = {k: np.concatenate(v) for k, v in out.items()}
        order = np.argsort(cat["id"], kind="stable")
        return {k: v[order] for k, v in cat.items()}

    @torch.no_grad()
    def render_window(self, seed: int, y0: int, x0: int, h: int, w: int, field_hw) -> torch.Tensor:
        """Pixels ``[y0, y0+h) × [x0, x0+w)`` of the field of ``seed`` and size ``field_hw``,
        physical units, ``C×h×w``: sky level + Σ sources + sky noise, then the output
        transform. Independent of how the field is cut into windows."""
        H, W = (int(v) for v in field_hw)
        dev = self.rows.device
        c, p = self.channels, self.render
        scene = torch.zeros((c, h, w), dtype=torch.float32, device=dev)
        for i, j in self._cells_for(y0, x0, h, w, self._margin()):
            s = self._cell_sources(seed, i, j)
            if len(s["id"]) == 0:
                continue
            pos = s["pos"]
            cx, cy = torch.round(pos[:, 0]), torch.round(pos[:, 1])
            inside = (
                (cx + p // 2 > x0 - 1)
                & (cx - p // 2 < x0 + w + 1)
                & (cy + p // 2 > y0 - 1)
                & (cy - p // 2 < y0 + h + 1)
            )
            if not bool(inside.any()):
                continue
            z = s["z"].to(dev)
            shift = (pos - torch.stack([cx, cy], 1)).float().to(dev) + canvas_offset(p)
            for k in torch.nonzero(inside)[:, 0].tolist():
                # one source at a time: its pixels never depend on what else is drawn
                attrs = self.attributes(z[k : k + 1, self.latent_dim :])
                stamp = self.draw(z[k : k + 1, : self.latent_dim], attrs, shift[k : k + 1], p)[0]
                sx0 = int(cx[k]) - p // 2
                sy0 = int(cy[k]) - p // 2
                ys, ye = max(sy0, y0), min(sy0 + p, y0 + h, H)
                xs, xe = max(sx0, x0), min(sx0 + p, x0 + w, W)
                if ys >= ye or xs >= xe:
                    continue
                scene[:, ys - y0 : ye - y0, xs - x0 : xe - x0] += stamp[
                    :, ys - sy0 : ye - sy0, xs - sx0 : xe - sx0
                ]
        return self.finish_window(scene, seed, y0, x0, field_hw)

    def finish_window(
        self, scene: torch.Tensor, seed: int, y0: int, x0: int, field_hw
    ) -> torch.Tensor:
        """Sky level + ``scene`` + the field's sky noise at ``(y0, x0)``, then the output
        transform."""
        c, h, w = scene.shape
        eps = _field_noise(
            derive_seed(seed, "deepfield-sky"), field_hw, c, y0 - 1, x0 - 1, h + 2, w + 2
        ).to(scene.device)
        noise = sky_noise(
            eps[None],
            self._sigma.to(scene.device),
            self._kernel.to(scene.device),
            self._mix.to(scene.device),
        )[0]
        x = self._level.to(scene.device)[:, None, None] + scene + noise
        return output_transform(x, float(self.sky.get("quantize") or 0.0), self.sky.get("clip"))


_NOISE_CHUNK = 64
_CELL_OFFSET = 1 << 20


def _field_noise(
    seed: int, field_hw, channels: int, y0: int, x0: int, h: int, w: int
) -> torch.Tensor:
    """Unit normal noise ``C×h×w`` of a field at ``(y0, x0)``, drawn in position-seeded chunks
    of 64 px; zero outside the field (as the field engine's latents)."""
    H, W = (int(v) for v in field_hw)
    out = torch.zeros((channels, h, w))
    ys, ye = max(y0, 0), min(y0 + h, H)
    xs, xe = max(x0, 0), min(x0 + w, W)
    if ys >= ye or xs >= xe:
        return out
    c = _NOISE_CHUNK
    for i in range(ys // c, (ye - 1) // c + 1):
        for j in range(xs // c, (xe - 1) // c + 1):
            block = torch.randn((channels, c, c), generator=field_chunk_generator(seed, i, j))
            cy0, cy1 = max(ys, i * c), min(ye, (i + 1) * c)
            cx0, cx1 = max(xs, j * c), min(xe, (j + 1) * c)
            out[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = block[
                :, cy0 - i * c : cy1 - i * c, cx0 - j * c : cx1 - j * c
            ]
    return out


@register_generator("deepfield")
def build_deepfield(spec: dict) -> DeepFieldGenerator:
    spec = dict(spec)
    channels = spec.pop("channels")
    return DeepFieldGenerator(int(channels), **spec)
