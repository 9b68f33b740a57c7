"""Generator capabilities and the registry of parts and families."""

from __future__ import annotations

import pytest
from torch import nn

from galforge.errors import ModelError
from galforge.models.capabilities import WINDOWED, capabilities, require
from galforge.models.dcgan import DCGANGenerator
from galforge.models.registry import compose, get_family, register_family
from galforge.models.sgan import SGANGenerator


def test_built_in_generators_declare_what_they_can_do():
    assert capabilities(DCGANGenerator(64, 1, 4, 2)) == {"latent"}
    assert capabilities(SGANGenerator(1, (4, 4, 4, 4))) == {"latent", "windowed"}
    with pytest.raises(ModelError, match="windowed"):
        require(DCGANGenerator(64, 1, 4, 2), WINDOWED, "a deep field")


def test_a_declared_capability_must_have_its_methods():
    class Liar(nn.Module):
        CAPABILITIES = frozenset({"latent", "windowed"})

        def latent_shape(self, n):
            return (n, 2)

    with pytest.raises(ModelError, match="plan_window"):
        capabilities(Liar())

    class Unknown(nn.Module):
        CAPABILITIES = frozenset({"telepathy"})

    with pytest.raises(ModelError, match="telepathy"):
        capabilities(Unknown())


def test_families_compose_their_parts():
    # a single-part family needs no registration: its part is the sampler
    g = DCGANGenerator(64, 1, 4, 2)
    assert get_family("dcgan").parts == ("generator",)
    assert compose("dcgan", {"generator": g}) is g

    class Pair(nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.a, self.b = a, b

    @register_family("test_pair", parts=("positions", "galaxies"))
    def _pair(parts):
        return Pair(parts["positions"], parts["galaxies"])

    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    assert compose("test_pair", {"positions": a, "galaxies": b}).b is b
    with pytest.raises(ModelError, match="positions"):
        compose("test_pair", {"galaxies": b})
    with pytest.raises(ModelError, match="unknown generator family"):
        get_family("no_such_family_here")
