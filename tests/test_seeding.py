"""The one seeding scheme: keyed streams, sample latents, field chunks, forked global scope."""

from __future__ import annotations

import pytest
import torch

from galforge.errors import ConfigError
from galforge.seeding import (
    check_seed,
    derive_seed,
    field_chunk_generator,
    global_scope,
    sample_latents,
    step_generator,
)


def test_sample_latents_depend_only_on_seed_and_index():
    whole = sample_latents((3, 1, 1), 6, seed=4)
    assert whole.dtype == torch.float32 and whole.shape == (6, 3, 1, 1)
    assert torch.equal(sample_latents((3, 1, 1), 2, seed=4, start=3), whole[3:5])
    assert not torch.equal(sample_latents((3, 1, 1), 6, seed=5), whole)
    assert not torch.equal(whole[0], whole[1])


def test_keyed_streams_are_reproducible_and_independent():
    assert derive_seed(1, 7, "augment") == derive_seed(1, 7, "augment")
    assert (
        len(
            {
                derive_seed(1, 7, "augment"),
                derive_seed(1, 8, "augment"),
                derive_seed(1, 7, "epoch"),
                derive_seed(2, 7, "augment"),
            }
        )
        == 4
    )
    a = torch.rand(4, generator=step_generator(3, 10, 0))
    assert torch.equal(a, torch.rand(4, generator=step_generator(3, 10, 0)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(3, 11, 0)))
    c = torch.randn(5, generator=field_chunk_generator(2, 0, 1))
    assert torch.equal(c, torch.randn(5, generator=field_chunk_generator(2, 0, 1)))
    assert not torch.equal(c, torch.randn(5, generator=field_chunk_generator(2, 1, 0)))


def test_global_scope_seeds_and_restores_the_global_generator():
    before = torch.get_rng_state()
    with global_scope(5, 1, "global"):
        first = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # nothing leaks out
    with global_scope(5, 1, "global"):
        assert torch.equal(torch.rand(3), first)


def test_bad_seeds_are_refused():
    assert check_seed(0) == 0
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ConfigError, match="seed"):
            check_seed(bad)


def test_sample_noise_is_per_sample_and_apart_from_the_latent_stream():
    from galforge.seeding import sample_noise

    a = sample_noise([(4, 4), (8, 8)], 3, seed=2)
    b = sample_noise([(4, 4), (8, 8)], 1, seed=2, start=2)
    assert [m.shape for m in a] == [(3, 1, 4, 4), (3, 1, 8, 8)]
    assert torch.equal(a[1][2], b[1][0]) and not torch.equal(a[0][0], a[0][1])
    z = sample_latents((16,), 1, 2)
    assert not torch.allclose(a[0][0].reshape(-1), z[0])
