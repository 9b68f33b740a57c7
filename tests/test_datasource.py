"""The training data of a run: one crop/resize route, blank data refused, and config.yaml
recording what was done (resize, stretch, pixel scale)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import TINY_TRAIN

from galforge.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(run):
    return yaml.safe_load((run / "config.yaml").read_text())


def _fits_folder(path, size=32, n=4, cd=0.262 / 3600, seed=0):
    """Legacy-Survey-like float cutouts in nanomaggies with a celestial WCS (CD matrix)."""
    from astropy.io import fits

    path.mkdir()
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    for k in range(n):
        img = 0.5 * np.exp(-(x**2 + y**2) / 20.0) + rng.normal(0, 0.01, (size, size))
        hdu = fits.PrimaryHDU(img.astype(np.float32))
        h = hdu.header
        h["BUNIT"] = "nanomaggy"
        h["FILTER"] = "r"
        h["MAGZP"] = 22.5
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -cd, 0.0, 0.0, cd
        hdu.writeto(path / f"cut{k}.fits")
    return path


def test_resize_is_printed_logged_and_recorded(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gal.npy", (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "gal.npy"), "--out", str(run), *TINY_TRAIN]) == 0
    err = capsys.readouterr().err
    assert "resized 6 of 6 images from 32×32 to 64×64 pixels (nearest)" in err
    assert "data.resize" in err
    cfg = _config(run)
    assert cfg["data"]["resize"] == 64 and cfg["data"]["stretch"] == "linear"  # 8-bit data
    notes = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("resized 6 of 6" in r.get("note", "") for r in notes)
    # the recorded config resumes as it is
    assert (
        main(["train", str(tmp_path / "gal.npy"), "--out", str(run), "--resume", "--steps", "2"])
        == 0
    )


def test_float_fits_default_to_asinh_and_record_the_pixel_scale(tmp_path):
    folder = _fits_folder(tmp_path / "cutouts")
    run = tmp_path / "run"
    assert main(["train", str(folder), "--out", str(run), *TINY_TRAIN]) == 0
    cfg = _config(run)
    assert cfg["data"]["stretch"] == "asinh"
    info = json.loads((run / "run.json").read_text())
    assert info["normalizer"]["stretch"] == "asinh" and info["units"] == "nanomaggy"
    # 32 px resized to 64 px: the pixels the model sees are half as large
    assert cfg["data"]["pixel_scale"] == pytest.approx(0.131, rel=1e-4)
    assert cfg["data"]["zeropoint"] == 22.5  # MAGZP of the data: the generated FITS's MAGZP


def test_prepared_stretch_is_what_the_config_says(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "gal.npy", (rng.random((6, 64, 64, 3)) * 255).astype(np.uint8))
    prep = tmp_path / "prep"
    assert (
        main(
            ["data", "prepare", str(tmp_path / "gal.npy"), "--out", str(prep), "--stretch", "asinh"]
        )
        == 0
    )
    run = tmp_path / "run"
    assert main(["train", str(prep), "--out", str(run), *TINY_TRAIN]) == 0
    assert _config(run)["data"]["stretch"] == "asinh"
    assert json.loads((run / "run.json").read_text())["normalizer"]["stretch"] == "asinh"
    # asking for another stretch fits a new normalizer, and says so
    run2 = tmp_path / "run2"
    assert (
        main(["train", str(prep), "--out", str(run2), *TINY_TRAIN, "--set", "data.stretch=linear"])
        == 0
    )
    assert json.loads((run2 / "run.json").read_text())["normalizer"]["stretch"] == "linear"


def test_blank_training_images_are_refused_or_noted(tmp_path, capsys):
    np.save(tmp_path / "zeros.npy", np.zeros((4, 3, 64, 64), np.float32))
    rc = main(["train", str(tmp_path / "zeros.npy"), "--out", str(tmp_path / "r0"), *TINY_TRAIN])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "blank: every image is constant" in err and "zeros.npy" in err
    some = np.random.default_rng(0).random((4, 3, 64, 64)).astype(np.float32)
    some[1] = 0.0
    np.save(tmp_path / "some.npy", some)
    assert (
        main(["train", str(tmp_path / "some.npy"), "--out", str(tmp_path / "r1"), *TINY_TRAIN]) == 0
    )
    assert "1 of 4 training images are constant" in capsys.readouterr().err


def test_one_crop_resize_route(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gal.npy", (rng.random((4, 80, 80, 3)) * 255).astype(np.uint8))
    data = str(tmp_path / "gal.npy")
    rc = main(
        ["train", data, "--out", str(tmp_path / "r"), *TINY_TRAIN, "--set", "data.options.size=64"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "data.options.size" in err and "data.resize" in err
    rc = main(
        [
            "train",
            data,
            "--out",
            str(tmp_path / "r"),
            *TINY_TRAIN,
            "--set",
            "data.crop_fraction=2.0",
        ]
    )
    assert rc == 2 and "(0, 1]" in capsys.readouterr().err
    run = tmp_path / "crop"
    assert (
        main(
            [
                "train",
                data,
                "--out",
                str(run),
                *TINY_TRAIN,
                "--set",
                "data.crop_pixels=32",
                "--set",
                "data.resize_method=area",
            ]
        )
        == 0
    )
    assert "from 32×32 to 64×64 pixels (area)" in capsys.readouterr().err


def test_mixed_sizes_name_the_train_option(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    for k, size in enumerate((40, 48)):
        Image.fromarray(np.full((size, size, 3), 40 * (k + 1), np.uint8)).save(folder / f"g{k}.png")
    rc = main(
        [
            "train",
            str(folder),
            "--model",
            "sgan",
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--set",
            "train.progress=false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "images of different sizes" in err
    assert "data.resize" in err and "--size" not in err
