"""``galforge mix``, ``galforge interpolate``, ``galforge project`` on a tiny StyleGAN2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image
from test_latent import make_dcgan_bundle, make_style_bundle

from galforge.cli import main
from galforge.data.display import is_preview_png
from galforge.generation import load_bundle


@pytest.fixture
def style_dir(tmp_path):
    return make_style_bundle(tmp_path / "sg2")


def test_mix_writes_cells_headers_and_grid(style_dir, tmp_path):
    out = tmp_path / "mix"
    assert (
        main(
            [
                "mix",
                str(style_dir),
                "--rows",
                "1,2",
                "--cols",
                "10,11,12",
                "--styles",
                "0-2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(list(out.glob("mix_r*_c*.fits"))) == 6
    b = load_bundle(style_dir)
    np.testing.assert_allclose(
        fits.getdata(out / "row_001.fits"), b.sample(1, seed=2)[0], rtol=1e-5, atol=1e-4
    )
    h = fits.getheader(out / "mix_r000_c002.fits")
    assert h["SEED"] == 1 and h["COLSEED"] == 12 and h["STYLES"] == "0,1,2"
    grid = Image.open(out / "grid.png")
    assert grid.width > grid.height and is_preview_png(out / "grid.png")
    assert main(["mix", str(style_dir), "--rows", "1", "--cols", "2", "--out", str(out)]) == 2


@pytest.mark.parametrize("name", ["anim.gif", "strip.png"])
def test_interpolate_writes_frames_and_animation(style_dir, tmp_path, name):
    out = tmp_path / name
    assert (
        main(
            [
                "interpolate",
                str(style_dir),
                "--seeds",
                "42,1234",
                "--frames",
                "6",
                "--space",
                "w",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    frames = sorted((tmp_path / (out.stem + "_frames")).glob("frame_*.fits"))
    assert len(frames) == 6
    b = load_bundle(style_dir)
    np.testing.assert_allclose(
        fits.getdata(frames[-1]), b.sample(1, seed=1234)[0], rtol=1e-5, atol=1e-4
    )
    img = Image.open(out)
    assert getattr(img, "n_frames", 1) == (6 if name.endswith(".gif") else 1)


def test_project_writes_its_outputs(style_dir, tmp_path, capsys):
    out = tmp_path / "p"
    assert (
        main(
            [
                "project",
                str(style_dir),
                "builtin:hdf-stamps?size=16&n=1",
                "--steps",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    info = json.loads((out / "projection.json").read_text())
    assert {"chi2_per_pixel", "rmse"} <= set(info)
    for name in ("projected_w.npy", "reconstruction.fits", "residual.fits"):
        assert (out / name).is_file()
    assert "chi2/pixel" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["mix", "--rows", "1", "--cols", "2", "--out", "o"],
        ["interpolate", "--seeds", "1,2", "--frames", "3", "--out", "o.gif"],
        ["project", "T.fits", "--steps", "1", "--out", "o"],
        ["generate", "--truncation", "0.5", "--truncation-cutoff", "2", "--out", "o"],
        ["generate", "--noise-mode", "const", "--out", "o"],
    ],
)
def test_plain_latent_families_are_refused_in_one_line(tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    dc = make_dcgan_bundle(tmp_path / "dc")
    rc = main([args[0], str(dc), *args[1:]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "capability" in err and ("'intermediate'" in err or "'noise'" in err)
