"""The kinds of evaluation measure and what a measure sees (:class:`Context`).

:class:`ObjectMeasure` (one row per image or source, compared column by column),
:class:`SetMeasure` (one result from both whole sets) and :class:`DerivedMeasure` (computed from
other measures' catalogues) are the bases of the built-in measures
(:mod:`galforge.evaluation.measures`) and of one's own; :mod:`galforge.evaluation.registry`
holds the registered objects.
"""

from __future__ import annotations

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
    "summary_row",
]

#: Thresholds of the shared rules (:mod:`galforge.evaluation.verdicts`); each measure adds
#: its own (``Measure.thresholds``).
COMMON_THRESHOLDS = {
    "ks_p": 0.05,  # family-wise level of the KS rows (Bonferroni over all of them)
    "min_objects": 10,  # fewer measured objects in a set: too few to test, the row fails
    "failure_margin": 0.05,  # fake failure rate may exceed the real one by this much...
    "failure_alpha": 0.01,  # ...or by more, when a one-sided Fisher test gives p >= this
    "z": 2.0,  # standard errors of sampling noise allowed by size-aware rules
}


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
        rows = [
            [k, v] for k, v in result.items() if not isinstance(v, (list, dict)) and v is not None
        ]
        return (
            [{"title": self.title or self.name, "columns": ["quantity", "value"], "rows": rows}]
            if rows
            else []
        )

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

    def chunk_size(self, ctx: Context) -> int:
        """Images per parallel task (the ``chunk_size`` option unless the measure needs
        more at once, as a batched fitter does)."""
        return int(ctx.options["chunk_size"])

    def columns(self, ctx: Context) -> tuple:
        return ()

    def limits(self, ctx: Context) -> dict | None:
        return None

    def compare(self, rows: dict, ctx: Context) -> dict:
        """``{"columns", "comparison", "failures"}`` from both sets' rows."""
        from galforge.evaluation.stats import compare_columns

        cols = self.columns(ctx)
        return {
            "columns": list(cols),
            "comparison": compare_columns(
                rows["real"], rows["fake"], cols, limits=self.limits(ctx)
            ),
            "failures": {
                "real": failure_counts(rows["real"]),
                "fake": failure_counts(rows["fake"]),
            },
        }

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
            write_csv(out / name, catalogue[s_name], ctx.units)  # + ECSV, fluxes in units
            csvs.append(name)
        cols = result["columns"]
        figures = []
        if cols:
            plot_histograms(
                catalogue["real"], catalogue["fake"], cols, out / f"hist_{self.name}.png"
            )
            figures.append(
                {
                    "file": f"hist_{self.name}.png",
                    "caption": f"Real vs fake histograms of {', '.join(cols)}"
                    + (
                        " (failed measurements left out, counted in Details)."
                        if self.fitted
                        else "."
                    ),
                }
            )
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
