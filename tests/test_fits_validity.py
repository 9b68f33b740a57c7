"""Every kind of FITS galforge writes opens in the astronomer's ordinary tools: astropy's
``HDUList.verify('exception')``, ``CCDData.read`` (images) and HEASARC's ``fitsverify``
(skipped, with the reason, only where the binary is not installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.time import Time
from astropy.wcs import WCS
from test_field import field_args
from test_generate import (
    BANDS,
    FAMILY,
    SPEC,
    TinyConvGenerator,
    _data,
    cond_bundle,
    generate_args,
)

import galforge
from galforge.bundle import save_bundle
from galforge.cli import main
from galforge.data import load_images
from galforge.data.normalize import Normalizer
from galforge.generation.cube import read_cube_table
from galforge.generation.field import read_field
from galforge.generation.fieldio import stored_job_hash


def galforge_stored_hash(path):
    return stored_job_hash(path, "fits")


FIXTURES = Path(__file__).parent / "fixtures"


def _bundle(path, units="counts", bands=BANDS, config=None):
    torch.manual_seed(0)
    spec = {**SPEC, "channels": len(bands)}
    gen = TinyConvGenerator(**spec)
    data = _data()[:, : len(bands)]
    return save_bundle(
        path,
        family=FAMILY,
        spec=spec,
        state_dict=gen.state_dict(),
        normalizer=Normalizer.fit(data, target=(-1.0, 1.0)),
        bands=bands,
        units=units,
        output_range=(-1.0, 1.0),
        config=config if config is not None else {},
        data_fingerprint="0" * 64,
    )


def _fitsverify(path) -> None:
    exe = shutil.which("fitsverify")
    if exe is None:
        pytest.skip("fitsverify (HEASARC) is not installed: apt-get install fitsverify")
    run = subprocess.run([exe, "-q", "-e", str(path)], capture_output=True, text=True)
    assert run.returncode == 0 and "verification OK" in run.stdout, run.stdout + run.stderr


def _valid(path, image: bool = True, hdu: int = 0):
    """astropy's verify (raising), CCDData for images (of HDU ``hdu``), and the header of
    the first HDU."""
    with fits.open(path, checksum=True) as hdul:
        hdul.verify("exception")
        header = hdul[0].header.copy()
    Time(header["DATE"], format="fits")  # a FITS date: no trailing Z
    ccd = CCDData.read(path, hdu=hdu) if image else None
    return header, ccd


def test_generated_galaxy_fits_pass_astropy_ccddata_and_fitsverify(tmp_path):
    bundle = _bundle(tmp_path / "b", config={"data": {"pixel_scale": 0.2, "zeropoint": 27.0}})
    out = tmp_path / "o"
    assert main(["generate", str(bundle), "-n", "2", "--out", str(out), "--no-progress"]) == 0
    path = out / "galaxy_000000.fits"
    header, ccd = _valid(path)
    assert ccd.unit == u.count and header["GFUNIT"] == "counts"
    assert header["PIXSCALE"] == pytest.approx(0.2) and header["MAGZP"] == pytest.approx(27.0)
    loaded = galforge.load(bundle)
    assert header["MODDATE"] == loaded.created.rstrip("Z")
    assert (loaded.pixel_scale, loaded.zeropoint) == (0.2, 27.0)
    assert loaded.bands == BANDS and loaded.units == "counts"
    scale = WCS(header).celestial.proj_plane_pixel_scales()[0].to_value(u.arcsec)
    assert scale == pytest.approx(0.2)
    assert header["CRVAL1"] == 0.0 and "placeholder" in header.comments["CRVAL1"]
    again = load_images(str(path))
    assert again.units == "counts" and again.bands == BANDS
    _fitsverify(path)


def test_display_level_galaxies_say_what_a_display_level_is(tmp_path):
    bundle = _bundle(tmp_path / "b", units="8-bit level", bands=("grey",))
    out = tmp_path / "o"
    assert main(["generate", str(bundle), "-n", "1", "--out", str(out), "--no-progress"]) == 0
    path = out / "galaxy_000000.fits"
    header, ccd = _valid(path)
    assert ccd.unit == u.adu and header["GFUNIT"] == "8-bit level"
    assert "display level" in " ".join(str(c) for c in header["COMMENT"])
    assert "CTYPE1" not in header and "No WCS" in " ".join(str(c) for c in header["COMMENT"])
    assert load_images(str(path)).units == "8-bit level"  # linear stretch again on retraining
    loaded = galforge.load(bundle)
    assert loaded.pixel_scale is None and loaded.zeropoint is None
    _fitsverify(path)


def test_fits_cube_round_trips_through_galforges_reader(tmp_path):
    bundle = _bundle(tmp_path / "b", config={"data": {"pixel_scale": 0.2}})
    cube_out, one_out = tmp_path / "cube", tmp_path / "one"
    base = ["generate", str(bundle), "-n", "4", "--seed", "5", "--no-progress"]
    assert main([*base, "--out", str(cube_out), "--format", "fits-cube"]) == 0
    assert main([*base, "--out", str(one_out)]) == 0
    path = cube_out / "galaxies.fits"
    header, ccd = _valid(path)
    assert ccd.data.shape == (4, 3, 8, 8) and ccd.unit == u.count
    assert header["NAXIS4"] == 4 and header["BANDS"] == "g,r,i"
    assert header["PIXSCALE"] == pytest.approx(0.2) and header["CTYPE1"] == "RA---TAN"
    read = load_images(str(path))
    assert read.images.shape == (4, 3, 8, 8) and read.bands == BANDS and read.units == "counts"
    for k in range(4):
        single = fits.getdata(one_out / f"galaxy_00000{k}.fits")
        np.testing.assert_allclose(read.images[k], single, rtol=1e-6, atol=0)
    table = read_cube_table(path)
    assert table["INDEX"].tolist() == [0, 1, 2, 3] and table["SEED"].tolist() == [5] * 4
    _fitsverify(path)


def test_field_fits_is_valid(tmp_path):
    out = tmp_path / "f.fits"
    options = ["--tile", "32", "--no-progress", "--compile", "off"]
    assert main(field_args(FIXTURES / "sgan_v01", "48x40", out, *options)) == 0
    header, ccd = _valid(out)
    assert ccd.data.shape[-2:] == (48, 40) and header["NAXIS"] == 3
    assert header["BUNIT"] == "count" and header["GFUNIT"] == "counts"
    _fitsverify(out)


def test_baseline_and_ladder_fits_are_valid(tmp_path):
    like = "builtin:sparse?n=2&size=96&count=4&seed=2&stamp=16"
    assert main(["baseline", "b1", "--like", like, "-n", "1", "--out", str(tmp_path / "b")]) == 0
    path = tmp_path / "b" / "baseline_000000.fits"
    header, ccd = _valid(path)
    assert ccd.unit == u.count
    _fitsverify(path)
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for i in range(2):
        blob = 80.0 * np.exp(-((yy - 12 - 4 * i) ** 2 + (xx - 16) ** 2) / 8.0)
        blob += rng.uniform(0, 1, blob.shape) * (blob > 2)
        np.save(real / f"f{i}.npy", np.where(blob > 2, blob, 0).astype(np.float32))
    assert main(["score", "ladder", str(real), "--out", str(tmp_path / "l")]) == 0
    rung = sorted((tmp_path / "l").glob("*.fits"))[0]
    _valid(rung)
    _fitsverify(rung)


@pytest.mark.parametrize(
    "old, read_as",
    [
        ("counts", "counts"),
        ("8-bit level", "8-bit level"),
        ("nanomaggy", "nanomaggy"),
        ("nmgy", "nanomaggy"),
        ("count", "counts"),
        ("electron/s", "electron/s"),
    ],
)
def test_old_and_standard_unit_strings_are_read(tmp_path, old, read_as):
    """Files galforge wrote before (BUNIT 'counts', '8-bit level') keep their units."""
    hdu = fits.PrimaryHDU(np.ones((6, 6), np.float32))
    hdu.header["BUNIT"] = old
    hdu.header["DATE"] = "2026-11-25T00:29:30Z"
    hdu.writeto(tmp_path / "old.fits")
    assert load_images(str(tmp_path / "old.fits")).units == read_as


@pytest.mark.parametrize("method", ["gzip2", "rice"])
def test_tile_compressed_field_fits(tmp_path, method):
    plain, packed = tmp_path / "plain.fits", tmp_path / f"{method}.fits"
    args = [
        "field",
        str(FIXTURES / "sgan_v01"),
        "--size",
        "96x64",
        "--tile",
        "32",
        "--seed",
        "3",
        "--no-progress",
        "--compile",
        "off",
    ]
    assert main([*args, "--out", str(plain)]) == 0
    assert main([*args, "--out", str(packed), "--fits-compression", method]) == 0
    # CCDData finds plain image extensions by itself, compressed ones when named
    header, ccd = _valid(packed, hdu=1)
    with fits.open(packed) as hdul:
        image = hdul[1]
        assert image.compression_type == {"gzip2": "GZIP_2", "rice": "RICE_1"}[method]
        assert image.header["BUNIT"] == "count" and image.header["JOBHASH"]
    expected, _ = read_field(plain)
    got, meta = read_field(packed)
    assert meta["units"] == "counts" and got.shape == expected.shape == ccd.data.shape
    if method == "gzip2":  # lossless
        np.testing.assert_array_equal(got, expected)
    else:  # quantised to 1/16 of each tile's noise: far below the pixels' spread
        assert 0 < np.abs(got - expected).max() < 0.05 * expected.std()
    assert galforge_stored_hash(packed) == galforge_stored_hash(plain)
    _fitsverify(packed)


def test_zarr_fields_name_their_dimensions(tmp_path):
    import zarr

    out = tmp_path / "f.zarr"
    options = ["--tile", "32", "--no-progress", "--compile", "off"]
    assert main(field_args(FIXTURES / "sgan_v01", "32x32", out, *options)) == 0
    assert zarr.open_array(str(out), mode="r").metadata.dimension_names == ("band", "y", "x")


def test_deepfield_truth_table_is_valid_with_units(tmp_path):
    from astropy.table import QTable
    from test_deepfield import tiny_generator

    from galforge.generation.truth import write_truth

    _, path, n = write_truth(
        tiny_generator(),
        3,
        (128, 128),
        tmp_path / "f.fits",
        ("g", "r", "i"),
        tile=64,
        pixel_scale=0.2,
    )
    header, _ = _valid(path, image=False)
    table = QTable.read(path, hdu="TRUTH")
    assert n > 0 and len(table) == n
    assert table["x"].unit == u.pix and table["ra"].unit == u.deg
    assert table["mag_r"].unit == u.mag
    _fitsverify(path)


def test_mix_and_projection_fits_are_valid(tmp_path):
    from test_latent import make_style_bundle

    style = make_style_bundle(tmp_path / "sg2")
    mix = tmp_path / "mix"
    assert (
        main(
            ["mix", str(style), "--rows", "1", "--cols", "2", "--styles", "0-1", "--out", str(mix)]
        )
        == 0
    )
    proj = tmp_path / "p"
    assert (
        main(
            [
                "project",
                str(style),
                "builtin:hdf-stamps?size=16&n=1",
                "--steps",
                "1",
                "--out",
                str(proj),
                "--no-progress",
            ]
        )
        == 0
    )
    for path in (mix / "mix_r000_c000.fits", proj / "reconstruction.fits", proj / "residual.fits"):
        header, ccd = _valid(path)
        assert ccd.unit is not None and header["BANDS"] and "MODDATE" in header
        _fitsverify(path)


def test_fits_cube_on_a_full_disk_is_one_line_and_leaves_no_temporary(
    tmp_path, monkeypatch, capsys
):
    import errno

    from galforge.generation import cube

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cube, "reserve_space", full)
    bundle = _bundle(tmp_path / "b")
    out = tmp_path / "cube"
    assert main(generate_args(bundle, "3", out, "--format", "fits-cube", "--no-progress")) == 2
    err = capsys.readouterr().err.strip()
    assert "disk full" in err and "galaxies.fits" in err and len(err.splitlines()) == 1
    left = [p.name for p in out.iterdir()] if out.exists() else []
    assert "galaxies.fits" not in left and not [n for n in left if n.endswith(".tmp")]


def test_fits_cube_table_holds_the_conditions(tmp_path):
    path = cond_bundle(tmp_path)
    out = tmp_path / "o"
    assert (
        main(
            generate_args(
                path, "3", out, "--format", "fits-cube", "--condition", "flux=0.25", "--no-progress"
            )
        )
        == 0
    )
    table = read_cube_table(out / "galaxies.fits")
    assert table["INDEX"].tolist() == [0, 1, 2] and table["flux"].tolist() == [0.25] * 3
    _valid(out / "galaxies.fits")
    _fitsverify(out / "galaxies.fits")
