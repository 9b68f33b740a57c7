"""The model recipes known to ``galforge train --model NAME``.

:data:`RECIPES` maps a model name (``dcgan64``, ``dcgan128``, ...) to its recipe class;
``RECIPES[name].default_config()`` gives that model's default hyper-parameters.

Adding a model: write ``galforge/training/recipes/<module>.py`` with a
:class:`galforge.training.recipe.Recipe` subclass decorated with
``@register_recipe("name")`` (several names with different defaults are allowed:
``@register_recipe("name128", image_size=128)``), and add ``"<module>"`` to
:data:`RECIPE_MODULES` below.
"""

from __future__ import annotations

import copy
import importlib

from galforge.errors import ConfigError
from galforge.training.recipe import Recipe

RECIPES: dict[str, type[Recipe]] = {}

# modules imported to fill RECIPES (a module not present yet is skipped)
RECIPE_MODULES = ("dcgan", "sgan")


def register_recipe(name: str, **default_overrides):
    """Class decorator: make a recipe available as ``--model name``.

    With ``default_overrides`` the name gets a subclass whose defaults differ (e.g. the
    128×128 variant of a model); the decorated class itself is returned unchanged.
    """

    def deco(cls: type[Recipe]) -> type[Recipe]:
        unknown = set(default_overrides) - set(cls.DEFAULTS)
        if unknown:
            raise ConfigError(f"recipe {name!r}: overrides of unknown options {sorted(unknown)}")
        if default_overrides or cls.name:
            variant = type(cls.__name__, (cls,), {
                "name": name,
                "DEFAULTS": {**cls.DEFAULTS, **default_overrides},
                "__module__": cls.__module__,
                "__doc__": cls.__doc__,
            })
            RECIPES[name] = variant
        else:
            cls.name = name
            RECIPES[name] = cls
        return cls

    return deco


def get_recipe(name: str) -> type[Recipe]:
    """The recipe class of model ``name``; ConfigError listing the known models otherwise."""
    if name not in RECIPES:
        raise ConfigError(
            f"unknown model {name!r} (--model); known models: {', '.join(sorted(RECIPES))}"
        )
    return RECIPES[name]


def model_defaults() -> dict[str, dict]:
    """Default hyper-parameters of every known model, by name."""
    return {name: cls.default_config() for name, cls in sorted(RECIPES.items())}


def model_configs() -> dict[str, dict[str, dict]]:
    """The named configurations (``model.config``) of every model that has them, by name."""
    return {name: copy.deepcopy(dict(cls.CONFIGS)) for name, cls in sorted(RECIPES.items())
            if cls.CONFIGS}


for _module in RECIPE_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_module}":
            raise
