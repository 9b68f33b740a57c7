"""Reproduce ``pretrained:galsim-dcgan64-psf``: a DCGAN-64 with a physical forward model,
conditioned on flux and size, on GalSim galaxies.

    python scripts/zoo/galsim-dcgan64-psf.py            # train (resumes), evaluate, ship
    python scripts/zoo/galsim-dcgan64-psf.py --steps 5 --n-train 64 --no-ship   # smoke test

Training data: 8192 ``builtin:galsim`` galaxies (g, r, i; 64×64; counts; seed 1), asinh
stretch, the same population as ``galsim-dcgan64``.  The ``cpu`` config (sky noise, EMA of G
0.999, D's radial-profile, minibatch-std and size-and-ellipticity paths) with the forward
model of the data's own PSF (``--psf auto``: the 0.7" Moffat, beta 3.5, at 0.2"/px that
``builtin:galsim`` draws with): G draws each galaxy before the PSF, a fixed convolution with
the rendered PSF and the learned sky noise make what D sees.  Both networks are conditioned on
the truth catalogue's ``flux`` (counts, reference band r) and ``hlr`` (arcsec), standardised in
log10; D is a projection discriminator, and G's condition-consistency loss
(``model.condition_loss=1``) asks each pre-PSF galaxy for the flux and the half-light radius it
was drawn with (total counts in r; half its r light inside the elliptical aperture of
circularised radius ``hlr``), so the conditions are obeyed and not only hinted at.  4000 steps
of batch 32, seed 0, one CPU thread, from scratch (``galsim-dcgan64`` cannot initialise it:
its first layer takes no conditions); about 1.2 CPU-seconds a step, within 2 CPU hours.
Evaluation as for ``galsim-dcgan64``: 500 held-out galaxies (seed 2026), their conditions drawn
from the training catalogue, against a second real draw (seed 2027).  The shipped bundle re-observes its galaxies through any PSF and pixel scale
(``galforge generate --psf``) and gives GalSim objects (``galforge.galsim``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_common as zoo  # noqa: E402

NAME = "galsim-dcgan64-psf"
DATA = "builtin:galsim?n={n}&size=64&seed=1"
HELD_OUT = "builtin:galsim?n={n}&size=64&seed=2026"
REFERENCE = "builtin:galsim?n={n}&size=64&seed=2027"
SETS = [*zoo.GALSIM_DCGAN64_SETS, "model.condition_loss=1"]
EXTRA = ["--psf", "auto", "--condition-columns", "flux,hlr"]

#: written after the evaluation and the sample grids have been looked at
NOTES = (
    "A DCGAN-64 (cpu config) with a physical forward model (the data's 0.7\" Moffat PSF "
    "and pixel response applied to the galaxy G draws, then learned sky noise), "
    "conditioned on flux and half-light radius. Not yet trained and evaluated: this card "
    "is rewritten by the script when the model is shipped."
)


def more(ap) -> None:
    ap.add_argument("--n-train", type=int, default=8192, help="training galaxies")
    ap.add_argument(
        "--no-ship",
        action="store_true",
        help="train and export only (no evaluation, nothing written to the zoo)",
    )


def main() -> None:
    args, run = zoo.parse_args(__doc__, f"{NAME}-v2", 4000, more=more)
    data = DATA.format(n=args.n_train)
    if not args.no_train:
        zoo.train(run, data, "dcgan64", args.steps, 32, 0, SETS, EXTRA)
    if args.no_ship:
        zoo.cli(["export", str(run), "--overwrite"])
        return
    training = {
        **zoo.training_time(run),
        "batch": 32,
        "seed": 0,
        "threads": 1,
        "settings": SETS + EXTRA,
    }
    card = zoo.card(
        NAME,
        "DCGAN-64 with a PSF forward model, conditioned on flux and hlr, on "
        "GalSim bulge+disk galaxies (g, r, i)",
        "dcgan",
        "dcgan64",
        "cpu",
        data,
        "gri",
        "counts",
        [64, 64],
        training,
        NOTES,
        psf="moffat:fwhm=0.7,beta=3.5",
        pixel_scale=0.2,
        conditions=["flux", "hlr"],
    )
    zoo.ship_galaxies(
        NAME,
        run,
        card,
        HELD_OUT,
        REFERENCE,
        n=args.n_eval,
        options=["--upscale", "0", "--workers", "2"],
    )


if __name__ == "__main__":
    main()
