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

import json
import subprocess
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

#: what the model is; the card's notes add the measured targets (:func:`notes`)
NOTES = (
    "A DCGAN-64 (cpu config) with a physical forward model (the data's 0.7\" Moffat PSF "
    "and pixel response applied to the galaxy G draws, then learned sky noise), "
    "conditioned on flux and half-light radius, with the condition-consistency loss "
    "(model.condition_loss=1)."
)
#: written after the sample grids have been looked at (what they show, as they look)
LOOKED = ""


def targets(run: Path, n: int) -> dict:
    """``benchmarks/forward_model_targets.py`` (a) and (b) on the exported bundle, into
    ``RUN/targets`` (reused when there); (c) is the card's own evaluation."""
    out = run / "targets"
    if not (out / "targets.json").is_file():
        script = zoo.REPO / "benchmarks" / "forward_model_targets.py"
        args = [sys.executable, str(script), str(run / "bundle"), "--out", str(out)]
        subprocess.run([*args, "--only", "a,b", "--n", str(n)], check=True)
    return json.loads((out / "targets.json").read_text())


def notes(res: dict) -> str:
    """The card's notes: what the model is, then the two targets as measured."""
    a, b = res["a"], res["b"]["summary"]
    pre, iso, kron = b["prepsf"], b["noisy_isophotes"], b["noisy_photometry"]
    text = (
        f'{NOTES} Re-observed through a 1.0" Moffat at 0.26"/px (benchmarks/'
        f"forward_model_targets.py, n={a['n']}): {a['passed']}/{a['total']} measures pass "
        f"against builtin:galsim of that PSF (real vs real {a['reference_passed']}/"
        f"{a['reference_total']}; target 90 %). Conditions obeyed on a 4x4 grid of asked "
        f'flux (2e3-6e4 counts) and hlr (0.4-1.1"): before the PSF, median |dmag| '
        f"{pre['dmag']:.3f} and median size error {100 * pre['dsize']:.1f} %; observed "
        f"with noise against GalSim twins, isophotes {iso['dmag']:.3f} mag and "
        f"{100 * iso['dsize']:.1f} %, photometry {kron['dmag']:.3f} mag and "
        f"{100 * kron['dsize']:.1f} % (targets 0.1 mag, 10 %)."
    )
    return f"{text} {LOOKED}".strip()


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
    zoo.cli(["export", str(run), "--overwrite"])
    measured = notes(targets(run, args.n_eval))
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
        measured,
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
