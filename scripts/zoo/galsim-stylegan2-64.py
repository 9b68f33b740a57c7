"""Reproduce ``pretrained:galsim-stylegan2-64``: StyleGAN2 (``small`` config) on GalSim galaxies.

    python scripts/zoo/galsim-stylegan2-64.py       # train (resumes), evaluate, ship

Training data: the 8192 ``builtin:galsim`` galaxies of ``galsim-dcgan64`` (g, r, i; 64×64;
counts; seed 1), asinh stretch; the ``small`` config (sky noise, ADA on the exact-permutation
``galaxy`` pipeline, lazy R1 with the heuristic γ, path length, style mixing, EMA of G).
Held-out evaluation: 500 galaxies drawn with seed 2026 (never used in training), and as
reference a second real draw (seed 2027) against the same held-out set.  One CPU thread; the
run folder lives outside the repository (``--runs``) and resumes exactly across sessions.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_common as zoo  # noqa: E402

NAME = "galsim-stylegan2-64"
DATA = "builtin:galsim?n=8192&size=64&seed=1"
HELD_OUT = "builtin:galsim?n={n}&size=64&seed=2026"
REFERENCE = "builtin:galsim?n={n}&size=64&seed=2027"
BATCH = 16
SETS = ["model.config=small", "data.stretch=asinh", "train.threads=1",
        "train.checkpoint_every=250", "train.snapshot_every=1000", "train.sample_every=500",
        "train.progress=false"]

#: what the evaluation and the sample grids show (written after looking at both)
NOTES = ""


def main() -> None:
    args, run = zoo.parse_args(__doc__, NAME, 9000)
    if not args.no_train:
        zoo.train(run, DATA, "stylegan2", args.steps, BATCH, 0, SETS)
    card = zoo.card(NAME, "StyleGAN2 (small) on GalSim bulge+disk galaxies (g, r, i)",
                    "stylegan2", "stylegan2", "small", DATA, "gri", "counts", [64, 64],
                    {**zoo.training_time(run), "batch": BATCH, "seed": 0, "threads": 1,
                     "settings": SETS}, NOTES)
    zoo.ship_galaxies(NAME, run, card, HELD_OUT, REFERENCE, n=args.n_eval,
                      options=["--upscale", "0", "--workers", "2"])


if __name__ == "__main__":
    main()
