"""The model recipes known to ``galforge train --model NAME``.

:data:`RECIPES` maps a model name (``dcgan64``, ``dcgan128``, ``sgan``, ...) to its recipe
class; ``RECIPES[name].default_config()`` gives that model's default hyper-parameters.

Adding a model: decorate a :class:`galforge.training.recipe.Recipe` subclass with
``@register_recipe("name")`` (several names with different defaults are allowed:
``@register_recipe("name128", image_size=128)``) in any module and import it. Every module
of this package is imported here, so a recipe file dropped into
``galforge/training/recipes/`` needs no list to be edited; a user's own module registers its
recipes the moment it is imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from galforge.errors import ConfigError
from galforge.training.recipe import Recipe

RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(name: str, **default_overrides):
    """Class decorator: make a recipe available as ``--model name``.

    With ``default_overrides`` the name gets a subclass whose defaults differ (e.g. the
    128×128 variant of a model); the decorated class itself is returned unchanged.
    """

    def deco(cls: type[Recipe]) -> type[Recipe]:
        unknown = set(default_overrides) - set(cls._fields())
        if unknown:
            raise ConfigError(f"recipe {name!r}: overrides of unknown options {sorted(unknown)}")
        if default_overrides or cls.name:
            variant = type(
                cls.__name__,
                (cls,),
                {
                    "name": name,
                    "OVERRIDES": {**cls.OVERRIDES, **default_overrides},
                    "__module__": cls.__module__,
                    "__doc__": cls.__doc__,
                },
            )
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
    """Named configs of every known model: ``{model: {config name: model.* overrides}}``."""
    return {name: cls.config_overrides() for name, cls in sorted(RECIPES.items())}


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
