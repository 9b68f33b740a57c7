"""Photometric validation of a generated deep field against the real one (Smith & Geach 2019 §4).

Trains a Spatial GAN on ``builtin:hdf`` (or reuses ``--run``), generates a field of the same
size as the real field, extracts sources from both with
:func:`galforge.evaluation.photometry.measure_field`, and compares detections per
megapixel, per-band magnitude distributions (two-sample KS p-values) and the median
magnitude difference (the paper: within 0.02 mag, p = 0.16 / 0.63 / 0.75).

Usage::

    python benchmarks/field_validation.py --steps 2000 --out /tmp/sgan-val
    python benchmarks/field_validation.py --run RUN   # an existing sgan run or bundle
    python benchmarks/field_validation.py --run pretrained:xdf-sgan --report /tmp/xdf-report

Short CPU trainings are far from the paper's 200 epochs: read the figures as a check of
the pipeline unless the run was trained to convergence.  Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="existing sgan run/bundle (skips training)")
    p.add_argument("--out", default="field-validation", help="work folder")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--widths", default="[256,128,64,32]")
    p.add_argument("--d-widths", default="[64,128,256,512,512]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thresh", type=float, default=5.0)
    p.add_argument(
        "--report",
        default=None,
        help="also write the full field report (evaluate --fields) into this folder",
    )
    args = p.parse_args()

    from galforge.cli import main as cli
    from galforge.data.builtin import hdf_field
    from galforge.evaluation.fields import compare_fields, format_comparison
    from galforge.generation.field import field_from_bundle, read_field

    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    run = args.run if args.run else work / "run"  # a str keeps pretrained:NAME
    if args.run is None and not (run / "bundle").exists():
        rc = cli(
            [
                "train",
                "builtin:hdf",
                "--model",
                "sgan",
                "--out",
                str(run),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--seed",
                str(args.seed),
                "--set",
                f"model.widths={args.widths}",
                "--set",
                f"model.d_widths={args.d_widths}",
                "--set",
                f"train.snapshot_every={max(1, args.steps // 4)}",
            ]
        )
        if rc != 0:
            raise SystemExit(rc)

    real = hdf_field()
    real_img = np.asarray(real.images[0], dtype=np.float32)
    _, h, w = real_img.shape
    out = work / "fake.npy"
    field_from_bundle(run, out, f"{h}x{w}", seed=args.seed, overwrite=True, compile=False)
    fake_img, meta = read_field(out)

    result = compare_fields(real_img, fake_img, list(real.bands), thresh=args.thresh)
    summary = {"size": [h, w], "units": real.units, "run": str(run), **result}
    print(f"field {h}x{w} ({real.units})")
    print(format_comparison(result))
    if args.report:
        from galforge.evaluation.field_report import evaluate_fields, format_summary

        metrics = evaluate_fields(
            real_img,
            fake_img,
            list(real.bands),
            args.report,
            units=real.units,
            real_source="builtin:hdf",
            fake_source=f"{run} (seed {args.seed})",
            seed=args.seed,
            thresh=args.thresh,
        )
        print(format_summary(metrics))
        summary["field_report"] = {
            "folder": args.report,
            "passed": metrics["passed"],
            "rows": metrics["n_rows"],
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
