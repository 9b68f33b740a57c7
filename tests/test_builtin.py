"""Built-in sources: GalSim galaxies with exact truth, the Hubble XDF field and stamps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from galforge.data import load_images
from galforge.data.builtin import (
    composite_hlr_factor,
    describe_spec,
    galsim_galaxies,
    hdf_field,
    parse_spec,
)
from galforge.errors import ConfigError


def _moments(im):
    y, x = np.mgrid[: im.shape[0], : im.shape[1]]
    f = im.sum()
    xc, yc = (im * x).sum() / f, (im * y).sum() / f
    qxx = (im * (x - xc) ** 2).sum() / f
    qyy = (im * (y - yc) ** 2).sum() / f
    qxy = (im * (x - xc) * (y - yc)).sum() / f
    return xc, yc, qxx, qyy, qxy


def test_galsim_shapes_truth_and_determinism():
    s, truth = galsim_galaxies(6, size=32, bands=("g", "r", "i"), seed=4)
    assert s.images.shape == (6, 3, 32, 32) and s.images.dtype == np.float32
    assert s.bands == ("g", "r", "i") and s.units == "counts" and len(truth) == 6
    for key in ("flux", "hlr", "e1", "e2", "q", "pa_deg", "sersic_n", "bulge_frac", "snr"):
        assert key in truth[0]
    t = truth[0]
    assert t["ellipticity"] == pytest.approx(1 - t["q"])
    assert math.hypot(t["e1"], t["e2"]) == pytest.approx(t["ellipticity"])
    assert t["flux"] == t["flux_r"] and t["ref_band"] == "r"
    assert s.meta[2]["pa_deg"] == truth[2]["pa_deg"]
    s2, _ = galsim_galaxies(6, size=32, bands=("g", "r", "i"), seed=4)
    np.testing.assert_array_equal(s.images, s2.images)
    s3, _ = galsim_galaxies(6, size=32, bands=("g", "r", "i"), seed=5)
    assert not np.array_equal(s.images, s3.images)


def test_noiseless_stamps_match_truth_conventions():
    s, truth, clean = galsim_galaxies(
        8,
        size=64,
        bands=("r",),
        seed=1,
        return_noiseless=True,
        q=(0.3, 0.6),
        hlr=(0.8, 1.0),
        psf_fwhm=0.3,
        max_offset=2.0,
    )
    assert clean.shape == s.images.shape
    for img, t in zip(clean[:, 0], truth, strict=True):
        # the stamp holds flux_stamp exactly; the wings beyond it hold a little more
        assert img.sum() == pytest.approx(t["flux_stamp"], rel=1e-5)
        assert t["flux_stamp"] <= t["flux"] <= 1.1 * t["flux_stamp"]
        xc, yc, qxx, qyy, qxy = _moments(img.astype(np.float64))
        # first moments of the truncated stamp: close to the profile centre (x: columns)
        assert xc == pytest.approx(t["x"], abs=0.2) and yc == pytest.approx(t["y"], abs=0.2)
        pa = math.degrees(0.5 * math.atan2(2 * qxy, qxx - qyy)) % 180
        d = abs(pa - t["pa_deg"]) % 180
        assert min(d, 180 - d) < 3.0  # PA counter-clockwise from +x (columns)
    # the noise has the truth sigma
    resid = (s.images - clean)[:, 0]
    sig = np.array([t["noise_sigma"] for t in truth])
    assert np.std(resid / sig[:, None, None]) == pytest.approx(1.0, rel=0.05)


def test_hlr_factor_and_options():
    assert composite_hlr_factor(0.0, 0.5, 4.0) == 1.0
    f = composite_hlr_factor(0.5, 0.5, 4.0)
    assert 0.5 < f < 1.0
    s, truth = galsim_galaxies(
        3, size=24, bands="gri", noise="correlated", psf="gaussian", bulge_n=(1.0, 6.0), seed=2
    )
    assert s.bands == ("g", "r", "i") and all(1.0 <= t["sersic_n"] <= 6.0 for t in truth)
    n, _ = galsim_galaxies(2, size=24, bands=("x", "y2"), noise="none", seed=0)
    assert n.images.min() >= -1e-6  # no noise: non-negative light
    with pytest.raises(ConfigError, match="noise"):
        galsim_galaxies(2, noise="poisson")
    with pytest.raises(ConfigError, match="q"):
        galsim_galaxies(2, q=(0.0, 2.0))


def test_specs_through_load_images():
    s = load_images("builtin:galsim?n=4&size=24&seed=3&bands=g,r")
    assert s.images.shape == (4, 2, 24, 24) and s.source.startswith("builtin:galsim")
    assert "hlr" in s.meta[0] and "truth_keys" in s.extra
    assert parse_spec("builtin:galsim?snr=10,50&noise=correlated&bands=g,r") == (
        "galsim",
        {"snr": (10.0, 50.0), "noise": "correlated", "bands": ("g", "r")},
    )
    with pytest.raises(ConfigError, match="unknown builtin"):
        load_images("builtin:illustris")
    with pytest.raises(ConfigError, match="unknown parameter"):
        load_images("builtin:galsim?n=2&colour=red")


def test_hdf_field_and_stamps():
    f = hdf_field()
    assert f.images.shape == (1, 3, 872, 1000) and f.bands == ("R", "G", "B")
    assert f.units == "8-bit level" and f.images.dtype == np.float32 and f.images.max() <= 255
    st = load_images("builtin:hdf-stamps?size=32&n=5")
    assert st.images.shape == (5, 3, 32, 32) and st.units == "8-bit level"
    fluxes = [m["flux"] for m in st.meta]
    assert fluxes == sorted(fluxes, reverse=True)
    m = st.meta[0]
    np.testing.assert_array_equal(
        st.images[0], f.images[0, :, m["y0"] : m["y0"] + 32, m["x0"] : m["x0"] + 32]
    )
    # the stamp is centred on the source: the centre is brighter than the border
    grey = st.images[0].sum(0)
    assert grey[14:18, 14:18].mean() > grey[0].mean()


def test_hdf_stamp_splits_share_no_pixel():
    f = hdf_field().images[0]
    W = f.shape[-1]
    size = 32
    sets = {
        s: load_images(f"builtin:hdf-stamps?size={size}&split={s}")
        for s in ("train", "test", "reference")
    }
    whole = load_images(f"builtin:hdf-stamps?size={size}")
    cols = {s: np.zeros(W, bool) for s in sets}
    for s, st in sets.items():
        assert len(st) > 50 and st.source.endswith(f"split={s}")
        for img, m in zip(st.images, st.meta, strict=True):
            cols[s][m["x0"] : m["x0"] + size] = True
            np.testing.assert_array_equal(
                img, f[:, m["y0"] : m["y0"] + size, m["x0"] : m["x0"] + size]
            )
    # train wholly in columns < 0.7·W, test wholly in columns >= 0.7·W, reference < 0.3·W
    assert cols["train"].nonzero()[0].max() < 0.7 * W <= cols["test"].nonzero()[0].min()
    assert cols["reference"].nonzero()[0].max() < 0.3 * W
    assert not (cols["train"] & cols["test"]).any()
    assert not (cols["reference"] & cols["test"]).any()
    # the splits are the whole field's stamps on each side, found and centred the same way
    by_pos = {(m["x0"], m["y0"]) for m in whole.meta}
    assert {(m["x0"], m["y0"]) for s in sets.values() for m in s.meta} <= by_pos
    assert len(sets["train"]) + len(sets["test"]) < len(whole)  # stamps across 0.7·W: neither
    assert "split=test" in str(load_images(f"builtin:hdf-stamps?size={size}&split=test&n=3").source)
    with pytest.raises(ConfigError, match="train .*test"):
        load_images("builtin:hdf-stamps?split=validation")
    d = describe_spec(f"builtin:hdf-stamps?size={size}&split=test")
    assert d["count"] == len(sets["test"]) and d["description"].startswith("32×32-pixel stamps")
    assert "columns >= 700" in d["description"]


def test_correlated_noise_keeps_sigma_and_correlates_neighbours():
    corr = {}
    for kind in ("gaussian", "correlated"):
        s, truth, clean = galsim_galaxies(
            4, size=32, bands=("r",), seed=0, noise=kind, return_noiseless=True
        )
        r = (s.images - clean)[:, 0] / np.array([t["noise_sigma"] for t in truth])[:, None, None]
        assert r.std() == pytest.approx(1.0, rel=0.08)
        corr[kind] = float((r[:, :, 1:] * r[:, :, :-1]).mean())
    assert abs(corr["gaussian"]) < 0.05 and corr["correlated"] > 0.5


def test_sparse_fields_zero_background_connected_galaxies_and_truth():
    from scipy import ndimage

    from galforge.data.builtin import from_spec, sparse_fields

    iset = from_spec("builtin:sparse?n=2&size=200&count=3&seed=5&stamp=24")
    assert iset.images.shape == (2, 1, 200, 200) and iset.bands == ("r",)
    assert iset.units == "counts" and iset.source.startswith("builtin:sparse")
    again, truth = sparse_fields(n=2, size=200, count=3, seed=5, stamp=24)
    np.testing.assert_array_equal(iset.images, again.images)  # same seed, same pixels
    assert len(truth) == 6 and [m["n_galaxies"] for m in iset.meta] == [3, 3]
    assert (iset.images == 0).mean() > 0.9 and iset.images.min() == 0.0
    for t in truth:
        img = iset.images[t["image"], 0]
        labels, _ = ndimage.label(img > 0, structure=np.ones((3, 3)))
        cy, cx = int(round(t["y"])), int(round(t["x"]))
        assert 0 <= t["x"] <= 199 and 0 <= t["y"] <= 199
        assert labels[cy, cx] > 0  # the centre lies on the galaxy's cluster
        assert t["npix"] > 0 and 0 < t["flux"] <= t["flux_model"]
    assert iset.meta[0]["galaxies"][0]["x"] == truth[0]["x"]
    other = sparse_fields(n=1, size=64, count=(0, 2), seed=1, stamp=16)[0]
    assert other.meta[0]["n_galaxies"] in (0, 1, 2)


def test_sparse_spec_refuses_bad_parameters():
    from galforge.data.builtin import from_spec

    with pytest.raises(ConfigError, match="count"):
        from_spec("builtin:sparse?n=1&size=64&count=-1")
    with pytest.raises(ConfigError, match="unknown parameter"):
        from_spec("builtin:sparse?n=1&bands=g")
