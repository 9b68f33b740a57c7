"""Files of the evaluation report that several measures share: CSV catalogues, power-spectrum
and pixel-histogram figures, RGB views.  (A bottom module: it imports no other part of the
evaluation package.)"""

from __future__ import annotations

import csv
import json
import math

import numpy as np

__all__ = [
    "plot_pixel_histograms",
    "plot_spectra",
    "plot_spectra_summary",
    "rgb_views",
    "write_csv",
]


def rgb_views(images, bands, units: str | None = None, stretch=None) -> np.ndarray:
    """uint8 ``N×H×W×3`` asinh/Lupton views (one stretch for the whole stack)."""
    from galforge.data.display import to_rgb

    arr = np.asarray(images, dtype=np.float32)
    return to_rgb(arr, tuple(bands), units, stretch=stretch)


def plot_spectra(path, k, p_real, p_fake, bands) -> str:
    """Mean (line) and 16–84 % spread (band) of the 1-D power spectra ``N×C×K`` of each band."""

    def summary(p):
        q = np.log10(np.maximum(np.asarray(p), 1e-30))
        return {
            "log10_mean": q.mean(0),
            "log10_p16": np.percentile(q, 16, axis=0),
            "log10_p84": np.percentile(q, 84, axis=0),
        }

    return plot_spectra_summary(path, k, summary(p_real), summary(p_fake), bands)


def write_csv(path, rows: list[dict], units: str | None = None, *, ecsv: bool = True) -> str:
    """Write a catalogue (list of dicts) as CSV; the header is the union of the keys.

    With ``ecsv`` (default) the same table is written beside it as ECSV with each column's
    unit (:mod:`galforge.data.tables`; fluxes in ``units``, the images' pixel unit, when given).
    """
    if ecsv:
        from galforge.data.tables import ecsv_path, write_ecsv

        write_ecsv(ecsv_path(path), rows, pixel_units=units)
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
