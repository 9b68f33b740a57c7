"""Generator and discriminator architectures, and the registry that rebuilds generators.

``build_generator(family, spec)`` rebuilds a generator from the JSON spec stored with a
bundle; architecture modules are imported on demand.
"""

from __future__ import annotations

from galforge.models.registry import (
    build_generator,
    compose,
    get_family,
    known_families,
    register_family,
    register_generator,
)

__all__ = [
    "build_generator",
    "compose",
    "get_family",
    "known_families",
    "register_family",
    "register_generator",
]
