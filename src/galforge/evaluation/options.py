"""The options of :func:`galforge.evaluation.runner.evaluate`, as one checked object.

:class:`EvaluateOptions` holds every setting of an evaluation with its default; ``evaluate``
still takes them as keywords (``evaluate(real, fake, out, measures=[...], seed=1)``) and builds
this object from them.  Its choices are checked once, when it is made: ``isophote_engine``
from its annotation, ``thresholds`` against the registered measures' thresholds.
:meth:`EvaluateOptions.settings` is the dict the measures read (``Context.options``) and
``metrics.json["settings"]`` records; :data:`DEFAULTS` is that dict's defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from galforge.errors import EvaluationError
from galforge.evaluation.morphology import ISOPHOTE_ENGINES
from galforge.options import Options

#: the isophote fitters (:data:`galforge.evaluation.morphology.ISOPHOTE_ENGINES`)
IsophoteEngine = Literal[ISOPHOTE_ENGINES]  # type: ignore[valid-type]

#: the options that describe the call rather than the measurement (not in ``settings``)
CALL_OPTIONS = ("measures", "thresholds", "bands", "units")


@dataclasses.dataclass(frozen=True)
class EvaluateOptions(Options):
    """Every option of an evaluation, with its default (see ``evaluate``'s docstring)."""

    ERROR: ClassVar = EvaluationError
    CALLER: ClassVar[str] = "evaluate"

    seed: int = 0
    scheduler: str = "auto"  # "auto", "threads", "processes", "synchronous" or an address
    workers: int | None = None
    chunk_size: int = 16
    band: str = "sum"  # band (or "sum") for shapes and morphology
    upscale: int | None = 512  # isophote upscaling (None: native resolution)
    isophote_engine: IsophoteEngine = "galforge"  # "galforge" (batched) or "photutils"
    zeropoint: float | None = None  # None: from the REAL meta, else instrumental magnitudes
    detect_thresh: float = 5.0
    minarea: int = 5
    mag_limit: float | None = None  # KS of magnitudes only brighter than this
    colour_bands: Sequence[str] | None = None  # (blue, red); default: first and last band
    mag_band: str | None = None  # default: the red band of colour_bands
    redshift: float | None = None
    box_k: float = 1.75
    nn_crop: float = 0.5
    nn_k: int = 3
    nn_normalize: bool = True
    holdout_fraction: float = 0.2
    classifier_folds: int = 5
    hist_bins: int = 32
    max_k: int = 32
    encoder_weights: str | None = None
    inception_weights: str | None = None
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    grid_n: int = 36
    progress: bool = True
    cache: bool = True
    # what to measure and judge, and how to read bare arrays
    measures: Sequence[str] | None = None  # None: the default measures
    thresholds: Mapping[str, float] | None = None  # over the registered defaults
    bands: Sequence[str] | None = None
    units: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.thresholds:
            from galforge.evaluation.registry import default_thresholds

            known = default_thresholds()
            bad = sorted(set(self.thresholds) - set(known))
            if bad:
                raise EvaluationError(
                    f"unknown threshold(s) {', '.join(bad)}; choose from {', '.join(known)}"
                )

    def settings(self) -> dict[str, Any]:
        """The measurement settings as a dict (``Context.options``), in declaration order."""
        return {k: v for k, v in self.as_dict().items() if k not in CALL_OPTIONS}

    def all_thresholds(self) -> dict[str, float]:
        """The registered measures' default thresholds with this call's laid over them."""
        from galforge.evaluation.registry import default_thresholds

        return {**default_thresholds(), **dict(self.thresholds or {})}


#: the default measurement settings (``EvaluateOptions().settings()``)
DEFAULTS: dict[str, Any] = EvaluateOptions().settings()
