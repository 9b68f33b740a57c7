"""The public API at the top of the package: load, generate, field, evaluate, pretrained."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import galforge
from galforge.bundle import save_bundle
from galforge.cli import main
from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError
from galforge.models.dcgan import DCGANGenerator, dcgan_generator_spec
from galforge.models.sgan import SGANGenerator

BANDS = ("g", "r", "i")


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A tiny DCGAN and a tiny Spatial GAN as the shipped zoo."""
    torch.set_num_threads(1)
    phys = np.random.default_rng(0).gamma(2.0, 3.0, (8, 3, 64, 64)).astype(np.float32)
    g = DCGANGenerator(64, 3, width=2, init_seed=3, upsample="resize")
    spec = dcgan_generator_spec(
        g, width=2, kernel_size=4, batch_norm=True, dropout=0.0, spatial_dropout=False
    )
    save_bundle(
        tmp_path / "tiny-dcgan",
        family="dcgan",
        spec=spec,
        state_dict=g.state_dict(),
        normalizer=Normalizer.fit(phys),
        bands=BANDS,
        units="counts",
        output_range=(-1, 1),
        config={},
        data_fingerprint="test",
    )
    torch.manual_seed(0)
    s = SGANGenerator(3, (8, 8, 4, 4)).eval()
    save_bundle(
        tmp_path / "tiny-sgan",
        family="sgan",
        spec=s.spec(),
        state_dict=s.state_dict(),
        normalizer=Normalizer.fit(phys, target=(0.0, 1.0)),
        bands=BANDS,
        units="counts",
        output_range=(0, 1),
        config={},
        data_fingerprint="test",
    )
    for name, fam in (("tiny-dcgan", "dcgan"), ("tiny-sgan", "sgan")):
        (tmp_path / name / "card.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "title": f"tiny {fam}",
                    "family": fam,
                    "model": fam,
                    "config": "test",
                    "data": "builtin:test",
                    "bands": list(BANDS),
                    "units": "counts",
                    "training": {"steps": 1},
                    "evaluation": {},
                }
            )
        )
    monkeypatch.setattr(galforge.pretrained, "ZOO_DIR", tmp_path)
    return tmp_path


def test_import_is_light():
    code = (
        "import sys, galforge; print(any(m in sys.modules for m in "
        "('torch', 'numpy', 'galforge.pretrained')), sorted(galforge.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert out[0] == "False"
    for name in ("load", "generate", "field", "evaluate", "pretrained"):
        assert name in out[1]


def test_pretrained_and_load(zoo):
    assert galforge.pretrained.names() == ["tiny-dcgan", "tiny-sgan"]
    assert galforge.pretrained.card("tiny-sgan").family == "sgan"
    bundle = galforge.load("pretrained:tiny-dcgan", device="cpu")
    assert bundle.sample(2, seed=1).shape == (2, 3, 64, 64) and tuple(bundle.bands) == BANDS


def test_generate_writes_what_the_command_writes(zoo, tmp_path):
    res = galforge.generate(
        "pretrained:tiny-dcgan", tmp_path / "api", 3, seed=5, fmt="npy", device="cpu"
    )
    assert res.n == 3 and res.format == "npy"
    assert (
        main(
            [
                "generate",
                "pretrained:tiny-dcgan",
                "-n",
                "3",
                "--seed",
                "5",
                "--format",
                "npy",
                "--out",
                str(tmp_path / "cli"),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    api = np.load(tmp_path / "api" / "samples.npy")
    assert api.shape == (3, 3, 64, 64)
    assert np.array_equal(api, np.load(tmp_path / "cli" / "samples.npy"))
    # a loaded bundle works too; errors name the parameter, not a command-line flag
    bundle = galforge.load(zoo / "tiny-dcgan", device="cpu")
    assert galforge.generate(bundle, tmp_path / "b", 1, fmt="fits").n == 1
    with pytest.raises(ConfigError, match=r"generate\(n=0\)"):
        galforge.generate(bundle, tmp_path / "c", 0)
    with pytest.raises(ConfigError, match=r"generate\(fmt='jpeg'\)"):
        galforge.generate(bundle, tmp_path / "c", 1, fmt="jpeg")


def test_field(zoo, tmp_path, capsys):
    (r,) = galforge.field(
        "pretrained:tiny-sgan", tmp_path / "f.npy", "64x48", seed=2, device="cpu", progress=True
    )
    arr = np.load(tmp_path / "f.npy")
    assert arr.shape == (3, 64, 48) == tuple(r.shape) and np.isfinite(arr).all()
    assert "pix" not in capsys.readouterr().err  # no bar when stderr is not a terminal
    with pytest.raises(ConfigError, match=r"field\(size=\.\.\.\)"):
        galforge.field("pretrained:tiny-sgan", tmp_path / "g.npy", "big")
    with pytest.raises(ConfigError, match=r"field\(workers=0\)"):
        galforge.field("pretrained:tiny-sgan", tmp_path / "g.npy", "64x64", workers=0)


def test_evaluate(zoo, tmp_path):
    real = tmp_path / "real.npz"
    np.savez(
        real,
        images=np.random.default_rng(1).gamma(2.0, 3.0, (6, 3, 64, 64)).astype(np.float32),
        bands=np.array(BANDS),
        units=np.array(["counts"]),
    )
    metrics = galforge.evaluate(
        real, "pretrained:tiny-dcgan", tmp_path / "ev", n=6, measures=["moments"], device="cpu"
    )
    assert [row["measure"] for row in metrics["summary"]]
    assert "pretrained:tiny-dcgan" in metrics["fake"]["source"]
    assert (tmp_path / "ev" / "report.html").is_file()
    with pytest.raises(ConfigError, match=r"evaluate\(real="):
        galforge.evaluate("pretrained:tiny-dcgan", real, tmp_path / "ev2", n=6)
    with pytest.raises(ConfigError, match=r"evaluate\(n=1\)"):
        galforge.evaluate(real, real, tmp_path / "ev3", n=1)
