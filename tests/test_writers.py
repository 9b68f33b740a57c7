"""File writers for generated galaxies: FITS, PNG, stacked npy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

import galforge
from galforge.errors import ConfigError
from galforge.generation.writers import NpyWriter, sample_name, write_fits, write_png

BANDS = ("g", "r", "i")


def _image(c=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (c, 10, 12)) * 50 + 300).astype(np.float32)


def _fits(path, image, bands=BANDS, **kw):
    args = dict(
        bands=bands,
        units="nanomaggy",
        seed=7,
        index=42,
        bundle_id="0123456789ab",
        family="dcgan",
        date="2026-01-02T03:04:05Z",
    )
    args.update(kw)
    return write_fits(path, image, **args)


def test_fits_multi_band_cube_and_header(tmp_path):
    image = _image()
    path = _fits(tmp_path / "g.fits", image)
    with fits.open(path, checksum=True) as hdul:
        hdul.verify("exception")
        hdu = hdul[0]
        assert hdu.data.shape == (3, 10, 12) and hdu.data.dtype.kind == "f"
        assert hdu.header["BITPIX"] == -32
        np.testing.assert_array_equal(hdu.data, image)
        h = hdu.header
        assert h["BANDS"] == "g,r,i" and h["NBANDS"] == 3
        assert [h["BAND1"], h["BAND2"], h["BAND3"]] == list(BANDS)
        assert h["BUNIT"] == "nmgy" and h["GFUNIT"] == "nanomaggy"
        assert h["SEED"] == 7 and h["INDEX"] == 42
        assert h["BUNDLEID"] == "0123456789ab" and h["MODEL"] == "dcgan"
        assert h["GFVERSION"] == galforge.__version__ and h["MODDATE"] == "2026-01-02T03:04:05"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", h["DATE"])  # time of writing
        assert "not an observation" in str(h["COMMENT"])
    assert [p.name for p in tmp_path.iterdir()] == ["g.fits"]  # no temporary file left


def test_fits_single_band_is_2d_with_filter(tmp_path):
    path = _fits(tmp_path / "one.fits", _image(c=1), bands=("F814W",))
    with fits.open(path) as hdul:
        assert hdul[0].data.shape == (10, 12)
        assert hdul[0].header["FILTER"] == "F814W" and hdul[0].header["BAND1"] == "F814W"


def test_fits_bytes_are_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    a = _fits(tmp_path / "a.fits", _image(), truncation=0.7)
    b = _fits(tmp_path / "b.fits", _image(), truncation=0.7)
    assert a.read_bytes() == b.read_bytes()
    with fits.open(a) as hdul:
        assert hdul[0].header["TRUNCPSI"] == pytest.approx(0.7)
        assert hdul[0].header["DATE"] == "2026-01-01T00:00:00"


def test_fits_pixel_scale_wcs_and_zeropoint(tmp_path):
    from astropy.wcs import WCS

    path = _fits(tmp_path / "w.fits", _image(c=1), bands=("r",), pixel_scale=0.2, zeropoint=22.5)
    h = fits.getheader(path)
    assert h["PIXSCALE"] == pytest.approx(0.2) and h["MAGZP"] == pytest.approx(22.5)
    wcs = WCS(h)
    assert wcs.wcs.ctype[0] == "RA---TAN" and list(wcs.wcs.crpix) == [6.5, 5.5]
    assert abs(wcs.proj_plane_pixel_scales()[0].to_value("arcsec") - 0.2) < 1e-9
    bare = fits.getheader(_fits(tmp_path / "b.fits", _image(c=1), bands=("r",)))
    assert "CTYPE1" not in bare and "PIXSCALE" not in bare and "MAGZP" not in bare
    assert "No WCS" in str(bare["COMMENT"])


def test_fits_band_mismatch_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="bands"):
        _fits(tmp_path / "x.fits", _image(c=2))


def test_png_view(tmp_path):
    path = write_png(tmp_path / "v.png", _image(), BANDS, "nanomaggy")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (12, 10)
    again = write_png(tmp_path / "w.png", _image(), BANDS, "nanomaggy")
    assert path.read_bytes() == again.read_bytes()


def test_npy_writer_streams_chunks(tmp_path):
    images = np.stack([_image(seed=k) for k in range(5)])
    writer = NpyWriter(
        tmp_path / "samples.npy", 5, images.shape[1:], {"seed": 3, "bands": list(BANDS)}
    )
    writer.write(10, images[:2])
    writer.write(12, images[2:])
    npy, index = writer.close()
    loaded = np.load(npy, allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, images)
    meta = json.loads(index.read_text())
    assert meta["indices"] == [10, 11, 12, 13, 14] and meta["shape"] == [5, 3, 10, 12]
    assert meta["seed"] == 3 and meta["bands"] == list(BANDS) and meta["file"] == "samples.npy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.json", "samples.npy"]


def test_sample_names_sort_by_index():
    assert sample_name(42, "fits") == "galaxy_000042.fits"
    names = [sample_name(i, "png", 7) for i in (9, 10, 100)]
    assert names == sorted(names)
