"""Validation of a generated deep field against a real one: the field report.

:func:`evaluate_fields` takes two ``C×H×W`` fields in the same physical units and bands,
extracts sources from both the same way (:func:`galforge.evaluation.photometry.measure_field`,
SExtractor's settings) and writes ``report.html``, ``metrics.json``, the two source
catalogues as CSV and PNG figures into a folder.  Its summary rows (each with its value,
threshold, rule, ``n_real``/``n_fake`` and verdict; targets in :data:`FIELD_THRESHOLDS`):

* **density** -- detections per Mpix, generated / real within ``density`` (10 %), widened to
  ``z·σ_ratio`` on fields too small to measure 10 %: σ_ratio combines the relative errors of
  both densities, each the larger of Poisson ``1/√n`` and the scatter of the counts over
  4×4 sub-areas of its field (clustered sources vary more than Poisson);
* **magnitudes** per band -- two-sample KS p ≥ ``ks_p / m`` (``ks_p`` 0.05 family-wise:
  Bonferroni over the ``m`` KS rows, as for stamps, so two draws of one process fail any
  KS row with probability at most 0.05), and the median magnitude
  difference ``|Δm| ≤ max(dmag, z·SE)`` (0.05 mag; SE the bootstrap error of the difference
  of the two medians);
* **colours** -- KS p ≥ ``ks_p / m`` of each adjacent band pair's colour (``R−G``, ``G−B``),
  from the sources with a finite magnitude in both bands;
* **sizes and shapes** -- KS p ≥ ``ks_p / m`` of the half-light radius and the ellipticity
  ``1 − b/a`` of the extracted sources;
* **clustering** -- the Landy–Szalay ``w(θ)`` of the source positions
  (:func:`galforge.evaluation.fieldstats.angular_correlation`): passes when in at least
  ``wtheta_fraction`` (75 %) of the separation bins the generated ``w`` lies inside the real
  one's ``z``σ band (σ² = σ_real² + σ_generated², jackknife errors);
* **sky** per band -- the robust sky σ of source-free pixels, generated / real within
  ``sky`` (5 %), and the noise correlation length within ``corr_length`` (25 %);
* **realism classifier** -- the cross-validated ROC AUC of the gradient-boosting classifier
  of :func:`galforge.evaluation.metrics.realism_classifier` on 64-px crops cut at the same
  grid positions from both fields (at most 1,000; log power spectrum + pixel histogram per
  band): passes
  when ``AUC ≤ auc + z·σ_folds/√folds`` (``auc`` 0.75).

With a truth catalogue of the generated field, the extraction's completeness and magnitude
bias per bin of true magnitude are added (a figure and ``metrics["truth"]``, no verdict: they
describe the mock survey rather than compare two fields).

Rows resting on fewer than ``min_objects`` (10) sources in either field fail.  This module
works on arrays only; whoever holds a model tiles the field and hands the pixels over.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from galforge.errors import EvaluationError
from galforge.evaluation import fieldstats
from galforge.evaluation.photometry import DetectionOptions, find_mag_column, measure_field
from galforge.evaluation.registry import json_safe
from galforge.evaluation.stats import ks_2samp
from galforge.evaluation.verdicts import summary_row

__all__ = ["FIELD_THRESHOLDS", "evaluate_fields", "check_fields", "format_summary"]

#: targets of a field model (``--threshold NAME=VALUE`` with ``--fields``)
FIELD_THRESHOLDS = {
    "density": 0.10,
    "ks_p": 0.05,
    "dmag": 0.05,
    "sky": 0.05,
    "corr_length": 0.25,
    "auc": 0.75,
    "wtheta_fraction": 0.75,
    "z": 2.0,
    "min_objects": 10,
}

CROP = 64
#: crops per field for the classifier (a seeded subset of the grid on larger fields)
MAX_CROPS = 1000
BOOTSTRAP = 200


def check_fields(real, fake, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Both fields as float32 ``C×H×W`` with one channel per band; raises
    :class:`EvaluationError` naming the field that does not fit."""
    out = []
    for what, arr in (("REAL_FIELD", real), ("FAKE_FIELD", fake)):
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise EvaluationError(f"{what}: expected one C×H×W field, got shape {a.shape}")
        if a.shape[0] != len(bands):
            raise EvaluationError(
                f"{what}: {a.shape[0]} band(s) but the comparison has {len(bands)} "
                f"({', '.join(bands)}); give fields with the same bands"
            )
        if min(a.shape[1:]) < 2 * CROP:
            raise EvaluationError(
                f"{what}: a {a.shape[1]}×{a.shape[2]} field is too small; "
                f"fields need at least {2 * CROP} pixels a side"
            )
        out.append(a)
    return out[0], out[1]


def _column(rows, key) -> np.ndarray:
    v = np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)
    return v[np.isfinite(v)]


def _mags(rows, band) -> np.ndarray:
    key = find_mag_column(rows[0], band) if rows else None
    return (
        np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)
        if key
        else np.full(len(rows), math.nan)
    )


def _median_se(x: np.ndarray, rng: np.random.Generator) -> float:
    if x.size < 2:
        return math.nan
    meds = np.median(x[rng.integers(0, x.size, size=(BOOTSTRAP, x.size))], axis=1)
    return float(np.std(meds))


KS_RULE = "KS p ≥ ks_p / m (m KS rows, Bonferroni)"


def _ks_row(name, a, b, t, group, **extra) -> tuple[dict, dict]:
    detail = {"n_real": int(a.size), "n_fake": int(b.size)}
    thr = t["ks_p"] / t["_ks_rows"]
    if min(a.size, b.size) < t["min_objects"]:
        return summary_row(
            name,
            None,
            thr,
            False,
            KS_RULE,
            group,
            n_real=a.size,
            n_fake=b.size,
            note="too few objects measured to test",
            **extra,
        ), detail
    stat, p = ks_2samp(a, b)
    detail.update(
        ks_stat=float(stat),
        ks_p=float(p),
        median_real=float(np.median(a)),
        median_fake=float(np.median(b)),
    )
    return summary_row(
        name, float(p), thr, p >= thr, KS_RULE, group, n_real=a.size, n_fake=b.size, **extra
    ), detail


def _density_rel_error(rows, shape, grid: int = 4) -> float:
    """Relative error of a field's source density: the larger of Poisson (1/√n) and the
    scatter of the counts in ``grid``² sub-areas (clustering makes counts vary more than
    Poisson), ``std(cell counts) / (mean · √cells)``."""
    n = len(rows)
    if n == 0:
        return math.inf
    h, w = shape[-2], shape[-1]
    xy = np.array([[r["x"], r["y"]] for r in rows])
    cx = np.clip(((xy[:, 0] + 0.5) / w * grid).astype(int), 0, grid - 1)
    cy = np.clip(((xy[:, 1] + 0.5) / h * grid).astype(int), 0, grid - 1)
    counts = np.bincount(cy * grid + cx, minlength=grid * grid).astype(float)
    cells = float(np.std(counts, ddof=1) / (counts.mean() * math.sqrt(grid * grid)))
    return max(1.0 / math.sqrt(n), cells)


def _crop_origins(shape, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping ``size`` crops of a centred grid."""
    h, w = shape
    ny, nx = h // size, w // size
    oy, ox = (h - ny * size) // 2, (w - nx * size) // 2
    return [(oy + i * size, ox + j * size) for i in range(ny) for j in range(nx)]


def _classifier(real, fake, seed: int) -> dict:
    from galforge.evaluation import features
    from galforge.evaluation.metrics import realism_classifier

    # the same grid positions in both fields (the grid of the area they share)
    shape = (min(real.shape[1], fake.shape[1]), min(real.shape[2], fake.shape[2]))
    origins = _crop_origins(shape, CROP)
    if len(origins) > MAX_CROPS:  # a seeded subset of the grid on large fields
        pick = np.random.default_rng(seed).choice(len(origins), MAX_CROPS, replace=False)
        origins = [origins[i] for i in np.sort(pick)]

    def cut(field):
        return np.stack([field[:, y : y + CROP, x : x + CROP] for y, x in origins])

    cr, cf = cut(real), cut(fake)
    edges = features.histogram_edges(cr, bins=32)
    fr = features.realism_features(cr, edges, max_k=CROP // 2)
    ff = features.realism_features(cf, edges, max_k=CROP // 2)
    res = realism_classifier(fr, ff, folds=5, seed=seed)
    res["crop"] = CROP
    return res


def _figures(out: Path, real, fake, bands, units, cats, res, notes) -> list[dict]:
    from matplotlib.figure import Figure

    from galforge.data import display
    from galforge.evaluation.photometry import plot_magnitudes
    from galforge.evaluation.stats import plot_histograms

    figs: list[dict] = []

    def attempt(what, fn):
        try:
            fn()
        except Exception as exc:  # a figure must not sink the report
            notes.append(f"figure {what} not drawn: {type(exc).__name__}: {exc}")

    def pictures():
        stretch = display.fit_stretch(real, bands, units, mode="lupton")
        pics = [display.to_rgb(arr[None], bands, stretch=stretch)[0] for arr in (real, fake)]
        _side_by_side(out / "fields.png", pics, ["real", "generated"])
        _, h, w = real.shape
        s = min(256, h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        zoom = [p[y0 : y0 + s, x0 : x0 + s] for p in pics]
        _side_by_side(
            out / "fields_zoom.png", zoom, ["real (centre)", "generated (centre)"], scale=2
        )
        figs.append(
            {
                "section": "Fields",
                "file": "fields.png",
                "caption": "The two fields on ONE asinh (Lupton) stretch fitted on the "
                "real field (black: its sky median, white: its 99.5th "
                "percentile).",
            }
        )
        figs.append(
            {
                "section": "Fields",
                "file": "fields_zoom.png",
                "caption": f"Central {s}×{s} px of each, same stretch, enlarged 2×.",
            }
        )

    attempt("of the fields", pictures)

    def mags():
        plot_magnitudes(
            cats["real"], cats["fake"], bands, out / "magnitudes.png", labels=("real", "generated")
        )
        figs.append(
            {
                "section": "Sources",
                "file": "magnitudes.png",
                "caption": "Magnitudes of the extracted sources per band.",
            }
        )

    attempt("of magnitudes", mags)

    def shapes():
        cols = ["half_light_radius", "ellipticity"] + [f"colour_{k}" for k in res["colours"]]
        plot_histograms(
            cats["real"],
            cats["fake"],
            cols,
            out / "sources.png",
            labels=("real", "generated"),
            only_ok=False,
        )
        figs.append(
            {
                "section": "Sources",
                "file": "sources.png",
                "caption": "Half-light radius (px), ellipticity and colours of the "
                "extracted sources.",
            }
        )

    attempt("of source shapes", shapes)

    def wtheta():
        fig = Figure(figsize=(5.5, 4), layout="constrained")
        ax = fig.subplots()
        for key, lab, col in (("real", "real", "C0"), ("fake", "generated", "C1")):
            wt = res["wtheta"][key]
            c = np.asarray(wt["centres"], float) * (1.0 if key == "real" else 1.04)
            ww = np.asarray(wt["w"], float)
            s = np.asarray(wt["sigma"], float)
            ax.errorbar(c, ww, yerr=s, fmt="o-", ms=3, color=col, label=f"{lab} (n={wt['n']})")
            if key == "real":
                z = res["wtheta"]["comparison"]["z"]
                sf = np.asarray(res["wtheta"]["fake"]["sigma"], float)
                band = z * np.sqrt(s**2 + sf**2)
                ax.fill_between(
                    c, ww - band, ww + band, color=col, alpha=0.15, label=f"real ± {z:g}σ"
                )
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("separation θ (px)")
        ax.set_ylabel("w(θ) (Landy–Szalay)")
        ax.legend(fontsize=8)
        fig.savefig(out / "wtheta.png", dpi=100)
        figs.append(
            {
                "section": "Clustering",
                "file": "wtheta.png",
                "caption": "Two-point angular correlation of the extracted sources, "
                f"{res['wtheta']['real']['error']} errors.",
            }
        )

    attempt("of w(θ)", wtheta)

    def sky():
        fig = Figure(figsize=(5.5, 4), layout="constrained")
        ax = fig.subplots()
        for i, b in enumerate(bands):
            for key, ls in (("real", "-"), ("fake", "--")):
                acf = res["sky"][b][key]["acf"]
                ax.plot(
                    acf["radius"],
                    acf["rho"],
                    ls,
                    color=f"C{i}",
                    label=f"{b} {'real' if key == 'real' else 'generated'}",
                )
        ax.axhline(1 / math.e, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("lag (px)")
        ax.set_ylabel("noise autocorrelation ρ")
        ax.legend(fontsize=7, ncols=2)
        fig.savefig(out / "noise_acf.png", dpi=100)
        figs.append(
            {
                "section": "Sky",
                "file": "noise_acf.png",
                "caption": "Autocorrelation of the source-free sky pixels (ring means); "
                "the dotted line is 1/e, where the correlation length is "
                "read.",
            }
        )

    attempt("of the sky noise", sky)

    if res.get("truth"):

        def truth():
            fig = Figure(figsize=(10, 4), layout="constrained")
            a1, a2 = fig.subplots(1, 2)
            for i, (b, t) in enumerate(res["truth"]["bands"].items()):
                c = np.asarray(t["centres"], float)
                comp = np.array([np.nan if v is None else v for v in t["completeness"]])
                med = np.array([np.nan if v is None else v for v in t["dmag_median"]])
                lo = np.array([np.nan if v is None else v for v in t["dmag_p16"]])
                hi = np.array([np.nan if v is None else v for v in t["dmag_p84"]])
                a1.plot(c, comp, "o-", ms=3, color=f"C{i}", label=b)
                a2.plot(c, med, "o-", ms=3, color=f"C{i}", label=b)
                a2.fill_between(c, lo, hi, color=f"C{i}", alpha=0.15)
            a1.set_xlabel("true magnitude")
            a1.set_ylabel("completeness")
            a1.set_ylim(-0.02, 1.05)
            a2.axhline(0, color="0.5", lw=0.8)
            a2.set_xlabel("true magnitude")
            a2.set_ylabel("measured − true (median, 16–84 %)")
            a1.legend(fontsize=8)
            fig.savefig(out / "completeness.png", dpi=100)
            figs.append(
                {
                    "section": "Truth",
                    "file": "completeness.png",
                    "caption": "Completeness and magnitude bias of the extraction "
                    "against the generated field's truth catalogue "
                    f"(match radius {res['truth']['radius']:g} px).",
                }
            )

        attempt("of completeness", truth)
    return figs


def _side_by_side(
    path: Path, pics: list[np.ndarray], titles: list[str], scale: int = 1, gap: int = 12
) -> None:
    from PIL import Image, ImageDraw

    ims = [Image.fromarray(p) for p in pics]
    if scale > 1:
        ims = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in ims]
    head = 18
    width = sum(im.width for im in ims) + gap * (len(ims) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in ims) + head), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for im, t in zip(ims, titles, strict=True):
        canvas.paste(im, (x, head))
        draw.text((x + 4, 3), t, fill=(255, 255, 255))
        x += im.width + gap
    canvas.save(path)


def evaluate_fields(
    real_field,
    fake_field,
    bands: Sequence[str],
    out_dir=None,
    *,
    units: str = "",
    real_source: str = "real",
    fake_source: str = "generated",
    truth: dict | None = None,
    match_radius: float = 2.0,
    thresholds: dict | None = None,
    seed: int = 0,
    options: DetectionOptions | None = None,
    tile: int = 1024,
    overlap: int = 128,
    notes: Sequence[str] | None = None,
    **detect_overrides,
) -> dict:
    """Compare two ``C×H×W`` fields; write the report into ``out_dir`` (when given) and
    return the metrics (the content of ``metrics.json``).

    ``truth``: columns of the generated field's truth catalogue
    (:func:`galforge.evaluation.fieldstats.read_truth`), matched to the generated field's
    sources within ``match_radius`` px.  ``options``/``detect_overrides``: source extraction
    (:class:`~galforge.evaluation.photometry.DetectionOptions`, e.g. ``zeropoint=``,
    ``thresh=``, ``minarea=``).  ``thresholds`` override :data:`FIELD_THRESHOLDS`;
    ``notes`` start the report's notes.
    """
    bands = tuple(str(b) for b in bands)
    real, fake = check_fields(real_field, fake_field, bands)
    t = {**FIELD_THRESHOLDS, **(thresholds or {})}
    bad = sorted(set(thresholds or {}) - set(FIELD_THRESHOLDS))
    if bad:
        raise EvaluationError(
            f"unknown field threshold(s) {', '.join(bad)}; choose from "
            f"{', '.join(FIELD_THRESHOLDS)}"
        )
    opts = DetectionOptions.build(options, **detect_overrides)
    # KS rows: magnitudes per band, adjacent colours, half-light radius, ellipticity
    t["_ks_rows"] = 2 * len(bands) + 1
    rng = np.random.default_rng(seed)
    notes = list(notes or [])
    cats = {
        k: measure_field(v, bands, opts, tile=tile, overlap=overlap)
        for k, v in (("real", real), ("fake", fake))
    }
    rows: list[dict] = []
    res: dict = {}

    # density
    area = {k: v.shape[1] * v.shape[2] / 1e6 for k, v in (("real", real), ("fake", fake))}
    n = {k: len(v) for k, v in cats.items()}
    dens = {k: n[k] / area[k] for k in n}
    ratio = dens["fake"] / dens["real"] if dens["real"] > 0 else math.nan
    rel = {k: _density_rel_error(cats[k], v.shape) for k, v in (("real", real), ("fake", fake))}
    tol = t["density"]
    if n["real"] and n["fake"]:
        tol = max(tol, t["z"] * math.sqrt(rel["real"] ** 2 + rel["fake"] ** 2))
    res["density"] = {
        "per_mpix": dens,
        "ratio": ratio,
        "n": n,
        "area_mpix": area,
        "relative_error": rel,
        "tolerance": tol,
    }
    few = min(n.values()) < t["min_objects"]
    rows.append(
        summary_row(
            "detections per Mpix (generated / real)",
            ratio,
            tol,
            (not few) and abs(ratio - 1) <= tol,
            "|ratio − 1| ≤ max(density, z·σ_ratio)",
            "density",
            n_real=n["real"],
            n_fake=n["fake"],
            note="too few objects measured to test" if few else None,
        )
    )

    # magnitudes per band
    mags = {k: {b: _mags(cats[k], b) for b in bands} for k in cats}
    res["magnitudes"] = {"system": opts.magnitude_system, "bands": {}}
    for b in bands:
        a, c = mags["real"][b], mags["fake"][b]
        a, c = a[np.isfinite(a)], c[np.isfinite(c)]
        row, detail = _ks_row(f"magnitude KS p ({b})", a, c, t, "magnitudes")
        rows.append(row)
        if min(a.size, c.size) >= t["min_objects"]:
            d = float(np.median(c) - np.median(a))
            se = math.hypot(_median_se(a, rng), _median_se(c, rng))
            thr = max(t["dmag"], t["z"] * se)
            detail.update(median_dmag=d, median_dmag_se=se, median_dmag_threshold=thr)
            rows.append(
                summary_row(
                    f"median Δmag ({b})",
                    d,
                    thr,
                    abs(d) <= thr,
                    "|Δ median| ≤ max(dmag, z·SE)",
                    "magnitudes",
                    n_real=a.size,
                    n_fake=c.size,
                )
            )
        else:
            rows.append(
                summary_row(
                    f"median Δmag ({b})",
                    None,
                    t["dmag"],
                    False,
                    "|Δ median| ≤ max(dmag, z·SE)",
                    "magnitudes",
                    n_real=a.size,
                    n_fake=c.size,
                    note="too few objects measured to test",
                )
            )
        res["magnitudes"]["bands"][b] = detail

    # colours of adjacent bands
    res["colours"] = {}
    for b1, b2 in zip(bands[:-1], bands[1:], strict=True):
        key = f"{b1}-{b2}"
        vals = {}
        for k in cats:
            col = mags[k][b1] - mags[k][b2]
            for r, v in zip(cats[k], col, strict=True):
                r[f"colour_{key}"] = float(v)
            vals[k] = col[np.isfinite(col)]
        row, detail = _ks_row(f"colour KS p ({b1}−{b2})", vals["real"], vals["fake"], t, "colours")
        rows.append(row)
        res["colours"][key] = detail

    # sizes and shapes
    res["shapes"] = {}
    for col, label in (("half_light_radius", "half-light radius"), ("ellipticity", "ellipticity")):
        a, c = _column(cats["real"], col), _column(cats["fake"], col)
        if col == "half_light_radius":
            a, c = a[a > 0], c[c > 0]
        row, detail = _ks_row(f"{label} KS p", a, c, t, "shapes")
        rows.append(row)
        res["shapes"][col] = detail

    # clustering
    edges = fieldstats.separation_bins(real.shape)
    wt = {
        k: fieldstats.angular_correlation(
            [r["x"] for r in cats[k]],
            [r["y"] for r in cats[k]],
            v.shape,
            edges=edges,
            seed=seed + i,
        )
        for i, (k, v) in enumerate((("real", real), ("fake", fake)))
    }
    cmp_w = fieldstats.compare_wtheta(wt["real"], wt["fake"], z=t["z"])
    res["wtheta"] = {**wt, "comparison": cmp_w}
    few = min(n.values()) < t["min_objects"] or cmp_w["n_bins"] == 0
    rows.append(
        summary_row(
            "w(θ): fraction of bins in the real 2σ band",
            cmp_w["fraction"],
            t["wtheta_fraction"],
            (not few) and cmp_w["fraction"] >= t["wtheta_fraction"],
            "fraction of θ bins with |w_gen − w_real| ≤ z·√(σ_real² + σ_gen²) ≥ wtheta_fraction",
            "clustering",
            n_real=n["real"],
            n_fake=n["fake"],
            note="too few objects measured to test" if few else None,
            bins=cmp_w["n_bins"],
        )
    )

    # sky
    masks = {"real": fieldstats.source_mask(real), "fake": fieldstats.source_mask(fake)}
    sky = {
        k: fieldstats.sky_statistics(v, bands, masks[k])
        for k, v in (("real", real), ("fake", fake))
    }
    res["sky"] = {b: {"real": sky["real"][b], "fake": sky["fake"][b]} for b in bands}
    for b in bands:
        sr, sf = sky["real"][b], sky["fake"][b]
        r_sig = sf["sigma"] / sr["sigma"] if sr["sigma"] > 0 else math.nan
        res["sky"][b]["sigma_ratio"] = r_sig
        rows.append(
            summary_row(
                f"sky σ ratio ({b})",
                r_sig,
                t["sky"],
                abs(r_sig - 1) <= t["sky"],
                "|σ_gen / σ_real − 1| ≤ sky",
                "sky",
                n_real=sr["n_pixels"],
                n_fake=sf["n_pixels"],
            )
        )
        lr, lf = sr["corr_length"], sf["corr_length"]
        r_len = lf / lr if lr and lr > 0 else math.nan
        res["sky"][b]["corr_length_ratio"] = r_len
        rows.append(
            summary_row(
                f"noise correlation length ratio ({b})",
                r_len,
                t["corr_length"],
                abs(r_len - 1) <= t["corr_length"],
                "|ℓ_gen / ℓ_real − 1| ≤ corr_length",
                "sky",
                n_real=sr["n_pixels"],
                n_fake=sf["n_pixels"],
            )
        )

    # realism classifier on matched crops
    try:
        clf = _classifier(real, fake, seed)
        se = clf["auc_std"] / math.sqrt(max(clf["folds"], 1))
        thr = t["auc"] + t["z"] * se
        res["classifier"] = clf
        rows.append(
            summary_row(
                f"realism classifier ROC AUC ({CROP}-px crops)",
                clf["auc"],
                thr,
                clf["auc"] <= thr,
                "AUC ≤ auc + z·σ_folds/√folds",
                "classifier",
                n_real=clf["n_per_class"],
                n_fake=clf["n_per_class"],
            )
        )
    except EvaluationError as exc:
        notes.append(f"realism classifier not run: {exc}")
        rows.append(
            summary_row(
                f"realism classifier ROC AUC ({CROP}-px crops)",
                None,
                t["auc"],
                False,
                "AUC ≤ auc + z·σ_folds/√folds",
                "classifier",
                note="too few crops",
            )
        )

    # truth of the generated field
    if truth is not None:
        res["truth"] = _truth(truth, cats["fake"], bands, opts, match_radius, notes)

    from galforge import __version__

    metrics = {
        "kind": "fields",
        "galforge_version": __version__,
        "real": {"source": real_source, "shape": list(real.shape), "units": units},
        "fake": {"source": fake_source, "shape": list(fake.shape), "units": units},
        "bands": list(bands),
        "settings": {
            "seed": seed,
            "thresholds": {k: v for k, v in t.items() if not k.startswith("_")},
            "ks_rows": t["_ks_rows"],
            "detection": opts.to_dict(),
            "match_radius": match_radius,
            "crop": CROP,
        },
        "summary": rows,
        "passed": sum(r["passed"] for r in rows),
        "n_rows": len(rows),
        **res,
        "notes": notes,
    }
    if out_dir is not None:
        from galforge.evaluation.figures import write_csv

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "sources_real.csv", cats["real"], units)  # + ECSV with units
        write_csv(out / "sources_fake.csv", cats["fake"], units)
        metrics["figures"] = _figures(out, real, fake, bands, units, cats, res, notes)
        metrics = json_safe(metrics)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        _write_html(out / "report.html", metrics)
    return json_safe(metrics)


def _truth(
    truth: dict, found: list[dict], bands, opts: DetectionOptions, radius: float, notes: list[str]
) -> dict:
    txy = np.column_stack([truth["x"], truth["y"]])
    fxy = np.array([[r["x"], r["y"]] for r in found]).reshape(-1, 2)
    match = fieldstats.crossmatch(txy, fxy, radius)
    zp = 0.0 if opts.zeropoint is None else opts.zeropoint
    out = {
        "radius": radius,
        "n_truth": int(len(txy)),
        "n_found": len(found),
        "n_matched": int((match >= 0).sum()),
        "bands": {},
    }
    for b in bands:
        if f"flux_{b}" in truth:
            f = np.asarray(truth[f"flux_{b}"], float)
            with np.errstate(divide="ignore", invalid="ignore"):
                tm = np.where(f > 0, zp - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
            src = f"flux_{b}"
        elif f"mag_{b}" in truth:
            tm = np.asarray(truth[f"mag_{b}"], float)
            src = f"mag_{b}"
            if opts.zeropoint is None:
                notes.append(
                    f"truth band {b}: true magnitudes from mag_{b} but the "
                    "extraction is instrumental (no --zeropoint): the bias includes "
                    "the zero point"
                )
        else:
            continue
        measured = _mags(found, b)
        mm = np.where(match >= 0, measured[np.maximum(match, 0)] if len(found) else np.nan, np.nan)
        curve = fieldstats.completeness(tm, match >= 0, mm)
        curve["true_from"] = src
        out["bands"][b] = curve
    if not out["bands"]:
        raise EvaluationError(
            f"the truth catalogue has no flux_<band> or mag_<band> column for the bands "
            f"{', '.join(bands)}"
        )
    return out


_CSS = """
body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;
font-size:13px}th{background:#eee}.pass{color:#070;font-weight:bold}
.fail{color:#b00;font-weight:bold}img{max-width:100%;border:1px solid #ddd;margin:4px 0}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}
"""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "–"
    return html.escape(str(v))


def _table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _write_html(path: Path, m: dict) -> None:
    rows = m["summary"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>galforge field evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>galforge field evaluation</h1>",
        f"<p>Real: <code>{html.escape(str(m['real']['source']))}</code> "
        f"({m['real']['shape'][1]}×{m['real']['shape'][2]} px)<br>"
        f"Generated: <code>{html.escape(str(m['fake']['source']))}</code> "
        f"({m['fake']['shape'][1]}×{m['fake']['shape'][2]} px)<br>"
        f"Bands {', '.join(m['bands'])}; units {html.escape(str(m['real']['units']))}; "
        f"magnitudes {html.escape(m['magnitudes']['system'])}; galforge "
        f"{html.escape(m['galforge_version'])}. {m['passed']} of {m['n_rows']} rows "
        "pass.</p>",
        "<h2>Summary</h2><table><tr><th>measure</th><th>value</th>"
        "<th>threshold</th><th>rule</th><th>n real</th><th>n generated</th>"
        "<th>result</th></tr>",
    ]
    for r in rows:
        cls = "pass" if r["passed"] else "fail"
        note = f" ({html.escape(r['note'])})" if r.get("note") else ""
        parts.append(
            f"<tr><td>{html.escape(r['measure'])}</td><td>{_fmt(r['value'])}</td>"
            f"<td>{_fmt(r['threshold'])}</td><td>{html.escape(r['rule'])}</td>"
            f"<td>{_fmt(r.get('n_real'))}</td><td>{_fmt(r.get('n_fake'))}</td>"
            f"<td class='{cls}'>{'pass' if r['passed'] else 'FAIL'}{note}</td></tr>"
        )
    parts.append(
        "</table><p style='font-size:13px'>n: sources (sky rows: source-free "
        "pixels; classifier: crops per field). Thresholds are settable with "
        "--threshold NAME=VALUE: "
        + ", ".join(f"{k}={v:g}" for k, v in m["settings"]["thresholds"].items())
        + ".</p>"
    )
    if m.get("notes"):
        parts.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li>{html.escape(x)}</li>" for x in m["notes"])
            + "</ul>"
        )
    d = m["density"]
    parts.append(
        "<h2>Details</h2><h3>Density</h3>"
        + _table(
            ["", "real", "generated"],
            [
                ["sources", d["n"]["real"], d["n"]["fake"]],
                ["area (Mpix)", d["area_mpix"]["real"], d["area_mpix"]["fake"]],
                ["per Mpix", d["per_mpix"]["real"], d["per_mpix"]["fake"]],
            ],
        )
    )
    parts.append(
        "<h3>Magnitudes, colours, shapes</h3>"
        + _table(
            [
                "quantity",
                "n real",
                "n generated",
                "median real",
                "median generated",
                "KS D",
                "KS p",
            ],
            [
                [
                    name,
                    v.get("n_real"),
                    v.get("n_fake"),
                    v.get("median_real"),
                    v.get("median_fake"),
                    v.get("ks_stat"),
                    v.get("ks_p"),
                ]
                for name, v in (
                    [(f"mag {b}", x) for b, x in m["magnitudes"]["bands"].items()]
                    + [(f"colour {k}", x) for k, x in m["colours"].items()]
                    + list(m["shapes"].items())
                )
            ],
        )
    )
    w = m["wtheta"]
    parts.append(
        "<h3>w(θ)</h3>"
        + _table(
            ["θ (px)", "w real", "σ real", "w generated", "σ generated", "in band"],
            [
                [c, a, sa, b, sb, ok]
                for c, a, sa, b, sb, ok in zip(
                    w["real"]["centres"],
                    w["real"]["w"],
                    w["real"]["sigma"],
                    w["fake"]["w"],
                    w["fake"]["sigma"],
                    w["comparison"]["within"],
                    strict=True,
                )
            ],
        )
    )
    parts.append(
        "<h3>Sky</h3>"
        + _table(
            [
                "band",
                "σ real",
                "σ generated",
                "ratio",
                "ℓ real (px)",
                "ℓ generated (px)",
                "ρ(1) real",
                "ρ(1) generated",
            ],
            [
                [
                    b,
                    s["real"]["sigma"],
                    s["fake"]["sigma"],
                    s["sigma_ratio"],
                    s["real"]["corr_length"],
                    s["fake"]["corr_length"],
                    s["real"]["rho1"],
                    s["fake"]["rho1"],
                ]
                for b, s in m["sky"].items()
            ],
        )
    )
    if m.get("classifier"):
        c = m["classifier"]
        parts.append(
            "<h3>Realism classifier</h3>"
            + _table(
                ["crops per field", "folds", "AUC", "σ folds"],
                [[c["n_per_class"], c["folds"], c["auc"], c["auc_std"]]],
            )
        )
    if m.get("truth"):
        tr = m["truth"]
        parts.append(
            f"<h3>Truth (match radius {tr['radius']:g} px: {tr['n_matched']} of "
            f"{tr['n_truth']} truth sources matched, {tr['n_found']} detected)</h3>"
        )
        for b, cu in tr["bands"].items():
            parts.append(
                f"<p>{html.escape(b)}: 90 % complete to {_fmt(cu['mag_90'])}, 50 % "
                f"to {_fmt(cu['mag_50'])}</p>"
                + _table(
                    [
                        "true mag",
                        "n true",
                        "n found",
                        "completeness",
                        "median Δmag",
                        "16 %",
                        "84 %",
                    ],
                    [
                        list(r)
                        for r in zip(
                            cu["centres"],
                            cu["n_true"],
                            cu["n_found"],
                            cu["completeness"],
                            cu["dmag_median"],
                            cu["dmag_p16"],
                            cu["dmag_p84"],
                            strict=True,
                        )
                    ],
                )
            )
    section = None
    for fig in m.get("figures", []):
        if fig["section"] != section:
            section = fig["section"]
            parts.append(f"<h2>{html.escape(section)}</h2>")
        name = html.escape(fig["file"])
        parts.append(
            f"<figure><img src='{name}' alt='{name}'><figcaption>"
            f"{html.escape(fig['caption'])}</figcaption></figure>"
        )
    parts.append(
        "<p>Every number is in <a href='metrics.json'>metrics.json</a>; the source "
        "catalogues are sources_real.csv and sources_fake.csv.</p></body></html>"
    )
    path.write_text("\n".join(parts), encoding="utf-8")


def format_summary(metrics: dict) -> str:
    """The summary rows as a text table (the CLI prints it)."""
    rows = metrics["summary"]
    width = max([len(r["measure"]) for r in rows] + [7])
    lines = [
        f"{'measure':<{width}}  {'value':>10}  {'threshold':>10}  {'n real':>7}  "
        f"{'n gen':>7}  result"
    ]
    for r in rows:
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(
            f"{r['measure']:<{width}}  {_fmt(r['value']):>10}  "
            f"{_fmt(r['threshold']):>10}  {_fmt(r.get('n_real')):>7}  "
            f"{_fmt(r.get('n_fake')):>7}  {'pass' if r['passed'] else 'FAIL'}{note}"
        )
    return "\n".join(lines)
