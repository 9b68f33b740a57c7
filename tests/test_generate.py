"""``galforge generate``: reproducible FITS/PNG/npy output; sampling and latent helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import galforge
from galforge.bundle import save_bundle
from galforge.cli import main
from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError
from galforge.generation import latent as L
from galforge.generation import load_bundle
from galforge.generation.sampling import iter_samples, sample
from galforge.models.registry import register_generator
from galforge.outputs import MANIFEST

FAMILY = "tiny_generate_test"
BANDS = ("g", "r", "i")
SPEC = {"channels": 3, "latent_dim": 6, "size": 8}


class TinyConvGenerator(nn.Module):
    """Latent -> 4×4 map -> transposed conv to 8×8, tanh head."""

    def __init__(self, channels=3, latent_dim=6, size=8):
        super().__init__()
        self.latent_dim, self.size = latent_dim, size
        self.fc = nn.Linear(latent_dim, 4 * 4 * 4)
        self.up = nn.ConvTranspose2d(4, channels, 4, 2, 1)

    CAPABILITIES = frozenset({"latent"})

    def latent_shape(self, n):
        return (n, self.latent_dim, 1, 1)

    def forward(self, z):
        h = torch.relu(self.fc(z.flatten(1))).view(-1, 4, 4, 4)
        return torch.tanh(self.up(h))


@register_generator(FAMILY)
def _build(spec):
    return TinyConvGenerator(**spec)


def _data():
    rng = np.random.default_rng(3)
    return (rng.gamma(2.0, 5.0, (16, 3, 8, 8)) + 1.0).astype(np.float32)


@pytest.fixture
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    gen = TinyConvGenerator(**SPEC)
    return save_bundle(
        tmp_path / "bundle",
        family=FAMILY,
        spec=SPEC,
        state_dict=gen.state_dict(),
        normalizer=Normalizer.fit(_data(), target=(-1.0, 1.0)),
        bands=BANDS,
        units="counts",
        output_range=(-1.0, 1.0),
        config={},
        data_fingerprint="0" * 64,
    )


def generate_args(source, n, out, *options) -> list[str]:
    """``galforge generate SOURCE -n N --out OUT [options]`` as ``main`` takes it."""
    return ["generate", str(source), "-n", str(n), "--out", str(out), *options]


def _generate(src, out, *extra):
    return main(generate_args(src, 5, out, "--no-progress", "--seed", "3", *extra))


def test_generate_fits_is_reproducible_byte_for_byte(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # DATE: 2026-01-01T00:00:00
    assert _generate(bundle_dir, tmp_path / "a") == 0
    assert _generate(bundle_dir, tmp_path / "b") == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != MANIFEST)
    assert names == [f"galaxy_00000{i}.fits" for i in range(5)] + ["grid.png"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert _generate(bundle_dir, tmp_path / "c", "--seed", "4") == 0
    assert (tmp_path / "c" / names[0]).read_bytes() != (tmp_path / "a" / names[0]).read_bytes()


def test_fits_headers_and_physical_pixels(bundle_dir, tmp_path):
    assert _generate(bundle_dir, tmp_path / "o") == 0
    g = load_bundle(bundle_dir)
    expected = g.sample(5, seed=3)
    for i in range(5):
        with fits.open(tmp_path / "o" / f"galaxy_00000{i}.fits") as hdul:
            h, data = hdul[0].header, hdul[0].data
            assert data.shape == (3, 8, 8) and h["BITPIX"] == -32
            assert h["BANDS"] == "g,r,i" and h["BAND3"] == "i" and h["BUNIT"] == "count"
            assert h["GFUNIT"] == "counts"
            assert h["SEED"] == 3 and h["INDEX"] == i and h["BUNDLEID"] == g.bundle_id
            assert h["GFVERSION"] == galforge.__version__ and h["MODEL"] == FAMILY
            np.testing.assert_allclose(data, expected[i], rtol=1e-6)
    assert expected.min() >= _data().min() - 1e-3 and expected.max() > 1.5  # not model space


def test_batch_size_does_not_change_the_galaxies(bundle_dir, tmp_path):
    assert _generate(bundle_dir, tmp_path / "a", "--batch", "2") == 0
    assert _generate(bundle_dir, tmp_path / "b", "--batch", "64") == 0
    for i in range(5):
        a = fits.getdata(tmp_path / "a" / f"galaxy_00000{i}.fits")
        b = fits.getdata(tmp_path / "b" / f"galaxy_00000{i}.fits")
        np.testing.assert_allclose(a, b, rtol=1e-5)


def test_png_and_npy_formats(bundle_dir, tmp_path):
    assert _generate(bundle_dir, tmp_path / "p", "--format", "png") == 0
    pngs = sorted((tmp_path / "p").glob("galaxy_*.png"))
    assert len(pngs) == 5 and (tmp_path / "p" / "grid.png").is_file()
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGB" and im.size == (8, 8)

    assert _generate(bundle_dir, tmp_path / "n", "--format", "npy") == 0
    arr = np.load(tmp_path / "n" / "samples.npy", allow_pickle=False)
    index = json.loads((tmp_path / "n" / "samples.json").read_text())
    assert arr.shape == (5, 3, 8, 8) and arr.dtype == np.float32
    assert (
        index["indices"] == list(range(5)) and index["seed"] == 3 and index["bands"] == list(BANDS)
    )
    np.testing.assert_allclose(arr, load_bundle(bundle_dir).sample(5, seed=3), rtol=1e-6)


def test_truncation_option(bundle_dir, tmp_path):
    assert _generate(bundle_dir, tmp_path / "t", "--format", "npy", "--truncation", "0") == 0
    arr = np.load(tmp_path / "t" / "samples.npy")
    assert np.allclose(arr, arr[0][None])


def test_generate_from_run_folder(bundle_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    # a run folder as galforge 0.1 wrote it (run.json with "spec")
    info = {k: meta[k] for k in ("family", "bands", "units", "normalizer", "output_range")}
    info["spec"] = meta["parts"]["generator"]["spec"]
    (run / "run.json").write_text(json.dumps(info | {"step": 1, "epoch": 0}))
    torch.manual_seed(0)
    save_file(TinyConvGenerator(**SPEC).state_dict(), str(run / "generator.safetensors"))
    assert _generate(run, tmp_path / "o") == 0
    assert not (run / "bundle").exists()  # sampling a run folder writes nothing into it
    np.testing.assert_allclose(
        fits.getdata(tmp_path / "o" / "galaxy_000000.fits"),
        load_bundle(bundle_dir).sample(1, seed=3)[0],
        rtol=1e-5,
    )


def test_bad_options_exit_2(bundle_dir, tmp_path, capsys):
    assert _generate(bundle_dir, tmp_path / "x", "--format", "jpeg") == 2
    assert "--format" in capsys.readouterr().err
    assert main(["generate", str(bundle_dir), "-n", "0", "--out", str(tmp_path / "y")]) == 2
    assert "-n" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert _generate(bundle_dir, tmp_path / "afile") == 2
    assert "--out" in capsys.readouterr().err


def test_iter_samples_streams_chunks(bundle_dir):
    g = load_bundle(bundle_dir)
    chunks = list(iter_samples(g, 7, seed=1, batch=3, progress=False))
    assert [first for first, _ in chunks] == [0, 3, 6]
    assert [len(images) for _, images in chunks] == [3, 3, 1]
    np.testing.assert_allclose(
        np.concatenate([c for _, c in chunks]), g.sample(7, seed=1), rtol=1e-5
    )
    np.testing.assert_allclose(
        sample(g, 7, seed=1, batch=2, progress=False), g.sample(7, seed=1), rtol=1e-5
    )
    with pytest.raises(ConfigError, match="--batch"):
        list(iter_samples(g, 3, batch=0))


def test_latent_helpers():
    z = L.gaussian_latents((6,), 4, seed=2)
    assert z.shape == (4, 6) and z.dtype == torch.float32
    assert torch.equal(z[1:], L.gaussian_latents((6,), 3, seed=2, start=1))
    assert not torch.equal(z, L.gaussian_latents((6,), 4, seed=3))
    # truncation toward the mean
    assert torch.allclose(L.truncate(z, 0.5), z * 0.5)
    mean = torch.ones(6)
    assert torch.allclose(L.truncate(z, 0.0, mean), mean.expand(4, 6))
    with pytest.raises(ConfigError):
        L.truncate(z, -1)
    t = L.truncated_gaussian_latents((6,), 50, seed=0, threshold=0.5)
    assert t.abs().max() <= 0.5
    assert torch.equal(
        t[10:], L.truncated_gaussian_latents((6,), 40, seed=0, threshold=0.5, start=10)
    )
    # interpolation: endpoints exact, slerp keeps the norm between equal-norm latents
    a, b = z[0], z[1] * (z[0].norm() / z[1].norm())
    path = L.interpolate(a, b, 5)
    assert path.shape == (5, 6)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(5), rtol=1e-4)
    lin = L.interpolate(a, b, 5, method="lerp")
    assert torch.allclose(lin[2], (a + b) / 2) and lin[2].norm() < a.norm()
    assert torch.allclose(L.slerp(a, b, 0.0), a, atol=1e-5)
    # arithmetic
    mask = np.array([True, True, False, False])
    assert torch.allclose(L.group_mean(z, mask), z[:2].mean(0))
    assert torch.allclose(L.group_mean(z, [2, 3]), z[2:].mean(0))
    d = L.attribute_direction(z, mask, ~mask)
    assert torch.allclose(L.add_direction(z[2:].mean(0), d), z[:2].mean(0), atol=1e-6)
    assert torch.allclose(L.arithmetic([z[0], z[2]], [z[1]]), z[0] - z[1] + z[2])
    with pytest.raises(ConfigError):
        L.group_mean(z, np.zeros(4, bool))


# --------------------------------------------------------------------------- capabilities


class CondGenerator(nn.Module):
    """Images whose brightness follows a continuous condition (capability 'conditional')."""

    CAPABILITIES = frozenset({"latent", "conditional"})
    condition_names = ("flux",)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3 * 4 * 4)

    def latent_shape(self, n):
        return (n, 4)

    def forward(self, z, conditions):
        base = 0.1 * torch.tanh(self.fc(z)).view(-1, 3, 4, 4)
        return (base + conditions[:, :1, None, None]).clamp(-1, 1)


class StyleGenerator(nn.Module):
    """A mapping to w and a synthesis from w (capability 'intermediate')."""

    CAPABILITIES = frozenset({"latent", "intermediate"})
    num_ws = 1

    def __init__(self):
        super().__init__()
        self.map = nn.Linear(4, 4)
        self.syn = nn.Linear(4, 3 * 4 * 4)
        self.register_buffer("w_avg", torch.full((4,), 0.5))

    def latent_shape(self, n):
        return (n, 4)

    def mapping(self, z):
        return self.map(z)

    def mean_w(self):
        return self.w_avg

    def synthesis(self, w):
        w = w[:, 0] if w.dim() == 3 else w
        return torch.tanh(self.syn(w)).view(-1, 3, 4, 4)

    def forward(self, z):
        return self.synthesis(self.mapping(z))


register_generator("tiny_cond")(lambda spec: CondGenerator())
register_generator("tiny_style")(lambda spec: StyleGenerator())


def save_adu_bundle(path, family, gen, spec=None):
    """``gen`` saved as a bundle of ``family`` in model space (no normaliser, units adu)."""
    return save_bundle(
        path,
        family=family,
        spec=spec if spec is not None else {},
        state_dict=gen.state_dict(),
        normalizer=None,
        bands=BANDS,
        units="adu",
        output_range=(-1.0, 1.0),
        config={},
        data_fingerprint=None,
    )


def cond_bundle(tmp_path):
    """A bundle of the conditional test generator (one condition, ``flux``)."""
    torch.manual_seed(0)
    return save_adu_bundle(tmp_path / "cond", "tiny_cond", CondGenerator())


def _cap_bundle(tmp_path, family, gen):
    return load_bundle(save_adu_bundle(tmp_path / family, family, gen))


def _plain_bundle(path):
    return load_bundle(save_adu_bundle(path, FAMILY, TinyConvGenerator(**SPEC), SPEC))


def test_conditional_generators_take_conditions(tmp_path):
    torch.manual_seed(0)
    b = _cap_bundle(tmp_path, "tiny_cond", CondGenerator())
    assert b.capabilities == {"latent", "conditional"}
    dim = b.sample(2, seed=0, conditions=[[-0.5], [-0.5]])
    bright = b.sample(2, seed=0, conditions=[[0.5], [0.5]])
    assert bright.mean() > dim.mean() + 0.8
    with pytest.raises(ConfigError, match="conditions"):
        b.sample(2, seed=0)
    plain = _plain_bundle(tmp_path / "plain")
    with pytest.raises(galforge.errors.ModelError, match="conditional"):
        plain.sample(1, seed=0, conditions=[[0.0]])


def test_truncation_of_an_intermediate_latent_space_happens_in_w(tmp_path):
    torch.manual_seed(0)
    gen = StyleGenerator()
    b = _cap_bundle(tmp_path, "tiny_style", gen)
    z = b.latent(3, seed=1, truncation=0.5)
    assert torch.equal(z, b.latent(3, seed=1))  # z itself is not pulled
    with torch.no_grad():
        w = gen.mapping(z)
        expected = gen.synthesis(gen.w_avg + 0.5 * (w - gen.w_avg)).numpy()
    np.testing.assert_allclose(b.sample(3, seed=1, truncation=0.5), expected, rtol=1e-6)
    mean_image = b.sample(2, seed=1, truncation=0.0)
    np.testing.assert_allclose(mean_image[0], mean_image[1], rtol=1e-6)


def test_generate_cli_passes_conditions_and_records_them(tmp_path, capsys):
    path = cond_bundle(tmp_path)
    out = tmp_path / "o"
    assert main(generate_args(path, "2", out, "--condition", "flux=0.25", "--no-progress")) == 0
    header = fits.getheader(out / "galaxy_000000.fits")
    assert header["CNAME1"] == "flux" and header["COND1"] == 0.25
    expected = load_bundle(path).sample(2, seed=0, conditions={"flux": 0.25})
    np.testing.assert_array_equal(fits.getdata(out / "galaxy_000001.fits"), expected[1])
    assert main(generate_args(path, "1", tmp_path / "x", "--condition", "size=1")) == 2
    assert "flux" in capsys.readouterr().err
    assert (
        main(
            ["generate", str(path), "-n", "1", "--out", str(tmp_path / "y"), "--condition", "flux"]
        )
        == 2
    )


def test_w_space_tools_for_intermediate_generators(tmp_path):
    torch.manual_seed(0)
    gen = StyleGenerator()
    b = _cap_bundle(tmp_path, "tiny_style", gen)
    z = b.latent(2, seed=4)
    w = b.to_w(z)
    np.testing.assert_allclose(b.generate_from_w(w), b.generate_from_latent(z), rtol=1e-6)
    path = L.interpolate(w[0], w[1], steps=5, method="lerp")
    frames = b.generate_from_w(path)
    assert frames.shape == (5, 3, 4, 4)
    np.testing.assert_allclose(frames[-1], b.generate_from_latent(z)[1], rtol=1e-5)
    plain = _plain_bundle(tmp_path / "plain2")
    with pytest.raises(galforge.errors.ModelError, match="intermediate"):
        plain.to_w(plain.latent(1))


def test_used_out_folder_is_refused_unless_overwrite(bundle_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert _generate(bundle_dir, out) == 0
    capsys.readouterr()
    assert _generate(bundle_dir, out, "--seed", "9") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert (
        main(
            [
                "generate",
                str(bundle_dir),
                "-n",
                "2",
                "--seed",
                "9",
                "--out",
                str(out),
                "--no-progress",
                "--overwrite",
                "--format",
                "npy",
            ]
        )
        == 0
    )
    # the earlier run's galaxies are gone: the folder holds one run only
    assert sorted(p.name for p in out.iterdir() if p.name != MANIFEST) == [
        "grid.png",
        "samples.json",
        "samples.npy",
    ]
    (out / "notes.txt").write_text("mine")
    assert _generate(bundle_dir, out, "--overwrite") == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").is_file()


def test_generated_files_are_readable_by_others(bundle_dir, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert _generate(bundle_dir, tmp_path / "o", "--format", "npy") == 0
    finally:
        os.umask(old)
    for p in (tmp_path / "o").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name


def test_generated_folder_reads_back_as_data_without_the_grid(bundle_dir, tmp_path, capsys):
    from galforge.data import load_images

    out = tmp_path / "o"
    for fmt in ("fits", "png"):
        assert _generate(bundle_dir, out, "--format", fmt, "--overwrite") == 0
        s = load_images(out)
        assert len(s) == 5
        skipped = {sk["path"].rsplit("/", 1)[-1]: sk["reason"] for sk in s.report.skipped}
        assert "grid.png" in skipped and "preview" in skipped["grid.png"]
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 5


def _noisy_style_bundle(tmp_path):
    from galforge.models.stylegan2 import StyleGAN2Generator

    g = StyleGAN2Generator(
        16, 3, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=8
    ).eval()
    with torch.no_grad():
        for c in g.convs:
            c.noise_strength.fill_(0.5)
    return save_adu_bundle(tmp_path / "sg2", "stylegan2", g, g.spec()), g


def test_style_samples_get_their_own_noise_from_their_seed(tmp_path):
    path, g = _noisy_style_bundle(tmp_path)
    b = load_bundle(path)
    assert "noise" in b.capabilities
    n1, n2 = b.noise(2, seed=3), b.noise(1, seed=3, start=1)
    assert not torch.equal(n1[-1][0], n1[-1][1])  # no shared realisation
    assert all(torch.equal(a[1], c[0]) for a, c in zip(n1, n2, strict=True))
    # the noise a sample sees is its own: the same w with the const maps differs from it
    z = b.latent(2, seed=3)
    with torch.no_grad():
        w = g.mapping(z)
        own = g.synthesis(w, [m for m in n1]).clamp(-1, 1).numpy()
        shared = g(z).clamp(-1, 1).numpy()  # eval: the stored maps
    np.testing.assert_allclose(b.sample(2, seed=3), own, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        b.sample(2, seed=3, noise_mode="const"), shared, rtol=1e-5, atol=1e-5
    )
    zero = [torch.zeros(1, 1, *s) for s in g.noise_shapes()]
    with torch.no_grad():
        quiet = g.synthesis(w, zero).clamp(-1, 1).numpy()
    np.testing.assert_allclose(b.sample(2, seed=3, noise_mode="none"), quiet, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        b.sample(4, seed=3, batch=4), b.sample(4, seed=3, batch=3), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ConfigError, match="--noise-mode"):
        b.sample(1, noise_mode="fresh")


def test_generate_noise_mode_is_reproducible_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    path, _ = _noisy_style_bundle(tmp_path)
    outs = {}
    for name, extra in (("a", []), ("b", []), ("c", ["--noise-mode", "const"])):
        outs[name] = tmp_path / name
        assert (
            main(
                [
                    "generate",
                    str(path),
                    "-n",
                    "2",
                    "--seed",
                    "4",
                    "--out",
                    str(outs[name]),
                    "--no-progress",
                    *extra,
                ]
            )
            == 0
        )
    a = (outs["a"] / "galaxy_000000.fits").read_bytes()
    assert a == (outs["b"] / "galaxy_000000.fits").read_bytes()
    assert fits.getheader(outs["a"] / "galaxy_000000.fits")["NOISEMOD"] == "random"
    assert fits.getheader(outs["c"] / "galaxy_000001.fits")["NOISEMOD"] == "const"
    assert (
        main(
            generate_args(
                path,
                "2",
                tmp_path / "t",
                "--truncation",
                "0.5",
                "--truncation-cutoff",
                "3",
                "--no-progress",
            )
        )
        == 0
    )
    assert fits.getheader(tmp_path / "t" / "galaxy_000000.fits")["TRUNCCUT"] == 3
    assert main(generate_args(path, "1", tmp_path / "u", "--truncation-cutoff", "3")) == 2
