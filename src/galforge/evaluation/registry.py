"""The evaluation measure registry: one object per measure, registered once.

A measure knows its name and title, how to compute its result from arrays (with band
names and units), which evaluate options the result depends on (they enter its cache key),
the statistic it reports with its threshold and rule (its rows of the summary table), the
tables of the report's Details section, and the figures and files it writes.  The runner
(:func:`galforge.evaluation.evaluate`) and the report iterate :func:`measures`; neither
knows a measure by name.

Three kinds:

* :class:`ObjectMeasure` — one row per image, computed in chunks of images in parallel
  (isophotes, moments, statmorph, source photometry), compared column by column with the
  two-sample KS test (:mod:`galforge.evaluation.verdicts` holds the rules);
* :class:`SetMeasure` — one result from the whole real and fake sets (memorisation, power
  spectra, Fréchet distances);
* :class:`DerivedMeasure` — computed from other measures' catalogues (colour–magnitude from
  photometry).

A measure of one's own registers with a decorator, in any module imported before
``evaluate`` runs::

    from galforge.evaluation import measure

    @measure("mean_flux_ratio", statistic="ratio", rule="<", threshold=("flux_ratio_max", 1.2),
             default=False)
    def mean_flux_ratio(real, fake, ctx):
        r = float(real.sum(axis=(1, 2, 3)).mean())
        f = float(fake.sum(axis=(1, 2, 3)).mean())
        return {"ratio": max(r, f) / min(r, f), "n_real": len(real), "n_fake": len(fake)}

``real``/``fake`` are ``N×C×H×W`` float32 arrays in physical units; ``ctx`` is a
:class:`Context` (band names, units, every option, the detection options).  The measure
then runs with ``--measures mean_flux_ratio`` (or by default with ``default=True``), its
threshold is set with ``--threshold flux_ratio_max=1.5``, and its row, details and figure
appear in ``metrics.json`` and ``report.html``.  Results are cached by content: bump
``version=`` when the computation changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from galforge.errors import EvaluationError
from galforge.evaluation.kinds import (
    COMMON_THRESHOLDS,
    Context,
    DerivedMeasure,
    Measure,
    ObjectMeasure,
    SetMeasure,
    summary_row,
)
from galforge.evaluation.measures import BUILTINS
from galforge.jsonsafe import json_safe

__all__ = [
    "COMMON_THRESHOLDS",
    "Context",
    "DerivedMeasure",
    "Measure",
    "ObjectMeasure",
    "SetMeasure",
    "default_thresholds",
    "get",
    "json_safe",
    "measure",
    "measures",
    "names",
    "object_measure",
    "register",
    "summary_row",
    "unregister",
]

# --------------------------------------------------------------------------- the registry

_REGISTRY: dict[str, Measure] = {}
_LOCK = threading.RLock()


def register(m: Measure, *, replace: bool = False) -> Measure:
    """Add a measure instance to the registry (report order is registration order: the
    built-ins, registered when this module is imported, come first)."""
    if not isinstance(m, Measure):
        raise EvaluationError(f"register() takes a Measure instance, got {type(m).__name__}")
    name = str(m.name or "").strip()
    if not name or any(c in name for c in ", /\\"):
        raise EvaluationError(
            f"measure name {m.name!r}: use a non-empty word without commas, spaces or slashes"
        )
    clash = (set(m.thresholds) & set(COMMON_THRESHOLDS)) or {
        t
        for other in _REGISTRY.values()
        if other.name != name
        for t in other.thresholds
        if t in m.thresholds and other.thresholds[t] != m.thresholds[t]
    }
    if clash:
        raise EvaluationError(
            f"measure {name!r}: threshold name(s) {', '.join(sorted(clash))} already used "
            "with another default; choose other names"
        )
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise EvaluationError(
                f"a measure named {name!r} is already registered; pick another name or pass "
                "replace=True"
            )
        _REGISTRY[name] = m
    return m


def unregister(name: str) -> None:
    """Remove a measure (for measures of one's own; the built-ins can be replaced)."""
    with _LOCK:
        if name not in _REGISTRY:
            raise EvaluationError(f"no measure named {name!r} is registered")
        del _REGISTRY[name]


def measures() -> list[Measure]:
    """Every registered measure, in report order."""
    with _LOCK:
        return list(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(m.name for m in measures())


def get(name: str) -> Measure:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EvaluationError(
            f"unknown measure {name!r}; choose from {', '.join(names())}"
        ) from None


def default_thresholds() -> dict:
    """The shared thresholds and those of every registered measure."""
    out = dict(COMMON_THRESHOLDS)
    for m in measures():
        for k, v in m.thresholds.items():
            out.setdefault(k, v)
    return out


for _builtin in BUILTINS:
    register(_builtin)


# --------------------------------------------------------------------------- decorators

_RULES = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}


class _FunctionSetMeasure(SetMeasure):
    def __init__(
        self, fn, *, name, title, statistic, rule, threshold, options, default, version, figure
    ):
        self._fn = fn
        self.name = name
        self.title = title or name
        self.statistic = statistic
        self.rule = rule
        self.threshold_name = threshold[0] if threshold else None
        self.thresholds = {threshold[0]: float(threshold[1])} if threshold else {}
        self.options = tuple(options)
        self.default = default
        self.version = str(version)
        self._figure = figure

    def compute(self, real, fake, ctx):
        res = self._fn(real, fake, ctx)
        if not isinstance(res, dict):
            raise EvaluationError(
                f"measure {self.name!r} must return a dict, got {type(res).__name__}"
            )
        return res

    def summary(self, result, thresholds, ctx):
        if self.statistic is None:
            return []
        value = result.get(self.statistic)
        thr = thresholds.get(self.threshold_name) if self.threshold_name else None
        passed = (
            value is not None
            and thr is not None
            and bool(_RULES[self.rule](float(value), float(thr)))
        )
        return [
            summary_row(
                f"{self.title} ({self.statistic})" if self.title != self.statistic else self.title,
                value,
                thr,
                passed,
                f"{self.rule} threshold",
                self.name,
                n_real=result.get("n_real"),
                n_fake=result.get("n_fake"),
                note=result.get("note"),
            )
        ]

    def outputs(self, out, real, fake, result, catalogue, ctx):
        if self._figure is None:
            return {"figures": [], "csv": []}
        figs = self._figure(out, real.images, fake.images, result, ctx) or []
        return {
            "figures": [
                f if isinstance(f, dict) else {"file": f[0], "caption": f[1]} for f in figs
            ],
            "csv": [],
        }


def measure(
    name: str,
    *,
    statistic: str | None = None,
    rule: str = "<",
    threshold: tuple[str, float] | None = None,
    title: str | None = None,
    options: Sequence[str] = (),
    default: bool = True,
    version: str = "1",
    figure: Callable | None = None,
    replace: bool = False,
):
    """Decorator: register ``fn(real, fake, ctx) -> dict`` as a set-level measure.

    ``statistic`` is the key of the result shown in the summary, judged against the
    threshold ``threshold=(name, default)`` with ``rule`` (``<``, ``<=``, ``>``, ``>=``);
    a result may carry ``n_real``, ``n_fake`` and ``note`` for its row.  ``figure``, when
    given, is ``figure(out_dir, real, fake, result, ctx) -> [(file, caption), ...]``."""
    if rule not in _RULES:
        raise EvaluationError(f"measure {name!r}: rule must be one of {', '.join(_RULES)}")
    if statistic is not None and threshold is None:
        raise EvaluationError(f"measure {name!r}: a statistic needs threshold=(name, default)")

    def wrap(fn):
        register(
            _FunctionSetMeasure(
                fn,
                name=name,
                title=title,
                statistic=statistic,
                rule=rule,
                threshold=threshold,
                options=options,
                default=default,
                version=version,
                figure=figure,
            ),
            replace=replace,
        )
        return fn

    return wrap


class _FunctionObjectMeasure(ObjectMeasure):
    def __init__(self, fn, *, name, title, columns, fitted, per_image, options, default, version):
        self._fn = fn
        self.name = name
        self.title = title or name
        self.label = name
        self._columns = tuple(columns)
        self.fitted = fitted
        self.per_image = per_image
        self.options = tuple(options)
        self.default = default
        self.version = str(version)

    def measure_chunk(self, images, bands, ctx):
        return list(self._fn(images, bands, ctx))

    def columns(self, ctx):
        return self._columns


def object_measure(
    name: str,
    *,
    columns: Sequence[str],
    title: str | None = None,
    fitted: bool = False,
    per_image: bool = True,
    options: Sequence[str] = (),
    default: bool = True,
    version: str = "1",
    replace: bool = False,
):
    """Decorator: register ``fn(images, bands, ctx) -> rows`` (one dict per image) as a
    per-object measure whose ``columns`` are compared with the KS test (rows with
    ``ok=False`` count as failed fits when ``fitted``)."""

    def wrap(fn):
        register(
            _FunctionObjectMeasure(
                fn,
                name=name,
                title=title,
                columns=columns,
                fitted=fitted,
                per_image=per_image,
                options=options,
                default=default,
                version=version,
            ),
            replace=replace,
        )
        return fn

    return wrap
