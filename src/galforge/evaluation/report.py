"""The evaluation report: ``report.html``, ``metrics.json`` and per-object CSV catalogues.

:func:`build_summary` turns the detailed results into the summary table by asking every
registered measure (:mod:`galforge.evaluation.registry`) for its rows — ``{"measure",
"value", "threshold", "passed", "rule", "n_real", "n_fake"}``, plus ``failure_rate_real``
and ``failure_rate_fake`` for fitted measures and a ``note`` saying why a row failed when
the value alone does not; :func:`write_outputs` lets each measure write its figures and
CSV files; :func:`write_report` writes the HTML page with the summary table, the details
tables of every measure and every figure (PNG files beside the page, referenced by relative
path); :func:`write_csv` writes a catalogue (list of dicts) as CSV.  Missing values are
shown as "–".
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from galforge.evaluation import registry
from galforge.evaluation.figures import (  # noqa: F401  (public names of the report module)
    plot_pixel_histograms,
    plot_spectra,
    plot_spectra_summary,
    rgb_views,
    write_csv,
)
from galforge.evaluation.registry import Context
from galforge.jsonsafe import json_safe

__all__ = [
    "build_summary",
    "json_safe",
    "plot_pixel_histograms",
    "plot_spectra",
    "plot_spectra_summary",
    "rgb_views",
    "write_csv",
    "write_outputs",
    "write_report",
]


def __getattr__(name):
    # Default pass/fail thresholds (``thresholds=`` of :func:`galforge.evaluation.evaluate`):
    # the shared rules' and every registered measure's, computed because the registry grows.
    if name == "DEFAULT_THRESHOLDS":
        return registry.default_thresholds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _context(results: dict, ctx: Context | None) -> Context:
    if ctx is None:
        ctx = Context(bands=(), units="", options={})
    n_ks = 0
    for name, res in results.items():
        try:
            m = registry.get(name)
        except Exception:
            continue
        if m.kind == "object" and isinstance(res, dict):
            n_ks += len(res.get("comparison") or {})
    ctx.ks_tests = max(n_ks, 1)
    return ctx


def build_summary(results: dict, thresholds: dict, ctx: Context | None = None) -> list[dict]:
    """The summary table from the detailed ``results`` of :func:`evaluate`: every registered
    measure present in ``results`` adds its rows, in registry order.  The rules are those of
    :mod:`galforge.evaluation.verdicts`; a value that could not be computed fails."""
    t = {**registry.default_thresholds(), **(thresholds or {})}
    ctx = _context(results, ctx)
    ctx.thresholds = t
    rows: list[dict] = []
    for m in registry.measures():
        res = results.get(m.name)
        if res:
            rows.extend(m.summary(res, t, ctx))
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
    """A value for the page: "–" for a missing one, 4 significant digits for a float."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return html.escape(", ".join(_fmt(x) for x in v))
    return html.escape(str(v))


def _rate(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _table(columns: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _details(results: dict, ctx: Context | None) -> list[str]:
    ctx = ctx or Context(bands=(), units="", options={})
    parts = []
    for name, res in results.items():
        if not isinstance(res, dict):
            continue
        try:
            m = registry.get(name)
        except Exception:
            m = registry.Measure()
            m.name = m.title = name
        for tab in m.details(res, ctx):
            parts.append(
                f"<h3>{html.escape(tab['title'])}</h3>" + _table(tab["columns"], tab["rows"])
            )
    return parts


def timing_rows(metrics: dict) -> list[list]:
    """Rows ``[measure, tasks computed, tasks reused, CPU s, finished after s]`` of an
    evaluation's ``metrics["timings"]`` (empty when it has none), then the whole run's phases."""
    t = metrics.get("timings") or {}
    rows = [
        [name, v["tasks"], v["reused"], v["cpu_s"], v["finished_after_s"]]
        for name, v in (t.get("measures") or {}).items()
    ]
    if rows:
        for phase, label in (
            ("plan_s", "planning (hashes, cache)"),
            ("compute_s", "all measures (wall)"),
            ("outputs_s", "figures and CSVs"),
            ("total_s", "total (wall)"),
        ):
            if phase in t:
                rows.append([label, None, None, None, t[phase]])
    return rows


TIMING_COLUMNS = ["measure", "tasks", "reused", "CPU s", "finished after s"]


def write_report(out_dir, metrics: dict, figures: list[dict], ctx: Context | None = None) -> Path:
    """Write ``out_dir/report.html``: header, summary table, notes, details tables, then
    every figure (``{"section", "file", "caption"}``, files relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    summary = metrics.get("summary", [])
    n_pass = sum(r["passed"] for r in summary)
    mags = metrics.get("magnitudes") or {}
    mag_txt = ""
    if mags:
        mag_txt = (
            f"<br>Magnitudes: {html.escape(str(mags.get('system')))} "
            f"({html.escape(str(mags.get('source')))})"
        )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>galforge evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>galforge evaluation report</h1>",
        f"<p>Real: <code>{html.escape(str(metrics['real']['source']))}</code> "
        f"({metrics['real']['n']} images, bands {', '.join(metrics['bands'])}, "
        f"units {html.escape(str(metrics['real']['units']))})<br>"
        f"Fake: <code>{html.escape(str(metrics['fake']['source']))}</code> "
        f"({metrics['fake']['n']} images)<br>"
        f"galforge {html.escape(metrics.get('galforge_version', ''))}; "
        f"{n_pass} of {len(summary)} measures pass.{mag_txt}</p>",
        "<h2>Summary</h2><table><tr><th>measure</th><th>value</th><th>threshold</th>"
        "<th>rule</th><th>n real</th><th>n fake</th><th>failure rate real</th>"
        "<th>failure rate fake</th><th>result</th></tr>",
    ]
    for r in summary:
        cls = "pass" if r["passed"] else "fail"
        parts.append(
            f"<tr><td>{html.escape(r['measure'])}</td><td>{_fmt(r['value'])}</td>"
            f"<td>{_fmt(r['threshold'])}</td><td>{html.escape(r.get('rule', ''))}</td>"
            f"<td>{_fmt(r.get('n_real'))}</td><td>{_fmt(r.get('n_fake'))}</td>"
            f"<td>{_rate(r.get('failure_rate_real'))}</td>"
            f"<td>{_rate(r.get('failure_rate_fake'))}</td>"
            f"<td class='{cls}'>{'pass' if r['passed'] else 'FAIL'}"
            f"{' (' + html.escape(r['note']) + ')' if r.get('note') else ''}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<p style='font-size:13px'>n: objects measured in each set. Rules: KS rows "
        "pass above ks_p divided by the number of KS rows (Bonferroni); fitted "
        "measures fail when the fake set's failure rate clearly exceeds the real "
        "one's; rows resting on fewer than min_objects objects fail; fractions, the "
        "classifier AUC and the NN ratio allow for their sampling noise.</p>"
    )
    notes = metrics.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    info = _details(metrics.get("results", {}), ctx)
    if info:
        parts.append("<h2>Details</h2>" + "".join(info))
    timing = timing_rows(metrics)
    if timing:
        engine = (metrics.get("settings") or {}).get("scheduler_used", "")
        parts.append(
            f"<h2>Timings</h2><p style='font-size:13px'>Engine: {html.escape(str(engine))}. "
            "CPU s: the measure's computed tasks, summed over workers (threads a library "
            "starts are not counted); finished after: seconds from the start of the "
            "computation until its last task ended.</p>" + _table(TIMING_COLUMNS, timing)
        )
    section = None
    for fig in figures:
        if fig["section"] != section:
            section = fig["section"]
            parts.append(f"<h2>{html.escape(section)}</h2>")
        name = html.escape(fig["file"])
        parts.append(
            f"<figure><img src='{name}' alt='{name}'>"
            f"<figcaption>{html.escape(fig.get('caption', ''))}</figcaption></figure>"
        )
    parts.append(
        "<p>Every number is in <a href='metrics.json'>metrics.json</a>; per-object "
        "catalogues are the CSV files beside this page.</p></body></html>"
    )
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _fig(section: str, file: str, caption: str) -> dict:
    return {"section": section, "file": file, "caption": caption}


def write_outputs(
    out_dir, real, fake, metrics: dict, catalogues: dict, ctx: Context | None = None
) -> dict:
    """Write the CSV catalogues and every PNG figure of an evaluation into ``out_dir``.

    ``real``/``fake`` carry ``images``, ``bands``, ``units``; ``catalogues`` maps a
    per-object measure to ``{"real": rows, "fake": rows}``.  The sample grids come first,
    then each measure's files (``Measure.outputs``), in registry order.  Returns
    ``{"figures": [...], "csv": [...]}`` (file names relative to ``out_dir``).  A figure
    that cannot be drawn is reported in ``metrics["notes"]`` instead of stopping the report."""
    from galforge.data import display

    out = Path(out_dir)
    bands = tuple(real.bands)
    ctx = ctx or Context(bands=bands, units=real.units, options=metrics.get("settings", {}))
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
        display.save_grid(
            out / "samples_real.png", real.images[:n_grid], bands, title="real", stretch=stretch
        )
        display.save_grid(
            out / "samples_fake.png", fake.images[:n_grid], bands, title="fake", stretch=stretch
        )
        figures.append(
            _fig(
                "Samples",
                "samples_real.png",
                f"First {min(n_grid, len(real.images))} real images "
                "(asinh/Lupton stretch fitted on the real set).",
            )
        )
        figures.append(_fig("Samples", "samples_fake.png", "Fake images on the same stretch."))

    attempt("sample grids", grids)

    for m in registry.measures():
        if m.name not in results:
            continue

        def one(m=m):
            got = m.outputs(out, real, fake, results[m.name], catalogues.get(m.name), ctx)
            csvs.extend(got.get("csv", []))
            for fig in got.get("figures", []):
                figures.append(_fig(m.title or m.name, fig["file"], fig.get("caption", "")))

        attempt(f"of {m.name}", one)
    return {"figures": figures, "csv": csvs}
