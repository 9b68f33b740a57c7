"""The one seeding scheme of galforge: every random draw comes from a stream named by keys.

A user gives one seed; everything random is drawn from a ``torch.Generator`` whose state
is derived from that seed and from *what* is drawn, never from the order in which things
happen, so any part can be redrawn alone:

``sample_latents(shape, n, seed, start=k)``
    the latent of sample ``i`` of ``seed`` (generate, the latent tools, bundle probes) comes
    from :func:`sample_generator` ``(seed, i)``: the same sample whatever the batch size or
    the range of indices asked for.
``sample_noise(shapes, n, seed, start=k)``
    the per-pixel noise maps of sample ``i`` (StyleGAN's noise inputs) from the stream
    :func:`sample_noise_generator` ``(seed, i)``, independent of the latent's stream.
``step_generator(seed, step, *keys)``
    the draws of training step ``step`` (latents, labels: ``(seed, step, rank)``), the
    batch of that step (``(seed, "epoch", e)`` for the shuffle, ``(seed, "augment", step)``
    for augmentation, ``(seed, "sgan-crops", step)`` for field crops): a resumed run sees
    exactly the draws of an uninterrupted one without saving any loader state.
``field_chunk_generator(seed, i, j)``
    chunk ``(i, j)`` of the conceptual latent of a deep field: any window of a field of any
    size is drawn alone, whatever the tile size or the worker count.

Streams of different keys are independent (:class:`numpy.random.SeedSequence` mixes the
keys). Nothing here touches torch's global generator; operations that only know the global
generator (dropout, torch's default weight initialisation) run inside :func:`global_scope`,
which forks the global state, seeds it from keys and restores it afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from galforge.errors import ConfigError

__all__ = [
    "check_seed",
    "derive_seed",
    "field_chunk_generator",
    "global_scope",
    "seeded_global",
    "sample_generator",
    "sample_latents",
    "sample_noise",
    "sample_noise_generator",
    "step_generator",
]


def check_seed(seed, option: str = "--seed") -> int:
    """``seed`` as an int; ConfigError naming ``option`` unless it is an integer >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(
            f"{option} {seed!r}: the seed must be a non-negative integer (e.g. {option} 0)"
        )
    return int(seed)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and any number of keys (step, rank, stream name).

    Different keys give independent streams; the same keys always give the same seed.
    """
    ints = [int(seed) & 0xFFFFFFFFFFFFFFFF]
    for k in keys:
        if isinstance(k, str):
            ints.extend(k.encode())
        else:
            ints.append(int(k) & 0xFFFFFFFFFFFFFFFF)
    words = np.random.SeedSequence(ints).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & 0x7FFFFFFFFFFFFFFF


def step_generator(seed: int, *keys: int | str, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, *keys)`` (training draws)."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of sample ``index`` for ``seed`` (its own independent stream)."""
    state = np.random.SeedSequence(entropy=check_seed(seed), spawn_key=(int(index),))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(state.generate_state(1, np.uint64)[0]))
    return gen


def sample_latents(
    per_sample_shape: Sequence[int], n: int, seed: int, *, start: int = 0
) -> torch.Tensor:
    """Standard normal latents ``(n, *per_sample_shape)`` of samples ``start..start+n-1``.

    Row ``k`` depends only on ``(seed, start + k)``. Drawn on the CPU in float32.
    """
    check_seed(seed)
    n = int(n)
    shape = tuple(int(s) for s in per_sample_shape)
    out = torch.empty((n, *shape), dtype=torch.float32)
    for k in range(n):
        out[k] = torch.randn(shape, generator=sample_generator(seed, start + k))
    return out


#: spawn key that separates a sample's noise stream from its latent stream
NOISE_STREAM = 0x6E6F6973


def sample_noise_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of the noise maps of sample ``index`` for ``seed``."""
    state = np.random.SeedSequence(entropy=check_seed(seed), spawn_key=(int(index), NOISE_STREAM))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(state.generate_state(1, np.uint64)[0]))
    return gen


def sample_noise(
    shapes: Sequence[Sequence[int]], n: int, seed: int, *, start: int = 0
) -> list[torch.Tensor]:
    """Standard normal noise maps ``[n×1×h×w for (h, w) in shapes]`` of samples
    ``start..start+n-1``; row ``k`` of every map depends only on ``(seed, start + k)``."""
    check_seed(seed)
    n = int(n)
    shapes = [tuple(int(v) for v in s) for s in shapes]
    out = [torch.empty((n, 1, *s), dtype=torch.float32) for s in shapes]
    for k in range(n):
        gen = sample_noise_generator(seed, start + k)
        for m, s in zip(out, shapes, strict=True):
            m[k, 0] = torch.randn(s, generator=gen)
    return out


def field_chunk_generator(seed: int, i: int, j: int) -> torch.Generator:
    """The CPU generator of latent chunk ``(i, j)`` of a deep field of ``seed``."""
    state = np.random.SeedSequence([int(seed), int(i), int(j)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


@contextlib.contextmanager
def seeded_global(value: int, devices: Sequence = ()) -> Iterator[None]:
    """Run a block with torch's global generator seeded with ``value``, then restore it.

    The one place galforge seeds the global generator. ``devices``: CUDA devices whose
    generators are forked too.
    """
    cuda = [d for d in devices if torch.device(d).type == "cuda"]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(value))
        yield


@contextlib.contextmanager
def global_scope(seed: int, *keys: int | str, devices: Sequence = ()) -> Iterator[None]:
    """Run a block with torch's global generator seeded from ``(seed, *keys)``, then restore it.

    For operations that take no generator argument (dropout, default initialisation).
    """
    with seeded_global(derive_seed(seed, *keys), devices=devices):
        yield
