"""The physical forward model of the DCGAN: PSF descriptions, the PSF convolution, a model
trained with ``--psf`` and its bundle, and continuous conditions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from galforge.cli import main
from galforge.data.psf import data_psf, parse_psf, render_psf
from galforge.errors import ConfigError
from galforge.models.forward import fft_convolve

SCALE = 0.2


def _fwhm(image: np.ndarray, scale: float) -> float:
    import galsim

    return galsim.ImageD(np.ascontiguousarray(image, dtype=np.float64), scale=scale).calculateFWHM()


def test_parse_psf_descriptions_and_errors(tmp_path):
    (moffat,) = parse_psf("moffat:fwhm=0.7", ["r"])
    assert moffat.describe() == "moffat:fwhm=0.7,beta=3.5"
    g, r = parse_psf("g=gaussian:fwhm=0.9;r=moffat:fwhm=0.7,beta=2.5", ["g", "r"])
    assert (g.kind, g.fwhm, r.kind, dict(r.params)["beta"]) == ("gaussian", 0.9, "moffat", 2.5)
    assert (
        data_psf({"psf": "moffat", "psf_fwhm": 0.7, "moffat_beta": 3.5})
        == "moffat:fwhm=0.7,beta=3.5"
    )
    assert data_psf({}) is None
    for bad in (
        "moffat",
        "moffat:fwhm=-1",
        "airy:fwhm=0.7",
        "moffat:size=3",
        str(tmp_path / "missing.fits"),
    ):
        with pytest.raises(ConfigError, match="--psf"):
            parse_psf(bad, ["r"])


def test_psf_kernel_sums_to_one_with_the_asked_fwhm():
    (psf,) = parse_psf("gaussian:fwhm=1.0", ["r"])
    kernel = render_psf([psf], 0.05, 63)[0]
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    # a 0.05" pixel widens a 1" Gaussian by far less than one per cent
    assert _fwhm(kernel, 0.05) == pytest.approx(1.0, rel=0.02)
    (moffat,) = parse_psf("moffat:fwhm=0.7,beta=3.5", ["r"])
    assert _fwhm(render_psf([moffat], 0.02, 101)[0], 0.02) == pytest.approx(0.7, rel=0.02)


def test_psf_from_a_fits_image_is_resampled_and_normalised(tmp_path):
    import galsim
    from astropy.io import fits

    img = galsim.Gaussian(fwhm=0.8).drawImage(nx=41, ny=41, scale=0.1, method="no_pixel")
    hdu = fits.PrimaryHDU((img.array * 7.0).astype(np.float32))
    hdu.header["PIXSCALE"] = 0.1
    hdu.writeto(tmp_path / "psf.fits")
    (psf,) = parse_psf(str(tmp_path / "psf.fits"), ["r"])
    kernel = render_psf([psf], SCALE, 31)[0]
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    assert _fwhm(kernel, SCALE) == pytest.approx(0.8, rel=0.06)


def test_convolution_keeps_flux_and_matches_galsim():
    """A pre-PSF galaxy convolved by the model equals GalSim's drawing of the galaxy through
    the same PSF (pixel response included) and keeps its flux."""
    import galsim

    (psf,) = parse_psf("moffat:fwhm=0.7,beta=3.5", ["r"])
    kernel = torch.from_numpy(render_psf([psf], SCALE, 63))
    gal = galsim.Exponential(half_light_radius=0.5, flux=1000.0).shear(
        q=0.6, beta=0.4 * galsim.radians
    )
    scene = gal.drawImage(nx=64, ny=64, scale=SCALE, method="no_pixel").array
    observed = fft_convolve(torch.from_numpy(scene)[None, None].float(), kernel)[0, 0].numpy()
    truth = (
        galsim.Convolve(gal, galsim.Moffat(beta=3.5, fwhm=0.7))
        .drawImage(nx=64, ny=64, scale=SCALE)
        .array
    )
    assert observed.sum() == pytest.approx(scene.sum(), rel=1e-4)
    # the pre-PSF scene is sampled on the pixel grid: within 2% of the peak of GalSim's
    assert np.abs(observed - truth).max() < 0.02 * truth.max()
    assert _fwhm(observed, SCALE) > _fwhm(scene, SCALE) + 0.2


@pytest.fixture(scope="module")
def psf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("psf") / "run"
    rc = main(
        [
            "train",
            "builtin:galsim?n=48&size=64&bands=g,r",
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch",
            "8",
            "--psf",
            "auto",
            "--condition-columns",
            "flux,hlr",
            "--set",
            "model.width=4",
            "--set",
            "train.progress=false",
            "--set",
            "train.ema=0",
            "--set",
            "train.n_samples=4",
        ]
    )
    assert rc == 0
    return out


def test_psf_model_round_trips_through_its_bundle(psf_run):
    from galforge.generation.sampling import load_bundle

    meta = json.loads((psf_run / "bundle" / "bundle.json").read_text())
    spec = meta["parts"]["generator"]["spec"]
    assert spec["psf"] == {"psf": ["moffat:fwhm=0.7,beta=3.5"] * 2, "pixel_scale": 0.2, "size": 63}
    bundle = load_bundle(psf_run / "bundle", device="cpu")
    assert {"prepsf", "conditional", "noise"} <= bundle.capabilities
    info = bundle.generator.psf_info()
    expected = render_psf(parse_psf("moffat:fwhm=0.7,beta=3.5", ["g", "r"]), 0.2, 63)
    np.testing.assert_allclose(info["kernel"], expected, atol=1e-6)
    # the observation without noise is the pre-PSF scene through the stored PSF
    g = bundle.generator
    z = bundle.latent(3, seed=1)
    cond = torch.tensor([[2e4, 0.6], [5e3, 0.4], [6e4, 1.0]])
    with torch.no_grad():
        scene = g.scene(z, cond)
        observed = g.sky.to_physical(g.clean(z, cond))
        direct = fft_convolve(scene, torch.from_numpy(expected))
    clipped = torch.minimum(torch.maximum(direct, g.sky.lo), g.sky.hi)
    torch.testing.assert_close(observed, clipped, rtol=1e-3, atol=1e-3 * float(g.sky.hi.max()))


def test_conditions_change_the_galaxy_and_are_standardised(psf_run):
    from galforge.generation.sampling import load_bundle

    bundle = load_bundle(psf_run / "bundle", device="cpu")
    spec = bundle.spec["conditions"]
    assert spec["names"] == ["flux", "hlr"] and spec["log"] == [True, True]
    sample = np.asarray(spec["sample"])
    assert sample.shape == (48, 2)
    # the standardisation is fitted on the training catalogue: its log10 mean and spread
    assert spec["mean"][0] == pytest.approx(np.log10(sample[:, 0]).mean(), rel=1e-4)
    a = bundle.sample(2, seed=0, conditions={"flux": 2e3, "hlr": 0.4}, noise_mode="none")
    b = bundle.sample(2, seed=0, conditions={"flux": 8e4, "hlr": 1.1}, noise_mode="none")
    assert not np.allclose(a, b)


def test_psf_needs_sky_noise_and_a_known_psf(tmp_path):
    from galforge.training.recipes.dcgan import DCGANSettings

    with pytest.raises(ConfigError, match="sky_noise"):
        DCGANSettings(psf="moffat:fwhm=0.7", sky_noise=False)
    rc = main(
        [
            "train",
            "builtin:galsim?n=4&size=64",
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--set",
            "model.width=4",
            "--psf",
            "airy:fwhm=1",
        ]
    )
    assert rc == 2


def test_oversampled_scene_is_pixel_integrated_and_matches_galsim(tmp_path):
    """model.oversample=2: a 128-pixel pre-PSF scene at 0.1"/px; the observation is its PSF
    convolution summed over 2×2 blocks, and equals GalSim's drawing of the scene through the
    training PSF at 0.2"/px to 1% of the peak."""
    import galsim

    from galforge.galsim import sample_objects
    from galforge.generation.sampling import load_bundle

    out = tmp_path / "os"
    assert (
        main(
            [
                "train",
                "builtin:galsim?n=16&size=64&bands=r",
                "--out",
                str(out),
                "--steps",
                "1",
                "--batch",
                "8",
                "--psf",
                "auto",
                "--set",
                "model.oversample=2",
                "--set",
                "model.width=4",
                "--set",
                "train.ema=0",
                "--set",
                "train.n_samples=4",
                "--set",
                "train.progress=false",
            ]
        )
        == 0
    )
    bundle = load_bundle(out / "bundle", device="cpu")
    info = bundle.generator.psf_info()
    assert (info["oversample"], info["scene_pixel_scale"], info["kernel"].shape) == (
        2,
        0.1,
        (1, 127, 127),
    )
    assert bundle.image_shape == (1, 64, 64)
    z = bundle.latent(2, seed=0)
    with torch.no_grad():
        scene = bundle.generator.scene(z)
        observed = bundle.generator.observe(scene)
    assert tuple(scene.shape) == (2, 1, 128, 128) and tuple(observed.shape) == (2, 1, 64, 64)
    # a compact galaxy in the middle of the fine grid keeps its flux in the observation
    y, x = np.mgrid[:128, :128] - 63.5
    compact = torch.from_numpy(np.exp(-(x**2 + y**2) / 50.0)[None, None]).float() * 100
    with torch.no_grad():
        kept = bundle.generator.observe(compact)
    assert float(kept.sum()) == pytest.approx(float(compact.sum()), rel=1e-4)
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    for i, obj in enumerate(sample_objects(bundle, 2, seed=0)):
        drawn = galsim.Convolve(obj["r"], psf).drawImage(nx=64, ny=64, scale=0.2).array
        model = observed[i, 0].numpy()
        assert np.abs(drawn - model).max() < 0.01 * np.abs(model).max()
    with pytest.raises(ConfigError, match="oversample"):
        from galforge.training.recipes.dcgan import DCGANSettings

        DCGANSettings(oversample=2, sky_noise=True)


def test_condition_consistency_loss_is_on_with_known_conditions_and_refused_without_psf(
    psf_run, tmp_path
):
    from galforge.training.recipes.dcgan import DCGANSettings

    rows = [json.loads(r) for r in (psf_run / "log.jsonl").read_text().splitlines() if r.strip()]
    assert rows and all(np.isfinite(r["loss_cond"]) and r["loss_cond"] >= 0 for r in rows)
    with pytest.raises(ConfigError, match="condition_loss"):
        DCGANSettings(condition_loss=-1)
    # the loss measures the pre-PSF galaxy: without --psf it is refused in one line
    rc = main(
        [
            "train",
            "builtin:galsim?n=8&size=64",
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--set",
            "model.width=4",
            "--condition-columns",
            "flux",
            "--set",
            "model.condition_loss=1",
        ]
    )
    assert rc == 2
