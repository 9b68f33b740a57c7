"""Reproduce ``pretrained:galsim-dcgan64``: the DCGAN-64 (``cpu`` config) on GalSim galaxies.

    python scripts/zoo/galsim-dcgan64.py            # train (resumes), evaluate, ship

Training data: 8192 ``builtin:galsim`` galaxies (g, r, i; 64×64; counts; seed 1), asinh
stretch.  One run of 5000 steps (seed 0, batch 32) of the ``cpu`` config — sky noise, EMA of
G with decay 0.999 from the first step, and D's three side paths: the radial profile
(``model.d_profile``), a minibatch standard deviation over groups of four
(``model.d_mbstd_group=4``) and the windowed size and ellipticity (``model.d_moments``) —
with the generator's noiseless scene band-limited by a Gaussian of σ = 1 pixel
(``model.scene_blur=1.0``; the data's PSF has σ ≈ 1.5 px: 0.7" FWHM at 0.2"/px).  5000
steps, not more: continued to 8000 steps the same recipe without the band limit grew
too-concentrated light profiles; the step count and the band limit were chosen on a
validation draw (seed 2028), never on the held-out one.  The shipped weights are the EMA
generator with batch-norm statistics of its own.  Held-out evaluation: 500 galaxies of the
same population drawn with seed 2026 (never used in training), and as reference a second
real draw (seed 2027) against the same held-out set.  One CPU thread; a run folder outside
the repository (``--runs``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_common as zoo  # noqa: E402

NAME = "galsim-dcgan64"
DATA = "builtin:galsim?n=8192&size=64&seed=1"
HELD_OUT = "builtin:galsim?n={n}&size=64&seed=2026"
REFERENCE = "builtin:galsim?n={n}&size=64&seed=2027"
SETS = [*zoo.GALSIM_DCGAN64_SETS, "model.scene_blur=1.0"]

#: what the evaluation and the sample grids show (written after looking at both)
NOTES = (
    "What it is: centred galaxies of the right colours, brightness, sizes, light profiles "
    "and orientations on sky noise of the right range of levels; in the side-by-side grid "
    "a person does not tell the generated galaxies from the real ones. On 500 held-out "
    "galaxies 20 of the 22 measures pass (the target, 90 %, is met) with a Frechet galaxy "
    "distance of 4.2 (real-vs-real 2.4; the target, 3 times, is met): sizes, fluxes, "
    "magnitudes, colours (99 % of the fakes in the CMD box), concentration, Sersic n, Gini, "
    "M20, asymmetry and smoothness all pass their KS tests. What fails: the moment "
    "ellipticities are too narrowly spread (KS p 0.001; 5th and 95th percentiles 0.07 and "
    "0.54 against 0.05 and 0.59: too few nearly round and too few very elongated galaxies; "
    "the isophote ellipticity passes only just, p 0.0030 against 0.0029 needed) and the "
    "realism classifier's AUC is 0.69 (threshold 0.62). Recipe: the cpu config (sky noise, "
    "EMA of G 0.999 from the first step, D's radial-profile, minibatch-std and "
    "size-and-ellipticity paths) with the noiseless scene band-limited by a Gaussian of "
    "1 px, 5000 steps, shipped as the EMA generator with batch-norm statistics of its own. "
    "On three validation draws (seed 2028) the band limit made the smoothness and moment "
    "ellipticity tests pass on two draws of three (none of three without it) and averaged "
    "12.0 of 15 measures against 10.7; asymmetry still failed there on all three draws, "
    "with or without it, and the classifier AUC rose from 0.62-0.68 to 0.67-0.72. What limits it: CPU compute "
    "(1.2 hours of one thread on a shared machine) and the spread of shapes this W = 32 "
    "generator draws."
)


def main() -> None:
    args, run = zoo.parse_args(__doc__, f"{NAME}-v3", 5000)
    if not args.no_train:
        zoo.train(run, DATA, "dcgan64", args.steps, 32, 0, SETS)
    training = {**zoo.training_time(run), "batch": 32, "seed": 0, "threads": 1, "settings": SETS}
    card = zoo.card(
        NAME,
        "DCGAN-64 on GalSim bulge+disk galaxies (g, r, i)",
        "dcgan",
        "dcgan64",
        "cpu",
        DATA,
        "gri",
        "counts",
        [64, 64],
        training,
        NOTES,
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
