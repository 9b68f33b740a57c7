"""The deepfield family: sources and sky measured from a field, drawn back as fields of any
size with their truth catalogue (tiny networks, small synthetic fields)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import sep
import torch
from astropy.io import fits
from safetensors.torch import load_file

from galforge.cli import main
from galforge.data.sources import (
    cut_stamps,
    detect_sources,
    fit_thomas,
    measure_sky,
    pair_correlation,
)
from galforge.generation.field import generate_field, render_one_shot
from galforge.generation.sampling import load_bundle
from galforge.models.deepfield import DeepFieldGenerator, half_light_radius

COMMON = [
    "--model",
    "deepfield",
    "--batch",
    "8",
    "--seed",
    "2",
    "--set",
    "model.config=small",
    "--set",
    "train.progress=false",
    "--set",
    "output.tensorboard=false",
    "--set",
    "train.n_samples=2",
    "--set",
    "train.log_every=1",
    "--set",
    "data.clip_percentile=100",
    "--set",
    "model.min_snr=3",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic_field(seed=0, size=192, n=40, sigma=1.0, level=10.0):
    """A 3-band field: exponential-profile sources on a flat sky with white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = np.zeros((3, size, size))
    truth = []
    for _ in range(n):
        x, y = rng.uniform(8, size - 8, 2)
        r0 = rng.uniform(0.8, 2.0)
        flux = 10 ** rng.uniform(2.0, 3.3)
        colour = np.array([1.0, rng.uniform(0.6, 1.2), rng.uniform(0.4, 1.0)])
        prof = np.exp(-np.hypot(xx - x, yy - y) / r0)
        prof /= prof.sum()
        img += flux * colour[:, None, None] * prof[None]
        truth.append((x, y, flux))
    img += level + sigma * rng.standard_normal(img.shape)
    return img.astype(np.float32), truth


def tiny_generator(seed=0, density=2e-3, clustered=False, sky=None, c=3, achromatic=False):
    torch.manual_seed(seed)
    g = DeepFieldGenerator(
        c, latent_dim=8, width=8, stamp=16, render=32, cell=64, achromatic=achromatic
    )
    rng = np.random.default_rng(seed)
    n = 200
    rows = np.concatenate(
        [
            10 ** rng.uniform(2, 3, (n, 1)) * rng.uniform(0.5, 1, (n, c)),
            rng.uniform(0.8, 3.0, (n, 1)),
            rng.uniform(0, 0.5, (n, 1)),
        ],
        1,
    )
    process = {
        "density": density,
        "kappa": density / 3 if clustered else density,
        "mu": 3.0 if clustered else 1.0,
        "sigma": 10.0,
        "clustered": clustered,
    }
    sky = sky or {
        "level": [5.0] * c,
        "sigma": [1.0] * c,
        "kernel": [[[0, 0.2, 0], [0.2, 1.0, 0.2], [0, 0.2, 0]]] * c,
        "band_corr": np.eye(c).tolist(),
        "quantize": 0.0,
        "clip": None,
    }
    g.set_model(
        torch.tensor(rows, dtype=torch.float32),
        torch.tensor([[6.0, 0.5], [1.0, 0.5]]),
        sky,
        process,
        25.0,
        [1.0] * c,
    )
    return g.eval()


# ---------------------------------------------------------------------------- data/sources
def test_detection_measures_positions_fluxes_and_sky():
    img, truth = synthetic_field()
    det = detect_sources(img, ("g", "r", "i"))
    cat = det.catalogue
    assert det.sky.level == pytest.approx([10.0] * 3, abs=0.05)
    assert det.sky.sigma == pytest.approx([1.0] * 3, rel=0.05)
    assert not det.sky.quantize and det.sky.clip is None
    found = 0
    for x, y, _ in truth:
        d = np.hypot(cat["x"] - x, cat["y"] - y)
        found += d.min() < 1.0
    assert found >= 0.85 * len(truth)
    for col in ("flux_g", "mag_g", "hlr", "ellipticity", "pa_deg"):
        assert np.isfinite(cat[col]).mean() > 0.9
    stamps, idx = cut_stamps(img, det, 16)
    assert stamps.shape == (len(idx), 3, 16, 16)
    # sky-subtracted: the stamps' borders average to ~0
    assert abs(float(np.median(stamps[:, :, 0, :]))) < 0.3


def test_sky_of_an_8bit_composite_is_rounded_and_clipped():
    rng = np.random.default_rng(1)
    x = np.clip(np.round(3.0 + 4.0 * rng.standard_normal((2, 200, 200))), 0, 255)
    sky = measure_sky(x.astype(np.float32), np.zeros((200, 200), bool))
    assert sky.quantize == 1.0 and sky.clip == [0.0, 255.0]
    # the level and σ of the Gaussian under the clip, not of the clipped values
    assert sky.level == pytest.approx([3.0, 3.0], abs=0.1)
    assert sky.sigma == pytest.approx([4.0, 4.0], rel=0.04)
    # a generated sky has the same histogram of levels (the zeros of the clip included)
    g = tiny_generator(density=0.0, sky=sky.to_dict(), c=2)
    fake = g.render_window(0, 0, 0, 200, 200, (200, 200)).numpy()
    assert np.array_equal(fake, np.round(fake)) and fake.min() == 0
    real_hist = np.bincount(x[0].astype(int).ravel(), minlength=40)[:40] / x[0].size
    fake_hist = np.bincount(fake[0].astype(int).ravel(), minlength=40)[:40] / fake[0].size
    assert np.abs(real_hist - fake_hist).max() < 0.01


def test_thomas_fit_finds_clustering_and_poisson_does_not_have_it():
    rng = np.random.default_rng(0)
    size, kappa, mu, sigma = 1000.0, 1e-4, 8.0, 12.0
    par = rng.uniform(0, size, (rng.poisson(kappa * size * size), 2))
    kids = rng.poisson(mu, len(par))
    pts = np.repeat(par, kids, 0) + sigma * rng.standard_normal((kids.sum(), 2))
    pts = pts[(pts >= 0).all(1) & (pts < size).all(1)]
    dens = len(pts) / size**2
    r, w, dd = pair_correlation(pts[:, 0], pts[:, 1], (1000, 1000))
    fit = fit_thomas(r, w, dd, dens, r_min=3.0)
    assert fit["clustered"] and fit["sigma"] == pytest.approx(sigma, rel=0.35)
    assert fit["mu"] == pytest.approx(mu, rel=0.5)
    flat = rng.uniform(0, size, (len(pts), 2))
    r, w, dd = pair_correlation(flat[:, 0], flat[:, 1], (1000, 1000))
    assert not fit_thomas(r, w, dd, dens, r_min=3.0)["clustered"]


# ---------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("achromatic", [False, True])
def test_a_conditioned_stamp_has_the_flux_size_and_shape_asked_for(achromatic):
    g = tiny_generator(achromatic=achromatic)
    n = 6
    flux = torch.tensor([[300.0, 200.0, 100.0]] * n) * torch.arange(1, n + 1)[:, None]
    hlr = torch.tensor([1.0, 1.5, 2.0, 3.0, 4.0, 5.0])
    e = torch.tensor([0.0, 0.2, 0.4, 0.1, 0.3, 0.5])
    pa = torch.tensor([0.0, 30.0, -45.0, 80.0, 10.0, -70.0])
    z = torch.randn((n, g.latent_dim), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = g.draw(z, {"flux": flux, "hlr": hlr, "ellipticity": e, "pa_deg": pa}, out=64).double()
    # flux per band: by construction
    assert torch.allclose(img.sum((2, 3)), flux.double(), rtol=1e-4)
    if achromatic:  # one profile: the colour is the same in any aperture
        ratio = img[:, 0] / img[:, 2].clamp_min(1e-12)
        core = img[:, 2] > 1e-3 * img[:, 2].amax((1, 2), keepdim=True)
        assert torch.allclose(
            ratio[core], (flux[:, 0] / flux[:, 2]).double()[torch.nonzero(core)[:, 0]], rtol=1e-3
        )
    c = (64 - 1) / 2.0
    for k in range(n):
        total = np.ascontiguousarray(img[k].sum(0).numpy())
        r, _ = sep.flux_radius(total, [c], [c], [30.0], 0.5, subpix=5)
        assert r[0] == pytest.approx(float(hlr[k]), rel=0.12), k
        if e[k] >= 0.2:
            m = sep.extract(total, 1e-3 * total.max(), minarea=3)[0:1]
            assert 1 - m["b"][0] / m["a"][0] == pytest.approx(float(e[k]), abs=0.08)
            dpa = (np.degrees(m["theta"][0]) - float(pa[k]) + 90) % 180 - 90
            assert abs(dpa) < 6
    # the differentiable measure used to fix the size agrees with sep's
    assert half_light_radius(img.sum(1)).numpy() == pytest.approx(hlr.numpy(), rel=0.04)


def test_the_sky_has_the_sigma_and_correlation_asked_for():
    c = 2
    kernel = np.array([[0.0, 0.3, 0.0], [0.3, 1.0, 0.3], [0.0, 0.3, 0.0]])
    kernel /= np.sqrt((kernel**2).sum())
    sky = {
        "level": [4.0, 7.0],
        "sigma": [2.0, 3.0],
        "kernel": [kernel.tolist()] * c,
        "band_corr": [[1.0, 0.6], [0.6, 1.0]],
        "quantize": 0.0,
        "clip": None,
    }
    g = tiny_generator(density=0.0, sky=sky, c=c)
    x = g.render_window(5, 0, 0, 400, 400, (400, 400)).double().numpy()[:, 1:-1, 1:-1]
    assert x.mean((1, 2)) == pytest.approx([4.0, 7.0], abs=0.05)
    assert x.std((1, 2)) == pytest.approx([2.0, 3.0], rel=0.03)
    assert np.corrcoef(x[0].ravel(), x[1].ravel())[0, 1] == pytest.approx(0.6, abs=0.03)
    # lag-1 autocorrelation: the kernel's own (centre × arm, twice: unit-norm kernel)
    n0 = x[0] - x[0].mean()
    lag = (n0[:, 1:] * n0[:, :-1]).mean() / n0.var()
    expect = 2 * kernel[1, 1] * kernel[1, 0]
    assert lag == pytest.approx(expect, abs=0.03)
    # and measure_sky reads the same sky back
    back = measure_sky(x, np.zeros(x.shape[1:], bool))
    assert back.sigma == pytest.approx([2.0, 3.0], rel=0.03)
    assert back.band_corr[0][1] == pytest.approx(0.6, abs=0.03)


@pytest.mark.parametrize("clustered", [False, True])
def test_tiles_equal_the_whole_field(tmp_path, clustered):
    g = tiny_generator(density=4e-3, clustered=clustered)
    whole = render_one_shot(g, None, "100x130", seed=3)
    out = tmp_path / "f.npy"
    res = generate_field(g, None, ("a", "b", "c"), out, "100x130", tile=48, seed=3, progress=False)
    tiled = np.load(out)
    assert np.array_equal(tiled, whole)
    assert res.truth_rows > 10
    rows = list(csv.DictReader(open(res.truth_path)))
    assert len(rows) == res.truth_rows
    assert {"id", "x", "y", "flux_a", "mag_a", "hlr", "ellipticity", "pa_deg"} <= set(rows[0])
    assert len({r["id"] for r in rows}) == len(rows)
    table = fits.getdata(str(out) + ".truth.fits")
    assert len(table) == len(rows)
    # a larger field holds the same sources where they overlap (position-seeded cells)
    big = g.sources_window(3, 0, 0, 100, 130, (400, 400))
    assert np.array_equal(np.sort(big["id"]), np.sort(table["id"]))


class _Crashing(DeepFieldGenerator):
    """Fails after ``limit`` windows, as a crash would."""

    limit = 10**6
    calls = 0

    def render_window(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls > self.limit:
            raise RuntimeError("simulated crash")
        return super().render_window(*args, **kwargs)


def test_a_zarr_field_resumes_after_a_crash_with_its_truth(tmp_path):
    import zarr

    g = tiny_generator(density=3e-3)
    ref = generate_field(
        g, None, ("a", "b", "c"), tmp_path / "ref.zarr", "64x96", tile=32, seed=2, progress=False
    )
    crashing = _Crashing(
        3, latent_dim=8, width=8, stamp=16, render=32, cell=64, n_rows=g.rows.shape[0]
    )
    crashing.load_state_dict(g.state_dict())
    crashing.set_model(g.rows, g.cond_stats, g.sky, g.process, g.zeropoint, g.flux_soft)
    crashing.eval()
    _Crashing.limit, _Crashing.calls = 2, 0
    out = tmp_path / "f.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_field(
            crashing, None, ("a", "b", "c"), out, "64x96", tile=32, seed=2, progress=False
        )
    _Crashing.limit, _Crashing.calls = 10**6, 0
    again = generate_field(
        crashing, None, ("a", "b", "c"), out, "64x96", tile=32, seed=2, progress=False, resume=True
    )
    assert again.tiles_done == 2 and _Crashing.calls == 6 - 2
    assert np.array_equal(
        np.asarray(zarr.open_array(str(out), mode="r")[:]),
        np.asarray(zarr.open_array(str(ref.path), mode="r")[:]),
    )
    assert again.truth_path.read_text() == ref.truth_path.read_text()


def test_truth_radec_follows_the_fits_wcs(tmp_path):
    from astropy.wcs import WCS

    g = tiny_generator(density=3e-3)
    out = tmp_path / "f.fits"
    res = generate_field(
        g,
        None,
        ("a", "b", "c"),
        out,
        "96x128",
        tile=64,
        seed=1,
        progress=False,
        extra_meta={"pixel_scale": 0.06},
    )
    t = fits.getdata(res.truth_path.with_suffix(".fits"))
    assert len(t) == res.truth_rows > 3
    wcs = WCS(fits.getheader(out)).celestial
    ra, dec = wcs.all_pix2world(t["x"], t["y"], 0)
    assert np.allclose(((t["ra"] - ra + 180) % 360) - 180, 0, atol=1e-9)
    assert np.allclose(t["dec"], dec, atol=1e-9)


def test_truth_catalogue_matches_the_drawn_sources(tmp_path):
    sky = {
        "level": [0.0] * 3,
        "sigma": [0.05] * 3,
        "kernel": [[[0, 0, 0], [0, 1.0, 0], [0, 0, 0]]] * 3,
        "band_corr": np.eye(3).tolist(),
        "quantize": 0.0,
        "clip": None,
    }
    g = tiny_generator(density=6e-4, sky=sky)
    size = (256, 256)
    img = render_one_shot(g, None, "256x256", seed=7).astype(np.float64)
    truth = g.sources_window(7, 0, 0, 256, 256, size)
    det = sep.extract(np.ascontiguousarray(img.sum(0)), 1.0, minarea=5)
    checked = 0
    for k in range(len(truth["id"])):
        x, y = truth["x"][k], truth["y"][k]
        others = np.hypot(truth["x"] - x, truth["y"] - y)
        others[k] = np.inf
        if others.min() < 25 or not (16 < x < 240 and 16 < y < 240):
            continue  # isolated sources away from the edges only
        d = np.hypot(det["x"] - x, det["y"] - y)
        j = int(np.argmin(d))
        assert d[j] < 0.3
        flux, _, _ = sep.sum_circle(np.ascontiguousarray(img.sum(0)), [x], [y], [14.0])
        assert flux[0] == pytest.approx(float(truth["flux"][k].sum()), rel=0.05)
        checked += 1
    assert checked >= 5


# ---------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def field_file(tmp_path_factory):
    img, _ = synthetic_field(seed=4, size=160, n=45)
    path = tmp_path_factory.mktemp("df") / "field.fits"
    fits.PrimaryHDU(img).writeto(path)
    return path


@pytest.fixture(scope="module")
def run(field_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("dfrun") / "run"
    torch.set_num_threads(1)
    assert main(["train", str(field_file), "--out", str(out), "--steps", "4", *COMMON]) == 0
    return out


def test_resume_is_exact(run, field_file, tmp_path):
    b = tmp_path / "b"
    assert main(["train", str(field_file), "--out", str(b), "--steps", "3", *COMMON]) == 0
    assert (
        main(["train", str(field_file), "--out", str(b), "--steps", "4", "--resume", *COMMON]) == 0
    )
    assert (run / "generator.safetensors").read_bytes() == (
        b / "generator.safetensors"
    ).read_bytes()
    sa = load_file(str(run / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bundle_stores_catalogue_sky_and_weights_and_makes_fields(run, tmp_path):
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    spec = meta["parts"]["generator"]["spec"]
    assert meta["family"] == "deepfield"
    assert spec["sky"]["sigma"] == pytest.approx([1.0] * 3, rel=0.1)
    assert spec["n_rows"] > 20 and spec["process"]["density"] > 0
    weights = load_file(str(run / "bundle" / "generator.safetensors"))
    assert weights["rows"].shape == (spec["n_rows"], 5)
    b = load_bundle(run / "bundle")
    assert "sources" in b.capabilities
    out = tmp_path / "f.fits"
    assert (
        main(
            [
                "field",
                str(run / "bundle"),
                "--size",
                "100x120",
                "--out",
                str(out),
                "--tile",
                "64",
                "--no-progress",
            ]
        )
        == 0
    )
    data = fits.getdata(out)
    assert data.shape == (3, 100, 120)
    assert float(np.median(data)) == pytest.approx(10.0, abs=0.5)
    assert (tmp_path / "f.fits.truth.csv").exists() and (tmp_path / "f.fits.truth.fits").exists()
    # the truth files are the field's own outputs: a second run refuses them without --overwrite
    assert (
        main(
            ["field", str(run / "bundle"), "--size", "100x120", "--out", str(out), "--no-progress"]
        )
        == 2
    )
    assert (
        main(
            [
                "generate",
                str(run / "bundle"),
                "-n",
                "2",
                "--out",
                str(tmp_path / "g"),
                "--no-progress",
            ]
        )
        == 0
    )


def test_a_field_too_small_is_refused(tmp_path):
    path = tmp_path / "small.fits"
    fits.PrimaryHDU(np.ones((3, 40, 40), np.float32)).writeto(path)
    assert main(["train", str(path), "--out", str(tmp_path / "r"), "--steps", "1", *COMMON]) == 2


# ---------------------------------------------------------------------------- calibration
def test_calibrated_rows_are_drawn_by_weight_and_the_density_follows(tmp_path):
    from galforge.models.deepfield import build_deepfield

    g = tiny_generator(density=2e-3, clustered=True)
    rows = g.rows.clone()
    base = dict(g.process)
    weights = torch.ones(rows.shape[0])
    weights[:10] = 20.0  # 10 rows of 200 carry half the weight
    g.set_calibration(rows, weights, 1.5, {"note": "test"})
    assert g.process["mu"] == pytest.approx(1.5 * base["mu"])
    assert g.process["kappa"] == pytest.approx(base["kappa"])  # parents kept: same w(θ)
    assert g.process["density"] == pytest.approx(1.5 * base["density"])
    u = torch.randn((4000, g.n_features + 2), generator=torch.Generator().manual_seed(0))
    picked = g.attributes(u)["row"]
    assert float((picked < 10).double().mean()) == pytest.approx(200 / 390, abs=0.03)
    # more sources per area, in proportion
    n0 = len(
        tiny_generator(density=2e-3, clustered=True).sources_window(3, 0, 0, 512, 512, (512, 512))[
            "id"
        ]
    )
    n1 = len(g.sources_window(3, 0, 0, 512, 512, (512, 512))["id"])
    assert n1 / n0 == pytest.approx(1.5, rel=0.15)
    # the calibrated model is rebuilt from its spec and weights (what a bundle stores)
    spec = json.loads(json.dumps(g.spec()))
    h = build_deepfield(spec)
    h.load_state_dict(g.state_dict())
    assert torch.equal(
        h.eval().render_window(5, 0, 0, 64, 64, (64, 64)),
        g.render_window(5, 0, 0, 64, 64, (64, 64)),
    )
    with pytest.raises(Exception, match="positive calibration weight"):
        g.set_calibration(rows, -weights, 1.0, {})


def test_calibration_makes_the_generated_field_measure_as_the_real_one():
    from galforge.training.recipes.deepfield import calibrate_catalogue

    # a "real" field with many sources near the detection threshold
    truth_model = tiny_generator(seed=1, density=2.5e-3)
    rng = np.random.default_rng(1)
    n = truth_model.rows.shape[0]
    faint = truth_model.rows.clone()
    faint[:, :3] = torch.tensor(10 ** rng.uniform(0.9, 2.3, (n, 1)) * rng.uniform(0.5, 1, (n, 3)))
    truth_model.set_model(
        faint, truth_model.cond_stats, truth_model.sky, truth_model.process, 25.0, [1.0] * 3
    )
    size = 320
    real = truth_model.render_window(1, 0, 0, size, size, (size, size)).numpy()
    # the model of it as the recipe makes one: the real field's measured catalogue as rows
    det = detect_sources(real, ("b0", "b1", "b2"), thresh=2.0, minarea=5)
    cat = det.catalogue
    measured = np.stack(
        [cat["flux_b0"], cat["flux_b1"], cat["flux_b2"], cat["hlr"], cat["ellipticity"]], 1
    )
    model = tiny_generator(seed=1, density=len(cat["x"]) / size**2)
    model.set_model(
        torch.tensor(measured, dtype=torch.float32),
        model.cond_stats,
        model.sky,
        model.process,
        25.0,
        [1.0] * 3,
    )
    record = calibrate_catalogue(model, real, iterations=2, fields=2, seed=50, bins=4)
    first, last = record["history"][0], record["history"][-1]
    # drawn as measured, too few sources are found again (they were found where noise helped)
    assert first["density_ratio"] < 0.95
    assert abs(last["density_ratio"] - 1) < abs(first["density_ratio"] - 1)
    assert abs(last["density_ratio"] - 1) < 0.12
    assert model.weighted and model.calibration["history"] == record["history"]
    assert float(model.row_weight.max()) > 1.0
