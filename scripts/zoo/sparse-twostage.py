"""Reproduce ``pretrained:sparse-twostage``: the two-stage model of sparse galaxy fields.

    python scripts/zoo/sparse-twostage.py              # train (resumes), evaluate, ship
    python scripts/zoo/sparse-twostage.py --no-train   # evaluate and ship the run as it is
    python scripts/zoo/sparse-twostage.py --no-ship    # train and evaluate only

Training data: 100 ``builtin:sparse`` fields of 1000×1000 pixels, 40 GalSim bulge+disk
galaxies each on a background of exactly 0 (counts; seed 0), read with
``data.clip_percentile=100`` (the brightest cores unclipped).  The default ``eigen`` config
of ``--model twostage``: the positions GAN (a DCGAN over 32×32 occupancy grids, batch 16,
seed 0, one thread) and the eigen galaxy stage (a Gaussian mixture over the 48 leading
principal components of the data's 64-pixel galaxy patches in an asinh stretch — 2048
centres, kernel 0.2 times the components' spread — fitted once when training starts; each
drawn patch cut at the data's faintest value and kept to its central cluster).  Held-out evaluation: ``--n-eval`` fields (16: about 600 galaxies) drawn
with seed 2026, never used in training, against as many generated fields (seed 7): the
per-galaxy KS of peak, flux, half-light radius, ellipticity and pixel count
(:mod:`galforge.evaluation.sparse_galaxies`; target p ≥ 0.05 each), the clusters per
field and per placed galaxy, and a picture (real | two-stage | baseline B2, one stretch)
that goes with the card and into the docs.  A run folder outside the repository
(``--runs``).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_common as zoo  # noqa: E402

NAME = "sparse-twostage"
DATA = "builtin:sparse?n=100&size=1000&count=40&seed=0"
HELD_OUT = "builtin:sparse?n={n}&size=1000&count=40&seed=2026"
BATCH = 16
FAKE_SEED = 7
SETS = [
    "data.clip_percentile=100",
    "train.threads=1",
    "train.checkpoint_every=500",
    "train.sample_every=1000",
    "train.snapshot_every=0",
    "train.progress=false",
    "train.log_every=50",
    "train.n_samples=4",
    "output.tensorboard=false",
]

#: what the evaluation and the picture show (written after looking at both)
NOTES = (
    "Sparse fields of GalSim-like galaxies on a background of exactly 0, made in two "
    "stages: a positions GAN draws which cells of a 32x32 grid hold a galaxy (as many as "
    "a training field holds, drawn from the data's counts), and the eigen galaxy stage "
    "draws each galaxy from a kernel density estimate over the 48 leading principal "
    "components of the data's galaxy patches (64 px, asinh stretch, with their flips and "
    "quarter turns): a training galaxy's components plus a Gaussian kernel of 0.2 times "
    "their spread (a smoothed resampling: its galaxies stay close to training galaxies), "
    "the patch cut at the data's faintest "
    "value and kept to its central cluster, so every placed galaxy is one cluster and "
    "every other pixel is exactly 0. The galaxy stage is a fitted density model, not a "
    "GAN (the study's BEGAN stage is the paper config of --model twostage)."
)


def more(ap) -> None:
    ap.add_argument(
        "--no-ship",
        action="store_true",
        help="train and evaluate, but do not copy the bundle into the package",
    )
    ap.add_argument("--data", default=DATA, help="training data (a smaller spec for a trial)")
    ap.add_argument(
        "--picture",
        type=Path,
        default=zoo.REPO / "docs" / "sparse_twostage.png",
        help="where the real | two-stage | B2 picture goes (besides the run folder)",
    )


def picture(path: Path, panels, crop: int = 400) -> None:
    """The top-left ``crop``×``crop`` pixels of each field side by side, one asinh stretch
    (softening 1 count, white at 500 counts), 4-pixel grey gaps."""
    import numpy as np
    from PIL import Image

    parts = []
    crop = min(crop, *(min(np.shape(p)[-2:]) for p in panels))
    for i, img in enumerate(panels):
        x = np.asarray(img, dtype=np.float64).reshape(img.shape[-2:])[:crop, :crop]
        parts.append(np.clip(np.arcsinh(x) / np.arcsinh(500.0), 0.0, 1.0))
        if i < len(panels) - 1:
            parts.append(np.full((parts[-1].shape[0], 4), 0.5))
    Image.fromarray((np.concatenate(parts, axis=1) * 255).round().astype(np.uint8)).save(path)


def main() -> None:
    args, run = zoo.parse_args(__doc__, NAME, 4000, more=more)
    if args.n_eval == 500:  # the shared default counts galaxies; here it counts fields
        args.n_eval = 16

    import torch

    import galforge
    from galforge.data import load_images
    from galforge.evaluation.sparse_galaxies import compare_galaxies, format_comparison
    from galforge.generation.baselines import fit_baseline, sample_baseline

    if not args.no_train:
        zoo.train(run, args.data, "twostage", args.steps, BATCH, 0, SETS)
    real = load_images(HELD_OUT.format(n=args.n_eval)).images
    sampler = galforge.load(run).generator.eval()
    with torch.no_grad():  # the placed galaxies and the fields from one latent
        z = torch.randn(
            sampler.latent_shape(args.n_eval), generator=torch.Generator().manual_seed(FAKE_SEED)
        )
        occ, _ = sampler.layout(z)
        fake = sampler(z).numpy()
    result = compare_galaxies(real, fake, placed=occ.sum(dim=(1, 2)).numpy())
    print(format_comparison(result))
    like = args.data.replace("n=100&", "n=16&")  # B2 fitted on 16 fields of the training spec
    b2 = sample_baseline(fit_baseline("b2", load_images(like).images, source=like), 1, seed=0)
    preview = run / "sparse-preview.png"
    picture(preview, [real[0], fake[0], b2[0]])
    (run / "sparse-galaxies.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.no_ship:
        return
    if args.picture:
        picture(args.picture, [real[0], fake[0], b2[0]])
        print(f"picture: {args.picture}")
    card = zoo.card(
        NAME,
        "Two-stage model of sparse galaxy fields (positions GAN + eigen galaxy stage)",
        "twostage",
        "twostage",
        "eigen",
        args.data,
        ["r"],
        "counts",
        [1000, 1000],
        {**zoo.training_time(run), "batch": BATCH, "seed": 0, "threads": 1, "settings": SETS},
        NOTES,
    )
    card["evaluation"] = {
        "held_out": HELD_OUT.format(n=args.n_eval),
        "fake_seed": FAKE_SEED,
        "galaxies": result,
        "passed": int(result["passed"]),
        "total": int(result["total"]),
        "date": dt.date.today().isoformat(),
    }
    zoo.ship(NAME, run, card, extra_files=[preview])


if __name__ == "__main__":
    main()
