"""Wall time of ``galforge evaluate`` of 500 against 500 galaxies at 64 px, all measures.

Runs the command as a user does (``galforge evaluate REAL FAKE --out DIR --no-cache``, default
measures and settings: isophotes after 512-px upscaling, statmorph morphology, photometry,
colours, memorisation, power spectrum, Fréchet galaxy distance, classifier) on two seeded
``builtin:galsim`` draws of ``--n`` galaxies (REAL seed 1, FAKE seed 2), and reports

* the wall time of the command and the CPU seconds of it and every worker process it started
  (``getrusage`` of the children), with the load average before and after: on a machine
  shared with other work the wall time grows while the CPU seconds hardly move, so the
  CPU-bound wall time on an idle machine, CPU seconds / usable CPUs, is printed beside it;
* the command's own per-measure timings (``metrics.json["timings"]``: tasks, CPU seconds,
  when each measure finished) and the engine it chose;
* the verdicts (measures passed).

The two draws come from one population, so every measure should pass.  Prints a table, then
one last line of JSON.

    python benchmarks/evaluate_wall.py [--n 500] [--size 64] [--workers N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="galaxies per set")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="--workers of the command")
    ap.add_argument("--out", default=None, help="evaluation folder (default: a temporary one)")
    ap.add_argument("extra", nargs="*", help="more options for galforge evaluate (after --)")
    args = ap.parse_args()

    spec = "builtin:galsim?n={n}&size={size}&seed={seed}"
    real = spec.format(n=args.n, size=args.size, seed=1)
    fake = spec.format(n=args.n, size=args.size, seed=2)
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="galforge-evalwall-")
        out = Path(tmp.name) / "eval"
    else:
        out = Path(args.out)
    exe = Path(sys.executable).with_name("galforge")
    cmd = [str(exe), "evaluate", real, fake, "--out", str(out), "--no-cache", "--overwrite"]
    cmd += ["--no-progress"] + (["--workers", str(args.workers)] if args.workers else [])
    cmd += args.extra
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cpus = os.cpu_count() or 1
    load0 = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load1 = os.getloadavg()[0]
    if run.returncode != 0:
        sys.exit(f"galforge evaluate failed ({run.returncode}):\n{run.stderr[-3000:]}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    metrics = json.loads((out / "metrics.json").read_text())
    timings = metrics.get("timings", {})
    passed = sum(r["passed"] for r in metrics["summary"])
    total = len(metrics["summary"])
    engine = metrics["settings"].get("scheduler_used")

    print(
        f"galforge evaluate, {args.n} vs {args.n} builtin:galsim at {args.size} px, all default "
        f"measures, {cpus} usable CPUs, engine {engine}"
    )
    hdr = f"{'measure':<26}{'tasks':>7}{'CPU s':>10}{'share':>8}{'done after s':>14}"
    print(hdr)
    print("-" * len(hdr))
    measured = sum(v["cpu_s"] for v in timings.get("measures", {}).values()) or 1.0
    for name, v in timings.get("measures", {}).items():
        after = v["finished_after_s"]
        print(
            f"{name:<26}{v['tasks']:>7}{v['cpu_s']:>10.1f}{v['cpu_s'] / measured:>8.1%}"
            f"{after if after is not None else float('nan'):>14.1f}"
        )
    for key, label in (
        ("plan_s", "planning"),
        ("compute_s", "measures (wall)"),
        ("outputs_s", "figures and CSVs (wall)"),
    ):
        if key in timings:
            print(f"{label:<26}{'':>7}{'':>10}{'':>8}{timings[key]:>14.1f}")
    idle = cpu / cpus
    print(
        f"wall time of the command      {wall:8.1f} s   (load average {load0:.1f} -> {load1:.1f})"
    )
    print(
        f"CPU time, command + workers   {cpu:8.1f} s   (sum of the measures' tasks {measured:.1f})"
    )
    print(f"CPU-bound wall on {cpus} idle CPUs {idle:8.1f} s   (target <= 90 s on 2 CPUs)")
    print(f"verdicts: {passed}/{total} measures pass")
    print(
        json.dumps(
            {
                "benchmark": "evaluate_wall",
                "n": args.n,
                "size": args.size,
                "cpus": cpus,
                "engine": engine,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "cpu_bound_wall_s": round(idle, 1),
                "load_average_before": load0,
                "load_average_after": load1,
                "passed": passed,
                "measures": total,
                "timings": timings,
            }
        )
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
