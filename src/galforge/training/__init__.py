"""Training: one generic loop (:class:`Trainer`) and one recipe per model family.

``galforge.training.recipes.RECIPES`` maps model names (``dcgan64``, ``dcgan128``, ...) to
recipe classes; :func:`train_from_config` (:mod:`galforge.training.from_config`) runs a resolved
:class:`galforge.config.RunConfig`.  Beside the loop: the generator EMA in
:mod:`galforge.training.ema`, the log window, progress lines and loss curves in
:mod:`galforge.training.logwindow`, in-training metrics in :mod:`galforge.training.metrics`.
The recipe contract (settings, phases, augmentations, data needs) is in
:mod:`galforge.training.recipe`; losses in :mod:`galforge.training.losses`; stateful
augmentation in :mod:`galforge.training.augment`; data in :mod:`galforge.training.pipeline`.
"""

from __future__ import annotations

from galforge.training.augment import AdaptiveAugment, Augment, FlipRotate
from galforge.training.from_config import train_from_config
from galforge.training.metrics import MetricHook
from galforge.training.pipeline import (
    BatchSource,
    Fields,
    PairedStamps,
    StampBatches,
    Stamps,
)
from galforge.training.recipe import Phase, Recipe, StepContext
from galforge.training.trainer import Trainer

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
