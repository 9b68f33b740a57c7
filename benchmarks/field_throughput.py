"""Deep-field throughput against this machine's FLOP bound, and memory against field size.

Measures
  (a) float32 matmul GFLOP/s (best of several 2048^2 products),
  (b) the Spatial GAN generator's FLOPs per output pixel, counted from its layers,
  (c) hence the FLOP-bound Mpix/s, and
  (d) galforge's tiled generation Mpix/s (compile warm-up included) and peak RSS for each
      field size, each size in a fresh process so that its peak RSS is its own.

Usage::

    python benchmarks/field_throughput.py --sizes 2048 4096 8192 [--tile 1024]
        [--compile auto|on|off] [--no-channels-last] [--format zarr|fits|npy] [--threads N]

Prints a table, then one JSON line with matmul_gflops, flops_per_pixel, bound_mpix_s,
mpix_s and fraction_of_bound (largest field) and per-size figures (mpix_s, peak_rss_mb,
fraction_of_bound, warmup_s).  Also checks on a small field that the tiled (and, when on,
compiled) output equals a one-shot pass.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def _generator(widths, device="cpu"):
    from galforge.models.sgan import SGANGenerator

    torch.manual_seed(0)
    return SGANGenerator(3, widths).eval().to(device)


def child(args) -> dict:
    """One field size in this process; returns its figures."""
    from galforge.generation.field import generate_field

    if args.threads:
        torch.set_num_threads(args.threads)
    g = _generator(args.widths, args.device)
    compile_ = {"auto": "auto", "on": True, "off": False}[args.compile]
    gflops_before = matmul_gflops(repeats=3)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"field.{args.format}"
        t0 = time.perf_counter()
        res = generate_field(
            g,
            None,
            ("g", "r", "i"),
            out,
            f"{args.child}x{args.child}",
            tile=args.tile,
            seed=0,
            fmt=args.format,
            compile=compile_,
            channels_last=not args.no_channels_last,
            progress=False,
        )
        total = time.perf_counter() - t0
    gflops_after = matmul_gflops(repeats=3)
    pixels = args.child * args.child
    return {
        "size": args.child,
        "tiles": res.tiles_total,
        "seconds": total,
        "mpix_s": pixels / total / 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        # the cores are shared: the bound of this size uses the matmul speed around its run
        "matmul_gflops": (gflops_before + gflops_after) / 2,
        "bound_mpix_s": (gflops_before + gflops_after) / 2 * 1e9 / g.flops_per_pixel() / 1e6,
    }


def check_exact(args) -> float:
    """Max |tiled - one-shot| on a small field with the benchmark's settings."""
    from galforge.generation.field import generate_field, read_field, render_one_shot

    g = _generator(args.widths, args.device)
    compile_ = {"auto": False, "on": True, "off": False}[args.compile]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "small.npy"
        generate_field(
            g,
            None,
            ("g", "r", "i"),
            out,
            "320x288",
            tile=128,
            seed=1,
            compile=compile_,
            channels_last=not args.no_channels_last,
            progress=False,
        )
        tiled, _ = read_field(out)
    ref = render_one_shot(g, None, "320x288", seed=1)
    return float(np.abs(tiled - ref).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--format", choices=["zarr", "fits", "npy"], default="zarr")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--widths", type=int, nargs=4, default=[256, 128, 64, 32])
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda (Mpix/s on a GPU)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    gflops = matmul_gflops()
    g = _generator(args.widths)
    fpp = g.flops_per_pixel()
    bound = gflops * 1e9 / fpp / 1e6
    print(f"matmul float32: {gflops:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    print(
        f"generator: widths {args.widths}, {fpp / 1e3:.1f} kFLOP per output pixel, "
        f"receptive margin {g.receptive_field()} latent px"
    )
    print(f"FLOP bound: {bound:.3f} Mpix/s")
    max_diff = None if args.skip_check else check_exact(args)
    if max_diff is not None:
        print(
            f"tiled vs one-shot (320x288, tile 128, compile {args.compile}): "
            f"max |diff| = {max_diff:.2e}"
        )

    rows = []
    for size in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(size),
            "--tile",
            str(args.tile),
            "--compile",
            args.compile,
            "--format",
            args.format,
            "--device",
            args.device,
            "--widths",
            *map(str, args.widths),
        ]
        if args.no_channels_last:
            cmd.append("--no-channels-last")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{size}: failed\n{done.stderr[-2000:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["fraction_of_bound"] = row["mpix_s"] / row["bound_mpix_s"]
        rows.append(row)
        print(f"  done {size}: {row['mpix_s']:.3f} Mpix/s", flush=True)

    print()
    print(
        f"{'field':>12} {'tiles':>6} {'seconds':>9} {'Mpix/s':>8} {'bound':>8} "
        f"{'of bound':>9} {'peak RSS MB':>12}"
    )
    for r in rows:
        print(
            f"{r['size']:>5}x{r['size']:<6} {r['tiles']:>6} {r['seconds']:>9.1f} "
            f"{r['mpix_s']:>8.3f} {r['bound_mpix_s']:>8.3f} {r['fraction_of_bound']:>9.2f} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    print(
        "(bound per size: float32 matmul GFLOP/s measured just before and after that field, "
        "divided by the FLOPs per pixel; Mpix/s includes the compile warm-up)"
    )
    largest = max(rows, key=lambda r: r["size"]) if rows else None
    print(
        json.dumps(
            {
                "matmul_gflops": round(gflops, 2),
                "flops_per_pixel": fpp,
                "bound_mpix_s": round(bound, 4),
                "mpix_s": round(largest["mpix_s"], 4) if largest else None,
                "fraction_of_bound": round(largest["fraction_of_bound"], 3) if largest else None,
                "tile": args.tile,
                "compile": args.compile,
                "channels_last": not args.no_channels_last,
                "max_abs_diff_tiled_vs_one_shot": max_diff,
                "sizes": {
                    str(r["size"]): {
                        "mpix_s": round(r["mpix_s"], 4),
                        "bound_mpix_s": round(r["bound_mpix_s"], 4),
                        "fraction_of_bound": round(r["fraction_of_bound"], 3),
                        "peak_rss_mb": round(r["peak_rss_mb"], 1),
                        "seconds": round(r["seconds"], 1),
                    }
                    for r in rows
                },
                "peak_rss_mb": {str(r["size"]): round(r["peak_rss_mb"], 1) for r in rows},
            }
        )
    )


if __name__ == "__main__":
    main()
