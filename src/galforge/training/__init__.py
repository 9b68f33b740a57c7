"""Training: one generic loop (:class:`Trainer`) and one recipe per model family.

``galforge.training.recipes.RECIPES`` maps model names (``dcgan64``, ``dcgan128``, ...) to
recipe classes; :func:`train_from_config` runs a resolved :class:`galforge.config.RunConfig`.
"""

from __future__ import annotations

from galforge.seeding import derive_seed
from galforge.training.recipe import BatchSource, Recipe, StampBatches
from galforge.training.trainer import Trainer, train_from_config

__all__ = ["BatchSource", "Recipe", "StampBatches", "Trainer", "derive_seed",
           "train_from_config"]
