"""Do two independent halves of one real set pass every measure of ``galforge evaluate``?

A calibration check of the verdicts (:mod:`galforge.evaluation.verdicts`): ``2n`` GalSim
galaxies (``builtin:galsim``, one seeded draw) are split into two halves of ``n``, and the
second half is evaluated against the first with every default measure.  Both halves come
from one population, so every row should pass, at every ``n``; the rules account for sample
size (fractions with ≥ and a binomial allowance, the classifier AUC against its fold spread,
the NN ratio against distribution-free bounds of its medians, KS rows at a family-wise
level).  Prints the summary table (value, threshold, n, failure rates, verdict), then one
last line of JSON with the same figures.

    python benchmarks/evaluate_real_halves.py --n 500 [--size 32] [--seed 3] [--workers 2]

Isophotes are fitted at native resolution (``upscale=None``) to keep the run short.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="galaxies per half")
    ap.add_argument("--size", type=int, default=32, help="stamp size in pixels")
    ap.add_argument("--seed", type=int, default=3, help="seed of the GalSim draw")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="evaluation folder (default: a temporary one)")
    args = ap.parse_args()

    from galforge.data import ImageSet, load_images
    from galforge.evaluation import evaluate

    t0 = time.perf_counter()
    full = load_images(f"builtin:galsim?n={2 * args.n}&size={args.size}&seed={args.seed}")
    n = args.n
    a = ImageSet(
        images=full.images[:n],
        bands=full.bands,
        meta=full.meta[:n],
        units=full.units,
        source=f"{full.source} [first half]",
    )
    b = ImageSet(
        images=full.images[n:],
        bands=full.bands,
        meta=full.meta[n:],
        units=full.units,
        source=f"{full.source} [second half]",
    )
    out = args.out or tempfile.mkdtemp(prefix="galforge-halves-")
    m = evaluate(
        a, b, out, upscale=None, workers=args.workers, progress=False, cache=False, seed=args.seed
    )
    seconds = time.perf_counter() - t0

    def f(v, pct=False):
        if v is None:
            return "–"
        return f"{100 * v:.1f}%" if pct else f"{v:.4g}"

    rows = m["summary"]
    width = max(len(r["measure"]) for r in rows)
    print(f"two halves of builtin:galsim (n = {n} each, {args.size} px, seed {args.seed})")
    print(
        f"{'measure':<{width}}  {'value':>10}  {'threshold':>10}  {'n real':>6}  "
        f"{'n fake':>6}  {'fail real':>9}  {'fail fake':>9}  result"
    )
    for r in rows:
        print(
            f"{r['measure']:<{width}}  {f(r['value']):>10}  {f(r['threshold']):>10}  "
            f"{f(r['n_real']):>6}  {f(r['n_fake']):>6}  "
            f"{f(r.get('failure_rate_real'), True):>9}  "
            f"{f(r.get('failure_rate_fake'), True):>9}  "
            f"{'pass' if r['passed'] else 'FAIL'}" + (f" ({r['note']})" if r.get("note") else "")
        )
    n_pass = sum(r["passed"] for r in rows)
    print(f"{n_pass}/{len(rows)} measures pass in {seconds / 60:.1f} min")
    print(
        json.dumps(
            {
                "benchmark": "evaluate_real_halves",
                "n": n,
                "size": args.size,
                "seed": args.seed,
                "passed": n_pass,
                "measures": len(rows),
                "seconds": round(seconds, 1),
                "summary": {
                    r["measure"]: {
                        "value": r["value"],
                        "threshold": r["threshold"],
                        "passed": r["passed"],
                    }
                    for r in rows
                },
            }
        )
    )


if __name__ == "__main__":
    main()
