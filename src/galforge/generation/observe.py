"""Galaxies before the telescope, and observed through another one.

A bundle whose generator has the ``prepsf`` capability (a physical forward model,
:mod:`galforge.models.forward`) draws each galaxy before the PSF, in physical units on the
training data's pixel grid (:func:`prepsf_galaxies`).  :func:`reobserve` renders those
galaxies as another instrument sees them: GalSim resamples each band (an
``InterpolatedImage`` at the model's pixel scale), convolves it with the new PSF and draws it
at the new pixel scale on a stamp of the same size, pixel response included.

Noise (``noise``): ``"matched"`` (default) gives each galaxy the matched-filter S/N
(``sqrt(ΣI²)/σ`` per band) it has in the model's own observation — the learned sky level
of its latent against its noiseless stamp through the training PSF — so the re-observed
population keeps the training population's S/N; ``("sigma", σ)`` a fixed per-pixel σ in
physical units; ``"none"`` none.  Every draw is seeded per galaxy from ``(seed, index)``.

Conditional bundles asked for galaxies without conditions draw them from the training
catalogue's sample stored in the generator's spec (:func:`draw_conditions`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galforge.errors import ConfigError
from galforge.models.capabilities import CONDITIONAL, PREPSF, require

__all__ = [
    "Observation",
    "draw_conditions",
    "parse_noise",
    "prepsf_galaxies",
    "read_condition_table",
    "reobserve",
    "write_observed",
]

CATALOG = "catalog.csv"


def draw_conditions(bundle, n: int, seed: int = 0, *, start: int = 0) -> np.ndarray | None:
    """``n×K`` conditions for samples ``start..start+n-1`` drawn from the training catalogue's
    sample (conditional bundles that carry one; None otherwise). Row ``i`` depends only on
    ``(seed, i)``."""
    if CONDITIONAL not in bundle.capabilities:
        return None
    table = np.asarray(getattr(bundle.generator, "condition_sample", None) or [], np.float32)
    if table.ndim != 2 or not len(table):
        return None
    rows = [
        np.random.default_rng([int(seed), int(start + i), 0xC0D]).integers(len(table))
        for i in range(int(n))
    ]
    return table[np.asarray(rows, dtype=np.int64)].reshape(int(n), table.shape[1])


def _conditions(bundle, conditions, n: int, seed: int, start: int) -> np.ndarray | None:
    if conditions is None:
        drawn = draw_conditions(bundle, n, seed, start=start)
        if drawn is None and CONDITIONAL in bundle.capabilities:
            raise ConfigError(
                f"the {bundle.family!r} generator needs conditions "
                f"({', '.join(bundle.condition_names)}); give --condition"
            )
        return drawn
    return bundle.conditions(conditions, n)


def prepsf_galaxies(
    bundle, n: int, seed: int = 0, *, start: int = 0, conditions=None, batch: int = 64
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(scenes, conditions, snr)``: ``n`` galaxies before the PSF (float32 ``N×C×H×W``,
    physical units, on the scene's grid: ``psf_info()["scene_pixel_scale"]``, the data's
    pixel scale unless the model oversamples), the conditions used (None for unconditional
    bundles) and each galaxy's matched-filter S/N per band in the model's own observation
    (``N×C``; NaN where the generator reports no noise level). Sample ``i`` of a seed is the
    galaxy :meth:`Bundle.sample` draws for it."""
    require(bundle.generator, PREPSF, "drawing galaxies before the PSF (--psf)")
    from galforge.models.forward import fft_convolve

    g = bundle.generator
    n = int(n)
    cond = _conditions(bundle, conditions, n, seed, start)
    kernel = torch.as_tensor(g.psf_info()["kernel"], dtype=torch.float32).to(bundle.device)
    observe = getattr(g, "observe", None)
    if not callable(observe):

        def observe(scene):
            return fft_convolve(scene, kernel)

    scenes = None
    snr = np.full((n, bundle.image_shape[0]), np.nan, dtype=np.float64)
    sigma_of = getattr(g, "noise_sigma", None)
    for s in range(0, n, int(batch)):
        m = min(int(batch), n - s)
        z = bundle.latent(m, seed, start=start + s).to(bundle.device)
        args = () if cond is None else (torch.as_tensor(cond[s : s + m]).to(bundle.device),)
        with torch.inference_mode():
            scene = g.scene(z, *args).float()
            if callable(sigma_of):
                observed = observe(scene).double()
                sigma = sigma_of(z).double()
                snr[s : s + m] = (observed.square().sum(dim=(2, 3)).sqrt() / sigma).cpu().numpy()
        if scenes is None:
            scenes = np.empty((n, *scene.shape[1:]), dtype=np.float32)
        scenes[s : s + m] = scene.cpu().numpy()
    if scenes is None:
        scenes = np.empty((0, *bundle.image_shape), dtype=np.float32)
    return scenes, cond, snr


def parse_noise(noise: str | None, noise_mode: str | None = None):
    """``"matched"``, ``"none"`` or ``("sigma", σ)`` from ``--noise`` and ``--noise-mode``."""
    mode = None if noise_mode is None else str(noise_mode).lower()
    if mode not in (None, "random", "none"):
        raise ConfigError(
            f"--noise-mode {noise_mode!r}: with --psf use random (noise "
            "matched to the training S/N, or --noise sigma=...) or none"
        )
    if noise is not None:
        key, eq, value = str(noise).partition("=")
        try:
            sigma = float(value)
        except ValueError:
            eq = ""
        if key.strip().lower() != "sigma" or not eq or not (math.isfinite(sigma) and sigma >= 0):
            raise ConfigError(
                f"--noise {noise!r}: write sigma=VALUE (per-pixel σ in the model's "
                "physical units, >= 0)"
            )
        if mode == "none":
            raise ConfigError("--noise and --noise-mode none both given: choose one")
        return ("sigma", sigma)
    return "none" if mode == "none" else "matched"


@dataclass
class Observation:
    """Galaxies re-observed: ``images`` (``N×C×H×W``, physical units, with noise),
    ``noiseless`` (the same without noise), ``sigma`` (``N×C`` per-pixel noise σ), the
    ``conditions`` used, the new ``pixel_scale`` and ``psf`` descriptions."""

    images: np.ndarray
    noiseless: np.ndarray
    sigma: np.ndarray
    conditions: np.ndarray | None
    pixel_scale: float
    psf: list[str]


def reobserve(
    bundle,
    n: int,
    seed: int = 0,
    *,
    psf,
    pixel_scale: float | None = None,
    noise="matched",
    conditions=None,
    start: int = 0,
    batch: int = 64,
) -> Observation:
    """``n`` galaxies of ``bundle`` as an instrument with ``psf`` (a description, see
    :mod:`galforge.data.psf`) and ``pixel_scale`` (arcsec; None: the model's) sees them, on
    stamps of the model's size. ``noise``: see the module docstring."""
    import galsim

    from galforge.data.psf import parse_psf, psf_object

    require(bundle.generator, PREPSF, "--psf (observing through another PSF)")
    info = bundle.generator.psf_info()
    scale_in = float(info.get("scene_pixel_scale", info["pixel_scale"]))
    scale = float(info["pixel_scale"]) if pixel_scale is None else float(pixel_scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"--pixel-scale {pixel_scale}: must be > 0 (arcsec per pixel)")
    psfs = parse_psf(psf, bundle.bands, "--psf")
    scenes, cond, snr = prepsf_galaxies(
        bundle, n, seed, start=start, conditions=conditions, batch=batch
    )
    n, c = scenes.shape[:2]
    h, w = bundle.image_shape[-2:]  # the stamps keep the observation's size
    objects = [psf_object(p, scale, b, c) for b, p in enumerate(psfs)]
    noiseless = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        for b in range(c):
            gal = galsim.InterpolatedImage(
                galsim.ImageD(scenes[i, b].astype(np.float64), scale=scale_in)
            )
            obj, effective = objects[b]
            img = galsim.Convolve(gal, obj).drawImage(
                nx=w, ny=h, scale=scale, method="no_pixel" if effective else "auto"
            )
            noiseless[i, b] = img.array
    sigma = np.zeros((n, c), dtype=np.float64)
    if noise == "matched":
        power = np.sqrt(np.square(noiseless.astype(np.float64)).sum(axis=(2, 3)))
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = np.where(np.isfinite(snr) & (snr > 0), power / snr, 0.0)
    elif isinstance(noise, tuple) and noise[0] == "sigma":
        sigma[:] = float(noise[1])
    elif noise != "none":
        raise ConfigError(f"noise {noise!r}: use matched, none or ('sigma', value)")
    images = noiseless.copy()
    for i in range(n):
        if sigma[i].any():
            rng = np.random.default_rng([int(seed), int(start + i), 0x0B5])
            images[i] += (rng.standard_normal((c, h, w)) * sigma[i][:, None, None]).astype(
                np.float32
            )
    return Observation(images, noiseless, sigma, cond, scale, [p.describe() for p in psfs])


def _measure(stamp: np.ndarray, scale: float) -> float:
    """Half-light radius (arcsec) of a noiseless stamp about its centre of light; NaN when
    it holds no positive light."""
    import galsim

    arr = np.clip(stamp.astype(np.float64), 0, None)
    total = arr.sum()
    if not total > 0:
        return float("nan")
    y, x = np.indices(arr.shape)
    cx, cy = (arr * x).sum() / total, (arr * y).sum() / total
    img = galsim.ImageD(arr, scale=scale)
    try:
        centre = galsim.PositionD(cx + img.xmin, cy + img.ymin)
        return float(img.calculateHLR(center=centre, flux=total))
    except (galsim.GalSimError, ValueError):
        return float("nan")


def _card_text(psfs) -> str:
    """The PSF descriptions of the bands as one FITS card value (one when all agree)."""
    return ";".join(dict.fromkeys(str(p) for p in psfs))[:50]


def write_observed(
    bundle,
    out,
    n: int,
    seed: int = 0,
    *,
    psf,
    pixel_scale=None,
    noise="matched",
    conditions=None,
    batch: int = 64,
    overwrite: bool = False,
):
    """Re-observe ``n`` galaxies (:func:`reobserve`) and write one FITS per galaxy
    (``galaxy_NNNNNN.fits``, the new pixel scale and PSF in the header), a ``grid.png`` and
    ``catalog.csv`` and its ECSV twin with units (per galaxy: ``index``, the conditions by name, the measured noiseless
    flux per band ``meas_flux_<band>``, the half-light radius ``meas_hlr`` (arcsec) in the
    reference band, ``noise_sigma_<band>`` and the matched-filter ``snr_<band>``)
    into the folder ``out``, owned as every galforge output is (:mod:`galforge.outputs`)."""
    from galforge import outputs
    from galforge.generation.writers import (
        GenerationResult,
        sample_name,
        write_fits,
        write_grid,
    )

    obs = reobserve(
        bundle,
        n,
        seed,
        psf=psf,
        pixel_scale=pixel_scale,
        noise=noise,
        conditions=conditions,
        batch=batch,
    )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; pass a folder for the generated galaxies")
    bands = list(bundle.bands)
    ref = bands.index("r") if "r" in bands else len(bands) // 2
    names = list(bundle.condition_names)
    with outputs.claim_folder(out, overwrite=overwrite, command="generate"):
        result = GenerationResult(out_dir=out, format="fits", n=int(n))
        width = max(6, len(str(int(n) - 1)))
        rows = []
        for i in range(int(n)):
            cards = {
                "PSF": (_card_text(obs.psf), "PSF observed through"),
                "PSFTRAIN": (
                    _card_text(bundle.generator.psf_info()["psf"]),
                    "PSF of the training data",
                ),
            }
            for b, band in enumerate(bands):
                cards[f"NOISE{b + 1}"] = (float(obs.sigma[i, b]), f"noise sigma, {band}")
            for k, name in enumerate(names):
                cards[f"CNAME{k + 1}"] = (name, "condition name")
                cards[f"COND{k + 1}"] = (float(obs.conditions[i, k]), "condition value")
            result.files.append(
                write_fits(
                    out / sample_name(i, "fits", width),
                    obs.images[i],
                    bands=bands,
                    units=bundle.units,
                    seed=seed,
                    index=i,
                    bundle_id=bundle.bundle_id,
                    family=bundle.family,
                    date=bundle.created or None,
                    extra=cards,
                    pixel_scale=obs.pixel_scale,
                    zeropoint=bundle.zeropoint,
                )
            )
            flux = obs.noiseless[i].astype(np.float64).sum(axis=(1, 2))
            power = np.sqrt(np.square(obs.noiseless[i].astype(np.float64)).sum(axis=(1, 2)))
            row = {
                "index": i,
                **{name: str(np.float32(obs.conditions[i, k])) for k, name in enumerate(names)},
            }
            row.update({f"meas_flux_{band}": float(flux[b]) for b, band in enumerate(bands)})
            row["meas_hlr"] = _measure(obs.noiseless[i, ref], obs.pixel_scale)
            row.update(
                {f"noise_sigma_{band}": float(obs.sigma[i, b]) for b, band in enumerate(bands)}
            )
            row.update(
                {
                    f"snr_{band}": (
                        float(power[b] / obs.sigma[i, b]) if obs.sigma[i, b] > 0 else float("inf")
                    )
                    for b, band in enumerate(bands)
                }
            )
            rows.append(row)
        with open(out / CATALOG, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["index"])
            writer.writeheader()
            writer.writerows(rows)
        if rows:  # the ECSV twin, with units (galforge.data.tables)
            from galforge.data.tables import ecsv_path, write_ecsv
            from galforge.fitsheader import fits_unit

            pix = fits_unit(bundle.units)[0] or ""
            typed = [{k: (float(v) if k in names else v) for k, v in row.items()} for row in rows]
            write_ecsv(
                ecsv_path(out / CATALOG),
                typed,
                pixel_units=bundle.units,
                units={
                    "index": "",
                    "hlr": "arcsec",
                    "meas_hlr": "arcsec",
                    **{f"snr_{b}": "" for b in bands},
                    **{f"{k}_{b}": pix for b in bands for k in ("meas_flux", "noise_sigma")},
                },
                meta={
                    "psf": obs.psf,
                    "pixel_scale_arcsec": obs.pixel_scale,
                    "seed": int(seed),
                    "bundle_id": bundle.bundle_id,
                },
            )
        result.index = out / CATALOG
        preview = obs.images[: min(int(n), 64)]
        if len(preview):
            result.grid = write_grid(
                out / "grid.png",
                preview,
                bundle.bands,
                bundle.units,
                title=f"{bundle.family} {bundle.bundle_id} seed={seed} through "
                f'{";".join(obs.psf)} at {obs.pixel_scale:g}"/px',
            )
    return result


def read_condition_table(path, names) -> np.ndarray:
    """``N×K`` conditions from a CSV file with a header row naming (at least) ``names``: one
    galaxy per row (``--conditions``)."""
    path = Path(path)
    names = list(names)
    if not names:
        raise ConfigError(f"--conditions {path}: this generator takes no conditions")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(
            f"--conditions {path}: cannot read the table ({exc.strerror}); give "
            "a CSV file with a header row"
        ) from None
    if not rows:
        raise ConfigError(
            f"--conditions {path}: no rows; give one galaxy per row under a "
            f"header naming {', '.join(names)}"
        )
    missing = [k for k in names if k not in rows[0]]
    if missing:
        raise ConfigError(
            f"--conditions {path}: no column {', '.join(missing)}; the header "
            f"must name {', '.join(names)}"
        )
    out = np.empty((len(rows), len(names)), dtype=np.float32)
    for i, row in enumerate(rows):
        for k, name in enumerate(names):
            try:
                out[i, k] = float(row[name])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"--conditions {path}: row {i + 2} has no number in column "
                    f"{name!r} (got {row[name]!r})"
                ) from None
            if not np.isfinite(out[i, k]):
                raise ConfigError(f"--conditions {path}: row {i + 2}, {name!r} is not finite")
    return out
