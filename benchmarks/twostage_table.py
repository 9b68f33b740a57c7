"""Table II of the sparse-field study on built-in data: realism score and generation time.

Rows: real images (``builtin:sparse``, a held-out seed), baselines B1 and B2, the end-to-end
GAN (a DCGAN on fields area-downscaled to 64 px, its samples upscaled back, nearest), the
two-stage GAN and the conditional two-stage GAN (trained here, briefly, on the CPU).

Each row: the seconds to make ``--n`` images (per image too) and, when the realism scorer is
installed (``galforge.evaluation.realism``), their mean predicted score. The scorer is fitted
here on the degradation ladder of the training fields (known scores, 8 = real … 0 = diamonds),
so the scores are on the ladder's 0–8 scale, not the human scale of the paper's values
(printed beside them for reference). Without the scorer the score column says why it is
empty.

    python benchmarks/twostage_table.py [--n 16] [--size 256] [--count 12] [--train 24]
        [--steps 1000] [--e2e-steps 200] [--config cpu] [--out DIR]

Defaults are sized for a CPU (fields of 256 px, not the paper's 1000 px, and minutes of
training instead of days); the figures say how far such runs get, not what the paper's
models reach. A readable table, then one last line of JSON with the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAPER = {
    "real": 1.93,
    "B1": 0.60,
    "B2": 0.89,
    "end-to-end GAN": 0.85,
    "two-stage": 1.85,
    "conditional two-stage": 1.90,
}


def _spec(n: int, size: int, count: int, seed: int) -> str:
    return f"builtin:sparse?n={n}&size={size}&count={count}&seed={seed}"


def _train(main, data: str, out: Path, extra: list[str], steps: int, seed: int) -> float:
    args = [
        "train",
        data,
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "--set",
        "train.progress=false",
        "--set",
        "output.tensorboard=false",
        "--set",
        "train.n_samples=4",
        "--set",
        "data.clip_percentile=100",
        *extra,
    ]
    t0 = time.perf_counter()
    if main(args) != 0:
        raise SystemExit(f"training failed: galforge {' '.join(args)}")
    return time.perf_counter() - t0


def _scorer(train_images: np.ndarray, seed: int):
    """(scorer or None, message): the realism scorer fitted on the training fields' ladder."""
    try:
        from galforge.evaluation import realism
    except ImportError:
        return None, "realism scorer not installed (galforge.evaluation.realism): no scores"
    try:
        planes, scores, groups = [], [], []
        for i, rung, plane in realism.degradation_ladder(train_images, seed=seed):
            planes.append(plane)
            scores.append(float(rung.score))
            groups.append(i)
        scorer = realism.fit_images(
            np.stack(planes)[:, None], np.asarray(scores), groups=np.asarray(groups), seed=seed
        )
    except (AttributeError, TypeError) as exc:
        return None, f"realism scorer API not as expected ({exc}): no scores"
    return scorer, "scores: realism scorer fitted on the degradation ladder (0-8)"


def main_() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images per row")
    ap.add_argument("--size", type=int, default=256, help="field side (pixels)")
    ap.add_argument("--count", type=int, default=12, help="galaxies per field")
    ap.add_argument("--train", type=int, default=24, help="training fields")
    ap.add_argument("--steps", type=int, default=1000, help="two-stage training steps")
    ap.add_argument("--e2e-steps", type=int, default=200, help="end-to-end DCGAN steps")
    ap.add_argument("--config", default="cpu", help="two-stage model.config")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from galforge.cli import main
    from galforge.data import load_images
    from galforge.data.transforms import resize
    from galforge.generation.baselines import fit_baseline, sample_baseline
    from galforge.generation.sampling import load_bundle

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="twostage-table-"))
    work.mkdir(parents=True, exist_ok=True)
    train_spec = _spec(args.train, args.size, args.count, args.seed)
    train = load_images(train_spec).images
    rows: dict[str, dict] = {}

    t0 = time.perf_counter()
    real = load_images(_spec(args.n, args.size, args.count, args.seed + 1000)).images
    rows["real"] = {"seconds": time.perf_counter() - t0, "images": real}
    for kind in ("b1", "b2"):
        fit = fit_baseline(kind, train, source=train_spec)
        t0 = time.perf_counter()
        imgs = sample_baseline(fit, args.n, seed=args.seed)
        rows[kind.upper()] = {"seconds": time.perf_counter() - t0, "images": imgs}

    common = ["--batch", str(args.batch)]
    train_s = {}
    e2e = work / "e2e"
    train_s["end-to-end GAN"] = _train(
        main,
        train_spec,
        e2e,
        [
            "--model",
            "dcgan64",
            "--set",
            "data.resize=64",
            "--set",
            "data.resize_method=area",
            *common,
        ],
        args.e2e_steps,
        args.seed,
    )
    for name, extra in (
        ("two-stage", []),
        ("conditional two-stage", ["--set", "model.conditional=true"]),
    ):
        run = work / name.replace(" ", "-")
        train_s[name] = _train(
            main,
            train_spec,
            run,
            ["--model", "twostage", "--set", f"model.config={args.config}", *extra, *common],
            args.steps,
            args.seed,
        )
    for name, run in (
        ("end-to-end GAN", e2e),
        ("two-stage", work / "two-stage"),
        ("conditional two-stage", work / "conditional-two-stage"),
    ):
        bundle = load_bundle(run)
        t0 = time.perf_counter()
        imgs = bundle.sample(args.n, seed=args.seed)
        if imgs.shape[-1] != args.size:  # the end-to-end GAN's 64 px fields, back to full size
            imgs = resize(imgs, args.size, method="nearest")
        rows[name] = {
            "seconds": time.perf_counter() - t0,
            "images": imgs,
            "train_seconds": train_s[name],
        }

    scorer, message = _scorer(train, args.seed)
    for row in rows.values():
        row["score"] = None if scorer is None else float(np.mean(scorer.predict(row["images"])))

    print(
        f"Table II on built-in data: {args.n} images per row, fields {args.size}×{args.size} "
        f"with {args.count} galaxies, trained on {args.train} fields ({args.steps} two-stage "
        f"steps, {args.e2e_steps} end-to-end steps, config {args.config}), CPU, "
        f"{args.threads} thread(s)"
    )
    print(message)
    print(f"{'model':<24}{'score':>8}{'paper':>8}{'gen s':>10}{'s/image':>10}{'train s':>10}")
    figures = {}
    for name, row in rows.items():
        score = "-" if row["score"] is None else f"{row['score']:.2f}"
        per = row["seconds"] / max(args.n, 1)
        tr = row.get("train_seconds")
        print(
            f"{name:<24}{score:>8}{PAPER[name]:>8.2f}{row['seconds']:>10.3f}{per:>10.4f}"
            f"{'-' if tr is None else f'{tr:.1f}':>10}"
        )
        figures[name] = {
            "score": row["score"],
            "paper_score": PAPER[name],
            "generation_s": row["seconds"],
            "per_image_s": per,
            "train_s": tr,
        }
    print(
        json.dumps(
            {
                "benchmark": "twostage_table",
                "n": args.n,
                "size": args.size,
                "count": args.count,
                "train_fields": args.train,
                "steps": args.steps,
                "e2e_steps": args.e2e_steps,
                "scored": scorer is not None,
                "rows": figures,
                "runs": str(work),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main_())
