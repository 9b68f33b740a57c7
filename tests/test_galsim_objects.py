"""galforge.galsim and ``galforge generate --psf``: pre-PSF galaxies as GalSim objects, and
observed through another telescope with a catalogue beside the FITS."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from galforge.cli import main

TRAIN = [
    "--steps",
    "2",
    "--batch",
    "8",
    "--set",
    "model.width=4",
    "--set",
    "train.progress=false",
    "--set",
    "train.ema=0",
    "--set",
    "train.n_samples=4",
]


@pytest.fixture(scope="module")
def psf_bundle(tmp_path_factory):
    from galforge.generation.sampling import load_bundle

    out = tmp_path_factory.mktemp("gs") / "run"
    rc = main(
        [
            "train",
            "builtin:galsim?n=40&size=64&bands=g,r",
            "--out",
            str(out),
            "--psf",
            "moffat:fwhm=0.7,beta=3.5",
            "--condition-columns",
            "flux,hlr",
            *TRAIN,
        ]
    )
    assert rc == 0
    return load_bundle(out / "bundle", device="cpu")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_galforge_galsim_does_not_shadow_galsim():
    import galsim

    import galforge.data.psf as psf_module
    import galforge.galsim as gg

    assert gg.galsim is galsim and hasattr(galsim, "InterpolatedImage")
    assert "galforge" not in galsim.__file__
    (psf,) = psf_module.parse_psf("gaussian:fwhm=0.5", ["r"])
    assert isinstance(psf_module.psf_object(psf, 0.2)[0], galsim.Gaussian)


def test_objects_carry_the_flux_and_pixel_scale_of_the_pre_psf_galaxy(psf_bundle):
    import galsim

    from galforge.galsim import sample_objects
    from galforge.generation.observe import prepsf_galaxies

    objs = sample_objects(psf_bundle, 3, seed=4, flux=2e4, hlr=0.6)
    scenes, cond, _ = prepsf_galaxies(psf_bundle, 3, 4, conditions={"flux": 2e4, "hlr": 0.6})
    assert len(objs) == 3 and all(set(o) == {"g", "r"} for o in objs)
    np.testing.assert_allclose(cond, [[2e4, 0.6]] * 3)
    for obj, scene in zip(objs, scenes, strict=True):
        for b, band in enumerate(("g", "r")):
            assert obj[band].flux == pytest.approx(float(scene[b].sum()), rel=1e-5)
            # drawn back on the model's own grid, the object is the stamp itself
            back = obj[band].drawImage(nx=64, ny=64, scale=0.2, method="no_pixel").array
            np.testing.assert_allclose(back, scene[b], atol=1e-3 * np.abs(scene[b]).max())
            # convolved with a PSF and drawn on a coarser, larger grid: the flux is kept
            wide = (
                galsim.Convolve(obj[band], galsim.Gaussian(fwhm=1.0))
                .drawImage(nx=96, ny=96, scale=0.3)
                .array
            )
            assert wide.sum() == pytest.approx(scene[b].sum(), rel=0.01)


def test_galsim_through_the_training_psf_equals_the_models_observation(psf_bundle):
    """Tolerance: 2% of the stamp's peak per pixel, 0.5% in flux (GalSim interpolates the
    pre-PSF stamp; the model convolves its pixel samples)."""
    import galsim

    from galforge.galsim import sample_objects
    from galforge.models.forward import fft_convolve

    g = psf_bundle.generator
    z = psf_bundle.latent(2, seed=7)
    cond = torch.tensor([[1e4, 0.5], [5e4, 0.9]])
    with torch.no_grad():
        model_obs = fft_convolve(g.scene(z, cond), torch.from_numpy(g.psf_info()["kernel"])).numpy()
    objs = sample_objects(psf_bundle, 2, seed=7, flux=[1e4, 5e4], hlr=[0.5, 0.9])
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    for i, obj in enumerate(objs):
        for b, band in enumerate(("g", "r")):
            drawn = galsim.Convolve(obj[band], psf).drawImage(nx=64, ny=64, scale=0.2).array
            peak = np.abs(model_obs[i, b]).max()
            assert np.abs(drawn - model_obs[i, b]).max() < 0.02 * peak
            assert drawn.sum() == pytest.approx(model_obs[i, b].sum(), rel=5e-3)


def test_generate_psf_writes_the_conditions_and_matched_noise(psf_bundle, tmp_path):
    from astropy.io import fits

    from galforge.generation.observe import prepsf_galaxies

    table = tmp_path / "want.csv"
    table.write_text("hlr,flux\n0.5,10000\n0.8,30000\n1.1,70000\n")
    out = tmp_path / "obs"
    rc = main(
        [
            "generate",
            str(psf_bundle.path),
            "--out",
            str(out),
            "--conditions",
            str(table),
            "--psf",
            "moffat:fwhm=0.9",
            "--pixel-scale",
            "0.26",
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    assert rc == 0
    rows = _rows(out / "catalog.csv")
    assert [(float(r["flux"]), float(r["hlr"])) for r in rows] == [
        (1e4, 0.5),
        (3e4, 0.8),
        (7e4, 1.1),
    ]
    from astropy.table import QTable

    ecsv = QTable.read(out / "catalog.ecsv")
    assert str(ecsv["hlr"].unit) == "arcsec" and ecsv.meta["pixel_scale_arcsec"] == 0.26
    header = fits.getheader(out / "galaxy_000001.fits")
    assert header["PIXSCALE"] == pytest.approx(0.26)
    assert header["PSF"].startswith("moffat:fwhm=0.9")
    assert (header["CNAME1"], header["COND1"]) == ("flux", 3e4)
    # default noise: each galaxy keeps the S/N it has in the model's own observation
    _, _, snr = prepsf_galaxies(
        psf_bundle, 3, 3, conditions=np.array([[1e4, 0.5], [3e4, 0.8], [7e4, 1.1]], np.float32)
    )
    np.testing.assert_allclose([float(r["snr_r"]) for r in rows], snr[:, 1], rtol=1e-4)


def test_generate_psf_fixed_and_no_noise(psf_bundle, tmp_path):
    from astropy.io import fits

    args = [
        "generate",
        str(psf_bundle.path),
        "-n",
        "2",
        "--psf",
        "gaussian:fwhm=1.0",
        "--condition",
        "flux=20000",
        "--condition",
        "hlr=0.6",
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "a"), "--noise", "sigma=5"]) == 0
    assert [float(r["noise_sigma_g"]) for r in _rows(tmp_path / "a" / "catalog.csv")] == [5, 5]
    assert main([*args, "--out", str(tmp_path / "b"), "--noise-mode", "none"]) == 0
    rows = _rows(tmp_path / "b" / "catalog.csv")
    image = fits.getdata(tmp_path / "b" / "galaxy_000000.fits")
    assert float(rows[0]["noise_sigma_r"]) == 0
    assert float(image[1].sum()) == pytest.approx(float(rows[0]["meas_flux_r"]), rel=1e-4)
    assert main([*args, "--out", str(tmp_path / "c"), "--noise", "level=3"]) == 2
    assert (
        main([*args[:4], "--psf", "moffat:fwhm=zero", *args[6:], "--out", str(tmp_path / "d")]) == 2
    )
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_condition_sampler_draws_within_the_training_range(psf_bundle, tmp_path):
    from galforge.generation.observe import draw_conditions

    train = np.asarray(psf_bundle.spec["conditions"]["sample"])
    drawn = draw_conditions(psf_bundle, 300, seed=1)
    assert drawn.shape == (300, 2)
    assert (drawn >= train.min(axis=0)).all() and (drawn <= train.max(axis=0)).all()
    assert len(np.unique(drawn[:, 0])) > 20  # many catalogue rows, not one
    np.testing.assert_array_equal(draw_conditions(psf_bundle, 5, seed=1), drawn[:5])
    # sampling without conditions draws the same rows
    np.testing.assert_array_equal(
        psf_bundle.sample(2, seed=1, noise_mode="none"),
        psf_bundle.sample(2, seed=1, noise_mode="none", conditions=drawn[:2]),
    )
    # generate without conditions writes the drawn ones
    assert (
        main(
            [
                "generate",
                str(psf_bundle.path),
                "-n",
                "2",
                "--seed",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--psf",
                "gaussian:fwhm=1.0",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = _rows(tmp_path / "o" / "catalog.csv")
    np.testing.assert_allclose(
        [[float(r["flux"]), float(r["hlr"])] for r in rows], drawn[:2], rtol=1e-6
    )
    # so does plain generate (the observation through the training PSF), FITS cards too
    from astropy.io import fits

    assert (
        main(
            [
                "generate",
                str(psf_bundle.path),
                "-n",
                "2",
                "--seed",
                "1",
                "--out",
                str(tmp_path / "p"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = _rows(tmp_path / "p" / "catalog.csv")
    np.testing.assert_allclose(
        [[float(r["flux"]), float(r["hlr"])] for r in rows], drawn[:2], rtol=1e-6
    )
    assert fits.getheader(tmp_path / "p" / "galaxy_000001.fits")["COND2"] == pytest.approx(
        drawn[1, 1], rel=1e-6
    )


def test_psf_on_a_model_without_a_forward_model_is_one_line(tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["train", "builtin:galsim?n=16&size=64&bands=r", "--out", str(out), *TRAIN]) == 0
    capsys.readouterr()
    rc = main(
        [
            "generate",
            str(out),
            "--out",
            str(tmp_path / "g"),
            "--psf",
            "moffat:fwhm=0.9",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "prepsf" in err and "--psf" in err
    from galforge.errors import GalforgeError
    from galforge.galsim import sample_objects

    with pytest.raises(GalforgeError, match="prepsf"):
        sample_objects(out, 1)
