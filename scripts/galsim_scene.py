"""A GalSim scene of galforge galaxies beside GalSim's own parametric galaxies.

    python scripts/galsim_scene.py pretrained:galsim-dcgan64-psf --out docs/galsim_scene.png

The model must draw galaxies before the PSF (trained with ``--psf``).  The scene is one band
(``--band``, default r) of a survey-like image: ``--size`` pixels of ``--pixel-scale`` arcsec
seen through a Moffat PSF of ``--fwhm`` arcsec, with Gaussian sky noise of ``--sigma``
counts.  The left half holds galforge galaxies (``galforge.galsim.sample_objects``: pre-PSF
InterpolatedImages, randomly rotated and sheared by ``--shear``), the right half GalSim's
parametric bulge + disk galaxies of the same flux and size ranges (those of ``builtin:galsim``).
Every object goes through the same PSF and pixel grid, which is the point: a pipeline can
not tell them apart by how they were made.  Writes the PNG (asinh stretch, the dividing line
marked) and the FITS image beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import galsim
import numpy as np


def parametric(rng: np.random.Generator, flux: float, hlr: float) -> galsim.GSObject:
    """A bulge + disk galaxy as ``builtin:galsim`` draws them (reference band)."""
    bulge_frac = rng.uniform(0.0, 0.6)
    q = rng.uniform(0.2, 1.0)
    beta = rng.uniform(0, np.pi) * galsim.radians
    disk = galsim.Exponential(half_light_radius=hlr, flux=flux * (1 - bulge_frac))
    bulge = galsim.DeVaucouleurs(half_light_radius=0.5 * hlr, flux=flux * bulge_frac)
    return galsim.Add([disk, bulge]).shear(q=q, beta=beta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="bundle, run folder or pretrained:NAME trained with --psf")
    ap.add_argument("--out", type=Path, default=Path("galsim_scene.png"))
    ap.add_argument("--n", type=int, default=12, help="galaxies of each kind")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--pixel-scale", type=float, default=0.26)
    ap.add_argument("--fwhm", type=float, default=0.9)
    ap.add_argument("--sigma", type=float, default=5.0)
    ap.add_argument("--shear", type=float, default=0.0, help="g1 applied to every galaxy")
    ap.add_argument("--band", default="r")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from galforge.galsim import sample_objects

    rng = np.random.default_rng(args.seed)
    objects = sample_objects(args.model, args.n, seed=args.seed)
    if args.band not in objects[0]:
        raise SystemExit(f"--band {args.band}: the model's bands are {', '.join(objects[0])}")
    psf = galsim.Moffat(beta=3.5, fwhm=args.fwhm)
    scene = galsim.ImageF(args.size, args.size, scale=args.pixel_scale)
    half = args.size // 2
    margin = 24

    def place(obj: galsim.GSObject, left: bool) -> None:
        x = rng.uniform(margin, half - margin) + (0 if left else half)
        y = rng.uniform(margin, args.size - margin)
        obj = obj.rotate(rng.uniform(0, 2 * np.pi) * galsim.radians)
        if args.shear:
            obj = obj.shear(g1=args.shear, g2=0.0)
        stamp = galsim.Convolve(obj, psf).drawImage(
            nx=64, ny=64, scale=args.pixel_scale, center=galsim.PositionD(x, y)
        )
        bounds = stamp.bounds & scene.bounds
        scene[bounds] += stamp[bounds]

    for galaxy in objects:
        place(galaxy[args.band], left=True)
    for _ in range(args.n):
        flux = float(np.exp(rng.uniform(np.log(1e3), np.log(1e5))))
        place(parametric(rng, flux, rng.uniform(0.3, 1.2)), left=False)
    scene.addNoise(galsim.GaussianNoise(galsim.BaseDeviate(args.seed + 1), sigma=args.sigma))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = scene.array
    view = np.arcsinh(arr / (3 * args.sigma))
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    ax.imshow(view, origin="lower", cmap="gray_r", vmin=-1, vmax=np.percentile(view, 99.8))
    ax.axvline(half - 0.5, color="tab:red", lw=0.8, ls="--")
    ax.set_title(
        f"left: galforge ({args.model}); right: GalSim bulge+disk\n"
        f'Moffat {args.fwhm}" PSF, {args.pixel_scale}"/px, sky sigma {args.sigma:g}',
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, bbox_inches="tight")
    scene.write(str(args.out.with_suffix(".fits")))
    print(f"wrote {args.out} and {args.out.with_suffix('.fits')}")


if __name__ == "__main__":
    main()
