"""The latent tools of the style families: truncation in w, style mixing, interpolation,
arithmetic and the projection of real galaxies (galforge.projection)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from astropy.io import fits

from galforge import projection as LT
from galforge.bundle import save_bundle
from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError, ModelError
from galforge.generation import load_bundle
from galforge.models.dcgan import DCGANGenerator
from galforge.models.stylegan2 import StyleGAN2Generator

TINY = {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 128, "channel_max": 8}
BANDS = ("R", "G", "B")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_style_bundle(path, size=16, seed=0):
    """A tiny StyleGAN2 bundle with live noise inputs and a w_avg away from zero."""
    torch.manual_seed(seed)
    g = StyleGAN2Generator(size, 3, **TINY, init_seed=seed).eval()
    with torch.no_grad():
        for c in g.convs:
            c.noise_strength.fill_(0.3)
        g.mapping_net.w_avg.copy_(g.mapping(torch.randn(256, 8)).mean(0))
    rng = np.random.default_rng(seed)
    data = (rng.gamma(2.0, 5.0, (16, 3, size, size)) + 1.0).astype(np.float32)
    return save_bundle(
        path,
        family="stylegan2",
        spec=g.spec(),
        state_dict=g.state_dict(),
        normalizer=Normalizer.fit(data, target=(-1.0, 1.0)),
        bands=BANDS,
        units="counts",
        output_range=(-1.0, 1.0),
        config={},
        data_fingerprint="0" * 64,
    )


def make_dcgan_bundle(path):
    spec = {"latent_dim": 8, "channels": 3, "image_size": 64, "width": 4}
    g = DCGANGenerator(**spec)
    return save_bundle(
        path,
        family="dcgan",
        spec=spec,
        state_dict=g.state_dict(),
        normalizer=None,
        bands=BANDS,
        units="adu",
        output_range=(-1.0, 1.0),
        config={},
        data_fingerprint=None,
    )


@pytest.fixture
def style(tmp_path):
    return load_bundle(make_style_bundle(tmp_path / "sg2"))


def test_truncation_psi_zero_is_the_w_avg_image_and_one_is_untruncated(style):
    g = style.generator
    const = style.noise(3, seed=5, mode="const")
    avg = style.generate_from_w(g.mean_w()[None].repeat(3, 1), noise=const)
    zero = style.sample(3, seed=5, truncation=0.0, noise_mode="const")
    np.testing.assert_allclose(zero, avg, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        style.sample(3, seed=5, truncation=1.0), style.sample(3, seed=5), rtol=1e-5, atol=1e-4
    )
    # cutoff: only the first layers are pulled toward w_avg
    w = style.to_w(style.latent(2, seed=5))
    ws = style.truncate_w(w, 0.0, cutoff=3)
    assert torch.allclose(ws[:, :3], g.mean_w().expand(2, 3, -1))
    assert torch.equal(ws[:, 3:], w[:, None].expand(2, g.num_ws - 3, -1))
    cut = style.sample(2, seed=5, truncation=0.0, truncation_cutoff=3)
    assert not np.allclose(cut, style.sample(2, seed=5, truncation=0.0))
    assert not np.allclose(cut, style.sample(2, seed=5))


def test_mixing_grid_styles_come_from_the_right_seeds(style):
    grid = LT.style_mix(style, [1, 2, 3], [10, 11], "0-2")
    w = {s: style.to_w(style.latent(1, s))[0] for s in (1, 2, 3, 10, 11)}
    assert grid.images.shape == (3, 2, 3, 16, 16) and grid.styles == [0, 1, 2]
    for r, rs in enumerate([1, 2, 3]):
        for c, cs in enumerate([10, 11]):
            torch.testing.assert_close(grid.ws[r, c, :3], w[cs].expand(3, -1))
            torch.testing.assert_close(
                grid.ws[r, c, 3:], w[rs].expand(style.generator.num_ws - 3, -1)
            )
    # headers are the seeds' own samples; a cell differs from both of its sources
    np.testing.assert_allclose(grid.row_images[1], style.sample(1, seed=2)[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        grid.col_images[0], style.sample(1, seed=10)[0], rtol=1e-5, atol=1e-4
    )
    assert not np.allclose(grid.images[1, 0], grid.row_images[1])
    assert not np.allclose(grid.images[1, 0], grid.col_images[0])
    with pytest.raises(ConfigError, match="--styles"):
        LT.style_mix(style, [1], [2], "0-99")


@pytest.mark.parametrize("space", ["z", "w"])
def test_interpolation_end_frames_are_the_seeds_own_samples(style, space):
    path, frames = LT.interpolation(style, [42, 1234, 7], 9, space=space)
    assert frames.shape == (9, 3, 16, 16) and path.shape[0] == 9
    for k, s in ((0, 42), (4, 1234), (8, 7)):
        np.testing.assert_allclose(frames[k], style.sample(1, seed=s)[0], rtol=1e-5, atol=1e-4)
    assert not np.allclose(frames[1], frames[0]) and not np.allclose(frames[1], frames[4])
    if space == "w":  # lerp in w: the middle frame's w is the mean of its ends
        w = style.to_w(LT.seed_latents(style, [42, 1234]))
        torch.testing.assert_close(path[2], w.mean(0))
    with pytest.raises(ConfigError, match="two seeds"):
        LT.interpolation(style, [42], 5)


def test_seed_arithmetic_in_z_and_w(style):
    z = LT.seed_latents(style, [1, 2, 3])
    torch.testing.assert_close(
        LT.seed_arithmetic(style, [1, 3], [2], space="z"), z[0] - z[1] + z[2]
    )
    w = style.to_w(z)
    v = LT.seed_arithmetic(style, [1, 3], [2], space="w")
    torch.testing.assert_close(v, w[0] - w[1] + w[2])
    assert style.generate_from_w(v[None]).shape == (1, 3, 16, 16)


def test_projection_of_a_self_generated_sample_recovers_it(style):
    target = style.sample(1, seed=9, noise_mode="const")[0]
    start = style.generate_from_w(
        style.generator.mean_w()[None], noise=style.noise(1, mode="const")
    )[0]
    res = LT.project(style, target, steps=80, noise_mode="const", lr=0.1, progress=False)
    before = float(np.sqrt(np.mean((target - start) ** 2)))
    assert res.rmse < 0.25 * before, (res.rmse, before)
    assert res.w.shape == (8,) and np.isfinite(res.chi2_per_pixel)
    np.testing.assert_allclose(res.residual, target - res.reconstruction, atol=1e-4)
    again = LT.project(style, target, steps=80, noise_mode="const", lr=0.1, progress=False)
    np.testing.assert_array_equal(again.w, res.w)


def test_projection_of_a_real_galaxy_writes_every_output(style, tmp_path):
    res = LT.project(
        style, "builtin:hdf-stamps?size=16&n=2", steps=3, wplus=True, noise=True, progress=False
    )
    assert res.w.shape == (style.generator.num_ws, 8)
    paths = LT.write_projection(res, style, tmp_path / "p")
    names = {p.name for p in paths.values()}
    assert {
        "projected_w.npy",
        "reconstruction.fits",
        "residual.fits",
        "projection.json",
        "projected_noise.npz",
    } <= names
    info = json.loads((tmp_path / "p" / "projection.json").read_text())
    assert info["chi2_per_pixel"] > 0 and info["rmse"] > 0
    assert set(info["sigma_per_band"]) == set(BANDS)
    np.testing.assert_allclose(fits.getdata(tmp_path / "p" / "residual.fits"), res.residual)
    assert np.load(tmp_path / "p" / "projected_w.npy").shape == res.w.shape


def test_robust_sigma_reads_the_sky_not_the_galaxy():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 2.0, (2, 64, 64))
    img[:, 20:44, 20:44] += 500.0
    np.testing.assert_allclose(LT.robust_sigma(img), [2.0, 2.0], rtol=0.1)


def test_plain_latent_families_are_refused(tmp_path):
    plain = load_bundle(make_dcgan_bundle(tmp_path / "dc"))
    for call in (
        lambda: LT.style_mix(plain, [1], [2], "0"),
        lambda: LT.interpolation(plain, [1, 2], 3),
        lambda: LT.project(plain, np.zeros(plain.image_shape, np.float32), steps=1),
        lambda: plain.sample(1, truncation=0.5, truncation_cutoff=2),
        lambda: plain.sample(1, noise_mode="const"),
    ):
        with pytest.raises(ModelError, match="'(intermediate|noise)' capability"):
            call()
