"""Deep fields: seamless tiles, determinism, resume, file formats and the ``field`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_network_output_matches

from galforge.cli import main
from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError, ModelError
from galforge.generation.field import (
    FieldLatent,
    ensemble_index,
    generate_field,
    parse_size,
    read_field,
    render_one_shot,
)
from galforge.models.sgan import SGANGenerator

BANDS = ("g", "r", "i")


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    return SGANGenerator(3, (8, 8, 4, 4)).eval()


@pytest.fixture(scope="module")
def normalizer():
    rng = np.random.default_rng(0)
    phys = rng.gamma(2.0, 3.0, size=(1, 3, 64, 64)).astype(np.float32) * [[[2.0]], [[1.0]], [[0.5]]]
    return Normalizer.fit(phys.astype(np.float32), clip_percentile=99.99, target=(0.0, 1.0))


def make_field(gen, norm, out, size="200x150", bands=BANDS, **kw):
    """``generate_field`` without a progress bar or compilation (unless ``kw`` asks)."""
    kw.setdefault("progress", False)
    kw.setdefault("compile", False)
    return generate_field(gen, norm, bands, out, size, **kw)


def field(tmp_path, name, gen, norm, size="200x150", **kw):
    out = tmp_path / name
    make_field(gen, norm, out, size, units="nanomaggy", bundle_id="b123", **kw)
    return read_field(out)


def field_args(source, size, out, *options) -> list[str]:
    """``galforge field SOURCE --size SIZE --out OUT [options]`` as ``main`` takes it."""
    return ["field", str(source), "--size", size, "--out", str(out), *options]


def save_tiny_bundle(path, gen, normalizer, config=None):
    """``gen`` saved as an SGAN bundle in nanomaggies (g, r, i)."""
    from galforge.bundle import save_bundle

    save_bundle(
        path,
        family="sgan",
        spec=gen.spec(),
        state_dict=gen.state_dict(),
        normalizer=normalizer,
        bands=BANDS,
        units="nanomaggy",
        output_range=(0, 1),
        config=config or {},
        data_fingerprint="test",
    )
    return path


#: ``galforge train`` options of the smallest Spatial GAN on the built-in deep field
TINY_SGAN = [
    "builtin:hdf",
    "--model",
    "sgan",
    "--batch",
    "2",
    "--set",
    "model.widths=[4,4,4,4]",
    "--set",
    "model.d_widths=[4,4,4,4,4]",
]


def test_parse_size():
    assert parse_size("4096x2048") == (4096, 2048)
    assert parse_size("512") == (512, 512)
    for bad in ("abc", "0x64", "64x", "10x10", "-16x32", "1x2x3"):
        with pytest.raises(ConfigError, match="--size"):
            parse_size(bad)


def test_latent_windows_are_consistent():
    lat = FieldLatent(5, (150, 90), chunk=64)
    whole = lat.whole()[0]
    assert whole.shape == (50, 150, 90)
    assert torch.equal(lat.window(70, 10, 30, 60), whole[:, 70:100, 10:70])
    # outside the field the window is zero
    w = lat.window(-3, 85, 8, 10)
    assert torch.equal(w[:, 3:, :5], whole[:, :5, 85:90])
    assert float(w[:, :3].abs().sum()) == 0 and float(w[:, :, 5:].abs().sum()) == 0
    # the values do not depend on the size of the field
    bigger = FieldLatent(5, (400, 400), chunk=64).window(0, 0, 150, 90)
    assert torch.equal(bigger, whole)
    assert not torch.equal(FieldLatent(6, (150, 90)).whole()[0], whole)


@pytest.mark.parametrize("tile", [32, 48, 112, 1024])
def test_tiled_equals_one_shot(tmp_path, normalizer, tile):
    gen = tiny_generator()
    ref = render_one_shot(gen, normalizer, "200x150", seed=3)
    data, meta = field(tmp_path, f"f{tile}.zarr", gen, normalizer, tile=tile, seed=3)
    assert data.shape == ref.shape == (3, 200, 150)
    span = float(ref.max() - ref.min())
    assert span > 0
    assert np.abs(data - ref).max() <= 1e-5 * span
    assert meta["tile"] == min(tile, 208)


def test_worker_count_does_not_change_output(tmp_path, normalizer):
    gen = tiny_generator()
    one, _ = field(tmp_path, "w1.zarr", gen, normalizer, tile=32, seed=9)
    two, _ = field(tmp_path, "w2.zarr", gen, normalizer, tile=32, seed=9, workers=2)
    three, _ = field(tmp_path, "w3.npy", gen, normalizer, tile=32, seed=9, workers=3)
    assert np.array_equal(one, two) and np.array_equal(one, three)
    small, _ = field(tmp_path, "p1.npy", gen, normalizer, size="96x64", tile=32, seed=9)
    procs, _ = field(
        tmp_path,
        "p2.npy",
        gen,
        normalizer,
        size="96x64",
        tile=32,
        seed=9,
        workers=2,
        processes=True,
    )
    assert np.array_equal(small, procs)
    other, _ = field(tmp_path, "s.zarr", gen, normalizer, tile=32, seed=10)
    assert not np.array_equal(one, other)


class _StopAfter(SGANGenerator):
    """A generator that fails after a number of tiles, as a crash would."""

    def __init__(self, base: SGANGenerator, limit: int):
        super().__init__(base.channels, base.widths)
        self.load_state_dict(base.state_dict())
        self.limit, self.calls = limit, 0
        self.eval()

    def forward_window(self, z, plan, masks=None):
        self.calls += 1
        if self.calls > self.limit:
            raise RuntimeError("simulated crash")
        return super().forward_window(z, plan, masks)


@pytest.mark.parametrize("fmt", ["zarr", "fits", "npy"])
def test_resume_after_interruption(tmp_path, normalizer, fmt):
    gen = tiny_generator()
    ref, _ = field(tmp_path, f"ref.{fmt}", gen, normalizer, tile=32, seed=2)
    crashing = _StopAfter(gen, limit=11)
    out = tmp_path / f"part.{fmt}"
    labels = {"units": "nanomaggy", "bundle_id": "b123"}
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_field(crashing, normalizer, out, tile=32, seed=2, **labels)
    assert len(list((tmp_path / f"part.{fmt}.progress").glob("*.done"))) == 11
    with pytest.raises(ConfigError, match="--resume"):
        make_field(gen, normalizer, out, tile=32, seed=2)
    with pytest.raises(ConfigError, match="seed"):
        make_field(gen, normalizer, out, tile=32, seed=3, resume=True, bundle_id="b123")
    counting = _StopAfter(gen, limit=10**6)
    res = make_field(counting, normalizer, out, tile=32, seed=2, resume=True, **labels)
    assert res.tiles_total == 7 * 5 and res.tiles_done == 11
    assert counting.calls == 7 * 5 - 11
    data, _ = read_field(out)
    assert np.array_equal(data, ref)


def test_headers_and_units(tmp_path, normalizer):
    from astropy.io import fits

    gen = tiny_generator()
    out = tmp_path / "f.zarr"
    labels = {"tile": 32, "seed": 4, "units": "nanomaggy"}
    res = make_field(
        gen,
        normalizer,
        out,
        "96x64",
        bundle_id="abc",
        **labels,
        fits_out=tmp_path / "f.fits",
        preview=tmp_path / "f.png",
        preview_size=32,
    )
    import zarr

    arr = zarr.open_array(str(out), mode="r")
    assert arr.shape == (3, 96, 64) and arr.chunks == (3, 32, 32) and arr.dtype == np.float32
    attrs = dict(arr.attrs)
    assert attrs["bands"] == list(BANDS) and attrs["units"] == "nanomaggy"
    assert attrs["seed"] == 4 and attrs["bundle_id"] == "abc"
    with fits.open(res.fits_path) as hdul:
        hdr = hdul[0].header
        assert hdul[0].data.shape == (3, 96, 64)
        assert hdr["BUNIT"] == "nmgy" and hdr["GFUNIT"] == "nanomaggy"
        assert hdr["SEED"] == 4 and hdr["BUNDLE"] == "abc"
        assert hdr["BANDS"] == "g,r,i" and hdr["BAND2"] == "r"
        assert np.array_equal(np.asarray(hdul[0].data, np.float32), np.asarray(arr[...]))
    # fields come back in physical units: the normalizer's inverse of a (0, 1) output
    lo = normalizer.inverse(np.zeros((3, 1, 1), np.float32)).ravel()
    hi = normalizer.inverse(np.ones((3, 1, 1), np.float32)).ravel()
    data = np.asarray(arr[...])
    for c in range(3):
        assert lo[c] <= data[c].min() and data[c].max() <= hi[c]
    from PIL import Image

    assert Image.open(res.preview_path).size == (21, 32)
    # direct FITS output and npy sidecar
    direct = tmp_path / "d.fits"
    make_field(gen, normalizer, direct, "96x64", bundle_id="abc", **labels)
    d, meta = read_field(direct)
    assert np.array_equal(d, data) and meta["bands"] == list(BANDS)
    assert meta["units"] == "nanomaggy"
    make_field(gen, normalizer, tmp_path / "n.npy", "96x64", **labels)
    side = json.loads((tmp_path / "n.npy.json").read_text())
    assert side["units"] == "nanomaggy" and side["bands"] == list(BANDS)


def test_ensemble_pattern_and_tiles(tmp_path):
    # neighbours (edges and corners) never share a generator for K >= 4; all used equally
    k = 5
    grid = np.array([[ensemble_index(ty, tx, k) for tx in range(10)] for ty in range(10)])
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = grid[max(0, -dy) : 10 - max(0, dy), max(0, -dx) : 10 - max(0, dx)]
        b = grid[max(0, dy) :, max(0, dx) :][: a.shape[0], : a.shape[1]]
        assert not np.any(a == b)
    assert np.all(np.bincount(grid.ravel(), minlength=k) == 20)
    g0, g1 = tiny_generator(0), tiny_generator(1)
    mix, meta = field(tmp_path, "e.zarr", [g0, g1], None, size="64x64", tile=32, seed=0)
    a, _ = field(tmp_path, "a.zarr", g0, None, size="64x64", tile=32, seed=0)
    b, _ = field(tmp_path, "b.zarr", g1, None, size="64x64", tile=32, seed=0)
    for ty in range(2):
        for tx in range(2):
            src = (a, b)[ensemble_index(ty, tx, 2)]
            sl = np.s_[:, ty * 32 : (ty + 1) * 32, tx * 32 : (tx + 1) * 32]
            assert np.array_equal(mix[sl], src[sl])
    assert meta["ensemble"] == 2


def test_bad_inputs(tmp_path):
    gen = tiny_generator()
    with pytest.raises(ConfigError, match="--tile"):
        generate_field(gen, None, BANDS, tmp_path / "x.zarr", "64x64", tile=40, progress=False)
    with pytest.raises(ConfigError, match="--format"):
        generate_field(gen, None, BANDS, tmp_path / "x.zarr", "64x64", fmt="tiff", progress=False)
    with pytest.raises(ModelError, match="band"):
        generate_field(gen, None, ("g",), tmp_path / "x.zarr", "64x64", progress=False)
    with pytest.raises(ModelError, match="windowed"):
        generate_field(torch.nn.Linear(2, 2), None, BANDS, tmp_path / "x.zarr", "64x64")


# --------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, normalizer):
    gen = tiny_generator()
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b", gen, normalizer), gen


def test_cli_field(tmp_path, tiny_bundle, normalizer):
    path, gen = tiny_bundle
    out = tmp_path / "cli.fits"
    seeded = ["--tile", "32", "--seed", "5", "--no-progress"]
    assert main(field_args(path, "80x96", out, *seeded, "--compile", "off")) == 0
    data, meta = read_field(out)
    assert data.shape == (3, 80, 96) and meta["units"] == "nanomaggy" and meta["seed"] == 5
    assert np.abs(data - render_one_shot(gen, normalizer, "80x96", seed=5)).max() < 1e-3
    assert main(field_args(path, "80x96", out, "--resume", *seeded)) == 0
    for bad in ("80by96", "0x32", "8x8"):
        assert main(field_args(path, bad, tmp_path / "x.zarr")) == 2
    # a bundle has no snapshots
    assert main(field_args(path, "64x64", tmp_path / "y.zarr", "--ensemble", "3")) == 2


def test_train_sgan_then_ensemble_field(tmp_path):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            *TINY_SGAN,
            "--out",
            str(run),
            "--steps",
            "2",
            "--set",
            "model.crop_sizes=[64]",
            "--set",
            "train.snapshot_every=1",
            "--set",
            "train.sample_every=2",
            "--set",
            "train.n_samples=2",
            "--set",
            "train.progress=false",
        ]
    )
    assert rc == 0
    assert (run / "checkpoints" / "step-00000001").is_dir()
    out = tmp_path / "ens.zarr"
    assert (
        main(field_args(run, "64x64", out, "--tile", "32", "--ensemble", "2", "--no-progress")) == 0
    )
    data, meta = read_field(out)
    assert meta["snapshots"] == ["step-00000001", "step-00000002"]
    assert meta["bands"] == ["R", "G", "B"] and np.isfinite(data).all()
    realisations = ["--realisations", "2", "--no-progress"]
    assert main(field_args(run, "64x64", tmp_path / "r.npy", *realisations)) == 0
    assert (tmp_path / "r_r00.npy").exists() and (tmp_path / "r_r01.npy").exists()


def test_v01_sgan_field_is_unchanged(tmp_path, one_thread):
    """A field of the 0.1 fixture bundle is the one galforge 0.1 made: bit for bit on the fixture's
    machine (GALFORGE_STRICT_FIXTURES=1), to float tolerance on other CPUs."""
    from pathlib import Path

    from galforge.generation import load_bundle

    fixtures = Path(__file__).parent / "fixtures"
    with np.load(fixtures / "expected_v01.npz") as data:
        tiled, one_shot = (
            data["sgan_field_seed5_80x96_tile32"],
            data["sgan_field_oneshot_seed5_80x96"],
        )
    b = load_bundle(fixtures / "sgan_v01")
    out = tmp_path / "f.npy"
    generate_field(
        b.generator, b.normalizer, b.bands, out, "80x96", tile=32, seed=5, progress=False
    )
    # Other CPU kernels order float sums differently (seen: 4e-7 relative on AVX-512); another
    # latent, tile offset or weight moves pixels by percents. Values span 0.2..104 units, so
    # 1e-4 relative plus 1e-2 units (1e-4 of the peak) tells the two apart.
    tol = {"rtol": 1e-4, "atol": 1e-2}
    assert_network_output_matches(np.load(out), tiled, **tol)
    assert_network_output_matches(
        render_one_shot(b.generator, b.normalizer, "80x96", 5), one_shot, **tol
    )


def test_cli_field_checks_extension_and_disk_space(tmp_path, tiny_bundle, monkeypatch, capsys):
    from collections import namedtuple

    from galforge.generation import fieldio

    path, _ = tiny_bundle
    base = ["field", str(path), "--tile", "32", "--no-progress", "--compile", "off"]
    for out, extra in (("f.png", []), ("f.zarr", ["--format", "fits"]), ("f.fits.fz", [])):
        assert main([*base, "--size", "64x64", "--out", str(tmp_path / out), *extra]) == 2
        err = capsys.readouterr().err
        assert "extension" in err and out in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / out).exists()
    preview = ["--preview", str(tmp_path / "p.jpg")]
    assert main([*base, "--size", "64x64", "--out", str(tmp_path / "f.zarr"), *preview]) == 2
    assert ".png" in capsys.readouterr().err
    # 2e6 x 2e6 pixels in 3 bands: about 48 TB, more than any test disk
    assert main([*base, "--size", "2000000x2000000", "--out", str(tmp_path / "big.fits")]) == 2
    err = capsys.readouterr().err
    assert "48.0 TB" in err and "--no-space-check" in err and not (tmp_path / "big.fits").exists()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fieldio.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    assert main([*base, "--size", "64x64", "--out", str(tmp_path / "small.npy")]) == 2
    assert "1.0 kB free" in capsys.readouterr().err
    assert (
        main([*base, "--size", "64x64", "--out", str(tmp_path / "small.npy"), "--no-space-check"])
        == 0
    )


def test_progress_records_go_after_success(tmp_path, tiny_bundle, capsys):
    path, _ = tiny_bundle
    out = tmp_path / "f.zarr"
    args = field_args(path, "64x96", out, "--tile", "32", "--no-progress", "--compile", "off")
    assert main(args) == 0
    assert not (tmp_path / "f.zarr.progress").exists()
    capsys.readouterr()
    # a finished field is recognised by the settings recorded in it
    assert main([*args, "--resume"]) == 0
    assert "(6 already done)" in capsys.readouterr().out
    assert main([*args, "--resume", "--seed", "4"]) == 2
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [None, 0.2])
def test_field_fits_says_what_it_is(tmp_path, normalizer, scale):
    from astropy.io import fits
    from astropy.wcs import WCS

    from galforge import __version__

    config = {"data": {"pixel_scale": scale}}
    path = save_tiny_bundle(tmp_path / "b", tiny_generator(), normalizer, config)
    out = tmp_path / "f.fits"
    options = ["--tile", "32", "--no-progress", "--compile", "off"]
    assert main(field_args(path, "64x64", out, *options)) == 0
    with fits.open(out) as hdul:
        h = hdul[0].header
    comments = " ".join(str(c) for c in h["COMMENT"])
    assert h["CREATOR"] == f"galforge {__version__}" and "SYNTHETIC IMAGE" in comments
    if scale is None:
        assert "No WCS" in comments and "CDELT1" not in h
    else:
        assert h["CDELT2"] == pytest.approx(scale / 3600) and h["PIXSCALE"] == scale
        w = WCS(h).celestial
        assert w.proj_plane_pixel_scales()[0].to("arcsec").value == pytest.approx(scale)


def test_sky_noise_fields_are_seamless_and_carry_the_learned_noise(tmp_path, normalizer):
    """A Spatial GAN with sky noise: the field rendered in tiles equals the one rendered
    whole (the noise is a position-seeded field of its own), the noise has the learned σ in
    physical units, and the spec rebuilds the generator."""
    from galforge.models import build_generator

    torch.manual_seed(0)
    gen = SGANGenerator(3, (8, 8, 4, 4), sky_noise=normalizer.to_dict()).eval()
    with torch.no_grad():
        gen.sky.log_level.copy_(torch.tensor([0.0, 0.5, 1.0]))
    ref = render_one_shot(gen, normalizer, "200x150", seed=3)
    data, _ = field(tmp_path, "sky.zarr", gen, normalizer, tile=48, seed=3)
    span = float(ref.max() - ref.min())
    assert np.abs(data - ref).max() <= 1e-5 * span
    clean = render_one_shot(_without_sky(gen), normalizer, "200x150", seed=3)
    resid = (ref - clean)[:, 20:-20, 20:-20]
    inside = (ref > normalizer.lo[:, None, None] + 1e-3)[:, 20:-20, 20:-20] & (
        ref < normalizer.hi[:, None, None] - 1e-3
    )[:, 20:-20, 20:-20]
    # the caller's generator is untouched by the field jobs: still usable with autograd
    sigma = gen.sky.sigma()
    sigma.sum().backward()
    assert gen.sky.log_level.grad is not None
    sigma = sigma.detach().numpy()
    for c in range(3):
        assert np.std(resid[c][inside[c]]) == pytest.approx(sigma[c], rel=0.15)
    again = build_generator("sgan", gen.spec())
    again.load_state_dict(gen.state_dict())
    assert np.allclose(
        render_one_shot(again.eval(), normalizer, "64x64", seed=1),
        render_one_shot(gen, normalizer, "64x64", seed=1),
        rtol=1e-5,
        atol=1e-4,
    )


def _without_sky(gen):
    plain = SGANGenerator(3, (8, 8, 4, 4)).eval()
    plain.load_state_dict({k: v for k, v in gen.state_dict().items() if not k.startswith("sky.")})
    return plain


def test_train_sgan_with_sky_noise_then_field(tmp_path):
    """``model.sky_noise=true`` trains, resumes exactly and renders a field whose noise is
    the learned one (the noiseless field plus position-seeded noise)."""
    run = tmp_path / "run"
    args = [
        "train",
        *TINY_SGAN,
        "--out",
        str(run),
        "--set",
        "model.crop_sizes=[32]",
        "--set",
        "model.sky_noise=true",
        "--set",
        "train.progress=false",
        "--set",
        "train.sample_every=100",
        "--set",
        "train.threads=1",
    ]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3", "--resume"]) == 0
    straight = tmp_path / "straight"
    at = args.index("--out") + 1
    assert main([*args[:at], str(straight), *args[at + 1 :], "--steps", "3"]) == 0
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoints" / "latest" / "state.safetensors"))
    b = load_file(str(straight / "checkpoints" / "latest" / "state.safetensors"))
    assert any(k.startswith("module.G.sky.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "f.npy"
    assert main(field_args(run, "64x48", out, "--no-progress")) == 0
    assert np.isfinite(np.load(out)).all()


def test_zarr_format_2_field_equals_format_3_and_names_its_axes(tmp_path, normalizer):
    """``zarr_format=2`` (older clients) holds the same pixels as the default zarr v3 field,
    with the axis names where xarray reads them; another version is refused by the CLI."""
    import zarr

    gen = tiny_generator(1)
    v3, _ = field(tmp_path, "v3.zarr", gen, normalizer, size="64x48", tile=32, seed=4)
    v2, _ = field(
        tmp_path, "v2.zarr", gen, normalizer, size="64x48", tile=32, seed=4, zarr_format=2
    )
    np.testing.assert_array_equal(v2, v3)
    arr = zarr.open_array(str(tmp_path / "v2.zarr"), mode="r")
    assert arr.metadata.zarr_format == 2
    assert arr.attrs["_ARRAY_DIMENSIONS"] == ["band", "y", "x"]
    assert (tmp_path / "v2.zarr" / ".zarray").exists()
    with pytest.raises(ConfigError, match="--zarr-format 4"):
        field(tmp_path, "v4.zarr", gen, normalizer, size="64x48", tile=32, zarr_format=4)
    assert not (tmp_path / "v4.zarr").exists()
