"""Fine-tuning from another model: ``galforge train --init RUN_OR_BUNDLE [--band-map ...]``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from galforge.cli import main
from galforge.errors import ConfigError
from galforge.training.init import parse_band_map

TINY = [
    "--set",
    "model.width=2",
    "--set",
    "train.progress=false",
    "--set",
    "output.tensorboard=false",
    "--set",
    "train.sample_every=1000",
    "--set",
    "train.threads=1",
    "--set",
    "train.ema=0.999",
    "--batch",
    "4",
    "--seed",
    "1",
]


def _data(tmp_path, name, bands, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"{name}.npz"
    np.savez(
        path,
        images=rng.gamma(2.0, 3.0, (8, len(bands), 64, 64)).astype(np.float32),
        bands=np.array(bands),
        units=np.array(["counts"]),
    )
    return str(path)


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parent")
    data = _data(tmp, "gri", ["g", "r", "i"], 0)
    run = tmp / "run"
    assert (
        main(["train", data, "--model", "dcgan64", "--out", str(run), "--steps", "2", *TINY]) == 0
    )
    return run


def _state(run):
    return load_file(str(run / "checkpoints" / "latest" / "state.safetensors"))


def test_band_map_parsing():
    assert parse_band_map(None, "gri", "gri") == [0, 1, 2]
    assert parse_band_map("R=i,G=r,B=g", "RGB", "gri") == [2, 1, 0]
    with pytest.raises(ConfigError, match="--band-map R=i,G=r,B=g"):
        parse_band_map(None, "RGB", "gri")
    with pytest.raises(ConfigError, match="unmapped: B"):
        parse_band_map("R=i,G=r", "RGB", "gri")
    with pytest.raises(ConfigError, match="exactly once"):
        parse_band_map("R=i,G=i,B=g", "RGB", "gri")


def test_init_from_run_starts_from_its_weights_and_records_the_parent(parent_run, tmp_path):
    data = _data(tmp_path, "gri2", ["g", "r", "i"], 5)
    child = tmp_path / "child"
    assert (
        main(
            [
                "train",
                data,
                "--model",
                "dcgan64",
                "--out",
                str(child),
                "--steps",
                "1",
                "--init",
                str(parent_run),
                *TINY,
                "--set",
                "model.lr=0",
            ]
        )
        == 0
    )
    p, c = _state(parent_run), _state(child)  # lr = 0: the weights stay the init ones
    for key in ("module.G.net.0.weight", "module.D.net.0.weight"):
        assert torch.equal(p[key], c[key]), key
    # the EMA continues from the parent's EMA: one warm-up step (decay 2/11) toward G
    k = "net.0.weight"
    expect = torch.lerp(p[f"ema.{k}"], p[f"module.G.{k}"], 1 - 2 / 11)
    assert torch.allclose(c[f"ema.{k}"], expect, atol=1e-7)
    assert not torch.allclose(c[f"ema.{k}"], p[f"module.G.{k}"])
    info = json.loads((child / "run.json").read_text())
    assert info["parent"]["source"] == str(parent_run) and info["parent"]["kind"] == "run"
    bundle = json.loads((child / "bundle" / "bundle.json").read_text())
    assert bundle["source"]["parent"]["step"] == 2


def test_init_from_bundle_with_band_map_reorders_image_channels(parent_run, tmp_path):
    data = _data(tmp_path, "rgb", ["R", "G", "B"], 6)
    child = tmp_path / "child"
    assert (
        main(
            [
                "train",
                data,
                "--model",
                "dcgan64",
                "--out",
                str(child),
                "--steps",
                "1",
                "--init",
                str(parent_run / "bundle"),
                "--band-map",
                "R=i,G=r,B=g",
                *TINY,
                "--set",
                "model.lr=0",
            ]
        )
        == 0
    )
    src = load_file(str(parent_run / "bundle" / "generator.safetensors"))
    got = _state(child)
    last = max(
        (k for k in src if k.endswith("weight") and src[k].dim() == 4),
        key=lambda k: int(k.split(".")[1]),
    )
    # the last convolution's output channels (dim 0 of a Conv2d weight) come in i, r, g order
    assert torch.equal(got[f"module.G.{last}"], src[last].flip(0))
    info = json.loads((child / "run.json").read_text())
    assert info["parent"]["kind"] == "bundle" and info["parent"]["band_map"] == "R=i,G=r,B=g"


def test_init_errors_are_one_line(parent_run, tmp_path, capsys):
    data = _data(tmp_path, "rgb", ["R", "G", "B"], 6)
    rc = main(
        [
            "train",
            data,
            "--model",
            "dcgan64",
            "--out",
            str(tmp_path / "a"),
            "--steps",
            "1",
            "--init",
            str(parent_run),
            *TINY,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--band-map R=i,G=r,B=g" in err and len(err.splitlines()) == 1
    rc = main(
        [
            "train",
            _data(tmp_path, "gri", ["g", "r", "i"], 1),
            "--model",
            "dcgan64",
            "--out",
            str(tmp_path / "b"),
            "--steps",
            "1",
            "--init",
            str(parent_run),
            *TINY,
            "--set",
            "model.width=4",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "does not fit this model" in err and "--set model.width=2" in err


def test_band_map_reorders_the_sky_noise_of_a_sky_noise_parent(tmp_path, capsys):
    """A sky-noise generator's per-band noise level and stored maps follow its bands; a
    parent without sky noise is refused with the option to use."""
    sky = ["--set", "model.sky_noise=true"]
    parent = tmp_path / "parent"
    assert (
        main(
            [
                "train",
                _data(tmp_path, "gri", ["g", "r", "i"], 0),
                "--model",
                "dcgan64",
                "--out",
                str(parent),
                "--steps",
                "1",
                *TINY,
                *sky,
            ]
        )
        == 0
    )
    child = tmp_path / "child"
    assert (
        main(
            [
                "train",
                _data(tmp_path, "rgb", ["R", "G", "B"], 6),
                "--model",
                "dcgan64",
                "--out",
                str(child),
                "--steps",
                "1",
                "--init",
                str(parent),
                "--band-map",
                "R=i,G=r,B=g",
                *TINY,
                *sky,
                "--set",
                "model.lr=0",
            ]
        )
        == 0
    )
    p, c = _state(parent), _state(child)
    for key in ("module.G.sky.level.2.weight", "module.G.sky.level.2.bias"):
        assert torch.equal(c[key], p[key].flip(0))
    assert torch.equal(c["module.G.noise_const"], p["module.G.noise_const"].flip(1))
    capsys.readouterr()  # the trainings' progress lines
    rc = main(
        [
            "train",
            _data(tmp_path, "gri2", ["g", "r", "i"], 2),
            "--model",
            "dcgan64",
            "--out",
            str(tmp_path / "plain"),
            "--steps",
            "1",
            "--init",
            str(parent),
            *TINY,
            "--set",
            "model.sky_noise=false",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--set model.sky_noise=true" in err and len(err.splitlines()) == 1


def test_a_parent_part_this_model_lacks_is_refused_not_dropped(parent_run, tmp_path, capsys):
    """Any weight of the init model with no place in this one stops the run (one line naming
    it): fine-tuning never silently drops part of the parent."""
    import shutil

    from safetensors.torch import save_file

    parent = tmp_path / "parent"
    shutil.copytree(parent_run, parent)
    path = parent / "checkpoints" / "latest" / "state.safetensors"
    state = load_file(str(path))
    state["module.G.extra_head.weight"] = torch.zeros(3)
    save_file(state, str(path))
    rc = main(
        [
            "train",
            _data(tmp_path, "gri", ["g", "r", "i"], 3),
            "--model",
            "dcgan64",
            "--out",
            str(tmp_path / "child"),
            "--steps",
            "1",
            "--init",
            str(parent),
            *TINY,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "extra_head.weight" in err and "absent here" in err
    assert len(err.splitlines()) == 1


def test_an_added_profile_path_starts_fresh_from_a_parent_without_one(parent_run, tmp_path):
    """--init from a run whose D has the radial-profile path (the cpu config's default) into
    one without it (``model.d_profile=false``): the shared weights come from the parent, the
    parent's path is left out; and back again (the added path starts fresh) — other missing
    or extra weights are still refused."""
    child = tmp_path / "child"
    assert (
        main(
            [
                "train",
                _data(tmp_path, "gri", ["g", "r", "i"], 4),
                "--model",
                "dcgan64",
                "--out",
                str(child),
                "--steps",
                "1",
                "--init",
                str(parent_run),
                *TINY,
                "--set",
                "model.lr=0",
                "--set",
                "model.d_profile=false",
            ]
        )
        == 0
    )
    p, c = _state(parent_run), _state(child)
    assert torch.equal(p["module.D.net.0.weight"], c["module.D.net.0.weight"])
    assert "module.D.profile.2.weight" in p and "module.D.profile.2.weight" not in c
    back = tmp_path / "back"
    assert (
        main(
            [
                "train",
                _data(tmp_path, "gri", ["g", "r", "i"], 5),
                "--model",
                "dcgan64",
                "--out",
                str(back),
                "--steps",
                "1",
                "--init",
                str(child),
                *TINY,
            ]
        )
        == 0
    )
    assert "module.D.profile.2.weight" in _state(back)
