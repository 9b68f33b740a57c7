"""Registries of generator parts and of the families that compose them into a sampler.

A *part* is one network stored in a bundle (``generator``; or ``stage1`` + ``stage2``; or
``positions`` + ``galaxies``). Its architecture registers a builder with
``@register_generator("name")``: ``builder(spec) -> nn.Module`` rebuilds it from the JSON
spec saved beside its weights.

A *family* turns a bundle's parts into the one module that makes samples. A family whose
bundle has the single part ``generator`` needs no registration: that part is the sampler.
Other families register a composer with ``@register_family("name", parts=(...))``:
``compose(parts: dict[str, nn.Module]) -> nn.Module`` returns a module that declares its
capabilities (:mod:`galforge.models.capabilities`).

Any module can register parts and families, a user's own module included: importing it is
enough. ``galforge.models.<name>`` is imported on first use, so a bundle of a built-in
family loads without importing any training code.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from galforge.errors import ModelError

GeneratorBuilder = Callable[[dict], nn.Module]
Composer = Callable[[dict[str, nn.Module]], nn.Module]
_BUILDERS: dict[str, GeneratorBuilder] = {}
_FAMILIES: dict[str, Family] = {}

DEFAULT_PARTS = ("generator",)


@dataclass(frozen=True)
class Family:
    """How a family's named parts make a sampler."""

    name: str
    parts: tuple[str, ...]
    compose: Composer | None = None


def register_generator(family: str) -> Callable[[GeneratorBuilder], GeneratorBuilder]:
    """Decorator: register ``builder(spec) -> nn.Module`` under ``family``."""

    def deco(builder: GeneratorBuilder) -> GeneratorBuilder:
        _BUILDERS[str(family)] = builder
        return builder

    return deco


def register_family(name: str, parts: Sequence[str]) -> Callable[[Composer], Composer]:
    """Decorator: register ``compose(parts) -> sampler`` for bundles of family ``name``."""
    parts = tuple(str(p) for p in parts)
    if not parts or len(set(parts)) != len(parts):
        raise ModelError(f"family {name!r}: give distinct part names, got {list(parts)}")

    def deco(compose: Composer) -> Composer:
        _FAMILIES[str(name)] = Family(str(name), parts, compose)
        return compose

    return deco


def _import_for(name: str, module: str | None) -> None:
    for candidate in filter(None, (module, f"galforge.models.{name}")):
        if importlib.util.find_spec(candidate) is not None:
            importlib.import_module(candidate)
            return


def known_families() -> list[str]:
    """Generator parts and families registered so far (modules imported so far)."""
    return sorted(set(_BUILDERS) | set(_FAMILIES))


def get_family(name: str, module: str | None = None) -> Family:
    """The family ``name``: registered, or the single part ``generator`` of that name."""
    if name not in _FAMILIES and name not in _BUILDERS:
        _import_for(name, module)
    if name in _FAMILIES:
        return _FAMILIES[name]
    if name in _BUILDERS:
        return Family(name, DEFAULT_PARTS, None)
    raise ModelError(
        f"unknown generator family {name!r}; known families: "
        f"{', '.join(known_families()) or 'none'}"
    )


def build_generator(family: str, spec: dict, module: str | None = None) -> nn.Module:
    """Build the generator part ``family`` from ``spec`` (no weights loaded).

    ``module`` optionally names the module that registers it (e.g. the ``export_module``
    of a run); otherwise ``galforge.models.<family>`` is imported.
    """
    if family not in _BUILDERS:
        _import_for(family, module)
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


def compose(family: str, parts: Mapping[str, nn.Module], module: str | None = None) -> nn.Module:
    """The sampler of ``family`` made from its built ``parts``."""
    fam = get_family(family, module)
    if set(parts) != set(fam.parts):
        raise ModelError(
            f"family {family!r} is made of the parts {list(fam.parts)}, got {sorted(parts)}"
        )
    if fam.compose is None:
        return parts[fam.parts[0]]
    return fam.compose(dict(parts))
