"""Shared steps of the zoo scripts: train (resumably), evaluate on held-out data, ship.

A zoo script trains its model with galforge's own CLI into a run folder outside the
repository (``--runs``, default ``~/galforge-runs``), resuming exactly when the folder already
holds a checkpoint, so a long training can span several sessions.  It then evaluates the
result against held-out data drawn with a seed never used in training and copies the bundle
with its model card into ``src/galforge/pretrained/<NAME>/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "src" / "galforge" / "pretrained"


def default_runs() -> Path:
    return Path(os.environ.get("GALFORGE_RUNS", Path.home() / "galforge-runs"))


def cli(args: list[str]) -> None:
    from galforge.cli import main

    print("galforge " + " ".join(args), flush=True)
    rc = main(args)
    if rc != 0:
        raise SystemExit(rc)


def train(run: Path, data: str, model: str, steps: int, batch: int, seed: int,
          sets: list[str]) -> None:
    """Train (or resume) ``run``; a finished run is left as it is."""
    info = run / "run.json"
    if info.is_file() and json.loads(info.read_text()).get("step", 0) >= steps:
        print(f"{run}: already trained to {steps} steps")
        return
    args = ["train", data, "--model", model, "--out", str(run), "--steps", str(steps),
            "--batch", str(batch), "--seed", str(seed)]
    for s in sets:
        args += ["--set", s]
    if (run / "checkpoints" / "latest").is_dir():
        args.append("--resume")
    cli(args)


def training_time(run: Path) -> dict:
    """Steps and time spent in training steps, from ``log.jsonl`` (every session summed)."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
            if line.strip()]
    seconds, prev = 0.0, 0
    for r in rows:
        step = int(r["step"])
        if step <= prev:          # a resumed session re-logs from its checkpoint
            prev = min(prev, step)
        seconds += max(0, step - prev) * (float(r.get("time_step_s", 0.0))
                                          + float(r.get("time_data_s", 0.0)))
        prev = step
    return {"steps": int(rows[-1]["step"]) if rows else 0, "train_seconds": round(seconds, 1),
            "cpu_hours": round(seconds / 3600.0, 3)}


def evaluate(real: str, fake: str, out: Path, *, n: int, seed: int, extra=()) -> dict:
    """``galforge evaluate`` into ``out`` (reused when already there); return metrics.json."""
    metrics = out / "metrics.json"
    if not metrics.is_file():
        cli(["evaluate", real, fake, "--out", str(out), "-n", str(n), "--seed", str(seed),
             "--no-progress", *extra])
    return json.loads(metrics.read_text())


def summary_counts(metrics: dict) -> tuple[int, int]:
    rows = metrics.get("summary", [])
    return sum(1 for r in rows if r.get("passed")), len(rows)


def summary_value(metrics: dict, name: str):
    for r in metrics.get("summary", []):
        if r.get("measure") == name:
            return r.get("value")
    return None


def ship(name: str, run: Path, card: dict, extra_files=()) -> Path:
    """Copy ``run``'s bundle and the card into the package's zoo folder."""
    src = run / "bundle"
    dst = ZOO / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    for f in extra_files:
        shutil.copy2(f, dst / Path(f).name)
    card = {"name": name, **card, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "card_date": dt.date.today().isoformat()}
    (dst / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    for f in dst.iterdir():
        f.chmod(0o644)
    print(f"shipped {name} -> {dst} ({sum(f.stat().st_size for f in dst.iterdir()) / 1e6:.2f} MB)")
    return dst
