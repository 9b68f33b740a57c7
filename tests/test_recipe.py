"""The recipe contract: typed settings, named configs, phases and their lazy schedule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from galforge.config import resolve_config
from galforge.errors import ConfigError
from galforge.training.recipe import Phase, Recipe
from galforge.training.recipes import get_recipe, model_configs, model_defaults


@dataclass
class S:
    width: int = 8
    lr: float = 1e-3
    every: int = 4


class Counting(Recipe):
    family = "counting"
    Settings = S
    CONFIGS = {"big": {"width": 64}}

    def phases(self):
        return (Phase("main"), Phase("lazy", interval=self.settings.every))

    def main(self, batch, ctx):
        return {"main_gain": ctx.gain}

    def lazy(self, batch, ctx):
        return {"lazy_gain": ctx.gain}


def test_settings_are_typed_with_named_configs():
    r = Counting({"config": "big", "lr": 0.5}, channels=1, image_size=None, device="cpu")
    assert r.settings == S(width=64, lr=0.5) and r.config["config"] == "big"
    assert Counting.default_config() == {"config": "paper", "width": 8, "lr": 1e-3, "every": 4}
    with pytest.raises(ConfigError, match="big"):
        Counting({"config": "huge"}, 1, None, "cpu")
    with pytest.raises(ConfigError, match="depth"):
        Counting({"depth": 3}, 1, None, "cpu")


def test_lazy_phases_run_every_interval_with_their_gain():
    r = Counting({}, 1, None, "cpu")
    rng = torch.Generator()
    runs = [r.train_step(None, step, rng) for step in range(9)]
    assert [s for s, out in enumerate(runs) if "lazy_gain" in out] == [0, 4, 8]
    assert runs[0] == {"main_gain": 1.0, "lazy_gain": 4.0}
    assert Phase("r1", interval=16, gain=2.0).loss_gain == 2.0
    with pytest.raises(ConfigError):
        Phase("x", interval=0)


def test_named_configs_reach_the_command_line_resolution():
    cls = get_recipe("dcgan64")
    assert {"paper", "cpu"} <= set(cls.named_configs())
    assert cls.default_config()["config"] == "cpu" and cls.default_config()["width"] == 32
    cfg = resolve_config(
        base={"model": {"name": "dcgan64", "config": "paper"}},
        model_defaults=model_defaults(),
        model_configs=model_configs(),
    )
    assert cfg.model.params["width"] == 128 and cfg.model.params["upsample"] == "transposed"
    # nothing of the default (cpu) config stays behind: paper is Fussell & Moews exactly
    assert cfg.model.params["sky_noise"] is False and cfg.model.params["d_mbstd_group"] == 0
    assert cfg.model.params == {
        **cls.default_config(),
        **cls.resolve_settings({"config": "paper"})[1].__dict__,
        "config": "paper",
    }
    cfg = resolve_config(
        base={"model": {"name": "dcgan64", "config": "paper", "width": 16}},
        model_defaults=model_defaults(),
        model_configs=model_configs(),
    )
    assert cfg.model.params["width"] == 16  # an explicit key wins over the named config
    assert get_recipe("dcgan128").default_config()["image_size"] == 128
    cfg = resolve_config(
        base={"model": {"name": "sgan", "config": "small"}},
        model_defaults=model_defaults(),
        model_configs=model_configs(),
    )
    assert cfg.model.params["widths"] == [64, 32, 16, 8]
    with pytest.raises(ConfigError, match="model.config"):
        resolve_config(
            base={"model": {"name": "sgan", "config": "nope"}},
            model_defaults=model_defaults(),
            model_configs=model_configs(),
        )
