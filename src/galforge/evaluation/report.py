"""The evaluation report: ``report.html``, ``metrics.json`` and per-object CSV catalogues.

:func:`build_summary` turns the detailed results into the summary table (one row per
measure: ``{"measure", "value", "threshold", "passed"}``; the direction of each test is in
``"rule"``); :func:`write_report` writes the HTML page with the table, the sample grids and
every figure (PNG files beside the page, referenced by relative path);
:func:`write_csv` writes a catalogue (list of dicts) as CSV.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np

#: Default pass/fail thresholds (``thresholds=`` of :func:`galforge.evaluation.evaluate`).
DEFAULT_THRESHOLDS = {
    "ks_p": 0.05,        # a KS test passes when p > ks_p
    "nn_ratio": 0.9,     # memorisation passes when the NN ratio > nn_ratio
    "auc": 0.6,          # the realism classifier passes when ROC AUC < auc
    "fgd_factor": 3.0,   # FGD passes when < fgd_factor × the real-vs-real (halves) FGD
    "box_margin": 0.1,   # CMD passes when fake in-box fraction > real in-box fraction - margin
}


def rgb_views(images, bands, units: str | None = None, stretch=None) -> np.ndarray:
    """uint8 ``N×H×W×3`` asinh/Lupton views (one stretch for the whole stack)."""
    from galforge.data.display import to_rgb

    arr = np.asarray(images, dtype=np.float32)
    return to_rgb(arr, tuple(bands), units, stretch=stretch)


def plot_spectra(path, k, p_real, p_fake, bands) -> str:
    """Mean (line) and 16–84 % spread (band) of the 1-D power spectra ``N×C×K`` of each band."""

    def summary(p):
        q = np.log10(np.maximum(np.asarray(p), 1e-30))
        return {"log10_mean": q.mean(0), "log10_p16": np.percentile(q, 16, axis=0),
                "log10_p84": np.percentile(q, 84, axis=0)}

    return plot_spectra_summary(path, k, summary(p_real), summary(p_fake), bands)


def write_csv(path, rows: list[dict]) -> str:
    """Write a catalogue (list of dicts) as CSV; the header is the union of the keys."""
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys or ["empty"])
        w.writeheader()
        for row in rows:
            w.writerow({k: _csv_value(v) for k, v in row.items()})
    return str(path)


def _csv_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v


def json_safe(obj):
    """Recursively replace numpy scalars/arrays and non-finite floats (-> None)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _row(measure: str, value, threshold, passed, rule: str, group: str,
         note: str | None = None) -> dict:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        passed = False
        value = None
    row = {"measure": measure, "value": value, "threshold": threshold,
           "passed": bool(passed), "rule": rule, "group": group}
    if note:
        row["note"] = note
    return row


def build_summary(results: dict, thresholds: dict) -> list[dict]:
    """The summary table from the detailed ``results`` of :func:`evaluate`.

    KS rows pass when ``p > ks_p``; the NN ratio when ``> nn_ratio``; the realism AUC when
    ``< auc``; the Fréchet galaxy distance when ``< fgd_factor ×`` its real-vs-real value;
    the CMD box fraction when ``>`` the real set's own fraction minus ``box_margin``.
    A measure whose value could not be computed fails."""
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    rows: list[dict] = []
    for group, label in (("isophotes", "isophote"), ("moments", "moments"),
                         ("morphology", "morphology"), ("photometry", "photometry")):
        res = results.get(group)
        if not res or "comparison" not in res:
            continue
        for col, st in res["comparison"].items():
            rows.append(_row(f"{label} {col} KS p", st.get("ks_p"), t["ks_p"],
                             (st.get("ks_p") or 0) > t["ks_p"], "> threshold", group,
                             st.get("note")))
    cm = results.get("colour")
    if cm and cm.get("fraction_in_box") is not None:
        ref = cm.get("real_fraction_in_box")
        thr = (ref - t["box_margin"]) if ref is not None else None
        val = cm["fraction_in_box"]
        n_fake = (cm.get("box") or {}).get("n_fake")
        rows.append(_row(f"CMD fraction of fakes in median ± {cm.get('k')}σ box", val, thr,
                         thr is not None and val > thr, "> threshold", "colour",
                         "no fake object with finite colour" if n_fake == 0 else None))
    mem = results.get("memorization")
    if mem:
        for metric in ("l1", "mse"):
            v = mem.get(f"nn_ratio_{metric}")
            rows.append(_row(f"memorisation NN ratio ({metric.upper()})", v, t["nn_ratio"],
                             v is not None and v > t["nn_ratio"], "> threshold",
                             "memorization"))
    ps = results.get("power_spectrum")
    if ps and "classifier" in ps:
        v = ps["classifier"]["auc"]
        rows.append(_row("realism classifier ROC AUC", v, t["auc"], v < t["auc"],
                         "< threshold", "power_spectrum"))
    fid = results.get("fid")
    if fid and "fgd" in fid:
        thr = t["fgd_factor"] * max(fid["fgd_real_halves"], 1e-12)
        rows.append(_row("Fréchet galaxy distance", fid["fgd"], thr, fid["fgd"] < thr,
                         f"< {t['fgd_factor']:g} × real-vs-real FGD", "fid"))
    return rows


_CSS = """
body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;
font-size:13px}th{background:#eee}.pass{color:#070;font-weight:bold}
.fail{color:#b00;font-weight:bold}img{max-width:100%;border:1px solid #ddd;margin:4px 0}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}pre{background:#f6f6f6;padding:6px;
font-size:12px;overflow-x:auto}
"""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_report(out_dir, metrics: dict, figures: list[dict]) -> Path:
    """Write ``out_dir/report.html``: header, summary table, notes, then every figure
    (``{"section", "file", "caption"}``, files relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    summary = metrics.get("summary", [])
    n_pass = sum(r["passed"] for r in summary)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>galforge evaluation</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>galforge evaluation report</h1>",
        f"<p>Real: <code>{html.escape(str(metrics['real']['source']))}</code> "
        f"({metrics['real']['n']} images, bands {', '.join(metrics['bands'])}, "
        f"units {html.escape(str(metrics['real']['units']))})<br>"
        f"Fake: <code>{html.escape(str(metrics['fake']['source']))}</code> "
        f"({metrics['fake']['n']} images)<br>"
        f"galforge {html.escape(metrics.get('galforge_version', ''))}; "
        f"{n_pass} of {len(summary)} measures pass.</p>",
        "<h2>Summary</h2><table><tr><th>measure</th><th>value</th><th>threshold</th>"
        "<th>rule</th><th>result</th></tr>",
    ]
    for r in summary:
        cls = "pass" if r["passed"] else "fail"
        parts.append(
            f"<tr><td>{html.escape(r['measure'])}</td><td>{_fmt(r['value'])}</td>"
            f"<td>{_fmt(r['threshold'])}</td><td>{html.escape(r.get('rule', ''))}</td>"
            f"<td class='{cls}'>{'pass' if r['passed'] else 'FAIL'}"
            f"{' (' + html.escape(r['note']) + ')' if r.get('note') else ''}</td></tr>")
    parts.append("</table>")
    notes = metrics.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    extra = metrics.get("results", {})
    info = []
    for key in ("fid", "inception", "memorization", "power_spectrum"):
        res = extra.get(key)
        if not res:
            continue
        shown = {k: v for k, v in res.items()
                 if not isinstance(v, (list, dict)) or k in ("classifier",)}
        info.append(f"<h3>{html.escape(key)}</h3><pre>{html.escape(json.dumps(shown, indent=1))}"
                    "</pre>")
    for key in ("isophotes", "moments", "morphology", "photometry"):
        res = extra.get(key)
        if res and "failures" in res:
            info.append(f"<h3>{key}: measurement failures</h3><pre>"
                        f"{html.escape(json.dumps(res['failures'], indent=1))}</pre>")
    if info:
        parts.append("<h2>Details</h2>" + "".join(info))
    section = None
    for fig in figures:
        if fig["section"] != section:
            section = fig["section"]
            parts.append(f"<h2>{html.escape(section)}</h2>")
        name = html.escape(fig["file"])
        parts.append(f"<figure><img src='{name}' alt='{name}'>"
                     f"<figcaption>{html.escape(fig.get('caption', ''))}</figcaption></figure>")
    parts.append("<p>Every number is in <a href='metrics.json'>metrics.json</a>; per-object "
                 "catalogues are the CSV files beside this page.</p></body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _fig(section: str, file: str, caption: str) -> dict:
    return {"section": section, "file": file, "caption": caption}


def write_outputs(out_dir, real, fake, metrics: dict, catalogues: dict) -> dict:
    """Write the CSV catalogues and every PNG figure of an evaluation into ``out_dir``.

    ``real``/``fake`` carry ``images``, ``bands``, ``units``; ``catalogues`` maps a
    per-object measure to ``{"real": rows, "fake": rows}``.  Returns ``{"figures": [...],
    "csv": [...]}`` (file names relative to ``out_dir``).  A figure that cannot be drawn is
    reported in ``metrics["notes"]`` instead of stopping the report."""
    from galforge.data import display

    out = Path(out_dir)
    bands = tuple(real.bands)
    results = metrics["results"]
    notes = metrics.setdefault("notes", [])
    figures: list[dict] = []
    csvs: list[str] = []
    n_grid = int(metrics["settings"].get("grid_n", 36))

    def attempt(what, fn):
        try:
            fn()
        except Exception as exc:  # a figure must not sink the whole report
            notes.append(f"figure {what} not drawn: {type(exc).__name__}: {exc}")

    # sample grids, one stretch fitted on the real set for both
    def grids():
        stretch = display.fit_stretch(real.images[:256], bands, real.units)
        display.save_grid(out / "samples_real.png", real.images[:n_grid], bands,
                          title="real", stretch=stretch)
        display.save_grid(out / "samples_fake.png", fake.images[:n_grid], bands,
                          title="fake", stretch=stretch)
        figures.append(_fig("Samples", "samples_real.png",
                            f"First {min(n_grid, len(real.images))} real images "
                            "(asinh/Lupton stretch fitted on the real set)."))
        figures.append(_fig("Samples", "samples_fake.png",
                            "Fake images on the same stretch."))

    attempt("sample grids", grids)

    titles = {"isophotes": "Isophote shapes (photutils ellipse fits)",
              "moments": "Moment shapes (sep)", "morphology": "Morphology (statmorph)",
              "photometry": "Source photometry (sep)"}
    for m, rows in catalogues.items():
        for s_name in ("real", "fake"):
            name = f"catalogue_{m}_{s_name}.csv"
            write_csv(out / name, rows[s_name])
            csvs.append(name)
        cols = results[m]["columns"]

        def hist(m=m, rows=rows, cols=cols):
            from galforge.evaluation.stats import plot_histograms

            plot_histograms(rows["real"], rows["fake"], cols, out / f"hist_{m}.png")
            figures.append(_fig(titles[m], f"hist_{m}.png",
                                f"Real vs fake histograms of {', '.join(cols)} "
                                "(failed measurements left out, counted in Details)."))

        attempt(f"{m} histograms", hist)
        if m == "photometry":
            def counts(rows=rows):
                from galforge.evaluation import photometry

                photometry.plot_number_counts(rows["real"], rows["fake"], bands[-1],
                                              out / "number_counts.png",
                                              n_images=(len(real.images), len(fake.images)))
                figures.append(_fig(titles["photometry"], "number_counts.png",
                                    f"Number counts per {bands[-1]} magnitude bin, per image."))

            attempt("number counts", counts)

    cm = results.get("colour")
    if cm:
        def cmd():
            from galforge.evaluation.colour import plot_cmd

            plot_cmd(cm["real_cm"], cm["fake_cm"], out / "cmd.png", k=cm["k"])
            figures.append(_fig("Colour–magnitude", "cmd.png",
                                f"Colour–magnitude diagram; {cm['fraction_in_box']:.3f} of "
                                f"fakes inside the real median ± {cm['k']}σ box "
                                f"(real itself: {cm['real_fraction_in_box']:.3f})."))

        attempt("colour–magnitude diagram", cmd)

    mem = results.get("memorization")
    if mem:
        rows = []
        for i, (idx, dist) in enumerate(zip(mem["fake_nn_l1"]["index"],
                                            mem["fake_nn_l1"]["distance"], strict=True)):
            rows.append({"fake": i, "nn_real_l1": idx[0], "nn_l1": dist[0],
                         "nn_real_mse": mem["fake_nn_mse"]["index"][i][0],
                         "nn_mse": mem["fake_nn_mse"]["distance"][i][0]})
        write_csv(out / "memorization_nn.csv", rows)
        csvs.append("memorization_nn.csv")

        def nn():
            from galforge.evaluation.memorization import plot_nn_grid

            plot_nn_grid(out / "nn_grid.png", fake.images, real.images, mem, bands,
                         n_show=min(8, len(fake.images)), metric="l1")
            figures.append(_fig("Memorisation", "nn_grid.png",
                                f"The fakes closest to the training part of REAL: fake, its "
                                f"{mem['k']} nearest real images, absolute differences. NN "
                                f"ratio (L1) {mem['nn_ratio_l1']:.3f}."))

        attempt("nearest-neighbour grid", nn)

    ps = results.get("power_spectrum")
    if ps:
        def spec():
            k = np.asarray(ps["k"])
            plot_spectra_summary(out / "power_spectra.png", k, ps["real"], ps["fake"], bands)
            figures.append(_fig("Power spectra", "power_spectra.png",
                                "Azimuthally averaged power spectra: mean of log10 P(k) and "
                                "16–84 % spread. Realism classifier ROC AUC "
                                f"{ps['classifier']['auc']:.3f}."))

        attempt("power spectra", spec)

        def pixels():
            plot_pixel_histograms(out / "pixel_histograms.png", ps["pixel_histogram"], bands)
            figures.append(_fig("Power spectra", "pixel_histograms.png",
                                "Mean per-image pixel histograms on bins at quantiles of the "
                                "real pixels (a flat real histogram by construction); these "
                                "and the spectra are the realism classifier's features."))

        attempt("pixel histograms", pixels)
    return {"figures": figures, "csv": csvs}


def plot_spectra_summary(path, k, real: dict, fake: dict, bands) -> str:
    """Plot precomputed spectrum summaries (``log10_mean``, ``log10_p16``, ``log10_p84``,
    each ``C×K``) of the real and fake sets, one panel per band."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    c = len(real["log10_mean"])
    fig = Figure(figsize=(4 * c, 3.2), layout="constrained")
    axes = fig.subplots(1, c, squeeze=False)
    for b in range(c):
        ax = axes[0, b]
        for s, label, col in ((real, "real", "C0"), (fake, "fake", "C3")):
            ax.plot(k, s["log10_mean"][b], color=col, label=label)
            ax.fill_between(k, s["log10_p16"][b], s["log10_p84"][b], color=col, alpha=0.25)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("k [cycles / pixel]")
        ax.set_ylabel("log10 P(k)")
        ax.set_title(f"band {bands[b]}")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    return str(path)


def plot_pixel_histograms(path, hist: dict, bands) -> str:
    """Mean per-image pixel histograms of both sets (one panel per band) on the shared
    quantile bins of :func:`galforge.evaluation.features.histogram_edges`."""
    from matplotlib.figure import Figure

    edges = np.asarray(hist["edges"])
    c = edges.shape[0]
    fig = Figure(figsize=(4 * c, 3.0), layout="constrained")
    axes = fig.subplots(1, c, squeeze=False)
    for b in range(c):
        ax = axes[0, b]
        x = np.arange(edges.shape[1] - 1)
        ax.step(x, hist["real"][b], where="mid", label="real", color="C0")
        ax.step(x, hist["fake"][b], where="mid", label="fake", color="C3")
        ticks = np.linspace(0, len(x) - 1, 5).astype(int)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{edges[b, t]:.3g}" for t in ticks], fontsize=7)
        ax.set_xlabel(f"pixel value ({bands[b]}), quantile bins of the real set")
        ax.set_ylabel("fraction of pixels")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    return str(path)
