"""Prepared data sets: prepare → load round trip, manifest contents, inspect, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from galforge import __version__
from galforge.cli import main
from galforge.data import load_images
from galforge.data.datasets import inspect, prepare
from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError


def test_prepare_round_trip(fits_band_folder, tmp_path):
    out = tmp_path / "prep"
    mf = prepare(fits_band_folder, out, pattern="{id}_{band}.fits", crop=0.5)
    man = json.loads(mf.read_text())
    direct = load_images(fits_band_folder, pattern="{id}_{band}.fits", crop=0.5)
    assert man["count"] == 2 and man["shape"] == [3, 10, 10] and man["bands"] == ["g", "r", "z"]
    assert man["units"] == "nanomaggy" and man["galforge_version"] == __version__
    assert man["fingerprint"] == direct.fingerprint()
    assert man["nan_pixels"] == 2 and man["n_skipped"] == 1
    assert "missing band" in man["skipped"][0]["reason"]
    assert man["options"]["pattern"] == "{id}_{band}.fits" and man["options"]["crop"] == 0.5
    norm = Normalizer.from_dict(man["normalizer"])
    assert norm.target == (-1.0, 1.0) and norm.clip_percentile == 99.99

    back = load_images(out)
    assert isinstance(back.images, np.memmap)  # memory-mapped, not decoded again
    np.testing.assert_array_equal(np.asarray(back.images), direct.images)
    assert back.bands == direct.bands and back.units == "nanomaggy"
    assert back.fingerprint() == man["fingerprint"]
    assert [m["id"] for m in back.meta] == ["obj0", "obj1"]
    small = load_images(out, limit=1, size=5, method="area")
    assert small.images.shape == (1, 3, 5, 5)


def test_prepare_galsim_writes_truth_csv(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["data", "prepare", "builtin:galsim?n=5&size=24&seed=2", "--out", str(out)]) == 0
    assert "prepared 5 images" in capsys.readouterr().out
    with open(out / "truth.csv") as fh:
        rows = list(csv.DictReader(fh))
    direct = load_images("builtin:galsim?n=5&size=24&seed=2")
    assert len(rows) == 5
    assert float(rows[3]["pa_deg"]) == pytest.approx(direct.meta[3]["pa_deg"])
    assert float(rows[3]["q"]) == pytest.approx(direct.meta[3]["q"])
    np.testing.assert_array_equal(np.load(out / "images.npy"), direct.images)
    from astropy import units as u
    from astropy.table import QTable

    table = QTable.read(out / "truth.ecsv")  # the same catalogue, with units
    assert len(table) == 5 and table["x"].unit == u.pix and table["hlr"].unit == u.arcsec
    assert table["pa_deg"].unit == u.deg and table["flux_r"].unit == u.count
    assert table["hlr"][3].to_value(u.arcsec) == pytest.approx(float(rows[3]["hlr"]))


def test_inspect_without_reading_everything(png_folder, fits_band_folder, tmp_path, capsys):
    info = inspect(png_folder)
    assert info["count"] == 3 and info["shapes"] == {"3×24×24": 3}
    assert info["bands"] == ["R", "G", "B"] and info["units"] == "8-bit level"
    assert info["skipped"][0]["path"].endswith("README.txt")
    f = inspect(fits_band_folder, pattern="{id}_{band}.fits")
    assert f["count"] == 2 and f["bands"] == ["g", "r", "z"] and f["units"] == "nanomaggy"
    b = inspect("builtin:galsim?n=7&size=40&bands=g,r")
    assert b["count"] == 7 and b["shape"] == [2, 40, 40]
    assert main(["data", "inspect", str(png_folder), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["count"] == 3
    assert main(["data", "inspect", str(png_folder)]) == 0
    assert "README.txt" in capsys.readouterr().out


def test_prepare_refuses_a_foreign_folder(png_folder, tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a prepared data set"):
        prepare("builtin:galsim?n=2&size=16", png_folder)
    code = main(["data", "prepare", "builtin:galsim?n=2&size=16", "--out", str(png_folder)])
    assert code == 2 and str(png_folder) in capsys.readouterr().err


def test_cli_options_are_checked(png_folder, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["data", "prepare", str(png_folder), "--out", out, "--crop", "abc"]) == 2
    assert "--crop" in capsys.readouterr().err
    assert main(["data", "prepare", str(png_folder), "--out", out, "--nan-policy", "zero"]) == 2
    assert "nan_policy" in capsys.readouterr().err
    assert main(["data", "prepare", str(png_folder), "--out", out, "--where", "A>1"]) == 2
    assert "--catalog" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "prepare",
                str(png_folder),
                "--out",
                out,
                "--crop",
                "0.5",
                "--size",
                "8",
                "--resize-method",
                "bicubic",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "o" / "images.npy").shape == (3, 3, 8, 8)


def test_fingerprint_tracks_pixels_and_bands():
    from galforge.data import ImageSet

    x = np.random.default_rng(0).normal(size=(3, 2, 8, 8)).astype(np.float32)
    a = ImageSet(images=x, bands=("g", "r"))
    assert a.fingerprint() == ImageSet(images=x.copy(), bands=("g", "r")).fingerprint()
    assert a.fingerprint() != ImageSet(images=x, bands=("r", "g")).fingerprint()
    y = x.copy()
    y[2, 1, 7, 7] += 1e-3
    assert a.fingerprint() != ImageSet(images=y, bands=("g", "r")).fingerprint()
    assert a.subset([0, 2]).images.shape == (2, 2, 8, 8)


def test_inspect_hdf5_and_cli_bands(tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "g10.h5", "w") as f:
        f["images"] = np.zeros((4, 20, 20, 3), np.uint8)
    info = inspect(tmp_path / "g10.h5")
    assert (
        info["count"] == 4 and info["shapes"] == {"3×20×20": 4} and info["units"] == "8-bit level"
    )
    out = tmp_path / "p"
    assert (
        main(
            [
                "data",
                "prepare",
                str(tmp_path / "g10.h5"),
                "--out",
                str(out),
                "--bands",
                "g,r,i",
                "--limit",
                "3",
            ]
        )
        == 0
    )
    man = json.loads((out / "manifest.json").read_text())
    assert man["bands"] == ["g", "r", "i"] and man["count"] == 3


def test_prepare_onto_an_existing_set_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "prepare", "builtin:galsim?n=3&size=16&seed=1", "--out", str(out)]) == 0
    assert (out / "truth.csv").is_file()
    capsys.readouterr()
    assert main(["data", "prepare", "builtin:hdf-stamps?size=16&n=2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert load_images(out).images.shape[0] == 3
    assert (
        main(
            ["data", "prepare", "builtin:hdf-stamps?size=16&n=2", "--out", str(out), "--overwrite"]
        )
        == 0
    )
    back = load_images(out)
    assert back.images.shape[0] == 2 and back.bands == ("R", "G", "B")
    assert not (out / "truth.csv").exists()  # nothing of the earlier set is left
    assert not (out / "truth.ecsv").exists()
