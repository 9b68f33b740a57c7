"""Readers: every format on files the tests write, the NaN policy and the error paths."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob, write_png16

from galforge.cli import main
from galforge.data import load_images
from galforge.errors import ConfigError, DataError


def test_png_folder_rgb_8bit_skips_non_images(png_folder):
    s = load_images(png_folder)
    assert s.images.shape == (3, 3, 24, 24) and s.images.dtype == np.float32
    assert s.bands == ("R", "G", "B") and s.units == "8-bit level"
    assert [m["file"].rsplit("/", 1)[-1] for m in s.meta] == ["gal0.png", "gal1.png", "gal2.png"]
    skipped = {sk["path"].rsplit("/", 1)[-1]: sk["reason"] for sk in s.report.skipped}
    assert "README.txt" in skipped and "not an image" in skipped["README.txt"]
    from PIL import Image

    ref = np.asarray(Image.open(png_folder / "gal1.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(s.images[1], ref.astype(np.float32))


def test_png_16bit_grey_and_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 65535, (9, 7, 3), dtype=np.uint16)
    write_png16(tmp_path / "rgb16.png", rgb)
    s = load_images(tmp_path / "rgb16.png")
    assert s.units == "16-bit level" and s.bands == ("R", "G", "B")
    np.testing.assert_array_equal(s.images[0], rgb.transpose(2, 0, 1).astype(np.float32))

    grey = rng.integers(0, 65535, (11, 13), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    g = load_images(tmp_path / "grey16.png")
    assert g.bands == ("grey",) and g.units == "16-bit level"
    np.testing.assert_array_equal(g.images[0, 0], grey.astype(np.float32))


def test_png_16bit_every_filter_alpha_interlace_and_damage(tmp_path):
    import png

    rng = np.random.default_rng(4)
    # smooth data, so that the row filters (None, Sub, Up, Average, Paeth) all carry values
    ramp = np.add.outer(np.arange(12), np.arange(10))[..., None] * 517
    rgba = (ramp + rng.integers(0, 300, (12, 10, 4))).astype(np.uint16)
    for f in range(5):  # each filter alone, written by the tests' own encoder
        write_png16(tmp_path / f"f{f}.png", rgba, filters=(f,))
        s = load_images(tmp_path / f"f{f}.png")
        assert s.bands == ("R", "G", "B") and s.units == "16-bit level"  # alpha dropped
        np.testing.assert_array_equal(s.images[0], rgba[..., :3].transpose(2, 0, 1))
    # an Adam7-interlaced file (pypng's writer)
    with open(tmp_path / "adam7.png", "wb") as fh:
        png.Writer(10, 12, greyscale=False, bitdepth=16, interlace=True).write(
            fh, rgba[..., :3].reshape(12, 30).tolist()
        )
    np.testing.assert_array_equal(
        load_images(tmp_path / "adam7.png").images[0], rgba[..., :3].transpose(2, 0, 1)
    )
    # a file cut short is named, in one line
    whole = (tmp_path / "f4.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.png") as err:
        load_images(tmp_path / "cut.png", strict=True)
    assert "\n" not in str(err.value)


def test_jpeg_grey_and_tiff_8_16(tmp_path):
    import tifffile
    from PIL import Image

    grey = np.clip(blob(16, 3, channels=1)[0], 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=100)
    s = load_images(tmp_path / "g.jpg")
    assert s.images.shape == (1, 1, 16, 16) and s.bands == ("grey",)
    assert np.abs(s.images[0, 0] - grey).max() <= 3  # JPEG is lossy

    t16 = np.random.default_rng(2).integers(0, 65535, (10, 12, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", t16, photometric="rgb")
    t = load_images(tmp_path / "c16.tif")
    assert t.units == "16-bit level" and t.bands == ("R", "G", "B")
    np.testing.assert_array_equal(t.images[0], t16.transpose(2, 0, 1))
    t8 = np.arange(64, dtype=np.uint8).reshape(8, 8)
    tifffile.imwrite(tmp_path / "g8.tiff", t8)
    u = load_images(tmp_path / "g8.tiff")
    assert u.units == "8-bit level" and u.images.shape == (1, 1, 8, 8)


def test_fits_2d_cube_and_mef(tmp_path):
    from astropy.io import fits

    img = blob(16, 0, channels=1)[0].astype(np.float32)
    h = fits.PrimaryHDU(img)
    h.header["FILTER"] = "F814W"
    h.header["BUNIT"] = "electrons/s"
    h.writeto(tmp_path / "one.fits")
    s = load_images(tmp_path / "one.fits")
    assert s.bands == ("F814W",) and s.units == "electrons/s"
    np.testing.assert_allclose(s.images[0, 0], img)

    cube = blob(16, 1, channels=3).astype(">f4")  # big-endian, as FITS stores it
    c = fits.PrimaryHDU(cube)
    c.header["BANDS"] = "grz"
    c.writeto(tmp_path / "cube.fits")
    s = load_images(tmp_path / "cube.fits")
    assert s.images.shape == (1, 3, 16, 16) and s.bands == ("g", "r", "z") and s.units == "adu"
    np.testing.assert_allclose(s.images[0], cube.astype(np.float32))

    hdus = [fits.PrimaryHDU()]
    for k, b in enumerate(("u", "g", "r", "i")):
        e = fits.ImageHDU(blob(16, 5 + k, channels=1)[0].astype(np.float32), name=f"EXT{k}")
        e.header["BAND"] = b
        hdus.append(e)
    fits.HDUList(hdus).writeto(tmp_path / "mef.fits")
    s = load_images(tmp_path / "mef.fits")
    assert s.bands == ("u", "g", "r", "i") and s.images.shape == (1, 4, 16, 16)
    one = load_images(tmp_path / "mef.fits", hdu=2)
    assert one.bands == ("g",)


def test_fits_per_band_pattern_with_nans(fits_band_folder):
    s = load_images(fits_band_folder, pattern="{id}_{band}.fits")
    # wavelength order g, r, z; obj2 lacks z and is skipped with a reason
    assert s.bands == ("g", "r", "z") and s.units == "nanomaggy"
    assert [m["id"] for m in s.meta] == ["obj0", "obj1"]
    assert np.isfinite(s.images).all()
    assert s.report.nan_pixels == 2 and s.report.nan_filled_images == 1
    assert any("missing band" in sk["reason"] and "z" in sk["reason"] for sk in s.report.skipped)
    # the filled value is the band's background median, not zero
    filled = s.images[1, 1, 2, 3]
    assert filled == pytest.approx(s.images[1, 1, 5, 5]) and filled > 0

    r = load_images(fits_band_folder, pattern="{id}_{band}.fits", nan_policy="reject")
    assert [m["id"] for m in r.meta] == ["obj0"]
    assert any("nan_policy='reject'" in sk["reason"] for sk in r.report.skipped)

    sel = load_images(fits_band_folder, pattern="{id}_{band}.fits", bands="r,g")
    assert sel.bands == ("r", "g") and len(sel) == 3  # obj2 has r and g


def test_hdf5_galaxy10_layout(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (5, 20, 20, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "Galaxy10.h5", "w") as f:
        f["images"] = imgs
        f["ans"] = np.arange(5, dtype=np.uint8) % 3
        f["other"] = rng.normal(size=(5, 8, 8)).astype(np.float32)
    s = load_images(tmp_path / "Galaxy10.h5")
    assert s.images.shape == (5, 3, 20, 20) and s.bands == ("R", "G", "B")
    assert s.units == "8-bit level" and [m["ans"] for m in s.meta] == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(s.images[3], imgs[3].transpose(2, 0, 1))
    o = load_images(tmp_path / "Galaxy10.h5", hdf5_dataset="other", limit=2)
    assert o.images.shape == (2, 1, 8, 8) and o.units == "adu"


def test_npy_and_npz(tmp_path):
    arr = np.random.default_rng(0).normal(size=(4, 2, 12, 12)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    s = load_images(tmp_path / "a.npy")
    np.testing.assert_array_equal(s.images, arr)
    np.savez(
        tmp_path / "b.npz",
        images=arr.transpose(0, 2, 3, 1),
        bands=np.array(["g", "r"]),
        label=np.arange(4),
    )
    z = load_images(tmp_path / "b.npz")
    np.testing.assert_array_equal(z.images, arr)
    assert z.bands == ("g", "r") and [m["label"] for m in z.meta] == [0, 1, 2, 3]


def test_crop_resize_limit_applied_while_reading(png_folder):
    s = load_images(png_folder, crop=0.5, resize=6, method="area", limit=2)
    assert s.images.shape == (2, 3, 6, 6)


def test_single_bad_file_in_folder_is_skipped(png_folder):
    (png_folder / "broken.png").write_bytes(b"")
    (png_folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    s = load_images(png_folder)
    assert len(s) == 3
    reasons = {sk["path"].rsplit("/", 1)[-1]: sk["reason"] for sk in s.report.skipped}
    assert "0 bytes" in reasons["broken.png"] and "corrupt.png" in reasons
    with pytest.raises(DataError, match="broken.png"):
        load_images(png_folder, strict=True)


def _cli_error(capsys, args):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "case",
    [
        "empty_folder",
        "truncated_fits",
        "all_nan",
        "mixed_sizes",
        "zero_png",
        "only_text",
        "band_count",
        "unknown_path",
        "corrupt_fits_header",
    ],
)
def test_bad_input_exits_2_and_names_the_file(tmp_path, capsys, case):
    from astropy.io import fits
    from PIL import Image

    out = str(tmp_path / "out")
    if case == "empty_folder":
        src = tmp_path / "empty"
        src.mkdir()
        expect = ["empty", str(src)]
    elif case == "truncated_fits":
        src = tmp_path / "cut.fits"
        fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(src)
        data = src.read_bytes()
        src.write_bytes(data[: len(data) // 2])
        expect = ["cut.fits", "truncated"]
    elif case == "corrupt_fits_header":
        src = tmp_path / "junk.fits"
        src.write_bytes(b"this is not a FITS header" * 200)
        expect = ["junk.fits", "corrupt"]
    elif case == "all_nan":
        src = tmp_path / "nan.fits"
        fits.PrimaryHDU(np.full((8, 8), np.nan, np.float32)).writeto(src)
        expect = ["nan.fits", "NaN"]
    elif case == "mixed_sizes":
        src = tmp_path / "mixed"
        src.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "b.png")
        expect = ["b.png", "--size"]
    elif case == "zero_png":
        src = tmp_path / "zero.png"
        src.write_bytes(b"")
        expect = ["zero.png", "0 bytes"]
    elif case == "only_text":
        src = tmp_path / "texts"
        src.mkdir()
        (src / "a.txt").write_text("x")
        (src / "b.csv").write_text("y")
        expect = ["no image files", "a.txt"]
    elif case == "band_count":
        src = tmp_path / "bands"
        src.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "b.png")
        expect = ["b.png", "band"]
    else:
        src = tmp_path / "nowhere"
        expect = ["nowhere", "no such file"]
    code, err = _cli_error(capsys, ["data", "prepare", str(src), "--out", out])
    assert code == 2
    assert err.startswith("error:") and "Traceback" not in err
    for word in expect:
        assert word in err, (word, err)
    # inspect of a missing path also fails cleanly
    if case == "unknown_path":
        assert main(["data", "inspect", str(src)]) == 2


def test_mixed_sizes_with_resize_works(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(tmp_path / "b.png")
    s = load_images(tmp_path, size=12)
    assert s.images.shape == (2, 3, 12, 12) and s.images[1].min() == 7


def test_bad_options_raise_config_error(png_folder):
    with pytest.raises(ConfigError, match="nan_policy"):
        load_images(png_folder, nan_policy="zero")
    with pytest.raises(ConfigError, match="unknown data option"):
        load_images(png_folder, colour="red")
    with pytest.raises(ConfigError, match="bands"):
        load_images(png_folder, bands=["g", "r"])


def _hsc_exposure(path, image, mask, variance, bits=None, band="HSC-I"):
    """An HSC/LSST-style exposure: empty PRIMARY, then IMAGE, MASK and VARIANCE HDUs."""
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["FILTER"] = band
    primary.header["BUNIT"] = "nJy"
    hdus = [primary]
    for name, data in (("IMAGE", image), ("MASK", mask), ("VARIANCE", variance)):
        h = fits.ImageHDU(data, name=name)
        h.header["EXTTYPE"] = name
        if name == "MASK":
            for plane, bit in (bits or {"BAD": 0, "SAT": 1, "DETECTED": 5}).items():
                key = f"MP_{plane}"
                h.header[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
        hdus.append(h)
    hdus.append(fits.BinTableHDU.from_columns([fits.Column("psf", "E", array=[1.0])], name="PSF"))
    fits.HDUList(hdus).writeto(path)


def test_hsc_lsst_exposures_science_mask_variance(tmp_path, capsys):
    d = tmp_path / "hsc"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        image = (blob(20, k, amp=50.0, channels=1)[0] + rng.normal(0, 1, (20, 20))).astype(">f4")
        mask = np.zeros((20, 20), ">i4")
        mask[9:12, 9:12] = 1 << 5  # DETECTED: the galaxy itself, not a defect
        mask[0, 0] = 1 << 0  # BAD
        mask[3, 4] = (1 << 1) | (1 << 5)  # SAT
        image[0, 0] = 1e6  # garbage under the BAD bit
        variance = np.full((20, 20), 4.0, ">f4")
        _hsc_exposure(d / f"calexp-{k}.fits", image, mask, variance)
    s = load_images(d)
    assert s.images.shape == (2, 1, 20, 20) and s.bands == ("HSC-I",) and s.units == "nJy"
    assert s.report.nan_pixels == 4 and s.meta[0]["masked_pixels"] == 2
    assert s.images[0, 0, 0, 0] < 100  # the BAD pixel went through the NaN policy (filled)
    assert s.meta[0]["extensions"] == ["IMAGE=science", "MASK=mask", "VARIANCE=variance"]
    assert s.weights is not None and s.weights.shape == s.images.shape
    assert s.weights[0, 0, 0, 0] == 0 and s.weights[0, 0, 3, 4] == 0
    assert s.weights[0, 0, 10, 10] == pytest.approx(0.25)  # DETECTED pixels keep their weight
    assert s.subset([1]).weights.shape == (1, 1, 20, 20)
    assert main(["data", "inspect", str(d / "calexp-0.fits")]) == 0
    out = capsys.readouterr().out
    assert "HSC-I" in out and "MASK" not in out and "warning" not in out


def test_extensions_that_are_not_bands_are_warned(tmp_path, capsys):
    from astropy.io import fits

    path = tmp_path / "ccds.fits"
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(np.ones((16, 16), np.float32) * k, name=f"CCD{k}") for k in (1, 2)
    ]
    fits.HDUList(hdus).writeto(path)
    s = load_images(path)
    assert s.bands == ("CCD1", "CCD2")
    assert any("do not look like filters" in w for w in s.report.warnings)
    assert main(["data", "inspect", str(path)]) == 0
    assert "do not look like filters" in capsys.readouterr().out


def test_one_file_per_band_without_pattern_is_explained(fits_band_folder, tmp_path, capsys):
    assert main(["data", "inspect", str(fits_band_folder)]) == 0
    out = capsys.readouterr().out
    assert "mixed: g (3 files), r (3 files), z (2 files)" in " ".join(out.split())
    assert "--pattern '{id}_{band}.fits'" in " ".join(out.split())
    rc = main(["data", "prepare", str(fits_band_folder), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--pattern '{id}_{band}.fits'" in err


def test_crop_fraction_above_one_is_refused(png_folder, tmp_path, capsys):
    rc = main(["data", "prepare", str(png_folder), "--out", str(tmp_path / "o"), "--crop", "2.0"])
    err = capsys.readouterr().err
    assert rc == 2 and "crop fraction must be in (0, 1]" in err
    with pytest.raises(ConfigError, match="at least 8"):
        load_images(png_folder, crop=2)
    assert load_images(png_folder, crop="12").images.shape[-1] == 12
