"""Generation from a trained bundle: seeded latents, batched sampling, file writers.

``galforge.generation.write_samples(galforge.load("runs/x"), "out", 100, seed=0)`` writes
100 galaxies as FITS in physical units plus a ``grid.png``; ``iter_samples`` streams
samples chunk by chunk; :mod:`galforge.generation.latent` holds truncation, interpolation
and latent arithmetic.
"""

from __future__ import annotations

from galforge.generation.sampling import Bundle, iter_samples, load_bundle, sample
from galforge.generation.writers import (
    FORMATS,
    GenerationResult,
    write_fits,
    write_grid,
    write_png,
    write_samples,
)

__all__ = [
    "FORMATS",
    "Bundle",
    "GenerationResult",
    "iter_samples",
    "load_bundle",
    "sample",
    "write_fits",
    "write_grid",
    "write_png",
    "write_samples",
]
