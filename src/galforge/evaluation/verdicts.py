"""The pass/fail rules of the summary table, made for samples of every size.

Every summary row carries ``n_real`` and ``n_fake`` (the objects its statistic was measured
on).  The rules, with the thresholds of :data:`galforge.evaluation.registry.COMMON_THRESHOLDS`
and of each measure (all settable with ``--threshold NAME=VALUE``):

* **Too few to test.**  A row whose statistic rests on fewer than ``min_objects`` (10)
  measured objects in either set fails ("too few objects measured to test").
* **KS rows** (per-object measures, one per column) pass when ``p > ks_p / m``, ``m`` the
  number of KS rows in the summary: Bonferroni's correction, so that two samples of one
  population fail *any* KS row with probability at most ``ks_p`` (0.05), whatever the
  number of columns measured.
* **Failure rates** (fitted measures: isophotes, moments, statmorph) — each KS row of a
  fitted measure also carries ``failure_rate_real`` and ``failure_rate_fake`` (fraction of
  images whose fit failed) and fails when the fake set fails *clearly* more often:
  ``failure_rate_fake - failure_rate_real > failure_margin`` (0.05) **and** a one-sided
  Fisher exact test of the two proportions gives ``p < failure_alpha`` (0.01).  A shape
  distribution measured on the 5 of 100 fakes that could be fitted no longer passes.
* **Fractions** (the CMD box) pass when ``fake ≥ real - max(box_margin, z·SE)``, with
  ``SE = sqrt(f(1-f)(1/n_real + 1/n_fake))`` the binomial standard error of the difference
  of two fractions of size ``n_real`` and ``n_fake`` at the real fraction ``f`` and ``z`` = 2.
* **Realism classifier** passes when ``AUC < auc + z·σ_AUC/sqrt(folds)``: the threshold is
  widened by ``z`` standard errors of the mean AUC, from the spread of its
  cross-validation folds.
* **Memorisation** passes when the data do not show the NN ratio to lie below ``nn_ratio``:
  when the upper confidence bound of the ratio, ``U = upper(median fake NN distance) /
  lower(median held-out NN distance)``, exceeds ``nn_ratio``.  Each bound is the
  distribution-free order-statistic bound of a median (ranks ``(n ± z·√n)/2``), so a ratio
  resting on a handful of held-out images is judged with the uncertainty it has.  The row's
  threshold is ``nn_ratio · ratio / U`` (the value passes exactly when it exceeds it).  The
  verdict needs a usable fake sample: it fails when
  the fakes are degenerate (constant images, or no source detected) clearly more often than
  the real images (the failure-rate rule above), or when fewer than ``min_objects`` fakes
  are usable.
* **Fréchet galaxy distance** passes when ``FGD < fgd_factor ×`` the FGD between two halves
  of the real set (a reference measured at the sample size at hand).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "summary_row",
    "median_bounds",
    "ratio_upper_bound",
    "failure_counts",
    "failure_verdict",
    "fisher_greater",
    "fraction_threshold",
    "ks_rows",
    "object_details",
    "too_few",
]


def summary_row(
    measure: str,
    value,
    threshold,
    passed,
    rule: str,
    group: str,
    *,
    n_real=None,
    n_fake=None,
    note: str | None = None,
    **extra,
) -> dict:
    """One entry of the summary table.  A value that could not be computed fails."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        passed = False
        value = None
    row = {
        "measure": measure,
        "value": value,
        "threshold": threshold,
        "passed": bool(passed),
        "rule": rule,
        "group": group,
        "n_real": n_real,
        "n_fake": n_fake,
    }
    row.update(extra)
    if note:
        row["note"] = note
    return row


def failure_counts(rows: Sequence[dict]) -> dict:
    """``{"n", "n_failed", "failure_rate", "reasons"}`` of a catalogue (rows with a false
    ``ok`` entry are failures)."""
    failed = [r for r in rows if not r.get("ok", True)]
    reasons: dict[str, int] = {}
    for row in failed:
        reason = str(row.get("reason") or "failed")
        reasons[reason] = reasons.get(reason, 0) + 1
    n = len(rows)
    return {
        "n": n,
        "n_failed": len(failed),
        "failure_rate": (len(failed) / n) if n else None,
        "reasons": reasons,
    }


def fisher_greater(k_fake: int, n_fake: int, k_real: int, n_real: int) -> float:
    """One-sided Fisher exact test p-value that the fake proportion ``k_fake/n_fake``
    exceeds the real one ``k_real/n_real`` (1.0 when either set is empty)."""
    if n_fake <= 0 or n_real <= 0:
        return 1.0
    from scipy.stats import fisher_exact

    table = [[k_fake, n_fake - k_fake], [k_real, n_real - k_real]]
    return float(fisher_exact(table, alternative="greater")[1])


def failure_verdict(
    real: dict, fake: dict, thresholds: dict, what: str = "failure rate"
) -> tuple[bool, str | None]:
    """Apply the failure-rate rule to two :func:`failure_counts`; returns ``(ok, note)``."""
    nr, nf = int(real.get("n") or 0), int(fake.get("n") or 0)
    kr, kf = int(real.get("n_failed") or 0), int(fake.get("n_failed") or 0)
    if nr == 0 or nf == 0:
        return True, None
    rr, rf = kr / nr, kf / nf
    p = fisher_greater(kf, nf, kr, nr)
    if rf - rr > thresholds["failure_margin"] and p < thresholds["failure_alpha"]:
        return False, (
            f"fake {what} {rf:.0%} ({kf}/{nf}) clearly exceeds real {rr:.0%} "
            f"({kr}/{nr}); Fisher p={p:.2g}"
        )
    return True, None


def too_few(n_real, n_fake, thresholds: dict) -> str | None:
    """The note of a row measured on too few objects, or ``None``."""
    need = thresholds["min_objects"]
    if n_real is None or n_fake is None:
        return None
    if n_real < need or n_fake < need:
        return (
            f"too few objects measured to test (real {n_real}, fake {n_fake}; min_objects {need:g})"
        )
    return None


def _join(*notes) -> str | None:
    notes = [n for n in notes if n]
    return "; ".join(notes) if notes else None


def ks_rows(measure, result: dict, thresholds: dict, n_tests: int = 1) -> list[dict]:
    """Summary rows of a per-object measure: one KS row per compared column."""
    t = thresholds
    thr = t["ks_p"] / max(int(n_tests), 1)
    rule = f"> ks_p / {max(int(n_tests), 1)} (Bonferroni)" if n_tests > 1 else "> threshold"
    extra: dict = {}
    fail_ok, fail_note = True, None
    fails = result.get("failures") or {}
    if measure.fitted and fails:
        fr, ff = fails.get("real") or {}, fails.get("fake") or {}
        extra = {"failure_rate_real": _rate(fr), "failure_rate_fake": _rate(ff)}
        fail_ok, fail_note = failure_verdict(fr, ff, t, "fit failure rate")
    rows = []
    for col, st in (result.get("comparison") or {}).items():
        p = st.get("ks_p")
        n_r, n_f = st.get("n_real"), st.get("n_fake")
        few = too_few(n_r, n_f, t)
        passed = p is not None and p > thr and few is None and fail_ok
        rows.append(
            summary_row(
                f"{measure.label or measure.name} {col} KS p",
                p,
                thr,
                passed,
                rule,
                measure.name,
                n_real=n_r,
                n_fake=n_f,
                note=_join(st.get("note"), few, fail_note),
                **extra,
            )
        )
    return rows


def _rate(counts: dict):
    n = counts.get("n") or 0
    return (counts.get("n_failed", 0) / n) if n else None


def fraction_threshold(
    ref: float, n_real: int, n_fake: int, margin: float, z: float
) -> tuple[float, float]:
    """``(threshold, se)`` of the fraction rule: ``ref - max(margin, z·se)``."""
    if n_real <= 0 or n_fake <= 0:
        return ref - margin, math.nan
    se = math.sqrt(max(ref * (1 - ref), 0.0) * (1 / n_real + 1 / n_fake))
    return ref - max(margin, z * se), se


def median_bounds(values, z: float) -> tuple[float, float]:
    """Distribution-free one-sided confidence bounds ``(lower, upper)`` of the median of
    ``values``: the order statistics of ranks ``floor((n - z√n)/2)`` and
    ``ceil((n + z√n)/2) + 1`` (1-based, clipped to the sample), the normal approximation
    of the binomial ranks; ``z`` = 2 gives about 97.7 % each."""
    import numpy as np

    x = np.sort(np.asarray(values, dtype=np.float64))
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return math.nan, math.nan
    lo = int(math.floor((n - z * math.sqrt(n)) / 2))
    hi = int(math.ceil((n + z * math.sqrt(n)) / 2)) + 1
    return float(x[min(max(lo, 1), n) - 1]), float(x[min(max(hi, 1), n) - 1])


def ratio_upper_bound(numerator, denominator, z: float) -> float:
    """Upper confidence bound of ``median(numerator) / median(denominator)``: the upper
    bound of the first median over the lower bound of the second (``inf`` when that is 0)."""
    up = median_bounds(numerator, z)[1]
    low = median_bounds(denominator, z)[0]
    if not (math.isfinite(up) and math.isfinite(low)):
        return math.nan
    if low <= 0:
        return math.inf if up > 0 else math.nan
    return up / low


def object_details(measure, result: dict) -> list[dict]:
    """Details tables of a per-object measure: its column comparison and its failures."""
    comp = result.get("comparison") or {}
    tables = [
        {
            "title": f"{measure.title or measure.name}: real vs fake per column",
            "columns": [
                "column",
                "n real",
                "n fake",
                "median real",
                "median fake",
                "median fake − real",
                "KS D",
                "KS p",
                "Wasserstein",
            ],
            "rows": [
                [
                    col,
                    st.get("n_real"),
                    st.get("n_fake"),
                    st.get("median_real"),
                    st.get("median_fake"),
                    st.get("median_diff"),
                    st.get("ks_stat"),
                    st.get("ks_p"),
                    st.get("wasserstein"),
                ]
                for col, st in comp.items()
            ],
        }
    ]
    fails = result.get("failures") or {}
    if fails:
        rows = []
        for s_name in ("real", "fake"):
            f = fails.get(s_name) or {}
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted((f.get("reasons") or {}).items()))
            rows.append([s_name, f.get("n"), f.get("n_failed"), _rate(f), reasons or "–"])
        tables.append(
            {
                "title": f"{measure.title or measure.name}: "
                + ("measurement failures" if measure.fitted else "rows"),
                "columns": ["set", "rows", "failed", "failure rate", "reasons"],
                "rows": rows,
            }
        )
    return tables
