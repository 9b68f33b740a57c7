"""Time full StyleGAN2 + ADA training steps of named configs (all phases on their schedule).

Each config's recipe runs ``--steps`` consecutive steps from step 0 on one fixed batch, so the
lazy phases come at their cadence (path length every 4 steps, R1 every 16: 16 steps are
one whole cycle), with ADA on at a fixed starting ``p`` (``--ada-p``; it then adapts as in
training).  After ``--warmup`` untimed steps (which run the first steps' phases: pass
``--warmup 0`` to time them too) the table gives the mean seconds per step, the seconds per
thousand images and the ratio to the first config; the last line is the same figures as JSON
(one record per config under ``configs``; the top-level keys are the first config's).

    python benchmarks/stylegan2_step.py --configs small paper256 --resolution 64 --batch 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from galforge.training.recipes import get_recipe


def time_config(name: str, args, device: torch.device) -> dict:
    cls = get_recipe("stylegan2")
    over = dict(kv.split("=", 1) for kv in args.set)
    over = {k: json.loads(v) if v[:1] in "0123456789-[{tfn" else v for k, v in over.items()}
    recipe = cls(
        {"config": name, "image_size": args.resolution, **over},
        channels=args.channels,
        image_size=args.resolution,
        device=device,
        seed=0,
    )
    recipe.make_batches(None, args.batch, 0)
    if recipe.augment is not None and hasattr(recipe.augment, "p"):
        recipe.augment.p = float(args.ada_p)
    data_rng = torch.Generator().manual_seed(0)
    real = (
        torch.rand(args.batch, args.channels, args.resolution, args.resolution, generator=data_rng)
        * 2
        - 1
    ).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, phases = [], []
    for step in range(args.warmup + args.steps):
        rng = torch.Generator(device=device).manual_seed(1000 + step)
        sync()
        t = time.perf_counter()
        recipe.train_step(real, step, rng)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
            phases.append([p.name for p in recipe.phases() if p.due(step)])
    mean = statistics.fmean(times)
    return {
        "config": name,
        "resolution": args.resolution,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps": len(times),
        "sec_per_step": mean,
        "sec_per_kimg": mean / args.batch * 1000.0,
        "min_step_s": min(times),
        "max_step_s": max(times),
        "g_params": sum(p.numel() for p in recipe.G.parameters()),
        "d_params": sum(p.numel() for p in recipe.D.parameters()),
        "phase_runs": {p.name: sum(p.name in ph for ph in phases) for p in recipe.phases()},
        "ada_p": float(getattr(recipe.augment, "p", 0.0)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["small", "paper256"])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16, help="timed steps (16: one R1 cycle)")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--ada-p", type=float, default=0.2, help="ADA's starting probability")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model option of every config (model.KEY)",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    rows = [time_config(name, args, device) for name in args.configs]
    print(
        f"StyleGAN2 + ADA training step at {args.resolution}², batch {args.batch}, "
        f"{args.channels} bands, device={device}, threads={torch.get_num_threads()}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    print(
        f"{'config':<10} {'G M':>6} {'D M':>6} {'steps':>5} {'s/step':>8} {'s/kimg':>9} "
        f"{'min':>7} {'max':>7} {'ratio':>6}  phases run"
    )
    base = rows[0]["sec_per_kimg"]
    for r in rows:
        r["ratio_to_first"] = r["sec_per_kimg"] / base
        runs = ", ".join(f"{k} {v}" for k, v in r["phase_runs"].items())
        print(
            f"{r['config']:<10} {r['g_params'] / 1e6:6.2f} {r['d_params'] / 1e6:6.2f} "
            f"{r['steps']:5d} {r['sec_per_step']:8.3f} {r['sec_per_kimg']:9.1f} "
            f"{r['min_step_s']:7.3f} {r['max_step_s']:7.3f} {r['ratio_to_first']:6.2f}  {runs}"
        )
    first = rows[0]
    print(
        json.dumps(
            {
                **{
                    k: first[k]
                    for k in ("sec_per_kimg", "config", "resolution", "batch", "device", "threads")
                },
                "configs": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
