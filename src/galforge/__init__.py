"""galforge: generative adversarial networks for galaxy images and deep fields."""

from __future__ import annotations

__version__ = "0.1.0"

from galforge.errors import GalforgeError  # noqa: E402

__all__ = ["GalforgeError", "__version__", "load"]


def load(path, device="auto"):
    """Load a trained generator from a bundle folder or a run folder.

    ``galforge.load("runs/x/bundle").sample(16, seed=0)`` returns a float32 array in the
    training data's physical units. Nothing in the files is executed (no pickle).
    ``device``: ``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``. The loaded bundle tells ``bands``, ``units``, ``pixel_scale`` (arcsec/pixel)
    and ``zeropoint`` (AB magnitude zero point of its unit), None where unknown.
    """
    from galforge.generation.sampling import load_bundle

    return load_bundle(path, device=device)
