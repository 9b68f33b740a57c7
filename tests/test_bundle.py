"""Bundles: save/load round trip, run folders, sampling, and the errors of bad bundles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_network_output_matches
from safetensors.torch import load_file, save_file
from torch import nn

import galforge
from galforge.bundle import Part, save_bundle
from galforge.cli import main
from galforge.data.normalize import Normalizer
from galforge.errors import BundleError
from galforge.generation import load_bundle
from galforge.models.registry import register_family, register_generator
from galforge.runfolder import RunFolder, RunInfo

FAMILY = "tiny_bundle_test"
BANDS = ("g", "r", "i")


class TinyGenerator(nn.Module):
    """A linear generator with a tanh head, small enough for the tests."""

    def __init__(self, channels=3, latent_dim=8, size=8):
        super().__init__()
        self.channels, self.latent_dim, self.size = channels, latent_dim, size
        self.fc = nn.Linear(latent_dim, channels * size * size)

    CAPABILITIES = frozenset({"latent"})

    def latent_shape(self, n):
        return (n, self.latent_dim)

    def forward(self, z):
        return torch.tanh(self.fc(z.flatten(1))).view(-1, self.channels, self.size, self.size)


@register_generator(FAMILY)
def _build(spec):
    return TinyGenerator(**spec)


SPEC = {"channels": 3, "latent_dim": 8, "size": 8}


def training_data():
    """Images in 'physical' units far from model space: g ~ 10..20, r ~ 100..300, i ~ 1000.."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, (20, 3, 8, 8)).astype(np.float32)
    return (
        base * np.array([10, 200, 3000], np.float32)[None, :, None, None]
        + np.array([10, 100, 1000], np.float32)[None, :, None, None]
    )


def make_generator(seed=0):
    torch.manual_seed(seed)
    return TinyGenerator(**SPEC)


def make_bundle(path, seed=0, **overrides):
    data = training_data()
    kwargs = dict(
        family=FAMILY,
        spec=SPEC,
        state_dict=make_generator(seed).state_dict(),
        normalizer=Normalizer.fit(data, target=(-1.0, 1.0)),
        bands=BANDS,
        units="nanomaggy",
        output_range=(-1.0, 1.0),
        config={"model": {"width": 8}, "train": {"steps": 3}},
        data_fingerprint="f" * 64,
    )
    kwargs.update(overrides)
    return save_bundle(path, **kwargs)


def make_run(run_dir, seed=0):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = training_data()
    info = RunInfo(
        family=FAMILY,
        model="tiny",
        parts={
            "generator": {"family": FAMILY, "spec": SPEC, "module": "tests_not_a_galforge_module"}
        },
        bands=list(BANDS),
        units="nanomaggy",
        normalizer=Normalizer.fit(data, target=(-1.0, 1.0)).to_dict(),
        output_range=[-1.0, 1.0],
        data_fingerprint="a" * 64,
        module="tests_not_a_galforge_module",
        step=3,
        epoch=0,
    )
    folder = RunFolder(run_dir)
    folder.write_info(info)
    (run_dir / "config.yaml").write_text("model:\n  width: 8\ntrain:\n  steps: 3\n")
    folder.write_weights({"generator": make_generator(seed).state_dict()})
    return run_dir


def export_run(run_dir):
    return RunFolder(run_dir).export()


def test_round_trip_keeps_weights_normalizer_and_description(tmp_path):
    path = make_bundle(tmp_path / "b")
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "generator.safetensors"]
    meta = json.loads((path / "bundle.json").read_text())
    for key in (
        "family",
        "parts",
        "config",
        "bands",
        "units",
        "normalizer",
        "output_range",
        "data_fingerprint",
        "galforge_version",
        "bundle_id",
        "created",
    ):
        assert key in meta, key
    assert meta["format_version"] == 2
    part = meta["parts"]["generator"]
    assert part["family"] == FAMILY and part["spec"] == SPEC
    assert part["file"] == "generator.safetensors" and re.fullmatch(r"[0-9a-f]{64}", part["sha256"])
    assert re.fullmatch(r"[0-9a-f]{12}", meta["bundle_id"])
    assert meta["galforge_version"] == galforge.__version__

    bundle = load_bundle(path)
    original = make_generator(0).state_dict()
    loaded = bundle.generator.state_dict()
    assert set(original) == set(loaded)
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    expected = Normalizer.fit(training_data(), target=(-1.0, 1.0)).to_dict()
    assert json.loads(json.dumps(bundle.normalizer.to_dict())) == json.loads(json.dumps(expected))
    assert bundle.family == FAMILY and bundle.bands == BANDS and bundle.units == "nanomaggy"
    assert bundle.image_shape == (3, 8, 8)
    assert bundle.bundle_id == meta["bundle_id"]
    assert not bundle.generator.training


def test_bundle_id_is_a_content_hash(tmp_path):
    a = make_bundle(tmp_path / "a", created="2020-01-01T00:00:00Z")
    b = make_bundle(tmp_path / "b", created="2021-01-01T00:00:00Z")
    c = make_bundle(tmp_path / "c", seed=1)
    ids = [json.loads((p / "bundle.json").read_text())["bundle_id"] for p in (a, b, c)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_sample_is_float32_in_physical_units_and_deterministic(tmp_path):
    g = galforge.load(make_bundle(tmp_path / "b"))
    imgs = g.sample(16, seed=0)
    assert imgs.dtype == np.float32 and imgs.shape == (16, 3, 8, 8)
    data = training_data()
    lo, hi = data.min(axis=(0, 2, 3)), data.max(axis=(0, 2, 3))
    per_band_min, per_band_max = imgs.min(axis=(0, 2, 3)), imgs.max(axis=(0, 2, 3))
    assert np.all(per_band_min >= lo - 1e-3 * np.abs(lo)) and np.all(per_band_max <= hi * 1.001)
    assert imgs[:, 2].mean() > 100  # i band in the thousands, not in model space
    assert np.array_equal(imgs, g.sample(16, seed=0))
    assert not np.allclose(imgs, g.sample(16, seed=1))


def test_sample_does_not_depend_on_batch_size_or_offset(tmp_path):
    g = load_bundle(make_bundle(tmp_path / "b"))
    whole = g.sample(10, seed=5, batch=64)
    np.testing.assert_allclose(g.sample(10, seed=5, batch=3), whole, rtol=1e-5)
    np.testing.assert_allclose(g.sample(4, seed=5, start=6), whole[6:], rtol=1e-5)
    assert torch.equal(g.latent(3, seed=5, start=2), g.latent(5, seed=5)[2:])
    np.testing.assert_allclose(g.generate_from_latent(g.latent(10, seed=5)), whole, rtol=1e-5)


def test_truncation_zero_gives_the_mean_image(tmp_path):
    g = load_bundle(make_bundle(tmp_path / "b"))
    imgs = g.sample(4, seed=0, truncation=0.0)
    assert np.allclose(imgs, imgs[0][None])


def test_load_from_run_folder_reads_the_present_weights_and_writes_nothing(tmp_path):
    run = make_run(tmp_path / "run")
    before = sorted(p.name for p in run.rglob("*"))
    g = load_bundle(run)
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written
    assert g.config == {"model": {"width": 8}, "train": {"steps": 3}}
    assert g.meta["source"]["step"] == 3 and g.meta["module"] == "tests_not_a_galforge_module"
    exported = export_run(run)
    stamp = (exported / "bundle.json").stat().st_mtime_ns
    again = load_bundle(run)
    assert again.bundle_id == g.bundle_id == load_bundle(exported).bundle_id
    assert (run / "bundle" / "bundle.json").stat().st_mtime_ns == stamp  # reused
    # new weights in the run -> the run folder means the new weights
    save_file(make_generator(7).state_dict(), str(run / "generator.safetensors"))
    newer = load_bundle(run)
    assert newer.bundle_id != g.bundle_id
    assert torch.equal(newer.generator.fc.weight, make_generator(7).fc.weight)


def test_export_run_and_cli_export(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert export_run(run) == run / "bundle"
    weights = load_file(str(run / "bundle" / "generator.safetensors"))
    assert torch.equal(weights["fc.weight"], make_generator(0).fc.weight)
    assert main(["export", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "bundle")


def _cli_error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def test_missing_bundle_json_is_named(tmp_path, capsys):
    path = make_bundle(tmp_path / "b")
    (path / "bundle.json").unlink()
    code, err = _cli_error(["generate", str(path), "-n", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bundle.json" in err and "Traceback" not in err


def test_missing_weights_are_named(tmp_path):
    path = make_bundle(tmp_path / "b")
    (path / "generator.safetensors").unlink()
    with pytest.raises(BundleError, match="generator.safetensors"):
        load_bundle(path)


def test_corrupt_safetensors_is_named(tmp_path, capsys):
    path = make_bundle(tmp_path / "b")
    weights = path / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    code, err = _cli_error(["generate", str(path), "-n", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "generator.safetensors" in err
    # without a recorded checksum the safetensors reader itself reports the file
    meta = json.loads((path / "bundle.json").read_text())
    del meta["parts"]["generator"]["sha256"]
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="generator.safetensors.*safetensors"):
        load_bundle(path)


def test_corrupt_json_is_named(tmp_path, capsys):
    path = make_bundle(tmp_path / "b")
    (path / "bundle.json").write_text('{"family": "tiny", ')
    code, err = _cli_error(["generate", str(path), "-n", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bundle.json" in err and "JSON" in err


def test_unknown_family_lists_the_known_ones(tmp_path, capsys):
    path = make_bundle(tmp_path / "b")
    meta = json.loads((path / "bundle.json").read_text())
    meta["family"] = "no_such_family"
    (path / "bundle.json").write_text(json.dumps(meta))
    code, err = _cli_error(["generate", str(path), "-n", "1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bundle.json" in err and "no_such_family" in err and FAMILY in err


def test_weights_of_another_model_are_refused(tmp_path):
    path = make_bundle(tmp_path / "b")
    meta = json.loads((path / "bundle.json").read_text())
    meta["parts"]["generator"]["spec"] = {"channels": 3, "latent_dim": 16, "size": 8}
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="generator.safetensors"):
        load_bundle(path)


def test_band_count_must_match_the_generator(tmp_path):
    with pytest.raises(BundleError, match="bands"):
        make_bundle(tmp_path / "b", bands=("g", "r"))


def test_not_a_bundle_or_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _cli_error(
        ["generate", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "bundle.json" in err and "run.json" in err
    code, err = _cli_error(["export", str(tmp_path / "empty")], capsys)
    assert code == 2 and "run.json" in err
    with pytest.raises(BundleError, match="no such"):
        load_bundle(tmp_path / "missing")


def test_no_pickle_anywhere_in_galforge():
    root = Path(galforge.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M):
            offenders.append(f"{path}: imports pickle")
        if re.search(r"allow_pickle\s*=\s*True|weights_only\s*=\s*False", text):
            offenders.append(f"{path}: enables pickle")
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1).replace(" ", ""):
                offenders.append(f"{path}: torch.load without weights_only=True")
    assert not offenders, offenders


def test_bundle_without_normalizer_samples_model_space(tmp_path):
    g = load_bundle(make_bundle(tmp_path / "b", normalizer=None))
    imgs = g.sample(4, seed=0)
    assert imgs.dtype == np.float32 and imgs.min() >= -1.0 and imgs.max() <= 1.0
    assert json.loads((tmp_path / "b" / "bundle.json").read_text())["normalizer"] is None


def test_run_hyperparameters_travel_into_the_bundle(tmp_path):
    run = make_run(tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["hyperparameters"] = {"lr": 0.0002, "label_smoothing": 0.1}
    (run / "run.json").write_text(json.dumps(info))
    meta = json.loads((export_run(run) / "bundle.json").read_text())
    assert meta["hyperparameters"] == {"lr": 0.0002, "label_smoothing": 0.1}
    assert meta["parts"]["generator"]["spec"] == SPEC and meta["data_fingerprint"] == "a" * 64


# --------------------------------------------------------------------------- 0.1 bundles

FIXTURES = Path(__file__).parent / "fixtures"


def expected_v01(key):
    with np.load(FIXTURES / "expected_v01.npz") as data:
        return data[key]


# Network outputs of the 0.1 fixtures were computed on another CPU; kernels here may order float
# sums differently (seen: 3.7e-6 relative on AVX-512). A changed weight, latent or normalizer moves
# values by percents, so 1e-4 relative plus 1e-4 of the images' peak (about 300 and 100 units)
# separates the two. GALFORGE_STRICT_FIXTURES=1 demands bit identity (see conftest).
V01_RTOL = 1e-4
V01_ATOL = {"dcgan": 3e-2, "sgan": 1e-2}


def test_v01_dcgan_bundle_samples_like_0_1(one_thread):
    b = load_bundle(FIXTURES / "dcgan_v01")
    assert b.family == "dcgan" and b.bands == ("g", "r")
    tol = {"rtol": V01_RTOL, "atol": V01_ATOL["dcgan"]}
    assert_network_output_matches(
        b.sample(5, seed=3, batch=2), expected_v01("dcgan_seed3_n5"), **tol
    )
    assert_network_output_matches(
        b.sample(3, seed=3, start=2), expected_v01("dcgan_seed3_start2_n3"), **tol
    )
    assert_network_output_matches(
        b.sample(4, seed=0, truncation=0.7), expected_v01("dcgan_seed0_trunc07_n4"), **tol
    )
    # latents are a random stream, not a network output: the same bits on any machine
    np.testing.assert_array_equal(
        b.latent(3, seed=9).numpy(), expected_v01("dcgan_latent_seed9_n3")
    )


def test_v01_latent_streams_are_the_same_bits_on_any_machine():
    from galforge.generation.latent import truncated_gaussian_latents

    # resampled truncated normal latents (threshold 1) of 0.1: a random stream, not arithmetic
    np.testing.assert_array_equal(
        truncated_gaussian_latents((8, 1, 1), 3, seed=4, threshold=1.0),
        expected_v01("trunc_gauss_seed4_n3"),
    )


def test_v01_sgan_bundle_samples_like_0_1(one_thread):
    b = load_bundle(FIXTURES / "sgan_v01")
    tol = {"rtol": V01_RTOL, "atol": V01_ATOL["sgan"]}
    assert_network_output_matches(b.sample(2, seed=1), expected_v01("sgan_seed1_n2"), **tol)
    assert_network_output_matches(
        b.sample(1, seed=1, image_size=48), expected_v01("sgan_seed1_n1_size48"), **tol
    )


def test_v01_bundles_load_to_the_stored_tensors():
    # loading is not arithmetic: the weights are the file's bits on any machine
    for name in ("dcgan_v01", "sgan_v01"):
        stored = load_file(str(FIXTURES / name / "generator.safetensors"))
        loaded = load_bundle(FIXTURES / name).generator.state_dict()
        assert set(stored) <= set(loaded)
        for key, tensor in stored.items():
            assert torch.equal(loaded[key], tensor), (name, key)


def test_loading_a_bundle_writes_nothing(tmp_path):
    import shutil

    for name in ("dcgan_v01", "sgan_v01"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
        before = sorted(p.name for p in (tmp_path / name).rglob("*"))
        load_bundle(tmp_path / name).sample(1)
        assert sorted(p.name for p in (tmp_path / name).rglob("*")) == before


# --------------------------------------------------------------------------- named parts


class Stage1(nn.Module):
    """Latent -> 3×4×4 image (a stand-in for a low-resolution generator)."""

    def __init__(self, latent_dim=4):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc = nn.Linear(latent_dim, 3 * 4 * 4)

    def forward(self, z):
        return torch.tanh(self.fc(z.flatten(1))).view(-1, 3, 4, 4)


class Stage2(nn.Module):
    """3×4×4 image -> 3×8×8 image (a stand-in for a super-resolution stage)."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 3, 4, 2, 1)

    def forward(self, x):
        return torch.tanh(self.up(x))


class Chain(nn.Module):
    CAPABILITIES = frozenset({"latent"})

    def __init__(self, stage1, stage2):
        super().__init__()
        self.stage1, self.stage2 = stage1, stage2

    def latent_shape(self, n):
        return (n, self.stage1.latent_dim)

    def forward(self, z):
        return self.stage2(self.stage1(z))


register_generator("tiny_stage1")(lambda spec: Stage1(**spec))
register_generator("tiny_stage2")(lambda spec: Stage2(**spec))


@register_family("tiny_chain", parts=("stage1", "stage2"))
def _compose_chain(parts):
    return Chain(parts["stage1"], parts["stage2"])


def test_a_family_of_two_parts_is_saved_as_two_files_and_composed(tmp_path):
    torch.manual_seed(3)
    s1, s2 = Stage1(), Stage2()
    path = save_bundle(
        tmp_path / "chain",
        family="tiny_chain",
        parts={
            "stage1": Part("tiny_stage1", {"latent_dim": 4}, s1.state_dict()),
            "stage2": Part("tiny_stage2", {}, s2.state_dict()),
        },
        normalizer=None,
        bands=BANDS,
        units="adu",
        output_range=(-1, 1),
        config={},
        data_fingerprint=None,
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "bundle.json",
        "stage1.safetensors",
        "stage2.safetensors",
    ]
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["family"] == "tiny_chain" and sorted(meta["parts"]) == ["stage1", "stage2"]
    g = load_bundle(path)
    assert set(g.parts) == {"stage1", "stage2"} and g.image_shape == (3, 8, 8)
    z = g.latent(3, seed=2)
    with torch.no_grad():
        expected = s2(s1(z)).clamp(-1, 1).numpy()
    np.testing.assert_array_equal(g.sample(3, seed=2), expected)
    # a changed part file is named
    weights = path / "stage2.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BundleError, match="stage2.safetensors"):
        load_bundle(path)
    # parts that do not match the family's are refused
    with pytest.raises(BundleError, match="stage1"):
        save_bundle(
            tmp_path / "bad",
            family="tiny_chain",
            parts={"stage1": Part("tiny_stage1", {"latent_dim": 4}, s1.state_dict())},
            normalizer=None,
            bands=BANDS,
            units="adu",
            output_range=(-1, 1),
            config={},
            data_fingerprint=None,
        )
