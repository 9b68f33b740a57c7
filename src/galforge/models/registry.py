"""Registry of generator builders: rebuild a generator from the JSON spec of a bundle.

Each architecture module registers a builder with ``@register_generator("family")``.
:func:`build_generator` imports ``galforge.models.<family>`` on first use, so a bundle can
be loaded without importing any training code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from galforge.errors import ModelError

GeneratorBuilder = Callable[[dict], nn.Module]
_BUILDERS: dict[str, GeneratorBuilder] = {}


def register_generator(family: str) -> Callable[[GeneratorBuilder], GeneratorBuilder]:
    """Decorator: register ``builder(spec) -> nn.Module`` under ``family``."""

    def deco(builder: GeneratorBuilder) -> GeneratorBuilder:
        _BUILDERS[str(family)] = builder
        return builder

    return deco


def known_families() -> list[str]:
    """Families registered so far (modules imported so far)."""
    return sorted(_BUILDERS)


def build_generator(family: str, spec: dict, module: str | None = None) -> nn.Module:
    """Build the generator of ``family`` from ``spec`` (no weights loaded).

    ``module`` optionally names the module that registers the family (e.g. the
    ``export_module`` of a run); otherwise ``galforge.models.<family>`` is imported.
    """
    if family not in _BUILDERS:
        for name in filter(None, (module, f"galforge.models.{family}")):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                continue
            if family in _BUILDERS:
                break
    if family not in _BUILDERS:
        raise ModelError(
            f"unknown generator family {family!r}; known families: "
            f"{', '.join(known_families()) or 'none'}"
        )
    if not isinstance(spec, dict):
        raise ModelError(f"the spec of a {family!r} generator must be a JSON object")
    try:
        return _BUILDERS[family](dict(spec))
    except TypeError as exc:
        raise ModelError(f"bad {family!r} generator spec {spec}: {exc}") from exc
