"""Quality of the foundation DCGAN on GalSim galaxies, measured by ``galforge evaluate``.

Trains ``dcgan64`` on ``builtin:galsim`` 64×64 stamps for a fixed wall-clock budget
(``--minutes``, default 15; or a fixed ``--steps``) at base width ``--width`` (32 by default
so that a CPU budget buys a few hundred steps; the paper's width is 128), samples it, and evaluates the samples
against *held-out* real galaxies (an independent GalSim draw, another seed).  As the
reference measured in the same run, a second real draw is evaluated against the same
held-out set: a perfect generator would score like it.  Memorisation is also measured
against the training images themselves (the NN ratio of fakes to the training set).

    python benchmarks/dcgan_quality.py                 # ~15 min of training on 2 CPU cores
    python benchmarks/dcgan_quality.py --minutes 2 --n-eval 120   # a quick check

Prints the summary table (DCGAN vs the real-vs-real reference), then one line of JSON.
Isophote fits are left out by default (≈ 1 s per stamp natively, ≈ 6 s upscaled); add them
with ``--measures`` and choose ``--upscale``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_MEASURES = "moments,photometry,colour,morphology,memorization,power_spectrum,fid"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget (wall clock)")
    ap.add_argument("--steps", type=int, default=None, help="fixed step count instead")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=300, help="fakes and held-out reals each")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=32,
                    help="DCGAN base width (the paper's 128 costs ~40 s per step on 2 CPU "
                         "cores; 32 is 16x cheaper; use 128 on a GPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--measures", default=DEFAULT_MEASURES)
    ap.add_argument("--upscale", type=int, default=0, help="isophote upscaling (0: native)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmark-out/dcgan_quality")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra training config overrides (dotted.key=value)")
    args = ap.parse_args(argv)

    import galforge
    from galforge.cli.train_cmd import resolve_train_config
    from galforge.data import ImageSet, load_images
    from galforge.data.datasets import prepare
    from galforge.evaluation import evaluate
    from galforge.evaluation.memorization import memorization
    from galforge.training.trainer import train_from_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    spec = f"builtin:galsim?n={args.n_train}&size={args.size}&seed={args.seed}"
    data_dir = out / "data"
    prepare(spec, data_dir)
    train = load_images(str(data_dir))
    run = out / "run"
    sets = ["train.progress=false", "output.tensorboard=false", "train.sample_every=200",
            "train.checkpoint_every=200", f"model.width={args.width}", *args.sets]

    def train_to(steps: int, resume: bool) -> dict:
        cfg = resolve_train_config(str(data_dir), model="dcgan64", out=str(run), steps=steps,
                                   batch=args.batch, seed=args.seed, device=args.device,
                                   resume=resume, sets=sets)
        return train_from_config(cfg, resume=resume)

    t0 = time.time()
    if args.steps is not None:
        summary = train_to(args.steps, resume=False)
        steps = args.steps
    else:
        probe = 20
        train_to(probe, resume=False)
        t_probe = time.time() - t0
        budget = args.minutes * 60.0
        per_step = t_probe / probe  # includes start-up: the fallback, a conservative one
        log = run / "log.jsonl"
        if log.is_file():
            times = [json.loads(line).get("time_step_s") for line in log.read_text().splitlines()
                     if line.strip()]
            times = [t for t in times if t]
            if times:
                per_step = float(np.median(times))
        # the resumed run pays the start-up again (~ the probe's time minus its steps)
        startup = max(0.0, t_probe - probe * per_step)
        steps = max(probe, int(probe + (budget - t_probe - startup) / per_step))
        summary = train_to(steps, resume=True) if steps > probe else {"step": probe}
    t_train = time.time() - t0
    print(f"trained dcgan64 for {summary['step']} steps in {t_train / 60:.1f} min")

    bundle = galforge.load(run)
    fake_images = bundle.sample(args.n_eval, seed=args.seed + 1)
    fake = ImageSet(images=fake_images, bands=tuple(bundle.bands), units=bundle.units,
                    source=f"dcgan64 {run} (n={args.n_eval})")
    held = load_images(f"builtin:galsim?n={args.n_eval}&size={args.size}&seed={args.seed + 1000}")
    other = load_images(f"builtin:galsim?n={args.n_eval}&size={args.size}&seed={args.seed + 2000}")
    opts = {"measures": args.measures.split(","), "upscale": args.upscale or None,
            "workers": args.workers, "seed": args.seed, "progress": False}
    t1 = time.time()
    res = evaluate(held, fake, out / "eval", **opts)
    t_eval = time.time() - t1
    ref = evaluate(held, other, out / "reference", **opts)
    mem_train = memorization(train.images, fake_images, seed=args.seed)

    refs = {r["measure"]: r for r in ref["summary"]}
    width = max(len(r["measure"]) for r in res["summary"])
    print(f"\n{'measure':<{width}}  {'dcgan64':>10}  {'real-real':>10}  {'threshold':>10}  result")
    for r in res["summary"]:
        rv = refs.get(r["measure"], {}).get("value")

        def f(v):
            return "–" if v is None else f"{v:.4g}"

        print(f"{r['measure']:<{width}}  {f(r['value']):>10}  {f(rv):>10}  "
              f"{f(r['threshold']):>10}  {'pass' if r['passed'] else 'FAIL'}")
    print(f"memorisation vs the training set: NN ratio L1 {mem_train['nn_ratio_l1']:.3f}, "
          f"MSE {mem_train['nn_ratio_mse']:.3f}")
    print(f"report: {out / 'eval' / 'report.html'}")
    n_pass = sum(r["passed"] for r in res["summary"])
    figures = {
        "steps": int(summary["step"]),
        "width": args.width,
        "train_minutes": round(t_train / 60, 2),
        "eval_seconds": round(t_eval, 1),
        "n_eval": args.n_eval,
        "measures_passed": n_pass,
        "measures_total": len(res["summary"]),
        "reference_passed": sum(r["passed"] for r in ref["summary"]),
        "nn_ratio_vs_train_l1": mem_train["nn_ratio_l1"],
        "summary": {r["measure"]: r["value"] for r in res["summary"]},
        "reference": {r["measure"]: r["value"] for r in ref["summary"]},
        "total_minutes": round((time.time() - t_start) / 60, 2),
    }
    print(json.dumps(figures, default=lambda v: None if not np.isfinite(v) else float(v)))
    return figures


if __name__ == "__main__":
    main()
