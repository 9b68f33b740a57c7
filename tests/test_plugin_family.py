"""A model family defined entirely here, trained, resumed, exported, sampled and tiled.

Everything the family needs is in this module: a windowed generator registered with the
models registry, a discriminator, a recipe with typed settings, a lazily regularised loss
(R1 every other step) and a stateful augmentation. It goes through the public API and the
command line exactly as a user's own module would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import galforge
from galforge.cli import main
from galforge.generation.field import read_field, render_one_shot
from galforge.models.registry import register_generator
from galforge.training.augment import Augment
from galforge.training.losses import nonsaturating_d_loss, nonsaturating_g_loss, r1_penalty
from galforge.training.recipe import Phase, Recipe, StepContext
from galforge.training.recipes import register_recipe

FAMILY = "toyfield_plugin"
UPSCALE = 4


class ToyFieldGenerator(nn.Module):
    """Latent ``[B, k, h, w]`` -> 3×3 conv -> ×4 nearest upsampling -> 1×1 conv, sigmoid.

    Fully convolutional with a one-latent-pixel receptive-field margin, so it declares the
    ``windowed`` capability and makes fields of any size.
    """

    CAPABILITIES = frozenset({"latent", "windowed"})
    upscale = UPSCALE

    def __init__(self, channels=2, latent_channels=3, hidden=4, image_size=16):
        super().__init__()
        self.channels, self.latent_channels = channels, latent_channels
        self.hidden, self.image_size = hidden, image_size
        self.body = nn.Conv2d(latent_channels, hidden, 3, padding=0)
        self.head = nn.Conv2d(hidden, channels, 1)

    def spec(self):
        return {
            "channels": self.channels,
            "latent_channels": self.latent_channels,
            "hidden": self.hidden,
            "image_size": self.image_size,
        }

    def latent_shape(self, n, image_size=None):
        side = (image_size or self.image_size) // UPSCALE
        return (int(n), self.latent_channels, side, side)

    def _tail(self, h):
        h = F.interpolate(torch.relu(h), scale_factor=UPSCALE, mode="nearest")
        return torch.sigmoid(self.head(h))

    def forward(self, z):
        return self._tail(self.body(F.pad(z, (1, 1, 1, 1))))

    def plan_window(self, tile):
        return SimpleNamespace(latent_start=-1, latent_size=tile // UPSCALE + 2)

    def window_masks(self, plan, origin, latent_hw, device=None):
        return None  # the only spatial layer reads the latent, which is zero outside the field

    def forward_window(self, z, plan, masks=None):
        return self._tail(self.body(z))


@register_generator(FAMILY)
def _build(spec):
    return ToyFieldGenerator(**spec)


class JitterAugment(Augment):
    """Adds noise whose strength halves every ``every`` calls: state that must be resumed."""

    def __init__(self, sigma=0.2, every=3):
        self.sigma, self.every, self.calls = float(sigma), int(every), 0

    def __call__(self, x, rng):
        self.calls += 1
        if self.calls % self.every == 0:
            self.sigma *= 0.5
        noise = torch.randn(x.shape, generator=rng, device=rng.device).to(x.device)
        return (x + self.sigma * noise).clamp(0, 1)

    def state_dict(self):
        return {"sigma": self.sigma, "calls": self.calls}

    def load_state_dict(self, state):
        self.sigma, self.calls = float(state["sigma"]), int(state["calls"])


@dataclass
class ToySettings:
    image_size: int = 16
    latent_channels: int = 3
    hidden: int = 4
    d_hidden: int = 4
    lr: float = 1e-3
    r1_gamma: float = 1.0
    r1_interval: int = 2


@register_recipe(FAMILY)
class ToyRecipe(Recipe):
    family = FAMILY
    Settings = ToySettings
    CONFIGS = {"wide": {"hidden": 8, "d_hidden": 8}}

    def __init__(self, config, channels, image_size, device, seed=0):
        super().__init__(config, channels, image_size, device, seed)
        s = self.settings
        g = torch.Generator().manual_seed(seed)
        self.G = ToyFieldGenerator(channels, s.latent_channels, s.hidden, s.image_size)
        self.D = nn.Sequential(
            nn.Conv2d(channels, s.d_hidden, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(s.d_hidden, 1, s.image_size // 2),
        )
        for p in [*self.G.parameters(), *self.D.parameters()]:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=s.lr, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=s.lr, betas=(0.0, 0.99))
        self.jitter = JitterAugment()

    def phases(self):
        return (Phase("d_main"), Phase("d_r1", interval=self.settings.r1_interval), Phase("g_main"))

    def augmentations(self):
        return {"jitter": self.jitter}

    @classmethod
    def output_range_for(cls, settings):
        return (0.0, 1.0)

    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_g, "D": self.opt_d}

    def generator(self):
        return self.G

    def generator_spec(self):
        return self.G.spec()

    def sample_latent(self, n, rng):
        return torch.randn(self.G.latent_shape(n), generator=rng, device=rng.device)

    def _d(self, x):
        return self.D(x).flatten()

    def d_main(self, real, ctx: StepContext):
        fake = self.G(self.sample_latent(real.shape[0], ctx.rng)).detach()
        loss = nonsaturating_d_loss(
            self._d(self.jitter(real, ctx.rng)), self._d(self.jitter(fake, ctx.rng))
        )
        self.optimize("D", loss)
        return {"loss_d": loss.item()}

    def d_r1(self, real, ctx: StepContext):
        x = real.detach().requires_grad_(True)
        penalty = r1_penalty(self._d(x), x)
        self.optimize("D", 0.5 * self.settings.r1_gamma * ctx.gain * penalty)
        return {"r1": penalty.item()}

    def g_main(self, real, ctx: StepContext):
        fake = self.G(self.sample_latent(real.shape[0], ctx.rng))
        loss = nonsaturating_g_loss(self._d(fake))
        self.optimize("G", loss)
        return {"loss_g": loss.item()}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(data, run, steps, *extra):
    return main(
        [
            "train",
            str(data),
            "--model",
            FAMILY,
            "--out",
            str(run),
            "--steps",
            str(steps),
            "--batch",
            "4",
            "--seed",
            "3",
            "--device",
            "cpu",
            "--set",
            "train.progress=false",
            "--set",
            "train.sample_every=2",
            "--set",
            "train.n_samples=4",
            "--set",
            "train.log_every=1",
            "--set",
            "output.tensorboard=false",
            *extra,
        ]
    )


def test_a_family_defined_outside_galforge_trains_resumes_exports_samples_and_tiles(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "stamps.npy"
    np.save(data, rng.gamma(2.0, 5.0, (12, 2, 16, 16)).astype(np.float32))

    # train 6 steps at once, and 3 + 3 with a resume: identical, bit for bit
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(data, a, 6) == 0
    assert _train(data, b, 3) == 0
    assert _train(data, b, 6, "--resume") == 0
    assert (a / "generator.safetensors").read_bytes() == (b / "generator.safetensors").read_bytes()
    sa = load_file(str(a / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ja = json.loads((a / "checkpoints/latest/state.json").read_text())
    jb = json.loads((b / "checkpoints/latest/state.json").read_text())
    assert ja["augment"] == jb["augment"] and ja["augment"]["jitter"]["calls"] == 12
    # the lazy R1 phase ran on steps 0, 2 and 4 only (0-based), i.e. logged at steps 1, 3, 5
    log = [json.loads(x) for x in (a / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "r1" in r] == [1, 3, 5]
    assert all({"loss_d", "loss_g"} <= set(r) for r in log)
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_d"]) for r in log] == [(r["step"], r["loss_d"]) for r in lb]

    # named configs and typed settings come from the recipe
    assert _train(data, tmp_path / "w", 1, "--set", "model.config=wide") == 0
    info = json.loads((tmp_path / "w" / "run.json").read_text())
    assert info["hyperparameters"]["hidden"] == 8 and info["hyperparameters"]["config"] == "wide"

    # export and sample the bundle, through the CLI and the API
    assert main(["export", str(a)]) == 0
    bundle_dir = a / "bundle"
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["family"] == FAMILY and list(meta["parts"]) == ["generator"]
    g = galforge.load(bundle_dir)
    assert g.capabilities == {"latent", "windowed"}
    images = g.sample(5, seed=1)
    assert images.shape == (5, 2, 16, 16) and np.isfinite(images).all()
    np.testing.assert_array_equal(images[2:], g.sample(3, seed=1, start=2))
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                str(bundle_dir),
                "-n",
                "3",
                "--seed",
                "1",
                "--out",
                str(out),
                "--format",
                "npy",
                "--no-progress",
            ]
        )
        == 0
    )

    # tile a field: seamless, equal to one pass over the whole latent
    field = tmp_path / "field.npy"
    assert (
        main(
            [
                "field",
                str(bundle_dir),
                "--size",
                "40x56",
                "--tile",
                "16",
                "--seed",
                "2",
                "--out",
                str(field),
                "--no-progress",
                "--compile",
                "off",
            ]
        )
        == 0
    )
    tiled, fmeta = read_field(field)
    assert tiled.shape == (2, 40, 56) and fmeta["bands"] == list(g.bands)
    np.testing.assert_allclose(
        tiled,
        render_one_shot(g.generator, g.normalizer, "40x56", 2),
        rtol=1e-5,
        atol=1e-5 * float(np.abs(tiled).max()),
    )
