"""galforge: generative adversarial networks for galaxy images and deep fields."""

from __future__ import annotations

__version__ = "0.1.0"

from galforge.errors import GalforgeError  # noqa: E402

__all__ = ["GalforgeError", "__version__", "load"]


def load(path, device="cpu"):
    """Load a trained generator from a bundle folder or a run folder.

    ``galforge.load("runs/x/bundle").sample(16, seed=0)`` returns a float32 array in the
    training data's physical units. Nothing in the files is executed (no pickle).
    """
    from galforge.generation.sampling import load_bundle

    return load_bundle(path, device=device)
