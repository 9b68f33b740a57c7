"""The latent tools of the style families in one place, and the projection of real galaxies.

For every generator with an intermediate latent space (capability ``intermediate``):

* truncation in w: ``bundle.sample(n, seed, truncation=0.7, truncation_cutoff=8)``;
* :func:`style_mix`, :func:`interpolation`, :func:`seed_arithmetic` / :func:`arithmetic`
  (from :mod:`galforge.generation.latent`, re-exported here);
* :func:`project`: the w (or per-layer w+, optionally with the noise maps) whose image best
  matches a real galaxy, with a loss made for calibrated data — χ² in physical units against
  a per-band noise estimate, plus the distance between galaxy-encoder features
  (:mod:`galforge.evaluation.features`; no ImageNet network).

This module sits above both ``generation`` and ``evaluation`` (the projection needs a
generator and the evaluation's galaxy encoder), beside the command line, which wires it.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galforge import __version__
from galforge.errors import ConfigError, DataError
from galforge.generation.latent import (
    MixingGrid,
    add_direction,
    arithmetic,
    attribute_direction,
    interpolate,
    interpolation,
    lerp,
    parse_styles,
    seed_arithmetic,
    seed_latents,
    seed_noise,
    slerp,
    style_mix,
    truncate,
)
from galforge.models.capabilities import INTERMEDIATE, NOISE, require
from galforge.seeding import check_seed, sample_latents, step_generator

__all__ = [
    "MixingGrid",
    "Projection",
    "add_direction",
    "arithmetic",
    "attribute_direction",
    "interpolate",
    "interpolation",
    "lerp",
    "load_target",
    "parse_styles",
    "project",
    "robust_sigma",
    "seed_arithmetic",
    "seed_latents",
    "seed_noise",
    "slerp",
    "style_mix",
    "truncate",
    "write_projection",
]

MAD_TO_SIGMA = 1.4826


def robust_sigma(image_chw: np.ndarray, border: float = 0.125) -> np.ndarray:
    """Per-band noise estimate: 1.4826 × the median absolute deviation of the sky, taken in a
    frame of ``border`` × the size around the stamp (the whole stamp if that is flat)."""
    x = np.asarray(image_chw, dtype=np.float64)
    c, h, w = x.shape
    b = max(1, int(round(border * min(h, w))))
    frame = np.ones((h, w), dtype=bool)
    frame[b : h - b, b : w - b] = False
    out = np.empty(c)
    for k in range(c):
        for values in (x[k][frame], x[k].ravel()):
            values = values[np.isfinite(values)]
            mad = (
                MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))) if values.size else 0.0
            )
            if mad > 0:
                break
        if not mad > 0:
            spread = float(np.nanstd(x[k]))
            mad = 1e-3 * spread if spread > 0 else 1.0
        out[k] = mad
    return out


def load_target(source, bundle) -> tuple[np.ndarray, dict]:
    """The first image ``source`` holds (any input the data layer reads), as ``C×H×W``
    float32 at the bundle's image size, with what was done (``resized``, ``bands``,
    ``weights`` when the file had an inverse variance)."""
    from galforge.data import load_images
    from galforge.data.transforms import resize

    images = load_images(str(source))
    if len(images.images) == 0:
        raise DataError(f"{source}: no image to project")
    x = np.asarray(images.images[0], dtype=np.float32)
    c, h, w = bundle.image_shape
    info = {
        "source": str(source),
        "bands": list(images.bands),
        "units": images.units,
        "shape": list(x.shape),
    }
    if x.shape[0] != c:
        raise DataError(
            f"{source}: the image has {x.shape[0]} bands {list(images.bands)}; the "
            f"model makes {c} ({', '.join(bundle.bands)})"
        )
    weights = None if images.weights is None else np.asarray(images.weights[0], np.float32)
    if x.shape[1:] != (h, w):
        method = "area" if x.shape[1] >= h and x.shape[2] >= w else "bicubic"
        x = resize(x[None], (h, w), method=method)[0]
        weights = None
        info["resized"] = {"from": info["shape"][1:], "to": [h, w], "method": method}
    x = np.where(np.isfinite(x), x, np.nanmedian(x, axis=(1, 2), keepdims=True))
    info["weights"] = weights is not None
    return np.ascontiguousarray(x, dtype=np.float32), {**info, "_weights": weights}


def _encoder_view(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Differentiable copy of :func:`galforge.evaluation.features.encoder_inputs`."""
    from galforge.evaluation.features import ASINH_SOFTENING, ENCODER_SIZE

    x = images.mean(dim=1, keepdim=True)
    s = ENCODER_SIZE
    if x.shape[-2:] != (s, s):
        if x.shape[-1] >= s and x.shape[-2] >= s:
            x = F.interpolate(x, size=(s, s), mode="area")
        else:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    return torch.asinh(x / float(scale) / ASINH_SOFTENING) * ASINH_SOFTENING * 4.0


def _noise_regularisation(maps: list[torch.Tensor]) -> torch.Tensor:
    """Autocorrelation of the noise maps at one-pixel shifts over a pyramid of scales
    (keeps optimised noise maps noise-like instead of absorbing the galaxy)."""
    total = torch.zeros(())
    for m in maps:
        x = m
        while True:
            total = total + (x * torch.roll(x, 1, dims=3)).mean().square()
            total = total + (x * torch.roll(x, 1, dims=2)).mean().square()
            if min(x.shape[-2:]) <= 8:
                break
            x = F.avg_pool2d(x, 2) * 2.0
    return total


@dataclass
class Projection:
    """What :func:`project` found: ``w`` (``w_dim`` or ``num_ws×w_dim`` with w+), the
    reconstruction and residual (target − reconstruction) in physical units, the per-band
    noise ``sigma`` and the figures of the fit."""

    w: np.ndarray
    target: np.ndarray
    reconstruction: np.ndarray
    residual: np.ndarray
    sigma: np.ndarray
    chi2_per_pixel: float
    rmse: float
    rmse_per_band: list[float]
    feature_distance: float
    noise: list[np.ndarray] | None
    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def project(
    bundle,
    target,
    *,
    steps: int = 1000,
    wplus: bool = False,
    noise: bool = False,
    noise_mode: str | None = None,
    seed: int = 0,
    lr: float = 0.1,
    feature_weight: float = 1.0,
    noise_weight: float = 1e3,
    sigma=None,
    encoder=None,
    progress: bool | None = None,
    log_every: int = 50,
) -> Projection:
    """Find the w whose image best matches ``target`` (``C×H×W`` physical units, or anything
    :func:`load_target` reads).

    Loss = χ² per pixel (``((G(w) − target) / σ_band)²``, σ the robust sky estimate of
    :func:`robust_sigma` or the file's inverse variance) + ``feature_weight`` × the relative
    squared distance of galaxy-encoder features. Adam on w from ``w_avg`` (learning rate
    ``lr``, warm-up and cosine ramp-down, w jittered early on as in Karras et al. 2020,
    appendix D); ``wplus`` optimises one w per layer; ``noise`` optimises the noise maps too
    (from the ``noise_mode`` maps of ``seed``, regularised toward white noise). Every random
    draw is keyed by ``seed``: the same inputs give the same projection.
    """
    from tqdm.auto import tqdm

    from galforge.evaluation.features import load_galaxy_encoder, set_scale

    g = bundle.generator
    require(g, INTERMEDIATE, "galforge project")
    seed = check_seed(seed)
    if isinstance(steps, bool) or int(steps) < 1:
        raise ConfigError(f"--steps {steps}: must be at least 1")
    if noise:
        require(g, NOISE, "--noise")
    info: dict = {}
    if isinstance(target, (str, Path)):
        target, info = load_target(target, bundle)
    target = np.asarray(target, dtype=np.float32)
    if target.shape != tuple(bundle.image_shape):
        raise DataError(
            f"target of shape {target.shape}: the model makes {tuple(bundle.image_shape)}"
        )
    weights = info.pop("_weights", None)
    if sigma is not None:
        sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (target.shape[0],)).copy()
    else:
        sig = robust_sigma(target)
    if weights is not None and np.all(weights > 0):
        inv_var = torch.as_tensor(weights, dtype=torch.float32)[None]
        info["noise_estimate"] = "inverse variance of the file"
    else:
        inv_var = torch.as_tensor(1.0 / sig**2, dtype=torch.float32)[None, :, None, None]
        info["noise_estimate"] = "robust sky MAD per band"
    dev = bundle.device
    inv_var = inv_var.to(dev)
    tgt = torch.as_tensor(target)[None].to(dev)
    lo, hi = bundle.output_range
    norm = bundle.normalizer

    encoder = (encoder or load_galaxy_encoder()).to(dev).eval()
    scale = set_scale(target[None])
    with torch.no_grad():
        f_target = encoder(_encoder_view(tgt, scale))
        f_norm = f_target.square().sum().clamp_min(1e-12)

    frozen = [p for p in list(g.parameters()) + list(encoder.parameters()) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            w_avg = torch.as_tensor(g.mean_w(), dtype=torch.float32).to(dev)
            z = sample_latents(bundle.latent_sample_shape, 512, seed).to(dev)
            w_std = float((g.mapping(z) - w_avg).square().sum(dim=1).mean().sqrt())
        num_ws = int(g.num_ws)
        w0 = w_avg[None, None].repeat(1, num_ws, 1) if wplus else w_avg[None].clone()
        w_opt = w0.clone().requires_grad_(True)
        params = [w_opt]
        maps = bundle.noise(1, seed, mode=noise_mode)
        if maps is not None:
            maps = [m.clone().to(dev) for m in maps]
            if noise:
                for m in maps:
                    m.requires_grad_(True)
                params += maps
        opt = torch.optim.Adam(params, lr=float(lr), betas=(0.9, 0.999))
        history: list[dict] = []
        n_steps = int(steps)

        def render(w):
            kw = {} if maps is None else {"noise": maps}
            out = g.synthesis(w, **kw).float().clamp(lo, hi)
            return norm.inverse(out)

        def losses(img):
            chi2 = ((img - tgt).square() * inv_var).mean()
            feat = (encoder(_encoder_view(img, scale)) - f_target).square().sum() / f_norm
            return chi2, feat

        bar = tqdm(
            range(n_steps),
            desc="projecting",
            unit="step",
            disable=(None if progress is None else not progress),
        )
        for step in bar:
            t = step / n_steps
            down = min(1.0, (1.0 - t) / 0.25)
            rate = float(lr) * (0.5 - 0.5 * math.cos(math.pi * down)) * min(1.0, (t + 0.01) / 0.05)
            rate = max(rate, float(lr) * 1e-3)
            for group in opt.param_groups:
                group["lr"] = rate
            jitter_scale = w_std * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
            gen = step_generator(seed, "project", step)
            jitter = torch.randn(w_opt.shape, generator=gen).to(dev) * jitter_scale
            chi2, feat = losses(render(w_opt + jitter))
            loss = chi2 + float(feature_weight) * feat
            if noise:
                loss = loss + float(noise_weight) * _noise_regularisation(maps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if noise:
                with torch.no_grad():
                    for m in maps:
                        m.sub_(m.mean()).div_(m.square().mean().sqrt().clamp_min(1e-8))
            if step % max(1, int(log_every)) == 0 or step == n_steps - 1:
                history.append(
                    {
                        "step": step,
                        "loss": loss.item(),
                        "chi2_per_pixel": chi2.item(),
                        "feature_distance": feat.item(),
                        "lr": rate,
                    }
                )
                bar.set_postfix(chi2=f"{chi2.item():.3g}")
        bar.close()
        with torch.no_grad():
            recon_t = render(w_opt)
            chi2, feat = losses(recon_t)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    recon = recon_t[0].float().cpu().numpy()
    residual = target - recon
    per_band = np.sqrt(np.mean(residual.astype(np.float64) ** 2, axis=(1, 2)))
    settings = {
        "steps": n_steps,
        "wplus": bool(wplus),
        "noise": bool(noise),
        "noise_mode": bundle.noise_mode(noise_mode),
        "seed": seed,
        "lr": float(lr),
        "feature_weight": float(feature_weight),
        "noise_weight": float(noise_weight),
        "w_std": w_std,
        **info,
    }
    return Projection(
        w=w_opt.detach()[0].cpu().numpy().astype(np.float32),
        target=target,
        reconstruction=recon,
        residual=residual.astype(np.float32),
        sigma=np.asarray(sig),
        chi2_per_pixel=float(chi2),
        rmse=float(np.sqrt(np.mean(residual.astype(np.float64) ** 2))),
        rmse_per_band=[float(v) for v in per_band],
        feature_distance=float(feat),
        noise=None if maps is None else [m.detach().cpu().numpy()[0, 0] for m in maps],
        history=history,
        settings=settings,
    )


def _fits_bytes(image_chw: np.ndarray, bundle, what: str) -> bytes:
    from astropy.io import fits

    from galforge import fitsheader

    header = fits.Header()
    fitsheader.unit_cards(header, bundle.units)
    fitsheader.band_cards(header, bundle.bands)
    header["BUNDLEID"] = (str(bundle.bundle_id), "id of the generator bundle (content hash)")
    header["MODEL"] = (str(bundle.family), "generator family")
    header["CREATOR"] = (f"galforge {__version__}", "software version that wrote this file")
    fitsheader.date_cards(header, getattr(bundle, "created", None))
    fitsheader.zeropoint_card(header, getattr(bundle, "zeropoint", None))
    header.add_comment(what)
    fitsheader.wcs_cards(
        header, image_chw.shape[-2], image_chw.shape[-1], getattr(bundle, "pixel_scale", None)
    )
    data = image_chw[0] if image_chw.shape[0] == 1 else image_chw
    buffer = io.BytesIO()
    fits.PrimaryHDU(data=np.ascontiguousarray(data, dtype=np.float32), header=header).writeto(
        buffer
    )
    return buffer.getvalue()


#: the files :func:`write_projection` writes
PROJECTION_FILES = (
    "projected_w.npy",
    "reconstruction.fits",
    "residual.fits",
    "projection.json",
    "projection.png",
    "projected_noise.npz",
)


def write_projection(result: Projection, bundle, out_dir) -> dict[str, Path]:
    """Write ``projected_w.npy``, ``reconstruction.fits``, ``residual.fits``,
    ``projection.json`` (``chi2_per_pixel``, ``rmse``, …), ``projection.png`` (target,
    reconstruction, residual on one stretch) and, when noise maps were used,
    ``projected_noise.npz``; return the paths."""
    from galforge.data.display import save_grid
    from galforge.fileio import atomic_write_bytes, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    buf = io.BytesIO()
    np.save(buf, result.w, allow_pickle=False)
    paths["w"] = atomic_write_bytes(out / "projected_w.npy", buf.getvalue())
    paths["reconstruction"] = atomic_write_bytes(
        out / "reconstruction.fits",
        _fits_bytes(
            result.reconstruction, bundle, "Projection of a target: the generator's image of w."
        ),
    )
    paths["residual"] = atomic_write_bytes(
        out / "residual.fits",
        _fits_bytes(result.residual, bundle, "Target minus reconstruction (physical units)."),
    )
    if result.noise is not None:
        buf = io.BytesIO()
        np.savez(buf, **{f"noise{k:02d}": m for k, m in enumerate(result.noise)})
        paths["noise"] = atomic_write_bytes(out / "projected_noise.npz", buf.getvalue())
    paths["png"] = save_grid(
        out / "projection.png",
        np.stack([result.target, result.reconstruction, result.residual]),
        bundle.bands,
        nrow=3,
        units=bundle.units,
        title="target | reconstruction | residual",
    )
    summary = {
        "chi2_per_pixel": result.chi2_per_pixel,
        "rmse": result.rmse,
        "rmse_per_band": dict(zip(bundle.bands, result.rmse_per_band, strict=True)),
        "sigma_per_band": dict(zip(bundle.bands, [float(s) for s in result.sigma], strict=True)),
        "feature_distance": result.feature_distance,
        "units": bundle.units,
        "bundle_id": bundle.bundle_id,
        "family": bundle.family,
        "w_shape": list(result.w.shape),
        "settings": result.settings,
        "history": result.history,
        "galforge_version": __version__,
    }
    paths["json"] = atomic_write_json(
        out / "projection.json", json.loads(json.dumps(summary, default=float))
    )
    return paths
