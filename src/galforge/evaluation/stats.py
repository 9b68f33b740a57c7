"""Two-sample statistics used to compare real and generated per-object catalogues.

A *catalogue* here is a list of dicts, one per object (galaxy or detected source), as
returned by :mod:`galforge.evaluation.morphology` and :mod:`galforge.evaluation.photometry`.
:func:`compare_columns` compares two such catalogues column by column with the two-sample
Kolmogorov–Smirnov test and the 1-D Wasserstein (earth mover's) distance;
:func:`plot_histograms` draws the matching real-vs-fake histograms as one PNG.

Non-finite values are left out of every statistic, and rows whose ``"ok"`` entry is false
(failed fits) are left out by default; how many values each statistic used is reported
beside it so nothing disappears silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import stats as _sps

from galforge.errors import EvaluationError

__all__ = [
    "finite",
    "column",
    "ks_2samp",
    "wasserstein",
    "compare_columns",
    "plot_histograms",
]


def finite(values: Iterable[float]) -> np.ndarray:
    """Return the finite entries of ``values`` as a 1-D float64 array."""
    arr = np.asarray(
        list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64
    ).ravel()
    return arr[np.isfinite(arr)]


def column(rows: Sequence[dict], name: str, *, only_ok: bool = True) -> np.ndarray:
    """Extract column ``name`` from a catalogue as float64 (missing/None -> NaN).

    Rows with ``row["ok"]`` false are skipped when ``only_ok`` is true.
    """
    out = []
    for row in rows:
        if only_ok and not row.get("ok", True):
            continue
        value = row.get(name)
        try:
            out.append(float(value) if value is not None else math.nan)
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def _two_samples(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = finite(a), finite(b)
    if x.size == 0 or y.size == 0:
        raise EvaluationError(
            f"{what}: needs at least one finite value in each sample "
            f"(got {x.size} and {y.size}); check that the measurement produced results "
            "for both sets"
        )
    return x, y


def ks_2samp(a, b) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test.

    Returns ``(statistic, p_value)``: the largest distance between the two empirical
    distribution functions and the two-sided p-value (exact for small samples,
    asymptotic otherwise, as chosen by SciPy). Non-finite values are ignored.

    Raises :class:`~galforge.errors.EvaluationError` when a sample has no finite value.
    """
    x, y = _two_samples(a, b, "ks_2samp")
    res = _sps.ks_2samp(x, y)
    return float(res.statistic), float(res.pvalue)


def wasserstein(a, b) -> float:
    """1-D Wasserstein (earth mover's) distance between two samples, in their own units.

    Non-finite values are ignored. Raises :class:`~galforge.errors.EvaluationError` when a
    sample has no finite value.
    """
    x, y = _two_samples(a, b, "wasserstein")
    return float(_sps.wasserstein_distance(x, y))


def compare_columns(
    real_rows: Sequence[dict],
    fake_rows: Sequence[dict],
    columns: Sequence[str],
    *,
    only_ok: bool = True,
    limits: dict[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, dict]:
    """Compare two catalogues column by column.

    Parameters
    ----------
    real_rows, fake_rows:
        Catalogues (lists of dicts) of the two sets.
    columns:
        Column names to compare (e.g. ``["ellipticity", "pa_deg", "flux"]``).
    only_ok:
        Leave out rows whose ``"ok"`` entry is false (failed measurements).
    limits:
        Optional ``{column: (low, high)}``: only values inside ``[low, high]`` enter the
        statistics of that column (``None`` for an open end), e.g. a magnitude limit.

    Returns
    -------
    dict
        ``{column: {"ks_stat", "ks_p", "wasserstein", "n_real", "n_fake", "median_real",
        "median_fake", "median_diff"}}``. Statistics are ``None`` when one side has no
        finite value (``"note"`` says why); the counts are always given.
    """
    limits = limits or {}
    out: dict[str, dict] = {}
    for name in columns:
        x = finite(column(real_rows, name, only_ok=only_ok))
        y = finite(column(fake_rows, name, only_ok=only_ok))
        lo, hi = limits.get(name, (None, None))
        if lo is not None:
            x, y = x[x >= lo], y[y >= lo]
        if hi is not None:
            x, y = x[x <= hi], y[y <= hi]
        entry: dict = {"n_real": int(x.size), "n_fake": int(y.size)}
        if x.size and y.size:
            stat, p = ks_2samp(x, y)
            med_r, med_f = float(np.median(x)), float(np.median(y))
            entry.update(
                ks_stat=stat,
                ks_p=p,
                wasserstein=wasserstein(x, y),
                median_real=med_r,
                median_fake=med_f,
                median_diff=med_f - med_r,
            )
        else:
            entry.update(
                ks_stat=None,
                ks_p=None,
                wasserstein=None,
                median_real=None,
                median_fake=None,
                median_diff=None,
                note="no finite values in "
                + (
                    "both sets"
                    if not (x.size or y.size)
                    else "real set"
                    if not x.size
                    else "fake set"
                ),
            )
        out[name] = entry
    return out


def plot_histograms(
    real_rows: Sequence[dict],
    fake_rows: Sequence[dict],
    columns: Sequence[str],
    path: str | Path,
    *,
    bins: int = 30,
    labels: tuple[str, str] = ("real", "fake"),
    only_ok: bool = True,
    titles: dict[str, str] | None = None,
    ncols: int = 3,
) -> Path:
    """Save real-vs-fake histograms of ``columns`` (one panel each) as a PNG at ``path``.

    Both sets share the bin edges of each panel; histograms are normalised to unit area so
    sets of different sizes compare. Each panel's legend carries the KS p-value.
    Returns the path written.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    titles = titles or {}
    n = max(len(columns), 1)
    ncols = max(1, min(ncols, n))
    nrows = int(math.ceil(n / ncols))
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, columns, strict=False):
        x = finite(column(real_rows, name, only_ok=only_ok))
        y = finite(column(fake_rows, name, only_ok=only_ok))
        both = np.concatenate([x, y])
        if both.size == 0:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        else:
            lo, hi = np.percentile(both, [0.5, 99.5])
            if not hi > lo:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.linspace(lo, hi, bins + 1)
            p_txt = ""
            if x.size and y.size:
                p_txt = f" (KS p={ks_2samp(x, y)[1]:.3g})"
            if x.size:
                ax.hist(
                    np.clip(x, lo, hi),
                    bins=edges,
                    density=True,
                    histtype="step",
                    lw=1.8,
                    label=f"{labels[0]} (n={x.size})",
                )
            if y.size:
                ax.hist(
                    np.clip(y, lo, hi),
                    bins=edges,
                    density=True,
                    histtype="step",
                    lw=1.8,
                    label=f"{labels[1]} (n={y.size}){p_txt}",
                )
            ax.legend(fontsize=7)
        ax.set_xlabel(titles.get(name, name))
        ax.set_ylabel("density")
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    fig.savefig(path, dpi=100)
    return path
