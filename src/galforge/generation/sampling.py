"""Batched sampling from a bundle, streamed in chunks so that any number of galaxies fits.

``for start, images in iter_samples(bundle, 1_000_000, seed=3): ...`` yields the samples
``start .. start+len(images)-1`` as float32 ``B×C×H×W`` arrays in physical units, one batch
at a time, with a progress bar. Sample ``i`` is the same image that
``bundle.sample(n, seed)[i]`` returns: it depends only on ``(seed, i)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from galforge.bundle import Bundle
from galforge.errors import ConfigError

__all__ = ["iter_samples", "sample"]


def iter_samples(
    bundle: Bundle,
    n: int,
    seed: int = 0,
    batch: int = 64,
    *,
    start: int = 0,
    truncation: float | None = None,
    progress: bool | None = None,
    desc: str = "generating",
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_index, images)`` chunks of at most ``batch`` samples, ``n`` in all.

    ``progress``: ``True`` shows a progress bar on stderr, ``False`` none, ``None`` (default)
    shows one only when stderr is a terminal. ``truncation`` ψ pulls latents toward the mean
    latent (see :meth:`galforge.bundle.Bundle.latent`).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"-n {n!r}: the number of samples must be an integer >= 0")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ConfigError(f"--batch {batch!r}: the batch size must be an integer >= 1")
    n, batch, start = int(n), int(batch), int(start)
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=desc, unit="img", disable=(None if progress is None else not progress)) as bar:
        for offset in range(0, n, batch):
            m = min(batch, n - offset)
            z = bundle.latent(m, seed, start=start + offset, truncation=truncation)
            images = bundle.generate_from_latent(z, batch=batch)
            bar.update(m)
            yield start + offset, images


def sample(
    bundle: Bundle,
    n: int,
    seed: int = 0,
    batch: int = 64,
    *,
    start: int = 0,
    truncation: float | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """All ``n`` samples in one float32 ``N×C×H×W`` array (with an optional progress bar)."""
    out = np.empty((int(n), *bundle.image_shape), dtype=np.float32)
    for first, images in iter_samples(
        bundle, n, seed, batch, start=start, truncation=truncation, progress=progress
    ):
        out[first - start : first - start + len(images)] = images
    return out
