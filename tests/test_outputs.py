"""galforge.outputs: nothing of the user's is ever lost — owned outputs and run locks.

Every command that writes refuses a used output without --overwrite, with --overwrite removes
only what galforge recorded writing there, and refuses a second writer while one holds the
lock; a refused command leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN
from test_evaluate_cli import _stamps
from test_field import tiny_generator
from test_latent import make_style_bundle
from test_score_cmd import blobs

from galforge import outputs
from galforge.bundle import save_bundle
from galforge.cli import main
from galforge.data.normalize import Normalizer
from galforge.errors import ConfigError

EVAL_FAST = ["--measures", "power_spectrum", "--no-progress", "--holdout-fraction", "0.25"]


# --------------------------------------------------------------------------- helpers
def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative names), galforge's bookkeeping aside."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if (
            p.is_file()
            and p.name != outputs.MANIFEST
            and not p.name.endswith((outputs.LOCK, ".galforge-lock"))
        ):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(argv, capsys, *names) -> str:
    """Run ``argv``; assert exit 2 with one line on stderr naming ``names``; return it."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, (name, err)
    return err


def ok(argv, capsys) -> None:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 0, err


def user_files(folder: Path, names, seed: int = 0) -> dict[str, str]:
    """Write files a user owns (random bytes) under ``folder``; return their hashes."""
    rng = np.random.default_rng(seed)
    for name in names:
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.bytes(int(rng.integers(1, 200))))
    return hashes(folder)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def style(work):
    return make_style_bundle(work / "sg2")


@pytest.fixture(scope="module")
def sgan(work):
    gen = tiny_generator()
    rng = np.random.default_rng(0)
    norm = Normalizer.fit(rng.gamma(2.0, 3.0, (1, 3, 32, 32)).astype(np.float32), target=(0.0, 1.0))
    return save_bundle(
        work / "sgan",
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


@pytest.fixture(scope="module")
def stamps(work):
    np.save(work / "real.npy", _stamps(16, 0))
    np.save(work / "fake.npy", _stamps(16, 1))
    return work / "real.npy", work / "fake.npy"


@pytest.fixture(scope="module")
def run(work):
    np.save(work / "gal.npy", np.random.default_rng(0).random((4, 3, 64, 64)).astype(np.float32))
    path = work / "run"
    assert main(["train", str(work / "gal.npy"), "--out", str(path), *TINY_TRAIN]) == 0
    return path


@pytest.fixture(scope="module")
def scoring(work):
    real = work / "sparse"
    real.mkdir()
    for i, img in enumerate(blobs(4, size=32)):
        np.save(real / f"field{i}.npy", img)
    ladder = work / "ladder"
    assert main(["score", "ladder", str(real), "--out", str(ladder), "--seed", "3"]) == 0
    scorer = work / "scorer"
    assert (
        main(
            [
                "score",
                "fit",
                str(ladder),
                "--scores",
                str(ladder / "scores.csv"),
                "--out",
                str(scorer),
                "--folds",
                "2",
                "--trees",
                "5",
                "--features",
                "histogram",
            ]
        )
        == 0
    )
    return real, ladder, scorer


# --------------------------------------------------------------------------- 1. field --overwrite
def test_field_overwrite_never_removes_a_user_folder(sgan, tmp_path, capsys, monkeypatch):
    proj = tmp_path / "proj"
    before = user_files(proj, ["thesis.tex", "sub/notes.txt"])
    field = ["field", sgan, "--size", "32x32", "--tile", "32", "--no-progress", "--compile", "off"]
    refused([*field, "--out", proj, "--overwrite"], capsys, proj, "not recorded")
    monkeypatch.chdir(proj)
    refused([*field, "--out", ".", "--overwrite"], capsys, "not recorded")
    assert hashes(proj) == before
    # a field galforge wrote there is replaced by --overwrite; the thesis stays
    ok([*field, "--out", "f.zarr"], capsys)
    refused([*field, "--out", "f.zarr"], capsys, "--overwrite")
    ok([*field, "--out", "f.zarr", "--overwrite", "--seed", "4"], capsys)
    assert {k: v for k, v in hashes(proj).items() if not k.startswith("f.zarr")} == before


# --------------------------------------------------------------------------- 2. demo
def test_demo_never_deletes_user_files_in_its_subfolders(tmp_path, capsys):
    w = tmp_path / "w"
    before = user_files(w, ["galaxies/NGC1300.fits"])
    refused(["demo", "--out", w, "--no-progress"], capsys, w, "--overwrite")
    refused(["demo", "--out", w, "--no-progress", "--overwrite"], capsys, "galaxies/NGC1300.fits")
    assert hashes(w) == before


# --------------------------------------------------------------------------- 3. no --overwrite
def test_train_refuses_a_user_folder(tmp_path, capsys):
    np.save(tmp_path / "gal.npy", np.zeros((2, 3, 64, 64), np.float32))
    userrun = tmp_path / "userrun"
    before = user_files(userrun, ["config.yaml", "log.jsonl"])
    refused(
        ["train", tmp_path / "gal.npy", "--out", userrun, *TINY_TRAIN],
        capsys,
        userrun,
        "--overwrite",
    )
    refused(
        ["train", tmp_path / "gal.npy", "--out", userrun, "--overwrite", *TINY_TRAIN],
        capsys,
        "config.yaml",
    )
    assert hashes(userrun) == before


def test_evaluate_refuses_a_used_folder_and_overwrite_leaves_no_stale_outputs(
    stamps, tmp_path, capsys
):
    real, fake = stamps
    ev = tmp_path / "ev"
    before = user_files(ev, ["report.html", "metrics.json"])
    refused(["evaluate", real, fake, "--out", ev, *EVAL_FAST], capsys, ev, "--overwrite")
    refused(
        ["evaluate", real, fake, "--out", ev, "--overwrite", *EVAL_FAST], capsys, "metrics.json"
    )
    assert hashes(ev) == before
    # into an earlier evaluation's folder: refused, then replaced whole by --overwrite (no
    # catalogue of the earlier measures left beside the new metrics)
    earlier, fresh = tmp_path / "earlier", tmp_path / "fresh"
    ok(
        [
            "evaluate",
            real,
            fake,
            "--out",
            earlier,
            "--measures",
            "memorization,power_spectrum",
            "--no-progress",
            "--holdout-fraction",
            "0.25",
        ],
        capsys,
    )
    refused(["evaluate", real, fake, "--out", earlier, *EVAL_FAST], capsys, "--overwrite")
    ok(["evaluate", real, fake, "--out", earlier, "--overwrite", *EVAL_FAST], capsys)
    ok(["evaluate", real, fake, "--out", fresh, *EVAL_FAST], capsys)

    def results(folder):
        return sorted(p for p in hashes(folder) if not p.startswith("cache/"))

    assert results(earlier) == results(fresh)
    summary = [json.loads((f / "metrics.json").read_text())["summary"] for f in (earlier, fresh)]
    assert [r["measure"] for r in summary[0]] == [r["measure"] for r in summary[1]]


def test_export_refuses_another_bundle(run, tmp_path, capsys):
    other = tmp_path / "otherbundle"
    ok(["export", run, "--out", other], capsys)
    (other / "card.json").write_text('{"model": "someone else\'s"}')
    before = hashes(other)
    refused(["export", run, "--out", other], capsys, other, "--overwrite")
    refused(["export", run, "--out", other, "--overwrite"], capsys, "card.json")
    assert hashes(other) == before
    (other / "card.json").unlink()
    ok(["export", run, "--out", other, "--overwrite"], capsys)


def test_single_output_files_are_not_overwritten(style, sgan, scoring, tmp_path, capsys):
    real, _, scorer = scoring
    before = user_files(tmp_path, ["anim.gif", "scores.csv", "p.png", "cube.fits"])
    refused(
        ["interpolate", style, "--seeds", "1,2", "--frames", "3", "--out", tmp_path / "anim.gif"],
        capsys,
        "anim.gif",
        "--overwrite",
    )
    refused(
        ["score", "predict", real, "--scorer", scorer, "--out", tmp_path / "scores.csv"],
        capsys,
        "scores.csv",
        "--overwrite",
    )
    field = [
        "field",
        sgan,
        "--size",
        "32x32",
        "--tile",
        "32",
        "--no-progress",
        "--compile",
        "off",
        "--out",
        tmp_path / "f.zarr",
    ]
    refused([*field, "--preview", tmp_path / "p.png"], capsys, "p.png", "--overwrite")
    refused([*field, "--fits", tmp_path / "cube.fits"], capsys, "cube.fits", "--overwrite")
    for name in ("anim.gif", "scores.csv"):  # --overwrite replaces only galforge's own
        argv = (
            ["interpolate", style, "--seeds", "1,2", "--frames", "3"]
            if name == "anim.gif"
            else ["score", "predict", real, "--scorer", scorer]
        )
        refused([*argv, "--out", tmp_path / name, "--overwrite"], capsys, "not recorded")
    assert hashes(tmp_path) == before
    ok(["score", "predict", real, "--scorer", scorer, "--out", tmp_path / "mine.csv"], capsys)
    ok(
        [
            "score",
            "predict",
            real,
            "--scorer",
            scorer,
            "--out",
            tmp_path / "mine.csv",
            "--overwrite",
        ],
        capsys,
    )


# --------------------------------------------------------------------------- 4. by record, not name
def test_overwrite_keeps_a_user_file_named_like_galforge_output(style, tmp_path, capsys):
    out = tmp_path / "gen"
    ok(["generate", style, "-n", "3", "--no-progress", "--out", out], capsys)
    mine = user_files(out, ["galaxy_000007.fits"], seed=1)["galaxy_000007.fits"]
    refused(
        ["generate", style, "-n", "3", "--no-progress", "--out", out, "--overwrite"],
        capsys,
        "galaxy_000007.fits",
    )
    assert hashes(out)["galaxy_000007.fits"] == mine
    (out / "galaxy_000007.fits").unlink()
    ok(["generate", style, "-n", "2", "--no-progress", "--out", out, "--overwrite"], capsys)
    assert sorted(hashes(out)) == ["galaxy_000000.fits", "galaxy_000001.fits", "grid.png"]


def test_data_prepare_overwrite_keeps_a_user_data_set(stamps, tmp_path, capsys):
    real, _ = stamps
    out = tmp_path / "set"
    before = user_files(out, ["images.npy", "manifest.json"])
    refused(["data", "prepare", real, "--out", out], capsys, "--overwrite")
    refused(["data", "prepare", real, "--out", out, "--overwrite"], capsys, "images.npy")
    assert hashes(out) == before


# --------------------------------------------------------------------------- 5. locks
def _holder(folder: Path) -> subprocess.Popen:
    """Another process that claims ``folder`` and keeps writing it until killed."""
    code = (
        "import sys, time; from galforge import outputs; "
        "outputs.claim_folder(sys.argv[1]); print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(style, tmp_path, capsys):
    out = tmp_path / "conc"
    proc = _holder(out)
    try:
        assert int((out / outputs.LOCK).read_text()) == proc.pid
        np.save(tmp_path / "gal.npy", np.zeros((2, 3, 64, 64), np.float32))
        err = refused(
            ["train", tmp_path / "gal.npy", "--out", out, *TINY_TRAIN],
            capsys,
            f"process {proc.pid}",
            out,
        )
        assert "is writing it now" in err
        refused(
            ["generate", style, "-n", "2", "--no-progress", "--out", out],
            capsys,
            f"process {proc.pid}",
        )
        with pytest.raises(outputs.OutputBusy, match=str(proc.pid)):
            outputs.claim_folder(out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # kill -9 leaves no lock that anyone holds: the next writer takes the folder
    assert (out / outputs.LOCK).exists()
    ok(["generate", style, "-n", "2", "--no-progress", "--out", out], capsys)
    assert not (out / outputs.LOCK).exists()


def test_two_trainings_into_one_folder(tmp_path):
    """Two real `galforge train` processes at once: one trains, the other is refused."""
    np.save(
        tmp_path / "gal.npy", np.random.default_rng(0).random((4, 3, 64, 64)).astype(np.float32)
    )
    args = [
        sys.executable,
        "-m",
        "galforge",
        "train",
        str(tmp_path / "gal.npy"),
        "--out",
        str(tmp_path / "conc"),
        *TINY_TRAIN,
    ]
    args[args.index("--steps") + 1] = "3"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lock = tmp_path / "conc" / outputs.LOCK
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, env=env)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
    if "is writing it now" in second.stderr:  # they overlapped
        assert f"process {first.pid}" in second.stderr
    else:  # the first was done before the second started: the folder is used
        assert "--resume" in second.stderr
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "conc" / "log.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and steps[-1] == 3  # one run's log, not two interleaved


def test_lock_file_holds_the_pid_and_goes_with_the_claim(tmp_path):
    with outputs.claim_folder(tmp_path / "a") as folder:
        assert int((folder.path / outputs.LOCK).read_text()) == os.getpid()
        (folder.path / "x.txt").write_text("x")
    assert not (tmp_path / "a" / outputs.LOCK).exists()
    assert "x.txt" in outputs.recorded(tmp_path / "a")


# --------------------------------------------------------------------------- refusals leave nothing
def test_refused_commands_leave_no_folder(style, stamps, scoring, tmp_path, capsys):
    real, fake = stamps
    _, ladder, _ = scoring
    refused(
        [
            "project",
            style,
            tmp_path / "missing.fits",
            "--steps",
            "1",
            "--no-progress",
            "--out",
            tmp_path / "p",
        ],
        capsys,
    )
    refused(
        ["score", "fit", ladder, "--scores", tmp_path / "missing.csv", "--out", tmp_path / "s"],
        capsys,
    )
    refused(["evaluate", real, fake, "--out", tmp_path / "e", "--measures", "nope"], capsys)
    refused(["evaluate", real, tmp_path / "missing.npy", "--out", tmp_path / "e2"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_resume_continues_the_runs_own_folder(run, tmp_path, capsys):
    notes = run / "my-notes.txt"
    notes.write_text("kept")
    argv = ["train", run.parent / "gal.npy", "--out", run, *TINY_TRAIN]
    argv[argv.index("--steps") + 1] = "2"
    ok([*argv, "--resume"], capsys)
    assert notes.read_text() == "kept"
    assert "my-notes.txt" not in outputs.recorded(run)  # the user's, never galforge's
    refused([*argv, "--overwrite"], capsys, "my-notes.txt")
    notes.unlink()


# --------------------------------------------------------------------------- property
USED_NAMES = [
    "galaxy_000007.fits",
    "images.npy",
    "config.yaml",
    "manifest.json",
    "report.html",
    "metrics.json",
    "bundle.json",
    "generator.safetensors",
    "scorer.json",
    "grid.png",
    "run.json",
    "log.jsonl",
    "checkpoints/latest/state.json",
]


def _random_names(rng, k: int) -> list[str]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_-."
    names = list(rng.choice(USED_NAMES, size=2, replace=False))
    for _ in range(k):
        stem = "".join(rng.choice(list(alphabet), size=int(rng.integers(1, 12))))
        name = stem.strip(".") or "f"
        names.append(name if rng.random() < 0.7 else f"sub{rng.integers(3)}/{name}")
    return names


def _commands(style, sgan, stamps, run, scoring, gal):
    real, fake = stamps
    sparse, ladder, scorer = scoring
    return {
        "train": (["train", gal, *TINY_TRAIN], "folder", ""),
        "generate": (["generate", style, "-n", "2", "--no-progress"], "folder", ""),
        "field": (
            ["field", sgan, "--size", "32x32", "--tile", "32", "--no-progress", "--compile", "off"],
            "entry",
            "f.zarr",
        ),
        "evaluate": (["evaluate", real, fake, *EVAL_FAST], "folder", ""),
        "export": (["export", run], "folder", ""),
        "interpolate": (
            ["interpolate", style, "--seeds", "1,2", "--frames", "3"],
            "entry",
            "anim.gif",
        ),
        "score predict": (["score", "predict", sparse, "--scorer", scorer], "entry", "scores.csv"),
        "data prepare": (["data", "prepare", real], "folder", ""),
        "project": (
            ["project", style, "builtin:hdf-stamps?size=16&n=1", "--steps", "1", "--no-progress"],
            "folder",
            "",
        ),
        "score fit": (
            [
                "score",
                "fit",
                ladder,
                "--scores",
                ladder / "scores.csv",
                "--folds",
                "2",
                "--trees",
                "3",
                "--features",
                "histogram",
            ],
            "folder",
            "",
        ),
    }


@pytest.mark.parametrize(
    "command",
    [
        "train",
        "generate",
        "field",
        "evaluate",
        "export",
        "interpolate",
        "score predict",
        "data prepare",
        "project",
        "score fit",
    ],
)
def test_no_user_byte_changes_whatever_the_command(
    command, style, sgan, stamps, run, scoring, tmp_path, capsys
):
    np.save(
        tmp_path / "gal.npy", np.random.default_rng(1).random((2, 3, 64, 64)).astype(np.float32)
    )
    argv, kind, name = _commands(style, sgan, stamps, run, scoring, tmp_path / "gal.npy")[command]
    rng = np.random.default_rng(zlib.crc32(command.encode()))
    home = tmp_path / "home"
    before = user_files(home, _random_names(rng, 6), seed=int(rng.integers(1000)))

    # the output is a place the user's files already occupy: refused, with or without
    # --overwrite; not one byte changes
    taken = home / (name or "sub0")
    if kind == "entry" and not taken.exists():
        before = user_files(home, [name], seed=2)
    elif kind == "folder" and not taken.is_dir():
        before = user_files(
            home, ["sub0/" + USED_NAMES[int(rng.integers(len(USED_NAMES)))]], seed=3
        )
    refused([*argv, "--out", taken], capsys, "--overwrite")
    refused([*argv, "--out", taken, "--overwrite"], capsys)
    assert hashes(home) == before

    # a new output beside the user's files: written; written again only with --overwrite,
    # which replaces galforge's own outputs and nothing else
    fresh = home / ("new/" + (name or "out"))
    ok([*argv, "--out", fresh], capsys)
    refused([*argv, "--out", fresh], capsys, "--overwrite")
    ok([*argv, "--out", fresh, "--overwrite"], capsys)
    if kind == "folder":  # a user file dropped into galforge's folder blocks --overwrite
        intruder = fresh / USED_NAMES[int(rng.integers(len(USED_NAMES)))]
        if not intruder.exists():
            intruder.parent.mkdir(parents=True, exist_ok=True)
            intruder.write_bytes(b"mine")
            refused([*argv, "--out", fresh, "--overwrite"], capsys, intruder.name)
            assert intruder.read_bytes() == b"mine"
    after = hashes(home)
    assert {k: after.get(k) for k in before} == before


def test_claim_folder_refuses_a_folder_without_a_manifest(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "galaxy_000000.fits").write_bytes(b"x")
    with pytest.raises(ConfigError, match="did not record"):
        outputs.claim_folder(tmp_path / "old", overwrite=True)
    assert (tmp_path / "old" / "galaxy_000000.fits").read_bytes() == b"x"
    assert not (tmp_path / "old" / outputs.MANIFEST).exists()


def test_a_damaged_manifest_never_points_outside_its_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.fits").write_text("mine too")
    out = tmp_path / "out"
    with outputs.claim_folder(out):
        (out / "sub").mkdir()
        (out / "sub" / "data.fits").write_text("galforge's")
    # a hand-edited manifest and a recorded folder swapped for a link to the user's folder
    manifest = json.loads((out / outputs.MANIFEST).read_text())
    manifest["files"] += ["../victim.txt", str(victim)]
    (out / outputs.MANIFEST).write_text(json.dumps(manifest))
    (out / "sub" / "data.fits").unlink()
    (out / "sub").rmdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="sub"):
        outputs.claim_folder(out, overwrite=True)  # the link is not galforge's
    (out / "sub").unlink()
    with outputs.claim_folder(out, overwrite=True):
        pass
    assert victim.read_text() == "mine" and (elsewhere / "data.fits").read_text() == "mine too"
    assert "../victim.txt" not in outputs.recorded(out)


def test_a_run_from_before_manifests_still_exports_its_own_bundle(run, tmp_path, capsys):
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    ok(["export", old], capsys)
    for p in list(old.rglob(outputs.MANIFEST)):
        p.unlink()  # as a galforge without output manifests left it
    ok(["export", old], capsys)  # RUN/bundle is the run's own: replaced
    assert "bundle.json" in outputs.recorded(old / "bundle")
    (old / "bundle" / "notes.txt").write_text("mine")
    refused(["export", old], capsys, "notes.txt")
    assert (old / "bundle" / "notes.txt").read_text() == "mine"
