"""Sparse fields: detection, occupancy and class grids, patches and offsets against the
truth of builtin:sparse."""

from __future__ import annotations

import numpy as np
import pytest

from galforge.data.builtin import sparse_fields
from galforge.data.sparse import (
    analyse,
    cell_centres,
    cell_index,
    check_zero_background,
    class_grid,
    compose,
    detect_sources,
    extract_patches,
    occupancy_grid,
    size_class,
    size_thresholds,
)
from galforge.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def fields():
    return sparse_fields(n=3, size=384, count=4, seed=1, stamp=24)  # isolated galaxies


def _match(truth, found):
    """Index of the detection nearest each truth galaxy and the distance to it."""
    d = np.hypot(
        found["x"][None] - np.array([t["x"] for t in truth])[:, None],
        found["y"][None] - np.array([t["y"] for t in truth])[:, None],
    )
    return d.argmin(axis=1), d.min(axis=1)


def test_detection_finds_truth_positions_and_fluxes(fields):
    iset, truth = fields
    for i in range(3):
        gals = [t for t in truth if t["image"] == i]
        found = detect_sources(iset.images[i, 0])
        assert len(found["x"]) == len(gals)  # one connected cluster per galaxy
        idx, dist = _match(gals, found)
        assert len(set(idx)) == len(gals)
        assert dist.max() < 1.0  # truncation at the stamp edge moves a centroid a little
        np.testing.assert_allclose(found["flux"][idx], [t["flux"] for t in gals], rtol=1e-4)
        np.testing.assert_array_equal(found["npix"][idx], [t["npix"] for t in gals])


def test_occupancy_grid_round_trip_against_truth(fields):
    iset, truth = fields
    ana = analyse(iset.images, grid=32, patch=32)
    for i in range(3):
        gals = [t for t in truth if t["image"] == i]
        expected = np.zeros((32, 32), np.float32)
        for t in gals:  # 384 px / 32 cells = 12 px per cell
            expected[int((t["y"] + 0.5) // 12), int((t["x"] + 0.5) // 12)] = 1
        np.testing.assert_array_equal(ana.grids[i], expected)
        assert ana.grids[i].sum() == len(gals)
    assert ana.counts.tolist() == [4, 4, 4]
    # offsets put every centre back at its position from the cell's centre
    cy, cx = cell_centres((384, 384), 32)
    np.testing.assert_allclose(cx[ana.catalogue["col"]] + ana.catalogue["dx"], ana.catalogue["x"])
    assert np.all(np.abs(ana.offsets) <= 6.0)


def test_patches_round_trip_against_truth(fields):
    iset, truth = fields
    for i in range(3):
        gals = [t for t in truth if t["image"] == i]
        x, y = np.array([t["x"] for t in gals]), np.array([t["y"] for t in gals])
        sep = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) + 1e9 * np.eye(len(x))
        assert sep.min() > 33  # isolated: each 32 px patch holds one galaxy only
        patches = extract_patches(iset.images[i, 0], x, y, 32)
        assert patches.shape == (len(gals), 32, 32)
        # every galaxy is whole in its patch, centred at index 16
        np.testing.assert_allclose(patches.sum(axis=(1, 2)), [t["flux"] for t in gals], rtol=1e-5)
        for p in patches:
            cy, cx = np.unravel_index(np.argmax(p), p.shape)
            assert abs(cy - 16) <= 2 and abs(cx - 16) <= 2
        np.testing.assert_array_equal(compose(patches, x, y, (384, 384)), iset.images[i, 0])


def test_size_classes_from_terciles_or_given_thresholds(fields):
    iset, _ = fields
    ana = analyse(iset.images)
    npix = ana.catalogue["npix"]
    t1, t2 = np.percentile(npix, [100 / 3, 200 / 3])
    assert ana.thresholds == pytest.approx((t1, t2))
    counts = np.bincount(ana.catalogue["size_class"], minlength=3)
    assert counts.min() >= 3 and counts.sum() == 12
    given = analyse(iset.images, thresholds=(1, 2))
    assert given.catalogue["size_class"].tolist() == [2] * 12
    assert size_class([1, 5, 10], (5, 9)).tolist() == [0, 0, 2]
    with pytest.raises(ConfigError, match="below"):
        size_thresholds([1, 2], (3, 3))
    # class grid: 1 + class where occupied, 0 elsewhere
    sel = ana.catalogue["image"] == 0
    cg = ana.class_grids[0]
    assert (cg > 0).sum() == sel.sum()
    assert sorted(cg[cg > 0] - 1) == sorted(ana.catalogue["size_class"][sel])


def test_cells_and_grids_on_a_hand_made_image():
    img = np.zeros((64, 64), np.float32)
    img[10:13, 20:23] = 1.0  # centre (21, 11) -> cell (row 1, col 2) of 8-px cells
    img[40, 60] = 5.0  # centre (60, 40) -> cell (5, 7)
    src = detect_sources(img)
    assert src["npix"].tolist() == [9, 1]
    np.testing.assert_allclose(src["x"], [21, 60])
    r, c = cell_index(src["x"], src["y"], img.shape, 8)
    assert r.tolist() == [1, 5] and c.tolist() == [2, 7]
    grid = occupancy_grid(src["x"], src["y"], img.shape, 8)
    assert grid.sum() == 2 and grid[1, 2] == 1 and grid[5, 7] == 1
    cg = class_grid(src["x"], src["y"], [2, 0], img.shape, 8)
    assert cg[1, 2] == 3 and cg[5, 7] == 1


def test_non_zero_background_is_refused_in_one_line():
    noisy = np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32)
    with pytest.raises(DataError, match="exactly 0") as err:
        check_zero_background(noisy, "sky.fits")
    assert "sky.fits" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="one band"):
        analyse(np.zeros((1, 3, 8, 8)))
    with pytest.raises(DataError, match="no galaxy"):
        analyse(np.zeros((1, 1, 32, 32)))


def test_zero_background_rule_names_the_image_that_kept_its_sky():
    sparse = np.zeros((3, 16, 16), np.float32)
    sparse[:, 4:8, 4:8] = 5.0
    check_zero_background(sparse)  # 94 % zeros in every image
    crowded = sparse.copy()
    crowded[1, :13] = 1.0  # a crowded field: 19 % zeros, the set still well over a fifth
    check_zero_background(crowded)
    sky = sparse.copy()
    sky[2] = np.random.default_rng(1).normal(size=(16, 16))
    with pytest.raises(DataError, match=r"sky.fits: image 2 has no pixel exactly 0"):
        check_zero_background(sky, "sky.fits")
    with pytest.raises(DataError, match="non-finite"):
        check_zero_background(np.where(sparse > 0, np.nan, 0.0))
