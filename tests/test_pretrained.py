"""The pretrained zoo: ``pretrained:NAME`` wherever a bundle is accepted, and the shipped models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import galforge
from galforge import pretrained
from galforge.bundle import save_bundle
from galforge.cli import main
from galforge.data.normalize import Normalizer
from galforge.models.dcgan import DCGANGenerator, dcgan_generator_spec
from galforge.models.sgan import SGANGenerator

BANDS = ("g", "r", "i")


def _card(name, family, steps):
    return {
        "name": name,
        "title": f"tiny {family}",
        "family": family,
        "model": family,
        "config": "test",
        "data": "builtin:test",
        "bands": list(BANDS),
        "units": "counts",
        "training": {"steps": steps, "cpu_hours": 0.01},
        "evaluation": {"passed": 9, "total": 10, "fgd": 12.5, "fgd_real_vs_real": 6.0},
    }


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A zoo folder with a tiny DCGAN and a tiny Spatial GAN, in place of the shipped one."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    phys = rng.gamma(2.0, 3.0, (8, 3, 64, 64)).astype(np.float32)
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
    for name, fam, steps in (("tiny-dcgan", "dcgan", 123), ("tiny-sgan", "sgan", 45)):
        (tmp_path / name / "card.json").write_text(json.dumps(_card(name, fam, steps)))
    (tmp_path / "not-a-model").mkdir()  # a folder without a card is not listed
    monkeypatch.setattr(pretrained, "ZOO_DIR", tmp_path)
    return tmp_path


def test_list_shows_models_with_training_and_evaluation(zoo, capsys):
    assert pretrained.names() == ["tiny-dcgan", "tiny-sgan"]
    assert main(["pretrained", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-dcgan" in out and "tiny-sgan" in out and "123" in out
    assert "9/10 measures pass, FGD 12.5 (real-vs-real 6.0)" in out
    assert main(["pretrained", "list", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == ["tiny-dcgan", "tiny-sgan"]
    assert cards[0]["training"]["steps"] == 123
    assert main(["pretrained", "show", "tiny-sgan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "sgan"
    assert main(["pretrained", "show", "tiny-sgan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny-sgan — tiny sgan") and "45 steps" in out
    assert "9/10 measures pass, FGD 12.5 (real-vs-real 6.0)" in out
    assert "bands g r i in counts" in out and "pretrained:tiny-sgan" in out


def test_load_generate_field_evaluate_accept_pretrained(zoo, tmp_path, capsys):
    a = galforge.load("pretrained:tiny-dcgan").sample(3, seed=4)
    b = galforge.load(zoo / "tiny-dcgan").sample(3, seed=4)
    assert a.shape == (3, 3, 64, 64) and np.array_equal(a, b)
    assert (
        main(
            [
                "generate",
                "pretrained:tiny-dcgan",
                "-n",
                "2",
                "--out",
                str(tmp_path / "g"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "g").glob("*.fits"))) == 2
    assert (
        main(
            [
                "field",
                "pretrained:tiny-sgan",
                "--size",
                "64x48",
                "--out",
                str(tmp_path / "f.npy"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "f.npy").shape == (3, 64, 48)
    real = tmp_path / "real.npz"
    np.savez(
        real,
        images=np.random.default_rng(1).gamma(2.0, 3.0, (6, 3, 64, 64)).astype(np.float32),
        bands=np.array(BANDS),
        units=np.array(["counts"]),
    )
    assert (
        main(
            [
                "evaluate",
                str(real),
                "pretrained:tiny-dcgan",
                "-n",
                "6",
                "--measures",
                "moments",
                "--out",
                str(tmp_path / "ev"),
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "pretrained:tiny-dcgan" in metrics["fake"]["source"]


def test_unknown_pretrained_name_is_one_line_error(zoo, tmp_path, capsys):
    rc = main(["generate", "pretrained:nope", "-n", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "pretrained:nope" in err and "tiny-dcgan, tiny-sgan" in err


SHIPPED = pretrained.names()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_samples_and_has_a_complete_card(name):
    card = pretrained.card(name)
    for key in ("title", "family", "model", "config", "data", "bands", "units"):
        assert getattr(card, key), f"card of {name} lacks {key}"
    assert card.training.get("steps", 0) > 0 and card.training.get("cpu_hours", 0) > 0
    assert {"passed", "total", "date"} <= set(card.evaluation) or "field" in card.evaluation
    g = galforge.load(f"pretrained:{name}")
    assert tuple(g.bands) == tuple(card.bands) and g.units == card.units
    if g.family != "sgan":
        x = g.sample(2, seed=0)
        assert x.shape[1] == len(card.bands) and np.isfinite(x).all()


def test_shipped_zoo_is_small():
    total = sum(f.stat().st_size for f in pretrained.ZOO_DIR.rglob("*") if f.is_file())
    assert total <= 25e6, f"the shipped zoo is {total / 1e6:.1f} MB (limit 25 MB)"
