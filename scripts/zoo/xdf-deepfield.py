"""Reproduce ``pretrained:xdf-deepfield``: the XDF as learned sources on a learned sky.

    python scripts/zoo/xdf-deepfield.py                  # train (resumes), validate, ship
    python scripts/zoo/xdf-deepfield.py --steps 15000 --no-ship   # train and validate only

Training data: ``builtin:hdf``, the XDF colour image bundled with scikit-image (1000×872,
8-bit levels).  The ``deepfield`` family measures the field's sources (catalogue, clustering)
and sky (level, σ, correlations, the composite's rounding and clip at 0) and trains its
stamp network (``--steps``, batch 32, one thread; 0.4–0.7 s a step, so the default 15000
steps are within 3 CPU hours).  Validation as for ``xdf-sgan``: a generated field of the XDF's
size (seed 7) is source-extracted like the real one and compared by detections per
Mpix, per-band magnitude KS p and median Δmag (targets: density within 20 %, KS p ≥ 0.05 and
|Δmag| ≤ 0.1 in every band); a PNG of the generated field and of the real one, on one
stretch, goes with the card.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_common as zoo  # noqa: E402

NAME = "xdf-deepfield"
DATA = "builtin:hdf"
BATCH = 32
SETS = [
    "train.threads=1",
    "train.checkpoint_every=250",
    "train.sample_every=1000",
    "train.snapshot_every=0",
    "train.progress=false",
    "train.log_every=50",
    "output.tensorboard=false",
]
FIELD_SEED = 7
NOTES = (
    "A deep field composed of sources on a sky, every part measured in the real XDF "
    "composite: the catalogue (per band flux, half-light radius, ellipticity) resampled "
    "with a small kernel jitter, positions from a Thomas cluster process fitted to the "
    "real two-point correlation, a conditional stamp network drawing each source's "
    "noiseless light (its flux, size, ellipticity and angle fixed by construction to the "
    "catalogue draw), and a sky with the real level, noise, noise correlations and 8-bit "
    "rounding/clip. Every field comes with its truth catalogue."
)


def more(ap) -> None:
    ap.add_argument(
        "--no-ship",
        action="store_true",
        help="train and validate, but do not copy the bundle into the package",
    )


def main() -> None:
    args, run = zoo.parse_args(__doc__, NAME, 15000, n_eval=False, more=more)

    import numpy as np

    import galforge
    from galforge.data.builtin import hdf_field
    from galforge.data.display import fit_stretch
    from galforge.evaluation.fields import compare_fields, format_comparison
    from galforge.generation.field import render_one_shot
    from galforge.generation.writers import write_png

    if not args.no_train:
        zoo.train(run, DATA, "deepfield", args.steps, BATCH, 0, SETS)
    zoo.cli(["export", str(run)])
    real = hdf_field()
    real_img = np.asarray(real.images[0], dtype=np.float32)
    _, h, w = real_img.shape
    bundle = galforge.load(run)
    fake = render_one_shot(bundle.generator, None, (h, w), seed=FIELD_SEED)
    result = compare_fields(real_img, fake, list(real.bands))
    print(format_comparison(result))
    preview = run / "field-preview.png"
    stretch = fit_stretch(real_img, real.bands, real.units)  # one stretch for both
    write_png(preview, fake, real.bands, units=real.units, stretch=stretch)
    write_png(run / "real-field.png", real_img, real.bands, units=real.units, stretch=stretch)
    if args.no_ship:
        return
    card = zoo.card(
        NAME,
        "Sources on a sky, learned from the Hubble eXtreme Deep Field (R, G, B composite)",
        "deepfield",
        "deepfield",
        "paper",
        DATA,
        real.bands,
        real.units,
        None,
        {**zoo.training_time(run), "batch": BATCH, "seed": 0, "threads": 1, "settings": SETS},
        NOTES,
    )
    card["evaluation"] = {
        "field": {"size": [h, w], "seed": FIELD_SEED, **result},
        "passed": int(result["passed"]),
        "total": 1,
        "date": dt.date.today().isoformat(),
    }
    zoo.ship(NAME, run, card, extra_files=[preview])


if __name__ == "__main__":
    main()
