"""The two targets of a PSF-aware, conditioned galaxy model (``galforge train --psf
--condition-columns flux,hlr`` on ``builtin:galsim``): re-observed through a PSF it never saw,
and conditions obeyed.

(a) **Another telescope.** ``--n`` galaxies of the model (conditions drawn from its training
    catalogue) are re-observed through a 1.0" Moffat at 0.26"/px on 64-px stamps with noise
    matched to the training S/N (``galforge generate --psf moffat:fwhm=1.0 --pixel-scale 0.26``)
    and evaluated (``galforge evaluate --upscale 0``) against ``--n`` galaxies of
    ``builtin:galsim?size=64&psf_fwhm=1.0&pixel_scale=0.26`` of the held-out seed 2026; the
    reference row is a second real draw (seed 2027) against the same.  Target: ≥ 90 % of the
    measures pass.

(b) **Conditions obeyed.** On a grid of asked r-band flux (as an instrumental magnitude
    ``−2.5 log10 flux``) and half-light radius across the training range (``--grid-n``
    galaxies a cell), the model's galaxies are measured

    * before the PSF (the galaxy itself, noiseless): total flux and circularised half-light
      radius (growth curve in elliptical apertures of the light's own second moments)
      against the asked values, galaxy by galaxy;
    * observed with the training PSF, noiseless and noisy (matched S/N), with galforge's
      isophotes (flux inside the outermost good isophote, circularised half-light semi-major
      axis) and, on the noisy stamps, galforge's photometry (Kron magnitude, sep's
      half-light radius).  An observed galaxy is larger than the asked radius by the PSF,
      so each cell is compared with GalSim twins of the same asked flux and radius (the
      rest of their parameters drawn as in the training set, seed 2026 + cell) measured
      the same way: |difference of the cell medians| in magnitude and in relative size.
      The per-galaxy error against the asked magnitude is given for both sets (the twins'
      is the measurement's own floor).

    Targets: median |Δmag| ≤ 0.1 and median relative size error ≤ 10 %.

(c) **The population with catalogue conditions** (``--population``): the model against 500
    held-out galaxies at the training PSF (seed 2026, reference seed 2027), as the zoo card
    evaluates it, beside ``pretrained:galsim-dcgan64`` (the unconditional model, its card's
    figures).

Prints the tables, then one line of JSON.  Every evaluation lands in ``--out`` and is reused
when run again.

    python benchmarks/forward_model_targets.py RUN_OR_BUNDLE --out runs/targets --workers 2
    python benchmarks/forward_model_targets.py RUN --n 40 --grid-n 4 --out /tmp/t   # smoke
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
NEW_PSF = "moffat:fwhm=1.0"
NEW_SCALE = 0.26
NEW_DATA = "builtin:galsim?n={n}&size=64&psf_fwhm=1.0&pixel_scale=0.26&seed={seed}"
TRAIN_DATA = "builtin:galsim?n={n}&size=64&seed={seed}"
FLUXES = (2e3, 6e3, 2e4, 6e4)  # counts, r band (training range 1e3 - 1e5, log-uniform)
HLRS = (0.4, 0.6, 0.8, 1.1)  # arcsec (training range 0.3 - 1.2)
MAG_TARGET = 0.1
SIZE_TARGET = 0.10
PASS_TARGET = 0.9


def _cli(args: list[str]) -> None:
    from galforge.cli import main

    rc = main(args)
    if rc:
        raise SystemExit(f"galforge {' '.join(args)}: exit {rc}")


def _evaluate(real: str, fake: str, out: Path, *, n: int, workers: int) -> dict:
    """``galforge evaluate`` into ``out`` (reused when it holds metrics.json)."""
    metrics = out / "metrics.json"
    if not metrics.is_file():
        args = ["evaluate", real, fake, "--out", str(out), "--upscale", "0", "--seed", "11"]
        args += ["-n", str(n), "--workers", str(workers), "--no-progress"]
        _cli(args)
    return json.loads(metrics.read_text())


def _counts(metrics: dict) -> tuple[int, int, list[str]]:
    rows = metrics.get("summary", [])
    failed = [str(r.get("measure")) for r in rows if not r.get("passed")]
    return sum(1 for r in rows if r.get("passed")), len(rows), failed


# --- (a) another telescope --------------------------------------------------------------------


def target_a(source: str, out: Path, n: int, workers: int) -> dict:
    fake = out / "a-generated"
    if not (fake / "catalog.csv").is_file():
        _cli(
            ["generate", source, "-n", str(n), "--seed", "11", "--out", str(fake)]
            + ["--psf", NEW_PSF, "--pixel-scale", str(NEW_SCALE), "--no-progress", "--overwrite"]
        )
    held = NEW_DATA.format(n=n, seed=HELD_OUT_SEED)
    model = _evaluate(held, str(fake), out / "a-eval", n=n, workers=workers)
    ref = _evaluate(
        held, NEW_DATA.format(n=n, seed=REFERENCE_SEED), out / "a-reference", n=n, workers=workers
    )
    p, t, failed = _counts(model)
    rp, rt, rfailed = _counts(ref)
    return {
        "psf": NEW_PSF,
        "pixel_scale": NEW_SCALE,
        "n": n,
        "passed": p,
        "total": t,
        "failed": failed,
        "reference_passed": rp,
        "reference_total": rt,
        "reference_failed": rfailed,
        "target_met": bool(t and p >= PASS_TARGET * t),
    }


# --- (b) conditions obeyed ----------------------------------------------------------------


def prepsf_measure(img: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Total flux and circularised half-light radius (arcsec) of noiseless ``N×H×W`` galaxies
    before the PSF: the growth curve in elliptical apertures of the light's own shape."""
    import torch

    from galforge.training.losses import _ellipse_mask, _light_ellipse

    t = torch.as_tensor(img, dtype=torch.float64)
    n, h, w = t.shape
    cx, cy, q, theta = _light_ellipse(t, torch.full((n,), 3.0, dtype=t.dtype))
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=t.dtype), torch.arange(w, dtype=t.dtype), indexing="ij"
    )
    zero = torch.zeros(n, dtype=t.dtype)
    r = (-_ellipse_mask(xx, yy, cx, cy, zero, q, theta, soft=-1.0)).reshape(n, -1).numpy()
    light = t.reshape(n, -1).numpy()
    flux = light.sum(axis=1)
    hlr = np.full(n, np.nan)
    for i in range(n):
        order = np.argsort(r[i])
        cum = np.cumsum(light[i][order])
        if flux[i] > 0:
            k = int(np.searchsorted(cum, 0.5 * flux[i]))
            hlr[i] = r[i][order][min(k, h * w - 1)] * scale
    return flux, hlr


def _iso(images: np.ndarray, bands, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """galforge's isophotes in r: flux inside the outermost good isophote and the
    circularised half-light radius (arcsec)."""
    from galforge.evaluation.morphology import measure_isophotes

    rows = measure_isophotes(images.astype(np.float64), bands, band="r", upscale=None)
    flux = np.array([r["flux"] for r in rows], dtype=np.float64)
    sma = np.array([r["half_light_sma"] for r in rows], dtype=np.float64)
    eps = np.array([r.get("ellipticity_half", r["ellipticity"]) for r in rows], dtype=np.float64)
    return flux, sma * np.sqrt(np.clip(1 - eps, 0, 1)) * scale


def _phot(images: np.ndarray, bands, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """galforge's photometry in r: the Kron flux and sep's half-light radius (arcsec) of the
    source nearest each stamp's centre (NaN where none is found)."""
    from galforge.evaluation.photometry import detect_and_measure

    n, _, h, w = images.shape
    flux, hlr = np.full(n, np.nan), np.full(n, np.nan)
    best = np.full(n, np.inf)
    for row in detect_and_measure(images.astype(np.float32), bands):
        i = int(row["image"])
        d = math.hypot(row["x"] - (w - 1) / 2, row["y"] - (h - 1) / 2)
        if d < best[i] and d < 6:
            best[i], flux[i], hlr[i] = d, row["flux_r"], row["half_light_radius"] * scale
    return flux, hlr


def _mag(flux) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(flux) > 0, -2.5 * np.log10(np.asarray(flux, float)), np.nan)


def target_b(bundle, grid_n: int, seed: int) -> dict:
    from galforge.data.builtin import galsim_galaxies
    from galforge.generation.observe import prepsf_galaxies, reobserve

    g = bundle.generator
    names = list(getattr(g, "condition_names", ()))
    if names[:2] != ["flux", "hlr"] and not {"flux", "hlr"} <= set(names):
        raise SystemExit(f"the model is conditioned on {names}: (b) needs flux and hlr")
    info = g.psf_info()
    scale = float(info["pixel_scale"])
    scene_scale = float(info.get("scene_pixel_scale", scale))
    train_psf = info["psf"][0]
    bands = list(bundle.bands)
    ref = bands.index("r") if "r" in bands else len(bands) // 2
    cells, per_galaxy = [], {k: [] for k in ("prepsf_dmag", "prepsf_dsize", "iso0", "kron")}
    real_gal = {k: [] for k in ("iso0", "kron")}
    for ci, (flux, hlr) in enumerate((f, r) for f in FLUXES for r in HLRS):
        cond = np.zeros((grid_n, len(names)), dtype=np.float32)
        # columns other than flux and hlr: the catalogue's median
        cond[:] = np.median(np.asarray(g.condition_sample, dtype=np.float64), axis=0)
        cond[:, names.index("flux")] = flux
        cond[:, names.index("hlr")] = hlr
        scenes, _, _ = prepsf_galaxies(bundle, grid_n, seed + ci, conditions=cond)
        f0, r0 = prepsf_measure(scenes[:, ref], scene_scale)
        obs = reobserve(bundle, grid_n, seed + ci, psf=train_psf, conditions=cond)
        realset, _, realclean = galsim_galaxies(
            grid_n,
            bundle.image_shape[-1],
            bands=bands,
            seed=HELD_OUT_SEED + ci,
            flux=(flux, flux),
            hlr=(hlr, hlr),
            pixel_scale=scale,
            return_noiseless=True,
        )
        fi0, ri0 = _iso(obs.noiseless, bands, scale)
        fi1, ri1 = _iso(obs.images, bands, scale)
        fk, rk = _phot(obs.images, bands, scale)
        qi0, si0 = _iso(realclean, bands, scale)
        qi1, si1 = _iso(realset.images, bands, scale)
        qk, sk = _phot(realset.images, bands, scale)
        m_ask = -2.5 * math.log10(flux)
        per_galaxy["prepsf_dmag"] += list(_mag(f0) - m_ask)
        per_galaxy["prepsf_dsize"] += list(r0 / hlr - 1)
        per_galaxy["iso0"] += list(_mag(fi0) - m_ask)
        per_galaxy["kron"] += list(_mag(fk) - m_ask)
        real_gal["iso0"] += list(_mag(qi0) - m_ask)
        real_gal["kron"] += list(_mag(qk) - m_ask)

        def med(a):
            a = np.asarray(a, dtype=np.float64)
            a = a[np.isfinite(a)]
            return float(np.median(a)) if len(a) else float("nan")

        cells.append(
            {
                "flux": flux,
                "mag": round(m_ask, 3),
                "hlr": hlr,
                "prepsf_dmag": med(_mag(f0) - m_ask),
                "prepsf_dsize": med(r0 / hlr - 1),
                "noiseless_iso_dmag": med(_mag(fi0)) - med(_mag(qi0)),
                "noiseless_iso_dsize": med(ri0) / med(si0) - 1,
                "noisy_iso_dmag": med(_mag(fi1)) - med(_mag(qi1)),
                "noisy_iso_dsize": med(ri1) / med(si1) - 1,
                "noisy_kron_dmag": med(_mag(fk)) - med(_mag(qk)),
                "noisy_kron_dsize": med(rk) / med(sk) - 1,
                "found": int(np.isfinite(fk).sum()),
                "found_real": int(np.isfinite(qk).sum()),
            }
        )

    def mabs(key, rows=cells):
        v = np.array([c[key] for c in rows], dtype=np.float64)
        v = np.abs(v[np.isfinite(v)])
        return float(np.median(v)) if len(v) else float("nan")

    def gabs(vals):
        v = np.abs(np.asarray(vals, dtype=np.float64))
        v = v[np.isfinite(v)]
        return float(np.median(v)) if len(v) else float("nan")

    summary = {
        "prepsf": {
            "dmag": gabs(per_galaxy["prepsf_dmag"]),
            "dsize": gabs(per_galaxy["prepsf_dsize"]),
        },
        "noiseless_isophotes": {
            "dmag": mabs("noiseless_iso_dmag"),
            "dsize": mabs("noiseless_iso_dsize"),
        },
        "noisy_isophotes": {"dmag": mabs("noisy_iso_dmag"), "dsize": mabs("noisy_iso_dsize")},
        "noisy_photometry": {"dmag": mabs("noisy_kron_dmag"), "dsize": mabs("noisy_kron_dsize")},
        "per_galaxy_vs_asked": {
            "noiseless_isophotes": gabs(per_galaxy["iso0"]),
            "noiseless_isophotes_real": gabs(real_gal["iso0"]),
            "noisy_photometry": gabs(per_galaxy["kron"]),
            "noisy_photometry_real": gabs(real_gal["kron"]),
        },
    }
    met = all(
        summary[k]["dmag"] <= MAG_TARGET and summary[k]["dsize"] <= SIZE_TARGET
        for k in ("prepsf", "noiseless_isophotes", "noisy_isophotes", "noisy_photometry")
    )
    return {"grid_n": grid_n, "cells": cells, "summary": summary, "target_met": bool(met)}


# --- (c) the population with catalogue conditions ------------------------------------------


def target_c(source: str, out: Path, n: int, workers: int) -> dict:
    held = TRAIN_DATA.format(n=n, seed=HELD_OUT_SEED)
    model = _evaluate(held, source, out / "c-eval", n=n, workers=workers)
    ref = _evaluate(
        held, TRAIN_DATA.format(n=n, seed=REFERENCE_SEED), out / "c-reference", n=n, workers=workers
    )
    p, t, failed = _counts(model)
    rp, rt, _ = _counts(ref)
    res = {"n": n, "passed": p, "total": t, "failed": failed, "reference_passed": rp}
    res["reference_total"] = rt
    card = Path(__file__).resolve().parents[1] / "src/galforge/pretrained/galsim-dcgan64/card.json"
    if card.is_file():
        ev = json.loads(card.read_text()).get("evaluation", {})
        res["unconditional"] = {
            "model": "pretrained:galsim-dcgan64",
            "passed": ev.get("passed"),
            "total": ev.get("total"),
            "n": ev.get("n_fake"),
        }
        u = res["unconditional"]
        res["target_met"] = bool(t and u["total"] and p / t >= u["passed"] / u["total"])
    return res


# --- report ------------------------------------------------------------------------------


def _fmt(v, pct=False) -> str:
    if v is None or not np.isfinite(v):
        return "   n/a"
    return f"{100 * v:+6.1f}%" if pct else f"{v:+6.3f}"


def print_report(res: dict) -> None:
    a, b, c = res.get("a"), res.get("b"), res.get("c")
    if a:
        print(f'\n(a) re-observed through {a["psf"]} at {a["pixel_scale"]}"/px, n={a["n"]}')
        print(f"  {'set':<34} {'passed':>8}")
        print(f"  {'model':<34} {a['passed']:>3}/{a['total']:<4}")
        print(
            f"  {'real vs real (seed 2027)':<34} {a['reference_passed']:>3}/{a['reference_total']:<4}"
        )
        print(f"  failed: {', '.join(a['failed']) or 'none'}")
        print(f"  target >= {PASS_TARGET:.0%}: {'met' if a['target_met'] else 'NOT met'}")
    if b:
        print(f"\n(b) conditions obeyed: {len(b['cells'])} cells of {b['grid_n']} galaxies")
        head = f"  {'mag':>7} {'hlr':>4} | {'pre-PSF dm':>10} {'dsize':>7} | {'iso0 dm':>7} {'dsize':>7}"
        head += f" | {'iso dm':>7} {'dsize':>7} | {'kron dm':>7} {'dsize':>7} | found"
        print(head)
        for cl in b["cells"]:
            print(
                f"  {cl['mag']:7.2f} {cl['hlr']:4.2f} | {_fmt(cl['prepsf_dmag']):>10} "
                f"{_fmt(cl['prepsf_dsize'], True):>7} | {_fmt(cl['noiseless_iso_dmag'])} "
                f"{_fmt(cl['noiseless_iso_dsize'], True):>7} | {_fmt(cl['noisy_iso_dmag'])} "
                f"{_fmt(cl['noisy_iso_dsize'], True):>7} | {_fmt(cl['noisy_kron_dmag'])} "
                f"{_fmt(cl['noisy_kron_dsize'], True):>7} | {cl['found']}/{cl['found_real']}"
            )
        s = b["summary"]
        print(f"  {'median |error|':<44} {'|dmag|':>7} {'|dsize|':>8}")
        for key, label in (
            ("prepsf", "before the PSF, per galaxy vs asked"),
            ("noiseless_isophotes", "observed noiseless, isophotes, vs twins"),
            ("noisy_isophotes", "observed noisy, isophotes, vs twins"),
            ("noisy_photometry", "observed noisy, photometry, vs twins"),
        ):
            print(f"  {label:<44} {s[key]['dmag']:7.3f} {100 * s[key]['dsize']:7.1f}%")
        g = s["per_galaxy_vs_asked"]
        print(
            f"  per galaxy |m - m_asked|: isophotes noiseless {g['noiseless_isophotes']:.3f} "
            f"(GalSim twins {g['noiseless_isophotes_real']:.3f}), Kron noisy "
            f"{g['noisy_photometry']:.3f} (twins {g['noisy_photometry_real']:.3f})"
        )
        print(
            f"  target |dmag| <= {MAG_TARGET}, |dsize| <= {SIZE_TARGET:.0%}: "
            f"{'met' if b['target_met'] else 'NOT met'}"
        )
    if c:
        print(f"\n(c) the population with catalogue conditions, training PSF, n={c['n']}")
        print(f"  {'model (conditions of the catalogue)':<40} {c['passed']:>3}/{c['total']}")
        print(
            f"  {'real vs real (seed 2027)':<40} {c['reference_passed']:>3}/{c['reference_total']}"
        )
        u = c.get("unconditional")
        if u:
            print(f"  {u['model'] + ' (its card)':<40} {u['passed']:>3}/{u['total']}")
        print(f"  failed: {', '.join(c['failed']) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="run folder, bundle folder or pretrained:NAME")
    ap.add_argument("--out", type=Path, required=True, help="folder for the evaluations")
    ap.add_argument("--n", type=int, default=500, help="galaxies per evaluation")
    ap.add_argument("--grid-n", type=int, default=16, help="galaxies per (mag, hlr) cell")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="a,b,c", help="which targets: a, b, c")
    args = ap.parse_args()
    import galforge

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = galforge.load(args.source)
    t0 = time.perf_counter()
    res: dict = {"source": str(args.source)}
    if "b" in only:
        res["b"] = target_b(bundle, args.grid_n, args.seed)
    if "a" in only:
        res["a"] = target_a(args.source, args.out, args.n, args.workers)
    if "c" in only:
        res["c"] = target_c(args.source, args.out, args.n, args.workers)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print_report(res)
    (args.out / "targets.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
