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

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from galforge.errors import EvaluationError
from galforge.evaluation.verdicts import failure_counts, ks_rows, object_details, summary_row

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

#: Thresholds of the shared rules (:mod:`galforge.evaluation.verdicts`); each measure adds
#: its own (``Measure.thresholds``).
COMMON_THRESHOLDS = {
    "ks_p": 0.05,            # family-wise level of the KS rows (Bonferroni over all of them)
    "min_objects": 10,       # fewer measured objects in a set: too few to test, the row fails
    "failure_margin": 0.05,  # fake failure rate may exceed the real one by this much...
    "failure_alpha": 0.01,   # ...or by more, when a one-sided Fisher test gives p >= this
    "z": 2.0,                # standard errors of sampling noise allowed by size-aware rules
}


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


@dataclass
class Context:
    """What a measure sees besides the pixels.

    ``bands`` and ``units`` of both sets; ``options`` every evaluate option (defaults
    filled in); ``detection`` the :class:`~galforge.evaluation.photometry.DetectionOptions`
    of this evaluation; ``magnitudes`` the magnitude system (``zeropoint``, ``system``,
    ``source``)."""

    bands: tuple
    units: str
    options: dict
    detection: object = None
    magnitudes: dict = field(default_factory=dict)
    #: the thresholds of this evaluation (set when the summary is built)
    thresholds: dict = field(default_factory=dict)
    #: number of KS rows in the summary (the Bonferroni family of the KS rule)
    ks_tests: int = 1


class Measure:
    """Base of every measure.

    Attributes: ``name`` (the ``--measures`` word), ``title`` (report section), ``options``
    (names of evaluate options the result depends on: they enter the cache key),
    ``thresholds`` (``{name: default}`` of the thresholds its rule uses), ``default`` (run
    when no measures are named), ``requires`` (measures it needs; added automatically),
    ``version`` (bump when the computation changes, to invalidate cached results),
    ``imports`` (modules to import before the parallel run)."""

    kind = "set"
    name: str = ""
    title: str = ""
    options: tuple = ()
    thresholds: dict = {}
    default: bool = True
    requires: tuple = ()
    version: str = "1"
    #: modules imported once in the main thread before the parallel run: a first import of
    #: a large package (torch, scipy.stats) from several worker threads at once can see a
    #: partially initialised module
    imports: tuple = ()

    def is_default(self, ctx: Context) -> bool:
        """Whether the measure runs when no measures are named."""
        return bool(self.default)

    def cache_options(self, ctx: Context) -> dict:
        """Everything besides the pixels that the result depends on."""
        return {k: ctx.options.get(k) for k in self.options}

    def unavailable(self, ctx: Context) -> str | None:
        """Why this measure cannot run with these options (a note), or ``None``."""
        return None

    def summary(self, result: dict, thresholds: dict, ctx: Context) -> list[dict]:
        """The measure's rows of the summary table (:func:`summary_row`)."""
        return []

    def details(self, result: dict, ctx: Context) -> list[dict]:
        """Tables for the report's Details section: ``[{"title", "columns", "rows"}]``.
        The default shows the result's scalar entries."""
        rows = [[k, v] for k, v in result.items()
                if not isinstance(v, (list, dict)) and v is not None]
        return [{"title": self.title or self.name, "columns": ["quantity", "value"],
                 "rows": rows}] if rows else []

    def outputs(self, out, real, fake, result: dict, catalogue, ctx: Context) -> dict:
        """Write the measure's figures and files into ``out``; return ``{"figures":
        [{"file", "caption"}], "csv": [names]}``.  An exception becomes a note."""
        return {"figures": [], "csv": []}


class ObjectMeasure(Measure):
    """A per-object measure: ``measure_chunk(images, bands, ctx) -> rows`` (one dict per
    image or per source, ``ok``/``reason`` where a fit can fail), compared column by column.

    ``fitted``: rows carry ``ok``; the failure rates of both sets enter the verdict.
    ``per_image``: one row per image (an ``image`` index is added); otherwise the rows carry
    their own ``image`` index within the chunk (sources)."""

    kind = "object"
    fitted = True
    per_image = True
    label = ""

    def measure_chunk(self, images: np.ndarray, bands: tuple, ctx: Context) -> list[dict]:
        raise EvaluationError(f"measure {self.name!r} does not define measure_chunk")

    def columns(self, ctx: Context) -> tuple:
        return ()

    def limits(self, ctx: Context) -> dict | None:
        return None

    def compare(self, rows: dict, ctx: Context) -> dict:
        """``{"columns", "comparison", "failures"}`` from both sets' rows."""
        from galforge.evaluation.stats import compare_columns

        cols = self.columns(ctx)
        return {"columns": list(cols),
                "comparison": compare_columns(rows["real"], rows["fake"], cols,
                                              limits=self.limits(ctx)),
                "failures": {"real": failure_counts(rows["real"]),
                             "fake": failure_counts(rows["fake"])}}

    def summary(self, result, thresholds, ctx):
        return ks_rows(self, result, thresholds, ctx.ks_tests)

    def details(self, result, ctx):
        return object_details(self, result)

    def outputs(self, out, real, fake, result, catalogue, ctx):
        from galforge.evaluation.figures import write_csv
        from galforge.evaluation.stats import plot_histograms

        csvs = []
        for s_name in ("real", "fake"):
            name = f"catalogue_{self.name}_{s_name}.csv"
            write_csv(out / name, catalogue[s_name])
            csvs.append(name)
        cols = result["columns"]
        figures = []
        if cols:
            plot_histograms(catalogue["real"], catalogue["fake"], cols,
                            out / f"hist_{self.name}.png")
            figures.append({"file": f"hist_{self.name}.png",
                            "caption": f"Real vs fake histograms of {', '.join(cols)}"
                                       + (" (failed measurements left out, counted in Details)."
                                          if self.fitted else ".")})
        return {"figures": figures, "csv": csvs}


class SetMeasure(Measure):
    """A set-level measure: ``compute(real, fake, ctx) -> dict`` on whole ``N×C×H×W``
    arrays (one task, cached by the content of both sets)."""

    kind = "set"

    def compute(self, real: np.ndarray, fake: np.ndarray, ctx: Context) -> dict:
        raise EvaluationError(f"measure {self.name!r} does not define compute")


class DerivedMeasure(Measure):
    """Computed from the catalogues of the measures in ``requires``:
    ``derive(catalogues, ctx) -> dict`` with ``catalogues[name] = {"real": rows, "fake":
    rows}``; not cached (it is cheap by design)."""

    kind = "derived"

    def derive(self, catalogues: dict, ctx: Context) -> dict:
        raise EvaluationError(f"measure {self.name!r} does not define derive")


# --------------------------------------------------------------------------- the registry

_REGISTRY: dict[str, Measure] = {}
_LOCK = threading.RLock()
_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    with _LOCK:
        if _BUILTINS_LOADED:
            return
        _BUILTINS_LOADED = True
        from galforge.evaluation import measures as _builtin  # noqa: F401  (registers them)


def register(m: Measure, *, replace: bool = False) -> Measure:
    """Add a measure instance to the registry (report order is registration order)."""
    _ensure_builtins()
    if not isinstance(m, Measure):
        raise EvaluationError(f"register() takes a Measure instance, got {type(m).__name__}")
    name = str(m.name or "").strip()
    if not name or any(c in name for c in ", /\\"):
        raise EvaluationError(
            f"measure name {m.name!r}: use a non-empty word without commas, spaces or slashes")
    clash = (set(m.thresholds) & set(COMMON_THRESHOLDS)) or {
        t for other in _REGISTRY.values() if other.name != name
        for t in other.thresholds if t in m.thresholds and other.thresholds[t] != m.thresholds[t]}
    if clash:
        raise EvaluationError(
            f"measure {name!r}: threshold name(s) {', '.join(sorted(clash))} already used "
            "with another default; choose other names")
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise EvaluationError(
                f"a measure named {name!r} is already registered; pick another name or pass "
                "replace=True")
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
    _ensure_builtins()
    with _LOCK:
        return list(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(m.name for m in measures())


def get(name: str) -> Measure:
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EvaluationError(
            f"unknown measure {name!r}; choose from {', '.join(names())}") from None


def default_thresholds() -> dict:
    """The shared thresholds and those of every registered measure."""
    out = dict(COMMON_THRESHOLDS)
    for m in measures():
        for k, v in m.thresholds.items():
            out.setdefault(k, v)
    return out


# --------------------------------------------------------------------------- decorators

_RULES = {"<": lambda v, t: v < t, "<=": lambda v, t: v <= t,
          ">": lambda v, t: v > t, ">=": lambda v, t: v >= t}


class _FunctionSetMeasure(SetMeasure):
    def __init__(self, fn, *, name, title, statistic, rule, threshold, options, default,
                 version, figure):
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
            raise EvaluationError(f"measure {self.name!r} must return a dict, got "
                                  f"{type(res).__name__}")
        return res

    def summary(self, result, thresholds, ctx):
        if self.statistic is None:
            return []
        value = result.get(self.statistic)
        thr = thresholds.get(self.threshold_name) if self.threshold_name else None
        passed = (value is not None and thr is not None
                  and bool(_RULES[self.rule](float(value), float(thr))))
        return [summary_row(f"{self.title} ({self.statistic})" if self.title != self.statistic
                            else self.title, value, thr, passed, f"{self.rule} threshold",
                            self.name, n_real=result.get("n_real"),
                            n_fake=result.get("n_fake"), note=result.get("note"))]

    def outputs(self, out, real, fake, result, catalogue, ctx):
        if self._figure is None:
            return {"figures": [], "csv": []}
        figs = self._figure(out, real.images, fake.images, result, ctx) or []
        return {"figures": [f if isinstance(f, dict) else {"file": f[0], "caption": f[1]}
                            for f in figs], "csv": []}


def measure(name: str, *, statistic: str | None = None, rule: str = "<",
            threshold: tuple[str, float] | None = None, title: str | None = None,
            options: Sequence[str] = (), default: bool = True, version: str = "1",
            figure: Callable | None = None, replace: bool = False):
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
        register(_FunctionSetMeasure(fn, name=name, title=title, statistic=statistic,
                                     rule=rule, threshold=threshold, options=options,
                                     default=default, version=version, figure=figure),
                 replace=replace)
        return fn

    return wrap


class _FunctionObjectMeasure(ObjectMeasure):
    def __init__(self, fn, *, name, title, columns, fitted, per_image, options, default,
                 version):
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


def object_measure(name: str, *, columns: Sequence[str], title: str | None = None,
                   fitted: bool = False, per_image: bool = True, options: Sequence[str] = (),
                   default: bool = True, version: str = "1", replace: bool = False):
    """Decorator: register ``fn(images, bands, ctx) -> rows`` (one dict per image) as a
    per-object measure whose ``columns`` are compared with the KS test (rows with
    ``ok=False`` count as failed fits when ``fitted``)."""

    def wrap(fn):
        register(_FunctionObjectMeasure(fn, name=name, title=title, columns=columns,
                                        fitted=fitted, per_image=per_image, options=options,
                                        default=default, version=version), replace=replace)
        return fn

    return wrap
