"""StyleGAN v1: AdaIN generator, progressive growing on schedule, fade-in, bundle shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from galforge.cli import main
from galforge.errors import ModelError
from galforge.models.capabilities import capabilities
from galforge.models.stylegan import StyleGANGenerator, build_stylegan_pair
from galforge.training.recipes import get_recipe

TINY = {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 64, "channel_max": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("bands", [1, 3])
def test_every_stage_has_its_shape_and_output_is_full_size(bands):
    g, d = build_stylegan_pair(32, bands, **TINY)
    assert capabilities(g) == {"latent", "intermediate", "noise"}
    w = g.mapping(torch.randn(4, 8))
    for res in (8, 16, 32):
        for alpha in (0.5, 1.0):
            img = g.synthesis_at(w, res, alpha)
            assert img.shape == (4, bands, res, res)
            assert d(img, alpha).shape == (4,)
        g.set_stage(res, 1.0)
        assert g.synthesis(w).shape == (4, bands, 32, 32)
    with pytest.raises(ModelError, match="start resolution"):
        StyleGANGenerator(16, 1, start_resolution=32, **TINY)


def test_fade_in_goes_from_the_upsampled_coarse_image_to_the_new_one():
    g = StyleGANGenerator(16, 2, **TINY).eval()
    w = g.mapping(torch.randn(3, 8))
    with torch.no_grad():
        coarse = g.synthesis_at(w, 8, 1.0)
        torch.testing.assert_close(
            g.synthesis_at(w, 16, 0.0), coarse.repeat_interleave(2, -1).repeat_interleave(2, -2)
        )
        assert not torch.allclose(g.synthesis_at(w, 16, 1.0), g.synthesis_at(w, 16, 0.0))


def test_progressive_growing_switches_resolution_on_schedule():
    cls = get_recipe("stylegan")
    r = cls(
        {**TINY, "image_size": 32, "stable_kimg": 0.008, "fade_kimg": 0.008},
        channels=1,
        image_size=32,
        device="cpu",
    )
    assert [r.stage_at(i) for i in (0, 4, 8, 12, 16, 24, 32, 100)] == [
        (8, 1.0),
        (8, 1.0),
        (16, 0.0),
        (16, 0.5),
        (16, 1.0),
        (32, 0.0),
        (32, 1.0),
        (32, 1.0),
    ]
    real = torch.randn(4, 1, 32, 32)
    seen = []
    for step in range(8):
        out = r.train_step(real, step, torch.Generator().manual_seed(step))
        seen.append((int(out["resolution"]), out["alpha"]))
        assert np.isfinite(out["loss_d"]) and np.isfinite(out["loss_g"]) and "gp" in out
    assert seen == [
        (8, 1.0),
        (8, 1.0),
        (16, 0.0),
        (16, 0.5),
        (16, 1.0),
        (16, 1.0),
        (32, 0.0),
        (32, 0.5),
    ]
    assert int(r.G.resolution) == 32 and r.state_dict()["images_seen"] == 32
    r2 = cls({**TINY, "image_size": 32, "stable_kimg": 0.008, "fade_kimg": 0.008}, 1, 32, "cpu")
    r2.load_state_dict(json.loads(json.dumps(r.state_dict())))
    assert (int(r2.G.resolution), float(r2.G.alpha)) == (32, 1.0)  # the next step's stage


def test_train_resume_and_export_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npy"
    np.save(data, rng.gamma(2.0, 5.0, (8, 2, 16, 16)).astype(np.float32))
    args = [
        "--model",
        "stylegan",
        "--batch",
        "4",
        "--seed",
        "1",
        "--device",
        "cpu",
        *[f"--set=model.{k}={v}" for k, v in TINY.items()],
        "--set=model.image_size=16",
        "--set=model.stable_kimg=0.008",
        "--set=model.fade_kimg=0.008",
        "--set=train.progress=false",
        "--set=output.tensorboard=false",
        "--set=train.sample_every=1000",
        "--set=train.n_samples=4",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(data), "--out", str(a), "--steps", "4", *args]) == 0
    assert main(["train", str(data), "--out", str(b), "--steps", "2", *args]) == 0
    assert main(["train", str(data), "--out", str(b), "--steps", "4", "--resume", *args]) == 0
    assert (a / "generator.safetensors").read_bytes() == (b / "generator.safetensors").read_bytes()
    from galforge.generation import load_bundle

    bundle = load_bundle(a / "bundle")
    images = bundle.sample(3, seed=0)
    assert images.shape == (3, 2, 16, 16) and np.isfinite(images).all()
    np.testing.assert_array_equal(images, bundle.sample(3, seed=0))


def test_freezing_keeps_layers_fixed_through_steps():
    cls = get_recipe("stylegan")
    r = cls(
        {
            **TINY,
            "image_size": 16,
            "start_resolution": 16,
            "loss": "nonsaturating",
            "r1_interval": 2,
        },
        1,
        16,
        "cpu",
    )
    r.freeze(2, 1)
    frozen = {
        "const": r.G.const,
        "l1": r.G.layers[1].conv.weight,
        "rgb0": r.G.torgbs[0].weight,
        "d_top": r.D.blocks[-1][0].weight,
        "d_rgb": r.D.fromrgbs[-1].weight,
    }
    before = {k: v.detach().clone() for k, v in frozen.items()}
    moving = [r.G.layers[2].conv.weight.detach().clone(), r.D.blocks[-2][0].weight.detach().clone()]
    for step in range(3):
        r.train_step(torch.randn(4, 1, 16, 16), step, torch.Generator().manual_seed(step))
    assert all(torch.equal(before[k], v) for k, v in frozen.items())
    assert not torch.equal(moving[0], r.G.layers[2].conv.weight)
    assert not torch.equal(moving[1], r.D.blocks[-2][0].weight)
    with pytest.raises(ModelError, match="--freeze-g 9"):
        r.G.freeze(9)


def test_noise_inputs_are_taken_per_sample():
    g = StyleGANGenerator(16, 2, **TINY).eval()
    with torch.no_grad():
        for layer in g.layers:
            layer.noise_strength.fill_(0.5)
        z = torch.randn(2, TINY["z_dim"])
        shapes = g.noise_shapes()
        assert len(shapes) == g.num_ws and len(g.const_noise()) == g.num_ws
        g.set_stage(16, 1.0)
        const = g(z)
        torch.testing.assert_close(g(z, g.const_noise()), const)
        fresh = [torch.randn(2, 1, *s) for s in shapes]
        assert not torch.allclose(g(z, fresh), const)
