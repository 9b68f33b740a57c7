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

#: ``--set`` options of the DCGAN-64 zoo runs on GalSim galaxies (``galsim-dcgan64`` and its
#: variants): sky noise, the asinh stretch, D's three side paths of the ``cpu`` config spelled
#: out, one CPU thread, and the run's checkpoint, snapshot and sample cadence
GALSIM_DCGAN64_SETS = [
    "model.sky_noise=true",
    "data.stretch=asinh",
    "train.threads=1",
    "train.checkpoint_every=250",
    "train.snapshot_every=1000",
    "train.sample_every=500",
    "train.progress=false",
    "model.d_profile=true",
    "model.d_mbstd_group=4",
    "model.d_moments=true",
]


def default_runs() -> Path:
    return Path(os.environ.get("GALFORGE_RUNS", Path.home() / "galforge-runs"))


def parse_args(doc: str, name: str, steps: int, *, n_eval: bool = True, more=None):
    """The options every zoo script takes (``--runs --run --steps [--n-eval] --no-train``),
    plus ``more(parser)``; returns ``(args, run folder)``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=default_runs())
    ap.add_argument("--run", type=Path, default=None, help=f"the run folder (default: RUNS/{name})")
    ap.add_argument("--steps", type=int, default=steps)
    if n_eval:
        ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--no-train", action="store_true", help="evaluate and ship the run as it is")
    if more is not None:
        more(ap)
    args = ap.parse_args()
    return args, args.run or args.runs / name


def card(
    name: str,
    title: str,
    family: str,
    model: str,
    config: str,
    data: str,
    bands,
    units: str,
    image_size,
    training: dict,
    notes: str,
    **extra,
) -> dict:
    """A model card's common fields (``evaluation`` is added by the caller)."""
    return {
        "title": title,
        "family": family,
        "model": model,
        "config": config,
        **extra,
        "data": data,
        "bands": list(bands),
        "units": units,
        "image_size": image_size,
        "training": training,
        "reproduce": f"python scripts/zoo/{name}.py",
        "notes": notes,
    }


def cli(args: list[str]) -> None:
    from galforge.cli import main

    print("galforge " + " ".join(args), flush=True)
    rc = main(args)
    if rc != 0:
        raise SystemExit(rc)


def train(
    run: Path,
    data: str,
    model: str,
    steps: int,
    batch: int,
    seed: int,
    sets: list[str],
    extra: list[str] = (),
) -> None:
    """Train (or resume) ``run``; a finished run is left as it is.  ``extra``: more CLI
    arguments (``--init PARENT`` for a fine-tuning phase)."""
    info = run / "run.json"
    if info.is_file() and json.loads(info.read_text()).get("step", 0) >= steps:
        print(f"{run}: already trained to {steps} steps")
        return
    args = [
        "train",
        data,
        "--model",
        model,
        "--out",
        str(run),
        "--steps",
        str(steps),
        "--batch",
        str(batch),
        "--seed",
        str(seed),
    ]
    for s in sets:
        args += ["--set", s]
    args += list(extra)
    if (run / "checkpoints" / "latest").is_dir():
        args.append("--resume")
    cli(args)


def training_time(run: Path) -> dict:
    """Steps and time spent in training steps, from ``log.jsonl`` (every session summed),
    up to the step of the weights the run holds."""
    saved = json.loads((run / "run.json").read_text()).get("step")
    rows = [
        json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()
    ]
    if saved is not None:  # steps logged after the last checkpoint are not in the model
        rows = [r for r in rows if int(r["step"]) <= int(saved)]
    seconds, prev = 0.0, 0
    for r in rows:
        step = int(r["step"])
        if step <= prev:  # a resumed session re-logs from its checkpoint
            prev = min(prev, step)
        seconds += max(0, step - prev) * (
            float(r.get("time_step_s", 0.0)) + float(r.get("time_data_s", 0.0))
        )
        prev = step
    return {
        "steps": int(rows[-1]["step"]) if rows else 0,
        "train_seconds": round(seconds, 1),
        "cpu_hours": round(seconds / 3600.0, 3),
    }


def combined_time(runs: list[Path]) -> dict:
    """:func:`training_time` of runs trained one after the other (``--init`` phases)."""
    parts = [training_time(r) for r in runs]
    seconds = sum(p["train_seconds"] for p in parts)
    return {
        "steps": sum(p["steps"] for p in parts),
        "train_seconds": round(seconds, 1),
        "cpu_hours": round(seconds / 3600.0, 3),
    }


def evaluate(real: str, fake: str, out: Path, *, n: int, seed: int, extra=()) -> dict:
    """``galforge evaluate`` into ``out`` (reused when already there); return metrics.json."""
    metrics = out / "metrics.json"
    if not metrics.is_file():
        cli(
            [
                "evaluate",
                real,
                fake,
                "--out",
                str(out),
                "-n",
                str(n),
                "--seed",
                str(seed),
                "--no-progress",
                *extra,
            ]
        )
    return json.loads(metrics.read_text())


#: the rows of ``galforge evaluate --fields`` kept in a field model's card, and the plain
#: targets of issue #24 they are judged by there: (measure, short name, target)
FIELD_ROWS = [
    ("detections per Mpix (generated / real)", "density ratio", "within 10 %"),
    ("magnitude KS p (R)", "mag KS p R", "≥ 0.05"),
    ("magnitude KS p (G)", "mag KS p G", "≥ 0.05"),
    ("magnitude KS p (B)", "mag KS p B", "≥ 0.05"),
    ("median Δmag (R)", "median Δmag R", "abs ≤ 0.05"),
    ("median Δmag (G)", "median Δmag G", "abs ≤ 0.05"),
    ("median Δmag (B)", "median Δmag B", "abs ≤ 0.05"),
    ("colour KS p (R−G)", "colour R−G KS p", "≥ 0.05"),
    ("colour KS p (G−B)", "colour G−B KS p", "≥ 0.05"),
    ("half-light radius KS p", "size KS p", "≥ 0.05"),
    ("ellipticity KS p", "ellipticity KS p", "≥ 0.05"),
    ("w(θ): fraction of bins in the real 2σ band", "w(θ) bins in real 2σ", "1"),
    ("sky σ ratio (R)", "sky σ ratio R", "within 5 %"),
    ("sky σ ratio (G)", "sky σ ratio G", "within 5 %"),
    ("sky σ ratio (B)", "sky σ ratio B", "within 5 %"),
    ("realism classifier ROC AUC (64-px crops)", "crop classifier AUC", "≤ 0.75"),
]


def field_report(real: str, fake: str, out: Path, seeds) -> dict:
    """``galforge evaluate REAL FAKE --fields`` for each of ``seeds`` (folders reused when
    already there); the card's ``fields_report``: ``{"seeds", "rows": [{"measure", "name",
    "target", "values"}]}``."""
    values = {}
    for seed in seeds:
        folder = out / f"fields-seed{seed}"
        metrics = folder / "metrics.json"
        if not metrics.is_file():
            cli(["evaluate", real, fake, "--fields", "--seed", str(seed), "--out", str(folder)])
        rows = json.loads(metrics.read_text())["summary"]
        values[seed] = {r["measure"]: r.get("value") for r in rows}
    return {
        "real": real,
        "seeds": list(seeds),
        "rows": [
            {
                "measure": m,
                "name": name,
                "target": target,
                "values": [values[s].get(m) for s in seeds],
            }
            for m, name, target in FIELD_ROWS
        ],
    }


def metrics_date(folder: Path) -> str:
    """The day the evaluation in ``folder`` was written."""
    return dt.date.fromtimestamp((folder / "metrics.json").stat().st_mtime).isoformat()


def summary_counts(metrics: dict) -> tuple[int, int]:
    rows = metrics.get("summary", [])
    return sum(1 for r in rows if r.get("passed")), len(rows)


def summary_value(metrics: dict, name: str):
    """The value of the first summary row whose measure name contains ``name``."""
    for r in metrics.get("summary", []):
        if name in r.get("measure", ""):
            return r.get("value")
    return None


def ship_galaxies(
    name: str, run: Path, card: dict, held_out: str, reference: str, *, n: int, options: list[str]
) -> dict:
    """Export ``run``, evaluate its bundle and a second real draw (``reference``) against
    ``held_out`` (``{n}`` in both filled in), write the evaluation into ``card`` and ship."""
    cli(["export", str(run)])
    held = held_out.format(n=n)
    fake = evaluate(held, str(run / "bundle"), run / f"eval-{n}", n=n, seed=11, extra=options)
    ref = evaluate(
        held, reference.format(n=n), run / f"eval-reference-{n}", n=n, seed=11, extra=options
    )
    passed, total = summary_counts(fake)
    rpassed, rtotal = summary_counts(ref)
    fgd = summary_value(fake, "Fréchet galaxy distance")
    fgd_ref = summary_value(ref, "Fréchet galaxy distance")
    card = {
        **card,
        "evaluation": {
            "date": metrics_date(run / f"eval-{n}"),
            "held_out": held,
            "n_real": n,
            "n_fake": n,
            "sample_seed": 11,
            "options": list(options),
            "passed": passed,
            "total": total,
            "fgd": fgd,
            "fgd_real_vs_real": fgd_ref,
            "reference_passed": rpassed,
            "reference_total": rtotal,
            "summary": fake.get("summary", []),
        },
    }
    card = {
        k: card[k]
        for k in [*(k for k in card if k not in ("reproduce", "notes")), "reproduce", "notes"]
        if k in card
    }
    ship(name, run, card)
    print(
        f"{name}: {passed}/{total} measures pass (real-vs-real {rpassed}/{rtotal}); "
        f"FGD {fgd} (real-vs-real {fgd_ref})"
    )
    return card


def ship(name: str, run: Path, card: dict, extra_files=()) -> Path:
    """Copy ``run``'s bundle and the card into the package's zoo folder."""
    from galforge import outputs

    src = run / "bundle"
    dst = ZOO / name
    if dst.exists():
        outputs.remove_path(dst)  # the zoo folder is the repository's own, replaced whole
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != outputs.MANIFEST:  # the run's record stays with the run
            shutil.copy2(f, dst / f.name)
    for f in extra_files:
        shutil.copy2(f, dst / Path(f).name)
    card = {
        "name": name,
        **card,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "card_date": dt.date.today().isoformat(),
    }
    (dst / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    for f in dst.iterdir():
        f.chmod(0o644)
    print(f"shipped {name} -> {dst} ({sum(f.stat().st_size for f in dst.iterdir()) / 1e6:.2f} MB)")
    print(f"model cards written to {write_docs()}")
    return dst


def _fmt(v, spec=".3g") -> str:
    return "–" if v is None else format(v, spec) if isinstance(v, int | float) else str(v)


def write_docs() -> Path:
    """Rewrite ``docs/pretrained.md`` from the model cards of every shipped model."""
    cards = sorted(
        (json.loads(p.read_text()) for p in ZOO.glob("*/card.json")), key=lambda c: c["name"]
    )
    lines = [
        "# Pretrained models",
        "",
        "Shipped inside the package and usable offline wherever a run or bundle is accepted, as",
        "`pretrained:NAME` (`galforge generate pretrained:galsim-dcgan64 -n 16 --out gal/`,",
        '`galforge.load("pretrained:galsim-dcgan64")`, `galforge train DATA --init pretrained:NAME`).',
        "`galforge pretrained list` prints this table; `galforge pretrained show NAME` the full card.",
        "Each model is reproduced by `scripts/zoo/NAME.py` (resumable; its run folder lives outside",
        "the repository). This page is written from the cards by `scripts/zoo/zoo_common.py`.",
        "",
    ]
    for c in cards:
        t, ev = c.get("training", {}), c.get("evaluation", {})
        lines += [f"## `{c['name']}` — {c.get('title', '')}", ""]
        if t.get("phases"):
            how = "; then ".join(
                f"{p.get('steps')} steps"
                + (f" from {p['init']}" if p.get("init") else "")
                + f" with seed {p.get('seed')} and `{' '.join(p.get('settings', []))}`"
                for p in t["phases"]
            )
            how = f"in {len(t['phases'])} phases: {how}"
        else:
            how = f"with seed {t.get('seed')} and `{' '.join(t.get('settings', []))}`"
        stage1 = f", chained after `{c['stage1']}`" if c.get("stage1") else ""
        lines.append(
            f"Trained on `{c.get('data')}` (bands {', '.join(c.get('bands', []))}; "
            f"{c.get('units')}) with `{c.get('model')}`{stage1}, config `{c.get('config')}`, "
            f"batch {t.get('batch')}, {t.get('steps')} steps in all: "
            f"{_fmt(t.get('cpu_hours'), '.2f')} hours of training steps on one CPU thread "
            f"({c.get('machine', '')}). Trained {how}."
        )
        lines.append("")
        if "field" in ev:
            f = ev["field"]
            d = f.get("detections_per_mpix", {})
            lines.append(
                f"Evaluated {ev.get('date')}: a generated field of the XDF's size "
                f"({'×'.join(map(str, f.get('size', [])))} px, seed {f.get('seed')}) has "
                f"{_fmt(d.get('fake'), '.0f')} detections per Mpix against "
                f"{_fmt(d.get('real'), '.0f')} in the real field (ratio "
                f"{_fmt(f.get('density_ratio'), '.2f')}); per band KS p / median Δmag: "
                + ", ".join(
                    f"{b} {_fmt(r.get('ks_p'))} / {_fmt(r.get('median_dmag'), '+.3f')}"
                    for b, r in f.get("bands", {}).items()
                )
                + f". Targets (density within 20 %, p ≥ 0.05, |Δmag| ≤ 0.1): "
                f"{'met' if f.get('passed') else 'not met'}."
            )
        elif ev:
            lines.append(
                f"Evaluated {ev.get('date')} with `galforge evaluate` on {ev.get('n_fake')} "
                f"generated against {ev.get('n_real')} held-out galaxies (`{ev.get('held_out')}`, "
                f"a seed never used in training; {' '.join(ev.get('options', []))}): "
                f"**{ev.get('passed')} of {ev.get('total')} measures pass**, Fréchet galaxy "
                f"distance {_fmt(ev.get('fgd'), '.1f')} (real-vs-real "
                f"{_fmt(ev.get('fgd_real_vs_real'), '.1f')}; a second real draw passes "
                f"{ev.get('reference_passed')} of {ev.get('reference_total')})."
            )
            rows = ev.get("summary", [])
            if rows:
                lines += ["", "| measure | value | threshold | result |", "|---|---|---|---|"]
                lines += [
                    f"| {r.get('measure')} | {_fmt(r.get('value'))} | "
                    f"{_fmt(r.get('threshold'))} | {'pass' if r.get('passed') else 'FAIL'} |"
                    for r in rows
                ]
        fr = ev.get("fields_report")
        if fr:
            seeds = fr.get("seeds", [])
            lines += [
                "",
                f"`galforge evaluate {fr.get('real')} pretrained:{c['name']} --fields` on fields "
                "of the XDF's size, seed"
                + ("s " if len(seeds) > 1 else " ")
                + ", ".join(map(str, seeds))
                + ":",
                "",
                "| measure | target | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                "|---|---|" + "---|" * len(seeds),
            ]
            lines += [
                f"| {r['name']} | {r['target']} | "
                + " | ".join(_fmt(v, "+.3f" if "Δmag" in r["name"] else ".3g") for v in r["values"])
                + " |"
                for r in fr.get("rows", [])
            ]
        if c.get("notes"):
            lines += ["", c["notes"]]
        lines += ["", f"Reproduce: `{c.get('reproduce')}`.", ""]
    path = REPO / "docs" / "pretrained.md"
    path.write_text("\n".join(lines))
    return path
