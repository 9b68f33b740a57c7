"""Galaxy images in: readers, catalogue selection, transforms, normalisation, built-in sets.

The one entry point is :func:`load_images`; it returns an :class:`ImageSet` (float32
``N×C×H×W`` in physical units, band names, per-image metadata, units and a read report).
"""

from __future__ import annotations

from galforge.data.imageset import ImageSet, ReadReport
from galforge.data.loading import KNOWN_OPTIONS, load_images, normalize_options

__all__ = [
    "KNOWN_OPTIONS",
    "ImageSet",
    "ReadReport",
    "Normalizer",
    "load_images",
    "normalize_options",
]


def __getattr__(name):
    if name == "Normalizer":
        from galforge.data.normalize import Normalizer

        return Normalizer
    raise AttributeError(name)
