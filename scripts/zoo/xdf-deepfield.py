"""Reproduce ``pretrained:xdf-deepfield``: the XDF as learned sources on a learned sky.

    python scripts/zoo/xdf-deepfield.py                  # train (resumes), calibrate, validate, ship
    python scripts/zoo/xdf-deepfield.py --steps 15000 --no-ship   # train and validate only
    python scripts/zoo/xdf-deepfield.py --bundle B --run R   # calibrate a trained bundle B instead

Training data: ``builtin:hdf``, the XDF colour image bundled with scikit-image (1000×872,
8-bit levels).  The ``deepfield`` family measures the field's sources (catalogue, clustering)
and sky (level, σ, correlations, the composite's rounding and clip at 0) and trains its
stamp network (``--steps``, batch 32, one thread; 0.4–0.7 s a step, so the default 15000
steps are within 3 CPU hours).  The exported bundle's catalogue model is then calibrated
against the XDF by forward modelling
(:func:`galforge.training.recipes.deepfield.calibrate_catalogue`: fields drawn, extracted as
the catalogue was, and the intrinsic rows, their weights, the density and the sky level
corrected until the drawn fields measure as the real one; 3 iterations of 2 fields, ~5 CPU
minutes).  Validation: ``galforge evaluate builtin:hdf BUNDLE --fields`` on fields of the
XDF's size, seeds 7, 8 and 9 (the calibration draws seeds 1000 and 1001), its rows kept in
the card; the quick comparison of ``xdf-sgan`` (detections per Mpix, per-band magnitude KS
p and median Δmag, seed 7) too.  A PNG of the generated field (seed 7) goes with the card,
and ``docs/xdf_vs_deepfield.png`` shows the real XDF (left) and that field (right) on one
stretch.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
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
REPORT_SEEDS = (7, 8, 9)
NOTES = (
    "A deep field composed of sources on a sky, every part measured in the real XDF "
    "composite: the catalogue (per band flux, half-light radius, ellipticity) resampled "
    "with a small kernel jitter, positions from a Thomas cluster process fitted to the "
    "real two-point correlation, a conditional stamp network drawing each source's "
    "noiseless light (its flux, size, ellipticity and angle fixed by construction to the "
    "catalogue draw), and a sky with the real level, noise, noise correlations and 8-bit "
    "rounding/clip. Every field comes with its truth catalogue. The catalogue model is "
    "calibrated by forward modelling (fields drawn and source-extracted as the real one was; "
    "intrinsic fluxes, sizes, shapes, colours, row weights, density and sky level corrected "
    "until they measure as the real field), so the sources found in a generated field have "
    "the real field's counts and distributions rather than being drawn at their measured "
    "values and measured a second time."
)


def more(ap) -> None:
    ap.add_argument(
        "--no-ship",
        action="store_true",
        help="train and validate, but do not copy the bundle into the package",
    )
    ap.add_argument(
        "--bundle",
        default=None,
        help="calibrate, validate and ship this trained, uncalibrated bundle (a folder or "
        "pretrained:NAME; its card's training record is kept) instead of training",
    )


def calibrate(folder: Path, field) -> dict:
    """Calibrate the catalogue model of the bundle in ``folder`` against ``field`` (kept
    when it already is)."""
    from galforge.bundle import Part, read_bundle, save_bundle
    from galforge.training.recipes.deepfield import calibrate_catalogue

    bf = read_bundle(folder)
    g, _ = bf.sampler("cpu")
    if g.weighted:
        print(f"{folder}: catalogue already calibrated")
        return g.calibration
    hp = bf.meta.get("hyperparameters") or {}
    calibrate_catalogue(
        g,
        field,
        thresh=float(hp.get("thresh", 2.0)),
        minarea=int(hp.get("minarea", 5)),
        log=lambda msg: print(msg, flush=True),
    )
    m = bf.meta
    part = m["parts"]["generator"]
    save_bundle(
        folder,
        family=m["family"],
        parts={"generator": Part(part["family"], g.spec(), g.state_dict(), part.get("module"))},
        normalizer=bf.normalizer,
        bands=m["bands"],
        units=m["units"],
        output_range=m["output_range"],
        config=m.get("config"),
        data_fingerprint=m.get("data_fingerprint"),
        module=m.get("module"),
        source={**(m.get("source") or {}), "catalogue": "calibrated"},
        hyperparameters=hp,
    )
    return g.calibration


def side_by_side(path: Path, left: Path, right: Path, width: int = 600, gap: int = 8) -> None:
    """The two PNGs scaled to ``width`` px each, side by side with a white gap."""
    from PIL import Image

    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    h = round(a.height * width / a.width)
    a = a.resize((width, h), Image.LANCZOS)
    b = b.resize((width, round(b.height * width / b.width)), Image.LANCZOS)
    out = Image.new("RGB", (2 * width + gap, max(h, b.height)), "white")
    out.paste(a, (0, 0))
    out.paste(b, (width + gap, 0))
    out.save(path)


def main() -> None:
    args, run = zoo.parse_args(__doc__, NAME, 15000, n_eval=False, more=more)

    import numpy as np

    import galforge
    from galforge.data.builtin import hdf_field
    from galforge.data.display import fit_stretch
    from galforge.evaluation.fields import compare_fields, format_comparison
    from galforge.generation.field import render_one_shot
    from galforge.generation.writers import write_png

    real = hdf_field()
    real_img = np.asarray(real.images[0], dtype=np.float32)
    _, h, w = real_img.shape
    if args.bundle:
        from galforge.pretrained import card as model_card
        from galforge.pretrained import is_pretrained, resolve

        src = Path(resolve(args.bundle))
        (run / "bundle").mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.name == "bundle.json" or f.suffix == ".safetensors":
                shutil.copy2(f, run / "bundle" / f.name)
        if is_pretrained(args.bundle):
            training = dict(model_card(args.bundle.split(":", 1)[1]).training)
        else:
            training = json.loads((src / "card.json").read_text())["training"]
    else:
        if not args.no_train:
            zoo.train(run, DATA, "deepfield", args.steps, BATCH, 0, SETS)
        zoo.cli(["export", str(run)])
        training = {
            **zoo.training_time(run),
            "batch": BATCH,
            "seed": 0,
            "threads": 1,
            "settings": SETS,
        }
    calibration = calibrate(run / "bundle", real_img)
    bundle = galforge.load(run / "bundle")
    fake = render_one_shot(bundle.generator, None, (h, w), seed=FIELD_SEED)
    result = compare_fields(real_img, fake, list(real.bands))
    print(format_comparison(result))
    preview = run / "field-preview.png"
    stretch = fit_stretch(real_img, real.bands, real.units)  # one stretch for both
    write_png(preview, fake, real.bands, units=real.units, stretch=stretch)
    write_png(run / "real-field.png", real_img, real.bands, units=real.units, stretch=stretch)
    report = zoo.field_report(DATA, str(run / "bundle"), run / "eval", REPORT_SEEDS)
    for r in report["rows"]:
        print(f"{r['name']:24s} {r['target']:12s} " + "  ".join(f"{v:.3g}" for v in r["values"]))
    if args.no_ship:
        return
    side_by_side(zoo.REPO / "docs" / "xdf_vs_deepfield.png", run / "real-field.png", preview)
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
        training,
        NOTES,
    )
    card["version"] = 2
    card["calibration"] = {
        k: calibration.get(k) for k in ("iterations", "fields", "seed", "density_factor")
    }
    card["calibration"]["history"] = calibration.get("history")
    card["evaluation"] = {
        "field": {"size": [h, w], "seed": FIELD_SEED, **result},
        "fields_report": report,
        "passed": int(result["passed"]),
        "total": 1,
        "date": dt.date.today().isoformat(),
    }
    zoo.ship(NAME, run, card, extra_files=[preview])


if __name__ == "__main__":
    main()
