"""Physical validation of generated galaxies against real ones.

``galforge.evaluation.evaluate(real, fake, out_dir, **options)`` measures both sets the same
way -- isophote and moment shapes, source photometry, colour–magnitude, statmorph
morphology, memorisation (nearest neighbours), power spectra with a realism classifier, and
FID/KID on galforge's galaxy encoder (the Fréchet galaxy distance) or a user-supplied
Inception-v3 -- and writes ``report.html``, ``metrics.json`` and per-object CSV catalogues.

Each measure is one registered object (:mod:`galforge.evaluation.registry`); a measure of
one's own registers with the :func:`measure` (set-level) or :func:`object_measure`
(per-object) decorator and then runs, is judged and is reported like the built-ins.

:mod:`galforge.evaluation.realism` holds the realism scorer of sparse galaxy fields (a
regressor of a realism score from pixel histograms and power spectra, and the degradation
ladder that makes scored images offline; ``galforge score``).

This package works on arrays (with band names and units) and knows nothing of models or
bundles: whoever has a generator samples it and hands the images over.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MEASURES",
    "DEFAULT_THRESHOLDS",
    "MEASURES",
    "Context",
    "DetectionOptions",
    "Measure",
    "evaluate",
    "measure",
    "object_measure",
    "register",
]

_REGISTRY_NAMES = ("Context", "Measure", "measure", "object_measure", "register")


def __getattr__(name):
    if name in ("evaluate", "MEASURES", "DEFAULT_MEASURES"):
        from galforge.evaluation import runner

        return getattr(runner, name)
    if name == "DEFAULT_THRESHOLDS":
        from galforge.evaluation.registry import default_thresholds

        return default_thresholds()
    if name in _REGISTRY_NAMES:
        from galforge.evaluation import registry

        return getattr(registry, name)
    if name == "DetectionOptions":
        from galforge.evaluation.photometry import DetectionOptions

        return DetectionOptions
    raise AttributeError(f"module 'galforge.evaluation' has no attribute {name!r}")
