"""``deepfield`` training recipe: a deep field as learned sources on a learned sky.

``galforge train FIELD --model deepfield --out RUN`` reads one field (``builtin:hdf`` or a
user's multi-band FITS field) whole and, before the first step
(:meth:`DeepFieldRecipe.make_batches`, :mod:`galforge.data.sources`):

1. detects its sources on the band sum (``model.thresh`` × σ, ``model.minarea`` pixels) and
   measures per band flux and magnitude, half-light radius, ellipticity and position angle;
2. measures the sky on the source-free pixels (level, σ, a 3×3 correlation kernel, the
   correlation between bands; for 8-bit composites the clip at 0 and the rounding);
3. fits the positions' two-point correlation with a Thomas cluster process
   (``model.clustering=false``: a Poisson process at the real density);
4. with ``model.denoise_colours`` (default), shrinks the measurement noise out of faint
   sources' colours in the catalogue the model draws from (the sky adds it back);
5. cuts a ``model.stamp``-pixel stamp per source (neighbours replaced by sky noise); the
   sources with a signal-to-noise of at least ``model.min_snr`` whose half-light radius is
   under a quarter of the stamp train the stamp network.

Those measurements go into the generator (its spec and the ``rows`` buffer: the catalogue
the KDE resamples), so the exported bundle needs nothing else. The training steps (``--steps``)
are the stamp GAN's: the conditional stamp generator draws a noiseless source for the real
stamp's (log flux, log hlr); :func:`galforge.models.deepfield.conform` gives it the real
source's flux per band, size, ellipticity, position angle and sub-pixel centre; the field's
sky noise is added, rounded and clipped as the real pixels are; the projection
discriminator sees both through ``asinh(x / σ_band)``. Non-saturating logistic loss, R1 on
real stamps every ``model.r1_interval`` steps, Adam (``lr``, β = (0, 0.99)). No flips or
quarter turns: each fake is drawn at its real stamp's angle and sub-pixel centre, which a
flip of the real stamp alone would break.

After training, :func:`calibrate_catalogue` corrects the catalogue model by forward
modelling (fields drawn, extracted as the real one was, rows, weights, density and sky
corrected until they measure as the real field); ``scripts/zoo/xdf-deepfield.py`` runs it
on the exported bundle.

The data are read through the run's normaliser (fitted as for every family); its 99.99th
percentile clip caps the brightest pixels of a float field, so ``--set
data.clip_percentile=100`` keeps them (8-bit composites are not affected: they saturate
at 255 anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from galforge.errors import ConfigError, TrainingError
from galforge.models.deepfield import (
    DeepFieldGenerator,
    StampDiscriminator,
    canvas_offset,
    sky_noise,
)
from galforge.models.deepfield import output_transform as pixel_transform
from galforge.models.layers import PhysicalStretch
from galforge.seeding import global_scope
from galforge.training.losses import nonsaturating_d_loss, nonsaturating_g_loss, r1_penalty
from galforge.training.pipeline import BatchSource, Fields, StampBatches
from galforge.training.recipe import Phase, Recipe, StepContext
from galforge.training.recipes import register_recipe

__all__ = ["DeepFieldRecipe", "DeepFieldSettings"]


@dataclass
class DeepFieldSettings:
    """Hyper-parameters of the deepfield recipe (module docstring)."""

    stamp: int = 32  # stamp side the network draws and D sees (px)
    render: int = 64  # canvas a source is drawn on in a field (px)
    cell: int = 128  # position-seeded cells of the source process (px)
    latent_dim: int = 32
    width: int = 32  # channels of G's last and D's first layer
    thresh: float = 2.0  # detection threshold (× the band sum's sky σ)
    minarea: int = 5  # detection: minimum pixels
    min_snr: float = 5.0  # training stamps: flux / (σ √npix) at least this
    clustering: bool = True  # fit a Thomas process to w(θ); false: Poisson
    kde_scale: float = 0.5  # × Silverman's bandwidth of the catalogue resampling
    denoise_colours: bool = True  # shrink faint sources' measured colour noise (catalogue)
    achromatic: bool = True  # one drawn profile for every band (false: one per band)
    zeropoint: float | None = None  # magnitudes zeropoint - 2.5 log10 flux (None: 0)
    lr: float = 2e-4
    r1_gamma: float = 1.0
    r1_interval: int = 4
    ema: float = 0.999

    def __post_init__(self):
        for name in ("stamp", "render", "cell", "latent_dim", "width", "minarea", "r1_interval"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be >= 1")
        if int(self.stamp) & (int(self.stamp) - 1) or int(self.stamp) < 8:
            raise ConfigError(f"model.stamp={self.stamp}: give a power of 2, at least 8")
        if int(self.render) < int(self.stamp):
            raise ConfigError(
                f"model.render={self.render} must be at least model.stamp={self.stamp}"
            )
        if not float(self.thresh) > 0 or not float(self.lr) > 0:
            raise ConfigError("model.thresh and model.lr must be > 0")
        if not float(self.kde_scale) >= 0:
            raise ConfigError(f"model.kde_scale={self.kde_scale} must be >= 0")


class _StampSource(BatchSource):
    """``{"images", "rows"}``: shuffled epochs of real stamps with their catalogue rows
    (flux per band, hlr, ellipticity, pa, sub-pixel shift x, y)."""

    def __init__(self, stamps: Tensor, rows: Tensor, batch_size: int, seed: int):
        # no flips or quarter turns: each fake is drawn at its real stamp's angle and
        # sub-pixel centre, which a flip of the real stamp alone would break
        self.inner = StampBatches(
            stamps, batch_size, seed, conditions=rows, flips=False, rot90=False
        )
        self.steps_per_epoch = self.inner.steps_per_epoch

    def batch(self, step: int) -> dict:
        b = self.inner.batch(step)
        return {"images": b["images"], "rows": b["conditions"]}


@register_recipe("deepfield")
class DeepFieldRecipe(Recipe):
    """Sources on a sky: catalogue, process and sky measured, the stamp network trained."""

    family = "deepfield"
    Settings = DeepFieldSettings
    #: ``small``: tiny networks for tests
    CONFIGS = {"small": {"latent_dim": 8, "width": 8, "stamp": 16, "render": 32, "cell": 64}}
    SNAPSHOT_EVERY = 0

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
        with global_scope(self.seed, "deepfield-init"):
            self.G = DeepFieldGenerator(
                self.channels,
                latent_dim=int(s.latent_dim),
                width=int(s.width),
                stamp=int(s.stamp),
                render=int(s.render),
                cell=int(s.cell),
                kde_scale=float(s.kde_scale),
                zeropoint=s.zeropoint,
                achromatic=bool(s.achromatic),
            ).to(self.device)
            self.D = StampDiscriminator(self.channels, int(s.width), int(s.stamp)).to(self.device)
        betas = (0.0, 0.99)
        self.opt_g = torch.optim.Adam(self.G.net.parameters(), lr=float(s.lr), betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(s.lr), betas=betas)
        self.notes: dict = {}

    def phases(self) -> tuple[Phase, ...]:
        s = self.settings
        out = [Phase("discriminator")]
        if float(s.r1_gamma) > 0:
            out.append(Phase("d_r1", interval=int(s.r1_interval)))
        out.append(Phase("generator_update"))
        return tuple(out)

    @classmethod
    def data_need(cls, settings) -> Fields:
        return Fields()

    # ------------------------------------------------------------------ data
    def physical_field(self, data) -> np.ndarray:
        """The first training field in physical units (the run's normaliser inverted)."""
        x = torch.as_tensor(data, dtype=torch.float32)
        if x.dim() != 4 or x.shape[0] < 1:
            raise TrainingError(
                f"--model deepfield trains on one field, got data of shape {tuple(x.shape)}"
            )
        if self.normalizer is None:
            return x[0].numpy()
        units = PhysicalStretch(self.channels, self.normalizer)
        with torch.no_grad():
            field = units.to_physical(x[:1].double())[0].numpy()
        snapped = np.round(field)
        if np.mean(np.abs(field - snapped) < 1e-3) > 0.999:
            # integer data (8-bit levels) survive the round trip exactly (a clip of the
            # normaliser may leave its few clipped pixels at a fractional level)
            field = snapped
        return field.astype(np.float32)

    def make_batches(self, data, batch_size: int, seed: int) -> BatchSource:
        """Measure the field (module docstring) into G, and batch the real stamps."""
        from galforge.data.sources import (
            cut_stamps,
            denoise_colours,
            detect_sources,
            fit_thomas,
            pair_correlation,
        )

        s = self.settings
        field = self.physical_field(data)
        c, h, w = field.shape
        bands = tuple(f"b{i}" for i in range(c))
        det = detect_sources(
            field, bands, thresh=float(s.thresh), minarea=int(s.minarea), zeropoint=s.zeropoint
        )
        cat, sky = det.catalogue, det.sky
        n = len(cat["x"])
        flux = np.stack([cat[f"flux_{b}"] for b in bands], 1)
        rows = np.concatenate([flux, cat["hlr"][:, None], cat["ellipticity"][:, None]], 1)
        model_flux = flux
        if s.denoise_colours:
            err = np.stack([cat[f"fluxerr_{b}"] for b in bands], 1)
            model_flux = denoise_colours(flux, err)
        model_rows = np.concatenate([model_flux, rows[:, c:]], 1)
        density = n / float(h * w)
        process = {
            "density": density,
            "kappa": density,
            "mu": 1.0,
            "sigma": 1.0,
            "clustered": False,
        }
        if s.clustering and n >= 20:
            r, wr, dd = pair_correlation(cat["x"], cat["y"], (h, w), seed=self.seed)
            fit = fit_thomas(r, wr, dd, density)
            process.update({k: fit[k] for k in ("kappa", "mu", "sigma", "clustered")})
            process["w_r"] = [float(v) for v in r]
            process["w"] = [float(v) for v in wr]
        sig = np.asarray(sky.sigma)
        noise_sum = float(np.sqrt(sig @ np.asarray(sky.band_corr) @ sig))
        snr = cat["flux"] / (noise_sum * np.sqrt(np.maximum(cat["npix"], 1)))
        train = np.nonzero(
            (snr >= float(s.min_snr)) & (cat["hlr"] < s.stamp / 4.0) & np.all(flux > 0, 1)
        )[0]
        if len(train) < 8:
            raise TrainingError(
                f"--model deepfield: only {len(train)} sources of the field "
                f"have S/N >= {s.min_snr} and fit a {s.stamp}-px stamp; lower "
                "model.min_snr or model.thresh, or give a deeper field"
            )
        stamps, idx = cut_stamps(field, det, int(s.stamp), seed=self.seed, select=train)
        # the stamps' first pixel is round(x) - stamp // 2: the sources sit that far off centre
        shift = np.stack(
            [cat["x"][idx] - np.round(cat["x"][idx]), cat["y"][idx] - np.round(cat["y"][idx])], 1
        ) + canvas_offset(int(s.stamp))
        batch_rows = np.concatenate([rows[idx], cat["pa_deg"][idx, None], shift], 1)
        lf = np.log(np.maximum(cat["flux"][train], 1e-6))
        lh = np.log(cat["hlr"][train])
        cond_stats = torch.tensor(
            [[lf.mean(), lh.mean()], [max(lf.std(), 1e-3), max(lh.std(), 1e-3)]]
        )
        self.G.set_model(
            torch.from_numpy(model_rows),
            cond_stats,
            sky.to_dict(),
            process,
            s.zeropoint,
            flux_soft=sig.tolist(),
        )
        self.G.to(self.device)
        self.notes = {
            "sources": n,
            "training_stamps": int(len(train)),
            "density_per_px2": density,
            "clustered": process["clustered"],
        }
        self._sky_sigma = torch.tensor(sig, dtype=torch.float32, device=self.device)
        return _StampSource(
            torch.from_numpy(stamps), torch.from_numpy(batch_rows).float(), batch_size, seed
        )

    # ------------------------------------------------------------------ contract
    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def generator(self) -> nn.Module:
        return self.G

    def generator_spec(self) -> dict:
        return self.G.spec()

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    # ------------------------------------------------------------------ the step
    def _view(self, x: Tensor) -> Tensor:
        """What D sees: ``asinh(x / σ_band)`` (sky-subtracted stamps)."""
        sig = getattr(self, "_sky_sigma", None)
        if sig is None:
            sig = torch.ones(x.shape[1], device=x.device)
        return torch.asinh(x / sig[None, :, None, None]) / 3.0

    def _conditions(self, rows: Tensor) -> Tensor:
        c = self.channels
        return self.G.conditions(rows[:, :c], rows[:, c])

    def _fake(self, rows: Tensor, rng: torch.Generator) -> Tensor:
        """Noisy fake stamps for the real rows: drawn, conformed, sky noise added, pixels
        rounded and clipped as the field's, the level subtracted again."""
        g, c, s = self.G, self.channels, int(self.settings.stamp)
        n = rows.shape[0]
        z = torch.randn((n, g.latent_dim), generator=rng, device=rng.device).to(self.device)
        attrs = {
            "flux": rows[:, :c],
            "hlr": rows[:, c],
            "ellipticity": rows[:, c + 1],
            "pa_deg": rows[:, c + 2],
        }
        clean = g.draw(z, attrs, rows[:, c + 3 : c + 5], s)
        eps = torch.randn((n, c, s + 2, s + 2), generator=rng, device=rng.device).to(self.device)
        noise = sky_noise(
            eps, g._sigma.to(self.device), g._kernel.to(self.device), g._mix.to(self.device)
        )
        level = g._level.to(self.device)[None, :, None, None]
        x = pixel_transform(
            level + clean + noise, float(g.sky.get("quantize") or 0.0), g.sky.get("clip")
        )
        return x - level

    def discriminator(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        real = batch["images"].to(self.device)
        rows = batch["rows"].to(self.device)
        cond = self._conditions(rows)
        with torch.no_grad():
            fake = self._fake(rows, ctx.rng)
        self.D.requires_grad_(True)
        loss = nonsaturating_d_loss(self.D(self._view(real), cond), self.D(self._view(fake), cond))
        self.optimize("D", loss)
        return {"loss_d": float(loss.detach())}

    def d_r1(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        real = self._view(batch["images"].to(self.device)).detach().requires_grad_(True)
        cond = self._conditions(batch["rows"].to(self.device))
        penalty = r1_penalty(self.D(real, cond), real)
        self.optimize("D", penalty * (0.5 * float(self.settings.r1_gamma) * ctx.gain))
        return {"r1": float(penalty.detach())}

    def generator_update(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        rows = batch["rows"].to(self.device)
        cond = self._conditions(rows)
        self.D.requires_grad_(False)
        loss = nonsaturating_g_loss(self.D(self._view(self._fake(rows, ctx.rng)), cond))
        self.optimize("G", loss)
        self.D.requires_grad_(True)
        return {"loss_g": float(loss.detach())}


# ---------------------------------------------------------------------------- calibration
def _wquantile(x: np.ndarray, w: np.ndarray, q) -> np.ndarray:
    """Weighted quantiles ``q`` of ``x`` (weights ``w``)."""
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    cw = (cw - 0.5 * w[order]) / cw[-1]
    return np.interp(q, cw, x[order])


def _spread(x: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """Median and half the 16–84 % range (robust location and σ)."""
    w = np.ones(len(x)) if w is None else w
    lo, med, hi = _wquantile(x, w, [0.16, 0.5, 0.84])
    return float(med), float(max(0.5 * (hi - lo), 1e-6))


def _shape_features(flux: np.ndarray, hlr: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """What is matched per bin of flux: band fractions (all but the last band), log hlr,
    logit ellipticity (as the catalogue model's coordinates)."""
    total = flux.sum(1, keepdims=True)
    frac = flux[:, :-1] / np.where(np.abs(total) > 1e-12, total, 1e-12)
    e = np.clip(ell, 0.0, 0.95)
    return np.concatenate(
        [frac, np.log(np.maximum(hlr, 1e-3))[:, None], np.log((e + 0.01) / (1.01 - e))[:, None]],
        1,
    )


def _from_shape_features(f: np.ndarray, total: np.ndarray) -> tuple:
    c = f.shape[1] - 1  # fractions of c - 1 bands + hlr + e  -> c bands
    frac = np.clip(f[:, : c - 1], 0.002, 1.0)
    last = np.clip(1.0 - frac.sum(1, keepdims=True), 0.002, 1.0)
    frac = np.concatenate([frac, last], 1)
    frac = frac / frac.sum(1, keepdims=True)
    s = 1.0 / (1.0 + np.exp(-f[:, c]))
    ell = np.clip(1.02 * s - 0.01, 0.0, 0.95)
    return frac * total[:, None], np.exp(f[:, c - 1]), ell


def _catalogue_rows(cat: dict, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flux = np.stack([cat[f"flux_b{i}"] for i in range(c)], 1)
    return flux, np.asarray(cat["hlr"], np.float64), np.asarray(cat["ellipticity"], np.float64)


def calibrate_catalogue(
    generator: DeepFieldGenerator,
    field,
    *,
    iterations: int = 3,
    fields: int = 2,
    seed: int = 1000,
    thresh: float = 2.0,
    minarea: int = 5,
    bins: int = 8,
    max_weight: float = 6.0,
    match_radius: float = 1.5,
    flux_boost: bool | None = True,
    sky_level: bool = False,
    log=None,
) -> dict:
    """Calibrate the catalogue model of a trained ``generator`` against its real ``field``
    (``C×H×W``, physical units) by forward modelling; return the record (also in the spec).

    The catalogue holds what the real field's extraction *measured*; a drawn source is
    measured again through the sky's noise, blending, rounding and the detection threshold,
    so drawing the measured rows as they are does not re-measure as the real field. Each
    iteration draws ``fields`` fields of the real size (seeds ``seed``, ``seed + 1``, ...),
    extracts them exactly as the catalogue was extracted (``thresh``, ``minarea``), and
    corrects the intrinsic rows the sampler draws from:

    * **flux** -- the measured / drawn band-sum flux of the recovered sources, as a function
      of the drawn flux (binned medians), divides the row's measured flux (aperture losses,
      the flux boost of sources found near the threshold);
    * **counts** -- in ``bins`` quantile bins of the real measured band-sum flux, each row's
      weight is multiplied by the ratio of real to generated detections in its bin (capped at
      ``max_weight``): sources near the threshold are found only when the noise helps, so
      more of them must be drawn; the density (the clustered process's children) follows the
      weights;
    * **shapes and colours** -- in the same bins, each of the band fractions, log half-light
      radius and logit ellipticity of the rows is shifted by the real minus generated
      measured median and its spread about the bin's median scaled so that intrinsic spread²
      + what the measurement adds = the real measured spread² (a deconvolution of the noise).

    ``flux_boost=False`` corrects only the light lost (a ratio below 1), ``None`` no flux;
    ``sky_level=True`` also lowers the sky level by what the extraction finds in excess in
    the generated source-free pixels (off by default: on the XDF it made faint sources'
    colours worse).

    The rows start from the model's (``denoise_colours`` already applied); the result is
    stored in the generator (``rows``, ``row_weight``, ``process``, ``sky``,
    ``calibration``).
    """
    from scipy.spatial import cKDTree
    from scipy.stats import ks_2samp

    from galforge.data.sources import detect_sources

    g = generator
    if g.weighted:
        raise TrainingError("deepfield: this model's catalogue is already calibrated")
    field = np.asarray(field, dtype=np.float32)
    c, h, w = field.shape
    bands = tuple(f"b{i}" for i in range(c))
    say = log or (lambda msg: None)

    def extract(x):
        return detect_sources(x, bands, thresh=float(thresh), minarea=int(minarea))

    real_det = extract(field)
    real_sky = np.array([real_det.sky.level, real_det.sky.sigma], np.float64)
    base_sky = dict(g.sky)
    sky = np.array([base_sky["level"], base_sky["sigma"]], np.float64)
    real_flux, real_hlr, real_e = _catalogue_rows(real_det.catalogue, c)
    real_total = real_flux.sum(1)
    edges = np.quantile(np.log(np.maximum(real_total, 1e-6)), np.linspace(0, 1, bins + 1)[1:-1])

    def bin_of(total):
        return np.searchsorted(edges, np.log(np.maximum(total, 1e-6)))

    real_bin = bin_of(real_total)
    real_feat = _shape_features(real_flux, real_hlr, real_e)
    n_real = np.bincount(real_bin, minlength=bins).astype(np.float64)

    target = g.rows.double().cpu().numpy().copy()
    target_total = target[:, :c].sum(1)
    row_bin = bin_of(target_total)
    rows = target.copy()
    weight = np.ones(len(rows))

    def measure(rows, weight):
        """Draw the fields; the generated measured catalogue and truth matched to it."""
        g.set_calibration(
            torch.from_numpy(rows), torch.from_numpy(weight), weight.mean(), {"state": "running"}
        )
        g.sky = {**base_sky, "level": sky[0].tolist(), "sigma": sky[1].tolist()}
        g._sky_tensors()
        cats, pairs, skies = [], [], []
        for i in range(int(fields)):
            s = int(seed) + i
            img = g.render_window(s, 0, 0, h, w, (h, w)).cpu().numpy()
            truth = g.sources_window(s, 0, 0, h, w, (h, w))
            found = extract(img)
            cat = found.catalogue
            skies.append([found.sky.level, found.sky.sigma])
            cats.append(_catalogue_rows(cat, c))
            if len(truth["x"]) and len(cat["x"]):
                d, j = cKDTree(np.stack([cat["x"], cat["y"]], 1)).query(
                    np.stack([truth["x"], truth["y"]], 1)
                )
                ok = d < match_radius
                t_tot = truth["flux"][ok].sum(1)
                m_tot = cats[-1][0][j[ok]].sum(1)
                pairs.append(np.stack([t_tot, m_tot], 1))
        flux = np.concatenate([x[0] for x in cats])
        hlr = np.concatenate([x[1] for x in cats])
        ell = np.concatenate([x[2] for x in cats])
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2))
        return flux, hlr, ell, pairs, np.mean(np.asarray(skies, np.float64), 0)

    def summary(flux, hlr, ell):
        feat = _shape_features(flux, hlr, ell)
        out = {"density_ratio": float(len(flux) / fields / len(real_flux))}
        names = [f"frac_{b}" for b in range(c - 1)] + ["log_hlr", "logit_e"]
        for k, name in enumerate(names):
            out[f"ks_{name}"] = float(ks_2samp(real_feat[:, k], feat[:, k]).pvalue)
        t = flux.sum(1)
        out["ks_flux"] = float(
            ks_2samp(np.log(np.maximum(real_total, 1e-6)), np.log(np.maximum(t, 1e-6))).pvalue
        )
        return out

    history = []
    for it in range(int(iterations) + 1):
        flux, hlr, ell, pairs, fake_sky = measure(rows, weight)
        stats = summary(flux, hlr, ell)
        stats["sky_level_offset"] = (fake_sky[0] - real_sky[0]).tolist()
        stats["sky_sigma_ratio"] = (fake_sky[1] / real_sky[1]).tolist()
        history.append(stats)
        say(
            f"calibration {it}: "
            + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {np.round(v, 3).tolist()}"
                for k, v in stats.items()
            )
        )
        if it == int(iterations):
            break
        if sky_level:
            # the sky as the extraction measures it: the drawn sources' faint wings and
            # the sources drawn below the threshold add light to the source-free pixels
            sky[0] -= fake_sky[0] - real_sky[0]
        # flux: measured / drawn as a function of the drawn flux
        good = (pairs[:, 0] > 0) & (pairs[:, 1] > 0)
        lt = np.log(pairs[good, 0])
        ratio = np.log(pairs[good, 1] / pairs[good, 0])
        q = np.quantile(lt, np.linspace(0, 1, 11))
        centres, medians = [], []
        for a, b in zip(q[:-1], q[1:], strict=True):
            sel = (lt >= a) & (lt <= b)
            if sel.sum() >= 10:
                centres.append(float(np.median(lt[sel])))
                # the flux lost outside the aperture and the boost of the threshold's
                # selection (flux_boost=False: the loss only, the boost left to the weights)
                medians.append(
                    min(float(np.median(ratio[sel])), 0.0)
                    if flux_boost is False
                    else float(np.median(ratio[sel]))
                )
        total = rows[:, :c].sum(1)
        if centres and flux_boost is not None:
            now = np.interp(np.log(np.maximum(total, 1e-6)), centres, medians)
            want = np.where(target_total > 0, target_total * np.exp(-now), total)
            rows[:, :c] *= (want / np.where(total > 0, total, 1.0))[:, None]
        # counts per bin of measured flux
        fake_bin = bin_of(flux.sum(1))
        n_fake = np.bincount(fake_bin, minlength=bins) / float(fields)
        factor = np.clip(n_real / np.maximum(n_fake, 1.0), 0.5, 2.0)
        weight = np.clip(weight * factor[row_bin], 1.0 / max_weight, max_weight)
        # shapes and colours per bin
        feat = _shape_features(rows[:, :c], rows[:, c], rows[:, c + 1])
        fake_feat = _shape_features(flux, hlr, ell)
        for b in range(bins):
            sel_i, sel_r, sel_f = row_bin == b, real_bin == b, fake_bin == b
            if min(sel_i.sum(), sel_r.sum(), sel_f.sum()) < 20:
                continue
            for k in range(feat.shape[1]):
                li, si = _spread(feat[sel_i, k], weight[sel_i])
                lr, sr = _spread(real_feat[sel_r, k])
                lf, sf = _spread(fake_feat[sel_f, k])
                new = np.sqrt(max(si**2 + sr**2 - sf**2, (0.3 * si) ** 2))
                feat[sel_i, k] = li + (feat[sel_i, k] - li) * (new / si) + (lr - lf)
        total = rows[:, :c].sum(1)
        bflux, bhlr, bell = _from_shape_features(feat, total)
        rows = np.concatenate(
            [np.where(total[:, None] > 0, bflux, rows[:, :c]), bhlr[:, None], bell[:, None]], 1
        )
        rows[:, c] = np.clip(rows[:, c], 0.3, None)
    record = {
        "iterations": int(iterations),
        "fields": int(fields),
        "seed": int(seed),
        "thresh": float(thresh),
        "minarea": int(minarea),
        "bins": int(bins),
        "history": history,
    }
    record["base_sky"] = {"level": base_sky["level"], "sigma": base_sky["sigma"]}
    g.set_calibration(torch.from_numpy(rows), torch.from_numpy(weight), weight.mean(), record)
    return record
