"""Training: one generic loop (:class:`Trainer`) and one recipe per model family.

``galforge.training.recipes.RECIPES`` maps model names (``dcgan64``, ``dcgan128``, ...) to
recipe classes; :func:`train_from_config` runs a resolved :class:`galforge.config.RunConfig`.
The recipe contract (settings, phases, augmentations, data needs) is in
:mod:`galforge.training.recipe`; losses in :mod:`galforge.training.losses`; stateful
augmentation in :mod:`galforge.training.augment`; data in :mod:`galforge.training.pipeline`.
"""

from __future__ import annotations

from galforge.training.augment import AdaptiveAugment, Augment, FlipRotate
from galforge.training.pipeline import (
    BatchSource,
    Fields,
    PairedStamps,
    StampBatches,
    Stamps,
)
from galforge.training.recipe import Phase, Recipe, StepContext
from galforge.training.trainer import MetricHook, Trainer, train_from_config

__all__ = [
    "AdaptiveAugment",
    "Augment",
    "BatchSource",
    "Fields",
    "FlipRotate",
    "MetricHook",
    "PairedStamps",
    "Phase",
    "Recipe",
    "StampBatches",
    "Stamps",
    "StepContext",
    "Trainer",
    "train_from_config",
]
