"""Colour views: band handling, stretches, grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from galforge.data.display import (
    band_wavelength,
    channel_mixing,
    fit_stretch,
    lupton_rgb,
    make_grid,
    save_grid,
    to_rgb,
)
from galforge.errors import DataError


def _galaxy(c=3, size=24, flux=100.0, colours=(1.0, 1.5, 2.0), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    profile = np.exp(-np.hypot(yy, xx) / 3.0)
    img = np.stack([flux * colours[k % len(colours)] * profile for k in range(c)])
    return (img + rng.normal(0, 0.5, img.shape)).astype(np.float32)


def _rows(mix):
    """Index of the band feeding each of R, G, B (for one-hot rows)."""
    return [int(np.argmax(row)) for row in mix]


def test_three_bands_blue_to_red_reddest_is_red():
    assert _rows(channel_mixing(("g", "r", "i"))) == [2, 1, 0]
    # known filters are sorted by wavelength whatever their order
    assert _rows(channel_mixing(("i", "g", "r"))) == [0, 2, 1]
    assert _rows(channel_mixing(("F814W", "F435W", "F606W"))) == [0, 2, 1]
    assert band_wavelength("F125W") == 1250.0 and band_wavelength("weird") is None


def test_rgb_composite_bands_used_as_they_are():
    assert _rows(channel_mixing(("R", "G", "B"))) == [0, 1, 2]
    assert _rows(channel_mixing(("B", "G", "R"))) == [2, 1, 0]


def test_one_band_is_grey_and_two_bands_get_a_middle_channel():
    grey = lupton_rgb(_galaxy(c=1), ("r",))
    assert grey.shape == (24, 24, 3) and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    mix = channel_mixing(("g", "i"))
    assert mix[0].tolist() == [0.0, 1.0] and mix[2].tolist() == [1.0, 0.0]
    assert mix[1].tolist() == [0.5, 0.5]


def test_many_bands_choose_three():
    assert _rows(channel_mixing(("u", "g", "r", "i", "z"))) == [3, 2, 1]
    # unknown names: taken as blue -> red; bluest, middle, reddest
    assert _rows(channel_mixing(("a", "b", "c", "d", "e"))) == [4, 2, 0]


def test_lupton_shapes_dtypes_and_brightness():
    img = _galaxy()
    rgb = lupton_rgb(img, ("g", "r", "i"))
    assert rgb.shape == (24, 24, 3) and rgb.dtype == np.uint8
    centre, corner = rgb[12, 12].astype(int).sum(), rgb[1, 1].astype(int).sum()
    assert centre > corner + 200  # the galaxy is bright, the sky dark
    # the reddest band (i, 2x the flux of g) makes the galaxy red
    assert rgb[10, 10, 0] > rgb[10, 10, 2]
    batch = to_rgb(np.stack([img, img]), ("g", "r", "i"))
    assert batch.shape == (2, 24, 24, 3)


def test_colours_are_preserved_below_saturation():
    img = np.zeros((3, 8, 8), np.float32)
    img[:, 3, 3] = [1.0, 2.0, 4.0]  # g, r, i
    img[:, 5, 5] = [100.0, 100.0, 100.0]  # the bright reference
    stretch = fit_stretch(img, ("g", "r", "i"), mode="lupton", black=0.0, white_percentile=100)
    rgb = stretch.apply(img).astype(float)
    r, g, b = rgb[3, 3]
    assert r / b == pytest.approx(4.0, rel=0.1) and g / b == pytest.approx(2.0, rel=0.1)


def test_8bit_rgb_data_look_like_the_original_picture():
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    chw = picture.transpose(2, 0, 1).astype(np.float32)
    out = lupton_rgb(chw, ("R", "G", "B"), "8-bit level")
    assert np.array_equal(out, picture)
    # band order B,G,R is put back into R,G,B
    out = lupton_rgb(chw[::-1].copy(), ("B", "G", "R"))
    assert np.array_equal(out, picture)


def test_joint_stretch_keeps_images_comparable():
    faint, bright = _galaxy(flux=20), _galaxy(flux=80, seed=1)
    shared = to_rgb(np.stack([faint, bright]), ("g", "r", "i"))
    assert shared[1].mean() > shared[0].mean() * 1.5
    alone = [lupton_rgb(faint, ("g", "r", "i")), lupton_rgb(bright, ("g", "r", "i"))]
    assert abs(float(alone[1].mean()) - float(alone[0].mean())) < 0.25 * alone[0].mean()


def test_make_grid_layout():
    images = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 1, 4, 4) + 1
    grid = make_grid(images, 3, pad=2)
    assert grid.shape == (1, 2 * 6 + 2, 3 * 6 + 2)
    assert np.array_equal(grid[0, 2:6, 2:6], images[0, 0])
    assert np.array_equal(grid[0, 8:12, 8:12], images[4, 0])
    assert grid[0, 8:12, 14:18].sum() == 0  # empty slot
    assert make_grid(images.astype(np.uint8)).dtype == np.uint8


def test_save_grid_writes_a_png(tmp_path):
    images = np.stack([_galaxy(seed=k) for k in range(6)])
    path = save_grid(tmp_path / "sub" / "grid.png", images, ("g", "r", "i"), nrow=3)
    assert path == tmp_path / "sub" / "grid.png"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        plain = im.size
    titled = save_grid(tmp_path / "t.png", images, ("g", "r", "i"), nrow=3, title="seed 0")
    with Image.open(titled) as im:
        assert im.size[1] > plain[1]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["grid.png"]  # no temp files left


def test_bad_inputs_raise_data_error():
    with pytest.raises(DataError, match="band"):
        lupton_rgb(_galaxy(c=3), ("g", "r"))
    with pytest.raises(DataError, match="mode"):
        fit_stretch(_galaxy(), ("g", "r", "i"), mode="log")
    with pytest.raises(DataError):
        make_grid(np.zeros((0, 1, 4, 4)))
