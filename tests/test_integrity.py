"""Corrupt or incomplete state never passes silently: checksums, fallback, non-finite weights,
full disks and atomic outputs give one line (exit 2) and leave nothing half-written."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from galforge.cli import main
from galforge.errors import DiskFullError, TrainingError
from galforge.training import checkpoint as ck

TINY = [
    "--model",
    "dcgan64",
    "--batch",
    "3",
    "--seed",
    "1",
    "--device",
    "cpu",
    "--set",
    "model.width=4",
    "--set",
    "train.progress=false",
    "--set",
    "output.tensorboard=false",
    "--set",
    "output.loss_plot=false",
    "--set",
    "train.sample_every=100",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _stderr_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1] if err else ""


@pytest.fixture(scope="module")
def npy_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    np.save(d / "gal.npy", (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8))
    return d / "gal.npy"


def _train(data, run, *extra):
    return main(["train", str(data), "--out", str(run), *TINY, *extra])


def _temporaries(folder):
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]


# ----------------------------------------------------------------------------- checkpoints


def _tensors(v: float) -> dict:
    return {"module.G.w": torch.full((3, 2), v), "module.G.n": torch.tensor(7)}


def test_checkpoint_checksum_catches_one_changed_float(tmp_path):
    d = ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 5})
    raw = bytearray((d / "state.safetensors").read_bytes())
    raw[-3] ^= 0x01  # one bit of one float: still a valid safetensors file
    (d / "state.safetensors").write_bytes(bytes(raw))
    with pytest.raises(TrainingError, match="sha256"):
        ck.read_checkpoint(d)


def test_checkpoint_with_nan_weights_is_refused(tmp_path):
    bad = _tensors(1.0)
    bad["module.G.w"][0, 0] = float("nan")
    d = ck.write_checkpoint(tmp_path / "latest", bad, {"step": 5})
    with pytest.raises(TrainingError, match="NaN or infinity"):
        ck.read_checkpoint(d)


def test_old_checkpoints_without_checksums_still_load(tmp_path):
    d = ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 5})
    (d / ck.SUMS).unlink()
    _, meta = ck.read_checkpoint(d)
    assert meta["step"] == 5


def test_newest_intact_checkpoint_is_chosen(tmp_path):
    latest = ck.write_checkpoint(tmp_path / "latest", _tensors(4.0), {"step": 4})
    snap = ck.write_checkpoint(tmp_path / "step-2", _tensors(2.0), {"step": 2})
    ck.write_checkpoint(tmp_path / "step-1", _tensors(1.0), {"step": 1})
    found, _, meta, problems = ck.read_newest_intact([latest, snap, tmp_path / "step-1"])
    assert found == latest and not problems
    (latest / "state.safetensors").write_bytes(b"\0" * 10)
    found, _, meta, problems = ck.read_newest_intact([latest, snap, tmp_path / "step-1"])
    assert found == snap and meta["step"] == 2 and len(problems) == 1


def test_disk_full_while_checkpointing_leaves_no_temporary(tmp_path, monkeypatch):
    ck.write_checkpoint(tmp_path / "latest", _tensors(1.0), {"step": 1})
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and ".tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(DiskFullError, match="disk full while writing"):
        ck.write_checkpoint(tmp_path / "latest", _tensors(2.0), {"step": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
    assert ck.read_checkpoint(tmp_path / "latest")[1]["step"] == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "json"])
def test_resume_falls_back_to_newest_intact_checkpoint(npy_data, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert (
        _train(
            npy_data,
            run,
            "--steps",
            "3",
            "--set",
            "train.snapshot_every=2",
            "--set",
            "train.checkpoint_every=1",
        )
        == 0
    )
    state = run / "checkpoints/latest/state.safetensors"
    if damage == "flip":
        raw = bytearray(state.read_bytes())
        raw[-5] ^= 0x40
        state.write_bytes(bytes(raw))
    elif damage == "truncate":
        with open(state, "r+b") as fh:
            fh.truncate(state.stat().st_size // 2)
    else:  # random bytes as state.json
        state.with_name("state.json").write_bytes(bytes(range(256)) * 2)
    capsys.readouterr()
    assert _train(npy_data, run, "--steps", "4", "--resume") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    notes = [x for x in err.splitlines() if "newest intact checkpoint" in x]
    assert len(notes) == 1 and "step-00000002" in notes[0]
    assert ck.read_checkpoint(run / "checkpoints/latest")[1]["step"] == 4  # intact again
    assert json.loads((run / "run.json").read_text())["step"] == 4


def test_resume_with_no_intact_checkpoint_is_one_line(npy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "2") == 0
    (run / "checkpoints/latest/state.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert _train(npy_data, run, "--steps", "3", "--resume") == 2
    line = _stderr_line(capsys)
    assert "no intact checkpoint" in line


def test_resume_below_current_step_is_refused(npy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "3") == 0
    capsys.readouterr()
    assert _train(npy_data, run, "--steps", "2", "--resume") == 2
    assert "--steps 2 is below the run's step 3" in _stderr_line(capsys)


def test_disk_full_during_train_is_one_line(npy_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and "checkpoints" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)
    assert _train(npy_data, run, "--steps", "2") == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: disk full while writing") and "--resume" in line
    assert _temporaries(run) == []


# ----------------------------------------------------------------------------- bundles

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "dcgan_v01"


@pytest.fixture
def bundle_copy(tmp_path):
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit_json(folder, edit):
    path = folder / "bundle.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _generate(bundle, out, *extra):
    return main(["generate", str(bundle), "-n", "2", "--out", str(out), "--no-progress", *extra])


def test_generate_refuses_nan_weights_and_writes_nothing(bundle_copy, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from galforge.bundle import sha256_file

    w = bundle_copy / "generator.safetensors"
    state = load_file(str(w))
    key = next(k for k, v in state.items() if torch.is_floating_point(v) and v.numel() > 1)
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(w))
    _edit_json(bundle_copy, lambda m: m["weights"].__setitem__("sha256", sha256_file(w)))
    out = tmp_path / "out"
    assert _generate(bundle_copy, out) == 2
    line = _stderr_line(capsys)
    assert "NaN or infinity" in line and "generator.safetensors" in line
    assert not out.exists() or not any(out.rglob("*.fits"))


def test_generated_nan_pixels_are_refused(bundle_copy, tmp_path, capsys, monkeypatch):
    from galforge.generation import sampling

    real = sampling.Bundle._forward

    def nan_forward(self, *a, **kw):
        return real(self, *a, **kw) * float("nan")

    monkeypatch.setattr(sampling.Bundle, "_forward", nan_forward)
    out = tmp_path / "out"
    assert _generate(bundle_copy, out) == 2
    assert "NaN or infinite pixels" in _stderr_line(capsys)
    assert not out.exists() or not any(out.rglob("*.fits"))


@pytest.mark.parametrize(
    "case, expect",
    [
        ("escape", "outside the bundle folder"),
        ("absolute", "outside the bundle folder"),
        ("bytes", "not a text"),
        ("deep", "nested"),
        ("family_list", "'family' must be a string"),
        ("huge_width", "spec key 'width'"),
        ("huge_width_float", "spec key 'width'"),
        ("bands_numbers", "'bands' must be a list of band names"),
        ("range", "'output_range' must be"),
        ("spec_list", "cannot be rebuilt"),
    ],
)
def test_bad_bundle_json_is_one_line(bundle_copy, tmp_path, capsys, case, expect):
    import shutil

    path = bundle_copy / "bundle.json"
    if case == "escape":
        other = tmp_path / "elsewhere"
        other.mkdir()
        shutil.copy(bundle_copy / "generator.safetensors", other / "w.safetensors")
        _edit_json(
            bundle_copy, lambda m: m["weights"].__setitem__("file", "../elsewhere/w.safetensors")
        )
    elif case == "absolute":
        _edit_json(
            bundle_copy,
            lambda m: m["weights"].__setitem__("file", str(bundle_copy / "generator.safetensors")),
        )
    elif case == "bytes":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    elif case == "deep":
        path.write_text("[" * 100000 + "]" * 100000)
    elif case == "family_list":
        _edit_json(bundle_copy, lambda m: m.__setitem__("family", ["dcgan"]))
    elif case == "huge_width":
        _edit_json(bundle_copy, lambda m: m["spec"].__setitem__("width", 100_000_000))
    elif case == "huge_width_float":
        _edit_json(bundle_copy, lambda m: m["spec"].__setitem__("width", 1e8))
    elif case == "bands_numbers":
        _edit_json(bundle_copy, lambda m: m.__setitem__("bands", [1, 2]))
    elif case == "range":
        _edit_json(bundle_copy, lambda m: m.__setitem__("output_range", "wide"))
    elif case == "spec_list":
        _edit_json(bundle_copy, lambda m: m["spec"].__setitem__("width", [4]))
    out = tmp_path / "out"
    assert _generate(bundle_copy, out) == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: ") and expect in line, line
    assert not out.exists() or not any(out.iterdir())


def test_deeply_nested_json_inside_an_object_is_refused(bundle_copy, capsys):
    _edit_json(bundle_copy, lambda m: m.__setitem__("config", json.loads("[" * 50 + "]" * 50)))
    assert _generate(bundle_copy, bundle_copy.parent / "out") == 2
    assert "nested deeper" in _stderr_line(capsys)


def test_shipped_and_old_bundles_still_load():
    from galforge.bundle import read_bundle
    from galforge.pretrained import __file__ as zoo

    for folder in [
        FIXTURE,
        FIXTURE.parent / "sgan_v01",
        *sorted(
            p
            for p in __import__("pathlib").Path(zoo).parent.iterdir()
            if (p / "bundle.json").is_file()
        ),
    ]:
        assert read_bundle(folder).parts


def test_generate_checks_disk_space_first(bundle_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "generate",
                str(bundle_copy),
                "-n",
                "1000000000000",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )
    line = _stderr_line(capsys)
    assert "-n 1000000000000" in line and "free" in line
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- small n


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    from galforge.data import load_images

    d = tmp_path_factory.mktemp("sets")
    real = load_images("builtin:galsim?n=16&size=64&seed=1").images
    np.save(d / "real.npy", real.transpose(0, 2, 3, 1))
    np.save(d / "zero.npy", np.zeros((8, 64, 64, 3), np.float32))
    noise = np.random.default_rng(1).normal(0, real.std(), (8, 64, 64, 3)).astype(np.float32)
    np.save(d / "noise.npy", noise)
    return d


@pytest.mark.parametrize("garbage", ["zero", "noise"])
def test_frechet_distance_at_small_n_is_too_few_to_judge(small_sets, tmp_path, garbage):
    out = tmp_path / "ev"
    assert (
        main(
            [
                "evaluate",
                str(small_sets / "real.npy"),
                str(small_sets / f"{garbage}.npy"),
                "--out",
                str(out),
                "--measures",
                "fid",
                "--no-progress",
                "--no-cache",
            ]
        )
        == 0
    )
    rows = json.loads((out / "metrics.json").read_text())["summary"]
    row = next(r for r in rows if r["measure"] == "Fréchet galaxy distance")
    assert row["passed"] is False and row["note"].startswith("too few to judge")


def test_frechet_verdict_stands_when_garbage_fails():
    from galforge.evaluation.measures import FrechetGalaxyDistance

    m = FrechetGalaxyDistance()
    base = {"fgd": 10.0, "fgd_real_halves": 5.0, "n_real": 500, "n_fake": 500}
    ok = m.summary({**base, "fgd_zeros": 300.0, "fgd_noise": 200.0}, {"fgd_factor": 3.0}, None)
    assert ok[0]["passed"] and "note" not in ok[0]
    few = m.summary({**base, "fgd_zeros": 300.0, "fgd_noise": 12.0}, {"fgd_factor": 3.0}, None)
    assert not few[0]["passed"] and "pure noise" in few[0]["note"]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "argv, expect",
    [
        (
            ["train", "builtin:galsim?n=4", "--set", "model.lr=-1", "--dry-run"],
            "model.lr=-1.0 must be >= 0",
        ),
        (
            ["train", "builtin:galsim?n=4", "--set", "model.ema=2", "--dry-run"],
            "model.ema=2.0 must be in [0, 1)",
        ),
        (
            ["train", "builtin:galsim?n=4", "--keep-best", "bogus", "--dry-run"],
            "train.keep_best='bogus'",
        ),
        (
            ["train", "builtin:galsim?n=4", "--set", "model.width=100000000", "--dry-run"],
            "model.width=100000000 must be in [1, 65536]",
        ),
        (["train", "builtin:galsim?n=4", "--metric-n", "1", "--dry-run"], "train.metric_n=1"),
        (["data", "inspect", "builtin:galsim?n=-5"], "n=-5"),
        (["data", "inspect", "builtin:galsim?size=2"], "size=2"),
        (
            [
                "data",
                "prepare",
                "builtin:galsim?n=2&size=16",
                "--nan-policy",
                "bogus",
                "--out",
                "{tmp}/p",
            ],
            "--nan-policy",
        ),
        (
            ["evaluate", "a", "b", "--out", "{tmp}/e", "--holdout-fraction", "1.5"],
            "--holdout-fraction 1.5 must be in (0, 1)",
        ),
        (["evaluate", "a", "b", "--out", "{tmp}/e", "--chunk-size", "0"], "--chunk-size 0"),
    ],
)
def test_out_of_range_options_are_one_line(tmp_path, capsys, argv, expect):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: ") and expect in line, line
    assert not (tmp_path / "p").exists() and not (tmp_path / "e").exists()


def test_every_shipped_model_config_is_in_range():
    from galforge.config import resolve_config
    from galforge.training.recipes import model_configs, model_defaults

    defaults, configs = model_defaults(), model_configs()
    for name in defaults:
        for conf in [None, *sorted(configs.get(name) or {})]:
            sets = [f"model.name={name}"] + ([f"model.config={conf}"] if conf else [])
            resolve_config(sets=sets, model_defaults=defaults, model_configs=configs)


# ----------------------------------------------------------------------------- fields


@pytest.fixture(scope="module")
def sgan_bundle(tmp_path_factory):
    from galforge.bundle import save_bundle
    from galforge.data.normalize import Normalizer
    from galforge.models.sgan import SGANGenerator

    torch.manual_seed(0)
    gen = SGANGenerator(3, (8, 8, 4, 4)).eval()
    phys = np.random.default_rng(0).gamma(2.0, 3.0, size=(1, 3, 64, 64)).astype(np.float32)
    norm = Normalizer.fit(phys, clip_percentile=99.99, target=(0.0, 1.0))
    path = tmp_path_factory.mktemp("sgan") / "b"
    save_bundle(
        path,
        family="sgan",
        spec=gen.spec(),
        state_dict=gen.state_dict(),
        normalizer=norm,
        bands=("g", "r", "i"),
        units="nanomaggy",
        output_range=(0, 1),
        config={},
        data_fingerprint="test",
    )
    return path


@pytest.mark.parametrize("fmt", ["fits", "npy"])
def test_unfinished_field_never_sits_under_its_name(
    sgan_bundle, tmp_path, capsys, monkeypatch, fmt
):
    from galforge.generation import fieldjob
    from galforge.generation.field import read_field

    args = [
        "field",
        str(sgan_bundle),
        "--size",
        "80x96",
        "--tile",
        "32",
        "--seed",
        "5",
        "--no-progress",
        "--compile",
        "off",
    ]
    ref = tmp_path / f"ref.{fmt}"
    assert main([*args, "--out", str(ref)]) == 0
    out = tmp_path / f"f.{fmt}"
    calls = {"n": 0}
    real_run = fieldjob.run_tile

    def full_disk_after_three(job, ty, tx):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(job.write_path))
        return real_run(job, ty, tx)

    monkeypatch.setattr(fieldjob, "run_tile", full_disk_after_three)
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: disk full while writing") and "--resume" in line
    assert not out.exists()  # the half-made field is in the progress folder only
    assert (tmp_path / f"f.{fmt}.progress" / out.name).is_file()
    monkeypatch.undo()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert np.array_equal(read_field(out)[0], read_field(ref)[0])
    assert not (tmp_path / f"f.{fmt}.progress").exists()


def _full_disk_for_temporaries(monkeypatch):
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and ".tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)


@pytest.mark.parametrize("fmt", ["fits", "png"])
def test_disk_full_during_generate_is_one_line(bundle_copy, tmp_path, capsys, monkeypatch, fmt):
    out = tmp_path / "out"
    _full_disk_for_temporaries(monkeypatch)
    assert _generate(bundle_copy, out, "--format", fmt) == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: disk full while writing")
    assert _temporaries(tmp_path) == []


def test_disk_full_during_generate_npy_is_caught_before_writing(
    bundle_copy, tmp_path, capsys, monkeypatch
):
    import os

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    out = tmp_path / "out"
    assert _generate(bundle_copy, out, "--format", "npy") == 2
    assert _stderr_line(capsys).startswith("error: disk full while writing")
    assert _temporaries(tmp_path) == []


def test_disk_full_during_export_is_one_line(npy_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "1", "--set", "output.export_bundle=false") == 0
    _full_disk_for_temporaries(monkeypatch)
    capsys.readouterr()
    assert main(["export", str(run)]) == 2
    assert _stderr_line(capsys).startswith("error: disk full while writing")
    assert _temporaries(run) == []


def test_config_folder_and_resume_with_another_model_are_named(npy_data, tmp_path, capsys):
    assert main(["train", "x", "--config", str(tmp_path), "--dry-run"]) == 2
    assert "is a folder: give a YAML file" in _stderr_line(capsys)
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "1") == 0
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                str(npy_data),
                "--out",
                str(run),
                "--resume",
                "--steps",
                "2",
                "--model",
                "dcgan128",
            ]
        )
        == 2
    )
    line = _stderr_line(capsys)
    assert "--model (model.name) 'dcgan64' -> 'dcgan128'" in line


def test_score_ladder_limit_zero_is_refused(tmp_path, capsys):
    out = tmp_path / "lad"
    assert (
        main(
            [
                "score",
                "ladder",
                "builtin:sparse?n=2&size=64&count=3",
                "--out",
                str(out),
                "--limit",
                "0",
            ]
        )
        == 2
    )
    assert "--limit 0 must be >= 1" in _stderr_line(capsys)
    assert not out.exists()


def _sleep(seconds, started=None):
    import time
    from pathlib import Path

    if started is not None:
        Path(started).touch()  # the worker is running the task, not still starting up
    time.sleep(seconds)
    return seconds


def test_interrupted_evaluation_drops_its_workers_at_once(tmp_path):
    import time
    from concurrent.futures import ProcessPoolExecutor

    from dask.multiprocessing import get_context

    from galforge.evaluation.runner import _drop_pool

    started = tmp_path / "started"
    pool = ProcessPoolExecutor(1, mp_context=get_context())
    pool.submit(_sleep, 60, str(started))
    pool.submit(_sleep, 60)  # queued: dropped with the pool
    deadline = time.perf_counter() + 120  # a spawned worker imports the test module first
    while not started.exists() and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert started.exists()
    procs = list(pool._processes.values())
    assert procs
    t0 = time.perf_counter()
    _drop_pool(pool)
    for p in procs:
        p.join(30)
    assert all(not p.is_alive() for p in procs)
    # well under the 60 s the running task would take if the pool waited for it
    assert time.perf_counter() - t0 < 30


def test_one_band_scorer_refuses_three_band_images(tmp_path, capsys):
    lad, scorer = tmp_path / "lad", tmp_path / "scorer"
    assert main(["score", "ladder", "builtin:sparse?n=2&size=64&count=3", "--out", str(lad)]) == 0
    assert (
        main(
            [
                "score",
                "fit",
                str(lad),
                "--scores",
                str(lad / "scores.csv"),
                "--out",
                str(scorer),
                "--trees",
                "5",
                "--folds",
                "2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "score",
                "predict",
                "builtin:galsim?n=2&size=64",
                "--scorer",
                str(scorer),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    line = _stderr_line(capsys)
    assert "3 band(s) but the scorer was fitted on images of 1" in line
    assert not out.exists()


def test_export_refuses_non_finite_weights(npy_data, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "1", "--set", "output.export_bundle=false") == 0
    state = load_file(str(run / "generator.safetensors"))
    key = next(k for k, v in state.items() if torch.is_floating_point(v) and v.numel() > 1)
    state[key][0] = float("inf")
    save_file(state, str(run / "generator.safetensors"))
    capsys.readouterr()
    assert main(["export", str(run)]) == 2
    assert "NaN or infinity" in _stderr_line(capsys)
    assert not (run / "bundle").exists()


@pytest.mark.parametrize("command", ["field", "evaluate", "train --init"])
def test_huge_spec_is_refused_by_every_command(bundle_copy, npy_data, tmp_path, capsys, command):
    _edit_json(bundle_copy, lambda m: m["spec"].__setitem__("width", 100_000_000))
    argv = {
        "field": ["field", str(bundle_copy), "--size", "64x64", "--out", str(tmp_path / "f.fits")],
        "evaluate": [
            "evaluate",
            str(npy_data),
            str(bundle_copy),
            "-n",
            "4",
            "--out",
            str(tmp_path / "ev"),
        ],
        "train --init": [
            "train",
            str(npy_data),
            "--init",
            str(bundle_copy),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
        ],
    }[command]
    assert main(argv) == 2
    line = _stderr_line(capsys)
    assert "spec key 'width'" in line, line


def test_export_of_a_damaged_snapshot_is_one_line(npy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(npy_data, run, "--steps", "2", "--set", "train.snapshot_every=1") == 0
    with open(run / "checkpoints/step-00000001/state.safetensors", "r+b") as fh:
        fh.truncate(100)
    capsys.readouterr()
    assert main(["export", str(run), "--step", "1"]) == 2
    assert "export another --step" in _stderr_line(capsys)
