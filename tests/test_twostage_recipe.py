"""The two-stage recipe: training on builtin:sparse, exact resume, generation, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from astropy.io import fits
from safetensors.torch import load_file

from galforge.cli import main
from galforge.data.builtin import from_spec
from galforge.data.sparse import analyse
from galforge.generation.sampling import load_bundle

DATA = "builtin:sparse?n=4&size=128&count=4&seed=0&stamp=24"
COMMON = [
    "--model",
    "twostage",
    "--batch",
    "2",
    "--seed",
    "3",
    "--set",
    "model.config=small",
    "--set",
    "model.patch_batch=4",
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
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("twostage") / "run"
    torch.set_num_threads(1)
    assert main(["train", DATA, "--out", str(out), "--steps", "4", *COMMON]) == 0
    return out


def test_resume_is_exact_and_keeps_k(run, tmp_path):
    b = tmp_path / "b"
    assert main(["train", DATA, "--out", str(b), "--steps", "3", *COMMON]) == 0
    assert main(["train", DATA, "--out", str(b), "--steps", "4", "--resume", *COMMON]) == 0
    for part in ("positions.safetensors", "galaxies.safetensors"):
        assert (run / part).read_bytes() == (b / part).read_bytes()
    sa = load_file(str(run / "checkpoints/latest/state.safetensors"))
    sb = load_file(str(b / "checkpoints/latest/state.safetensors"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ka = json.loads((run / "checkpoints/latest/state.json").read_text())["recipe"]["k"]
    kb = json.loads((b / "checkpoints/latest/state.json").read_text())["recipe"]["k"]
    assert ka == kb and ka > 0
    la = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "log.jsonl").read_text().splitlines()]
    rows = [(r["step"], r["k_t"], r["convergence_M"]) for r in la if "k_t" in r]
    assert len(rows) == 4 and rows == [
        (r["step"], r["k_t"], r["convergence_M"]) for r in lb if "k_t" in r
    ]
    # k_t follows k ← clip(k + λ_k (γ L(x) − L(G)), 0, 1) from k_0 = 0, γ = 0.5, λ_k = 0.001
    k = 0.0
    for r in (r for r in la if "k_t" in r):
        k = min(max(k + 0.001 * (0.5 * r["loss_real_gal"] - r["loss_g_gal"]), 0.0), 1.0)
        assert r["k_t"] == pytest.approx(k, abs=1e-12)


def test_generate_writes_full_size_fits_from_both_parts(run, tmp_path):
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    assert meta["family"] == "twostage" and set(meta["parts"]) == {"positions", "galaxies"}
    assert meta["parts"]["positions"]["spec"]["image_height"] == 128
    # one stored offset per galaxy found in the data (two of the 16 overlap into one here)
    found = analyse(from_spec(DATA).images)
    assert meta["parts"]["positions"]["spec"]["n_offsets"] == len(found.catalogue["x"])
    out = tmp_path / "gen"
    assert (
        main(["generate", str(run), "-n", "3", "--seed", "1", "--out", str(out), "--no-progress"])
        == 0
    )
    files = sorted(out.glob("*.fits"))
    assert len(files) == 3 and (out / "grid.png").is_file()
    data = fits.getdata(files[0])
    assert data.shape == (128, 128) and np.all(np.isfinite(data)) and data.min() >= 0
    b = load_bundle(run)
    assert b.capabilities == {"latent", "physical"} and b.image_shape == (1, 128, 128)
    again = b.sample(3, seed=1)
    np.testing.assert_array_equal(again[0, 0], data)  # same seed, same field
    assert b.image_shape == (1, 128, 128)


def test_generated_fields_hold_the_datas_numbers_of_galaxies(run):
    # default sampling "count": K from the data's occupied cells per field, K cells from the map
    spec = json.loads((run / "bundle" / "bundle.json").read_text())["parts"]["positions"]["spec"]
    assert spec["sampling"] == "count" and spec["n_counts"] == 4
    found = analyse(from_spec(DATA).images)
    allowed = set(found.grids.sum(axis=(1, 2)).astype(int).tolist())
    sampler = load_bundle(run).generator
    with torch.no_grad():
        occ, _ = sampler.layout(
            torch.randn(sampler.latent_shape(32), generator=torch.Generator().manual_seed(0))
        )
    counts = occ.sum(dim=(1, 2)).tolist()
    assert set(counts) <= allowed and len(set(occ.reshape(32, -1).float().argmax(1).tolist())) > 1
    # bernoulli sampling of the same bundle: the count follows the map (its sum of p)
    sampler.positions.sampling = "bernoulli"
    with torch.no_grad():
        z = torch.randn(sampler.latent_shape(64), generator=torch.Generator().manual_seed(1))
        occ, _ = sampler.layout(z)
        prob, _ = sampler.positions.net.maps(z[:, : sampler.positions.net.latent_dim])
    assert abs(float(occ.sum(dim=(1, 2)).float().mean() - prob.sum(dim=(1, 2)).mean())) < 2.0


def test_conditional_model_trains_and_generates(tmp_path):
    out = tmp_path / "cond"
    assert (
        main(
            [
                "train",
                DATA,
                "--out",
                str(out),
                "--steps",
                "2",
                *COMMON,
                "--set",
                "model.conditional=true",
                "--set",
                "model.size_thresholds=[100,300]",
            ]
        )
        == 0
    )
    spec = json.loads((out / "bundle" / "bundle.json").read_text())["parts"]
    assert spec["positions"]["spec"]["conditional"] is True
    assert spec["positions"]["spec"]["size_thresholds"] == [100.0, 300.0]
    images = load_bundle(out).sample(2, seed=0)
    assert images.shape == (2, 1, 128, 128)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    noisy = tmp_path / "noisy.npy"
    np.save(noisy, np.random.default_rng(0).normal(size=(3, 1, 64, 64)).astype(np.float32))
    assert main(["train", str(noisy), "--out", str(tmp_path / "r1"), "--steps", "1", *COMMON]) == 2
    err = capsys.readouterr().err.strip()
    assert "exactly 0" in err and len(err.splitlines()) == 1
    assert (
        main(
            [
                "train",
                DATA,
                "--out",
                str(tmp_path / "r2"),
                "--steps",
                "1",
                *COMMON,
                "--set",
                "model.gamma=2",
            ]
        )
        == 2
    )
    assert "model.gamma" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                DATA,
                "--out",
                str(tmp_path / "r3"),
                "--steps",
                "1",
                *COMMON,
                "--set",
                "model.size_thresholds=[5,1]",
            ]
        )
        == 2
    )
    assert "model.size_thresholds" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                DATA,
                "--out",
                str(tmp_path / "r5"),
                "--steps",
                "1",
                *COMMON,
                "--set",
                "model.pos_sampling=poisson",
            ]
        )
        == 2
    )
    assert "model.pos_sampling" in capsys.readouterr().err
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((2, 3, 64, 64), np.float32) + np.eye(64, dtype=np.float32))
    assert main(["train", str(rgb), "--out", str(tmp_path / "r4"), "--steps", "1", *COMMON]) == 2
    assert "single-band" in capsys.readouterr().err


EIGEN = [
    *COMMON[: COMMON.index("model.config=small") - 1],
    "--set",
    "model.config=eigen",
    "--set",
    "model.pos_width=4",
    "--set",
    "model.pos_latent_dim=8",
    "--set",
    "model.patch=16",
    "--set",
    "model.eigen_components=4",
    "--set",
    "model.eigen_mixture=2",
    *COMMON[COMMON.index("model.config=small") + 1 :],
]


def test_eigen_stage_is_the_default_resumes_exactly_and_draws_one_cluster_per_galaxy(tmp_path):
    from scipy import ndimage

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", DATA, "--out", str(a), "--steps", "3", *EIGEN]) == 0
    assert main(["train", DATA, "--out", str(b), "--steps", "2", *EIGEN]) == 0
    assert main(["train", DATA, "--out", str(b), "--steps", "3", "--resume", *EIGEN]) == 0
    for part in ("positions.safetensors", "galaxies.safetensors"):
        assert (a / part).read_bytes() == (b / part).read_bytes()
    meta = json.loads((a / "bundle" / "bundle.json").read_text())
    spec = meta["parts"]["galaxies"]["spec"]
    assert spec["stage"] == "eigen" and spec["single_cluster"] is True
    sampler = load_bundle(a).generator
    gal = sampler.galaxies
    assert gal.floor.item() > 0 and gal.net.basis.abs().sum() > 0  # fitted on the data
    with torch.no_grad():
        z = torch.randn(sampler.latent_shape(6), generator=torch.Generator().manual_seed(2))
        occ, _ = sampler.layout(z)
        fields = sampler(z)
        h = torch.rand((30, gal.net.latent_dim), generator=torch.Generator().manual_seed(3))
        patches = gal(h * 2 - 1)
    assert fields.shape == (6, 1, 128, 128)
    floor = gal.floor.item()
    assert bool(((fields == 0) | (fields >= floor)).all())  # the background is exactly 0
    for p in patches[:, 0].numpy():
        assert ndimage.label(p != 0, structure=np.ones((3, 3)))[1] == 1
    # each field holds about as many clusters as galaxies were placed (overlaps merge some)
    found = sum(ndimage.label(f[0] != 0, structure=np.ones((3, 3)))[1] for f in fields.numpy())
    placed = int(occ.sum())
    assert 0.7 * placed <= found <= placed
