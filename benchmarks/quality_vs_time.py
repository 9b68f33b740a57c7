"""Quality against training compute: evaluate a run's kept snapshots with ``galforge evaluate``.

Galaxy families (``--family dcgan``, ...): each snapshot's generator (its EMA weights when
the run kept an EMA) is sampled (``--n-eval`` galaxies) and evaluated against held-out
``builtin:galsim`` galaxies of the training population drawn with a seed never used in
training, with the full ``galforge evaluate`` summary.  The real-vs-real reference (a second
independent real draw against the same held-out set, same n) is the last row of the table.

Field families (``--family sgan``): each snapshot generates a field of the real field's size
(``builtin:hdf``, the XDF), and both are source-extracted: detections per Mpix, per-band
magnitude KS p and median Δmag (the paper: Δmag ≤ 0.02, p = 0.16 / 0.63 / 0.75).

    # an existing run (e.g. a zoo run: scripts/zoo/galsim-dcgan64.py keeps a snapshot every
    # 1000 steps), 300 galaxies per snapshot, native isophotes
    python benchmarks/quality_vs_time.py --run ~/galforge-runs/galsim-dcgan64 --n-eval 300
    # train first, then evaluate (any config: --set model.config=paper)
    python benchmarks/quality_vs_time.py --train --steps 4000 --snapshot-every 500 \\
        --out /tmp/qvt-paper --set model.config=paper
    python benchmarks/quality_vs_time.py --family sgan --run ~/galforge-runs/xdf-sgan

Minutes are the run's own training time (the sum of its logged step times, every session
included).  Prints a table, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 2026
REFERENCE_SEED = 2027


def step_minutes(run: Path) -> dict[int, float]:
    """Training minutes at each logged step (every session of a resumed run summed)."""
    out, total, prev = {}, 0.0, 0
    for line in (run / "log.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        step = int(r["step"])
        if step <= prev:
            prev = min(prev, step)
        total += max(0, step - prev) * (
            float(r.get("time_step_s", 0.0)) + float(r.get("time_data_s", 0.0))
        )
        prev = step
        out[step] = total / 60.0
    return out


def minutes_at(table: dict[int, float], step: int) -> float:
    below = [s for s in table if s <= step]
    return table[max(below)] if below else math.nan


def snapshots(run: Path) -> list[tuple[int, Path | None]]:
    """(step, snapshot folder) of every kept snapshot before the run's last step, then (final
    step, None): the final row is always the run's exported generator, what users get."""
    from galforge.generation.field import snapshot_dirs

    final = int(json.loads((run / "run.json").read_text()).get("step", 0))
    snaps = [(int(p.name.split("-")[1]), p) for p in snapshot_dirs(run)]
    return [(s, p) for s, p in snaps if s < final] + [(final, None)]


def generator_at(exported, snap: Path | None):
    """The generator of snapshot ``snap``, built on ``exported`` (the bundle's own generator,
    which is itself the final row's: ``snap`` None)."""
    from galforge.generation.field import load_snapshot_generator

    return exported if snap is None else load_snapshot_generator(snap, exported)


def _row_value(summary: list[dict], *needles: str):
    for r in summary:
        name = r.get("measure", "")
        if all(n in name for n in needles):
            return r.get("value")
    return None


def galaxy_columns(metrics: dict, bands) -> dict:
    s = metrics.get("summary", [])
    cols = {
        "passed": sum(1 for r in s if r.get("passed")),
        "total": len(s),
        "fgd": _row_value(s, "Fréchet"),
        "auc": _row_value(s, "classifier"),
        "ks_ellipticity": (
            _row_value(s, "isophote", "ellipticity")
            if _row_value(s, "isophote", "ellipticity") is not None
            else _row_value(s, "moments", "ellipticity")
        ),
        "ks_pa": _row_value(s, "isophote", "pa_deg") or _row_value(s, "moments", "pa_deg"),
        "ks_size": _row_value(s, "isophote", "half_light_sma"),
    }
    for b in bands:  # AB magnitudes with a zero point, instrumental ones without
        cols[f"ks_mag_{b}"] = (
            _row_value(s, "photometry", f"mag_{b} ")
            if _row_value(s, "photometry", f"mag_{b} ") is not None
            else _row_value(s, "photometry", f"mag_inst_{b} ")
        )
    return cols


def _fmt(v, spec=".3g"):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def run_galaxies(args, run: Path) -> dict:
    import galforge
    from galforge.data import ImageSet, load_images
    from galforge.evaluation import evaluate

    bundle = galforge.load(run)
    size = int(bundle.image_shape[-1]) if hasattr(bundle, "image_shape") else 64
    real = load_images(f"builtin:galsim?n={args.n_eval}&size={size}&seed={HELD_OUT_SEED}")
    other = load_images(f"builtin:galsim?n={args.n_eval}&size={size}&seed={REFERENCE_SEED}")
    opts = {"upscale": args.upscale or None, "workers": args.workers, "seed": 11, "progress": False}
    if args.measures:
        opts["measures"] = args.measures.split(",")
    mins = step_minutes(run)
    out = Path(args.out)
    rows = []
    gen0 = bundle.generator
    for step, snap in snapshots(run):
        if args.every and step % args.every and snap is not None:
            continue
        bundle.generator = generator_at(gen0, snap)
        t0 = time.time()
        fake = ImageSet(
            images=bundle.sample(args.n_eval, seed=11),
            bands=tuple(bundle.bands),
            units=bundle.units,
            source=f"{run} step {step}",
        )
        m = evaluate(real, fake, out / f"step-{step:08d}", **opts)
        rows.append(
            {
                "minutes": minutes_at(mins, step),
                "step": step,
                **galaxy_columns(m, bundle.bands),
                "eval_s": round(time.time() - t0, 1),
            }
        )
        print(
            f"  step {step}: {rows[-1]['passed']}/{rows[-1]['total']} pass "
            f"(evaluated in {rows[-1]['eval_s']:.0f} s)",
            flush=True,
        )
    bundle.generator = gen0
    ref = evaluate(real, other, out / "reference", **opts)
    reference = {"minutes": None, "step": "real-vs-real", **galaxy_columns(ref, bundle.bands)}
    keys = [
        "passed",
        "fgd",
        "auc",
        "ks_ellipticity",
        "ks_pa",
        "ks_size",
        *[f"ks_mag_{b}" for b in bundle.bands],
    ]
    head = f"{'minutes':>8} {'step':>12} {'pass':>7} " + " ".join(f"{k:>14}" for k in keys[1:])
    print(f"\nquality vs training time: {run} (n = {args.n_eval} fake and held-out real)")
    print(head)
    for r in [*rows, reference]:
        print(
            f"{_fmt(r['minutes'], '.1f'):>8} {r['step']!s:>12} "
            f"{r['passed']:>3}/{r['total']:<3} " + " ".join(f"{_fmt(r[k]):>14}" for k in keys[1:])
        )
    return {
        "family": "galaxies",
        "run": str(run),
        "n_eval": args.n_eval,
        "rows": rows,
        "reference": reference,
    }


def run_fields(args, run: Path) -> dict:
    import galforge
    from galforge.data.builtin import hdf_field
    from galforge.evaluation.fields import compare_fields
    from galforge.generation.field import render_one_shot

    bundle = galforge.load(run)
    real = hdf_field()
    real_img = np.asarray(real.images[0], dtype=np.float32)
    _, h, w = real_img.shape
    mins = step_minutes(run)
    rows = []
    for step, snap in snapshots(run):
        if args.every and step % args.every and snap is not None:
            continue
        gen = generator_at(bundle.generator, snap)
        fake = render_one_shot(gen, bundle.normalizer, (h, w), seed=args.field_seed)
        res = compare_fields(real_img, fake, list(real.bands))
        row = {
            "minutes": minutes_at(mins, step),
            "step": step,
            "det_real": res["detections_per_mpix"]["real"],
            "det_fake": res["detections_per_mpix"]["fake"],
            "density_ratio": res["density_ratio"],
            "passed": res["passed"],
        }
        for b, br in res["bands"].items():
            row[f"ks_p_{b}"] = br.get("ks_p")
            row[f"dmag_{b}"] = br.get("median_dmag")
        rows.append(row)
    bands = list(real.bands)
    print(f"\nfield quality vs training time: {run} (field {h}×{w}, seed {args.field_seed})")
    print(
        f"{'minutes':>8} {'step':>7} {'det/Mpix real':>13} {'gen':>8} {'ratio':>6} "
        + " ".join(f"{'KS p ' + b:>8} {'dmag ' + b:>8}" for b in bands)
        + "  targets"
    )
    for r in rows:
        print(
            f"{_fmt(r['minutes'], '.1f'):>8} {r['step']:>7} {r['det_real']:>13.1f} "
            f"{r['det_fake']:>8.1f} {_fmt(r['density_ratio'], '.2f'):>6} "
            + " ".join(
                f"{_fmt(r[f'ks_p_{b}']):>8} {_fmt(r[f'dmag_{b}'], '+.3f'):>8}" for b in bands
            )
            + f"  {'met' if r['passed'] else 'missed'}"
        )
    return {"family": "fields", "run": str(run), "size": [h, w], "rows": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="dcgan", help="dcgan (galaxies) or sgan (fields)")
    ap.add_argument("--run", type=Path, default=None, help="an existing run folder")
    ap.add_argument("--train", action="store_true", help="train a run into --out/run first")
    ap.add_argument("--model", default=None, help="model to train (default: dcgan64 / sgan)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--snapshot-every", type=int, default=500)
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--every", type=int, default=0, help="evaluate only snapshots at multiples")
    ap.add_argument("--n-eval", type=int, default=300)
    ap.add_argument("--measures", default=None, help="comma list (default: evaluate's)")
    ap.add_argument("--upscale", type=int, default=0, help="isophote upscaling (0: native)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--field-seed", type=int, default=7)
    ap.add_argument("--out", default="benchmark-out/quality_vs_time")
    args = ap.parse_args(argv)

    from galforge.cli import main as cli

    fields = args.family == "sgan"
    run = args.run
    if args.train or run is None:
        run = Path(args.out) / "run"
        data = "builtin:hdf" if fields else f"builtin:galsim?n={args.n_train}&size=64&seed=1"
        cmd = [
            "train",
            data,
            "--model",
            args.model or ("sgan" if fields else "dcgan64"),
            "--out",
            str(run),
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--set",
            f"train.snapshot_every={args.snapshot_every}",
            "--set",
            "train.progress=false",
            "--set",
            "train.threads=1",
        ]
        for s in args.sets:
            cmd += ["--set", s]
        if (run / "checkpoints" / "latest").is_dir():
            cmd.append("--resume")
        if cli(cmd) != 0:
            raise SystemExit(2)
    result = run_fields(args, run) if fields else run_galaxies(args, run)

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    print(json.dumps(result, default=clean))
    return result


if __name__ == "__main__":
    main()
